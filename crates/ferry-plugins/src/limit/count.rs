//! APISIX's `limit-count`: at most `count` requests per `time_window` seconds per key
//! (`var`, `var_combination` or `constant`), counted locally or in Redis; `X-RateLimit-*`
//! headers; the rejected request gets `rejected_code` and never reaches the upstream. A
//! counter is scoped by the configuration's owner (route, service, consumer) and content, or
//! by `group`.

use super::{Limits, RedisConf, Store, Window, digest, owner_key, reset_secs};
use ferry_config::{Val, Var, VarSource};
use ferry_core::body::full;
use ferry_core::ctx::{Ctx, RouteInfo};
use ferry_core::plugin::{Flow, Phase, Plugin, PluginFactory, parse_conf};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_window: Option<Value>,
    #[serde(default = "var")]
    key_type: String,
    #[serde(default = "remote_addr")]
    key: String,
    #[serde(default = "c503")]
    rejected_code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_msg: Option<String>,
    #[serde(default = "local")]
    policy: String,
    #[serde(default)]
    allow_degradation: bool,
    #[serde(default = "yes")]
    show_limit_quota_header: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(default = "fixed")]
    window_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync_interval: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<Value>,
    #[serde(flatten)]
    redis: RedisFields,
}

/// The `redis_*` fields as written (validated into a [`RedisConf`]).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RedisFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_host: Option<String>,
    #[serde(default = "p6379")]
    pub redis_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_password: Option<String>,
    #[serde(default)]
    pub redis_database: u32,
    #[serde(default = "ms1000")]
    pub redis_timeout: u64,
    #[serde(default)]
    pub redis_ssl: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_ssl_verify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_keepalive_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_keepalive_pool: Option<u64>,
}

fn var() -> String {
    "var".into()
}
fn remote_addr() -> String {
    "remote_addr".into()
}
fn c503() -> u16 {
    503
}
fn local() -> String {
    "local".into()
}
fn yes() -> bool {
    true
}
fn fixed() -> String {
    "fixed".into()
}
fn p6379() -> u16 {
    6379
}
fn ms1000() -> u64 {
    1000
}

const NONE_OF: &str = "value should match only one schema, but matches none";

/// A positive integer field (`count`, `time_window`, `limit`).
pub fn positive(v: Option<&Value>, field: &str) -> Result<u64, String> {
    match v {
        None => Err(NONE_OF.into()),
        Some(x) => x
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("property \"{field}\" validation failed: {NONE_OF}")),
    }
}

/// Checks `policy` and the redis fields; the Redis settings when the policy is `redis`.
pub fn policy(policy: &str, r: &RedisFields) -> Result<Option<RedisConf>, String> {
    match policy {
        "local" => Ok(None),
        "redis" => {
            let host = match &r.redis_host {
                Some(h) if h.len() >= 2 => h.clone(),
                _ => return Err("then clause did not match".into()),
            };
            if r.redis_timeout == 0 {
                return Err(
                    "property \"redis_timeout\" validation failed: expected 0 to be at least 1"
                        .into(),
                );
            }
            if r.redis_port == 0 {
                return Err(
                    "property \"redis_port\" validation failed: expected 0 to be at least 1".into(),
                );
            }
            Ok(Some(RedisConf {
                redis_host: host,
                redis_port: r.redis_port,
                redis_username: r.redis_username.clone(),
                redis_password: r.redis_password.clone(),
                redis_database: r.redis_database,
                redis_timeout: r.redis_timeout,
                redis_ssl: r.redis_ssl,
                redis_ssl_verify: r.redis_ssl_verify.unwrap_or(false),
            }))
        }
        "redis-cluster" | "redis-sentinel" => Err(format!(
            "property \"policy\" validation failed: \"{policy}\" is not supported by Ferry (local, redis)"
        )),
        _ => Err("property \"policy\" validation failed: matches none of the enum values".into()),
    }
}

