//! Upstream HTTP clients: one pooled client per distinct (TLS verification, keep-alive,
//! timeout) setting, shared by every route that uses it and made at config load. Extra trusted
//! CAs (`apisix.ssl.ssl_trusted_certificate`) and host overrides (`ferry.resolve`) apply to all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// The settings that make two routes need different clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub ssl_verify: bool,
    pub keepalive: bool,
    pub keepalive_timeout_ms: u64,
    pub keepalive_pool: u64,
    pub timeout_ms: u64,
}

/// Builds and caches upstream clients.
#[derive(Default)]
pub struct Transport {
    trusted: Vec<reqwest::Certificate>,
    resolve: Vec<(String, SocketAddr)>,
    clients: Mutex<HashMap<ClientKey, reqwest::Client>>,
}

impl Transport {
    /// `trusted_ca`: a PEM bundle of extra CAs; `resolve`: host → address overrides.
    pub fn new(
        trusted_ca: Option<&Path>,
        resolve: Vec<(String, SocketAddr)>,
    ) -> Result<Transport, String> {
        let trusted = match trusted_ca {
            Some(p) => {
                let pem = std::fs::read(p).map_err(|e| {
                    format!(
                        "apisix.ssl.ssl_trusted_certificate: cannot read {}: {e}",
                        p.display()
                    )
                })?;
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    format!("apisix.ssl.ssl_trusted_certificate: {}: {e}", p.display())
                })?
            }
            None => Vec::new(),
        };
        Ok(Transport {
            trusted,
            resolve,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The client for these settings (built once).
    pub fn client(&self, key: ClientKey) -> Result<reqwest::Client, String> {
        let mut map = self
            .clients
            .lock()
            .map_err(|_| "transport lock poisoned".to_string())?;
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let timeout = Duration::from_millis(key.timeout_ms);
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_millis(key.keepalive_timeout_ms))
            .pool_max_idle_per_host(if key.keepalive {
                key.keepalive_pool as usize
            } else {
                0
            })
            .tls_danger_accept_invalid_certs(!key.ssl_verify);
        if !self.trusted.is_empty() {
            b = b.tls_certs_merge(self.trusted.iter().cloned());
        }
        for (host, addr) in &self.resolve {
            b = b.resolve(host, *addr);
        }
        let c = b
            .build()
            .map_err(|e| format!("cannot build the upstream client: {e}"))?;
        map.insert(key, c.clone());
        Ok(c)
    }
}
