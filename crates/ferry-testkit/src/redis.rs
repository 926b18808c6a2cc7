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
        let bin = Redis::binary().expect(
            "redis-server not found: install it (apt-get install redis-server) or set FERRY_REDIS",
        );
        let port = crate::free_port();
        let child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
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