/// `rejected_code` within 200..=599, `rejected_msg` not empty.
pub fn rejection(code: u16, msg: Option<&str>) -> Result<StatusCode, String> {
    if code < 200 {
        return Err(format!(
            "property \"rejected_code\" validation failed: expected {code} to be at least 200"
        ));
    }
    if code > 599 {
        return Err(format!(
            "property \"rejected_code\" validation failed: expected {code} to be at most 599"
        ));
    }
    if msg == Some("") {
        return Err("property \"rejected_msg\" validation failed: string too short, expected at least 1 characters".into());
    }
    StatusCode::from_u16(code).map_err(|e| e.to_string())
}

struct Checked {
    count: u64,
    window: Duration,
    key: KeySpec,
    rejected: StatusCode,
    redis: Option<RedisConf>,
}

impl Conf {
    fn validate(&self) -> Result<Checked, String> {
        if self.rules.is_some() {
            if self.count.is_some() || self.time_window.is_some() {
                return Err(
                    "count/time_window and rules cannot be specified at the same time".into(),
                );
            }
            if self.group.is_some() {
                return Err("group and rules cannot be specified at the same time".into());
            }
            return Err("property \"rules\" validation failed: rules are not supported by Ferry yet; use count and time_window".into());
        }
        let count = positive(self.count.as_ref(), "count")?;
        let window = positive(self.time_window.as_ref(), "time_window")?;
        if self.window_type != "fixed" {
            return Err(format!(
                "property \"window_type\" validation failed: \"{}\" is not supported by Ferry yet (fixed)",
                self.window_type
            ));
        }
        if self.sync_interval.is_some_and(|s| s != -1.0) {
            return Err("property \"sync_interval\" validation failed: delayed sync is not supported by Ferry yet".into());
        }
        let key = KeySpec::parse(&self.key_type, &self.key)?;
        let rejected = rejection(self.rejected_code, self.rejected_msg.as_deref())?;
        if self.group.as_deref() == Some("") {
            return Err("property \"group\" validation failed: string too short".into());
        }
        let redis = policy(&self.policy, &self.redis)?;
        Ok(Checked {
            count,
            window: Duration::from_secs(window),
            key,
            rejected,
            redis,
        })
    }
}

/// How the counting key is read from a request.
pub enum KeySpec {
    Var(Var),
    /// `$a $b`, `${a}`: the parts, literal or variable.
    Combination(Vec<Part>),
    Constant(String),
}

pub enum Part {
    Text(String),
    Var(Var),
}

impl KeySpec {
    pub fn parse(key_type: &str, key: &str) -> Result<KeySpec, String> {
        match key_type {
            "var" => Var::parse(key.trim_start_matches('$'))
                .map(KeySpec::Var)
                .map_err(|e| format!("property \"key\" validation failed: {e}")),
            "constant" => Ok(KeySpec::Constant(key.to_string())),
            "var_combination" => {
                let mut parts = Vec::new();
                let mut rest = key;
                while let Some(i) = rest.find('$') {
                    if i > 0 {
                        parts.push(Part::Text(rest[..i].to_string()));
                    }
                    let after = &rest[i + 1..];
                    let (name, next) = if let Some(inner) = after.strip_prefix('{') {
                        let end = inner
                            .find('}')
                            .ok_or("property \"key\" validation failed: unterminated ${")?;
                        (
                            inner[..end].split("??").next().unwrap_or("").trim(),
                            &inner[end + 1..],
                        )
                    } else {
                        let end = after
                            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .unwrap_or(after.len());
                        (&after[..end], &after[end..])
                    };
                    if name.is_empty() {
                        parts.push(Part::Text("$".into()));
                    } else {
                        parts
                            .push(Part::Var(Var::parse(name).map_err(|e| {
                                format!("property \"key\" validation failed: {e}")
                            })?));
                    }
                    rest = next;
                }
                if !rest.is_empty() {
                    parts.push(Part::Text(rest.to_string()));
                }
                Ok(KeySpec::Combination(parts))
            }
            _ => Err(
                "property \"key_type\" validation failed: matches none of the enum values".into(),
            ),
        }
    }

