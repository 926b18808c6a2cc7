//! Admin resources (routes, services, plugin configs) in APISIX's JSON shape, and their
//! write-time validation with APISIX-style messages naming the offending field.

use crate::expr::{Expr, parse_net};
use serde_json::{Map, Value};

/// A resource collection under `/apisix/admin/<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Routes,
    Services,
    PluginConfigs,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Routes, Kind::Services, Kind::PluginConfigs];

    /// The collection name used in URLs, keys and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Routes => "routes",
            Kind::Services => "services",
            Kind::PluginConfigs => "plugin_configs",
        }
    }

    pub fn from_path(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// APISIX's etcd-style key, e.g. `/apisix/routes/1`.
    pub fn key(self, id: &str) -> String {
        format!("/apisix/{}/{}", self.as_str(), id)
    }

    /// The singular name used in messages ("route", "service", "plugin config").
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Routes => "route",
            Kind::Services => "service",
            Kind::PluginConfigs => "plugin_config",
        }
    }
}

/// Why a plugin configuration was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginCheckError {
    Unknown,
    Invalid(String),
}

/// Checks plugin configurations; implemented by the gateway's plugin registry.
pub trait PluginChecker: Send + Sync {
    /// Validates `conf` for plugin `name` and returns it with defaults filled in.
    fn check(&self, name: &str, conf: &Value) -> Result<Value, PluginCheckError>;
    /// Names of every plugin, sorted.
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
    /// A plugin's configuration schema, if it exists.
    fn schema(&self, _name: &str) -> Option<Value> {
        None
    }
}

/// A reference from one resource to another that must exist when the write lands.
pub type Ref = (Kind, String);

/// Validates a resource body, fills plugin defaults in, and returns the resources it
/// references. `value` must already carry its `id`.
pub fn validate(
    kind: Kind,
    value: &mut Value,
    plugins: &dyn PluginChecker,
) -> Result<Vec<Ref>, String> {
    let obj = value
        .as_object_mut()
        .ok_or_else(|| "invalid configuration: wrong type: expected object".to_string())?;
    let allowed: &[&str] = match kind {
        Kind::Routes => &[
            "id",
            "name",
            "desc",
            "labels",
            "priority",
            "status",
            "uri",
            "uris",
            "methods",
            "host",
            "hosts",
            "remote_addr",
            "remote_addrs",
            "vars",
            "plugins",
            "plugin_config_id",
            "service_id",
            "upstream",
            "upstream_id",
            "timeout",
            "enable_websocket",
            "filter_func",
            "script",
            "create_time",
            "update_time",
        ],
        Kind::Services => &[
            "id",
            "name",
            "desc",
            "labels",
            "plugins",
            "hosts",
            "upstream",
            "upstream_id",
            "enable_websocket",
            "script",
            "create_time",
            "update_time",
        ],
        Kind::PluginConfigs => &[
            "id",
            "name",
            "desc",
            "labels",
            "plugins",
            "create_time",
            "update_time",
        ],
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "invalid configuration: additional properties forbidden, found {k}"
        ));
    }
    check_id(obj.get("id"), "id")?;
    opt_str(obj, "name", 1, 256)?;
    opt_str(obj, "desc", 0, 256)?;
    check_labels(obj)?;
    opt_integer(obj, "create_time")?;
    opt_integer(obj, "update_time")?;
    for unsupported in ["filter_func", "script"] {
        if obj.contains_key(unsupported) {
            return Err(format!(
                "invalid configuration: property \"{unsupported}\" is not supported by Ferry"
            ));
        }
    }
    if obj.contains_key("upstream_id") {
        return Err(
            "invalid configuration: property \"upstream_id\" is not supported by Ferry: it has no upstream resources; use a plugin such as ai-proxy"
                .into(),
        );
    }
    if let Some(u) = obj.get("upstream")
        && !u.is_object()
    {
        return Err(type_err("upstream", "object", u));
    }
    if let Some(e) = obj.get("enable_websocket")
        && !e.is_boolean()
    {
        return Err(type_err("enable_websocket", "boolean", e));
    }
    let mut refs = Vec::new();
    match obj.get_mut("plugins") {
        Some(Value::Object(p)) => check_plugins(p, plugins)?,
        Some(other) => return Err(type_err("plugins", "object", other)),
        None if kind == Kind::PluginConfigs => {
            return Err("invalid configuration: property \"plugins\" is required".into());
        }
        None => {}
    }
    match kind {
        Kind::Routes => validate_route(obj, &mut refs)?,
        Kind::Services => {
            opt_hosts(obj, "hosts")?;
        }
        Kind::PluginConfigs => {}
    }
    Ok(refs)
}

