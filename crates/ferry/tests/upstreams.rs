//! Upstream proxying against local HTTP origins through a real `ferry serve`: weights,
//! consistent hashing, pass_host, retries, 502/504, placeholder upstreams, delete protection,
//! service upstreams, hot changes, and https with the upstream Host as SNI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_testkit::echo::Echo;
use ferry_testkit::tls::TestCa;
use ferry_testkit::{Ferry, TempDir, free_port, send};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

async fn put(f: &Ferry, path: &str, body: serde_json::Value) {
    let (s, v) = f.admin("PUT", path, Some(body)).await;
    assert!(s == 200 || s == 201, "PUT {path}: {s} {v}");
}

#[tokio::test]
async fn weights_hashing_and_host() {
    let dir = TempDir::new("up-weights");
    let f = Ferry::start(BIN, &dir.0, "");
    let a = Echo::start("a", Duration::ZERO).await;
    let b = Echo::start("b", Duration::ZERO).await;
    put(
        &f,
        "/upstreams/u1",
        json!({"nodes": {a.authority(): 3, b.authority(): 1}}),
    )
    .await;
    put(&f, "/routes/w", json!({"uri": "/w/*", "upstream_id": "u1"})).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for i in 0..1000 {
        let r = send("GET", &f.url(&format!("/w/x?i={i}")), &[], "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        *seen
            .entry(r.header("x-node").unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        (seen["a"], seen["b"]),
        (750, 250),
        "weights 3:1 over 1,000 requests"
    );

    // What the node receives: method, path and query unchanged, the client's Host (pass),
    // the forwarding headers, the body.
    let r = send(
        "POST",
        &f.url("/w/echo?q=1"),
        &[
            ("host", "api.example.test"),
            ("x-forwarded-for", "10.1.1.1"),
        ],
        "hello",
    )
    .await;
    let v = r.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["uri"], "/w/echo?q=1");
    assert_eq!(v["body"], "hello");
    let h = &v["headers"];
    assert_eq!(h["host"], "api.example.test");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-for"], "10.1.1.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-host"], "api.example.test");
    assert_eq!(h["x-forwarded-proto"], "http");

    // pass_host node and rewrite
    put(
        &f,
        "/routes/node",
        json!({"uri": "/node", "upstream": {"nodes": {a.authority(): 1}, "pass_host": "node"}}),
    )
    .await;
    let v = send("GET", &f.url("/node"), &[("host", "x.test")], "")
        .await
        .json();
    assert_eq!(v["headers"]["host"], a.authority());
    put(
        &f,
        "/routes/rw",
        json!({"uri": "/rw", "upstream": {"nodes": {a.authority(): 1}, "pass_host": "rewrite", "upstream_host": "internal.test"}}),
    )
    .await;
    let v = send("GET", &f.url("/rw"), &[("host", "x.test")], "")
        .await
        .json();
    assert_eq!(v["headers"]["host"], "internal.test");

    // chash on a header: a key always lands on the same node
    put(
        &f,
        "/routes/ch",
        json!({"uri": "/ch", "upstream": {"type": "chash", "hash_on": "header", "key": "x-user",
               "nodes": {a.authority(): 1, b.authority(): 1}}}),
    )
    .await;
    let mut nodes_for_users = std::collections::HashSet::new();
    for user in ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"] {
        let first = send("GET", &f.url("/ch"), &[("x-user", user)], "").await;
        let node = first.header("x-node").unwrap().to_string();
        for _ in 0..10 {
            let again = send("GET", &f.url("/ch"), &[("x-user", user)], "").await;
            assert_eq!(again.header("x-node"), Some(node.as_str()), "user {user}");
        }
        nodes_for_users.insert(node);
    }
    assert_eq!(nodes_for_users.len(), 2, "keys spread over both nodes");

    // The round-robin position belongs to the upstream: shared by the routes that name it,
    // and kept when a route using it is rewritten.
    put(
        &f,
        "/upstreams/u2",
        json!({"nodes": {a.authority(): 1, b.authority(): 1}}),
    )
    .await;
    put(&f, "/routes/x1", json!({"uri": "/x1", "upstream_id": "u2"})).await;
    put(&f, "/routes/x2", json!({"uri": "/x2", "upstream_id": "u2"})).await;
    let first = send("GET", &f.url("/x1"), &[], "").await;
    put(
        &f,
        "/routes/x1",
        json!({"uri": "/x1", "upstream_id": "u2", "name": "renamed"}),
    )
    .await;
    let second = send("GET", &f.url("/x2"), &[], "").await;
    // A fresh balancer starts from the same node, so a reset would answer twice from it.
    assert!(first.header("x-node").is_some());
    assert_ne!(first.header("x-node"), second.header("x-node"));
}

