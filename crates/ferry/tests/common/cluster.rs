//! Helpers for the cluster tests: Ferry nodes on a real etcd, a mock provider, routes to it,
//! and waiting until a node serves something.

use super::{BIN, JSON, chat_body};
use ferry_testkit::etcd::Etcd;
use ferry_testkit::mock::{Mock, MockConfig};
use ferry_testkit::{Ferry, Ports, TempDir, send};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub const NEEDS: &str =
    "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them";

pub struct Node {
    pub _dir: TempDir,
    pub f: Ferry,
}

pub fn deployment(etcd: &Etcd, role: &str, prefix: &str, more: &str) -> String {
    format!(
        "  role: {role}\n  role_{role}:\n    config_provider: etcd\n  etcd:\n    host:\n      - {}\n    prefix: {prefix}\n    timeout: 2\n{more}",
        etcd.endpoint()
    )
}

pub fn node(tag: &str, etcd: &Etcd, role: &str, prefix: &str) -> Node {
    node_with(tag, etcd, role, prefix, "")
}

pub fn node_with(tag: &str, etcd: &Etcd, role: &str, prefix: &str, more: &str) -> Node {
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

pub async fn mock() -> Mock {
    Mock::start(MockConfig {
        key: Some("token".into()),
        record: true,
        ..Default::default()
    })
    .await
}

pub fn route(id: &str, uri: &str, mock: &Mock) -> Value {
    json!({"id": id, "uri": uri, "plugins": {"ai-proxy": {
        "provider": "openai",
        "auth": {"header": {"Authorization": "Bearer token"}},
        "options": {"model": "gpt-4"},
        "override": {"endpoint": format!("{}/v1/chat/completions", mock.url())}
    }}})
}

pub async fn chat(n: &Node, uri: &str) -> u16 {
    send("POST", &n.f.url(uri), &JSON, chat_body())
        .await
        .status
        .as_u16()
}

/// Waits until `uri` on `n` answers `want` (bounded: a hang check, not a timing claim).
pub async fn until(n: &Node, uri: &str, want: u16) {
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

pub fn etcd_json(etcd: &Etcd, key: &str) -> Value {
    let out = etcd.ctl(&["get", key, "-w", "json"]);
    serde_json::from_str(&out).unwrap()
}
