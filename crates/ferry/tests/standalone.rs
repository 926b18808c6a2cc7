//! Standalone modes through a real `ferry serve`: the API-driven document
//! (`GET|PUT|HEAD /apisix/admin/configs`, digests, per-type versions, validation, persistence)
//! and the file-driven `apisix.yaml` (the `#END` marker, `${{VAR}}`, reload on change, the last
//! good configuration kept on a bad file, Admin API writes refused).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_testkit::echo::Echo;
use ferry_testkit::{Ferry, TEST_KEY, TempDir, free_port, send};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

fn config(dir: &std::path::Path, deployment: &str) -> (u16, u16) {
    let (port, admin_port) = (free_port(), free_port());
    let cfg = format!(
        "plugin_attr:\n  prometheus:\n    enable_export_server: false\napisix:\n  node_listen: [{{ip: 127.0.0.1, port: {port}}}]\n  ssl:\n    enable: false\n\
         deployment:\n{deployment}  admin:\n    admin_key: [{{name: admin, key: {TEST_KEY}, role: admin}}]\n    admin_listen: {{ip: 127.0.0.1, port: {admin_port}}}\n"
    );
    std::fs::write(dir.join("config.yaml"), cfg).unwrap();
    (port, admin_port)
}

async fn configs(
    f: &Ferry,
    method: &str,
    digest: Option<&str>,
    body: &str,
) -> (u16, Value, http::HeaderMap) {
    let mut h = vec![
        ("x-api-key", TEST_KEY),
        ("content-type", "application/json"),
    ];
    if let Some(d) = digest {
        h.push(("x-digest", d));
    }
    let r = send(method, &f.admin_url("/configs"), &h, body.to_string()).await;
    (r.status.as_u16(), r.json(), r.headers)
}

