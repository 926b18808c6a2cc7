//! Rows of the APISIX `ai-proxy` test-suite checklist (spec §8) that apply to Ferry, each as
//! a test against the mock provider (`ai-proxy.t`, `ai-proxy2.t`, `ai-proxy3.t`,
//! `ai-proxy-request-body-override.t`, `ai-proxy-stream-limits.t`, `ai-proxy-passthrough.t`,
//! `ai-proxy-latency-vars.t`, `ai-proxy-upstream-vars.t`, `ai-proxy-client-disconnect.t`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, JSON, chat_body};
use ferry_testkit::send;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn schema_checks() {
    let env = Env::start("rows-schema").await;
    let cases = vec![
        (
            json!({"provider": "some-unique", "auth": {}}),
            "property \"provider\" validation failed: matches none of the enum values",
        ),
        (json!({"provider": "openai"}), "missing field `auth`"),
        (
            json!({"provider": "openai"}),
            r#"property "auth" is required (missing field `auth`); e.g. "auth": {"header""#,
        ),
        (
            json!({"provider": "openai-compatible", "auth": {}}),
            "requires override.endpoint",
        ),
        (
            json!({"provider": "azure-openai", "auth": {}}),
            "requires override.endpoint",
        ),
        (
            json!({"provider": "openai", "auth": {}, "override": {"endpoint": "ftp://x"}}),
            "scheme must be http or https",
        ),
        (
            json!({"provider": "openai", "auth": {}, "override": {"llm_options": {"temperature": 1}}}),
            "unknown field `temperature`",
        ),
        (
            json!({"provider": "openai", "auth": {}, "override": {"request_body": {"grpc": {}}}}),
            "additional properties forbidden, found grpc",
        ),
        (
            json!({"provider": "openai", "auth": {}, "max_stream_duration_ms": 0}),
            "max_stream_duration_ms",
        ),
        (
            json!({"provider": "openai", "auth": {}, "streaming_flush_interval_ms": -1}),
            "streaming_flush_interval_ms",
        ),
        (
            json!({"provider": "openai", "auth": {}, "timeout": 0}),
            "property \"timeout\" validation failed",
        ),
        (
            json!({"provider": "openai", "auth": {}, "timeout": 600001}),
            "property \"timeout\" validation failed",
        ),
        (
            json!({"provider": "openai", "auth": {}, "keepalive_timeout": 999}),
            "keepalive_timeout",
        ),
        (
            json!({"provider": "openai", "auth": {}, "model": "x"}),
            "unknown field `model`",
        ),
        (
            json!({"provider": "openai", "auth": {}, "options": {"model": 5}}),
            "options.model",
        ),
        (
            json!({"provider": "vertex-ai", "auth": {}}),
            "vertex-ai requires either provider_conf",
        ),
        (
            json!({"provider": "bedrock", "auth": {}}),
            "not available in this release",
        ),
    ];
    for (conf, want) in cases {
        let (s, v) = env
            .ferry
            .admin(
                "PUT",
                "/routes/x",
                Some(json!({"uri": "/x", "plugins": {"ai-proxy": conf.clone()}})),
            )
            .await;
        assert_eq!(s, 400, "{conf}");
        let msg = v["error_msg"].as_str().unwrap();
        assert!(
            msg.starts_with("failed to check the configuration of plugin ai-proxy err: "),
            "{msg}"
        );
        assert!(msg.contains(want), "{conf}: {msg}");
    }
    // Stored as sent (APISIX 3.14+ writes no defaults back); the defaults are what the
    // plugin schema says and apply when the route is compiled.
    let conf = json!({"provider": "openai", "auth": {}});
    let (s, v) = env
        .ferry
        .admin(
            "PUT",
            "/routes/ok",
            Some(json!({"uri": "/x", "plugins": {"ai-proxy": conf}})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(v["value"]["plugins"]["ai-proxy"], conf);
    let (_, schema) = env.ferry.admin("GET", "/plugins/ai-proxy", None).await;
    let p = &schema["properties"];
    assert_eq!(
        (
            p["timeout"]["default"].as_u64(),
            p["keepalive_pool"]["default"].as_u64(),
            p["ssl_verify"]["default"].as_bool()
        ),
        (Some(30000), Some(30), Some(true)),
        "{schema}"
    );
}

#[tokio::test]
async fn auth_method_and_bad_requests() {
    let env = Env::start("rows-basic").await;
    let mut wrong = env.ai("openai", "");
    wrong["auth"]["header"]["Authorization"] = json!("Bearer wrongtoken");
    env.route("wrong", "/wrong", wrong).await;
    env.route("right", "/right", env.ai("openai", "")).await;
    // Upstream 401 passes through with its body.
    let r = send("POST", &env.url("/wrong"), &JSON, chat_body()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    // auth.header wins over the client's Authorization.
    let r = send(
        "POST",
        &env.url("/right"),
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer wrong token"),
        ],
        chat_body(),
    )
    .await;
    assert_eq!(r.status, 200);
    // The method is not restricted: GET with a chat body works.
    let r = send("GET", &env.url("/right"), &JSON, chat_body()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        env.mock.last().unwrap().method,
        "POST",
        "non-passthrough protocols POST upstream"
    );

    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (JSON.to_vec(), b"".to_vec(), 400, "request body is empty"),
        (
            JSON.to_vec(),
            b"{}\"messages\": []".to_vec(),
            400,
            "could not parse JSON request body",
        ),
        (
            vec![("content-type", "application/x-www-form-urlencoded")],
            b"a=1".to_vec(),
            400,
            "unsupported content-type: application/x-www-form-urlencoded, only application/json is supported",
        ),
        (
            JSON.to_vec(),
            b"{}".to_vec(),
            400,
            "no matching AI protocol for the request",
        ),
        (
            JSON.to_vec(),
            b"\"text\"".to_vec(),
            400,
            "request body must be a JSON object",
        ),
        (
            JSON.to_vec(),
            br#"{"model": {"x": 1}, "messages": []}"#.to_vec(),
            400,
            "\"model\" must be a string",
        ),
        (
            JSON.to_vec(),
            br#"{"stream": "yes", "messages": []}"#.to_vec(),
            400,
            "\"stream\" must be a boolean",
        ),
        (
            JSON.to_vec(),
            b"{\"messages\": [\"\xff\xfe\"]}".to_vec(),
            400,
            "could not parse JSON request body",
        ),
    ];
    // A route without options.model, so the client's model matters.
    let mut plain = env.ai("openai", "");
    plain.as_object_mut().unwrap().remove("options");
    env.route("plain", "/plain", plain).await;
    for (headers, body, status, msg) in cases {
        let r = send("POST", &env.url("/plain"), &headers, body.clone()).await;
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&body));
        let got = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            got.contains(msg),
            "{}: {got}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
}

