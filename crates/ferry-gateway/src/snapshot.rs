//! The immutable snapshot the data plane reads: routes compiled from one store revision
//! (service and plugin-config plugins merged under the route's), built off the request path
//! and published atomically.

use crate::plugin::Registry;
use crate::router::{HostPat, Route, Router, method_bit};
use ferry_config::Expr;
use ferry_config::Kind;
use ferry_config::expr::parse_net;
use ferry_config::resource::id_string;
use ferry_config::store::{Record, StoreSnapshot};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// One published configuration.
pub struct Snapshot {
    pub revision: u64,
    pub router: Router,
    pub built_at: Instant,
    pub built_wall: SystemTime,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            revision: 0,
            router: Router::default(),
            built_at: Instant::now(),
            built_wall: SystemTime::now(),
        }
    }

    /// Compiles a store snapshot. Resources that fail to compile (which write-time validation
    /// should have prevented) are skipped and reported.
    pub fn build(store: &StoreSnapshot, registry: &Registry) -> (Snapshot, Vec<String>) {
        let mut errors = Vec::new();
        let by_kind = |k: Kind| -> HashMap<&str, &Record> {
            store
                .records
                .iter()
                .filter(|r| r.kind == k)
                .map(|r| (r.id.as_str(), r))
                .collect()
        };
        let services = by_kind(Kind::Services);
        let plugin_configs = by_kind(Kind::PluginConfigs);
        let mut routes = Vec::new();
        for rec in store.records.iter().filter(|r| r.kind == Kind::Routes) {
            match compile_route(rec, &services, &plugin_configs, registry) {
                Ok(Some(r)) => routes.push(Arc::new(r)),
                Ok(None) => {}
                Err(e) => errors.push(format!("route {}: {e}", rec.id)),
            }
        }
        (
            Snapshot {
                revision: store.revision,
                router: Router::new(routes),
                built_at: Instant::now(),
                built_wall: SystemTime::now(),
            },
            errors,
        )
    }
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
    services: &HashMap<&str, &Record>,
    plugin_configs: &HashMap<&str, &Record>,
    registry: &Registry,
) -> Result<Option<Route>, String> {
    let v = &rec.value;
    if v.get("status").and_then(Value::as_i64) == Some(0) {
        return Ok(None);
    }
    let service_id = v.get("service_id").and_then(id_string);
    let service = match &service_id {
        Some(id) => Some(
            services
                .get(id.as_str())
                .ok_or_else(|| format!("service {id} not found"))?
                .value
                .clone(),
        ),
        None => None,
    };
    let mut plugins = Map::new();
    let mut merge = |p: Option<&Value>| {
        if let Some(Value::Object(m)) = p {
            for (k, v) in m {
                plugins.insert(k.clone(), v.clone());
            }
        }
    };
    merge(service.as_ref().and_then(|s| s.get("plugins")));
    if let Some(pc) = v.get("plugin_config_id").and_then(id_string) {
        let rec = plugin_configs
            .get(pc.as_str())
            .ok_or_else(|| format!("plugin_config {pc} not found"))?;
        merge(rec.value.get("plugins"));
    }
    merge(v.get("plugins"));
    let chain = registry.build_chain(&plugins)?;

    let mut uris = strings(v.get("uris"));
    uris.extend(strings(v.get("uri")));
    let mut hosts = strings(v.get("hosts"));
    hosts.extend(strings(v.get("host")));
    if hosts.is_empty() {
        hosts = strings(service.as_ref().and_then(|s| s.get("hosts")));
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
        id: rec.id.clone(),
        name: v.get("name").and_then(Value::as_str).map(String::from),
        service_name: service
            .as_ref()
            .and_then(|s| s.get("name"))
            .and_then(Value::as_str)
            .map(String::from),
        service_id,
        priority: v.get("priority").and_then(Value::as_i64).unwrap_or(0),
        uris,
        methods: strings(v.get("methods"))
            .iter()
            .fold(0, |acc, m| acc | method_bit(m)),
        hosts: hosts.iter().map(|h| HostPat::parse(h)).collect(),
        remote_addrs,
        vars,
        chain,
        seq: rec.create_rev,
    }))
}