#[tokio::test]
async fn the_configs_api() {
    let dir = TempDir::new("sa-api");
    let (port, admin_port) = config(
        &dir.0,
        "  role: traditional\n  role_traditional:\n    config_provider: yaml\n",
    );
    let mut f = Ferry::spawn(BIN, &dir.0, port, admin_port, TEST_KEY.into());
    let origin = Echo::start("o", Duration::ZERO).await;

    // before any PUT: every version 0, no digest
    let (s, v, h) = configs(&f, "GET", None, "").await;
    assert_eq!(s, 200);
    assert_eq!(v["routes_conf_version"], 0);
    assert_eq!(v["upstreams_conf_version"], 0);
    assert!(h.get("x-digest").is_none());

    let doc = json!({
        "routes": [{"id": "r1", "uri": "/r1", "upstream_id": "u1", "modifiedIndex": 5}],
        "upstreams": [{"id": "u1", "nodes": {origin.authority(): 1}}],
    });
    let (s, v, _) = configs(&f, "PUT", None, &doc.to_string()).await;
    assert_eq!(
        (s, v["error_msg"].as_str()),
        (400, Some("missing digest header"))
    );
    let (s, v, _) = configs(&f, "PUT", Some("d1"), "").await;
    assert_eq!(
        (s, v["error_msg"].as_str()),
        (400, Some("invalid request body: empty request body"))
    );
    let (s, _, h) = configs(&f, "PUT", Some("d1"), &doc.to_string()).await;
    assert_eq!(s, 202);
    assert_eq!(h.get("x-digest").unwrap(), "d1");
    assert!(h.get("x-last-modified").is_some());
    // applied at once
    let r = send("GET", &f.url("/r1"), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // the same digest again changes nothing
    let (s, _, _) = configs(&f, "PUT", Some("d1"), "{}").await;
    assert_eq!(s, 204);
    // GET gives the arrays back as sent, with versions bumped
    let (_, v, h) = configs(&f, "GET", None, "").await;
    assert_eq!(v["routes"], doc["routes"]);
    assert_eq!(v["routes_conf_version"], 1);
    assert_eq!(v["X-Digest"], "d1");
    assert_eq!(h.get("x-digest").unwrap(), "d1");
    let r = send(
        "HEAD",
        &f.admin_url("/configs"),
        &[("x-api-key", TEST_KEY)],
        "",
    )
    .await;
    assert_eq!(r.header("x-digest"), Some("d1"));

    // only routes_conf_version given, equal to the current one: routes kept; the other
    // types (absent) are replaced by the body's (empty) arrays
    let (s, v, _) = configs(
        &f,
        "PUT",
        Some("d2"),
        &json!({"routes_conf_version": 1, "routes": []}).to_string(),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let (_, v, _) = configs(&f, "GET", None, "").await;
    assert_eq!(v["routes"], doc["routes"], "equal version keeps the type");
    assert_eq!(v["upstreams_conf_version"], 2);
    assert_eq!(v.get("upstreams"), None);
    let r = send("GET", &f.url("/r1"), &[], "").await;
    assert_eq!(r.status, 503, "its upstream is gone: {}", r.text());

    // refused documents change nothing
    for (body, want) in [
        (
            json!({"routes_conf_version": 0}),
            "routes_conf_version must be greater than or equal to (1)",
        ),
        (
            json!({"routes_conf_version": "x"}),
            "routes_conf_version must be a number",
        ),
        (
            json!({"routes": [{"id": "a", "uri": "/a", "plugins": {"invalid-plugin": {}}}]}),
            "unknown plugin [invalid-plugin]",
        ),
        (
            json!({"routes": [{"id": "a", "uri": "/a", "upstream_id": "u"}, {"id": "a", "uri": "/b", "upstream_id": "u"}]}),
            "found duplicate id a in routes",
        ),
        (
            json!({"upstreams": [{"id": "u", "nodes": {"a:1": 1}, "retries": -1}]}),
            "expected -1 to be at least 0",
        ),
    ] {
        let (s, v, _) = configs(&f, "PUT", Some("bad"), &body.to_string()).await;
        assert_eq!(s, 400, "{body}");
        assert!(
            v["error_msg"].as_str().unwrap().contains(want),
            "{body}: {v}"
        );
    }
    let (s, _, _) = configs(&f, "PUT", Some("bad"), "{not json").await;
    assert_eq!(s, 400);
    let (_, v, _) = configs(&f, "GET", None, "").await;
    assert_eq!(v["X-Digest"], "d2");

    // validate: every error, with where it is; never applied
    let bad = json!({"routes": [{"id": "ok", "uri": "/ok", "upstream_id": "u"}, {"id": "r2", "uri": 5, "upstream_id": "u"}],
                     "upstreams": [{"id": "u", "type": "ewma"}]});
    let r = send(
        "POST",
        &f.admin_url("/configs/validate"),
        &[("x-api-key", TEST_KEY)],
        bad.to_string(),
    )
    .await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["error_msg"], "Configuration validation failed");
    assert_eq!(v["errors"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["errors"][0]["resource_type"], "routes");
    assert_eq!(v["errors"][0]["resource_id"], "r2");
    assert_eq!(v["errors"][0]["index"], 1);
    let r = send(
        "POST",
        &f.admin_url("/configs/validate"),
        &[("x-api-key", TEST_KEY)],
        doc.to_string(),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.json()), (200, json!({})));

    // YAML in and out
    let yaml = format!(
        "routes:\n  - id: y1\n    uri: /y1\n    upstream:\n      nodes:\n        \"{}\": 1\n",
        origin.authority()
    );
    let r = send(
        "PUT",
        &f.admin_url("/configs"),
        &[
            ("x-api-key", TEST_KEY),
            ("x-digest", "d3"),
            ("content-type", "application/yaml"),
        ],
        yaml,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(send("GET", &f.url("/y1"), &[], "").await.status, 200);
    let r = send(
        "GET",
        &f.admin_url("/configs"),
        &[("x-api-key", TEST_KEY), ("accept", "application/yaml")],
        "",
    )
    .await;
    assert!(r.text().contains("uri: /y1"), "{}", r.text());

    // resource writes are refused; reads work
    let (s, v) = f
        .admin(
            "PUT",
            "/routes/z",
            Some(json!({"uri": "/z", "upstream_id": "u"})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error_msg"]
            .as_str()
            .unwrap()
            .contains("PUT /apisix/admin/configs")
    );
    let (s, v) = f.admin("GET", "/routes/y1", None).await;
    assert_eq!((s.as_u16(), v["value"]["uri"].as_str()), (200, Some("/y1")));

    // kept across a restart (APISIX forgets it)
    assert_eq!(f.terminate().code(), Some(0));
    let f = Ferry::spawn(BIN, &dir.0, port, admin_port, TEST_KEY.into());
    assert_eq!(send("GET", &f.url("/y1"), &[], "").await.status, 200);
    let (_, v, _) = configs(&f, "GET", None, "").await;
    assert_eq!(v["X-Digest"], "d3");
}

#[tokio::test]
async fn the_apisix_yaml_file() {
    let dir = TempDir::new("sa-file");
    let (port, admin_port) = config(
        &dir.0,
        "  role: data_plane\n  role_data_plane:\n    config_provider: yaml\n",
    );
    let a = Echo::start("a", Duration::ZERO).await;
    let b = Echo::start("b", Duration::ZERO).await;
    let file = dir.0.join("apisix.yaml");
    let write = |node: &str, end: bool| {
        let text = format!(
            "routes:\n  - uri: /f\n    upstream:\n      nodes:\n        \"${{{{NODE:={node}}}}}\": 1\n  - id: bad\n    uri: 7\n{}",
            if end { "#END\n" } else { "" }
        );
        std::fs::write(&file, text).unwrap();
    };
    write(&a.authority(), true);
    let f = Ferry::spawn(BIN, &dir.0, port, admin_port, TEST_KEY.into());
    let node = || async {
        send("GET", &f.url("/f"), &[], "")
            .await
            .header("x-node")
            .map(String::from)
    };
    assert_eq!(
        node().await.as_deref(),
        Some("a"),
        "loaded at start; the invalid item skipped"
    );
    // a change is picked up within a second, even two in the same second
    write(&b.authority(), true);
    let deadline = Instant::now() + Duration::from_secs(2);
    while node().await.as_deref() != Some("b") {
        assert!(Instant::now() < deadline, "file change not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a file without #END (half-written) keeps the last good configuration
    write(&a.authority(), false);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(node().await.as_deref(), Some("b"));
    assert!(f.stderr_text().contains("#END"), "{}", f.stderr_text());
    // so does a YAML error
    std::fs::write(&file, "routes: [\n#END\n").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(node().await.as_deref(), Some("b"));
    // writes through the Admin API are refused, naming the file
    let (s, v) = f
        .admin(
            "PUT",
            "/routes/x",
            Some(json!({"uri": "/x", "upstream_id": "u"})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error_msg"].as_str().unwrap().contains("apisix.yaml"),
        "{v}"
    );
}

/// The document docs/kubernetes.md says the Ingress Controller sends for the documentation's
/// first Ingress Controller example: accepted, and a chat request goes through it (the provider
/// host resolved to a TLS mock).
#[tokio::test]
async fn the_ingress_controller_document_in_the_docs() {
    use ferry_testkit::mock::{Mock, MockConfig};
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/kubernetes.md"),
    )
    .unwrap();
    let start = page
        .find("```json title=\"PUT /apisix/admin/configs")
        .unwrap();
    let body_start = page[start..].find('\n').unwrap() + start + 1;
    let body_end = page[body_start..].find("```").unwrap() + body_start;
    let doc = &page[body_start..body_end];

    let (mock, ca) = Mock::start_tls(
        MockConfig {
            key: Some("your-api-key".into()),
            record: true,
            ..Default::default()
        },
        &["api.openai.com"],
    )
    .await;
    let dir = TempDir::new("sa-k8s");
    std::fs::write(dir.0.join("ca.pem"), ca).unwrap();
    let (port, admin_port) = config(
        &dir.0,
        "  role: traditional\n  role_traditional:\n    config_provider: yaml\n",
    );
    let cfg = std::fs::read_to_string(dir.0.join("config.yaml"))
        .unwrap()
        .replace(
            "  ssl:\n    enable: false\n",
            "  ssl:\n    enable: false\n    ssl_trusted_certificate: ca.pem\n",
        )
        + &format!("ferry:\n  resolve:\n    api.openai.com: {}\n", mock.addr);
    std::fs::write(dir.0.join("config.yaml"), cfg).unwrap();
    let f = Ferry::spawn(BIN, &dir.0, port, admin_port, TEST_KEY.into());
    let (s, v, _) = configs(&f, "PUT", Some("k8s-1"), doc).await;
    assert_eq!(s, 202, "{v}");
    let r = send(
        "POST",
        &f.url("/anything"),
        &[("content-type", "application/json")],
        json!({"messages": [{"role": "user", "content": "What is 1+1?"}]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.last().unwrap().json()["model"], "gpt-4");
}
