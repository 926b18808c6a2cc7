//! Plain HTTP proxying to an upstream's nodes, for routes that no plugin answers: the
//! compiled upstream (nodes, balancer state, clients) and the per-route target that pairs it
//! with the route's timeouts. An upstream stored by id is compiled once per version and shared
//! by every route that names it, so its round-robin position survives unrelated writes.

mod balancer;
mod proxy;

pub use balancer::Balancer;
pub use proxy::forward;

use ferry_config::upstream::{Balancer as BalancerKind, PassHost, Timeouts, UpstreamConf};
use ferry_core::hash_key::KeySource;
use ferry_core::transport::{ClientKey, Transport, Upstream};
use http::StatusCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Distinct TLS server names kept per upstream (`pass_host: pass` with `scheme: https`).
const SNI_CLIENTS: usize = 64;

/// A compiled upstream.
pub struct UpstreamRt {
    pub conf: UpstreamConf,
    pub balancer: Balancer,
    /// Each node's `host:port`, parsed once.
    pub authorities: Vec<http::uri::Authority>,
    pub key: Option<KeySource>,
    transport: Arc<Transport>,
    /// Clients by settings (connect timeout, TLS server name), kept while the upstream lives.
    clients: Mutex<HashMap<ClientKey, Arc<Upstream>>>,
}

impl UpstreamRt {
    pub fn new(conf: UpstreamConf, transport: Arc<Transport>) -> Result<UpstreamRt, String> {
        let key = match &conf.balancer {
            BalancerKind::Chash(on) => Some(KeySource::compile(on)?),
            _ => None,
        };
        let authorities = conf
            .nodes
            .iter()
            .map(|n| {
                http::uri::Authority::try_from(n.authority())
                    .map_err(|e| format!("upstream node {}: {e}", n.authority()))
            })
            .collect::<Result<_, _>>()?;
        Ok(UpstreamRt {
            authorities,
            balancer: Balancer::new(conf.nodes.clone(), &conf.balancer),
            conf,
            key,
            transport,
            clients: Mutex::new(HashMap::new()),
        })
    }

    fn client_key(&self, connect: std::time::Duration, sni: Option<&str>) -> ClientKey {
        ClientKey {
            ssl_verify: self.conf.tls_verify,
            keepalive: true,
            keepalive_timeout_ms: self.conf.keepalive_pool.idle_timeout.as_millis() as u64,
            keepalive_pool: u64::from(self.conf.keepalive_pool.size),
            timeout_ms: connect.as_millis().max(1) as u64,
            connect_timeout_ms: Some(connect.as_millis().max(1) as u64),
            sni: sni.map(Arc::from),
        }
    }

    /// The client for a connect timeout and TLS server name.
    pub fn client(
        &self,
        connect: std::time::Duration,
        sni: Option<&str>,
    ) -> Result<Arc<Upstream>, String> {
        let key = self.client_key(connect, sni.filter(|_| self.conf.https));
        let mut map = self
            .clients
            .lock()
            .map_err(|_| "upstream client cache poisoned".to_string())?;
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        if map.len() >= SNI_CLIENTS {
            map.clear();
        }
        let c = self.transport.client(key.clone())?;
        map.insert(key, c.clone());
        Ok(c)
    }
}

/// Where a route without an answering plugin sends its requests.
pub enum Target {
    /// Proxy to this upstream with the route's effective timeouts.
    Upstream {
        up: Arc<UpstreamRt>,
        timeouts: Timeouts,
        /// The client when the server name does not vary per request.
        fixed: Option<Arc<Upstream>>,
    },
    /// No usable upstream: answer with this status and message.
    Fail(StatusCode, String),
}

impl Target {
    pub fn new(up: Arc<UpstreamRt>, route_timeout: Option<Timeouts>) -> Result<Target, String> {
        let timeouts = route_timeout.or(up.conf.timeout).unwrap_or_default();
        let per_request = up.conf.https && up.conf.pass_host == PassHost::Pass;
        // An upstream with no nodes (ADC's placeholder) never connects: no client for it.
        let fixed = if per_request || up.balancer.is_empty() {
            None
        } else {
            let sni = match &up.conf.pass_host {
                PassHost::Rewrite(h) => Some(ferry_core::ctx::strip_port(h).to_string()),
                _ => None,
            };
            Some(up.client(timeouts.connect, sni.as_deref())?)
        };
        Ok(Target::Upstream {
            up,
            timeouts,
            fixed,
        })
    }
}
