//! Every stream converter and the stream observer on any event stream: events in, events out,
//! each emitted event's data is JSON (or `[DONE]`), never a panic.
#![no_main]

use bytes::Bytes;
use ferry_protocol::Protocol;
use ferry_protocol::convert::{OutEvent, Pair};
use ferry_protocol::observe_stream::StreamObserver;
use ferry_protocol::sse::Decoder;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let (pick, input) = data.split_at(1);
    let requests = [
        (Pair::AnthropicToOpenAi, json!({"model": "m", "max_tokens": 10, "stream": true,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}), "/v1/messages"),
        (Pair::OpenAiToAnthropic, json!({"model": "m", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}), "/v1/chat/completions"),
        (Pair::GeminiToOpenAi, json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"thinkingConfig": {"includeThoughts": pick[0] & 4 != 0}}}),
            "/v1beta/models/g:streamGenerateContent"),
        (Pair::EmbeddingsToVertex, json!({"model": "m", "input": "a"}), "/v1/embeddings"),
    ];
    let (pair, req, path) = &requests[usize::from(pick[0] & 3)];
    let Ok(c) = pair.request(req, path) else {
        return;
    };
    let mut conv = pair.stream(&c, Some("m".into()));
    let mut out: Vec<OutEvent> = Vec::new();
    let mut d = Decoder::new();
    // Fed in pieces of a size the pick byte chooses.
    let piece = usize::from(pick[0] >> 3) + 1;
    for chunk in input.chunks(piece) {
        d.feed_each(chunk, |e| conv.event(e.kind, e.data, &mut out));
    }
    d.finish_each(|e| conv.event(e.kind, e.data, &mut out));
    conv.finish(&mut out);
    let mut text = String::new();
    for e in &out {
        if e.data != "[DONE]" {
            serde_json::from_str::<serde_json::Value>(&e.data).expect("an emitted event is JSON");
        }
        e.encode(&mut text);
    }
    // The observers on what came in and on what went out.
    for proto in [Protocol::OpenAiChat, Protocol::AnthropicMessages, Protocol::OpenAiResponses, Protocol::Gemini] {
        let mut o = StreamObserver::new(proto, pick[0] & 1 != 0, true);
        let bytes = Bytes::copy_from_slice(input);
        let _ = o.feed(&bytes, true);
        let mut o = StreamObserver::new(proto, true, false);
        let _ = o.feed(&Bytes::from(text.clone()), true);
        let mut o = StreamObserver::json_array(proto, true);
        let _ = o.feed(&bytes, true);
    }
});
