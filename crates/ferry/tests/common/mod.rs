//! Shared helpers for the `ai-proxy` integration tests: a gateway with an access log that
//! prints the LLM variables, and a mock provider.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod multi;

use ferry_testkit::mock::{Mock, MockConfig};
use ferry_testkit::{Ferry, TempDir};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// The access-log format the tests read: upstream and LLM variables, space-separated.
pub const LOG_FORMAT: &str = "$status|$upstream_addr|$upstream_status|$upstream_scheme://$upstream_host$upstream_uri|$request_type|$request_llm_model|$llm_model|$llm_time_to_first_token|$apisix_upstream_response_time|$llm_prompt_tokens|$llm_completion_tokens|$llm_total_tokens|$llm_stream|$llm_has_tool_calls|$llm_tool_count|$llm_end_user_id|$llm_cache_read_input_tokens|$llm_cache_creation_input_tokens|$llm_reasoning_tokens|$upstream_response_length|$body_bytes_sent|$consumer_name";

pub struct Env {
    pub dir: TempDir,
    pub ferry: Ferry,
    pub mock: Mock,
}

/// A parsed access-log line in [`LOG_FORMAT`].
#[derive(Debug)]
pub struct Line(pub Vec<String>);

impl Line {
    pub fn get(&self, name: &str) -> &str {
        let names: Vec<&str> = LOG_FORMAT.split('|').collect();
        let i = names
            .iter()
            .position(|n| n.trim_start_matches('$') == name || *n == name)
            .unwrap_or_else(|| panic!("no field {name}"));
        &self.0[i]
    }
}

impl Env {
    pub async fn start(tag: &str) -> Env {
        Env::with_extra(tag, "").await
    }

    pub async fn with_extra(tag: &str, extra: &str) -> Env {
        Env::with_sections(tag, "", extra).await
    }

    /// `ferry` lines (indented two spaces) join the `ferry:` section, `http` lines (four)
    /// `nginx_config.http`.
    pub async fn with_sections(tag: &str, ferry: &str, http: &str) -> Env {
        let mock = Mock::start(MockConfig {
            key: Some("token".into()),
            record: true,
            ..Default::default()
        })
        .await;
        let dir = TempDir::new(tag);
        let cfg = format!(
            "{ferry}nginx_config:\n  http:\n    access_log: logs/access.log\n    access_log_format: '{LOG_FORMAT}'\n    access_log_format_escape: none\n{http}"
        );
        let ferry = Ferry::start(BIN, &dir.0, &cfg);
        Env { dir, ferry, mock }
    }

    /// PUTs a route with an `ai-proxy` configuration; asserts success.
    pub async fn route(&self, id: &str, uri: &str, ai: Value) {
        self.route_with(json!({"id": id, "uri": uri, "plugins": {"ai-proxy": ai}}))
            .await;
    }

    pub async fn route_with(&self, route: Value) {
        let (s, v) = self.ferry.admin("PUT", "/routes", Some(route)).await;
        assert!(s == 200 || s == 201, "route refused: {v}");
    }

    /// An `ai-proxy` config for provider `p` pointed at the mock (`path` appended).
    pub fn ai(&self, provider: &str, path: &str) -> Value {
        json!({
            "provider": provider,
            "auth": {"header": {"Authorization": "Bearer token"}},
            "options": {"model": "gpt-4"},
            "override": {"endpoint": format!("{}{path}", self.mock.url())}
        })
    }

    pub fn url(&self, path: &str) -> String {
        self.ferry.url(path)
    }

    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.0.join("logs/access.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Waits for access-log line number `n` (1-based) and parses it.
    pub async fn log_line(&self, n: usize) -> Line {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.log_lines();
            if lines.len() >= n {
                return Line(lines[n - 1].split('|').map(String::from).collect());
            }
            assert!(
                Instant::now() < deadline,
                "no access-log line {n}: {lines:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The docs' chat request body.
pub fn chat_body() -> String {
    json!({"messages": [
        {"role": "system", "content": "You are a mathematician"},
        {"role": "user", "content": "What is 1+1?"}
    ]})
    .to_string()
}

pub const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

/// The ```shell blocks of a page, with their line numbers.
pub fn shell_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut cur {
            None if line.trim_start() == "```shell" => cur = Some((i + 1, String::new())),
            Some(_) if line.trim_start().starts_with("```") => out.extend(cur.take()),
            Some((_, b)) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

/// True when every command of the block is a request (no process started, nothing installed).
pub fn runnable(block: &str) -> bool {
    let mut continued = false;
    let mut in_quote = false;
    let mut commands = 0;
    for line in block.lines() {
        let t = line.trim();
        if !continued && !t.is_empty() && !t.starts_with('#') {
            commands += 1;
            if !(t.starts_with("curl ") || t.starts_with("admin_key=")) {
                return false;
            }
        }
        // A line ending in `\`, or inside an open `'...'` body, continues the command.
        in_quote ^= t.matches('\'').count() % 2 == 1;
        continued = in_quote || t.ends_with('\\');
    }
    commands > 0
}

/// Runs one docs shell block (ports already substituted) in `cwd` with `$admin_key` set;
/// asserts it succeeded and every request it made answered 2xx.
pub fn run_block(script: &str, cwd: &std::path::Path, key: &str, where_: &str) {
    let full = format!(
        "set -euo pipefail\ncurl() {{ command curl -w '\\n@@status %{{http_code}}\\n' \"$@\"; }}\n{script}"
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&full)
        .current_dir(cwd)
        .env("admin_key", key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let where_ = format!(
        "{where_}\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "example failed: {where_}");
    let statuses: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("@@status "))
        .collect();
    assert!(!statuses.is_empty(), "no request made: {where_}");
    for s in statuses {
        assert!(s.starts_with('2'), "answered {s}: {where_}");
    }
}
