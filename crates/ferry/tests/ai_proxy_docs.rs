//! The APISIX `ai-proxy` documentation's examples, against the mock provider: each example's
//! Admin API call and client request, checking what reaches the provider and what comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, JSON, chat_body};
use ferry_testkit::send;
use serde_json::json;

#[tokio::test]
async fn proxy_to_openai() {
    let env = Env::start("docs-openai").await;
    env.route("ai-proxy-route", "/anything", env.ai("openai", ""))
        .await;
    let r = send("POST", &env.url("/anything"), &JSON, chat_body()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["model"], "gpt-4");
    assert_eq!(v["choices"][0]["message"]["content"], "1+1 equals 2.");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let up = env.mock.last().unwrap();
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(up.header("authorization"), Some("Bearer token"));
    assert_eq!(up.json()["model"], "gpt-4");
    assert_eq!(
        up.json()["messages"][0]["content"],
        "You are a mathematician"
    );
    let l = env.log_line(1).await;
    assert_eq!(l.get("request_type"), "ai_chat");
    assert_eq!(l.get("llm_model"), "gpt-4");
    assert_eq!(l.get("llm_prompt_tokens"), "23");
    assert_eq!(l.get("llm_completion_tokens"), "8");
    assert_eq!(l.get("llm_total_tokens"), "31");
}

#[tokio::test]
async fn proxy_to_deepseek() {
    let env = Env::start("docs-deepseek").await;
    let mut ai = env.ai("deepseek", "");
    ai["options"]["model"] = json!("deepseek-chat");
    env.route("ai-proxy-route", "/anything", ai).await;
    let body = json!({"messages": [{"role": "system", "content": "You are an AI assistant that helps people find information."},
                                   {"role": "user", "content": "Write me a 50-word introduction for Apache APISIX."}]});
    let r = send("POST", &env.url("/anything"), &JSON, body.to_string()).await;
    assert_eq!(r.status, 200);
    let up = env.mock.last().unwrap();
    assert_eq!(up.path, "/chat/completions", "DeepSeek's path has no /v1");
    assert_eq!(up.json()["model"], "deepseek-chat");
}

