//! Every request converter on any JSON body (and, for Gemini clients, any path): an answer or
//! an error, never a panic; a converted body is JSON again.
#![no_main]

use ferry_protocol::convert::Pair;
use libfuzzer_sys::fuzz_target;

const PAIRS: [Pair; 4] = [
    Pair::AnthropicToOpenAi,
    Pair::OpenAiToAnthropic,
    Pair::EmbeddingsToVertex,
    Pair::GeminiToOpenAi,
];

fuzz_target!(|data: &[u8]| {
    // A path line, then the body.
    let (path, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"/v1beta/models/gemini-2.0-flash:generateContent"[..], data),
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    for p in PAIRS {
        if let Ok(c) = p.request(&v, path) {
            let text = serde_json::to_vec(&c.body).expect("a converted body serializes");
            let _: serde_json::Value = serde_json::from_slice(&text).expect("and parses");
        }
    }
    let _ = ferry_protocol::detect::detect(path, &v);
    let _ = ferry_protocol::detect::gemini_call(path);
});
