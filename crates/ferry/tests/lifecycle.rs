//! Process lifecycle: config errors, validate, generated admin key, restart persistence,
//! `kill -9` during a burst of writes, port conflicts, graceful drain on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_testkit::{Ferry, TempDir, free_port, send};
use serde_json::json;
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

fn run(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn validate_and_config_errors() {
    let dir = TempDir::new("lc-validate");
    let cfg = dir.0.join("config.yaml");
    std::fs::write(
        &cfg,
        "apisix:\n  node_listen: 9080\n  router:\n    http: radixtree_uri\n",
    )
    .unwrap();
    let (code, out, err) = run(&dir.0, &["validate", "--config", "config.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok: config.yaml"));
    assert!(
        err.contains("apisix.router"),
        "ignored keys are reported: {err}"
    );
    let (code, out, _) = run(&dir.0, &["validate", "--config", "config.yaml", "--print"]);
    assert_eq!(code, 0);
    assert!(out.contains("apisix.node_listen: [0.0.0.0:9080]"), "{out}");
    assert!(out.contains("ferry.data_dir: data"), "{out}");

    std::fs::write(&cfg, "apisix:\n  node_listen: [9080\n").unwrap();
    let (code, _, err) = run(&dir.0, &["validate", "--config", "config.yaml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("config.yaml") && err.contains("line "),
        "{err}"
    );
    let (code, _, err) = run(&dir.0, &["serve", "--config", "config.yaml"]);
    assert_eq!(code, 1, "serve refuses a malformed file");
    assert!(err.contains("config.yaml: line"), "{err}");

    std::fs::write(
        &cfg,
        "deployment:\n  role: data_plane\n  etcd:\n    host: [\"http://127.0.0.1:2379\"]\n",
    )
    .unwrap();
    let (code, _, err) = run(&dir.0, &["validate", "--config", "config.yaml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "invalid deployment data_plane configuration: property \"role_data_plane\" is required"
        ),
        "{err}"
    );

    std::fs::write(&cfg, "apisix:\n  node_listen: ${{FERRY_TEST_UNSET_VAR}}\n").unwrap();
    let (code, _, err) = run(&dir.0, &["validate", "--config", "config.yaml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("can't find environment variable FERRY_TEST_UNSET_VAR"),
        "{err}"
    );
    std::fs::write(
        &cfg,
        "apisix:\n  node_listen: ${{FERRY_TEST_UNSET_VAR:=9555}}\n",
    )
    .unwrap();
    assert_eq!(run(&dir.0, &["validate", "--config", "config.yaml"]).0, 0);

    let (code, out, _) = run(&dir.0, &["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ferry "));
}

#[test]
fn no_config_generates_an_admin_key_once() {
    let dir = TempDir::new("lc-key");
    let port = free_port();
    let admin_port = free_port();
    // Defaults everywhere except the ports (so tests can run side by side).
    std::fs::write(
        dir.0.join("config.yaml"),
        format!("plugin_attr:\n  prometheus:\n    enable_export_server: false\napisix:\n  node_listen: [{{ip: 127.0.0.1, port: {port}}}]\n  ssl:\n    enable: false\ndeployment:\n  admin:\n    admin_listen: {{ip: 127.0.0.1, port: {admin_port}}}\n"),
    )
    .unwrap();
    let t = Instant::now();
    let mut f = Ferry::spawn(BIN, &dir.0, port, admin_port, String::new());
    eprintln!("ferry serve up and listening after {:?}", t.elapsed());
    let key = std::fs::read_to_string(dir.0.join("data/admin_key"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(key.len(), 32);
    let err = f.wait_stderr("started in ");
    assert!(
        err.contains(&key) && err.contains("data/admin_key"),
        "{err}"
    );
    let started_ms: u64 = err
        .split("started in ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    // Startup speed is a benchmark figure, not a test: this only checks the line is there
    // and that start-up does not hang.
    assert!(started_ms < 5_000, "startup took {started_ms} ms");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.0.join("data/admin_key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(f.terminate().code(), Some(0));
    // Second start: same key, not printed again.
    let f = Ferry::spawn(BIN, &dir.0, port, admin_port, key.clone());
    std::thread::sleep(Duration::from_millis(100));
    assert!(!f.stderr_text().contains(&key));
    // Access log defaults to logs/access.log under the working directory.
    assert!(dir.0.join("logs/access.log").exists());
}

#[tokio::test]
async fn restart_keeps_routes_and_kill9_loses_no_acknowledged_write() {
    let dir = TempDir::new("lc-durable");
    let mut f = Ferry::start(BIN, &dir.0, "");
    f.admin(
        "PUT",
        "/routes/keep",
        Some(json!({"uri": "/keep", "plugins": {"request-id": {}}})),
    )
    .await;
    assert_eq!(f.terminate().code(), Some(0));
    let (port, admin_port) = (f.port, f.admin_port);
    drop(f);
    let mut f = Ferry::spawn(
        BIN,
        &dir.0,
        port,
        admin_port,
        ferry_testkit::TEST_KEY.into(),
    );
    assert_eq!(
        send("GET", &f.url("/keep"), &[], "").await.status,
        503,
        "route survived a restart"
    );

    // A burst of concurrent writes; kill -9 in the middle.
    let admin = f.admin_url("/routes");
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let admin = admin.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let id = format!("w{w}-{i}");
                let body =
                    json!({"id": id, "uri": format!("/{id}"), "plugins": {"request-id": {}}})
                        .to_string();
                let c = ferry_testkit::client(false);
                let req = http::Request::put(&admin)
                    .header("x-api-key", ferry_testkit::TEST_KEY)
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap();
                match c.request(req).await {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push(id),
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    f.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "only {} writes before the kill",
        acked.len()
    );
    let f = Ferry::spawn(
        BIN,
        &dir.0,
        port,
        admin_port,
        ferry_testkit::TEST_KEY.into(),
    );
    let (_, list) = f.admin("GET", "/routes", None).await;
    let stored: std::collections::HashSet<String> = list["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let v = &i["value"];
            assert!(
                v["uri"].is_string() && v["plugins"]["request-id"].is_object(),
                "half-written: {v}"
            );
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    eprintln!(
        "{} acknowledged writes before kill -9, {} stored after restart",
        acked.len(),
        stored.len()
    );
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
}

#[test]
fn port_in_use_is_a_clear_error() {
    let dir = TempDir::new("lc-port");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    std::fs::write(
        dir.0.join("config.yaml"),
        format!("plugin_attr:\n  prometheus:\n    enable_export_server: false\napisix:\n  node_listen: [{{ip: 127.0.0.1, port: {port}}}]\n  ssl:\n    enable: false\ndeployment:\n  admin:\n    admin_listen: {{ip: 127.0.0.1, port: {}}}\n", free_port()),
    )
    .unwrap();
    let (code, _, err) = run(&dir.0, &["serve", "--config", "config.yaml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")) && err.contains("in use"),
        "{err}"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let dir = TempDir::new("lc-drain");
    let mut f = Ferry::start(BIN, &dir.0, "");
    f.admin("PUT", "/routes/slow", Some(json!({"uri": "/slow", "vars": [["post_arg.a", "==", "1"]], "plugins": {"request-id": {}}}))).await;
    // A request whose body trickles in: in flight when SIGTERM arrives.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", f.port)).unwrap();
    s.write_all(b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"a\":").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    Command::new("kill")
        .args(["-TERM", &f.child.id().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused while draining.
    assert!(std::net::TcpStream::connect(("127.0.0.1", f.port)).is_err());
    s.write_all(b"\"1\"}").unwrap();
    let mut resp = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    let status = f.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn broken_framing_gets_400() {
    let dir = TempDir::new("lc-framing");
    let f = Ferry::start(BIN, &dir.0, "");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", f.port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // The gateway is still serving.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", f.port)).unwrap();
    s.write_all(b"GET /nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
}

/// Two processes on one data dir: the second refuses to start, saying why.
#[tokio::test]
async fn a_data_dir_serves_one_process() {
    let dir = TempDir::new("lc-lock");
    let _first = Ferry::start(BIN, &dir.0, "");
    let other = TempDir::new("lc-lock-2");
    std::fs::write(
        other.0.join("config.yaml"),
        format!(
            "plugin_attr:\n  prometheus:\n    enable_export_server: false\napisix:\n  node_listen: [{{ip: 127.0.0.1, port: {}}}]\n  ssl:\n    enable: false\ndeployment:\n  admin:\n    admin_listen: {{ip: 127.0.0.1, port: {}}}\nferry:\n  data_dir: {}\n",
            free_port(),
            free_port(),
            dir.0.join("data").display()
        ),
    )
    .unwrap();
    let (code, _, err) = run(&other.0, &["serve", "--config", "config.yaml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is in use by another Ferry process"), "{err}");
}