#[tokio::test]
async fn proxy_to_azure_openai() {
    let env = Env::start("docs-azure").await;
    let ai = json!({
        "provider": "azure-openai",
        "auth": {"header": {"api-key": "token"}},
        "options": {"model": "gpt-4"},
        "override": {"endpoint": format!("{}/openai/deployments/gpt-4/chat/completions?api-version=2024-02-15-preview", env.mock.url())}
    });
    env.route("ai-proxy-route", "/anything", ai).await;
    let r = send("POST", &env.url("/anything"), &JSON, chat_body()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = env.mock.last().unwrap();
    assert_eq!(up.path, "/openai/deployments/gpt-4/chat/completions");
    assert_eq!(up.query, "api-version=2024-02-15-preview");
    assert_eq!(up.header("api-key"), Some("token"));
    assert!(
        up.json().get("model").is_none(),
        "azure-openai removes the model: {}",
        up.json()
    );
}

#[tokio::test]
async fn proxy_to_openai_embeddings() {
    let env = Env::start("docs-embeddings").await;
    let ai = json!({
        "provider": "openai",
        "auth": {"header": {"Authorization": "Bearer token"}},
        "options": {"model": "text-embedding-3-small", "encoding_format": "float"},
        "override": {"endpoint": format!("{}/v1/embeddings", env.mock.url())}
    });
    env.route("ai-proxy-route", "/embeddings", ai).await;
    let r = send(
        "POST",
        &env.url("/embeddings"),
        &JSON,
        json!({"input": "hello world"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["data"][0]["embedding"],
        json!([0.0123, -0.0456, 0.0789, 0.0012])
    );
    let up = env.mock.last().unwrap();
    assert_eq!(
        up.json(),
        json!({"input": "hello world", "model": "text-embedding-3-small", "encoding_format": "float"})
    );
    let l = env.log_line(1).await;
    assert_eq!(l.get("llm_prompt_tokens"), "7");
}

#[tokio::test]
async fn select_model_by_request_body_parameter() {
    let env = Env::start("docs-post-arg").await;
    for (id, model, provider, upstream_model) in [
        ("ai-proxy-openai-route", "openai", "openai", "gpt-4"),
        (
            "ai-proxy-deepseek-route",
            "deepseek",
            "deepseek",
            "deepseek-chat",
        ),
    ] {
        let mut ai = env.ai(provider, "");
        ai["options"]["model"] = json!(upstream_model);
        env.route_with(json!({"id": id, "uri": "/anything", "methods": ["POST"],
            "vars": [["post_arg.model", "==", model]], "plugins": {"ai-proxy": ai}}))
            .await;
    }
    let body = |m: &str| {
        json!({"model": m, "messages": [{"role": "user", "content": "What is 1+1?"}]}).to_string()
    };
    let r = send("POST", &env.url("/anything"), &JSON, body("openai")).await;
    assert_eq!(r.status, 200);
    assert_eq!(env.mock.last().unwrap().path, "/v1/chat/completions");
    assert_eq!(env.mock.last().unwrap().json()["model"], "gpt-4");
    let r = send("POST", &env.url("/anything"), &JSON, body("deepseek")).await;
    assert_eq!(r.status, 200);
    assert_eq!(env.mock.last().unwrap().path, "/chat/completions");
    assert_eq!(env.mock.last().unwrap().json()["model"], "deepseek-chat");
    let r = send("POST", &env.url("/anything"), &JSON, body("mistral")).await;
    assert_eq!(r.status, 404);
    // The logged request model is the client's, the model the provider's.
    let l = env.log_line(2).await;
    assert_eq!(
        (l.get("request_llm_model"), l.get("llm_model")),
        ("deepseek", "deepseek-chat")
    );

    // Nested: `post_arg.model.name`; options.model replaces the object before it goes out.
    let mut ai = env.ai("openai", "");
    ai["options"]["model"] = json!("gpt-4o");
    env.route_with(
        json!({"id": "nested", "uri": "/nested", "vars": [["post_arg.model.name", "==", "openai"]],
        "plugins": {"ai-proxy": ai}}),
    )
    .await;
    let body = json!({"model": {"name": "openai"}, "messages": [{"role": "system", "content": "You are a mathematician"},
                     {"role": "user", "content": "What is 1+1?"}]});
    let r = send("POST", &env.url("/nested"), &JSON, body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.mock.last().unwrap().json()["model"], "gpt-4o");
}

#[tokio::test]
async fn access_log_with_llm_variables() {
    // The docs' access-log example format.
    let fmt = "$remote_addr - $remote_user [$time_local] $http_host \\\"$request_line\\\" $status $body_bytes_sent $request_time \\\"$http_referer\\\" \\\"$http_user_agent\\\" $upstream_addr $upstream_status $upstream_response_time \\\"$upstream_scheme://$upstream_host$upstream_uri\\\" \\\"$apisix_request_id\\\" \\\"$request_type\\\" \\\"$llm_time_to_first_token\\\" \\\"$llm_model\\\" \\\"$request_llm_model\\\" \\\"$llm_prompt_tokens\\\" \\\"$llm_completion_tokens\\\"";
    let dir = ferry_testkit::TempDir::new("docs-log");
    let mock = ferry_testkit::mock::Mock::start(ferry_testkit::mock::MockConfig {
        key: Some("token".into()),
        record: true,
        ..Default::default()
    })
    .await;
    let extra = format!(
        "nginx_config:\n  http:\n    access_log: logs/access.log\n    access_log_format: \"{fmt}\"\n"
    );
    let f = ferry_testkit::Ferry::start(common::BIN, &dir.0, &extra);
    let ai = json!({"provider": "openai", "auth": {"header": {"Authorization": "Bearer token"}},
        "options": {"model": "gpt-4"}, "override": {"endpoint": mock.url()}});
    f.admin(
        "PUT",
        "/routes",
        Some(json!({"id": "r", "uri": "/anything", "plugins": {"ai-proxy": ai}})),
    )
    .await;
    let body = json!({"model": "gpt-4", "messages": [{"role": "user", "content": "What is 1+1?"}]})
        .to_string();
    let r = send(
        "POST",
        &f.url("/anything"),
        &[
            ("content-type", "application/json"),
            ("user-agent", "curl/8.6.0"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 200);
    let path = dir.0.join("logs/access.log");
    let mut text = String::new();
    for _ in 0..200 {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if !text.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let line = text.lines().next().unwrap();
    let host = format!("127.0.0.1:{}", f.port);
    let mock_addr = mock.addr.to_string();
    // e.g. 127.0.0.1 - - [25/Nov/2026:…] 127.0.0.1:9080 "POST /anything HTTP/1.1" 200 290 0.002 "-" "curl/8.6.0"
    //      127.0.0.1:1980 200 0.002 "http://127.0.0.1/v1/chat/completions" "<id>" "ai_chat" "2" "gpt-4" "gpt-4" "23" "8"
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    let after = line.split("] ").nth(1).unwrap();
    assert!(
        after.starts_with(&format!("{host} \"POST /anything HTTP/1.1\" 200 ")),
        "{line}"
    );
    assert!(
        after.contains(&format!("\"curl/8.6.0\" {mock_addr} 200 ")),
        "{line}"
    );
    assert!(
        after.contains("\"http://127.0.0.1/v1/chat/completions\""),
        "{line}"
    );
    let tail: Vec<&str> = after.rsplitn(8, ' ').collect();
    assert_eq!(
        &tail[..6],
        &[
            "\"8\"",
            "\"23\"",
            "\"gpt-4\"",
            "\"gpt-4\"",
            tail[4],
            "\"ai_chat\""
        ],
        "{line}"
    );
    assert!(
        tail[4].trim_matches('"').parse::<u64>().is_ok(),
        "ttft is integer ms: {line}"
    );
    assert_eq!(tail[6].trim_matches('"').len(), 32, "request id: {line}");
}
