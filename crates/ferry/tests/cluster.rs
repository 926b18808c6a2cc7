//! Cluster mode on a real etcd: several Ferry nodes (traditional, control plane, data plane) on
//! one prefix, APISIX's key layout and values (encrypted secrets included), concurrent writers,
//! outages, compaction and start-up while etcd is away.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BIN, JSON, chat_body};
use ferry_testkit::etcd::Etcd;
use ferry_testkit::mock::{Mock, MockConfig};
use ferry_testkit::{Ferry, Ports, TempDir, send};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const NEEDS: &str =
    "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them";

struct Node {
    _dir: TempDir,
    f: Ferry,
}

fn deployment(etcd: &Etcd, role: &str, prefix: &str, more: &str) -> String {
    format!(
        "  role: {role}\n  role_{role}:\n    config_provider: etcd\n  etcd:\n    host:\n      - {}\n    prefix: {prefix}\n    timeout: 2\n{more}",
        etcd.endpoint()
    )
}

fn node(tag: &str, etcd: &Etcd, role: &str, prefix: &str) -> Node {
    node_with(tag, etcd, role, prefix, "")
}

fn node_with(tag: &str, etcd: &Etcd, role: &str, prefix: &str, more: &str) -> Node {
    let dir = TempDir::new(tag);
    let ports = match role {
        "data_plane" => Ports::Data,
        "control_plane" => Ports::Admin,
        _ => Ports::Both,
    };
    let f = Ferry::start_node(
        BIN,
        &dir.0,
        &deployment(etcd, role, prefix, more),
        "",
        ports,
    );
    Node { _dir: dir, f }
}

async fn mock() -> Mock {
    Mock::start(MockConfig {
        key: Some("token".into()),
        record: true,
        ..Default::default()
    })
    .await
}

fn route(id: &str, uri: &str, mock: &Mock) -> Value {
    json!({"id": id, "uri": uri, "plugins": {"ai-proxy": {
        "provider": "openai",
        "auth": {"header": {"Authorization": "Bearer token"}},
        "options": {"model": "gpt-4"},
        "override": {"endpoint": format!("{}/v1/chat/completions", mock.url())}
    }}})
}

async fn chat(n: &Node, uri: &str) -> u16 {
    send("POST", &n.f.url(uri), &JSON, chat_body())
        .await
        .status
        .as_u16()
}

