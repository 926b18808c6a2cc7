//! `ai-proxy` streaming rows of the checklist (spec §8, `ai-proxy3.t`, `ai-proxy-stream-limits.t`,
//! `ai-proxy-client-disconnect.t`): usage in streams and the hidden usage chunk, limits,
//! broken upstream streams, client disconnects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, JSON, chat_body};
use ferry_testkit::send;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn streams_usage_and_the_usage_chunk() {
    let env = Env::start("rows-stream").await;
    env.route("r", "/r", env.ai("openai", "")).await;
    let stream = |usage: bool| {
        let mut b = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true, "user": "alice"});
        if usage {
            b["stream_options"] = json!({"include_usage": true});
        }
        b.to_string()
    };
    // The client did not ask for usage: Ferry asks, records it, and hides the extra chunk.
    let r = send("POST", &env.url("/r"), &JSON, stream(false)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = r.text();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"usage\""), "usage chunk hidden: {text}");
    assert_eq!(text.matches("data: ").count(), 6);
    assert_eq!(
        env.mock.last().unwrap().json()["stream_options"],
        json!({"include_usage": true})
    );
    let l = env.log_line(1).await;
    assert_eq!(
        (
            l.get("request_type"),
            l.get("llm_stream"),
            l.get("llm_prompt_tokens"),
            l.get("llm_completion_tokens"),
            l.get("llm_total_tokens"),
            l.get("llm_end_user_id")
        ),
        ("ai_stream", "true", "15", "6", "21", "alice")
    );
    assert!(
        l.get("upstream_response_length").parse::<u64>().unwrap()
            > l.get("body_bytes_sent").parse::<u64>().unwrap()
    );
    // Asked for: the chunk stays.
    let r = send("POST", &env.url("/r"), &JSON, stream(true)).await;
    assert!(r.text().contains("\"usage\""));
    // options.stream=true turns a plain request into a stream (usage still recorded).
    let mut ai = env.ai("openai", "");
    ai["options"]["stream"] = json!(true);
    env.route("forced", "/forced", ai).await;
    let r = send("POST", &env.url("/forced"), &JSON, chat_body()).await;
    let text = r.text();
    assert!(
        text.contains("\"content\":\" equals\"") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    let l = env.log_line(3).await;
    assert_eq!(
        (l.get("request_type"), l.get("llm_total_tokens")),
        ("ai_stream", "21")
    );
    // Tool calls in a stream.
    let r = send(
        "POST",
        &env.url("/r"),
        &[
            ("content-type", "application/json"),
            ("x-mock-tool-call", "1"),
        ],
        stream(false),
    )
    .await;
    assert!(r.text().contains("get_weather"));
    let l = env.log_line(4).await;
    assert_eq!(l.get("llm_has_tool_calls"), "true");
    // Non-stream with tools in the request and tool calls in the response.
    let body = json!({"messages": [{"role": "user", "content": "weather?"}], "tools": [{"type": "function", "function": {"name": "get_weather"}}]});
    send(
        "POST",
        &env.url("/r"),
        &[
            ("content-type", "application/json"),
            ("x-mock-tool-call", "1"),
        ],
        body.to_string(),
    )
    .await;
    let l = env.log_line(5).await;
    assert_eq!(
        (
            l.get("llm_has_tool_calls"),
            l.get("llm_tool_count"),
            l.get("llm_total_tokens")
        ),
        ("true", "1", "31")
    );
}

#[tokio::test]
async fn stream_limits() {
    let env = Env::start("rows-limits").await;
    let mut ai = env.ai("openai", "");
    ai["max_stream_duration_ms"] = json!(500);
    env.route("dur", "/dur", ai).await;
    let mut ai = env.ai("openai", "");
    ai["max_response_bytes"] = json!(2048);
    env.route("bytes", "/bytes", ai).await;
    let mut ai = env.ai("openai", "");
    ai["max_response_bytes"] = json!(100);
    env.route("small", "/small", ai).await;
    let mut ai = env.ai("openai", "");
    ai["max_req_body_size"] = json!(10);
    env.route("req", "/req", ai).await;
    let stream = json!({"messages": [], "stream": true}).to_string();
    let endless = [
        ("content-type", "application/json"),
        ("x-mock-endless", "1"),
        ("x-mock-chunk-delay-ms", "20"),
    ];
    let t = Instant::now();
    let r = send("POST", &env.url("/dur"), &endless, stream.clone()).await;
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "the timer ends the stream"
    );
    assert!(r.text().contains("more"));
    // Past max_response_bytes: the events that fit, then an error event, then a cut.
    let r = send("POST", &env.url("/bytes"), &endless, stream.clone()).await;
    let text = r.text();
    let (events, error) = text
        .rsplit_once("data: {\"error\"")
        .expect("an error event");
    assert!(events.len() <= 2048, "{}", events.len());
    assert!(error.contains("max_response_bytes exceeded"), "{error}");
    assert!(r.aborted);
    let r = send("POST", &env.url("/small"), &JSON, chat_body()).await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("max_response_bytes exceeded"));
    let r = send("POST", &env.url("/req"), &JSON, chat_body()).await;
    assert_eq!(r.status, 413);
    // A stream that breaks mid-way: the whole events, an error event in the client's protocol
    // (no [DONE]), and a cut transfer; one with garbage passes through.
    let reset = [
        ("content-type", "application/json"),
        ("x-mock-reset-after", "2"),
        ("x-mock-chunk-delay-ms", "30"),
    ];
    let r = send("POST", &env.url("/bytes"), &reset, stream.clone()).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert_eq!(text.matches("data: ").count(), 3, "{text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let v: serde_json::Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
    assert_eq!(v["error"]["type"], "server_error", "{text}");
    assert!(!text.contains("[DONE]"));
    assert!(
        r.aborted,
        "a broken-off stream is not ended as if it had finished"
    );
    let r = send(
        "POST",
        &env.url("/bytes"),
        &[
            ("content-type", "application/json"),
            ("x-mock-malformed", "1"),
        ],
        stream,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("{not json"));
}
