//! One etcd client per endpoint, used one at a time: calls go to the endpoint that answered
//! last and move on to the next one when it fails, so a dead member of the cluster costs one
//! failed attempt, not a share of every call (a balanced channel would keep sending it some).
//! Clients are created on first use, so an endpoint that is down at start-up (or rejects the
//! credentials) does not stop the others.

use crate::store::describe;
use etcd_client::{Client, ConnectOptions};
use ferry_config::store::StoreError;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct Pool {
    hosts: Vec<String>,
    opts: ConnectOptions,
    slots: Mutex<Vec<Option<Client>>>,
    current: AtomicUsize,
    timeout: Duration,
}

impl Pool {
    pub(crate) fn new(hosts: Vec<String>, opts: ConnectOptions, timeout: Duration) -> Pool {
        let n = hosts.len();
        Pool {
            hosts,
            opts,
            slots: Mutex::new(vec![None; n]),
            current: AtomicUsize::new(0),
            timeout,
        }
    }

    /// Makes endpoint `i` the first one tried.
    pub(crate) fn prefer(&self, i: usize) {
        self.current
            .store(i % self.hosts.len().max(1), Ordering::Relaxed);
    }

    pub(crate) fn host(&self, i: usize) -> &str {
        &self.hosts[i % self.hosts.len()]
    }

    /// The client of endpoint `i`, connecting (and authenticating) on first use.
    pub(crate) async fn client(&self, i: usize) -> Result<Client, etcd_client::Error> {
        if let Some(c) = self
            .slots
            .lock()
            .ok()
            .and_then(|s| s.get(i).cloned().flatten())
        {
            return Ok(c);
        }
        let c = Client::connect([self.hosts[i].as_str()], Some(self.opts.clone())).await?;
        if let Ok(mut s) = self.slots.lock()
            && let Some(slot) = s.get_mut(i)
        {
            *slot = Some(c.clone());
        }
        Ok(c)
    }

    /// The endpoint to use now and its client (for the watch).
    pub(crate) async fn current(&self) -> (usize, Result<Client, etcd_client::Error>) {
        let i = self.current.load(Ordering::Relaxed) % self.hosts.len();
        (i, self.client(i).await)
    }

    /// After endpoint `i` failed: the next one becomes current (unless someone moved on
    /// already).
    pub(crate) fn failed(&self, i: usize) {
        let n = self.hosts.len();
        let _ = self
            .current
            .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Runs one call, trying each endpoint once from the current one, all within `timeout`.
    pub(crate) async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.timeout;
        let n = self.hosts.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut last = String::from("no endpoint tried");
        for k in 0..n {
            let i = (start + k) % n;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let attempt = async {
                let c = self.client(i).await?;
                f(c).await
            };
            match tokio::time::timeout(left, attempt).await {
                Ok(Ok(v)) => {
                    self.prefer(i);
                    return Ok(v);
                }
                Ok(Err(e)) => {
                    last = describe(&e);
                    if n > 1 {
                        tracing::debug!(endpoint = %self.hosts[i], "etcd call failed: {last}");
                    }
                }
                Err(_) => {
                    last = format!(
                        "no answer within {} s (deployment.etcd.timeout)",
                        self.timeout.as_secs()
                    );
                }
            }
            self.failed(i);
        }
        Err(StoreError::Unavailable(last))
    }
}
