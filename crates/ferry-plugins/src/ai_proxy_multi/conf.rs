//! The `ai-proxy-multi` configuration: APISIX's schema (instances, balancer, fallback, retries,
//! the settings shared by every instance) with Ferry's stricter checks (unknown keys, unique
//! names, chash keys, `semantic` refused until it exists) and the per-instance health checks
//! (APISIX's `checks.active`, Ferry's `checks.passive`). Each instance is checked as an
//! `ai-proxy` configuration of its own, so providers, auth and overrides behave the same.

use crate::ai_proxy::conf::Conf as ProxyConf;
use ferry_config::upstream::check_chash_key;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Unknown top-level keys land in `shared` and are refused by `validate`.
#[derive(Debug, Deserialize, Serialize)]
pub struct Conf {
    pub instances: Vec<Instance>,
    #[serde(default = "d_balancer")]
    pub balancer: Balancer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_strategy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_http_statuses: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on_failure_within_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_opts: Option<Value>,
    /// The settings every instance shares (timeout, body limits, keepalive, TLS, logging):
    /// checked as `ai-proxy` checks them.
    #[serde(flatten)]
    pub shared: Map<String, Value>,
}

/// The keys of `ai-proxy` that `ai-proxy-multi` has at its top level, shared by all instances.
const SHARED: &[&str] = &[
    "timeout",
    "max_req_body_size",
    "max_stream_duration_ms",
    "max_response_bytes",
    "keepalive",
    "keepalive_timeout",
    "keepalive_pool",
    "streaming_flush_interval_ms",
    "ssl_verify",
    "logging",
];

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub name: String,
    pub provider: String,
    #[serde(default)]
    pub priority: i64,
    pub weight: u64,
    pub auth: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
    #[serde(rename = "override", default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_conf: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Balancer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(default = "d_vars")]
    pub hash_on: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn d_balancer() -> Balancer {
    Balancer {
        algorithm: Some("roundrobin".into()),
        hash_on: d_vars(),
        key: None,
    }
}
fn d_vars() -> String {
    "vars".into()
}

#[derive(Debug, Deserialize, Serialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<Active>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<Passive>,
}

/// APISIX's `health_checker_active`.
#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Active {
    #[serde(rename = "type", default = "d_http")]
    pub kind: String,
    #[serde(default = "d_one")]
    pub timeout: f64,
    #[serde(default = "d_concurrency")]
    pub concurrency: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default = "d_get")]
    pub http_method: String,
    #[serde(default = "d_root")]
    pub http_path: String,
    #[serde(default)]
    pub http_req_body: String,
    #[serde(default = "yes")]
    pub https_verify_certificate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_headers: Option<Vec<String>>,
    #[serde(default)]
    pub healthy: ActiveHealthy,
    #[serde(default)]
    pub unhealthy: ActiveUnhealthy,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthy {
    #[serde(default = "d_interval")]
    pub interval: u64,
    #[serde(default = "d_healthy_statuses")]
    pub http_statuses: Vec<u16>,
    #[serde(default = "d_two")]
    pub successes: u32,
}

impl Default for ActiveHealthy {
    fn default() -> Self {
        ActiveHealthy {
            interval: 1,
            http_statuses: d_healthy_statuses(),
            successes: 2,
        }
    }
}

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ActiveUnhealthy {
    #[serde(default = "d_interval")]
    pub interval: u64,
    #[serde(default = "d_unhealthy_statuses")]
    pub http_statuses: Vec<u16>,
    #[serde(default = "d_five")]
    pub http_failures: u32,
    #[serde(default = "d_two")]
    pub tcp_failures: u32,
    #[serde(default = "d_three")]
    pub timeouts: u32,
}

impl Default for ActiveUnhealthy {
    fn default() -> Self {
        ActiveUnhealthy {
            interval: 1,
            http_statuses: d_unhealthy_statuses(),
            http_failures: 5,
            tcp_failures: 2,
            timeouts: 3,
        }
    }
}

/// Ferry's passive checks: consecutive failures eject an instance for `cooldown` seconds.
#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Passive {
    #[serde(rename = "type", default = "d_http")]
    pub kind: String,
    #[serde(default)]
    pub healthy: PassiveHealthy,
    #[serde(default)]
    pub unhealthy: PassiveUnhealthy,
    #[serde(default = "d_cooldown")]
    pub cooldown: f64,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthy {
    #[serde(default = "d_passive_healthy_statuses")]
    pub http_statuses: Vec<u16>,
    #[serde(default = "d_five")]
    pub successes: u32,
}

