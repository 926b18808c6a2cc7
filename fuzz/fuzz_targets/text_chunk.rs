//! The text-only chunk scanner against serde_json: whatever it accepts is valid JSON, and the
//! text it hands out (still escaped) decodes to the content serde_json reads.
#![no_main]

use ferry_protocol::text_chunk::text_chunk;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(c) = text_chunk(text) else {
        return;
    };
    let v: Value = serde_json::from_str(text).expect("an accepted chunk is JSON");
    let choice = &v["choices"][0];
    let content = &choice["delta"]["content"];
    match c.text {
        Some(raw) => {
            let decoded: String =
                serde_json::from_str(&format!("\"{raw}\"")).expect("the text is a JSON string");
            assert_eq!(content.as_str(), Some(decoded.as_str()));
        }
        None => assert!(content.is_null()),
    }
    assert_eq!(c.id, v["id"].as_str());
    assert_eq!(c.model, v["model"].as_str());
    assert_eq!(c.index, choice["index"].as_u64());
});