fn validate_route(obj: &mut Map<String, Value>, refs: &mut Vec<Ref>) -> Result<(), String> {
    match (obj.get("uri"), obj.get("uris")) {
        (Some(_), Some(_)) => {
            return Err(
                "invalid configuration: only one of \"uri\" and \"uris\" may be set".into(),
            );
        }
        (None, None) => {
            return Err("invalid configuration: property \"uri\" or \"uris\" is required".into());
        }
        _ => {}
    }
    if let Some(u) = obj.get("uri") {
        check_uri(u, "uri")?;
    }
    if let Some(u) = obj.get("uris") {
        let arr = nonempty_array(u, "uris")?;
        for (i, x) in arr.iter().enumerate() {
            check_uri(x, &format!("uris[{i}]"))?;
        }
        unique(arr, "uris")?;
    }
    if let Some(m) = obj.get("methods") {
        const METHODS: &[&str] = &[
            "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
        ];
        let arr = m
            .as_array()
            .ok_or_else(|| type_err("methods", "array", m))?;
        for (i, x) in arr.iter().enumerate() {
            if !x.as_str().is_some_and(|s| METHODS.contains(&s)) {
                return Err(format!(
                    "invalid configuration: property \"methods\" validation failed: failed to validate item {}: matches none of the enum values",
                    i + 1
                ));
            }
        }
        unique(arr, "methods")?;
    }
    exclusive(obj, "host", "hosts")?;
    if let Some(h) = obj.get("host") {
        check_host(h, "host")?;
    }
    opt_hosts(obj, "hosts")?;
    exclusive(obj, "remote_addr", "remote_addrs")?;
    if let Some(r) = obj.get("remote_addr") {
        check_addr(r, "remote_addr")?;
    }
    if let Some(r) = obj.get("remote_addrs") {
        let arr = nonempty_array(r, "remote_addrs")?;
        for (i, x) in arr.iter().enumerate() {
            check_addr(x, &format!("remote_addrs[{i}]"))?;
        }
    }
    if let Some(v) = obj.get("vars") {
        Expr::compile(v).map_err(|e| format!("failed to validate the 'vars' expression: {e}"))?;
    }
    if let Some(p) = obj.get("priority")
        && !p.is_i64()
    {
        return Err(type_err("priority", "integer", p));
    }
    if let Some(s) = obj.get("status")
        && !matches!(s.as_i64(), Some(0 | 1))
    {
        return Err(
                "invalid configuration: property \"status\" validation failed: matches none of the enum values"
                    .into(),
            );
    }
    if let Some(t) = obj.get("timeout") {
        let m = t
            .as_object()
            .ok_or_else(|| type_err("timeout", "object", t))?;
        for (k, v) in m {
            if !["connect", "send", "read"].contains(&k.as_str()) {
                return Err(format!(
                    "invalid configuration: property \"timeout\" validation failed: additional properties forbidden, found {k}"
                ));
            }
            if !v.as_f64().is_some_and(|n| n > 0.0) {
                return Err(format!(
                    "invalid configuration: property \"timeout.{k}\" validation failed: expected a number greater than 0"
                ));
            }
        }
    }
    for (field, kind) in [
        ("service_id", Kind::Services),
        ("plugin_config_id", Kind::PluginConfigs),
    ] {
        if let Some(v) = obj.get(field) {
            check_id(Some(v), field)?;
            refs.push((kind, id_string(v).unwrap_or_default()));
        }
    }
    let has_handler = ["plugins", "service_id", "plugin_config_id", "upstream"]
        .iter()
        .any(|k| obj.contains_key(*k));
    if !has_handler {
        return Err(
            "invalid configuration: a route needs at least one of \"plugins\", \"service_id\", \"plugin_config_id\" or \"upstream\""
                .into(),
        );
    }
    Ok(())
}

fn check_plugins(p: &mut Map<String, Value>, plugins: &dyn PluginChecker) -> Result<(), String> {
    for (name, conf) in p.iter_mut() {
        if !conf.is_object() {
            return Err(format!(
                "failed to check the configuration of plugin {name} err: wrong type: expected object, got {}",
                type_name(conf)
            ));
        }
        match plugins.check(name, conf) {
            Ok(normalized) => *conf = normalized,
            Err(PluginCheckError::Unknown) => return Err(format!("unknown plugin [{name}]")),
            Err(PluginCheckError::Invalid(msg)) => {
                return Err(format!(
                    "failed to check the configuration of plugin {name} err: {msg}"
                ));
            }
        }
    }
    Ok(())
}

/// Turns a JSON id (string or integer) into its string form.
pub fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

