//! Route matching: exact and prefix (`/path*`) URIs indexed by hash, then host, method,
//! remote address and `vars`, in APISIX's order: highest `priority` first, then routes bound
//! to a host, then the most specific URI (exact before the longest prefix), then oldest.
//! The table is updated route by route (see [`UriIndex`]) and cloned cheaply per snapshot.

use crate::upstream::Target;
use crate::uri_index::UriIndex;
use ferry_config::Expr;
use ferry_core::consumer::Consumer;
use ferry_core::ctx::{Ctx, RouteInfo};
use ferry_core::plugin::{Chain, Registry};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// A host pattern: exact, or `*.example.com` (any depth of subdomain).
#[derive(Debug, Clone)]
pub enum HostPat {
    Exact(String),
    /// Stored with its leading dot: `.example.com`.
    Suffix(String),
}

impl HostPat {
    pub fn parse(s: &str) -> HostPat {
        let s = s.to_ascii_lowercase();
        match s.strip_prefix('*') {
            Some(rest) => HostPat::Suffix(rest.to_string()),
            None => HostPat::Exact(s),
        }
    }

    /// How specifically this pattern matches `host`: `None` when it does not, an exact
    /// host above any wildcard, a longer wildcard above a shorter one.
    fn score(&self, host: &str) -> Option<u32> {
        match self {
            HostPat::Exact(h) => (h == host).then_some(u32::MAX),
            HostPat::Suffix(s) => {
                (host.len() > s.len() && host.ends_with(s.as_str())).then_some(s.len() as u32 + 1)
            }
        }
    }
}

/// A compiled route, ready for matching and running.
pub struct Route {
    /// What plugins and logs see of the route.
    pub info: Arc<RouteInfo>,
    pub priority: i64,
    pub uris: Vec<String>,
    /// Bit per method (see [`method_bit`]); 0 means any.
    pub methods: u16,
    pub hosts: Vec<HostPat>,
    pub remote_addrs: Vec<IpNet>,
    pub vars: Expr,
    pub chain: Arc<Chain>,
    /// The route's merged plugins (global rules, service, plugin config, route), kept to
    /// merge a consumer's over them.
    pub plugins: serde_json::Map<String, serde_json::Value>,
    /// The route's chain merged with each consumer's plugins, built on a consumer's first
    /// request and rebuilt when that consumer changes.
    pub consumer_chains: ConsumerChains,
    /// Where requests go when no plugin answers them.
    pub target: Target,
    /// Creation order, the last tie-breaker.
    pub seq: u64,
}

/// A consumer's merged chain, with the consumer version it was built for.
type ConsumerChain = (Arc<Consumer>, Arc<Chain>);

/// Per-consumer chains of one route.
#[derive(Default)]
pub struct ConsumerChains(std::sync::Mutex<std::collections::HashMap<String, ConsumerChain>>);

/// Consumers whose merged chains a route keeps; past this the cache starts over.
const CONSUMER_CHAINS: usize = 4096;

impl Route {
    /// The chain for requests of `consumer`: the route's plugins overlaid with the consumer's
    /// (consumer > consumer group > route, whole configurations), built once per consumer
    /// version; instances whose configuration did not change are kept.
    pub fn consumer_chain(
        &self,
        consumer: &Arc<Consumer>,
        registry: &Registry,
    ) -> Result<Arc<Chain>, String> {
        let mut map = self
            .consumer_chains
            .0
            .lock()
            .map_err(|_| "consumer chain cache poisoned".to_string())?;
        let prev = match map.get(&consumer.username) {
            Some((c, chain)) if Arc::ptr_eq(c, consumer) => return Ok(chain.clone()),
            Some((_, chain)) => Some(chain.clone()),
            None => None,
        };
        let mut plugins = self.plugins.clone();
        for (k, v) in &consumer.plugins {
            plugins.insert(k.clone(), v.clone());
        }
        let chain = Arc::new(registry.build_chain(
            &plugins,
            &self.info,
            prev.as_deref().or(Some(&self.chain)),
        )?);
        if map.len() >= CONSUMER_CHAINS {
            map.clear();
        }
        map.insert(consumer.username.clone(), (consumer.clone(), chain.clone()));
        Ok(chain)
    }

    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// True when matching this route reads the request body (`post_arg.*` in `vars`).
    pub fn needs_body(&self) -> bool {
        self.vars.needs_body()
    }
}

const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

/// The bit of a method in [`Route::methods`]; unknown methods get none.
pub fn method_bit(m: &str) -> u16 {
    METHODS.iter().position(|x| *x == m).map_or(0, |i| 1 << i)
}

struct Cand {
    route: Arc<Route>,
    /// 0 for a route without hosts, else its best [`HostPat::score`].
    host: u32,
    /// u32::MAX for an exact URI, else the prefix length.
    specificity: u32,
}

