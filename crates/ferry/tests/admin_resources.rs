//! The Admin API's resources beyond routing, as APISIX answers them: upstreams, consumers and
//! credentials, SSLs, global rules (and their data-plane effect), plugin metadata, stream
//! routes, 405s, list filters and paging, sub-path PATCH, and the probes ADC makes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_testkit::echo::Echo;
use ferry_testkit::tls::TestCa;
use ferry_testkit::{Ferry, TEST_KEY, TempDir, send};
use serde_json::{Value, json};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

async fn err(f: &Ferry, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let (s, v) = f.admin(method, path, body).await;
    (
        s.as_u16(),
        v["error_msg"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn upstreams_as_apisix_stores_them() {
    let dir = TempDir::new("res-up");
    let f = Ferry::start(BIN, &dir.0, "");
    // ADC probes without a key; answers name the API version and not APISIX.
    let r = send("HEAD", &f.admin_url(""), &[], "").await;
    assert_eq!(r.status, 200);
    let r = send(
        "GET",
        &f.admin_url("/routes"),
        &[("x-api-key", TEST_KEY)],
        "",
    )
    .await;
    assert_eq!(r.header("x-api-version"), Some("v3"));
    assert!(r.header("server").unwrap().starts_with("Ferry/"));

    let body = json!({"nodes": {"127.0.0.1:1980": 1}, "labels": {"env": "t"}});
    let (s, v) = f.admin("PUT", "/upstreams/1", Some(body.clone())).await;
    assert_eq!(s, 201, "{v}");
    let mut want = body.clone();
    want["id"] = json!("1");
    want["create_time"] = v["value"]["create_time"].clone();
    want["update_time"] = v["value"]["update_time"].clone();
    assert_eq!(
        v["value"], want,
        "the body as sent plus id and times, no defaults"
    );
    let (s, _) = f.admin("PUT", "/upstreams/1", Some(body.clone())).await;
    assert_eq!(s, 200);
    let (s, v) = f.admin("POST", "/upstreams", Some(body.clone())).await;
    assert_eq!(s, 201);
    assert_eq!(v["value"]["id"].as_str().unwrap().len(), 20);
    let (s, v) = f.admin("GET", "/upstreams/1", None).await;
    assert_eq!(s, 200);
    assert!(v["createdIndex"].is_u64() && v["modifiedIndex"].is_u64());

    for (b, want) in [
        (
            json!({"nodes": {"a:1": 1}, "retries": -1}),
            "invalid configuration: property \"retries\" validation failed: expected -1 to be at least 0",
        ),
        (
            json!({"nodes": {"a:1": 1}, "timeout": {"connect": 1, "send": 1, "read": 0}}),
            "invalid configuration: property \"timeout.read\" validation failed: expected 0 to be greater than 0",
        ),
        (json!({"type": "chash", "nodes": {"a:1": 1}}), "missing key"),
        (
            json!({"pass_host": "rewrite", "nodes": {"a:1": 1}}),
            "`upstream_host` can't be empty when `pass_host` is `rewrite`",
        ),
        (
            json!({"nodes": {"a:1": 1}, "labels": {"k": 1}}),
            "property \"labels.k\" validation failed: wrong type: expected string",
        ),
        (
            json!({"nodes": {"a:1": 1}, "create_time": 1}),
            "the property is forbidden:  create_time",
        ),
        (
            json!({"nodes": {"a:1": 1}, "scheme": "grpc"}),
            "not supported by Ferry",
        ),
    ] {
        let (s, m) = err(&f, "PUT", "/upstreams/2", Some(b.clone())).await;
        assert_eq!(s, 400, "{b}");
        assert!(m.contains(want), "{b}: {m}");
    }
    let (s, m) = err(&f, "PUT", "/upstreams/bad$id", Some(body.clone())).await;
    assert_eq!(s, 400);
    assert!(m.contains("property \"id\" validation failed"), "{m}");
    let (s, m) = err(&f, "POST", "/upstreams/9", Some(body.clone())).await;
    assert_eq!((s, m.as_str()), (400, "wrong upstream id, do not need it"));

    // PATCH merges (null deletes); a sub-path PATCH replaces; PATCH validates.
    let (s, v) = f
        .admin(
            "PATCH",
            "/upstreams/1",
            Some(json!({"labels": null, "desc": "d"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"].get("labels"), None);
    assert_eq!(v["value"]["desc"], "d");
    let (s, v) = f
        .admin(
            "PATCH",
            "/upstreams/1/nodes",
            Some(json!({"127.0.0.1:1981": 2})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"]["nodes"], json!({"127.0.0.1:1981": 2}));
    let (s, _) = f
        .admin("PATCH", "/upstreams/1", Some(json!({"retries": -2})))
        .await;
    assert_eq!(s, 400);

    // Lists: filters, paging, page_size bounds.
    for i in 0..12 {
        f.admin(
            "PUT",
            &format!("/routes/r{i}"),
            Some(
                json!({"uri": format!("/r{i}"), "name": format!("route-{i}"), "upstream_id": "1",
                        "labels": if i % 2 == 0 { json!({"even": "yes"}) } else { json!({}) }}),
            ),
        )
        .await;
    }
    let (_, v) = f.admin("GET", "/routes?name=route-1", None).await;
    assert_eq!(v["total"], 3, "route-1, route-10, route-11");
    let (_, v) = f.admin("GET", "/routes?label=even", None).await;
    assert_eq!(v["total"], 6);
    let (_, v) = f
        .admin(
            "GET",
            "/routes?filter=upstream_id%3D1&page=2&page_size=10",
            None,
        )
        .await;
    assert_eq!(
        (v["total"].as_u64(), v["list"].as_array().unwrap().len()),
        (Some(12), 2)
    );
    let (s, m) = err(&f, "GET", "/routes?page=1&page_size=2", None).await;
    assert_eq!(
        (s, m.as_str()),
        (400, "page_size must be between 10 and 500")
    );
    let (s, m) = err(&f, "DELETE", "/upstreams/1", None).await;
    assert_eq!(s, 400);
    assert_eq!(
        m,
        "can not delete this upstream, route [r0] is still using it now"
    );

    // Stream routes: none, and Ferry says why writes are refused.
    let (s, v) = f.admin("GET", "/stream_routes", None).await;
    assert_eq!((s.as_u16(), v), (200, json!({"total": 0, "list": []})));
    let (s, m) = err(&f, "PUT", "/stream_routes/1", Some(json!({}))).await;
    assert_eq!(s, 400);
    assert!(m.contains("stream mode is disabled"), "{m}");
    let (s, m) = err(&f, "GET", "/frobs", None).await;
    assert_eq!((s, m.as_str()), (404, "Unsupported resource type: frobs"));
}

#[tokio::test]
async fn consumers_credentials_ssls_and_metadata() {
    let dir = TempDir::new("res-consumers");
    let f = Ferry::start(BIN, &dir.0, "");
    let (s, m) = err(&f, "POST", "/consumers", Some(json!({"username": "jack"}))).await;
    assert_eq!(
        (s, m.as_str()),
        (405, "not supported `POST` method for consumer")
    );
    let (s, v) = f
        .admin(
            "PUT",
            "/consumers",
            Some(json!({"username": "jack", "desc": "j"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["key"], "/apisix/consumers/jack");
    assert_eq!(
        v["value"].get("id"),
        None,
        "a consumer's id is its username"
    );
    let (s, m) = err(
        &f,
        "PUT",
        "/consumers/jack",
        Some(json!({"username": "bob"})),
    )
    .await;
    assert_eq!((s, m.as_str()), (400, "wrong username"));
    let (s, _) = f
        .admin("PATCH", "/consumers/jack", Some(json!({"desc": "x"})))
        .await;
    assert_eq!(s, 405);

    let (s, m) = err(
        &f,
        "PUT",
        "/consumers/nobody/credentials/c1",
        Some(json!({})),
    )
    .await;
    assert_eq!((s, m.as_str()), (404, "consumer not found"));
    let (s, v) = f
        .admin(
            "PUT",
            "/consumers/jack/credentials/c1",
            Some(json!({"name": "first"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["key"], "/apisix/consumers/jack/credentials/c1");
    assert_eq!(v["value"]["id"], "c1");
    let (s, m) = err(
        &f,
        "PUT",
        "/consumers/jack/credentials/c2",
        Some(json!({"plugins": {"request-id": {}}})),
    )
    .await;
    assert_eq!(
        (s, m.as_str()),
        (
            400,
            "only supports auth type plugins in consumer credential"
        )
    );
    let (s, m) = err(&f, "PUT", "/consumers/jack/credentials", Some(json!({}))).await;
    assert_eq!((s, m.as_str()), (400, "missing credential id"));
    let (_, v) = f.admin("GET", "/consumers/jack/credentials", None).await;
    assert_eq!(v["total"], 1);
    let (_, v) = f.admin("GET", "/consumers", None).await;
    assert_eq!(v["total"], 1, "credentials are not consumers: {v}");
    let (s, _) = f.admin("DELETE", "/consumers/jack", None).await;
    assert_eq!(s, 200);
    let (s, _) = f.admin("GET", "/consumers/jack/credentials", None).await;
    assert_eq!(s, 404);
    let (s, _) = f.admin("GET", "/consumers/jack/credentials/c1", None).await;
    assert_eq!(s, 404, "deleted with its consumer");

    // SSL: the pair is checked; the key is never returned.
    let ca = TestCa::new(&["test.com"]);
    let ssl = json!({"cert": ca.cert_pem, "key": ca.key_pem, "snis": ["test.com"]});
    let (s, v) = f.admin("PUT", "/ssls/1", Some(ssl.clone())).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["value"].get("key"), None);
    let (_, v) = f.admin("GET", "/ssls/1", None).await;
    assert_eq!(v["value"].get("key"), None);
    assert_eq!(v["value"]["snis"], json!(["test.com"]));
    let (_, v) = f.admin("GET", "/ssls", None).await;
    assert_eq!(v["list"][0]["value"].get("key"), None);
    let mut bad = ssl.clone();
    bad.as_object_mut().unwrap().remove("snis");
    let (s, m) = err(&f, "PUT", "/ssls/2", Some(bad)).await;
    assert_eq!(
        (s, m.as_str()),
        (400, "invalid configuration: then clause did not match")
    );
    let mut bad = ssl.clone();
    bad["key"] = json!(
        "-----BEGIN PRIVATE KEY-----\nnot a key at all, but long enough to pass the length check\n-----END PRIVATE KEY-----\n"
    );
    let (s, m) = err(&f, "PUT", "/ssls/2", Some(bad)).await;
    assert_eq!(s, 400);
    assert!(m.contains("failed to parse key"), "{m}");

    // Plugin metadata: keyed by plugin, stored as sent (no id, no times).
    let (s, m) = err(&f, "PUT", "/plugin_metadata", Some(json!({}))).await;
    assert_eq!((s, m.as_str()), (400, "missing plugin name"));
    let (s, m) = err(&f, "PUT", "/plugin_metadata/no-such", Some(json!({}))).await;
    assert_eq!((s, m.as_str()), (400, "invalid plugin name"));
    let meta = json!({"log_format": {"host": "$host"}});
    let (s, v) = f
        .admin("PUT", "/plugin_metadata/http-logger", Some(meta.clone()))
        .await;
    assert_eq!(s, 201);
    assert_eq!(v["key"], "/apisix/plugin_metadata/http-logger");
    assert_eq!(v["value"], meta);
    let (s, _) = f.admin("POST", "/plugin_metadata", Some(meta)).await;
    assert_eq!(s, 405);
}

#[tokio::test]
async fn global_rules_run_for_every_request() {
    let dir = TempDir::new("res-global");
    let f = Ferry::start(BIN, &dir.0, "");
    let origin = Echo::start("o", Duration::ZERO).await;
    f.admin(
        "PUT",
        "/routes/r",
        Some(json!({"uri": "/r", "upstream": {"nodes": {origin.authority(): 1}}})),
    )
    .await;
    let (s, m) = err(&f, "POST", "/global_rules", Some(json!({"plugins": {}}))).await;
    assert_eq!(
        (s, m.as_str()),
        (405, "not supported `POST` method for global rule")
    );
    let (s, m) = err(&f, "PUT", "/global_rules/1", Some(json!({}))).await;
    assert_eq!(
        (s, m.as_str()),
        (
            400,
            "invalid configuration: property \"plugins\" is required"
        )
    );
    let (s, v) = f
        .admin(
            "PUT",
            "/global_rules/1",
            Some(json!({"plugins": {"request-id": {"header_name": "X-Global-Id"}}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, m) = err(
        &f,
        "PUT",
        "/global_rules/2",
        Some(json!({"plugins": {"request-id": {}}})),
    )
    .await;
    assert_eq!(
        (s, m.as_str()),
        (
            400,
            "plugin 'request-id' already exists in global rule with id '1'"
        )
    );
    // matched: the upstream sees the id and the client gets it back
    let r = send("GET", &f.url("/r"), &[], "").await;
    assert_eq!(r.status, 200);
    let id = r
        .header("x-global-id")
        .expect("global rule ran")
        .to_string();
    assert_eq!(r.json()["headers"]["x-global-id"], id.as_str());
    // unmatched: global rules run too
    let r = send("GET", &f.url("/nowhere"), &[], "").await;
    assert_eq!(r.status, 404);
    assert!(r.header("x-global-id").is_some());
    // removing the rule takes it off every route
    let (s, _) = f.admin("DELETE", "/global_rules/1", None).await;
    assert_eq!(s, 200);
    let r = send("GET", &f.url("/r"), &[], "").await;
    assert!(r.header("x-global-id").is_none());
    let r = send("GET", &f.url("/nowhere"), &[], "").await;
    assert!(r.header("x-global-id").is_none());
}
