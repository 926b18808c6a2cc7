//! The ADC tabs of the documentation with the real ADC CLI (`adc`, APISIX's declarative
//! client): ping, sync of every seed tab, a chat request through each synced route against the
//! mock provider (the documentation's provider hosts resolved to it over TLS), diff right after
//! a sync, dump and diff of the dump, a re-sync that deletes a route, a refused sync, and the
//! `apisix-standalone` backend across a restart. Needs the CLI: `FERRY_ADC=/path/to/adc`
//! (`.ci/run` sets it); without it these tests are ignored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BIN, JSON, chat_body};
use ferry_testkit::mock::{Mock, MockConfig};
use ferry_testkit::{Ferry, TEST_KEY, TempDir, free_port, send};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const HOSTS: [&str; 4] = [
    "api.openai.com",
    "api.deepseek.com",
    "api.anthropic.com",
    "api7-azure-openai.openai.azure.com",
];

fn adc_bin() -> String {
    std::env::var("FERRY_ADC")
        .expect("FERRY_ADC must name the ADC CLI (see ../shared/tools/adc; .ci/run sets it)")
}

fn seed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/adc")
        .join(name)
}

/// A Ferry whose provider hosts go to one TLS mock; `deployment` adds keys under `deployment`
/// (a config provider).
async fn start(tag: &str, deployment: &str) -> (TempDir, Ferry, Mock, u16, u16) {
    let (mock, ca) = Mock::start_tls(
        MockConfig {
            key: Some("token".into()),
            record: true,
            ..Default::default()
        },
        &HOSTS,
    )
    .await;
    let dir = TempDir::new(tag);
    std::fs::write(dir.0.join("ca.pem"), ca).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let resolve: String = HOSTS
        .iter()
        .map(|h| format!("    {h}: {}\n", mock.addr))
        .collect();
    let provider = deployment;
    let cfg = format!(
        "plugin_attr:\n  prometheus:\n    enable_export_server: false\napisix:\n  node_listen: [{{ip: 127.0.0.1, port: {port}}}]\n  ssl:\n    enable: false\n    ssl_trusted_certificate: ca.pem\n\
         deployment:\n{provider}  admin:\n    admin_key: [{{name: admin, key: {TEST_KEY}, role: admin}}]\n    admin_listen: {{ip: 127.0.0.1, port: {admin_port}}}\n\
         ferry:\n  resolve:\n{resolve}"
    );
    std::fs::write(dir.0.join("config.yaml"), cfg).unwrap();
    let f = Ferry::spawn(BIN, &dir.0, port, admin_port, TEST_KEY.into());
    (dir, f, mock, port, admin_port)
}

struct Adc {
    server: String,
    cwd: PathBuf,
    backend: &'static str,
}

