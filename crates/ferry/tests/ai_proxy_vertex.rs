//! Vertex AI with service-account tokens (`auth.gcp`) against a local token endpoint that
//! verifies the JWT grant: the key inline, through `$ENV://` and `GCP_SERVICE_ACCOUNT`; the
//! Bearer token on the provider's path; one fetch for many concurrent requests; refresh after
//! the lifetime and `max_ttl`; a failing endpoint → 502 and backoff; bad keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BIN, JSON, chat_body};
use ferry_testkit::gcp::TokenEndpoint;
use ferry_testkit::mock::{Mock, MockConfig};
use ferry_testkit::{Ferry, TempDir, send};
use serde_json::{Value, json};
use std::time::Duration;

struct Env {
    _dir: TempDir,
    ferry: Ferry,
    mock: Mock,
    tokens: TokenEndpoint,
}

/// A gateway (with `env` lines in its environment), a keyless mock provider and a token endpoint.
async fn start(tag: &str, env: &[(&str, String)]) -> Env {
    let mock = Mock::start(MockConfig {
        record: true,
        ..Default::default()
    })
    .await;
    let tokens = TokenEndpoint::start().await;
    let dir = TempDir::new(tag);
    let lines: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(dir.0.join("ferry.env"), lines).unwrap();
    let ferry = Ferry::start(BIN, &dir.0, "");
    Env {
        _dir: dir,
        ferry,
        mock,
        tokens,
    }
}

impl Env {
    /// A vertex-ai route on the mock (endpoint without a path: the template path is used).
    async fn route(&self, id: &str, gcp: Value) -> (http::StatusCode, Value) {
        let route = json!({"id": id, "uri": format!("/{id}"), "plugins": {"ai-proxy": {
            "provider": "vertex-ai",
            "provider_conf": {"project_id": "ferry-project", "region": "us-central1"},
            "auth": {"gcp": gcp},
            "options": {"model": "google/gemini-2.0-flash"},
            "override": {"endpoint": self.mock.url()}}}});
        self.ferry.admin("PUT", "/routes", Some(route)).await
    }

    async fn chat(&self, id: &str) -> ferry_testkit::Resp {
        send(
            "POST",
            &self.ferry.url(&format!("/{id}")),
            &[
                ("content-type", "application/json"),
                ("authorization", "Bearer client-key"),
            ],
            chat_body(),
        )
        .await
    }

    fn inline(&self) -> Value {
        json!({"service_account_json": self.tokens.service_account().to_string()})
    }
}

#[tokio::test]
async fn service_account_tokens_on_the_vertex_path() {
    let env = start("vertex-token", &[]).await;
    let (s, v) = env.route("v", env.inline()).await;
    assert!(s == 200 || s == 201, "{v}");
    let r = env.chat("v").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = env.mock.last().unwrap();
    assert_eq!(
        got.path,
        "/v1beta1/projects/ferry-project/locations/us-central1/endpoints/openapi/chat/completions"
    );
    assert_eq!(
        got.header("authorization"),
        Some("Bearer ya29.test-1"),
        "the client's key is replaced"
    );
    assert_eq!(got.json()["model"], "google/gemini-2.0-flash");
    let grant = &env.tokens.grants()[0];
    assert_eq!(grant["iss"], ferry_testkit::gcp::CLIENT_EMAIL);
    // Many concurrent requests on a cold route: one fetch.
    let (s, _) = env.route("cold", json!({"service_account_json": env.tokens.service_account().to_string(), "max_ttl": 100})).await;
    assert!(s == 200 || s == 201);
    let before = env.tokens.fetches();
    env.tokens.set_delay_ms(200);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let url = env.ferry.url("/cold");
        set.spawn(async move { send("POST", &url, &JSON, chat_body()).await.status });
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.unwrap(), 200);
    }
    assert_eq!(
        env.tokens.fetches() - before,
        1,
        "one fetch for 50 concurrent requests"
    );
    env.tokens.set_delay_ms(0);
    // Sequential requests reuse it; a second route with the same settings shares it.
    for _ in 0..5 {
        assert_eq!(env.chat("v").await.status, 200);
    }
    env.route("v2", env.inline()).await;
    assert_eq!(env.chat("v2").await.status, 200);
    assert_eq!(env.tokens.fetches(), 2);
    assert!(!env.ferry.stderr_text().contains("BEGIN PRIVATE KEY"));
    assert!(!env.ferry.stderr_text().contains("ya29."));
}

