//! The immutable snapshot the data plane reads (routes compiled from one store revision, with
//! service and plugin-config plugins merged under the route's), and the [`Compiler`] that keeps
//! it in step with the store change by change: a write recompiles only the routes it touches,
//! and a recompiled route keeps every plugin instance whose configuration did not change.

use crate::router::{HostPat, Route, Router, method_bit};
use crate::upstream::{Target, UpstreamRt};
use ferry_config::Expr;
use ferry_config::expr::parse_net;
use ferry_config::resource::id_string;
use ferry_config::store::{Change, Record, StoreSnapshot};
use ferry_config::upstream::parse_timeouts;
use ferry_config::{Kind, PluginChecker};
use ferry_core::consumer::{Consumer, ConsumerTable, Directory};
use ferry_core::ctx::RouteInfo;
use ferry_core::plugin::{Registry, with_owner};
use ferry_core::transport::Transport;
use http::StatusCode;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// One published configuration.
pub struct Snapshot {
    pub revision: u64,
    pub router: Router,
    /// The global rules' plugins, for requests no route matches (matched routes carry them
    /// merged under their own).
    pub global: Option<Arc<Route>>,
    /// The server certificates by SNI (the `ssls` resources).
    pub sni: Arc<crate::tls::SniTable>,
    pub built_at: Instant,
    pub built_wall: SystemTime,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            revision: 0,
            router: Router::default(),
            global: None,
            sni: Arc::default(),
            built_at: Instant::now(),
            built_wall: SystemTime::now(),
        }
    }

    /// Compiles a whole store snapshot at once (start-up, benchmarks). Resources that fail to
    /// compile (which write-time validation should have prevented) are skipped and reported.
    pub fn build(store: &StoreSnapshot, registry: &Registry) -> (Snapshot, Vec<String>) {
        let mut c = Compiler::default();
        let errors = c.load(store, registry);
        (c.snapshot(), errors)
    }
}

/// The references a route's compiled form depends on.
#[derive(Default, Clone, PartialEq)]
struct Deps {
    service: Option<String>,
    plugin_config: Option<String>,
    /// The stored upstream it proxies to (its own `upstream_id`, or its service's).
    upstream: Option<String>,
}

/// The store's content as last compiled, kept between changes.
#[derive(Default)]
pub struct Compiler {
    /// Upstream clients come from here.
    transport: Arc<Transport>,
    /// Where authentication plugins find consumers: rebuilt when consumers change.
    directory: Directory,
    /// Stored upstreams compiled, with the revision they were compiled at: shared by every
    /// route that names them, so balancer state lives as long as the upstream is unchanged.
    upstreams: HashMap<String, (u64, Arc<UpstreamRt>)>,
    revision: u64,
    records: HashMap<(Kind, String), Record>,
    /// Enabled routes that compiled, by id.
    routes: HashMap<String, Arc<Route>>,
    /// The routing table over `routes`, updated route by route; each snapshot takes a clone
    /// that shares everything but the part a later write changes.
    router: Router,
    /// What each route refers to, and the reverse: which routes use a service / plugin config.
    deps: HashMap<String, Deps>,
    users: HashMap<(Kind, String), HashSet<String>>,
    /// The union of every global rule's plugins, merged under each route's.
    global_plugins: Map<String, Value>,
    global: Option<Arc<Route>>,
    sni: Arc<crate::tls::SniTable>,
}

impl Compiler {
    /// A compiler whose upstreams use `transport`'s clients and that publishes consumers to
    /// `directory`.
    pub fn new(transport: Arc<Transport>, directory: Directory) -> Compiler {
        Compiler {
            transport,
            directory,
            ..Compiler::default()
        }
    }

