//! Every response converter and the response observer on any JSON answer.
#![no_main]

use ferry_protocol::Protocol;
use ferry_protocol::convert::Pair;
use ferry_protocol::observe::Observed;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const PAIRS: [Pair; 4] = [
    Pair::AnthropicToOpenAi,
    Pair::OpenAiToAnthropic,
    Pair::EmbeddingsToVertex,
    Pair::GeminiToOpenAi,
];

const PROTOCOLS: [Protocol; 6] = [
    Protocol::OpenAiChat,
    Protocol::OpenAiResponses,
    Protocol::OpenAiEmbeddings,
    Protocol::AnthropicMessages,
    Protocol::VertexPredict,
    Protocol::Gemini,
];

fuzz_target!(|data: &[u8]| {
    for p in PROTOCOLS {
        let _ = Observed::from_slice(p, data);
    }
    let Ok(res) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    // A request with tools, so the tool-name table is exercised too.
    let requests = [
        (json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}), "/v1/messages"),
        (json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}), "/v1/chat/completions"),
        (json!({"model": "m", "input": ["a", "b"]}), "/v1/embeddings"),
        (json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"thinkingConfig": {"includeThoughts": true}}}),
            "/v1beta/models/g:generateContent"),
    ];
    for (p, (req, path)) in PAIRS.iter().zip(requests.iter()) {
        let Ok(c) = p.request(req, path) else {
            continue;
        };
        let _ = p.response(&res, &c, Some("m"));
        let _ = p.response(&res, &c, None);
    }
});
