//! Protocol conversion end to end: Anthropic clients on OpenAI-compatible providers and OpenAI
//! clients on Anthropic, against the mock provider.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, JSON};
use ferry_testkit::send;
use serde_json::{Value, json};

fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let kind = b
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("message")
                .to_string();
            let data = b
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("");
            (
                kind,
                serde_json::from_str(data).unwrap_or(Value::String(data.into())),
            )
        })
        .collect()
}

#[tokio::test]
async fn anthropic_client_on_openai_provider() {
    let env = Env::start("conv-a2o").await;
    let mut ai = env.ai("openai", "");
    ai.as_object_mut().unwrap().remove("options");
    env.route("a2o", "/v1/messages", ai).await;
    let body = json!({"model": "gpt-4o", "max_tokens": 100, "system": "You are a mathematician",
        "messages": [{"role": "user", "content": "What is 1+1?"}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "metadata": {"user_id": "u9"}, "top_k": 3});
    let hdrs = [
        ("content-type", "application/json"),
        ("x-api-key", "client-key"),
        ("anthropic-version", "2023-06-01"),
    ];
    let r = send("POST", &env.url("/v1/messages"), &hdrs, body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["type"].as_str(), v["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "1+1 equals 2."}])
    );
    assert_eq!(v["usage"], json!({"input_tokens": 23, "output_tokens": 8}));
    let up = env.mock.last().unwrap();
    assert_eq!(up.path, "/v1/chat/completions");
    let ub = up.json();
    assert_eq!(
        ub["messages"][0],
        json!({"role": "system", "content": "You are a mathematician"})
    );
    assert_eq!(ub["max_completion_tokens"], 100);
    assert_eq!(ub["tools"][0]["type"], "function");
    assert_eq!(ub["user"], "u9");
    assert!(ub.get("top_k").is_none() && ub.get("metadata").is_none());
    assert_eq!(
        up.header("authorization"),
        Some("Bearer token"),
        "auth.header wins over the converted x-api-key"
    );
    assert!(up.header("x-api-key").is_none() && up.header("anthropic-version").is_none());
    let l = env.log_line(1).await;
    assert_eq!(
        (
            l.get("llm_prompt_tokens"),
            l.get("llm_total_tokens"),
            l.get("llm_end_user_id"),
            l.get("llm_tool_count")
        ),
        ("23", "31", "u9", "1")
    );

    // Tool calls come back as tool_use blocks.
    let r = send(
        "POST",
        &env.url("/v1/messages"),
        &[
            ("content-type", "application/json"),
            ("x-mock-tool-call", "1"),
        ],
        body.to_string(),
    )
    .await;
    let v = r.json();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(
        v["content"][0],
        json!({"type": "tool_use", "id": "call_mock", "name": "get_weather", "input": {"city": "Paris"}})
    );

    // Streams become Anthropic events; usage lands in message_delta and in the log.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let r = send("POST", &env.url("/v1/messages"), &JSON, sb.to_string()).await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let evs = events(&r.text());
    let kinds: Vec<&str> = evs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(evs[0].1["message"]["id"], "chatcmpl-mock");
    assert_eq!(
        evs[6].1["usage"],
        json!({"input_tokens": 15, "output_tokens": 6})
    );
    assert_eq!(
        env.mock.last().unwrap().json()["stream_options"],
        json!({"include_usage": true})
    );
    let l = env.log_line(3).await;
    assert_eq!(
        (
            l.get("llm_stream"),
            l.get("llm_prompt_tokens"),
            l.get("llm_completion_tokens")
        ),
        ("true", "15", "6")
    );

    // Bad requests are Anthropic errors.
    for (b, want) in [
        (json!({"model": "m"}), "missing messages"),
        (json!({"messages": "hello"}), "missing messages"),
        (
            json!({"messages": [{"role": "user", "content": 5}]}),
            "invalid message content at index 1",
        ),
    ] {
        let r = send("POST", &env.url("/v1/messages"), &JSON, b.to_string()).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["type"], "error");
        assert_eq!(r.json()["error"]["message"], want);
    }
    // Provider errors keep their status and become Anthropic errors.
    let r = send(
        "POST",
        &env.url("/v1/messages"),
        &[
            ("content-type", "application/json"),
            ("x-mock-status", "429"),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.json(),
        json!({"type": "error", "error": {"type": "server_error", "message": "mock error 429"}})
    );
}

#[tokio::test]
async fn provider_answering_in_the_wrong_format_is_a_502() {
    let env = Env::start("conv-wrong").await;
    // An "OpenAI-compatible" endpoint that actually streams Anthropic events.
    env.route(
        "w",
        "/v1/messages",
        env.ai("openai-compatible", "/v1/messages"),
    )
    .await;
    let body =
        json!({"max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = send("POST", &env.url("/v1/messages"), &JSON, body.to_string()).await;
    assert_eq!(r.status, 502);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("completed without producing any output")
    );
}

#[tokio::test]
async fn openai_client_on_anthropic_provider() {
    let env = Env::start("conv-o2a").await;
    let ai = json!({"provider": "anthropic", "auth": {"header": {"x-api-key": "token"}},
        "options": {"model": "claude-sonnet-4-20250514"}, "override": {"endpoint": env.mock.url()}});
    env.route("o2a", "/v1/chat/completions", ai).await;
    let body = json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 1+1?"}],
        "max_tokens": 50, "stop": "END", "user": "alice",
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}], "tool_choice": "auto"});
    let hdrs = [
        ("content-type", "application/json"),
        ("authorization", "Bearer client-openai-key"),
    ];
    let r = send(
        "POST",
        &env.url("/v1/chat/completions"),
        &hdrs,
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "1+1 equals 2.");
    assert_eq!(v["usage"]["total_tokens"], 18);
    let up = env.mock.last().unwrap();
    assert_eq!(up.path, "/v1/messages");
    let ub = up.json();
    assert_eq!(ub["system"], json!([{"type": "text", "text": "Be brief."}]));
    assert_eq!(ub["model"], "claude-sonnet-4-20250514");
    assert_eq!(
        (ub["max_tokens"].as_u64(), ub["stop_sequences"].clone()),
        (Some(50), json!(["END"]))
    );
    assert_eq!(ub["metadata"], json!({"user_id": "alice"}));
    assert_eq!(ub["tools"][0]["name"], "get_weather");
    assert_eq!(ub["tool_choice"], json!({"type": "auto"}));
    assert_eq!(up.header("x-api-key"), Some("token"));
    assert_eq!(up.header("anthropic-version"), Some("2023-06-01"));
    assert!(
        up.header("authorization").is_none(),
        "the OpenAI client's key does not reach Anthropic"
    );

    // Tool use and streams with tool calls.
    let r = send(
        "POST",
        &env.url("/v1/chat/completions"),
        &[
            ("content-type", "application/json"),
            ("x-mock-tool-call", "1"),
        ],
        body.to_string(),
    )
    .await;
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"],
        json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
    );
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let r = send(
        "POST",
        &env.url("/v1/chat/completions"),
        &[
            ("content-type", "application/json"),
            ("x-mock-tool-call", "1"),
        ],
        sb.to_string(),
    )
    .await;
    let text = r.text();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("\"usage\""),
        "no usage chunk unless asked: {text}"
    );
    let evs = events(&text);
    let args: String = evs
        .iter()
        .filter_map(|(_, v)| {
            v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        })
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    let l = env.log_line(3).await;
    assert_eq!(
        (
            l.get("llm_stream"),
            l.get("llm_prompt_tokens"),
            l.get("llm_completion_tokens"),
            l.get("llm_has_tool_calls")
        ),
        ("true", "10", "8", "true")
    );
    // With include_usage the final usage chunk is there.
    sb["stream_options"] = json!({"include_usage": true});
    let r = send(
        "POST",
        &env.url("/v1/chat/completions"),
        &JSON,
        sb.to_string(),
    )
    .await;
    let evs = events(&r.text());
    assert_eq!(evs[evs.len() - 2].1["usage"]["total_tokens"], 18);
}