#[tokio::test]
async fn options_endpoint_path_and_headers() {
    let env = Env::start("rows-options").await;
    let mut ai = env.ai("openai", "");
    ai["options"] = json!({"model": "gpt-4", "foo": "bar", "temperature": 1.0});
    env.route("opts", "/opts", ai).await;
    env.route("random", "/random", env.ai("openai", "/random"))
        .await;
    env.route_with(json!({"id": "rid", "uri": "/rid", "plugins": {"ai-proxy": env.ai("openai", ""), "request-id": {}}})).await;

    send("POST", &env.url("/opts"), &JSON, chat_body()).await;
    let up = env.mock.last().unwrap().json();
    assert_eq!(
        (up["foo"].as_str(), up["temperature"].as_f64()),
        (Some("bar"), Some(1.0))
    );
    // An endpoint with a path is used as is.
    let r = send("POST", &env.url("/random"), &JSON, chat_body()).await;
    assert_eq!(r.json()["path"], "/random");
    // Client headers go upstream, except host, accept-encoding and hop-by-hop ones; the
    // request id set by request-id goes too.
    let r = send(
        "POST",
        &env.url("/rid"),
        &[
            ("content-type", "application/json"),
            ("test-type", "header_forwarding"),
            ("accept-encoding", "gzip, deflate"),
        ],
        chat_body(),
    )
    .await;
    assert_eq!(r.status, 200);
    let up = env.mock.last().unwrap();
    assert_eq!(up.header("test-type"), Some("header_forwarding"));
    assert!(up.header("accept-encoding").is_none());
    assert_eq!(up.header("x-request-id"), r.header("x-request-id"));
    assert_eq!(up.header("content-type"), Some("application/json"));
    assert_ne!(
        up.header("host"),
        Some(format!("127.0.0.1:{}", env.ferry.port).as_str())
    );
}

