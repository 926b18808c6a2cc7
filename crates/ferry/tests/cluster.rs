//! Cluster mode on a real etcd: several Ferry nodes (traditional, control plane, data plane) on
//! one prefix, APISIX's key layout and values (encrypted secrets included), concurrent writers
//! across nodes, and the docs page run on three nodes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::chat_body;
use common::cluster::*;
use ferry_testkit::etcd::Etcd;
use ferry_testkit::send;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

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