impl Default for PassiveHealthy {
    fn default() -> Self {
        PassiveHealthy {
            http_statuses: d_passive_healthy_statuses(),
            successes: 5,
        }
    }
}

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PassiveUnhealthy {
    #[serde(default = "d_passive_unhealthy_statuses")]
    pub http_statuses: Vec<u16>,
    #[serde(default = "d_five")]
    pub http_failures: u32,
    #[serde(default = "d_two")]
    pub tcp_failures: u32,
    #[serde(default = "d_seven")]
    pub timeouts: u32,
}

impl Default for PassiveUnhealthy {
    fn default() -> Self {
        PassiveUnhealthy {
            http_statuses: d_passive_unhealthy_statuses(),
            http_failures: 5,
            tcp_failures: 2,
            timeouts: 7,
        }
    }
}

fn d_http() -> String {
    "http".into()
}
fn d_one() -> f64 {
    1.0
}
fn d_concurrency() -> u64 {
    10
}
fn d_get() -> String {
    "GET".into()
}
fn d_root() -> String {
    "/".into()
}
fn yes() -> bool {
    true
}
fn d_interval() -> u64 {
    1
}
fn d_two() -> u32 {
    2
}
fn d_three() -> u32 {
    3
}
fn d_five() -> u32 {
    5
}
fn d_seven() -> u32 {
    7
}
fn d_cooldown() -> f64 {
    30.0
}
fn d_healthy_statuses() -> Vec<u16> {
    vec![200, 302]
}
fn d_unhealthy_statuses() -> Vec<u16> {
    vec![429, 404, 500, 501, 502, 503, 504, 505]
}
fn d_passive_healthy_statuses() -> Vec<u16> {
    let mut v: Vec<u16> = (200..=208).collect();
    v.push(226);
    v.extend(300..=308);
    v
}
fn d_passive_unhealthy_statuses() -> Vec<u16> {
    vec![429, 500, 503]
}

/// Which failures move a request on to another instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Strategy {
    pub http_429: bool,
    pub http_5xx: bool,
    /// Skip instances whose `ai-rate-limiting` budget is used up.
    pub rate_limiting: bool,
}

/// How an instance is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    Chash { hash_on: HashOn, key: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashOn {
    Vars,
    Header,
    Cookie,
    Consumer,
    VarsCombinations,
}

/// What the checks found, ready to build from.
#[derive(Debug)]
pub struct Checked {
    pub strategy: Strategy,
    pub algorithm: Algorithm,
    /// Each instance as an `ai-proxy` configuration.
    pub proxies: Vec<ProxyConf>,
}

