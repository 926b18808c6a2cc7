//! `ferry-mock --help` documents every option and knob the mock understands.
#![allow(clippy::unwrap_used)]

#[test]
fn help_lists_options_endpoints_and_knobs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry-mock"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let source = include_str!("../src/mock.rs");
    // Every knob the mock reads is in the help text.
    let knobs: Vec<&str> = source
        .match_indices("\"x-mock-")
        .map(|(i, _)| {
            let rest = &source[i + 1..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    assert!(knobs.len() >= 10, "{knobs:?}");
    for k in knobs {
        assert!(text.contains(k), "--help does not mention {k}");
    }
    for w in [
        "--listen",
        "--key",
        "--record",
        "--fast",
        "/_mock/requests",
        "FERRY_MOCK_THREADS",
    ] {
        assert!(text.contains(w), "--help does not mention {w}");
    }
}