/// A provider that breaks off mid-stream: the client gets an error event in its own protocol
/// and a cut transfer, never the closing events of a normal end.
#[tokio::test]
async fn a_stream_broken_off_upstream_never_looks_finished() {
    let env = Env::start("conv-reset").await;
    let mut ai = env.ai("openai", "");
    ai.as_object_mut().unwrap().remove("options");
    env.route("a2o", "/v1/messages", ai).await;
    let reset = [
        ("content-type", "application/json"),
        ("x-mock-reset-after", "2"),
        ("x-mock-chunks", "6"),
        ("x-mock-chunk-delay-ms", "30"),
    ];
    let body = json!({"model": "gpt-4o", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "What is 1+1?"}]});
    let r = send("POST", &env.url("/v1/messages"), &reset, body.to_string()).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("event: message_start"), "{text}");
    assert!(text.contains("event: error"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
    assert!(!text.contains("end_turn"), "{text}");
    assert!(r.aborted, "the transfer is cut");

    let ai = json!({"provider": "anthropic", "auth": {"header": {"x-api-key": "token"}},
        "options": {"model": "claude-sonnet-4-20250514"}, "override": {"endpoint": env.mock.url()}});
    env.route("o2a", "/v1/chat/completions", ai).await;
    let body = json!({"stream": true, "messages": [{"role": "user", "content": "What is 1+1?"}]});
    let r = send(
        "POST",
        &env.url("/v1/chat/completions"),
        &reset,
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("chat.completion.chunk"), "{text}");
    assert!(text.contains("\"error\""), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(!text.contains("\"finish_reason\":\"stop\""), "{text}");
    assert!(r.aborted);
}
