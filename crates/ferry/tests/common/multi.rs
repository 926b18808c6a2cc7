//! A Ferry with several mock providers for the `ai-proxy-multi` tests, and an access log of
//! the variables a fallback changes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::BIN;
use ferry_testkit::mock::{Mock, MockConfig};
use ferry_testkit::{Ferry, Resp, TempDir, send};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub use super::JSON;
pub const LOG: &str = "$status|$balancer_ip|$upstream_addr|$upstream_status|$request_llm_model|$llm_model|$llm_total_tokens|$llm_provider";

pub struct Multi {
    pub dir: TempDir,
    pub ferry: Ferry,
    pub mocks: Vec<Mock>,
}

impl Multi {
    pub async fn start(tag: &str, mocks: usize, extra: &str) -> Multi {
        let mut ms = Vec::new();
        for _ in 0..mocks {
            ms.push(
                Mock::start(MockConfig {
                    key: Some("token".into()),
                    record: true,
                    ..Default::default()
                })
                .await,
            );
        }
        let dir = TempDir::new(tag);
        let cfg = format!(
            "nginx_config:\n  http:\n    access_log: logs/access.log\n    access_log_format: '{LOG}'\n    access_log_format_escape: none\n{extra}"
        );
        let ferry = Ferry::start(BIN, &dir.0, &cfg);
        Multi {
            dir,
            ferry,
            mocks: ms,
        }
    }

    /// An openai instance on mock `m` answering as `model`.
    pub fn instance(&self, name: &str, m: usize, model: &str) -> Value {
        json!({
            "name": name, "provider": "openai", "weight": 1,
            "auth": {"header": {"Authorization": "Bearer token"}},
            "options": {"model": model},
            "override": {"endpoint": format!("{}/v1/chat/completions", self.mocks[m].url())}
        })
    }

    pub async fn route(&self, id: &str, multi: Value) {
        self.route_with(
            json!({"id": id, "uri": format!("/{id}"), "plugins": {"ai-proxy-multi": multi}}),
        )
        .await;
    }

    pub async fn route_with(&self, route: Value) {
        let (s, v) = self.ferry.admin("PUT", "/routes", Some(route)).await;
        assert!(s == 200 || s == 201, "route refused: {v}");
    }

    pub async fn chat(&self, id: &str) -> Resp {
        send("POST", &self.ferry.url(&format!("/{id}")), &JSON, chat()).await
    }

    pub async fn stream(&self, id: &str) -> Resp {
        send("POST", &self.ferry.url(&format!("/{id}")), &JSON, stream()).await
    }

    /// Access-log line `n` (1-based), split on `|`.
    pub async fn log(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text =
                std::fs::read_to_string(self.dir.0.join("logs/access.log")).unwrap_or_default();
            if let Some(l) = text.lines().nth(n - 1) {
                return l.split('|').map(String::from).collect();
            }
            assert!(Instant::now() < deadline, "no log line {n}: {text}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn chat() -> String {
    json!({"model": "client-model", "messages": [{"role": "user", "content": "What is 1+1?"}]})
        .to_string()
}

pub fn stream() -> String {
    json!({"model": "client-model", "stream": true, "messages": [{"role": "user", "content": "What is 1+1?"}]})
        .to_string()
}

/// An Anthropic Messages stream request.
pub fn anthropic_stream() -> String {
    json!({"model": "claude", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string()
}

/// The model that answered (each instance sets its own `options.model`).
pub fn model(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["model"].as_str().unwrap_or_default().to_string()
}

/// An instance that answers every request with `status` (the mock's fault knob as a header).
pub fn failing(mut inst: Value, status: u16) -> Value {
    inst["auth"]["header"]["x-mock-status"] = json!(status.to_string());
    inst
}
