//! A real `redis-server` for tests: started by hand on a free port (no persistence), stopped
//! by PID when dropped. Found through `FERRY_REDIS` or `PATH`.
#![allow(clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// The redis-server binary, if there is one.
    pub fn binary() -> Option<String> {
        if let Ok(p) = std::env::var("FERRY_REDIS") {
            return Some(p);
        }
        let ok = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| "redis-server".to_string())
    }

    /// Starts a server; panics with the reason when there is none (tests needing it are
    /// `#[ignore]`d unless asked for).
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// A server with extra arguments (e.g. `["--requirepass", "secret"]`).
    pub fn start_with(extra: &[&str]) -> Redis {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Redis::launch(move |port| {
            let mut a = vec!["--port".into(), port.to_string()];
            a.extend(extra.iter().cloned());
            a
        })
    }

    /// A server that speaks only TLS, with `ca`'s leaf certificate (files written to `dir`).
    pub fn start_tls(ca: &crate::tls::TestCa, dir: &std::path::Path) -> Redis {
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write tls file");
            p.display().to_string()
        };
        let (cert, key, ca_file) = (
            file("redis.crt", &ca.cert_pem),
            file("redis.key", &ca.key_pem),
            file("redis-ca.crt", &ca.ca_pem),
        );
        Redis::launch(move |port| {
            [
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca_file,
                "--tls-auth-clients",
                "no",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        })
    }

    fn launch(args: impl Fn(u16) -> Vec<String>) -> Redis {
        let bin = Redis::binary().expect(
            "redis-server not found: install it (apt-get install redis-server) or set FERRY_REDIS",
        );
        let port = crate::free_port();
        let child = Command::new(bin)
            .args(args(port))
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }

    /// Stops it now (a Redis outage).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
