//! Admin resources (routes, services, plugin configs) in APISIX's JSON shape, and their
//! write-time validation with APISIX-style messages naming the offending field.

use crate::expr::{Expr, parse_net};
pub use crate::resource_misc::valid_username;
use serde_json::{Map, Value};

/// A resource collection under `/apisix/admin/<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Routes,
    Services,
    PluginConfigs,
    Upstreams,
    Consumers,
    /// `consumers/<username>/credentials/<id>`; stored under the id `<username>/credentials/<id>`.
    Credentials,
    ConsumerGroups,
    Ssls,
    GlobalRules,
    /// Keyed by plugin name.
    PluginMetadata,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Routes,
        Kind::Services,
        Kind::PluginConfigs,
        Kind::Upstreams,
        Kind::Consumers,
        Kind::Credentials,
        Kind::ConsumerGroups,
        Kind::Ssls,
        Kind::GlobalRules,
        Kind::PluginMetadata,
    ];

    /// The collection name used in URLs, keys and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Routes => "routes",
            Kind::Services => "services",
            Kind::PluginConfigs => "plugin_configs",
            Kind::Upstreams => "upstreams",
            Kind::Consumers => "consumers",
            Kind::Credentials => "credentials",
            Kind::ConsumerGroups => "consumer_groups",
            Kind::Ssls => "ssls",
            Kind::GlobalRules => "global_rules",
            Kind::PluginMetadata => "plugin_metadata",
        }
    }

    /// The kind behind `/apisix/admin/<s>` (credentials are reached through consumers).
    pub fn from_path(s: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| *k != Kind::Credentials && k.as_str() == s)
    }

    /// APISIX's etcd-style key, e.g. `/apisix/routes/1`.
    pub fn key(self, id: &str) -> String {
        self.key_in("/apisix", id)
    }

    /// The key under another prefix, e.g. `/gw/routes/1`.
    pub fn key_in(self, prefix: &str, id: &str) -> String {
        match self {
            Kind::Credentials => format!("{prefix}/consumers/{id}"),
            _ => format!("{prefix}/{}/{}", self.as_str(), id),
        }
    }

    /// The singular name used in messages ("route", "service", "plugin config").
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Routes => "route",
            Kind::Services => "service",
            Kind::PluginConfigs => "plugin config",
            Kind::Upstreams => "upstream",
            Kind::Consumers => "consumer",
            Kind::Credentials => "credential",
            Kind::ConsumerGroups => "consumer group",
            Kind::Ssls => "ssl",
            Kind::GlobalRules => "global rule",
            Kind::PluginMetadata => "plugin_metadata",
        }
    }

    /// True when `POST /<kind>` creates an item with a generated id.
    pub fn allows_post(self) -> bool {
        matches!(
            self,
            Kind::Routes | Kind::Services | Kind::Upstreams | Kind::Ssls
        )
    }

    /// True when `PATCH` is offered.
    pub fn allows_patch(self) -> bool {
        !matches!(
            self,
            Kind::Consumers | Kind::Credentials | Kind::PluginMetadata
        )
    }

    /// True when stored values get `id`, `create_time` and `update_time`.
    pub fn stamped(self) -> bool {
        self != Kind::PluginMetadata
    }

    /// The store id of credential `cred` of consumer `user`.
    pub fn credential_id(user: &str, cred: &str) -> String {
        format!("{user}/credentials/{cred}")
    }
}