impl Conf {
    /// Schema and cross-field checks, in APISIX's order and words.
    pub fn validate(&self) -> Result<Checked, String> {
        if self.instances.is_empty() {
            return Err(
                "property \"instances\" validation failed: expect array to have at least 1 items"
                    .into(),
            );
        }
        if let Some(k) = self.shared.keys().find(|k| !SHARED.contains(&k.as_str())) {
            return Err(format!("additional properties forbidden, found {k}"));
        }
        let strategy = strategy(self.fallback_strategy.as_ref())?;
        if let Some(list) = &self.fallback_http_statuses {
            if list.is_empty() {
                return Err("property \"fallback_http_statuses\" validation failed: expect array to have at least 1 items".into());
            }
            for (i, s) in list.iter().enumerate() {
                if *s < 400 {
                    return Err(format!(
                        "property \"fallback_http_statuses\" validation failed: failed to validate item {}: expected {s} to be at least 400",
                        i + 1
                    ));
                }
                if *s > 599 {
                    return Err(format!(
                        "property \"fallback_http_statuses\" validation failed: failed to validate item {}: expected {s} to be at most 599",
                        i + 1
                    ));
                }
                if list[..i].contains(s) {
                    return Err("property \"fallback_http_statuses\" validation failed: expected unique items but items are duplicated".into());
                }
            }
        }
        if self.retry_on_failure_within_ms == Some(0) {
            return Err("property \"retry_on_failure_within_ms\" validation failed: expected 0 to be at least 1".into());
        }
        let mut proxies = Vec::with_capacity(self.instances.len());
        for (i, inst) in self.instances.iter().enumerate() {
            let at = |m: &str| {
                format!(
                    "property \"instances\" validation failed: failed to validate item {}: {m}",
                    i + 1
                )
            };
            if inst.name.is_empty() || inst.name.chars().count() > 100 {
                return Err(at(
                    "property \"name\" validation failed: string length must be 1 to 100",
                ));
            }
            if let Some(j) = self.instances[..i].iter().position(|o| o.name == inst.name) {
                return Err(format!(
                    "duplicate instance name '{}' at instances[{}] and instances[{}]",
                    inst.name,
                    j + 1,
                    i + 1
                ));
            }
            if let Some(c) = &inst.checks {
                check_health(c)
                    .map_err(|e| at(&format!("property \"checks\" validation failed: {e}")))?;
            }
            let proxy = inst.as_proxy(&self.shared)?;
            proxy
                .validate()
                .map_err(|e| format!("instance '{}': {e}", inst.name))?;
            proxies.push(proxy);
        }
        let algorithm = match self.balancer.algorithm.as_deref().unwrap_or("roundrobin") {
            "roundrobin" => Algorithm::RoundRobin,
            "chash" => {
                let hash_on = match self.balancer.hash_on.as_str() {
                    "vars" => HashOn::Vars,
                    "header" => HashOn::Header,
                    "cookie" => HashOn::Cookie,
                    "consumer" => HashOn::Consumer,
                    "vars_combinations" => HashOn::VarsCombinations,
                    _ => return Err("property \"balancer\" validation failed: property \"hash_on\" validation failed: matches none of the enum values".into()),
                };
                let key = match (hash_on, &self.balancer.key) {
                    (HashOn::Consumer, k) => k.clone().unwrap_or_default(),
                    (_, None) => {
                        return Err("must configure `hash_key` when balancer `hash_on` is not set to cookie".into());
                    }
                    (_, Some(k)) => {
                        check_chash_key(&self.balancer.hash_on, k)
                            .map_err(|e| format!("invalid configuration: {e}"))?;
                        k.clone()
                    }
                };
                Algorithm::Chash { hash_on, key }
            }
            "semantic" => {
                return Err("balancer algorithm \"semantic\" is not supported by Ferry yet; use roundrobin or chash".into());
            }
            _ => return Err("property \"balancer\" validation failed: property \"algorithm\" validation failed: matches none of the enum values".into()),
        };
        if self.semantic_opts.is_some() {
            return Err("property \"semantic_opts\" applies to the semantic balancer, which Ferry does not support yet".into());
        }
        Ok(Checked {
            strategy,
            algorithm,
            proxies,
        })
    }
}

impl Instance {
    /// The instance as an `ai-proxy` configuration, with the shared settings.
    fn as_proxy(&self, shared: &Map<String, Value>) -> Result<ProxyConf, String> {
        let mut m = shared.clone();
        m.insert("provider".into(), Value::String(self.provider.clone()));
        m.insert("auth".into(), self.auth.clone());
        for (k, v) in [
            ("options", &self.options),
            ("override", &self.overrides),
            ("provider_conf", &self.provider_conf),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone());
            }
        }
        ferry_core::plugin::parse_conf(&Value::Object(m))
            .map_err(|e| format!("instance '{}': {e}", self.name))
    }
}

fn strategy(v: Option<&Value>) -> Result<Strategy, String> {
    let mut s = Strategy::default();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::String(x)) => match x.as_str() {
            "instance_health_and_rate_limiting" => s.rate_limiting = true,
            "http_429" => s.http_429 = true,
            "http_5xx" => s.http_5xx = true,
            _ => return Err("property \"fallback_strategy\" validation failed: value should match only one schema, but matches none".into()),
        },
        Some(Value::Array(items)) => {
            for it in items {
                match it.as_str() {
                    Some("rate_limiting") => s.rate_limiting = true,
                    Some("http_429") => s.http_429 = true,
                    Some("http_5xx") => s.http_5xx = true,
                    _ => return Err("property \"fallback_strategy\" validation failed: value should match only one schema, but matches none".into()),
                }
            }
        }
        Some(_) => {
            return Err("property \"fallback_strategy\" validation failed: value should match only one schema, but matches none".into());
        }
    }
    Ok(s)
}