#[tokio::test]
async fn refresh_after_the_lifetime_and_max_ttl() {
    let env = start("vertex-refresh", &[]).await;
    // expires_in 2, expire_early_secs 1: a token lives 1 s.
    env.tokens.set_expires_in(2);
    let mut gcp = env.inline();
    gcp["expire_early_secs"] = json!(1);
    env.route("early", gcp).await;
    assert_eq!(env.chat("early").await.status, 200);
    assert_eq!(env.chat("early").await.status, 200);
    assert_eq!(env.tokens.fetches(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(env.chat("early").await.status, 200);
    assert_eq!(env.tokens.fetches(), 2);
    assert_eq!(
        env.mock.last().unwrap().header("authorization"),
        Some("Bearer ya29.test-2")
    );
    // max_ttl 1 caps a 3600 s token.
    env.tokens.set_expires_in(3600);
    let mut gcp = env.inline();
    gcp["max_ttl"] = json!(1);
    env.route("ttl", gcp).await;
    assert_eq!(env.chat("ttl").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(env.chat("ttl").await.status, 200);
    assert_eq!(env.tokens.fetches(), 4);
}

#[tokio::test]
async fn keys_from_the_environment() {
    let tokens_probe = TokenEndpoint::start().await;
    // The env lines need the endpoint's URL: start one, then the gateway with its key.
    let sa = tokens_probe.service_account().to_string();
    let wrapped = json!({"key": sa}).to_string();
    let env = start(
        "vertex-env",
        &[
            ("GCP_SERVICE_ACCOUNT", sa.clone()),
            ("MY_SA", sa),
            ("WRAPPED", wrapped),
        ],
    )
    .await;
    for (id, gcp) in [
        ("default", json!({})),
        ("envref", json!({"service_account_json": "$ENV://MY_SA"})),
        (
            "field",
            json!({"service_account_json": "$env://WRAPPED/key"}),
        ),
    ] {
        let (s, v) = env.route(id, gcp).await;
        assert!(s == 200 || s == 201, "{v}");
        let r = env.chat(id).await;
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert!(
            env.mock
                .last()
                .unwrap()
                .header("authorization")
                .unwrap()
                .starts_with("Bearer ya29.test-")
        );
    }
    assert_eq!(tokens_probe.fetches(), 3, "one per source");
    let (s, _) = env
        .route(
            "unset",
            json!({"service_account_json": "$ENV://NOT_SET_ANYWHERE"}),
        )
        .await;
    assert!(s == 200 || s == 201);
    let r = env.chat("unset").await;
    assert_eq!(r.status, 500);
    assert!(
        r.text()
            .contains("failed to get gcp access token: $ENV://NOT_SET_ANYWHERE is not set"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn failures_are_502_with_backoff_and_bad_keys_are_refused() {
    let env = start("vertex-fail", &[]).await;
    env.route("v", env.inline()).await;
    let provider_before = env.mock.requests().len();
    env.tokens.set_failure(503);
    let r = env.chat("v").await;
    assert_eq!(r.status, 502);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with("failed to get gcp access token: token endpoint http://"),
        "{msg}"
    );
    assert!(msg.contains("answered 503"), "{msg}");
    // Within the backoff: at once, no new fetch; the provider never contacted.
    for _ in 0..5 {
        assert_eq!(env.chat("v").await.status, 502);
    }
    assert_eq!(env.tokens.fetches(), 1);
    assert_eq!(env.mock.requests().len(), provider_before);
    // After it, one new attempt, and recovery.
    env.tokens.set_failure(0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(env.chat("v").await.status, 200);
    assert_eq!(env.tokens.fetches(), 2);
    // A refused token endpoint.
    let mut sa = env.tokens.service_account();
    sa["token_uri"] = json!(format!(
        "http://127.0.0.1:{}/token",
        ferry_testkit::free_port()
    ));
    env.route("refused", json!({"service_account_json": sa.to_string()}))
        .await;
    let r = env.chat("refused").await;
    assert_eq!(r.status, 502);
    assert!(
        r.text().contains("failed to get gcp access token"),
        "{}",
        r.text()
    );

    // Keys checked at write time, and per request.
    let (s, v) = env
        .route("bad", json!({"service_account_json": "{not json"}))
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error_msg"]
            .as_str()
            .unwrap()
            .contains("invalid gcp service_account_json"),
        "{v}"
    );
    let (s, _) = env
        .route("bad", json!({"service_account_json": "123"}))
        .await;
    assert_eq!(s, 400);
    let (s, _) = env
        .route(
            "nokey",
            json!({"service_account_json": "{\"type\":\"service_account\"}"}),
        )
        .await;
    assert!(
        s == 200 || s == 201,
        "APISIX accepts a key without private_key"
    );
    let r = env.chat("nokey").await;
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("no client_email") || r.text().contains("no private_key"),
        "{}",
        r.text()
    );
    // vertex-ai needs a project and region, or an endpoint with a path.
    let put = |endpoint: &str| {
        let route = json!({"id": "np", "uri": "/np", "plugins": {"ai-proxy": {"provider": "vertex-ai",
            "auth": {"header": {"Authorization": "Bearer t"}}, "override": {"endpoint": endpoint}}}});
        env.ferry.admin("PUT", "/routes", Some(route))
    };
    let (s, v) = put("http://127.0.0.1:1").await;
    assert_eq!(s, 400);
    assert!(
        v["error_msg"]
            .as_str()
            .unwrap()
            .ends_with("or override.endpoint with a path"),
        "{v}"
    );
    let (s, _) = put("http://127.0.0.1:1/v1/chat/completions").await;
    assert!(s == 200 || s == 201);
    // A PKCS#1 key works too.
    let mut pkcs1 = env.tokens.service_account();
    pkcs1["private_key"] = json!(ferry_testkit::gcp::TEST_KEY_PKCS1);
    env.route("pkcs1", json!({"service_account_json": pkcs1.to_string()}))
        .await;
    assert_eq!(env.chat("pkcs1").await.status, 200);
}

#[tokio::test]
async fn embeddings_become_predict_and_come_back() {
    let env = start("vertex-embed", &[]).await;
    let route = |id: &str, options: Value| {
        json!({"id": id, "uri": format!("/{id}"), "plugins": {"ai-proxy": {
            "provider": "vertex-ai",
            "provider_conf": {"project_id": "ferry-project", "region": "us-central1"},
            "auth": {"gcp": env.inline()},
            "options": options,
            "override": {"endpoint": env.mock.url()}}}})
    };
    let (s, v) = env
        .ferry
        .admin("PUT", "/routes", Some(route("e", json!({}))))
        .await;
    assert!(s == 200 || s == 201, "{v}");
    let r = send(
        "POST",
        &env.ferry.url("/e"),
        &JSON,
        json!({"input": "Your text string goes here", "model": "text-embedding-004"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = env.mock.last().unwrap();
    assert_eq!(
        got.path,
        "/v1/projects/ferry-project/locations/us-central1/publishers/google/models/text-embedding-004:predict"
    );
    assert_eq!(
        got.json(),
        json!({"instances": [{"content": "Your text string goes here"}]})
    );
    assert_eq!(got.header("authorization"), Some("Bearer ya29.test-1"));
    assert_eq!(
        r.json(),
        json!({"object": "list", "model": "text-embedding-004",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.0123, -0.0456, 0.0789, 0.0012]}],
            "usage": {"prompt_tokens": 7, "total_tokens": 7}})
    );
    // Several inputs; options.model picks the model in the path.
    env.ferry
        .admin(
            "PUT",
            "/routes",
            Some(route("e2", json!({"model": "text-embedding-005"}))),
        )
        .await;
    let r = send(
        "POST",
        &env.ferry.url("/e2"),
        &JSON,
        json!({"input": ["a", "b"]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        env.mock
            .last()
            .unwrap()
            .path
            .ends_with("/models/text-embedding-005:predict")
    );
    assert_eq!(r.json()["usage"]["total_tokens"], 14);
    assert_eq!(r.json()["data"][1]["index"], 1);
    // Bad input, no model: 400 in OpenAI's shape.
    let r = send(
        "POST",
        &env.ferry.url("/e"),
        &JSON,
        json!({"input": [1, 2], "model": "m"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "unsupported input type at index 1"
    );
    let r = send(
        "POST",
        &env.ferry.url("/e"),
        &JSON,
        json!({"input": "x"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("could not resolve upstream path"),
        "{}",
        r.text()
    );
    // A provider error keeps its status and message.
    let r = send(
        "POST",
        &env.ferry.url("/e"),
        &[
            ("content-type", "application/json"),
            ("x-mock-status", "429"),
        ],
        json!({"input": "x", "model": "m"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["message"], "mock error 429");
}