/// Sets the id field a stored value carries from its store id, which wins over the body
/// (consumers carry `username`, credentials their own part of the id, plugin metadata nothing).
pub fn set_id(kind: Kind, id: &str, value: &mut Value) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    match kind {
        Kind::Consumers => {
            obj.insert("username".into(), Value::String(id.into()));
        }
        Kind::PluginMetadata => {}
        Kind::Credentials => {
            let cid = id.rsplit('/').next().unwrap_or(id);
            obj.insert("id".into(), Value::String(cid.into()));
        }
        _ => {
            obj.insert("id".into(), Value::String(id.into()));
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
    /// True when a plugin of this name exists.
    fn has(&self, name: &str) -> bool {
        self.names().iter().any(|n| n == name)
    }
    /// True for authentication plugins (the only ones a credential may carry).
    fn is_auth(&self, _name: &str) -> bool {
        false
    }
    /// Checks a consumer's or credential's configuration for plugin `name` (auth plugins have
    /// a consumer-side schema).
    fn check_consumer(&self, name: &str, conf: &Value) -> Result<Value, PluginCheckError> {
        self.check(name, conf)
    }
    /// The consumer-identifying value of an auth plugin's consumer-side configuration.
    fn consumer_key(&self, _name: &str, _conf: &Value) -> Option<String> {
        None
    }
}

/// A reference from one resource to another that must exist when the write lands.
pub type Ref = (Kind, String);

/// Validates a resource body (which must already carry its `id`, except consumers and plugin
/// metadata) and returns the resources it references. The body is not changed: plugin
/// defaults are applied when the data plane compiles it, never written back.
pub fn validate(
    kind: Kind,
    value: &Value,
    plugins: &dyn PluginChecker,
) -> Result<Vec<Ref>, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| "invalid configuration: wrong type: expected object".to_string())?;
    match kind {
        Kind::Upstreams => {
            common(obj)?;
            crate::upstream::parse(value)?;
            Ok(Vec::new())
        }
        Kind::Routes | Kind::Services | Kind::PluginConfigs => validate_routing(kind, obj, plugins),
        _ => crate::resource_misc::validate(kind, obj, plugins),
    }
}

/// The fields of resources that are a named set of plugins (plugin configs, consumer groups,
/// credentials).
pub(crate) const PLUGIN_SET_FIELDS: &[&str] = &[
    "id",
    "name",
    "desc",
    "labels",
    "plugins",
    "create_time",
    "update_time",
];

/// `additionalProperties: false` with APISIX's message.
pub(crate) fn only(obj: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "invalid configuration: additional properties forbidden, found {k}"
        )),
        None => Ok(()),
    }
}

/// The fields every resource may have: `id`, `name`, `desc`, `labels`, timestamps.
pub(crate) fn common(obj: &Map<String, Value>) -> Result<(), String> {
    check_id(obj.get("id"), "id")?;
    opt_str(obj, "name", 1, 256)?;
    opt_str(obj, "desc", 0, 256)?;
    check_labels(obj)?;
    opt_integer(obj, "create_time")?;
    opt_integer(obj, "update_time")
}

/// `plugins`: an object of checked plugin configurations; required when `required`.
pub(crate) fn opt_plugins(
    obj: &Map<String, Value>,
    plugins: &dyn PluginChecker,
    required: bool,
) -> Result<(), String> {
    match obj.get("plugins") {
        Some(Value::Object(p)) => check_plugins(p, plugins),
        Some(other) => Err(type_err("plugins", "object", other)),
        None if required => Err("invalid configuration: property \"plugins\" is required".into()),
        None => Ok(()),
    }
}

/// An id field referring to another resource: checked and recorded.
pub(crate) fn opt_ref(
    obj: &Map<String, Value>,
    field: &str,
    kind: Kind,
    refs: &mut Vec<Ref>,
) -> Result<(), String> {
    if let Some(v) = obj.get(field) {
        check_id(Some(v), field)?;
        refs.push((kind, id_string(v).unwrap_or_default()));
    }
    Ok(())
}