    /// The key of this request; the client address when it resolves to nothing.
    pub fn value(&self, ctx: &Ctx) -> String {
        let text = |v: Val<'_>| v.to_text().map(|t| t.into_owned());
        let got = match self {
            KeySpec::Var(v) => text(ctx.get(v)).filter(|s| !s.is_empty()),
            KeySpec::Constant(c) => Some(c.clone()),
            KeySpec::Combination(parts) => {
                let mut out = String::new();
                let mut resolved = false;
                for p in parts {
                    match p {
                        Part::Text(t) => out.push_str(t),
                        Part::Var(v) => {
                            if let Some(t) = text(ctx.get(v)) {
                                resolved = true;
                                out.push_str(&t);
                            }
                        }
                    }
                }
                resolved.then_some(out)
            }
        };
        got.unwrap_or_else(|| {
            tracing::debug!("The value of the configured key is empty, use client IP instead");
            ctx.remote_ip.to_string()
        })
    }
}

/// Builds `limit-count` instances; local counters and Redis connections are shared.
#[derive(Default)]
pub struct Factory {
    pub limits: Arc<Limits>,
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "limit-count"
    }

    fn priority(&self) -> i32 {
        1002
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "count": {"type": "integer", "exclusiveMinimum": 0},
                "time_window": {"type": "integer", "exclusiveMinimum": 0},
                "key_type": {"type": "string", "enum": ["var", "var_combination", "constant"], "default": "var"},
                "key": {"type": "string", "default": "remote_addr"},
                "rejected_code": {"type": "integer", "minimum": 200, "maximum": 599, "default": 503},
                "rejected_msg": {"type": "string", "minLength": 1},
                "policy": {"type": "string", "enum": ["local", "redis"], "default": "local"},
                "allow_degradation": {"type": "boolean", "default": false},
                "show_limit_quota_header": {"type": "boolean", "default": true},
                "group": {"type": "string"},
                "redis_host": {"type": "string", "minLength": 2},
                "redis_port": {"type": "integer", "minimum": 1, "default": 6379},
                "redis_username": {"type": "string"},
                "redis_password": {"type": "string"},
                "redis_database": {"type": "integer", "minimum": 0, "default": 0},
                "redis_timeout": {"type": "integer", "minimum": 1, "default": 1000}
            },
            "required": ["count", "time_window"]
        })
    }

    fn check(&self, conf: &Value) -> Result<Value, String> {
        let c: Conf = parse_conf(conf)?;
        c.validate()?;
        serde_json::to_value(&c).map_err(|e| e.to_string())
    }

    fn build(&self, conf: &Value, route: &Arc<RouteInfo>) -> Result<Arc<dyn Plugin>, String> {
        self.build_owned(conf, route, None)
    }

    fn build_owned(
        &self,
        conf: &Value,
        route: &Arc<RouteInfo>,
        owner: Option<&str>,
    ) -> Result<Arc<dyn Plugin>, String> {
        let c: Conf = parse_conf(conf)?;
        let checked = c.validate()?;
        let normalized = serde_json::to_value(&c).map_err(|e| e.to_string())?;
        let prefix = match &c.group {
            Some(g) => format!("group:{g}"),
            None => {
                let owner = owner_key(owner, route);
                format!("{owner}:{}", digest(&normalized))
            }
        };
        let store = self.limits.store(checked.redis.as_ref())?;
        Ok(Arc::new(LimitCount {
            count: checked.count,
            window: checked.window,
            key: checked.key,
            rejected: checked.rejected,
            rejected_msg: c.rejected_msg,
            allow_degradation: c.allow_degradation,
            show_headers: c.show_limit_quota_header,
            prefix: format!("limit-count:{prefix}"),
            store,
        }))
    }
}

struct LimitCount {
    count: u64,
    window: Duration,
    key: KeySpec,
    rejected: StatusCode,
    rejected_msg: Option<String>,
    allow_degradation: bool,
    show_headers: bool,
    prefix: String,
    store: Store,
}

/// The quota headers to put on the response.
struct QuotaHeaders {
    limit: u64,
    remaining: u64,
    reset: u64,
}