impl Adc {
    /// Runs `adc <args>` with the provider keys the seed files reference; returns (ok, output).
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(adc_bin())
            .args(args)
            .args([
                "--server",
                &self.server,
                "--token",
                TEST_KEY,
                "--backend",
                self.backend,
            ])
            .current_dir(&self.cwd)
            .env("OPENAI_API_KEY", "token")
            .env("DEEPSEEK_API_KEY", "token")
            .env("AZ_OPENAI_API_KEY", "token")
            .env("ANTHROPIC_API_KEY", "token")
            .env("BACKEND_API_KEY", "token")
            .env("NO_COLOR", "1")
            .output()
            .expect("run adc");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.run(args);
        assert!(ok, "adc {args:?} failed:\n{text}");
        text
    }

    /// `adc diff -f file`: the changes ADC would make (it writes them to diff.yaml).
    fn diff(&self, file: &Path) -> String {
        let _ = std::fs::remove_file(self.cwd.join("diff.yaml"));
        self.ok(&["diff", "-f", file.to_str().unwrap()]);
        std::fs::read_to_string(self.cwd.join("diff.yaml"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

/// Sends the seed's request for a tab and returns the status.
async fn request(f: &Ferry, tab: &str) -> u16 {
    let (path, body) = match tab {
        "embeddings.yaml" => (
            "/embeddings",
            json!({"input": "Write me a 50-word introduction for Apache APISIX."}).to_string(),
        ),
        "anthropic-convert.yaml" => (
            "/v1/messages",
            json!({"model": "x", "max_tokens": 64, "messages": [{"role": "user", "content": "What is 1+1?"}]})
                .to_string(),
        ),
        "multi-model.yaml" => (
            "/anything",
            json!({"model": "openai", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        ),
        _ => ("/anything", chat_body()),
    };
    let r = send("POST", &f.url(path), &JSON, body).await;
    assert_eq!(r.status, 200, "{tab}: {}", r.text());
    r.status.as_u16()
}

#[tokio::test]
#[ignore = "needs the ADC CLI: set FERRY_ADC (.ci/run does)"]
async fn every_seed_tab_syncs_and_serves() {
    seed_tabs(start("adc-seed", "").await).await;
}

#[tokio::test]
#[ignore = "needs the ADC CLI and etcd: set FERRY_ADC, FERRY_ETCD, FERRY_ETCDCTL (.ci/run does)"]
async fn every_seed_tab_syncs_into_etcd() {
    let etcd = ferry_testkit::etcd::Etcd::start();
    let deployment = format!("  etcd:\n    host: [\"{}\"]\n", etcd.endpoint());
    seed_tabs(start("adc-etcd", &deployment).await).await;
    // What ADC wrote is in etcd under APISIX's keys.
    let keys = etcd.ctl(&["get", "/apisix/services/", "--prefix", "--keys-only"]);
    assert_eq!(
        keys.lines()
            .filter(|l| !l.is_empty() && !l.ends_with('/'))
            .count(),
        1,
        "{keys}"
    );
}

async fn seed_tabs((dir, f, mock, _, admin_port): (TempDir, Ferry, Mock, u16, u16)) {
    let adc = Adc {
        server: format!("http://127.0.0.1:{admin_port}"),
        cwd: dir.0.clone(),
        backend: "apisix",
    };
    assert!(adc.ok(&["ping"]).contains("successfully"));
    for tab in [
        "openai.yaml",
        "deepseek.yaml",
        "azure-openai.yaml",
        "embeddings.yaml",
        "anthropic.yaml",
        "anthropic-convert.yaml",
        "logging.yaml",
        "multi-model.yaml",
    ] {
        let file = seed(tab);
        adc.ok(&["sync", "-f", file.to_str().unwrap()]);
        assert_eq!(
            adc.diff(&file),
            "[]",
            "{tab}: nothing to change right after a sync"
        );
        assert_eq!(request(&f, tab).await, 200);
        let up = mock.last().unwrap();
        assert!(
            up.header("authorization") == Some("Bearer token")
                || up.header("x-api-key") == Some("token")
                || up.header("api-key") == Some("token"),
            "{tab}: the ${{VAR}} key reached the provider"
        );
        // Each sync reconciles every service: only this tab's service is left.
        let (_, v) = f.admin("GET", "/services", None).await;
        assert_eq!(v["total"], 1, "{tab}: {v}");
    }

    // dump reproduces the configuration: diffing the dump reports nothing
    adc.ok(&["dump", "-o", "dump.yaml"]);
    let dumped = std::fs::read_to_string(dir.0.join("dump.yaml")).unwrap();
    assert!(
        dumped.contains("deepseek-route") && dumped.contains("post_arg.model"),
        "{dumped}"
    );
    assert_eq!(adc.diff(&dir.0.join("dump.yaml")), "[]");

    // a route removed from the file is deleted by the next sync
    let deepseek = json!({"model": "deepseek", "messages": [{"role": "user", "content": "hi"}]});
    let r = send("POST", &f.url("/anything"), &JSON, deepseek.to_string()).await;
    assert_eq!(r.status, 200);
    let text = std::fs::read_to_string(seed("multi-model.yaml")).unwrap();
    let cut = text.find("      - name: deepseek-route").unwrap();
    std::fs::write(dir.0.join("one-route.yaml"), &text[..cut]).unwrap();
    adc.ok(&["sync", "-f", "one-route.yaml"]);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let r = send("POST", &f.url("/anything"), &JSON, deepseek.to_string()).await;
        if r.status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "route still served: {}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // a sync Ferry refuses fails with Ferry's error_msg
    std::fs::write(
        dir.0.join("bad.yaml"),
        text.replace("ai-proxy:", "no-such-plugin:"),
    )
    .unwrap();
    let (ok, out) = adc.run(&["sync", "-f", "bad.yaml"]);
    assert!(!ok, "{out}");
    assert!(out.contains("unknown plugin [no-such-plugin]"), "{out}");
}

#[tokio::test]
#[ignore = "needs the ADC CLI: set FERRY_ADC (.ci/run does)"]
async fn standalone_backend_survives_a_restart() {
    let (dir, mut f, _mock, port, admin_port) = start(
        "adc-standalone",
        "  role: traditional\n  role_traditional:\n    config_provider: yaml\n",
    )
    .await;
    let adc = Adc {
        server: format!("http://127.0.0.1:{admin_port}"),
        cwd: dir.0.clone(),
        backend: "apisix-standalone",
    };
    // ADC's standalone client needs every service to have an upstream (its own bug).
    let text = std::fs::read_to_string(seed("openai.yaml")).unwrap().replace(
        "    routes:",
        "    upstream:\n      nodes:\n        - host: 127.0.0.1\n          port: 1980\n          weight: 1\n    routes:",
    );
    std::fs::write(dir.0.join("standalone.yaml"), text).unwrap();
    adc.ok(&["sync", "-f", "standalone.yaml"]);
    assert_eq!(request(&f, "openai.yaml").await, 200);
    assert_eq!(adc.diff(&dir.0.join("standalone.yaml")), "[]");
    // the document is kept across a restart
    assert_eq!(f.terminate().code(), Some(0));
    let f = Ferry::spawn(BIN, &dir.0, port, admin_port, TEST_KEY.into());
    assert_eq!(request(&f, "openai.yaml").await, 200);
    assert_eq!(adc.diff(&dir.0.join("standalone.yaml")), "[]");
}