fn validate_routing(
    kind: Kind,
    obj: &Map<String, Value>,
    plugins: &dyn PluginChecker,
) -> Result<Vec<Ref>, String> {
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
        _ => PLUGIN_SET_FIELDS,
    };
    only(obj, allowed)?;
    if kind == Kind::PluginConfigs {
        // APISIX allows any string as a plugin config's name.
        check_id(obj.get("id"), "id")?;
        if let Some(n) = obj.get("name")
            && !n.is_string()
        {
            return Err(type_err("name", "string", n));
        }
        opt_str(obj, "desc", 0, 256)?;
        check_labels(obj)?;
    } else {
        common(obj)?;
    }
    for unsupported in ["filter_func", "script"] {
        if obj.contains_key(unsupported) {
            return Err(format!(
                "invalid configuration: property \"{unsupported}\" is not supported by Ferry"
            ));
        }
    }
    if let Some(u) = obj.get("upstream") {
        if !u.is_object() {
            return Err(type_err("upstream", "object", u));
        }
        crate::upstream::parse(u)
            .map_err(|e| e.replacen("property \"", "property \"upstream.", 1))?;
    }
    if let Some(e) = obj.get("enable_websocket")
        && !e.is_boolean()
    {
        return Err(type_err("enable_websocket", "boolean", e));
    }
    let mut refs = Vec::new();
    opt_plugins(obj, plugins, kind == Kind::PluginConfigs)?;
    match kind {
        Kind::Routes => validate_route(obj, &mut refs)?,
        Kind::Services => {
            opt_hosts(obj, "hosts")?;
            opt_ref(obj, "upstream_id", Kind::Upstreams, &mut refs)?;
        }
        _ => {}
    }
    Ok(refs)
}

fn validate_route(obj: &Map<String, Value>, refs: &mut Vec<Ref>) -> Result<(), String> {
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
        crate::upstream::parse_timeouts(t, "timeout")?;
    }
    opt_ref(obj, "service_id", Kind::Services, refs)?;
    opt_ref(obj, "plugin_config_id", Kind::PluginConfigs, refs)?;
    opt_ref(obj, "upstream_id", Kind::Upstreams, refs)?;
    let has_handler = [
        "plugins",
        "service_id",
        "plugin_config_id",
        "upstream",
        "upstream_id",
    ]
    .iter()
    .any(|k| obj.contains_key(*k));
    if !has_handler {
        return Err(
            "invalid configuration: a route needs at least one of \"plugins\", \"service_id\", \"plugin_config_id\", \"upstream\" or \"upstream_id\""
                .into(),
        );
    }
    Ok(())
}

fn check_plugins(p: &Map<String, Value>, plugins: &dyn PluginChecker) -> Result<(), String> {
    check_plugin_map(p, plugins, false)
}

/// Checks every plugin configuration of a `plugins` object; `consumer`: as a consumer or
/// credential carries them (auth plugins by their consumer-side schema).
pub(crate) fn check_plugin_map(
    p: &Map<String, Value>,
    plugins: &dyn PluginChecker,
    consumer: bool,
) -> Result<(), String> {
    for (name, conf) in p {
        if !conf.is_object() {
            return Err(format!(
                "failed to check the configuration of plugin {name} err: wrong type: expected object, got {}",
                type_name(conf)
            ));
        }
        let checked = if consumer && plugins.is_auth(name) {
            plugins.check_consumer(name, conf)
        } else {
            plugins.check(name, conf)
        };
        match checked {
            Ok(_) => {}
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

pub(crate) fn check_id(v: Option<&Value>, field: &str) -> Result<(), String> {
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

pub(crate) fn type_err(field: &str, want: &str, got: &Value) -> String {
    format!(
        "invalid configuration: property \"{field}\" validation failed: wrong type: expected {want}, got {}",
        type_name(got)
    )
}

pub(crate) fn opt_str(
    obj: &Map<String, Value>,
    field: &str,
    min: usize,
    max: usize,
) -> Result<(), String> {
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

pub(crate) fn check_labels(obj: &Map<String, Value>) -> Result<(), String> {
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

pub(crate) fn nonempty_array<'a>(v: &'a Value, field: &str) -> Result<&'a Vec<Value>, String> {
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

pub(crate) fn check_host(v: &Value, field: &str) -> Result<(), String> {
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