#[tokio::test]
async fn retries_failures_and_placeholders() {
    let dir = TempDir::new("up-retries");
    let f = Ferry::start(BIN, &dir.0, "");
    let live = Echo::start("live", Duration::ZERO).await;
    let dead = format!("127.0.0.1:{}", free_port());
    // One node down: retried on the next one (default retries = nodes - 1).
    put(
        &f,
        "/routes/r",
        json!({"uri": "/r", "upstream": {"nodes": {dead.clone(): 1, live.authority(): 1}}}),
    )
    .await;
    for _ in 0..20 {
        let r = send("GET", &f.url("/r"), &[], "").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // retries: 0 → the dead node's turn fails with 502
    put(
        &f,
        "/routes/r0",
        json!({"uri": "/r0", "upstream": {"nodes": {dead.clone(): 1, live.authority(): 1}, "retries": 0}}),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send("GET", &f.url("/r0"), &[], "").await.status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 200, 502, 502]);
    // every node down: 502 naming the cause
    put(
        &f,
        "/routes/down",
        json!({"uri": "/down", "upstream": {"nodes": {dead.clone(): 1}}}),
    )
    .await;
    let r = send("GET", &f.url("/down"), &[], "").await;
    assert_eq!(r.status, 502);
    let msg = r.json()["error_msg"].as_str().unwrap().to_string();
    assert!(msg.contains(&dead) && msg.contains("refused"), "{msg}");
    // a node slower than the read timeout: 504
    let slow = Echo::start("slow", Duration::from_secs(3)).await;
    put(
        &f,
        "/routes/slow",
        json!({"uri": "/slow", "timeout": {"connect": 1, "send": 1, "read": 0.3},
               "upstream": {"nodes": {slow.authority(): 1}}}),
    )
    .await;
    let t = std::time::Instant::now();
    let r = send("GET", &f.url("/slow"), &[], "").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(2));

    // a node that sends its head and then stalls: the body is cut after the read timeout
    let mock = ferry_testkit::mock::Mock::start(ferry_testkit::mock::MockConfig::default()).await;
    let mock_authority = mock
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    put(
        &f,
        "/routes/stall",
        json!({"uri": "/v1/chat/completions", "timeout": {"connect": 1, "send": 1, "read": 0.5},
               "upstream": {"nodes": {mock_authority: 1}}}),
    )
    .await;
    let t = std::time::Instant::now();
    let r = send(
        "POST",
        &f.url("/v1/chat/completions"),
        &[("content-type", "application/json"), ("x-mock-stall", "1")],
        json!({"model": "m", "stream": true, "messages": []}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.aborted, "the stalled body is cut, not left hanging");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // ADC's placeholder: an upstream PUT with no body is stored, fetchable, not listed, and a
    // request that needs it gets 503.
    let r = send(
        "PUT",
        &f.admin_url("/upstreams/ph"),
        &[("x-api-key", ferry_testkit::TEST_KEY)],
        "",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let (s, v) = f.admin("GET", "/upstreams/ph", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["value"]["id"], "ph");
    put(
        &f,
        "/upstreams/real",
        json!({"nodes": {live.authority(): 1}}),
    )
    .await;
    let (_, v) = f.admin("GET", "/upstreams", None).await;
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["list"][0]["value"]["id"], "real");
    put(&f, "/services/s", json!({"upstream_id": "ph"})).await;
    put(&f, "/routes/ph", json!({"uri": "/ph", "service_id": "s"})).await;
    let r = send("GET", &f.url("/ph"), &[], "").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error_msg"], "no valid upstream node");
    // The service's upstream changes: its routes follow.
    put(&f, "/services/s", json!({"upstream_id": "real"})).await;
    assert_eq!(send("GET", &f.url("/ph"), &[], "").await.status, 200);
    // An upstream in use is protected; force deletes; the route then says why it fails.
    let (s, v) = f.admin("DELETE", "/upstreams/real", None).await;
    assert_eq!(s, 400);
    assert_eq!(
        v["error_msg"],
        "can not delete this upstream, service [s] is still using it now"
    );
    let (s, _) = f
        .admin("DELETE", "/upstreams/real?force=anything", None)
        .await;
    assert_eq!(s, 400);
    let (s, _) = f.admin("DELETE", "/upstreams/real?force=true", None).await;
    assert_eq!(s, 200);
    let r = send("GET", &f.url("/ph"), &[], "").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error_msg"], "failed to find upstream by id: real");
    // A route with neither an upstream nor an answering plugin.
    put(
        &f,
        "/routes/none",
        json!({"uri": "/none", "plugins": {"request-id": {}}}),
    )
    .await;
    let r = send("GET", &f.url("/none"), &[], "").await;
    assert_eq!(r.status, 503);
    assert!(
        r.json()["error_msg"]
            .as_str()
            .unwrap()
            .starts_with("missing upstream configuration in Route or Service")
    );
}

#[tokio::test]
async fn https_upstreams_send_the_host_as_sni() {
    let dir = TempDir::new("up-tls");
    let f = Ferry::start(BIN, &dir.0, "");
    let ca = TestCa::new(&["secure.test"]);
    let origin = Echo::start_with("tls", Duration::ZERO, Some(ca.server_config())).await;
    put(
        &f,
        "/routes/s",
        json!({"uri": "/s", "upstream": {"scheme": "https", "nodes": {origin.authority(): 1},
               "pass_host": "rewrite", "upstream_host": "secure.test"}}),
    )
    .await;
    let r = send("GET", &f.url("/s"), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["sni"], "secure.test");
    assert_eq!(r.json()["headers"]["host"], "secure.test", "{}", r.text());
    // pass: the client's Host is the server name
    put(
        &f,
        "/routes/p",
        json!({"uri": "/p", "upstream": {"scheme": "https", "nodes": {origin.authority(): 1}}}),
    )
    .await;
    let r = send("GET", &f.url("/p"), &[("host", "secure.test:9080")], "").await;
    assert_eq!(r.json()["sni"], "secure.test", "{}", r.text());
    // Not verified by default (nginx's proxy_ssl_verify off); `tls.verify: true` verifies,
    // and this test CA is not trusted.
    put(
        &f,
        "/routes/v",
        json!({"uri": "/v", "upstream": {"scheme": "https", "nodes": {origin.authority(): 1},
               "pass_host": "rewrite", "upstream_host": "secure.test", "tls": {"verify": true}}}),
    )
    .await;
    let r = send("GET", &f.url("/v"), &[], "").await;
    assert_eq!(r.status, 502, "{}", r.text());
}
