//! A real single-member `etcd` for tests: started by hand on free ports with its own data dir,
//! killed and restarted by PID (same ports, same data), and `etcdctl` against it. Found through
//! `FERRY_ETCD` / `FERRY_ETCDCTL` or `PATH`.
#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Etcd {
    child: Option<Child>,
    pub port: u16,
    peer_port: u16,
    dir: crate::TempDir,
    extra: Vec<String>,
    /// The CA file clients must trust, when the member speaks TLS.
    pub ca_file: Option<PathBuf>,
    /// `user:password` for etcdctl once auth is on.
    pub auth: Option<String>,
}

fn found(var: &str, name: &str, probe: &str) -> Option<String> {
    if let Ok(p) = std::env::var(var) {
        return Some(p);
    }
    let ok = Command::new(name)
        .arg(probe)
        .env("ETCDCTL_API", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| name.to_string())
}

impl Etcd {
    /// The etcd binary, if there is one.
    pub fn binary() -> Option<String> {
        found("FERRY_ETCD", "etcd", "--version")
    }

    fn ctl_binary() -> String {
        found("FERRY_ETCDCTL", "etcdctl", "version")
            .expect("etcdctl not found: install etcd-client or set FERRY_ETCDCTL")
    }

    /// Starts a member; panics with the reason when etcd is missing (tests needing it are
    /// `#[ignore]`d unless asked for).
    pub fn start() -> Etcd {
        Etcd::start_with(&[])
    }

    /// A member with extra flags (e.g. `--auto-compaction-retention`).
    pub fn start_with(extra: &[&str]) -> Etcd {
        let mut e = Etcd {
            child: None,
            port: crate::free_port(),
            peer_port: crate::free_port(),
            dir: crate::TempDir::new("etcd"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            ca_file: None,
            auth: None,
        };
        e.launch();
        e
    }

    /// A member that serves clients over TLS only, with `ca`'s leaf certificate.
    pub fn start_tls(ca: &crate::tls::TestCa) -> Etcd {
        let mut e = Etcd {
            child: None,
            port: crate::free_port(),
            peer_port: crate::free_port(),
            dir: crate::TempDir::new("etcd-tls"),
            extra: Vec::new(),
            ca_file: None,
            auth: None,
        };
        let file = |name: &str, text: &str| {
            let p = e.dir.0.join(name);
            std::fs::write(&p, text).expect("write tls file");
            p
        };
        let (cert, key, ca_file) = (
            file("etcd.crt", &ca.cert_pem),
            file("etcd.key", &ca.key_pem),
            file("ca.crt", &ca.ca_pem),
        );
        e.extra = vec![
            "--cert-file".into(),
            cert.display().to_string(),
            "--key-file".into(),
            key.display().to_string(),
        ];
        e.ca_file = Some(ca_file);
        e.launch();
        e
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.ca_file.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// etcdctl's connection flags for this member.
    fn ctl_flags(&self) -> Vec<String> {
        let mut f = vec!["--endpoints".to_string(), self.endpoint()];
        if let Some(ca) = &self.ca_file {
            f.push(format!("--cacert={}", ca.display()));
        }
        if let Some(a) = &self.auth {
            f.push(format!("--user={a}"));
        }
        f
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    fn launch(&mut self) {
        let bin = Etcd::binary()
            .expect("etcd not found: install it (apt-get install etcd-server) or set FERRY_ETCD");
        let client = self.endpoint();
        let flags = self.ctl_flags();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.0.join("etcd.log")).expect("etcd log");
        let child = Command::new(bin)
            .args(["--name", "ferry-test", "--data-dir"])
            .arg(self.data_dir())
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("ferry-test={peer}")])
            .args(&self.extra)
            .env("ETCD_UNSUPPORTED_ARCH", "amd64")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = Command::new(Etcd::ctl_binary())
                .args(&flags)
                .args(["--command-timeout=1s", "endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy: {}",
                std::fs::read_to_string(self.dir.0.join("etcd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` (the data stays for [`Etcd::restart`]).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Runs `etcdctl <args>` against this member; its stdout (panics on failure).
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(Etcd::ctl_binary())
            .args(self.ctl_flags())
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The value at `key` (`None` when absent).
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.ctl(&["get", key, "--print-value-only"]);
        let v = out.trim_end_matches('\n');
        (!out.is_empty()).then(|| v.to_string())
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        let out = self.ctl(&[
            "get",
            "/",
            "--prefix",
            "--keys-only",
            "--limit=1",
            "-w",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
        v["header"]["revision"].as_u64().expect("revision")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
