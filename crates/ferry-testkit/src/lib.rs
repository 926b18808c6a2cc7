#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Test support shared by Ferry's integration tests and benchmarks: start the real `ferry`
//! binary on ephemeral ports with a temporary data dir, and a small HTTP client for the data
//! plane and the Admin API. Everything it starts is stopped by PID when dropped.

pub mod echo;
pub mod etcd;
pub mod gcp;
pub mod mock;
pub mod redis;
pub mod tansu;
pub mod tls;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("ferry-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `ferry serve`.
pub struct Ferry {
    pub child: Child,
    pub port: u16,
    pub admin_port: u16,
    /// The Prometheus export port, when the config set one.
    pub metrics_port: Option<u16>,
    pub dir: PathBuf,
    pub key: String,
    /// Everything the process wrote to stderr so far.
    pub stderr: Arc<Mutex<String>>,
    /// The ports it is expected to open.
    pub ports: Ports,
}

/// Which ports a node opens (a control plane has no data port, a data plane no Admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    Both,
    Data,
    Admin,
}

/// The admin key the test configs use.
pub const TEST_KEY: &str = "test-admin-key-0123456789";

impl Ferry {
    /// Writes `dir/config.yaml` (ports, data dir, admin key, access log, then `extra` YAML
    /// appended under the top level) and starts `ferry serve` in `dir`.
    pub fn start(bin: &str, dir: &Path, extra: &str) -> Ferry {
        Ferry::start_node(bin, dir, "", extra, Ports::Both)
    }

