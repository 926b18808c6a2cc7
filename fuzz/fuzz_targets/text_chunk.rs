//! The text-only chunk scanner against serde_json: whatever it accepts is valid JSON, and the
//! text it hands out (still escaped) decodes to the content serde_json reads. The learnt-shape
//! short path (`ChunkShape`, learnt from a first chunk) reads a second chunk as the scanner does.
#![no_main]

use ferry_protocol::text_chunk::{ChunkShape, text_chunk};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    // Two chunks, split at the first newline (or one).
    let (first, second) = input.split_once('\n').unwrap_or((input, ""));
    for text in [first, second] {
        check(text);
    }
    let mut shape = ChunkShape::default();
    let _ = shape.text_chunk(first);
    if let Some(c) = shape.text_chunk(second) {
        let scanned = text_chunk(second).expect("the short path accepts only what the scanner does");
        assert_eq!((c.text, c.index), (scanned.text, scanned.index));
    }
});

fn check(text: &str) {
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
}
