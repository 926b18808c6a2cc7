//! Gemini-native clients on an OpenAI Chat provider: `:generateContent` and
//! `:streamGenerateContent` (SSE with `alt=sse`, else one JSON array) converted both ways, keys
//! from `x-goog-api-key` or `?key=`, function calls, errors in Google's envelope, the log
//! variables, and a stream broken mid-way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Env;
use ferry_testkit::send;
use serde_json::{Value, json};

const BASE: &str = "/gemini/v1beta/models/gemini-2.5-flash";

async fn env(tag: &str) -> Env {
    let env = Env::start(tag).await;
    let mut ai = env.ai("openai", "/v1/chat/completions");
    ai.as_object_mut().unwrap().remove("options");
    env.route_with(json!({"id": "g", "uri": "/gemini/*", "plugins": {"ai-proxy": ai}}))
        .await;
    // A route without credentials of its own: the client's key is used.
    let mut open = env.ai("openai", "/v1/chat/completions");
    open.as_object_mut().unwrap().remove("options");
    open["auth"] = json!({});
    env.route_with(json!({"id": "open", "uri": "/open/*", "plugins": {"ai-proxy": open}}))
        .await;
    env
}

fn body() -> String {
    json!({
        "systemInstruction": {"role": "user", "parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "What is 1+1?"}]}],
        "generationConfig": {"maxOutputTokens": 64, "stopSequences": ["END"]}
    })
    .to_string()
}

const H: [(&str, &str); 2] = [
    ("content-type", "application/json"),
    ("x-goog-api-key", "client-key"),
];

#[tokio::test]
async fn generate_content() {
    let env = env("gemini-chat").await;
    let r = send(
        "POST",
        &env.url(&format!("{BASE}:generateContent")),
        &H,
        body(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(
        v["candidates"][0],
        json!({"content": {"role": "model", "parts": [{"text": "1+1 equals 2."}]}, "finishReason": "STOP", "index": 0})
    );
    assert_eq!(
        v["usageMetadata"],
        json!({"promptTokenCount": 23, "candidatesTokenCount": 8, "totalTokenCount": 31})
    );
    assert_eq!(v["modelVersion"], "gemini-2.5-flash");
    let up = env.mock.last().unwrap();
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(up.query, "");
    assert_eq!(
        up.header("authorization"),
        Some("Bearer token"),
        "the route's key"
    );
    assert!(
        up.headers
            .keys()
            .all(|k| !k.as_str().starts_with("x-goog-"))
    );
    assert_eq!(
        up.json(),
        json!({"model": "gemini-2.5-flash", "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 1+1?"}],
            "max_completion_tokens": 64, "stop": ["END"]})
    );
    let l = env.log_line(1).await;
    assert_eq!(
        (
            l.get("request_type"),
            l.get("request_llm_model"),
            l.get("llm_model"),
            l.get("llm_total_tokens")
        ),
        ("ai_chat", "gemini-2.5-flash", "gemini-2.5-flash", "31")
    );
    // `?key=` on a route without credentials: the upstream gets it as a bearer token.
    let r = send(
        "POST",
        &env.url("/open/v1/models/gemini-2.5-flash:generateContent?key=token"),
        &[("content-type", "application/json")],
        body(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = env.mock.last().unwrap();
    assert_eq!(up.header("authorization"), Some("Bearer token"));
    assert_eq!(up.query, "");
}

#[tokio::test]
async fn streams_as_sse_and_as_a_json_array() {
    let env = env("gemini-stream").await;
    let url = env.url(&format!("{BASE}:streamGenerateContent?alt=sse"));
    let r = send("POST", &url, &H, body()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = r.text();
    let events: Vec<Value> = text
        .split_terminator("\n\n")
        .map(|e| {
            let d = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("only data lines: {e:?}"));
            serde_json::from_str(d).unwrap()
        })
        .collect();
    assert!(events.len() >= 2, "{text}");
    let joined: String = events
        .iter()
        .filter_map(|e| e["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(joined, "1+1 equals 2.");
    let last = events.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["totalTokenCount"], 21);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["candidates"][0].get("finishReason").is_some())
            .count(),
        1
    );
    assert!(!text.contains("[DONE]"));
    assert_eq!(env.mock.last().unwrap().json()["stream"], true);
    let l = env.log_line(1).await;
    assert_eq!(
        (
            l.get("request_type"),
            l.get("llm_total_tokens"),
            l.get("llm_stream")
        ),
        ("ai_stream", "21", "true")
    );
    // Without alt=sse: one JSON array of the same events.
    let r = send(
        "POST",
        &env.url(&format!("{BASE}:streamGenerateContent")),
        &H,
        body(),
    )
    .await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let arr: Vec<Value> = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(arr.len(), events.len());
    assert_eq!(arr.last().unwrap()["candidates"][0]["finishReason"], "STOP");
    let l = env.log_line(2).await;
    assert_eq!(l.get("llm_total_tokens"), "21");
}

#[tokio::test]
async fn function_calls_errors_and_broken_streams() {
    let env = env("gemini-tools").await;
    let tools = json!({
        "contents": [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT",
            "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}
    })
    .to_string();
    let r = send(
        "POST",
        &env.url(&format!("{BASE}:generateContent")),
        &[
            ("content-type", "application/json"),
            ("x-mock-tool-call", "1"),
        ],
        tools.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["candidates"][0]["content"]["parts"][0]["functionCall"],
        json!({"id": "call_mock", "name": "get_weather", "args": {"city": "Paris"}})
    );
    let up = env.mock.last().unwrap().json();
    assert_eq!(
        up["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(up["tool_choice"], "required");
    // The same streamed: the call comes whole in the final event.
    let r = send(
        "POST",
        &env.url(&format!("{BASE}:streamGenerateContent?alt=sse")),
        &[
            ("content-type", "application/json"),
            ("x-mock-tool-call", "1"),
        ],
        tools,
    )
    .await;
    let text = r.text();
    let last: Value = serde_json::from_str(
        text.trim_end()
            .rsplit("\n\n")
            .next()
            .unwrap()
            .trim_start_matches("data: "),
    )
    .unwrap();
    assert_eq!(
        last["candidates"][0]["content"]["parts"][0]["functionCall"]["args"],
        json!({"city": "Paris"})
    );
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");

    // Errors in Google's envelope: provider 429 (with retry-after), bad roles, bad bodies.
    let r = send(
        "POST",
        &env.url(&format!("{BASE}:generateContent")),
        &[
            ("content-type", "application/json"),
            ("x-mock-status", "429"),
        ],
        body(),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.json(),
        json!({"error": {"code": 429, "message": "mock error 429", "status": "RESOURCE_EXHAUSTED"}})
    );
    let bad = |b: Value| {
        let url = env.url(&format!("{BASE}:generateContent"));
        async move {
            send(
                "POST",
                &url,
                &[("content-type", "application/json")],
                b.to_string(),
            )
            .await
        }
    };
    let r = bad(json!({"contents": [{"role": "system", "parts": [{"text": "x"}]}]})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": {"code": 400, "message": "contents[0].role must be \"user\" or \"model\"", "status": "INVALID_ARGUMENT"}})
    );
    let r = bad(json!({"contents": [{"parts": [{"videoMetadata": {}}]}]})).await;
    assert_eq!(
        r.json()["error"]["message"],
        "contents[0].parts[0] has no supported data"
    );
    let r = bad(json!([1, 2])).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    let r = bad(json!({"contents": []})).await;
    assert_eq!(r.json()["error"]["message"], "contents is required");

    // Broken after the first event: an error event, then a cut transfer.
    let r = send(
        "POST",
        &env.url(&format!("{BASE}:streamGenerateContent?alt=sse")),
        &[
            ("content-type", "application/json"),
            ("x-mock-reset-after", "2"),
            ("x-mock-chunk-delay-ms", "20"),
        ],
        body(),
    )
    .await;
    let text = r.text();
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let err: Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
    assert_eq!(err["error"]["status"], "UNAVAILABLE", "{text}");
    assert!(!text.contains("finishReason"), "{text}");
    assert!(r.aborted);
}
