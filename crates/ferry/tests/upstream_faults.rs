//! Upstream faults through `ai-proxy`, passed through and converted: a 20 MB SSE line is
//! refused with memory flat, a stall mid-stream and a reset end the client's stream with an
//! error event and a cut (HTTP/1.1 without the last chunk, HTTP/2 with RST_STREAM), a stream
//! dripped one byte at a time arrives whole, invalid UTF-8 and invalid JSON never break the
//! gateway, and a client that goes away stops the upstream read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Env;
use ferry_testkit::{send, send_h2};
use serde_json::json;
use std::time::{Duration, Instant};

fn stream_body() -> String {
    json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string()
}

fn anthropic_body() -> String {
    json!({"model": "gpt-4o", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string()
}

/// Routes: `/chat` (OpenAI passthrough) and `/v1/messages` (Anthropic clients converted to
/// the OpenAI mock), with a 500 ms read timeout.
async fn env(tag: &str) -> Env {
    env_with(tag, "").await
}

async fn env_with(tag: &str, ferry: &str) -> Env {
    let env = Env::with_sections(tag, ferry, "").await;
    let mut ai = env.ai("openai", "");
    ai["timeout"] = json!(500);
    env.route("chat", "/chat", ai.clone()).await;
    ai.as_object_mut().unwrap().remove("options");
    env.route("a2o", "/v1/messages", ai).await;
    env
}

fn with<'a>(knobs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
    ];
    h.extend_from_slice(knobs);
    h
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_20_mb_sse_line_is_refused_with_memory_flat() {
    // A 1 MiB bound, so that what a refusal may hold is small beside the 20 MB line.
    let env = env_with("fault-line", "  max_sse_event_size: 1m\n").await;
    let pid = env.ferry.child.id();
    // Warm up (first requests allocate pools and buffers).
    let r = send("POST", &env.url("/chat"), &with(&[]), stream_body()).await;
    assert_eq!(r.status, 200);
    let before = peak_rss_kib(pid);
    let long = with(&[("x-mock-long-line", "20000000")]);
    let r = send("POST", &env.url("/chat"), &long, stream_body()).await;
    eprintln!(
        "peak RSS grew by {} KiB while a 20 MB line was refused (passed through)",
        peak_rss_kib(pid).saturating_sub(before)
    );
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.starts_with("data: {"), "the first event went out");
    assert!(!text.contains("xxxxxxxxxx"), "no part of the long event");
    assert!(
        text.contains("an upstream event exceeds 1048576 bytes (ferry.max_sse_event_size)"),
        "{}",
        &text[..text.len().min(500)]
    );
    assert!(!text.contains("[DONE]"));
    assert!(
        r.aborted,
        "a refused stream is not ended as if it had finished"
    );
    // Converted for an Anthropic client: its own error event, no message_stop.
    let r = send("POST", &env.url("/v1/messages"), &long, anthropic_body()).await;
    let text = r.text();
    assert!(
        text.contains("event: error"),
        "{}",
        &text[..text.len().min(500)]
    );
    assert!(text.contains("ferry.max_sse_event_size"));
    assert!(!text.contains("message_stop"));
    assert!(r.aborted);
    let grew = peak_rss_kib(pid).saturating_sub(before);
    eprintln!("peak RSS grew by {grew} KiB while two 20 MB lines were refused");
    assert!(grew < 6 * 1024, "peak RSS grew by {grew} KiB");
}