#[tokio::test]
async fn auth_query_and_endpoint_query() {
    let env = Env::start("rows-query").await;
    let ai = |key: &str, endpoint: String| {
        json!({"provider": "openai", "auth": {"query": {"api_key": key}},
        "options": {"model": "gpt-4"}, "override": {"endpoint": endpoint}})
    };
    env.route("bad", "/bad", ai("wrong", env.mock.url())).await;
    env.route(
        "good",
        "/good",
        ai(
            "token",
            format!("{}/v1/chat/completions?some_query=yes", env.mock.url()),
        ),
    )
    .await;
    assert_eq!(
        send("POST", &env.url("/bad"), &JSON, chat_body())
            .await
            .status,
        401
    );
    assert_eq!(
        send("POST", &env.url("/good?client=ignored"), &JSON, chat_body())
            .await
            .status,
        200
    );
    let q = env.mock.last().unwrap().query;
    assert!(
        q.contains("api_key=token") && q.contains("some_query=yes"),
        "{q}"
    );
    assert!(
        !q.contains("client"),
        "chat requests do not forward the client query: {q}"
    );
}

#[tokio::test]
async fn upstream_errors_keep_status_body_and_headers() {
    let env = Env::start("rows-errors").await;
    env.route(
        "r",
        "/r",
        env.ai("openai-compatible", "/v1/chat/completions"),
    )
    .await;
    let r = send(
        "POST",
        &env.url("/r"),
        &[
            ("content-type", "application/json"),
            ("x-mock-status", "500"),
        ],
        chat_body(),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.text().contains("mock error 500"));
    assert_eq!(r.header("x-request-id"), Some("req_mock"));
    let r = send(
        "POST",
        &env.url("/r"),
        &[
            ("content-type", "application/json"),
            ("x-mock-status", "429"),
        ],
        chat_body(),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    let l = env.log_line(2).await;
    assert!(
        l.get("apisix_upstream_response_time")
            .parse::<u64>()
            .is_ok()
    );
    assert!(l.get("llm_time_to_first_token").parse::<u64>().is_ok());
}

#[tokio::test]
async fn transport_failures() {
    let env = Env::start("rows-transport").await;
    // Nothing listens there: 502 in the client's protocol.
    let dead = ferry_testkit::free_port();
    let mut ai = env.ai("openai", "");
    ai["override"]["endpoint"] = json!(format!("http://127.0.0.1:{dead}"));
    env.route("dead", "/dead", ai).await;
    let r = send("POST", &env.url("/dead"), &JSON, chat_body()).await;
    assert_eq!(r.status, 502);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not connect"),
        "{}",
        r.text()
    );
    let l = env.log_line(1).await;
    assert_eq!(l.get("llm_time_to_first_token"), "0");
    assert!(
        l.get("apisix_upstream_response_time")
            .parse::<u64>()
            .is_ok()
    );
    // A provider that never answers: 504 after `timeout`.
    let mut ai = env.ai("openai", "");
    ai["timeout"] = json!(300);
    env.route("slow", "/slow", ai).await;
    let t = Instant::now();
    let r = send(
        "POST",
        &env.url("/slow"),
        &[
            ("content-type", "application/json"),
            ("x-mock-delay-ms", "3000"),
        ],
        chat_body(),
    )
    .await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(2));
    // A stream head, then silence: 504 too (nothing was sent yet).
    let r = send(
        "POST",
        &env.url("/slow"),
        &[("content-type", "application/json"), ("x-mock-stall", "1")],
        json!({"messages": [], "stream": true}).to_string(),
    )
    .await;
    assert_eq!(r.status, 504, "{}", r.text());
}

#[tokio::test]
async fn responses_api() {
    let env = Env::start("rows-responses").await;
    let mut ai = env.ai("openai", "");
    ai.as_object_mut().unwrap().remove("options");
    env.route_with(
        json!({"id": "resp", "uris": ["/v1/responses", "/anything"], "plugins": {"ai-proxy": ai}}),
    )
    .await;
    let body = |stream: bool| {
        json!({"model": "gpt-4o", "input": "hello", "stream": stream, "instructions": "be brief"})
            .to_string()
    };
    let r = send("POST", &env.url("/v1/responses"), &JSON, body(false)).await;
    assert_eq!(r.status, 200);
    let up = env.mock.last().unwrap();
    assert_eq!(up.path, "/v1/responses");
    assert!(up.json().get("stream_options").is_none());
    let r = send("POST", &env.url("/v1/responses"), &JSON, body(true)).await;
    assert!(r.text().contains("response.completed"));
    assert!(
        env.mock
            .last()
            .unwrap()
            .json()
            .get("stream_options")
            .is_none(),
        "never injected for Responses"
    );
    let l = env.log_line(2).await;
    assert_eq!(
        (
            l.get("llm_prompt_tokens"),
            l.get("llm_completion_tokens"),
            l.get("llm_total_tokens"),
            l.get("llm_stream")
        ),
        ("20", "5", "25", "true")
    );
    // Chat still works on the same route.
    let r = send("POST", &env.url("/anything"), &JSON, chat_body()).await;
    assert_eq!(r.status, 200);
    assert_eq!(env.mock.last().unwrap().path, "/v1/chat/completions");
}