    /// The consumer directory this compiler publishes to.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// The revision compiled last.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Replaces everything with a full store snapshot; routes whose plugins did not change keep
    /// their instances. Returns what could not be compiled.
    pub fn load(&mut self, store: &StoreSnapshot, registry: &Registry) -> Vec<String> {
        self.revision = store.revision;
        self.records = store
            .records
            .iter()
            .map(|r| ((r.kind, r.id.clone()), r.clone()))
            .collect();
        let ids: Vec<String> = store
            .records
            .iter()
            .filter(|r| r.kind == Kind::Routes)
            .map(|r| r.id.clone())
            .collect();
        let gone: Vec<String> = self
            .deps
            .keys()
            .filter(|id| !self.records.contains_key(&(Kind::Routes, (*id).clone())))
            .cloned()
            .collect();
        let mut errors = Vec::new();
        self.rebuild_consumers(registry);
        self.rebuild_global(registry, &mut errors);
        self.rebuild_sni(&mut errors);
        for id in gone.iter().chain(&ids) {
            self.recompile(id, registry, &mut errors);
        }
        errors
    }

    /// Applies store changes in order; only the routes they touch are recompiled.
    pub fn apply(&mut self, changes: &[Change], registry: &Registry) -> Vec<String> {
        let mut dirty: Vec<String> = Vec::new();
        for ch in changes {
            let key = (ch.kind, ch.id.clone());
            match &ch.record {
                Some(r) => {
                    self.records.insert(key.clone(), r.clone());
                }
                None => {
                    self.records.remove(&key);
                }
            }
            if ch.kind == Kind::Upstreams {
                self.upstreams.remove(&ch.id);
            }
            match ch.kind {
                Kind::Routes => dirty.push(ch.id.clone()),
                _ => {
                    if let Some(users) = self.users.get(&key) {
                        dirty.extend(users.iter().cloned());
                    }
                }
            }
            self.revision = self.revision.max(ch.revision);
        }
        let mut errors = Vec::new();
        if changes.iter().any(|c| {
            matches!(
                c.kind,
                Kind::Consumers | Kind::Credentials | Kind::ConsumerGroups
            )
        }) {
            self.rebuild_consumers(registry);
        }
        if changes.iter().any(|c| c.kind == Kind::Ssls) {
            self.rebuild_sni(&mut errors);
        }
        if changes.iter().any(|c| c.kind == Kind::GlobalRules)
            && self.rebuild_global(registry, &mut errors)
        {
            dirty.extend(self.deps.keys().cloned());
        }
        dirty.sort_unstable();
        dirty.dedup();
        for id in &dirty {
            self.recompile(id, registry, &mut errors);
        }
        errors
    }