fn count(name: &str, v: u32) -> Result<(), String> {
    if !(1..=254).contains(&v) {
        return Err(format!(
            "property \"{name}\" validation failed: expected {v} to be between 1 and 254"
        ));
    }
    Ok(())
}

fn statuses(name: &str, v: &[u16]) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!(
            "property \"{name}\" validation failed: expect array to have at least 1 items"
        ));
    }
    if let Some(s) = v.iter().find(|s| !(200..=599).contains(*s)) {
        return Err(format!(
            "property \"{name}\" validation failed: expected {s} to be between 200 and 599"
        ));
    }
    Ok(())
}

fn check_health(c: &Checks) -> Result<(), String> {
    if c.active.is_none() && c.passive.is_none() {
        return Err("needs \"active\" and/or \"passive\"".into());
    }
    if let Some(a) = &c.active {
        if !matches!(a.kind.as_str(), "http" | "https" | "tcp") {
            return Err(
                "property \"active.type\" validation failed: matches none of the enum values"
                    .into(),
            );
        }
        if a.timeout.is_nan() || a.timeout <= 0.0 {
            return Err(
                "property \"active.timeout\" validation failed: must be greater than 0".into(),
            );
        }
        if a.port == Some(0) {
            return Err(
                "property \"active.port\" validation failed: expected 0 to be at least 1".into(),
            );
        }
        if http::Method::from_bytes(a.http_method.as_bytes()).is_err() {
            return Err("property \"active.http_method\" validation failed: matches none of the enum values".into());
        }
        if !a.http_path.starts_with('/') {
            return Err(
                "property \"active.http_path\" validation failed: must start with /".into(),
            );
        }
        for h in a.req_headers.iter().flatten() {
            let ok = h.split_once(':').is_some_and(|(k, v)| {
                http::HeaderName::from_bytes(k.trim().as_bytes()).is_ok()
                    && http::HeaderValue::from_str(v.trim()).is_ok()
            });
            if !ok {
                return Err(format!(
                    "property \"active.req_headers\" validation failed: \"{h}\" is not \"Name: value\""
                ));
            }
        }
        if a.req_headers.as_ref().is_some_and(Vec::is_empty) {
            return Err("property \"active.req_headers\" validation failed: expect array to have at least 1 items".into());
        }
        if a.healthy.interval < 1 || a.unhealthy.interval < 1 {
            return Err("property \"active.healthy.interval\" validation failed: expected 0 to be at least 1".into());
        }
        statuses("active.healthy.http_statuses", &a.healthy.http_statuses)?;
        statuses("active.unhealthy.http_statuses", &a.unhealthy.http_statuses)?;
        count("active.healthy.successes", a.healthy.successes)?;
        count("active.unhealthy.http_failures", a.unhealthy.http_failures)?;
        count("active.unhealthy.tcp_failures", a.unhealthy.tcp_failures)?;
        count("active.unhealthy.timeouts", a.unhealthy.timeouts)?;
    }
    if let Some(p) = &c.passive {
        if p.kind != "http" && p.kind != "https" && p.kind != "tcp" {
            return Err(
                "property \"passive.type\" validation failed: matches none of the enum values"
                    .into(),
            );
        }
        if p.cooldown.is_nan() || p.cooldown <= 0.0 {
            return Err(
                "property \"passive.cooldown\" validation failed: must be greater than 0".into(),
            );
        }
        statuses("passive.healthy.http_statuses", &p.healthy.http_statuses)?;
        statuses(
            "passive.unhealthy.http_statuses",
            &p.unhealthy.http_statuses,
        )?;
        for (n, v) in [
            ("passive.healthy.successes", p.healthy.successes),
            ("passive.unhealthy.http_failures", p.unhealthy.http_failures),
            ("passive.unhealthy.tcp_failures", p.unhealthy.tcp_failures),
            ("passive.unhealthy.timeouts", p.unhealthy.timeouts),
        ] {
            if v > 254 {
                return Err(format!(
                    "property \"{n}\" validation failed: expected {v} to be at most 254"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<Checked, String> {
        let c: Conf = ferry_core::plugin::parse_conf(&v)?;
        c.validate()
    }

    fn inst(name: &str) -> Value {
        json!({"name": name, "provider": "openai", "weight": 1, "auth": {"header": {"Authorization": "Bearer k"}}, "options": {"model": "gpt-4"}})
    }

    #[test]
    fn apisix_checklist_messages() {
        assert!(check(json!({"instances": [inst("a")]})).is_ok());
        let mut bad = inst("a");
        bad["provider"] = json!("some-unique");
        assert!(
            check(json!({"instances": [bad]}))
                .unwrap_err()
                .contains("matches none of the enum values")
        );
        let mut bad = inst("a");
        bad["override"] = json!({"endpoint": "http//127.0.0.1:1980"});
        assert!(
            check(json!({"instances": [bad]}))
                .unwrap_err()
                .contains("instance 'a'")
        );
        assert_eq!(
            check(json!({"instances": [inst("same-name"), inst("other"), inst("same-name")]}))
                .err()
                .unwrap(),
            "duplicate instance name 'same-name' at instances[1] and instances[3]"
        );
        assert!(
            check(json!({"instances": [inst("a")], "fallback_http_statuses": [200]}))
                .err()
                .unwrap()
                .contains("expected 200 to be at least 400")
        );
        let mut no_weight = inst("a");
        no_weight.as_object_mut().unwrap().remove("weight");
        let e = check(json!({"instances": [no_weight]})).unwrap_err();
        assert!(e.contains("weight") && e.contains("required"), "{e}");
        assert!(
            check(json!({"instances": []}))
                .unwrap_err()
                .contains("at least 1 items")
        );
    }

    #[test]
    fn strategies_balancers_and_unknown_keys() {
        let s = |v: Value| {
            check(json!({"instances": [inst("a")], "fallback_strategy": v})).map(|c| c.strategy)
        };
        assert_eq!(
            s(json!("instance_health_and_rate_limiting")).unwrap(),
            Strategy {
                rate_limiting: true,
                ..Default::default()
            }
        );
        assert_eq!(
            s(json!(["http_429", "http_5xx"])).unwrap(),
            Strategy {
                http_429: true,
                http_5xx: true,
                rate_limiting: false
            }
        );
        assert!(s(json!("rate_limiting")).is_err());
        assert!(s(json!(["instance_health_and_rate_limiting"])).is_err());
        let b =
            |v: Value| check(json!({"instances": [inst("a")], "balancer": v})).map(|c| c.algorithm);
        assert_eq!(
            b(json!({"hash_on": "vars"})).unwrap(),
            Algorithm::RoundRobin
        );
        assert!(
            b(json!({"algorithm": "chash", "hash_on": "header"}))
                .unwrap_err()
                .contains("hash_key")
        );
        assert!(
            b(json!({"algorithm": "chash", "key": "bogus"}))
                .unwrap_err()
                .contains("failed to match pattern")
        );
        assert_eq!(
            b(json!({"algorithm": "chash", "key": "arg_user"})).unwrap(),
            Algorithm::Chash {
                hash_on: HashOn::Vars,
                key: "arg_user".into()
            }
        );
        assert!(b(json!({"algorithm": "chash", "hash_on": "consumer"})).is_ok());
        assert!(
            b(json!({"algorithm": "semantic"}))
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            check(json!({"instances": [inst("a")], "provider": "openai"}))
                .unwrap_err()
                .contains("found provider")
        );
        let mut extra = inst("a");
        extra["endpoint"] = json!("x");
        assert!(check(json!({"instances": [extra]})).is_err());
        // shared settings are checked as ai-proxy checks them
        assert!(
            check(json!({"instances": [inst("a")], "timeout": 0}))
                .unwrap_err()
                .contains("timeout")
        );
    }

    #[test]
    fn health_checks() {
        let with = |c: Value| {
            let mut i = inst("a");
            i["checks"] = c;
            check(json!({"instances": [i]}))
        };
        assert!(with(json!({"active": {"http_path": "/status"}})).is_ok());
        assert!(with(json!({"passive": {"cooldown": 5}})).is_ok());
        assert!(with(json!({})).unwrap_err().contains("active"));
        assert!(with(json!({"active": {"type": "udp"}})).is_err());
        assert!(with(json!({"active": {"healthy": {"successes": 0}}})).is_err());
        assert!(with(json!({"active": {"req_headers": ["nocolon"]}})).is_err());
        assert!(with(json!({"passive": {"cooldown": 0}})).is_err());
    }
}
