//! `key-auth` and consumers end to end: 401s as APISIX writes them, keys from the header or the
//! query, credentials, the consumer in the access log and log entries, consumer plugins merged
//! into its requests, the anonymous consumer, unique keys, and an unauthenticated body never
//! read. The provider (the mock) never sees the gateway key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, JSON, chat_body};
use ferry_testkit::send;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn put(env: &Env, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let (s, v) = env.ferry.admin("PUT", path, Some(body)).await;
    (s.as_u16(), v)
}

#[tokio::test]
async fn keys_consumers_and_credentials() {
    let env = Env::start("key-auth").await;
    let entries = env.dir.0.join("entries.log");
    let (s, v) = put(&env, "/consumers", json!({"username": "jack", "plugins": {"key-auth": {"key": "jack-key"}, "request-id": {"header_name": "X-Jack-Id"}}})).await;
    assert_eq!(s, 201, "{v}");
    let mut ai = env.ai("openai", "");
    ai["auth"] = json!({"header": {"Authorization": "Bearer token"}});
    env.route_with(json!({"id": "r", "uri": "/anything", "plugins": {
        "key-auth": {}, "ai-proxy": ai, "prometheus": {},
        "file-logger": {"path": entries.to_str().unwrap()}
    }}))
    .await;
    let url = env.url("/anything");

    // no key, wrong key: 401 with APISIX's bodies and WWW-Authenticate
    let r = send("POST", &url, &JSON, chat_body()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "{\"message\":\"Missing API key in request\"}\n");
    assert_eq!(r.header("www-authenticate"), Some("apikey realm=\"key\""));
    let r = send("POST", &url, &[JSON[0], ("apikey", "nope")], chat_body()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "{\"message\":\"Invalid API key in request\"}\n");
    assert_eq!(
        env.mock.requests().len(),
        0,
        "the provider was never called"
    );

    // the right key: 200; the provider sees who, not the key
    let r = send(
        "POST",
        &url,
        &[JSON[0], ("apikey", "jack-key")],
        chat_body(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("x-jack-id").is_some(),
        "the consumer's request-id plugin ran"
    );
    let up = env.mock.last().unwrap();
    assert_eq!(
        up.header("apikey"),
        None,
        "the gateway key never reaches the provider"
    );
    assert_eq!(up.header("x-consumer-username"), Some("jack"));
    assert_eq!(up.header("authorization"), Some("Bearer token"));
    let line = env.log_line(3).await;
    assert_eq!(line.get("consumer_name"), "jack");
    assert_eq!(line.get("status"), "200");
    assert_eq!(
        env.log_line(1).await.get("consumer_name"),
        "-",
        "no consumer on a 401"
    );
    // the key in the query works too (the header wins when both are there)
    let r = send(
        "POST",
        &format!("{url}?apikey=jack-key"),
        &JSON,
        chat_body(),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        "POST",
        &format!("{url}?apikey=jack-key"),
        &[JSON[0], ("apikey", "bad")],
        chat_body(),
    )
    .await;
    assert_eq!(
        r.status, 401,
        "a wrong header is not retried from the query"
    );

    // a credential authenticates as its consumer
    let (s, v) = put(
        &env,
        "/consumers/jack/credentials/c1",
        json!({"plugins": {"key-auth": {"key": "cred-key"}}}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let r = send(
        "POST",
        &url,
        &[JSON[0], ("apikey", "cred-key")],
        chat_body(),
    )
    .await;
    assert_eq!(r.status, 200);
    let up = env.mock.last().unwrap();
    assert_eq!(up.header("x-credential-identifier"), Some("c1"));
    assert_eq!(up.header("x-consumer-username"), Some("jack"));

    // keys are unique across consumers and credentials
    let (s, v) = put(
        &env,
        "/consumers",
        json!({"username": "bob", "plugins": {"key-auth": {"key": "jack-key"}}}),
    )
    .await;
    assert_eq!(
        (s, v["error_msg"].as_str()),
        (
            400,
            Some("duplicate key of plugin key-auth found with consumer: jack")
        )
    );
    let (s, v) = put(
        &env,
        "/consumers",
        json!({"username": "bob", "plugins": {"key-auth": {"key": "cred-key"}}}),
    )
    .await;
    assert_eq!(
        (s, v["error_msg"].as_str()),
        (
            400,
            Some("duplicate key of plugin key-auth found with credential: c1 of consumer: jack")
        )
    );
    let (s, _) = put(
        &env,
        "/consumers",
        json!({"username": "jack", "plugins": {"key-auth": {"key": "jack-key"}}}),
    )
    .await;
    assert_eq!(s, 200, "re-PUT with its own key");
    let (s, v) = put(
        &env,
        "/consumers",
        json!({"username": "bob", "plugins": {"key-auth": {}}}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error_msg"]
            .as_str()
            .unwrap()
            .contains("property \"key\" is required"),
        "{v}"
    );

    // jack's re-PUT dropped its request-id plugin: the next request no longer has it
    let r = send(
        "POST",
        &url,
        &[JSON[0], ("apikey", "jack-key")],
        chat_body(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-jack-id").is_none());

    // deleting the credential stops its key at once
    let (s, _) = env
        .ferry
        .admin("DELETE", "/consumers/jack/credentials/c1", None)
        .await;
    assert_eq!(s, 200);
    let r = send(
        "POST",
        &url,
        &[JSON[0], ("apikey", "cred-key")],
        chat_body(),
    )
    .await;
    assert_eq!(r.status, 401);

    // the consumer is a label of apisix_http_status
    let port = env.ferry.metrics_port.unwrap();
    let m = send(
        "GET",
        &format!("http://127.0.0.1:{port}/apisix/prometheus/metrics"),
        &[],
        "",
    )
    .await
    .text();
    assert!(
        m.lines().any(|l| l.starts_with("apisix_http_status")
            && l.contains("consumer=\"jack\"")
            && l.contains("code=\"200\"")),
        "{m}"
    );
    assert!(
        m.lines().any(|l| l.starts_with("apisix_http_status")
            && l.contains("consumer=\"\"")
            && l.contains("code=\"401\"")),
        "{m}"
    );

    // log entries carry the consumer, never the key
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&entries).unwrap();
    let ok: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["response"]["status"] == 200)
        .collect();
    assert!(!ok.is_empty(), "{text}");
    assert_eq!(ok[0]["consumer"]["username"], "jack");
    assert!(
        !text.contains("jack-key") && !text.contains("cred-key"),
        "{text}"
    );
}

#[tokio::test]
async fn anonymous_consumer_and_hidden_credentials() {
    let env = Env::start("key-auth-anon").await;
    put(&env, "/consumers", json!({"username": "anon"})).await;
    put(
        &env,
        "/consumers",
        json!({"username": "jack", "plugins": {"key-auth": {"key": "jack-key"}}}),
    )
    .await;
    let origin = ferry_testkit::echo::Echo::start("o", Duration::ZERO).await;
    // plain upstream: APISIX forwards the key unless hide_credentials
    env.route_with(json!({"id": "plain", "uri": "/plain", "plugins": {"key-auth": {"anonymous_consumer": "anon", "hide_credentials": true}},
        "upstream": {"nodes": {origin.authority(): 1}}}))
        .await;
    env.route_with(
        json!({"id": "show", "uri": "/show", "plugins": {"key-auth": {}},
        "upstream": {"nodes": {origin.authority(): 1}}}),
    )
    .await;
    env.route_with(json!({"id": "gone", "uri": "/gone", "plugins": {"key-auth": {"anonymous_consumer": "nobody"}},
        "upstream": {"nodes": {origin.authority(): 1}}}))
        .await;
    let r = send(
        "GET",
        &env.url("/plain?apikey=wrong&x=1"),
        &[("apikey", "also-wrong")],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["headers"]["x-consumer-username"], "anon");
    assert!(v["headers"].get("apikey").is_none(), "hidden: {v}");
    assert_eq!(v["uri"], "/plain?x=1", "the query key is hidden too");
    let r = send("GET", &env.url("/plain"), &[("apikey", "jack-key")], "").await;
    assert_eq!(r.json()["headers"]["x-consumer-username"], "jack");
    let r = send("GET", &env.url("/show"), &[("apikey", "jack-key")], "").await;
    assert_eq!(
        r.json()["headers"]["apikey"],
        "jack-key",
        "not hidden on a plain upstream by default"
    );
    let r = send("GET", &env.url("/gone"), &[], "").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "{\"message\":\"Invalid user authorization\"}\n");
}

/// A client that announces a large body and sends none gets its 401 from the head alone.
#[tokio::test]
async fn an_unauthenticated_body_is_not_read() {
    let env = Env::start("key-auth-body").await;
    env.route_with(json!({"id": "r", "uri": "/anything", "plugins": {"key-auth": {}, "ai-proxy": env.ai("openai", "")}}))
        .await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", env.ferry.port))
        .await
        .unwrap();
    s.write_all(b"POST /anything HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("answered without the body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.contains("Missing API key in request"), "{text}");
}