/// APISIX's id rule: 1–64 characters of `[a-zA-Z0-9-_.]`, or an integer.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_id(v: Option<&Value>, field: &str) -> Result<(), String> {
    let Some(v) = v else { return Ok(()) };
    match id_string(v) {
        Some(s) if valid_id(&s) => Ok(()),
        _ => Err(format!(
            "invalid configuration: property \"{field}\" validation failed: object matches none of the required: expected 1-64 characters of [a-zA-Z0-9-_.] or an integer"
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_err(field: &str, want: &str, got: &Value) -> String {
    format!(
        "invalid configuration: property \"{field}\" validation failed: wrong type: expected {want}, got {}",
        type_name(got)
    )
}

fn opt_str(obj: &Map<String, Value>, field: &str, min: usize, max: usize) -> Result<(), String> {
    let Some(v) = obj.get(field) else {
        return Ok(());
    };
    let s = v.as_str().ok_or_else(|| type_err(field, "string", v))?;
    let n = s.chars().count();
    if n < min || n > max {
        return Err(format!(
            "invalid configuration: property \"{field}\" validation failed: string length must be between {min} and {max}"
        ));
    }
    Ok(())
}

fn opt_integer(obj: &Map<String, Value>, field: &str) -> Result<(), String> {
    match obj.get(field) {
        Some(v) if !v.is_i64() => Err(type_err(field, "integer", v)),
        _ => Ok(()),
    }
}

fn check_labels(obj: &Map<String, Value>) -> Result<(), String> {
    let Some(v) = obj.get("labels") else {
        return Ok(());
    };
    let m = v
        .as_object()
        .ok_or_else(|| type_err("labels", "object", v))?;
    for (k, v) in m {
        if !v.is_string() {
            return Err(type_err(&format!("labels.{k}"), "string", v));
        }
    }
    Ok(())
}

fn nonempty_array<'a>(v: &'a Value, field: &str) -> Result<&'a Vec<Value>, String> {
    let arr = v.as_array().ok_or_else(|| type_err(field, "array", v))?;
    if arr.is_empty() {
        return Err(format!(
            "invalid configuration: property \"{field}\" validation failed: expect array to have at least 1 items"
        ));
    }
    Ok(arr)
}

fn unique(arr: &[Value], field: &str) -> Result<(), String> {
    for (i, a) in arr.iter().enumerate() {
        if arr[..i].contains(a) {
            return Err(format!(
                "invalid configuration: property \"{field}\" validation failed: expected unique items but items are duplicated"
            ));
        }
    }
    Ok(())
}

fn exclusive(obj: &Map<String, Value>, a: &str, b: &str) -> Result<(), String> {
    if obj.contains_key(a) && obj.contains_key(b) {
        return Err(format!(
            "invalid configuration: only one of \"{a}\" and \"{b}\" may be set"
        ));
    }
    Ok(())
}

fn check_uri(v: &Value, field: &str) -> Result<(), String> {
    let s = v.as_str().ok_or_else(|| type_err(field, "string", v))?;
    if s.is_empty() || s.len() > 4096 || !s.starts_with('/') {
        return Err(format!(
            "invalid configuration: property \"{field}\" validation failed: a uri is 1-4096 characters starting with '/'"
        ));
    }
    if let Some(star) = s.find('*')
        && star != s.len() - 1
    {
        return Err(format!(
            "invalid configuration: property \"{field}\" validation failed: '*' is only allowed at the end of a uri (prefix match)"
        ));
    }
    Ok(())
}

fn check_host(v: &Value, field: &str) -> Result<(), String> {
    let s = v.as_str().ok_or_else(|| type_err(field, "string", v))?;
    let body = s.strip_prefix('*').unwrap_or(s);
    let ok = !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
        });
    if !ok {
        return Err(format!(
            "invalid configuration: property \"{field}\" validation failed: failed to match pattern \"^\\*?[0-9a-zA-Z-._\\[\\]:]+$\" with \"{s}\""
        ));
    }
    Ok(())
}

fn opt_hosts(obj: &Map<String, Value>, field: &str) -> Result<(), String> {
    let Some(v) = obj.get(field) else {
        return Ok(());
    };
    let arr = nonempty_array(v, field)?;
    for (i, h) in arr.iter().enumerate() {
        check_host(h, &format!("{field}[{i}]"))?;
    }
    unique(arr, field)
}

fn check_addr(v: &Value, field: &str) -> Result<(), String> {
    let s = v.as_str().ok_or_else(|| type_err(field, "string", v))?;
    parse_net(s)
        .map(|_| ())
        .map_err(|e| format!("invalid configuration: property \"{field}\" validation failed: {e}"))
}

#[cfg(test)]
#[path = "resource_tests.rs"]
mod tests;
