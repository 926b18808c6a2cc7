//! Data plane against a real `ferry serve`: routing by uri/host/method/priority/vars
//! (including `post_arg.*`), the plugin chain, 404/503, limits, HTTP/2, access log, hot reload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_testkit::{Ferry, TempDir, send, send_h2};
use serde_json::json;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// A route whose `request-id` plugin answers with header `X-Route-<tag>`, so a response tells
/// which route matched (no route here proxies yet, so the status is 503).
fn tagged(id: &str, tag: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut r = json!({"id": id, "uri": "/anything",
        "plugins": {"request-id": {"header_name": format!("X-Route-{tag}")}}});
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

fn matched(r: &ferry_testkit::Resp) -> Option<String> {
    r.headers
        .keys()
        .find_map(|k| k.as_str().strip_prefix("x-route-").map(String::from))
}

#[tokio::test]
async fn routes_by_post_arg_like_the_docs() {
    let dir = TempDir::new("dp-vars");
    let f = Ferry::start(BIN, &dir.0, "");
    // The docs' example: one uri, two routes told apart by the model in the body.
    for (id, model) in [("openai", "openai"), ("deepseek", "deepseek")] {
        let (s, v) = f
            .admin(
                "PUT",
                "/routes",
                Some(tagged(
                    id,
                    id,
                    json!({"methods": ["POST"], "vars": [["post_arg.model", "==", model]]}),
                )),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let ct = [("content-type", "application/json")];
    let r = send(
        "POST",
        &f.url("/anything"),
        &ct,
        r#"{"model":"deepseek","messages":[]}"#,
    )
    .await;
    assert_eq!(matched(&r).as_deref(), Some("deepseek"));
    assert_eq!(r.status, 503);
    assert!(
        r.json()["error_msg"]
            .as_str()
            .unwrap()
            .contains("has no upstream")
    );
    let r = send("POST", &f.url("/anything"), &ct, r#"{"model":"openai"}"#).await;
    assert_eq!(matched(&r).as_deref(), Some("openai"));
    let r = send("POST", &f.url("/anything"), &ct, r#"{"model":"mistral"}"#).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "{\"error_msg\":\"404 Route Not Found\"}\n");
    let r = send("POST", &f.url("/anything"), &ct, "not json").await;
    assert_eq!(r.status, 404);
    let r = send("GET", &f.url("/anything"), &[], "").await;
    assert_eq!(r.status, 404, "methods: POST only");

    // Nested paths and JSONPath over the body, and form bodies.
    f.admin("PUT", "/routes", Some(tagged("img", "img", json!({"uri": "/vision", "vars": [["post_arg.messages[*].content[*].type", "has", "image_url"]]})))).await;
    f.admin("PUT", "/routes", Some(tagged("nested", "nested", json!({"uri": "/vision", "priority": -1, "vars": [["post_arg.model.name", "==", "openai"]]})))).await;
    let body =
        json!({"messages": [{"content": [{"type": "text"}, {"type": "image_url"}]}]}).to_string();
    let r = send("POST", &f.url("/vision"), &ct, body).await;
    assert_eq!(matched(&r).as_deref(), Some("img"));
    let r = send(
        "POST",
        &f.url("/vision"),
        &ct,
        r#"{"model":{"name":"openai"}}"#,
    )
    .await;
    assert_eq!(matched(&r).as_deref(), Some("nested"));
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = send(
        "POST",
        &f.url("/vision"),
        &form,
        "model.name=x&model=openai",
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn uri_host_method_priority_and_plain_vars() {
    let dir = TempDir::new("dp-match");
    let f = Ferry::start(BIN, &dir.0, "");
    let routes = vec![
        json!({"id": "prefix", "uri": "/v1/*", "plugins": {"request-id": {"header_name": "X-Route-prefix"}}}),
        json!({"id": "exact", "uri": "/v1/chat", "plugins": {"request-id": {"header_name": "X-Route-exact"}}}),
        json!({"id": "host", "uri": "/v1/chat", "hosts": ["*.example.com"], "plugins": {"request-id": {"header_name": "X-Route-host"}}}),
        json!({"id": "prio", "uri": "/v1/*", "priority": 10, "vars": [["arg_team", "==", "a"]], "plugins": {"request-id": {"header_name": "X-Route-prio"}}}),
        json!({"id": "hdr", "uris": ["/h"], "vars": ["OR", ["http_x_env", "==", "prod"], ["cookie_env", "==", "prod"]], "plugins": {"request-id": {"header_name": "X-Route-hdr"}}}),
        json!({"id": "off", "uri": "/off", "status": 0, "plugins": {"request-id": {"header_name": "X-Route-off"}}}),
        json!({"id": "lan", "uri": "/lan", "remote_addrs": ["10.0.0.0/8"], "plugins": {"request-id": {}}}),
    ];
    for r in routes {
        let (s, v) = f.admin("PUT", "/routes", Some(r)).await;
        assert_eq!(s, 201, "{v}");
    }
    let get = |path: &str, headers: Vec<(&'static str, &'static str)>| {
        let url = f.url(path);
        async move { matched(&send("GET", &url, &headers, "").await) }
    };
    assert_eq!(get("/v1/chat", vec![]).await.as_deref(), Some("exact"));
    assert_eq!(get("/v1/models", vec![]).await.as_deref(), Some("prefix"));
    assert_eq!(
        get("/v1/chat", vec![("host", "api.example.com")])
            .await
            .as_deref(),
        Some("host")
    );
    assert_eq!(
        get("/v1/chat?team=a", vec![("host", "api.example.com")])
            .await
            .as_deref(),
        Some("prio")
    );
    assert_eq!(
        get("/h", vec![("x-env", "prod")]).await.as_deref(),
        Some("hdr")
    );
    assert_eq!(
        get("/h", vec![("cookie", "a=1; env=prod")])
            .await
            .as_deref(),
        Some("hdr")
    );
    assert_eq!(get("/h", vec![("x-env", "dev")]).await, None);
    assert_eq!(
        send("GET", &f.url("/off"), &[], "").await.status,
        404,
        "status 0 disables a route"
    );
    assert_eq!(
        send("GET", &f.url("/lan"), &[], "").await.status,
        404,
        "remote_addrs"
    );
}

#[tokio::test]
async fn request_id_service_merge_and_meta() {
    let dir = TempDir::new("dp-plugins");
    let f = Ferry::start(BIN, &dir.0, "");
    f.admin(
        "PUT",
        "/services/s1",
        Some(json!({"plugins": {"request-id": {"header_name": "X-Svc"}}})),
    )
    .await;
    f.admin(
        "PUT",
        "/routes/a",
        Some(json!({"uri": "/a", "service_id": "s1"})),
    )
    .await;
    f.admin("PUT", "/routes/b", Some(json!({"uri": "/b", "service_id": "s1", "plugins": {"request-id": {"header_name": "X-Own", "algorithm": "nanoid"}}}))).await;
    f.admin(
        "PUT",
        "/routes/c",
        Some(json!({"uri": "/c", "plugins": {"request-id": {"_meta": {"disable": true}}}})),
    )
    .await;
    let r = send("GET", &f.url("/a"), &[], "").await;
    assert_eq!(
        r.header("x-svc").map(str::len),
        Some(36),
        "service plugins apply"
    );
    let r = send("GET", &f.url("/b"), &[], "").await;
    assert!(
        r.header("x-svc").is_none(),
        "route plugins win over the service's"
    );
    assert_eq!(r.header("x-own").map(str::len), Some(21));
    let r = send("GET", &f.url("/b"), &[("x-own", "client-given")], "").await;
    assert_eq!(
        r.header("x-own"),
        Some("client-given"),
        "a client id is kept"
    );
    let r = send("GET", &f.url("/c"), &[], "").await;
    assert!(r.header("x-request-id").is_none(), "_meta.disable");
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn limits_http2_and_access_log() {
    let dir = TempDir::new("dp-limits");
    let extra = "nginx_config:\n  http:\n    client_max_body_size: 1k\n    access_log: logs/access.log\n    access_log_format: '$remote_addr \"$request\" $status $body_bytes_sent $route_id $apisix_request_id $http_x_team $arg_q'\n";
    let f = Ferry::start(BIN, &dir.0, extra);
    f.admin("PUT", "/routes/big", Some(json!({"uri": "/big", "vars": [["post_arg.a", "==", "1"]], "plugins": {"request-id": {}}}))).await;
    let r = send(
        "POST",
        &f.url("/big"),
        &[("content-type", "application/json")],
        "x".repeat(2048),
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(
        r.json()["error_msg"]
            .as_str()
            .unwrap()
            .contains("greater than the maximum size 1024")
    );
    let r = send(
        "POST",
        &f.url("/big?q=z"),
        &[("content-type", "application/json"), ("x-team", "ml")],
        r#"{"a":"1"}"#,
    )
    .await;
    assert_eq!(r.status, 503);
    let rid = r.header("x-request-id").unwrap().to_string();
    // HTTP/2 with prior knowledge on the same port.
    let r = send_h2(
        "POST",
        &f.url("/big"),
        &[("content-type", "application/json")],
        r#"{"a":"1"}"#,
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.header("x-request-id").is_some());
    // Huge headers: 431, not a crash.
    let huge = "v".repeat(100 * 1024);
    let r = send("GET", &f.url("/big"), &[("x-huge", huge.as_str())], "").await;
    assert_eq!(r.status, 431);
    assert!(
        r.json()["error_msg"]
            .as_str()
            .unwrap()
            .starts_with("Request Header Fields Too Large"),
        "{}",
        r.text()
    );
    // The access log line, written off the request path.
    let log = dir.0.join("logs/access.log");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&rid) && text.contains("HTTP/2.0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = text
        .lines()
        .find(|l| l.contains(&rid))
        .unwrap_or_else(|| panic!("no line for {rid} in {text}"));
    let body_len = "{\"error_msg\":\"missing upstream configuration in Route or Service: route big has no upstream and no plugin that answers (such as ai-proxy)\"}\n".len();
    assert_eq!(
        line,
        format!("127.0.0.1 \"POST /big?q=z HTTP/1.1\" 503 {body_len} big {rid} ml z")
    );
    assert!(text.contains("\"POST /big HTTP/2.0\" 503"), "{text}");
}

#[tokio::test]
async fn writes_reach_the_data_plane_before_the_admin_answers() {
    let dir = TempDir::new("dp-reload");
    let f = Ferry::start(BIN, &dir.0, "");
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let path = format!("/r{i}");
        let t = Instant::now();
        let (s, _) = f
            .admin(
                "PUT",
                &format!("/routes/r{i}"),
                Some(json!({"uri": path, "plugins": {"request-id": {}}})),
            )
            .await;
        assert_eq!(s, 201);
        worst = worst.max(t.elapsed());
        // Read-your-writes: the route is live as soon as the Admin API answered.
        assert_eq!(
            send("GET", &f.url(&path), &[], "").await.status,
            503,
            "route r{i}"
        );
        f.admin("DELETE", &format!("/routes/r{i}"), None).await;
        assert_eq!(
            send("GET", &f.url(&path), &[], "").await.status,
            404,
            "deleted r{i}"
        );
    }
    eprintln!("admin write until live on the data plane, worst of 20: {worst:?}");
    // A hang check only; the write cost is measured by `benches/reload.rs`.
    assert!(worst < Duration::from_secs(2), "took {worst:?}");
}
