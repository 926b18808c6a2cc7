//! Admin API against a real `ferry serve`: APISIX's paths, shapes, status codes and errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_testkit::{Ferry, TempDir, send};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

fn route(id: &str) -> serde_json::Value {
    json!({"id": id, "uri": "/anything", "methods": ["POST"], "plugins": {"request-id": {}}})
}

#[tokio::test]
async fn crud_shapes() {
    let dir = TempDir::new("admin-crud");
    let f = Ferry::start(BIN, &dir.0, "");

    // PUT on the collection with the id in the body, as the APISIX docs do.
    let (s, v) = f.admin("PUT", "/routes", Some(route("r1"))).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["key"], "/apisix/routes/r1");
    assert_eq!(v["value"]["id"], "r1");
    assert!(v["value"]["create_time"].is_i64());
    assert!(v["value"]["update_time"].is_i64());
    // Stored as sent: no plugin defaults written back (so `adc diff` stays clean).
    assert_eq!(v["value"]["plugins"]["request-id"], json!({}));
    let created = v["value"]["create_time"].clone();

    // PUT again replaces: 200, create_time kept.
    let mut r = route("r1");
    r["name"] = json!("renamed");
    let (s, v) = f.admin("PUT", "/routes/r1", Some(r)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"]["name"], "renamed");
    assert_eq!(v["value"]["create_time"], created);

    // POST generates an id.
    let mut r = route("x");
    r.as_object_mut().unwrap().remove("id");
    let (s, v) = f.admin("POST", "/routes", Some(r)).await;
    assert_eq!(s, 201, "{v}");
    let new_id = v["value"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["key"], format!("/apisix/routes/{new_id}"));

    // GET one and list.
    let (s, v) = f.admin("GET", "/routes/r1", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["key"], "/apisix/routes/r1");
    assert_eq!(v["value"]["name"], "renamed");
    assert!(v["modifiedIndex"].as_u64().unwrap() > v["createdIndex"].as_u64().unwrap());
    let (s, v) = f.admin("GET", "/routes", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["total"], 2);
    assert_eq!(v["list"].as_array().unwrap().len(), 2);
    assert_eq!(v["list"][0]["key"], "/apisix/routes/r1");

    // PATCH merges; null deletes.
    let (s, v) = f
        .admin(
            "PATCH",
            "/routes/r1",
            Some(json!({"desc": "hello", "name": null, "methods": ["GET"]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"]["desc"], "hello");
    assert!(v["value"].get("name").is_none());
    assert_eq!(v["value"]["methods"], json!(["GET"]));
    assert_eq!(v["value"]["uri"], "/anything");
    // PATCH on a sub path replaces that value.
    let (s, v) = f
        .admin("PATCH", "/routes/r1/methods", Some(json!(["PUT", "POST"])))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"]["methods"], json!(["PUT", "POST"]));
    // A PATCH that makes the route invalid is refused and changes nothing.
    let (s, v) = f
        .admin("PATCH", "/routes/r1", Some(json!({"priority": "x"})))
        .await;
    assert_eq!(s, 400, "{v}");
    let (_, v) = f.admin("GET", "/routes/r1", None).await;
    assert!(v["value"].get("priority").is_none());

    // DELETE.
    let (s, v) = f.admin("DELETE", &format!("/routes/{new_id}"), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["deleted"], "1");
    assert_eq!(v["key"], format!("/apisix/routes/{new_id}"));
    let (s, v) = f.admin("GET", &format!("/routes/{new_id}"), None).await;
    assert_eq!(s, 404);
    assert_eq!(v["error_msg"], "Key not found");
    let (s, _) = f.admin("DELETE", "/routes/nope", None).await;
    assert_eq!(s, 404);
    let (s, _) = f
        .admin("PATCH", "/routes/nope", Some(json!({"desc": "x"})))
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn errors_and_auth() {
    let dir = TempDir::new("admin-errors");
    let f = Ferry::start(BIN, &dir.0, "");
    let url = f.admin_url("/routes");

    // Missing and wrong keys: 401, and the key never reaches the log.
    let r = send("GET", &url, &[], "").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error_msg"], "failed to check token");
    let r = send("GET", &url, &[("x-api-key", "wrong-secret-value")], "").await;
    assert_eq!(r.status, 401);
    assert!(!f.stderr_text().contains("wrong-secret-value"));
    // The key also works as ?api_key=, as in APISIX.
    let r = send("GET", &format!("{url}?api_key={}", f.key), &[], "").await;
    assert_eq!(r.status, 200);
    // Viewers read but cannot write.
    let r = send("GET", &url, &[("x-api-key", "viewer-key")], "").await;
    assert_eq!(r.status, 200);
    let r = send(
        "PUT",
        &url,
        &[("x-api-key", "viewer-key")],
        route("v").to_string(),
    )
    .await;
    assert_eq!(r.status, 401);

    let key = [("x-api-key", f.key.as_str())];
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "PUT",
            "/routes",
            "{\"id\": \"a\", \"uri\": ".into(),
            400,
            "invalid request body: EOF while parsing a value at line 1 column 19",
        ),
        ("PUT", "/routes", "".into(), 400, "missing configurations"),
        (
            "PUT",
            "/routes",
            json!({"uri": "/a", "plugins": {}}).to_string(),
            400,
            "missing route id",
        ),
        (
            "PUT",
            "/routes/a",
            json!({"id": "b", "uri": "/a", "plugins": {}}).to_string(),
            400,
            "wrong route id",
        ),
        (
            "POST",
            "/routes",
            json!({"id": "b", "uri": "/a", "plugins": {}}).to_string(),
            400,
            "do not need it",
        ),
        (
            "PUT",
            "/routes/a",
            json!({"uri": "/a", "plugins": {"no-such-plugin": {}}}).to_string(),
            400,
            "unknown plugin [no-such-plugin]",
        ),
        (
            "PUT",
            "/routes/a",
            json!({"uri": "/a", "plugins": {"request-id": {"algorithm": 5}}}).to_string(),
            400,
            "failed to check the configuration of plugin request-id err: property \"algorithm\" validation failed",
        ),
        (
            "PUT",
            "/routes/a",
            json!({"uri": "/a", "plugins": {}, "vars": [["arg_x", "=~", "1"]]}).to_string(),
            400,
            "failed to validate the 'vars' expression",
        ),
        (
            "PUT",
            "/routes/a",
            json!({"uri": 7, "plugins": {}}).to_string(),
            400,
            "property \"uri\" validation failed: wrong type: expected string, got integer",
        ),
        (
            "PUT",
            "/routes/a",
            json!({"uri": "/a", "plugins": {}, "service_id": "missing"}).to_string(),
            400,
            "failed to fetch service info by service id [missing]",
        ),
        (
            "PUT",
            "/routes/bad%20id",
            json!({"uri": "/a", "plugins": {}}).to_string(),
            400,
            "property \"id\" validation failed",
        ),
        (
            "PUT",
            "/frobs/1",
            json!({}).to_string(),
            404,
            "Unsupported resource type: frobs",
        ),
        (
            "PUT",
            "/routes/a",
            format!(
                "{{\"id\":\"a\",\"uri\":\"/a\",\"plugins\":{{}},\"desc\":\"{}\"}}",
                // just over the 1.5 MiB limit: the socket buffers take what the server does not read
                "x".repeat(1_600_000)
            ),
            413,
            "greater than the maximum size 1572864",
        ),
    ];
    for (method, path, body, status, msg) in cases {
        let r = send(method, &f.admin_url(path), &key, body).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        let got = r.json()["error_msg"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            got.contains(msg),
            "{method} {path}: got {got:?}, want {msg:?}"
        );
    }
    // Nothing was half-written.
    let (_, v) = f.admin("GET", "/routes", None).await;
    assert_eq!(v["total"], 0);
}

#[tokio::test]
async fn services_plugin_configs_and_references() {
    let dir = TempDir::new("admin-refs");
    let f = Ferry::start(BIN, &dir.0, "");
    let (s, v) = f
        .admin(
            "PUT",
            "/services/s1",
            Some(json!({"plugins": {"request-id": {"header_name": "X-Svc-Id"}}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["key"], "/apisix/services/s1");
    let (s, v) = f
        .admin(
            "PUT",
            "/plugin_configs/p1",
            Some(json!({"plugins": {"request-id": {}}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = f
        .admin(
            "PUT",
            "/routes/r1",
            Some(json!({"uri": "/x", "service_id": "s1", "plugin_config_id": "p1"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = f.admin("DELETE", "/services/s1", None).await;
    assert_eq!(s, 400);
    assert_eq!(
        v["error_msg"],
        "can not delete this service directly, route [r1] is still using it now"
    );
    let (s, _) = f.admin("DELETE", "/plugin_configs/p1", None).await;
    assert_eq!(s, 400);
    f.admin("DELETE", "/routes/r1", None).await;
    let (s, _) = f.admin("DELETE", "/services/s1", None).await;
    assert_eq!(s, 200);

    let (s, v) = f.admin("GET", "/plugins/list", None).await;
    assert_eq!(s, 200);
    assert!(v.as_array().unwrap().contains(&json!("request-id")), "{v}");
    let (s, v) = f.admin("GET", "/plugins/request-id", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["properties"]["header_name"]["default"], "X-Request-Id");
}