#[tokio::test]
async fn a_stall_or_reset_mid_stream_ends_with_an_error_and_a_cut() {
    let env = env("fault-stall").await;
    let stall = with(&[("x-mock-stall-after", "2")]);
    let t = Instant::now();
    let r = send("POST", &env.url("/chat"), &stall, stream_body()).await;
    assert!(t.elapsed() < Duration::from_secs(5));
    let text = r.text();
    assert_eq!(text.matches("data: ").count(), 3, "{text}");
    assert!(text.contains("upstream read timed out"), "{text}");
    assert!(r.aborted);
    let r = send("POST", &env.url("/v1/messages"), &stall, anthropic_body()).await;
    let text = r.text();
    assert!(text.contains("event: message_start"), "{text}");
    assert!(text.contains("event: error"), "{text}");
    assert!(
        !text.contains("message_stop") && !text.contains("end_turn"),
        "{text}"
    );
    assert!(r.aborted);
    // Over HTTP/2 the stream is reset, not ended.
    let reset = with(&[("x-mock-reset-after", "2"), ("x-mock-chunk-delay-ms", "30")]);
    let r = send_h2("POST", &env.url("/chat"), &reset, stream_body()).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("\"server_error\""));
    assert!(r.aborted, "HTTP/2: RST_STREAM, not END_STREAM");
    let r = send_h2("POST", &env.url("/v1/messages"), &reset, anthropic_body()).await;
    assert!(r.text().contains("event: error"));
    assert!(!r.text().contains("message_stop"));
    assert!(r.aborted);
}

#[tokio::test]
async fn a_stream_dripped_one_byte_at_a_time_arrives_whole() {
    let env = env("fault-drip").await;
    let drip = with(&[("x-mock-drip-ms", "1"), ("x-mock-chunks", "2")]);
    let plain = send(
        "POST",
        &env.url("/chat"),
        &with(&[("x-mock-chunks", "2")]),
        stream_body(),
    )
    .await;
    let r = send("POST", &env.url("/chat"), &drip, stream_body()).await;
    assert_eq!(r.status, 200);
    assert!(!r.aborted);
    assert_eq!(
        r.text(),
        plain.text(),
        "the same bytes, whatever the pieces"
    );
    let r = send("POST", &env.url("/v1/messages"), &drip, anthropic_body()).await;
    assert!(!r.aborted);
    let text = r.text();
    assert!(text.contains("event: message_stop"), "{text}");
    assert_eq!(
        text.matches("event: content_block_delta").count(),
        2,
        "{text}"
    );
    let l = env.log_line(3).await;
    assert_eq!(l.get("llm_stream"), "true");
}

#[tokio::test]
async fn invalid_utf8_and_invalid_json_do_not_break_a_stream() {
    let env = env("fault-bytes").await;
    let bad = with(&[("x-mock-invalid-utf8", "1")]);
    // Passed through as the provider sent it.
    let r = send("POST", &env.url("/chat"), &bad, stream_body()).await;
    assert_eq!(r.status, 200);
    assert!(!r.aborted);
    assert!(r.body.windows(2).any(|w| w == [0xff, 0xfe]));
    assert!(r.text().contains("[DONE]"));
    // Converted: the bad bytes become U+FFFD, the stream ends normally.
    let r = send("POST", &env.url("/v1/messages"), &bad, anthropic_body()).await;
    assert!(!r.aborted);
    let text = r.text();
    assert!(text.contains("bad \u{fffd}\u{fffd} bytes"), "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
    // Garbage and broken JSON: skipped by the converter, which still ends the message.
    let r = send(
        "POST",
        &env.url("/v1/messages"),
        &with(&[("x-mock-malformed", "1")]),
        anthropic_body(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!r.aborted);
    let text = r.text();
    assert!(text.contains("\"text\":\"ok\""), "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
}

#[tokio::test]
async fn a_client_gone_mid_stream_stops_the_upstream_read() {
    let env = env("fault-gone").await;
    for path in ["/chat", "/v1/messages"] {
        let c = ferry_testkit::client(false);
        let body = if path == "/chat" {
            stream_body()
        } else {
            anthropic_body()
        };
        let req = http::Request::post(env.url(path))
            .header("content-type", "application/json")
            .header("x-mock-endless", "1")
            .header("x-mock-chunk-delay-ms", "5")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let resp = c.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        use http_body_util::BodyExt;
        for _ in 0..3 {
            body.frame().await.unwrap().unwrap();
        }
        assert_eq!(env.mock.open_streams(), 1);
        drop(body);
        drop(c);
        let t = Instant::now();
        while env.mock.open_streams() > 0 {
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "{path}: the upstream is still read"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // The log phase runs as soon as Ferry notices, with what it saw.
    for n in [1, 2] {
        let l = env.log_line(n).await;
        assert_eq!(l.get("status"), "200");
        assert_eq!(l.get("llm_stream"), "true");
    }
}