/// The routing table of one snapshot.
#[derive(Default, Clone)]
pub struct Router {
    exact: UriIndex<Route>,
    prefix: UriIndex<Route>,
    /// How many prefix keys have each length.
    prefix_len_count: BTreeMap<usize, usize>,
    /// Distinct prefix lengths, longest first.
    prefix_lens: Vec<usize>,
    len: usize,
}

/// What the request offers for the cheap checks (the `vars` check gets the whole context).
pub struct Probe<'a> {
    pub path: &'a str,
    pub host: &'a str,
    pub method: &'a str,
    pub remote: IpAddr,
}

impl Router {
    pub fn new(routes: Vec<Arc<Route>>) -> Router {
        let mut r = Router::default();
        for route in routes {
            r.insert(route);
        }
        r
    }

    /// Adds a route.
    pub fn insert(&mut self, route: Arc<Route>) {
        self.len += 1;
        let mut lens_changed = false;
        for uri in &route.uris {
            match uri.strip_suffix('*') {
                Some(p) => {
                    if self.prefix.insert(p, route.clone()) {
                        *self.prefix_len_count.entry(p.len()).or_default() += 1;
                        lens_changed = true;
                    }
                }
                None => {
                    self.exact.insert(uri, route.clone());
                }
            }
        }
        if lens_changed {
            self.refresh_lens();
        }
    }

    /// Removes a route (the same `Arc` that was inserted).
    pub fn remove(&mut self, route: &Arc<Route>) {
        self.len = self.len.saturating_sub(1);
        let mut lens_changed = false;
        for uri in &route.uris {
            match uri.strip_suffix('*') {
                Some(p) => {
                    if self.prefix.remove(p, route)
                        && let Some(n) = self.prefix_len_count.get_mut(&p.len())
                    {
                        *n -= 1;
                        if *n == 0 {
                            self.prefix_len_count.remove(&p.len());
                        }
                        lens_changed = true;
                    }
                }
                None => {
                    self.exact.remove(uri, route);
                }
            }
        }
        if lens_changed {
            self.refresh_lens();
        }
    }

    fn refresh_lens(&mut self) {
        self.prefix_lens = self.prefix_len_count.keys().rev().copied().collect();
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The routes whose URI, host, method and remote address fit, best first. The caller
    /// checks `vars` in this order (reading the body first if a route needs it).
    pub fn candidates(&self, p: &Probe<'_>) -> Vec<Arc<Route>> {
        let mut c: Vec<Cand> = Vec::new();
        let method = method_bit(p.method);
        let mut push = |routes: &[Arc<Route>], specificity: u32| {
            for route in routes {
                if route.methods != 0 && route.methods & method == 0 {
                    continue;
                }
                let host = if route.hosts.is_empty() {
                    0
                } else {
                    match route.hosts.iter().filter_map(|h| h.score(p.host)).max() {
                        Some(s) => s,
                        None => continue,
                    }
                };
                if !route.remote_addrs.is_empty()
                    && !route.remote_addrs.iter().any(|n| n.contains(&p.remote))
                {
                    continue;
                }
                // A route with several URIs may appear twice (exact and prefix): keep the best.
                if let Some(prev) = c.iter_mut().find(|x| Arc::ptr_eq(&x.route, route)) {
                    prev.specificity = prev.specificity.max(specificity);
                    continue;
                }
                c.push(Cand {
                    route: route.clone(),
                    host,
                    specificity,
                });
            }
        };
        if let Some(rs) = self.exact.get(p.path) {
            push(rs, u32::MAX);
        }
        for &len in &self.prefix_lens {
            if len <= p.path.len()
                && p.path.is_char_boundary(len)
                && let Some(rs) = self.prefix.get(&p.path[..len])
            {
                push(rs, len as u32);
            }
        }
        c.sort_by(|a, b| {
            b.route
                .priority
                .cmp(&a.route.priority)
                .then_with(|| b.host.cmp(&a.host))
                .then_with(|| b.specificity.cmp(&a.specificity))
                .then_with(|| a.route.seq.cmp(&b.route.seq))
        });
        c.into_iter().map(|x| x.route).collect()
    }
}

/// The outcome of [`Router::find`].
pub enum Match {
    Found(Arc<Route>),
    /// A candidate needs `post_arg.*`: read the body, then call `find` again.
    NeedBody,
    None,
}

impl Router {
    /// Finds the route for a request: the first candidate, best first, whose `vars` hold.
    pub fn find(&self, ctx: &Ctx) -> Match {
        let host = ctx.host();
        let candidates = self.candidates(&Probe {
            path: ctx.uri.path(),
            host: &host,
            method: ctx.method.as_str(),
            remote: ctx.remote.ip(),
        });
        for route in candidates {
            if route.needs_body() && ctx.body().is_none() {
                return Match::NeedBody;
            }
            if route.vars.eval(ctx) {
                return Match::Found(route);
            }
        }
        Match::None
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