/// Waits until `uri` on `n` answers `want` (bounded: a hang check, not a timing claim).
async fn until(n: &Node, uri: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = chat(n, uri).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{uri} on port {} answers {got}, not {want}",
            n.f.port
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn etcd_json(etcd: &Etcd, key: &str) -> Value {
    let out = etcd.ctl(&["get", key, "-w", "json"]);
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn three_nodes_share_one_configuration() {
    let _ = NEEDS;
    let etcd = Etcd::start();
    let m = mock().await;
    let a = node("cl-a", &etcd, "traditional", "/apisix");
    let b = node("cl-b", &etcd, "traditional", "/apisix");
    let c = node("cl-c", &etcd, "data_plane", "/apisix");

    // A write through A: 201 with APISIX's key, then served by B and by the data plane C.
    let (s, v) =
        a.f.admin("PUT", "/routes/r1", Some(route("r1", "/chat", &m)))
            .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["key"], "/apisix/routes/r1");
    assert_eq!(v["value"]["id"], "r1");
    let created = v["value"]["create_time"].clone();
    until(&b, "/chat", 200).await;
    until(&c, "/chat", 200).await;

    // The raw value: the request plus id and times; the provider key encrypted at rest.
    let raw: Value = serde_json::from_str(&etcd.get("/apisix/routes/r1").unwrap()).unwrap();
    let mut keys: Vec<&str> = raw
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(keys, ["create_time", "id", "plugins", "update_time", "uri"]);
    let stored = raw["plugins"]["ai-proxy"]["auth"]["header"]["Authorization"]
        .as_str()
        .unwrap();
    assert_ne!(stored, "Bearer token", "auth.header is encrypted in etcd");

    // B's Admin API reads etcd: plaintext, the indices are etcd's revisions.
    let (s, got) = b.f.admin("GET", "/routes/r1", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        got["value"]["plugins"]["ai-proxy"]["auth"]["header"]["Authorization"],
        "Bearer token"
    );
    let kv = &etcd_json(&etcd, "/apisix/routes/r1")["kvs"][0];
    assert_eq!(got["createdIndex"], kv["create_revision"]);
    assert_eq!(got["modifiedIndex"], kv["mod_revision"]);

    // PUT again on B: 200, create_time kept; the list on A has it.
    let (s, v) =
        b.f.admin("PUT", "/routes/r1", Some(route("r1", "/chat", &m)))
            .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"]["create_time"], created);
    let (_, list) = a.f.admin("GET", "/routes", None).await;
    assert_eq!(list["total"], 1);

    // DELETE on B: gone everywhere.
    let (s, _) = b.f.admin("DELETE", "/routes/r1", None).await;
    assert_eq!(s, 200);
    until(&a, "/chat", 404).await;
    until(&c, "/chat", 404).await;

    // The data plane has no Admin API: its port is closed, and the path is an ordinary 404.
    assert!(std::net::TcpStream::connect(("127.0.0.1", c.f.admin_port)).is_err());
    let r = send(
        "GET",
        &c.f.url("/apisix/admin/routes"),
        &[("x-api-key", ferry_testkit::TEST_KEY)],
        "",
    )
    .await;
    assert_eq!(r.status, 404);
    // Markers written by the traditional nodes, so an APISIX Admin API lists empty dirs.
    assert_eq!(etcd.get("/apisix/routes/").as_deref(), Some("init_dir"));
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn roles_data_plane_writes_nothing_and_control_plane_has_no_data_port() {
    let etcd = Etcd::start();
    let m = mock().await;
    let dp = node("cl-dp", &etcd, "data_plane", "/empty");
    assert_eq!(etcd.ctl(&["get", "/empty", "--prefix", "--keys-only"]), "");
    let cp = node("cl-cp", &etcd, "control_plane", "/empty");
    assert!(std::net::TcpStream::connect(("127.0.0.1", cp.f.port)).is_err());
    let (s, v) =
        cp.f.admin("PUT", "/routes/1", Some(route("1", "/x", &m)))
            .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["key"], "/empty/routes/1",
        "keys carry the configured prefix"
    );
    until(&dp, "/x", 200).await;
    // POST ids are 20-digit etcd revisions.
    let (s, v) =
        cp.f.admin(
            "POST",
            "/routes",
            Some(json!({"uri": "/p", "plugins": route("", "/p", &m)["plugins"]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["value"]["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 20);
    assert!(id.parse::<u64>().unwrap() > 0);
    until(&dp, "/p", 200).await;
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn values_put_with_etcdctl_in_apisix_format() {
    let etcd = Etcd::start();
    let m = mock().await;
    let a = node("cl-ctl", &etcd, "traditional", "/apisix");
    // What a default APISIX stores: no id, no times, auth.header AES-128-CBC with its keyring.
    let v = json!({"uri": "/enc", "plugins": {"ai-proxy": {
        "provider": "openai",
        "auth": {"header": {"Authorization": "aWAkYZtdS6I7zRBttnNCdA=="}},
        "options": {"model": "gpt-4"},
        "override": {"endpoint": format!("{}/v1/chat/completions", m.url())}
    }}});
    etcd.ctl(&["put", "/apisix/routes/enc", &v.to_string()]);
    until(&a, "/enc", 200).await;
    let got = m.requests().last().unwrap().headers["authorization"].clone();
    assert_eq!(got, "Bearer token", "decrypted as APISIX does");

    // Junk is ignored without harm: markers, non-JSON values, unknown directories.
    etcd.ctl(&["put", "/apisix/routes/junk", "not json"]);
    etcd.ctl(&["put", "/apisix/secrets/vault/1", "{}"]);
    // An invalid new value for a served key: the old one keeps serving.
    etcd.ctl(&["put", "/apisix/routes/enc", r#"{"uri": 5}"#]);
    // An invalid new key is not served.
    etcd.ctl(&[
        "put",
        "/apisix/routes/bad",
        r#"{"uri": "/bad", "plugins": {"no-such-plugin": {}}}"#,
    ]);
    // A later valid key proves the watcher moved past all of them.
    etcd.ctl(&[
        "put",
        "/apisix/routes/ok",
        &route("ok", "/ok", &m).to_string(),
    ]);
    until(&a, "/ok", 200).await;
    assert_eq!(chat(&a, "/enc").await, 200, "previous value still served");
    assert_eq!(chat(&a, "/bad").await, 404);
    assert!(
        a.f.stderr_text()
            .contains("failed to check item data of [/apisix/routes/bad]")
    );

    // A burst straight into etcd (creates, updates, deletes) ends in etcd's state.
    for i in 0..30 {
        etcd.ctl(&[
            "put",
            &format!("/apisix/routes/b{i}"),
            &route(&format!("b{i}"), &format!("/b{i}"), &m).to_string(),
        ]);
    }
    for i in 0..10 {
        etcd.ctl(&["del", &format!("/apisix/routes/b{i}")]);
    }
    until(&a, "/b29", 200).await;
    until(&a, "/b9", 404).await;
    assert_eq!(chat(&a, "/b0").await, 404);
    assert_eq!(chat(&a, "/b10").await, 200);
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn concurrent_writers_on_two_nodes_lose_nothing() {
    let etcd = Etcd::start();
    let m = mock().await;
    let a = node("cl-w1", &etcd, "traditional", "/apisix");
    let b = node("cl-w2", &etcd, "traditional", "/apisix");
    let body = route("", "/p", &m);
    let plugins = body["plugins"].clone();

    // POSTs on both nodes: distinct ids.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let n = if i % 2 == 0 { &a } else { &b };
        let (url, key) = (n.f.admin_url("/routes"), n.f.key.clone());
        let b = json!({"uri": format!("/p{i}"), "plugins": plugins}).to_string();
        tasks.push(tokio::spawn(async move {
            send("POST", &url, &[("x-api-key", key.as_str())], b)
                .await
                .json()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let v = t.await.unwrap();
        ids.insert(v["value"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 20);

    // PUTs of one new id from both nodes at once: exactly one 201.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let n = if i % 2 == 0 { &a } else { &b };
        let (url, key) = (n.f.admin_url("/routes/same"), n.f.key.clone());
        let b = route("same", "/same", &m).to_string();
        tasks.push(tokio::spawn(async move {
            send("PUT", &url, &[("x-api-key", key.as_str())], b)
                .await
                .status
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 201).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 9, "{codes:?}");

    // PATCHes of different labels from both nodes at once: every one lands.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let n = if i % 2 == 0 { &a } else { &b };
        let (url, key) = (n.f.admin_url("/routes/same"), n.f.key.clone());
        let b = json!({"labels": {format!("l{i}"): "x"}}).to_string();
        tasks.push(tokio::spawn(async move {
            send("PATCH", &url, &[("x-api-key", key.as_str())], b)
                .await
                .status
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let (_, v) = a.f.admin("GET", "/routes/same", None).await;
    assert_eq!(v["value"]["labels"].as_object().unwrap().len(), 12, "{v}");
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn etcd_outage_keeps_serving_and_writes_fail_clearly() {
    let mut etcd = Etcd::start();
    let m = mock().await;
    let a = node("cl-out", &etcd, "traditional", "/apisix");
    let (s, _) =
        a.f.admin("PUT", "/routes/1", Some(route("1", "/chat", &m)))
            .await;
    assert_eq!(s, 201);
    until(&a, "/chat", 200).await;

    // Load through the outage: every request answered 200.
    let url = a.f.url("/chat");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if send("POST", &url, &JSON, chat_body()).await.status == 200 {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Admin reads and writes: 503 naming etcd, within the 2 s timeout (bounded loosely).
    let t = Instant::now();
    let (s, v) =
        a.f.admin("PUT", "/routes/2", Some(route("2", "/two", &m)))
            .await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error_msg"]
            .as_str()
            .unwrap()
            .starts_with("etcd unavailable: "),
        "{v}"
    );
    let (s, _) = a.f.admin("GET", "/routes", None).await;
    assert_eq!(s, 503);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "bounded by deployment.etcd.timeout"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Back: a write made right away reaches the node.
    etcd.restart();
    etcd.ctl(&[
        "put",
        "/apisix/routes/3",
        &route("3", "/three", &m).to_string(),
    ]);
    until(&a, "/three", 200).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) =
            a.f.admin("PUT", "/routes/2", Some(route("2", "/two", &m)))
                .await;
        if s == 201 {
            break;
        }
        assert!(Instant::now() < deadline, "writes still refused: {s} {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until(&a, "/two", 200).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert_eq!(
        failed, 0,
        "{ok} answered, {failed} failed during the outage"
    );
    assert!(ok > 10);
    let err = a.f.wait_stderr("reconnected to etcd");
    assert!(err.contains("lost connection to etcd"), "{err}");
    assert!(err.contains("reconnected to etcd"), "{err}");
    // Not a tight loop: a handful of attempts per second at most.
    assert!(err.matches("lost connection to etcd").count() <= 2, "{err}");
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn changes_compacted_while_cut_off_arrive_by_relist() {
    let mut etcd = Etcd::start();
    let m = mock().await;
    let a = node("cl-compact", &etcd, "traditional", "/apisix");
    for id in ["keep", "gone", "upd"] {
        a.f.admin(
            "PUT",
            &format!("/routes/{id}"),
            Some(route(id, &format!("/{id}"), &m)),
        )
        .await;
    }
    until(&a, "/upd", 200).await;
    etcd.kill();
    a.f.wait_stderr("lost connection to etcd");
    // Freeze the node so it cannot reconnect before the history is compacted away.
    let pid = a.f.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    etcd.restart();
    etcd.ctl(&["del", "/apisix/routes/gone"]);
    etcd.ctl(&[
        "put",
        "/apisix/routes/upd",
        &route("upd", "/upd2", &m).to_string(),
    ]);
    etcd.ctl(&[
        "put",
        "/apisix/routes/new",
        &route("new", "/new", &m).to_string(),
    ]);
    let rev = etcd.revision();
    etcd.ctl(&["compact", &rev.to_string()]);
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    until(&a, "/new", 200).await;
    assert_eq!(chat(&a, "/gone").await, 404, "no resurrected delete");
    assert_eq!(chat(&a, "/upd").await, 404);
    assert_eq!(chat(&a, "/upd2").await, 200);
    assert_eq!(chat(&a, "/keep").await, 200);
    assert!(a.f.wait_stderr("re-listing").contains("compacted"));
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn idle_watch_recreated_from_the_same_revision() {
    let etcd = Etcd::start();
    let m = mock().await;
    let a = node_with(
        "cl-idle",
        &etcd,
        "traditional",
        "/apisix",
        "    watch_timeout: 1\n",
    );
    // Writes outside the prefix move etcd's revision while the watch idles past its timeout.
    for i in 0..5 {
        etcd.ctl(&["put", &format!("/elsewhere/{i}"), "x"]);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    etcd.ctl(&[
        "put",
        "/apisix/routes/late",
        &route("late", "/late", &m).to_string(),
    ]);
    until(&a, "/late", 200).await;
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn start_up_waits_for_etcd_or_gives_up_clearly() {
    let mut etcd = Etcd::start();
    etcd.ctl(&["put", "/apisix/routes/1", r#"{"uri":"/x","plugins":{"ai-proxy":{"provider":"openai","auth":{"header":{"Authorization":"Bearer token"}},"options":{"model":"gpt-4"},"override":{"endpoint":"http://127.0.0.1:9/v1/chat/completions"}}}}"#]);
    etcd.kill();

    // Too few attempts: exits non-zero naming the endpoint.
    let dir = TempDir::new("cl-giveup");
    let cfg = format!(
        "apisix:\n  node_listen: {}\ndeployment:\n{}",
        ferry_testkit::free_port(),
        deployment(&etcd, "data_plane", "/apisix", "    startup_retry: 2\n")
    );
    std::fs::write(dir.0.join("config.yaml"), cfg).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.0.join("config.yaml"))
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("all etcd nodes are unavailable"), "{err}");
    assert!(
        err.contains(&format!(
            "Warning! Request etcd endpoint '{}/version' error",
            etcd.endpoint()
        )),
        "{err}"
    );
    assert!(err.contains("retry time=2"), "{err}");

    // Enough attempts: waits with its port closed, then loads and serves.
    let dir = TempDir::new("cl-wait");
    let port = ferry_testkit::free_port();
    let cfg = format!(
        "apisix:\n  node_listen:\n    - ip: 127.0.0.1\n      port: {port}\ndeployment:\n{}",
        deployment(&etcd, "data_plane", "/apisix", "    startup_retry: 30\n")
    );
    std::fs::write(dir.0.join("config.yaml"), cfg).unwrap();
    let mut f = Ferry::spawn_unchecked(BIN, &dir.0, port);
    let err = f.wait_stderr("retry time=2");
    assert!(err.contains("retry time=2"), "{err}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "listeners stay closed"
    );
    etcd.restart();
    f.ports = Ports::Data;
    f.wait_listening().unwrap();
    let r = send("POST", &f.url("/x"), &JSON, chat_body()).await;
    assert_ne!(r.status, 404, "the route loaded before the port opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn docs_cluster_page_runs_on_three_nodes() {
    let etcd = Etcd::start();
    let m = mock().await;
    let a = node("doc-a", &etcd, "traditional", "/apisix");
    let b = node("doc-b", &etcd, "traditional", "/apisix");
    let c = node("doc-c", &etcd, "data_plane", "/apisix");
    let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cluster.md");
    let text = std::fs::read_to_string(page).unwrap();
    let mock_authority = m
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut ran = 0;
    for (line, block) in common::shell_blocks(&text) {
        if !common::runnable(&block) {
            continue;
        }
        let script = block
            .replace("127.0.0.1:9080", &format!("127.0.0.1:{}", a.f.port))
            .replace("127.0.0.1:9180", &format!("127.0.0.1:{}", a.f.admin_port))
            .replace("127.0.0.1:9081", &format!("127.0.0.1:{}", b.f.port))
            .replace("127.0.0.1:9181", &format!("127.0.0.1:{}", b.f.admin_port))
            .replace("127.0.0.1:9082", &format!("127.0.0.1:{}", c.f.port))
            .replace("127.0.0.1:1980", &mock_authority)
            .replace("edd1c9f034335f136f87ad84b625c8f1", ferry_testkit::TEST_KEY);
        let cwd = a._dir.0.clone();
        tokio::task::spawn_blocking(move || {
            common::run_block(
                &script,
                &cwd,
                ferry_testkit::TEST_KEY,
                &format!("docs/cluster.md:{line}"),
            )
        })
        .await
        .unwrap();
        ran += 1;
    }
    assert_eq!(
        ran, 3,
        "the write, the two reads through B and C, and B's Admin read"
    );
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn etcd_auth_a_read_only_data_plane_and_endpoint_failover() {
    let mut etcd = Etcd::start();
    let m = mock().await;
    for cmd in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "reader"],
        &[
            "role",
            "grant-permission",
            "--prefix=true",
            "reader",
            "read",
            "/apisix",
        ],
        &["user", "add", "dp:dppw"],
        &["user", "grant-role", "dp", "reader"],
        &["auth", "enable"],
    ] {
        etcd.ctl(cmd);
    }
    etcd.auth = Some("root:rootpw".into());
    let a = node_with(
        "cl-auth-a",
        &etcd,
        "traditional",
        "/apisix",
        "    user: root\n    password: rootpw\n",
    );
    let (s, v) =
        a.f.admin("PUT", "/routes/1", Some(route("1", "/chat", &m)))
            .await;
    assert_eq!(s, 201, "{v}");
    // The data plane reads with a read-only user, the first endpoint being dead.
    let dead = format!("http://127.0.0.1:{}", ferry_testkit::free_port());
    let dir = TempDir::new("cl-auth-dp");
    let dep = format!(
        "  role: data_plane\n  role_data_plane:\n    config_provider: etcd\n  etcd:\n    host:\n      - {dead}\n      - {}\n    user: dp\n    password: dppw\n    timeout: 2\n",
        etcd.endpoint()
    );
    let dp = Node {
        f: Ferry::start_node(BIN, &dir.0, &dep, "", Ports::Data),
        _dir: dir,
    };
    until(&dp, "/chat", 200).await;
    let err = dp.f.stderr_text();
    assert!(
        err.contains(&format!(
            "Warning! Request etcd endpoint '{dead}/version' error"
        )),
        "{err}"
    );
    let (s, _) = a.f.admin("DELETE", "/routes/1", None).await;
    assert_eq!(s, 200);
    until(&dp, "/chat", 404).await;

    // A wrong password: the node refuses to start, in etcd's words.
    let dir = TempDir::new("cl-auth-bad");
    let cfg = format!(
        "apisix:\n  node_listen: {}\ndeployment:\n{}",
        ferry_testkit::free_port(),
        deployment(
            &etcd,
            "data_plane",
            "/apisix",
            "    user: dp\n    password: wrong\n    startup_retry: 1\n"
        )
    );
    std::fs::write(dir.0.join("config.yaml"), cfg).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.0.join("config.yaml"))
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid user ID or password"), "{err}");
    etcd.kill();
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn consumers_and_credentials_across_nodes() {
    let etcd = Etcd::start();
    let m = mock().await;
    let a = node("cl-cons-a", &etcd, "traditional", "/apisix");
    let b = node("cl-cons-b", &etcd, "traditional", "/apisix");
    let (s, v) =
        a.f.admin("PUT", "/consumers", Some(json!({"username": "jack"})))
            .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) =
        a.f.admin(
            "PUT",
            "/consumers/jack/credentials/c1",
            Some(json!({"plugins": {"key-auth": {"key": "jack-key"}}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // The key is encrypted at rest, as APISIX does for key-auth's consumer field.
    let raw = etcd.get("/apisix/consumers/jack/credentials/c1").unwrap();
    assert!(!raw.contains("jack-key"), "{raw}");
    let mut r = route("r", "/chat", &m);
    r["plugins"]["key-auth"] = json!({});
    let (s, _) = b.f.admin("PUT", "/routes/r", Some(r)).await;
    assert_eq!(s, 201);
    let call = |n: &Node| {
        let url = n.f.url("/chat");
        async move {
            send(
                "POST",
                &url,
                &[("content-type", "application/json"), ("apikey", "jack-key")],
                chat_body(),
            )
            .await
            .status
            .as_u16()
        }
    };
    until(&a, "/chat", 401).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&a).await != 200 || call(&b).await != 200 {
        assert!(
            Instant::now() < deadline,
            "the credential is not served on both nodes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Deleting the consumer on B deletes its credentials in the same transaction.
    let (s, _) = b.f.admin("DELETE", "/consumers/jack", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        etcd.ctl(&["get", "/apisix/consumers/jack", "--prefix", "--keys-only"]),
        ""
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&a).await != 401 {
        assert!(Instant::now() < deadline, "the deleted key still opens A");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Delete protection holds across nodes: a service used by a route written on A.
    let (s, _) =
        a.f.admin(
            "PUT",
            "/services/s1",
            Some(json!({"plugins": route("", "/", &m)["plugins"]})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) =
        a.f.admin(
            "PUT",
            "/routes/r2",
            Some(json!({"uri": "/r2", "service_id": "s1"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = b.f.admin("DELETE", "/services/s1", None).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error_msg"]
            .as_str()
            .unwrap()
            .contains("is still using it now"),
        "{v}"
    );
    // A route that names a missing service is refused on any node.
    let (s, v) =
        b.f.admin(
            "PUT",
            "/routes/r3",
            Some(json!({"uri": "/r3", "service_id": "nope"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn etcd_over_tls() {
    let ca = ferry_testkit::tls::TestCa::new(&["localhost", "127.0.0.1"]);
    let etcd = Etcd::start_tls(&ca);
    let m = mock().await;
    let dir = TempDir::new("cl-tls");
    std::fs::write(dir.0.join("ca.crt"), &ca.ca_pem).unwrap();
    let (port, admin) = (ferry_testkit::free_port(), ferry_testkit::free_port());
    let cfg = format!(
        "apisix:\n  node_listen:\n    - ip: 127.0.0.1\n      port: {port}\n  ssl:\n    ssl_trusted_certificate: ca.crt\n\
         deployment:\n  admin:\n    admin_key:\n      - name: admin\n        key: {}\n        role: admin\n    admin_listen:\n      ip: 127.0.0.1\n      port: {admin}\n  etcd:\n    host:\n      - {}\n    tls:\n      sni: localhost\n",
        ferry_testkit::TEST_KEY,
        etcd.endpoint()
    );
    std::fs::write(dir.0.join("config.yaml"), cfg).unwrap();
    let f = Ferry::spawn(BIN, &dir.0, port, admin, ferry_testkit::TEST_KEY.into());
    let n = Node { f, _dir: dir };
    let (s, v) =
        n.f.admin("PUT", "/routes/1", Some(route("1", "/chat", &m)))
            .await;
    assert_eq!(s, 201, "{v}");
    until(&n, "/chat", 200).await;
    assert!(etcd.get("/apisix/routes/1").is_some());
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn cross_resource_checks_hold_across_nodes() {
    let etcd = Etcd::start();
    let a = node("cl-guard-a", &etcd, "traditional", "/apisix");
    let b = node("cl-guard-b", &etcd, "traditional", "/apisix");
    // Ten consumers, one auth key, written at once through two nodes: exactly one keeps it.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let n = if i % 2 == 0 { &a } else { &b };
        let (url, key) = (n.f.admin_url("/consumers"), n.f.key.clone());
        let body = json!({"username": format!("u{i}"), "plugins": {"key-auth": {"key": "shared"}}});
        tasks.push(tokio::spawn(async move {
            let r = send(
                "PUT",
                &url,
                &[("x-api-key", key.as_str())],
                body.to_string(),
            )
            .await;
            (r.status.as_u16(), r.text())
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 201).count(),
        1,
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .filter(|(s, _)| *s != 201)
            .all(|(s, t)| *s == 400 && t.contains("duplicate key of plugin key-auth")),
        "{answers:?}"
    );
    // Six global rules with the same plugin at once: exactly one is stored.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let n = if i % 2 == 0 { &a } else { &b };
        let (url, key) = (
            n.f.admin_url(&format!("/global_rules/g{i}")),
            n.f.key.clone(),
        );
        let body = json!({"plugins": {"request-id": {}}});
        tasks.push(tokio::spawn(async move {
            send(
                "PUT",
                &url,
                &[("x-api-key", key.as_str())],
                body.to_string(),
            )
            .await
            .status
            .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 201).count(), 1, "{codes:?}");
    let (_, v) = a.f.admin("GET", "/global_rules", None).await;
    assert_eq!(v["total"], 1, "{v}");
}