#[tokio::test]
async fn request_body_overrides() {
    let env = Env::start("rows-override").await;
    let with = |provider: &str, over: serde_json::Value| {
        let mut ai = env.ai(provider, "");
        ai.as_object_mut().unwrap().remove("options");
        ai["override"]
            .as_object_mut()
            .unwrap()
            .extend(over.as_object().unwrap().clone());
        ai
    };
    env.route("plain", "/plain", with("openai", json!({})))
        .await;
    env.route(
        "llm",
        "/llm",
        with("openai", json!({"llm_options": {"max_tokens": 555}})),
    )
    .await;
    env.route("compat", "/compat", with("openai-compatible", json!({"endpoint": format!("{}/v1/chat/completions", env.mock.url()), "llm_options": {"max_tokens": 444}}))).await;
    env.route(
        "resp",
        "/v1/responses",
        with("openai", json!({"llm_options": {"max_tokens": 333}})),
    )
    .await;
    env.route("merge", "/merge", with("openai", json!({"request_body": {"openai-chat": {"max_tokens": 555, "stream_options": {"extra": 1}, "stop": ["a", "b"]}}}))).await;
    env.route("force", "/force", with("openai", json!({"request_body": {"openai-chat": {"max_tokens": 555}}, "request_body_force_override": true}))).await;
    env.route("both", "/both", with("openai", json!({"llm_options": {"max_tokens": 100}, "request_body": {"openai-chat": {"max_completion_tokens": 200}}, "request_body_force_override": true}))).await;

    // Nothing to change: the client's bytes go upstream untouched.
    let raw =
        "{ \"messages\" : [ {\"role\":\"user\",\"content\":\"hi\"} ], \"zeta\": 1, \"alpha\": [] }";
    send("POST", &env.url("/plain"), &JSON, raw).await;
    assert_eq!(env.mock.last().unwrap().body, raw.as_bytes());
    let last = || env.mock.last().unwrap().json();
    send(
        "POST",
        &env.url("/llm"),
        &JSON,
        json!({"messages": [], "max_tokens": 999}).to_string(),
    )
    .await;
    assert_eq!(
        (
            last()["max_completion_tokens"].as_u64(),
            last().get("max_tokens")
        ),
        (Some(555), None)
    );
    send(
        "POST",
        &env.url("/compat"),
        &JSON,
        json!({"messages": []}).to_string(),
    )
    .await;
    assert_eq!(last()["max_tokens"], 444);
    send(
        "POST",
        &env.url("/v1/responses"),
        &JSON,
        json!({"input": "x"}).to_string(),
    )
    .await;
    assert_eq!(last()["max_output_tokens"], 333);
    send(
        "POST",
        &env.url("/merge"),
        &JSON,
        json!({"messages": [], "max_tokens": 999, "stream": true}).to_string(),
    )
    .await;
    assert_eq!(last()["max_tokens"], 999, "the client wins without force");
    assert_eq!(
        last()["stream_options"],
        json!({"include_usage": true, "extra": 1})
    );
    assert_eq!(last()["stop"], json!(["a", "b"]));
    send(
        "POST",
        &env.url("/force"),
        &JSON,
        json!({"messages": [], "max_tokens": 999}).to_string(),
    )
    .await;
    assert_eq!(last()["max_tokens"], 555);
    send(
        "POST",
        &env.url("/both"),
        &JSON,
        json!({"messages": []}).to_string(),
    )
    .await;
    assert_eq!(last()["max_completion_tokens"], 200);
    // Shaped bodies keep [], {} and null.
    send("POST", &env.url("/llm"), &JSON, json!({"messages": [], "tools": [{"type": "function", "function": {"parameters": {"properties": {}, "required": []}}}], "x": null}).to_string()).await;
    assert_eq!(
        last()["tools"][0]["function"]["parameters"],
        json!({"properties": {}, "required": []})
    );
    assert_eq!(last()["x"], serde_json::Value::Null);
}