    /// Like [`Ferry::start`], with `deployment` lines (indented two spaces, e.g. a role and an
    /// `etcd` section) and the ports this node is expected to open.
    /// `extra` may have an `apisix:` section of its own: its keys join the generated one.
    pub fn start_node(bin: &str, dir: &Path, deployment: &str, extra: &str, ports: Ports) -> Ferry {
        // A port picked free can be taken by a parallel test before Ferry binds it: retry.
        for attempt in 0.. {
            let port = free_port();
            let admin_port = free_port();
            let metrics_port = free_port();
            let (apisix_extra, extra) = split_apisix(extra);
            // No TLS listener on the default port 9443 (tests run side by side) unless the
            // test sets its own.
            let apisix_extra = if apisix_extra.contains("\n    listen:")
                || apisix_extra.contains("\n    enable:")
            {
                apisix_extra
            } else if apisix_extra.starts_with("  ssl:\n") || apisix_extra.contains("\n  ssl:\n") {
                apisix_extra.replacen("  ssl:\n", "  ssl:\n    enable: false\n", 1)
            } else {
                format!("{apisix_extra}  ssl:\n    enable: false\n")
            };
            let cfg = format!(
                "apisix:\n  node_listen:\n    - ip: 127.0.0.1\n      port: {port}\n{apisix_extra}\
                 plugin_attr:\n  prometheus:\n    export_addr:\n      ip: 127.0.0.1\n      port: {metrics_port}\n\
                 deployment:\n  admin:\n    admin_key:\n      - name: admin\n        key: {TEST_KEY}\n        role: admin\n\
                 \x20     - name: viewer\n        key: viewer-key\n        role: viewer\n\
                 \x20   admin_listen:\n      ip: 127.0.0.1\n      port: {admin_port}\n\
                 {deployment}\
                 ferry:\n  data_dir: {}\n  drain_timeout_ms: 3000\n{extra}",
                dir.join("data").display()
            );
            std::fs::write(dir.join("config.yaml"), cfg).expect("write config");
            let mut f = Self::launch(bin, dir, port, admin_port, TEST_KEY.to_string());
            f.ports = ports;
            match f.wait_listening() {
                Ok(()) => {
                    f.metrics_port = Some(metrics_port);
                    return f;
                }
                Err(e) if attempt < 3 && e.contains("cannot listen") => continue,
                Err(e) => panic!("ferry did not start: {e}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Starts `ferry serve --config dir/config.yaml` with a config already written.
    pub fn spawn(bin: &str, dir: &Path, port: u16, admin_port: u16, key: String) -> Ferry {
        let mut f = Self::launch(bin, dir, port, admin_port, key);
        if let Err(e) = f.wait_listening() {
            panic!("ferry did not start: {e}");
        }
        f
    }

    /// Starts `ferry serve` with a config already written, without waiting for its ports
    /// (a node that waits for etcd keeps them closed).
    pub fn spawn_unchecked(bin: &str, dir: &Path, port: u16) -> Ferry {
        let mut f = Self::launch(bin, dir, port, 0, TEST_KEY.to_string());
        f.ports = Ports::Data;
        f
    }

    fn launch(bin: &str, dir: &Path, port: u16, admin_port: u16, key: String) -> Ferry {
        // `ferry.env` next to config.yaml: KEY=VALUE lines for the process's environment.
        let env: Vec<(String, String)> = std::fs::read_to_string(dir.join("ferry.env"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(dir.join("config.yaml"))
            .envs(env)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferry");
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            });
        }
        Ferry {
            child,
            port,
            admin_port,
            metrics_port: None,
            dir: dir.to_path_buf(),
            key,
            stderr,
            ports: Ports::Both,
        }
    }

    /// Waits until its ports accept; the stderr text when the process exits or 10 s pass.
    pub fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let accepts = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
        while Instant::now() < deadline {
            if (self.ports == Ports::Admin || accepts(self.port))
                && (self.ports == Ports::Data || accepts(self.admin_port))
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(50)); // let the reader catch up
                return Err(format!("exited with {status}: {}", self.stderr_text()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(format!("not listening after 10 s: {}", self.stderr_text()))
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stderr once it contains `needle` (the reader thread may lag the listening sockets).
    pub fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.stderr_text();
            if text.contains(needle) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/apisix/admin{path}", self.admin_port)
    }

    /// An Admin API call with the admin key; returns status and JSON body.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let r = send(
            method,
            &self.admin_url(path),
            &[("x-api-key", self.key.as_str())],
            body.map(|b| b.to_string()).unwrap_or_default(),
        )
        .await;
        (r.status, r.json())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait ferry")
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// A response, fully read.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// What arrived (up to the failure, when the transfer was cut).
    pub body: Bytes,
    /// The body did not end cleanly: the server cut it (reset, incomplete chunked encoding).
    pub aborted: bool,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one HTTP/1.1 request.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    send_with(&client(false), method, url, headers, body.into()).await
}

/// Sends one request over cleartext HTTP/2 (prior knowledge).
pub async fn send_h2(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    send_with(&client(true), method, url, headers, body.into()).await
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled client; `h2` selects HTTP/2 with prior knowledge.
pub fn client(h2: bool) -> HttpClient {
    let mut b = Client::builder(TokioExecutor::new());
    if h2 {
        b.http2_only(true);
    }
    b.build_http()
}

pub async fn send_with(
    c: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Resp {
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).expect("request");
    let resp = c.request(req).await.expect("send request");
    let (parts, mut body) = resp.into_parts();
    let mut buf = Vec::new();
    let mut aborted = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    buf.extend_from_slice(d);
                }
            }
            Err(_) => {
                aborted = true;
                break;
            }
        }
    }
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: Bytes::from(buf),
        aborted,
    }
}

/// Splits the lines of a top-level `apisix:` section out of `extra` (its indented keys), so
/// they can join the `apisix:` section a test node's config already has.
fn split_apisix(extra: &str) -> (String, String) {
    let (mut inside, mut apisix, mut rest) = (false, String::new(), String::new());
    for line in extra.lines() {
        if line == "apisix:" {
            inside = true;
            continue;
        }
        if inside && line.starts_with(' ') {
            apisix.push_str(line);
            apisix.push('\n');
            continue;
        }
        inside = false;
        rest.push_str(line);
        rest.push('\n');
    }
    (apisix, rest)
}