impl QuotaHeaders {
    fn apply(&self, h: &mut http::HeaderMap) {
        h.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(self.reset));
    }
}

/// An `{"error_msg": ...}` answer with `status`.
pub fn rejected(status: StatusCode, msg: Option<&str>) -> ferry_core::body::Response {
    let text = msg.unwrap_or_else(|| status.canonical_reason().unwrap_or("rejected"));
    let mut resp = http::Response::new(full(format!("{}\n", json!({ "error_msg": text }))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl LimitCount {
    fn decide(&self, ctx: &mut Ctx, r: Result<Window, String>) -> Flow {
        let w = match r {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(
                    route = ctx.route.as_ref().map(|r| r.id.as_str()),
                    "failed to limit count: {e}"
                );
                if self.allow_degradation {
                    return Flow::Continue;
                }
                return Flow::Respond(rejected(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Some("failed to limit count"),
                ));
            }
        };
        let over = w.used > self.count;
        let q = QuotaHeaders {
            limit: self.count,
            remaining: self.count.saturating_sub(w.used),
            reset: reset_secs(w.reset),
        };
        if over {
            let mut resp = rejected(self.rejected, self.rejected_msg.as_deref());
            if self.show_headers {
                q.apply(resp.headers_mut());
            }
            return Flow::Respond(resp);
        }
        if self.show_headers {
            ctx.ext.insert(q);
        }
        Flow::Continue
    }
}

impl Plugin for LimitCount {
    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Phase<'a> {
        let id = format!("{}:{}", self.prefix, self.key.value(ctx));
        match &self.store {
            Store::Local(c) => {
                let w = c.add(&id, 1, self.window);
                Phase::Done(self.decide(ctx, Ok(w)))
            }
            Store::Redis(..) => Phase::Wait(Box::pin(async move {
                let r = self.store.add(&id, 1, self.window).await;
                self.decide(ctx, r)
            })),
        }
    }

    fn header_filter(&self, ctx: &mut Ctx, head: &mut http::response::Parts) {
        if let Some(q) = ctx.ext.get::<QuotaHeaders>() {
            q.apply(&mut head.headers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Value) -> Result<Value, String> {
        Factory::default().check(&v)
    }

    #[test]
    fn apisix_messages() {
        assert_eq!(check(json!({"time_window": 60})).unwrap_err(), NONE_OF);
        assert_eq!(
            check(json!({"count": 0, "time_window": 60})).unwrap_err(),
            format!("property \"count\" validation failed: {NONE_OF}")
        );
        assert_eq!(
            check(json!({"count": 1, "time_window": -100})).unwrap_err(),
            format!("property \"time_window\" validation failed: {NONE_OF}")
        );
        assert_eq!(
            check(json!({"count": 1, "time_window": 1, "rules": []})).unwrap_err(),
            "count/time_window and rules cannot be specified at the same time"
        );
        assert_eq!(
            check(json!({"count": 1, "time_window": 1, "policy": "redis"})).unwrap_err(),
            "then clause did not match"
        );
        assert!(
            check(json!({"count": 1, "time_window": 1, "rejected_code": 199}))
                .unwrap_err()
                .contains("at least 200")
        );
        assert!(
            check(json!({"count": 1, "time_window": 1, "window_type": "sliding"}))
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            check(json!({"count": 1, "time_window": 1, "policy": "redis-cluster"}))
                .unwrap_err()
                .contains("not supported")
        );
        assert!(check(json!({"count": 1, "time_window": 1, "key_type": "x"})).is_err());
        let ok = check(json!({"count": 3, "time_window": 60})).unwrap();
        assert_eq!(
            (ok["rejected_code"].as_u64(), ok["key"].as_str()),
            (Some(503), Some("remote_addr"))
        );
    }

    #[test]
    fn key_templates() {
        let k = KeySpec::parse("var_combination", "$remote_addr ${consumer_name} x").unwrap();
        let KeySpec::Combination(parts) = k else {
            panic!()
        };
        assert_eq!(parts.len(), 4);
        assert!(matches!(&parts[1], Part::Text(t) if t == " "));
    }
}