#[tokio::test]
async fn passthrough_bodies() {
    let env = Env::start("rows-passthrough").await;
    let mut ai = env.ai("openai", "");
    ai["auth"]["query"] = json!({"akey": "secret"});
    env.route("pt", "/v1/*", ai).await;
    let mut ai = env.ai("openai", "/v1/override?ekey=eval&name=fromendpoint");
    ai["auth"]["query"] = json!({"akey": "secret"});
    env.route("ep", "/ep/*", ai).await;
    let img =
        json!({"model": "dall-e-3", "prompt": "a cat", "n": 1, "size": "1024x1024"}).to_string();
    let r = send(
        "POST",
        &env.url("/v1/images/generations"),
        &JSON,
        img.clone(),
    )
    .await;
    assert_eq!(r.json()["path"], "/v1/images/generations");
    assert_eq!(
        env.mock.last().unwrap().json()["model"],
        "gpt-4",
        "options.model rewrites the body"
    );
    let r = send(
        "PUT",
        &env.url("/ep/x?name=fromclient&akey=hack"),
        &JSON,
        img,
    )
    .await;
    assert_eq!(r.json()["method"], "PUT");
    assert_eq!(r.json()["path"], "/v1/override");
    let q = env.mock.last().unwrap().query;
    assert!(
        q.contains("name=fromclient")
            && q.contains("ekey=eval")
            && q.contains("akey=secret")
            && !q.contains("hack"),
        "{q}"
    );
}

#[tokio::test]
async fn provider_paths() {
    let env = Env::start("rows-providers").await;
    let cases = [
        ("openai", "/v1/chat/completions"),
        ("deepseek", "/chat/completions"),
        ("aimlapi", "/chat/completions"),
        ("anthropic", "/v1/messages"),
        ("openrouter", "/api/v1/chat/completions"),
        ("gemini", "/v1beta/openai/chat/completions"),
        ("openai-compatible", "/v1/chat/completions"),
        ("vertex-ai", "/v1/chat/completions"),
    ];
    for (provider, want) in cases {
        let mut ai = env.ai(provider, "");
        if provider == "vertex-ai" {
            ai["override"]["endpoint"] = json!(format!("{}/v1/chat/completions", env.mock.url()));
        }
        env.route(provider, &format!("/{provider}"), ai).await;
        let r = send(
            "POST",
            &env.url(&format!("/{provider}")),
            &JSON,
            chat_body(),
        )
        .await;
        assert_eq!(r.status, 200, "{provider}: {}", r.text());
        assert_eq!(env.mock.last().unwrap().path, want, "{provider}");
    }
    // Embeddings only where the provider has them.
    let r = send(
        "POST",
        &env.url("/deepseek"),
        &JSON,
        json!({"input": "x"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains(
            "provider deepseek does not support openai-embeddings protocol (supported: openai-chat)"
        ),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn anthropic_messages_native() {
    let env = Env::start("rows-anthropic").await;
    let ai = json!({"provider": "anthropic", "auth": {"header": {"x-api-key": "token"}},
        "options": {"model": "claude-sonnet-4-20250514"}, "override": {"endpoint": env.mock.url()}});
    env.route_with(
        json!({"id": "a", "uris": ["/v1/messages", "/anything"], "plugins": {"ai-proxy": ai}}),
    )
    .await;
    let body = json!({"max_tokens": 64, "messages": [{"role": "user", "content": "What is 1+1?"}], "metadata": {"user_id": "u1"}});
    let r = send(
        "POST",
        &env.url("/v1/messages"),
        &[
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["content"][0]["text"], "1+1 equals 2.");
    let up = env.mock.last().unwrap();
    assert_eq!(
        (
            up.path.as_str(),
            up.header("x-api-key"),
            up.header("anthropic-version")
        ),
        ("/v1/messages", Some("token"), Some("2023-06-01"))
    );
    assert!(up.json().get("stream_options").is_none());
    let l = env.log_line(1).await;
    assert_eq!(
        (
            l.get("llm_prompt_tokens"),
            l.get("llm_completion_tokens"),
            l.get("llm_end_user_id")
        ),
        ("10", "8", "u1")
    );
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let r = send("POST", &env.url("/v1/messages"), &JSON, sbody.to_string()).await;
    assert!(r.text().contains("event: message_stop"));
    let l = env.log_line(2).await;
    assert_eq!(
        (
            l.get("llm_prompt_tokens"),
            l.get("llm_completion_tokens"),
            l.get("llm_total_tokens"),
            l.get("llm_stream")
        ),
        ("10", "8", "18", "true")
    );
    // An OpenAI client on the same provider is converted to native Messages.
    let r = send("POST", &env.url("/anything"), &JSON, chat_body()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(env.mock.last().unwrap().path, "/v1/messages");
    // Errors for an Anthropic client are Anthropic-shaped.
    let r = send("POST", &env.url("/v1/messages"), &JSON, "{oops").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}