    /// The snapshot of what is compiled now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            revision: self.revision,
            router: self.router.clone(),
            global: self.global.clone(),
            sni: self.sni.clone(),
            built_at: Instant::now(),
            built_wall: SystemTime::now(),
        }
    }

    /// Recompiles the server certificates from the `ssls` resources.
    fn rebuild_sni(&mut self, errors: &mut Vec<String>) {
        let (table, e) =
            crate::tls::SniTable::build(self.records.values().filter(|r| r.kind == Kind::Ssls));
        errors.extend(e);
        self.sni = Arc::new(table);
    }

    /// Rebuilds the consumer directory: each consumer with its group's plugins under its own
    /// (auth plugins left out), and every auth key of consumers and credentials.
    fn rebuild_consumers(&self, registry: &Registry) {
        let mut table = ConsumerTable::new();
        let mut consumers: Vec<&Record> = self
            .records
            .values()
            .filter(|r| r.kind == Kind::Consumers)
            .collect();
        consumers.sort_by_key(|r| r.create_rev);
        for r in consumers {
            let v = &r.value;
            let group_id = v.get("group_id").and_then(id_string);
            let mut plugins = Map::new();
            let group = group_id
                .as_ref()
                .and_then(|g| self.records.get(&(Kind::ConsumerGroups, g.clone())));
            let sources = [
                group.map(|g| (&g.value, Kind::ConsumerGroups.key(&g.id))),
                Some((v, Kind::Consumers.key(&r.id))),
            ];
            for (src, owner) in sources.into_iter().flatten() {
                if let Some(Value::Object(p)) = src.get("plugins") {
                    for (k, conf) in p {
                        if !registry.is_auth(k) {
                            plugins.insert(k.clone(), with_owner(conf, &owner));
                        }
                    }
                }
            }
            let consumer = table.insert(Consumer {
                username: r.id.clone(),
                custom_id: v
                    .pointer("/labels/custom_id")
                    .and_then(Value::as_str)
                    .map(String::from),
                group_id,
                plugins,
            });
            if let Some(Value::Object(p)) = v.get("plugins") {
                for (k, conf) in p {
                    if let Some(key) = registry.consumer_key(k, conf) {
                        table.add_key(k, key, consumer.clone(), None);
                    }
                }
            }
        }
        let mut credentials: Vec<&Record> = self
            .records
            .values()
            .filter(|r| r.kind == Kind::Credentials)
            .collect();
        credentials.sort_by_key(|r| r.create_rev);
        let mut keys = Vec::new();
        for r in credentials {
            let Some((user, cid)) = r.id.split_once("/credentials/") else {
                continue;
            };
            let Some(consumer) = table.consumer(user).cloned() else {
                continue;
            };
            if let Some(Value::Object(p)) = r.value.get("plugins") {
                for (k, conf) in p {
                    if let Some(key) = registry.consumer_key(k, conf) {
                        keys.push((k.clone(), key, consumer.clone(), cid.to_string()));
                    }
                }
            }
        }
        for (plugin, key, consumer, cid) in keys {
            table.add_key(&plugin, key, consumer, Some(cid));
        }
        self.directory.store(Arc::new(table));
    }

    /// Recomputes the global rules' plugins (in creation order; a plugin configured by two
    /// rules keeps the first and logs the other). Returns true when they changed.
    fn rebuild_global(&mut self, registry: &Registry, errors: &mut Vec<String>) -> bool {
        let mut rules: Vec<&Record> = self
            .records
            .values()
            .filter(|r| r.kind == Kind::GlobalRules)
            .collect();
        rules.sort_by_key(|r| (r.create_rev, r.id.clone()));
        let mut merged = Map::new();
        for r in rules {
            if let Some(Value::Object(p)) = r.value.get("plugins") {
                for (k, v) in p {
                    let v = &with_owner(v, &Kind::GlobalRules.key(&r.id));
                    if merged.contains_key(k) {
                        errors.push(format!(
                            "global rule {}: plugin {k} is already configured by another global rule; ignored",
                            r.id
                        ));
                        continue;
                    }
                    merged.insert(k.clone(), v.clone());
                }
            }
        }
        if merged == self.global_plugins && (self.global.is_some() || merged.is_empty()) {
            return false;
        }
        let info = Arc::new(RouteInfo {
            id: String::new(),
            name: None,
            service_id: None,
            service_name: None,
        });
        let prev = self.global.as_ref().map(|g| &*g.chain);
        self.global = match registry.build_chain(&merged, &info, prev) {
            Ok(chain) if !merged.is_empty() => Some(Arc::new(Route {
                plugins: merged.clone(),
                consumer_chains: Default::default(),
                info,
                priority: 0,
                uris: Vec::new(),
                methods: 0,
                hosts: Vec::new(),
                remote_addrs: Vec::new(),
                vars: Expr::default(),
                chain: Arc::new(chain),
                target: Target::Fail(StatusCode::NOT_FOUND, "404 Route Not Found".into()),
                seq: 0,
            })),
            Ok(_) => None,
            Err(e) => {
                errors.push(format!("global rules: {e}"));
                None
            }
        };
        self.global_plugins = merged;
        true
    }

    /// The upstream a route proxies to when no plugin answers: route `upstream_id` > route
    /// `upstream` > service `upstream_id` > service `upstream` (APISIX's order).
    fn target(&mut self, route: &Record) -> Target {
        let v = &route.value;
        let service = v
            .get("service_id")
            .and_then(id_string)
            .and_then(|s| self.records.get(&(Kind::Services, s)))
            .map(|r| r.value.clone());
        let route_timeout = match v.get("timeout") {
            Some(t) => match parse_timeouts(t, "timeout") {
                Ok(t) => Some(t),
                Err(e) => return Target::Fail(StatusCode::SERVICE_UNAVAILABLE, e),
            },
            None => None,
        };
        let pick = |x: &Value| -> Option<Result<String, Value>> {
            if let Some(id) = x.get("upstream_id").and_then(id_string) {
                return Some(Ok(id));
            }
            x.get("upstream").cloned().map(Err)
        };
        let chosen = pick(v).or_else(|| service.as_ref().and_then(pick));
        let up = match chosen {
            None => {
                return Target::Fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "missing upstream configuration in Route or Service: route {} has no upstream and no plugin that answers (such as ai-proxy)",
                        route.id
                    ),
                );
            }
            Some(Ok(id)) => match self.stored_upstream(&id) {
                Some(u) => u,
                None => {
                    return Target::Fail(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("failed to find upstream by id: {id}"),
                    );
                }
            },
            Some(Err(inline)) => {
                match ferry_config::upstream::parse(&inline)
                    .and_then(|c| UpstreamRt::new(c, self.transport.clone()))
                {
                    Ok(u) => Arc::new(u),
                    Err(e) => return Target::Fail(StatusCode::SERVICE_UNAVAILABLE, e),
                }
            }
        };
        Target::new(up, route_timeout)
            .unwrap_or_else(|e| Target::Fail(StatusCode::SERVICE_UNAVAILABLE, e))
    }

    /// The compiled form of stored upstream `id` (compiled once per version).
    fn stored_upstream(&mut self, id: &str) -> Option<Arc<UpstreamRt>> {
        let rec = self.records.get(&(Kind::Upstreams, id.to_string()))?;
        if let Some((rev, u)) = self.upstreams.get(id)
            && *rev == rec.mod_rev
        {
            return Some(u.clone());
        }
        let compiled = ferry_config::upstream::parse(&rec.value)
            .and_then(|c| UpstreamRt::new(c, self.transport.clone()));
        match compiled {
            Ok(u) => {
                let u = Arc::new(u);
                self.upstreams
                    .insert(id.to_string(), (rec.mod_rev, u.clone()));
                Some(u)
            }
            Err(e) => {
                tracing::error!("upstream {id} does not compile: {e}");
                None
            }
        }
    }

    /// The compiled route `id`, if it is enabled and compiled.
    pub fn route(&self, id: &str) -> Option<&Arc<Route>> {
        self.routes.get(id)
    }

    fn recompile(&mut self, id: &str, registry: &Registry, errors: &mut Vec<String>) {
        let prev = self.routes.remove(id);
        if let Some(p) = &prev {
            self.router.remove(p);
        }
        let rec = self.records.get(&(Kind::Routes, id.to_string())).cloned();
        let deps = rec.as_ref().map(|r| {
            let service = r.value.get("service_id").and_then(id_string);
            let upstream = r.value.get("upstream_id").and_then(id_string).or_else(|| {
                let s = self.records.get(&(Kind::Services, service.clone()?))?;
                s.value.get("upstream_id").and_then(id_string)
            });
            Deps {
                service,
                plugin_config: r.value.get("plugin_config_id").and_then(id_string),
                upstream,
            }
        });
        let compiled = match &rec {
            Some(r) => {
                let target = self.target(r);
                compile_route(
                    r,
                    &self.records,
                    &self.global_plugins,
                    registry,
                    prev.as_deref(),
                    target,
                )
            }
            None => Ok(None),
        };
        match compiled {
            Ok(Some(route)) => {
                let route = Arc::new(route);
                self.router.insert(route.clone());
                self.routes.insert(id.to_string(), route);
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("route {id}: {e}")),
        }
        let old = match deps {
            Some(d) => self.deps.insert(id.to_string(), d),
            None => self.deps.remove(id),
        };
        let new = self.deps.get(id).cloned();
        if old != new {
            for (kind, dep) in deps_keys(old.as_ref()) {
                if let Some(set) = self.users.get_mut(&(kind, dep.clone())) {
                    set.remove(id);
                    if set.is_empty() {
                        self.users.remove(&(kind, dep));
                    }
                }
            }
            for key in deps_keys(new.as_ref()) {
                self.users.entry(key).or_default().insert(id.to_string());
            }
        }
    }
}

