//! Default provider URLs end to end over TLS: `ferry.resolve` sends `api.openai.com` to a local
//! TLS mock whose CA is trusted through `apisix.ssl.ssl_trusted_certificate`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BIN, JSON, chat_body};
use ferry_testkit::mock::{Mock, MockConfig};
use ferry_testkit::{Ferry, TempDir, send};
use serde_json::json;

#[tokio::test]
async fn default_provider_urls_over_tls() {
    let (mock, ca) = Mock::start_tls(
        MockConfig {
            key: Some("token".into()),
            record: true,
            ..Default::default()
        },
        &["api.openai.com", "api.deepseek.com"],
    )
    .await;
    let dir = TempDir::new("tls");
    std::fs::write(dir.0.join("ca.pem"), ca).unwrap();
    let (port, admin_port) = (ferry_testkit::free_port(), ferry_testkit::free_port());
    let cfg = format!(
        "plugin_attr:\n  prometheus:\n    enable_export_server: false\napisix:\n  node_listen: [{{ip: 127.0.0.1, port: {port}}}]\n  ssl:\n    enable: false\n    ssl_trusted_certificate: ca.pem\n\
         deployment:\n  admin:\n    admin_key: [{{name: admin, key: {key}, role: admin}}]\n    admin_listen: {{ip: 127.0.0.1, port: {admin_port}}}\n\
         ferry:\n  resolve:\n    api.openai.com: {addr}\n    api.deepseek.com: {addr}\n",
        key = ferry_testkit::TEST_KEY,
        addr = mock.addr
    );
    std::fs::write(dir.0.join("config.yaml"), cfg).unwrap();
    let f = Ferry::spawn(
        BIN,
        &dir.0,
        port,
        admin_port,
        ferry_testkit::TEST_KEY.into(),
    );
    let ai = |provider: &str, verify: bool| {
        json!({"provider": provider, "auth": {"header": {"Authorization": "Bearer token"}},
        "options": {"model": "m"}, "ssl_verify": verify})
    };
    for (id, provider) in [("openai", "openai"), ("deepseek", "deepseek")] {
        let (s, v) = f.admin("PUT", "/routes", Some(json!({"id": id, "uri": format!("/{id}"), "plugins": {"ai-proxy": ai(provider, true)}}))).await;
        assert_eq!(s, 201, "{v}");
    }
    let r = send("POST", &f.url("/openai"), &JSON, chat_body()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = mock.last().unwrap();
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(
        up.version, "HTTP/2.0",
        "HTTP/2 where the upstream offers it"
    );
    assert_eq!(up.header("authorization"), Some("Bearer token"));
    let r = send("POST", &f.url("/deepseek"), &JSON, chat_body()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.last().unwrap().path, "/chat/completions");
    let r = send(
        "POST",
        &f.url("/deepseek"),
        &JSON,
        json!({"messages": [], "stream": true}).to_string(),
    )
    .await;
    assert!(r.text().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn untrusted_certificates_are_refused_unless_ssl_verify_is_off() {
    let (mock, _ca) = Mock::start_tls(
        MockConfig {
            key: None,
            record: true,
            ..Default::default()
        },
        &["api.openai.com"],
    )
    .await;
    let dir = TempDir::new("tls-untrusted");
    let extra = format!("  resolve:\n    api.openai.com: {}\n", mock.addr);
    let f = Ferry::start(BIN, &dir.0, &extra);
    for (id, verify) in [("strict", true), ("lax", false)] {
        let route = json!({"id": id, "uri": format!("/{id}"), "plugins": {"ai-proxy": {"provider": "openai", "auth": {}, "ssl_verify": verify}}});
        let (s, v) = f.admin("PUT", "/routes", Some(route)).await;
        assert_eq!(s, 201, "{v}");
    }
    let r = send("POST", &f.url("/strict"), &JSON, chat_body()).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let r = send("POST", &f.url("/lax"), &JSON, chat_body()).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A provider's HTTP/2 connection that carries its stream limit makes the next request open
/// another connection instead of waiting behind long streams; routes that differ only in
/// their timeout share connections.
#[tokio::test]
async fn long_streams_do_not_queue_at_the_upstream_stream_limit() {
    let (mock, ca) = Mock::start_tls(
        MockConfig {
            key: Some("token".into()),
            h2_max_streams: Some(2),
            ..Default::default()
        },
        &["api.openai.com"],
    )
    .await;
    let dir = TempDir::new("tls-streams");
    std::fs::write(dir.0.join("ca.pem"), ca).unwrap();
    let f = Ferry::start(
        BIN,
        &dir.0,
        &format!(
            "  upstream_max_streams: 2\n  resolve:\n    api.openai.com: {}\napisix:\n  ssl:\n    ssl_trusted_certificate: ca.pem\n",
            mock.addr
        ),
    );
    for (id, timeout) in [("a", 30_000), ("b", 20_000)] {
        let route = json!({"id": id, "uri": format!("/{id}"), "plugins": {"ai-proxy": {
            "provider": "openai", "auth": {"header": {"Authorization": "Bearer token"}},
            "options": {"model": "m"}, "timeout": timeout}}});
        let (s, v) = f.admin("PUT", "/routes", Some(route)).await;
        assert_eq!(s, 201, "{v}");
    }
    let client = ferry_testkit::client(false);
    let mut bodies = Vec::new();
    for path in ["/a", "/a", "/a", "/b"] {
        let req = http::Request::post(f.url(path))
            .header("content-type", "application/json")
            .header("x-mock-endless", "1")
            .header("x-mock-chunk-delay-ms", "50")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                json!({"messages": [], "stream": true}).to_string(),
            )))
            .unwrap();
        let resp = tokio::time::timeout(std::time::Duration::from_secs(5), client.request(req))
            .await
            .unwrap_or_else(|_| panic!("{path}: queued behind the open streams"))
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        use http_body_util::BodyExt;
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
            .await
            .unwrap_or_else(|_| panic!("{path}: no first event"));
        assert!(first.is_some());
        bodies.push(body);
    }
    // Four streams, two per connection, over routes that share the pool.
    assert_eq!(mock.connections(), 2);
    drop(bodies);
}