fn deps_keys(d: Option<&Deps>) -> Vec<(Kind, String)> {
    let Some(d) = d else { return Vec::new() };
    let mut out = Vec::new();
    if let Some(u) = &d.upstream {
        out.push((Kind::Upstreams, u.clone()));
    }
    if let Some(s) = &d.service {
        out.push((Kind::Services, s.clone()));
    }
    if let Some(p) = &d.plugin_config {
        out.push((Kind::PluginConfigs, p.clone()));
    }
    out
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

fn compile_route(
    rec: &Record,
    records: &HashMap<(Kind, String), Record>,
    global: &Map<String, Value>,
    registry: &Registry,
    prev: Option<&Route>,
    target: Target,
) -> Result<Option<Route>, String> {
    let v = &rec.value;
    if v.get("status").and_then(Value::as_i64) == Some(0) {
        return Ok(None);
    }
    let service_id = v.get("service_id").and_then(id_string);
    let service = match &service_id {
        Some(id) => Some(
            &records
                .get(&(Kind::Services, id.clone()))
                .ok_or_else(|| format!("service {id} not found"))?
                .value,
        ),
        None => None,
    };
    // Lowest to highest precedence: global rules, service, plugin config, route; each
    // configuration marked with the resource it came from.
    let mut plugins = global.clone();
    let mut merge = |p: Option<&Value>, owner: String| {
        if let Some(Value::Object(m)) = p {
            for (k, v) in m {
                plugins.insert(k.clone(), with_owner(v, &owner));
            }
        }
    };
    if let Some(sid) = &service_id {
        merge(
            service.and_then(|s| s.get("plugins")),
            Kind::Services.key(sid),
        );
    }
    if let Some(pc) = v.get("plugin_config_id").and_then(id_string) {
        let rec = records
            .get(&(Kind::PluginConfigs, pc.clone()))
            .ok_or_else(|| format!("plugin_config {pc} not found"))?;
        merge(rec.value.get("plugins"), Kind::PluginConfigs.key(&pc));
    }
    merge(v.get("plugins"), Kind::Routes.key(&rec.id));
    let info = RouteInfo {
        id: rec.id.clone(),
        name: v.get("name").and_then(Value::as_str).map(String::from),
        service_name: service
            .and_then(|s| s.get("name"))
            .and_then(Value::as_str)
            .map(String::from),
        service_id,
    };
    // The same route seen the same way keeps its `Arc<RouteInfo>` too.
    let info = match prev {
        Some(p) if *p.info == info => p.info.clone(),
        _ => Arc::new(info),
    };
    let chain = Arc::new(registry.build_chain(&plugins, &info, prev.map(|p| &*p.chain))?);

    let mut uris = strings(v.get("uris"));
    uris.extend(strings(v.get("uri")));
    let mut hosts = strings(v.get("hosts"));
    hosts.extend(strings(v.get("host")));
    if hosts.is_empty() {
        hosts = strings(service.and_then(|s| s.get("hosts")));
    }
    let mut addrs = strings(v.get("remote_addrs"));
    addrs.extend(strings(v.get("remote_addr")));
    let remote_addrs = addrs
        .iter()
        .map(|a| parse_net(a))
        .collect::<Result<Vec<_>, _>>()?;
    let vars = match v.get("vars") {
        Some(x) => Expr::compile(x)?,
        None => Expr::default(),
    };
    Ok(Some(Route {
        info,
        priority: v.get("priority").and_then(Value::as_i64).unwrap_or(0),
        uris,
        methods: strings(v.get("methods"))
            .iter()
            .fold(0, |acc, m| acc | method_bit(m)),
        hosts: hosts.iter().map(|h| HostPat::parse(h)).collect(),
        remote_addrs,
        vars,
        chain,
        plugins,
        consumer_chains: Default::default(),
        target,
        seq: rec.create_rev,
    }))
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
