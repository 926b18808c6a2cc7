//! APISIX upstream objects (`/upstreams/<id>`, or inline as a route's or service's `upstream`):
//! the typed form the data plane balances over, parsed with APISIX's defaults and its
//! write-time error messages. Parsing is validation: what parses is what runs.

use serde_json::{Map, Value};
use std::time::Duration;

/// One node of an upstream, with its port resolved (80 / 443 by scheme when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub priority: i64,
}

impl Node {
    /// `host:port`, with IPv6 hosts in brackets as written.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// What `chash` hashes.
#[derive(Debug, Clone, PartialEq)]
pub enum HashOn {
    /// An nginx variable name (`uri`, `remote_addr`, `arg_x`, ...).
    Vars(String),
    Header(String),
    Cookie(String),
    Consumer,
    /// A template with `$var` references.
    VarsCombinations(String),
}

/// How nodes are picked.
#[derive(Debug, Clone, PartialEq)]
pub enum Balancer {
    RoundRobin,
    Chash(HashOn),
    LeastConn,
}

/// Which `Host` the upstream request carries.
#[derive(Debug, Clone, PartialEq)]
pub enum PassHost {
    Pass,
    Node,
    Rewrite(String),
}

/// `{connect, send, read}` in seconds, as APISIX writes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub send: Duration,
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let d = Duration::from_secs(60);
        Timeouts {
            connect: d,
            send: d,
            read: d,
        }
    }
}

/// `keepalive_pool`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeepalivePool {
    pub size: u32,
    pub idle_timeout: Duration,
    pub requests: u32,
}

impl Default for KeepalivePool {
    fn default() -> Self {
        KeepalivePool {
            size: 320,
            idle_timeout: Duration::from_secs(60),
            requests: 1000,
        }
    }
}

/// An upstream with APISIX's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConf {
    pub nodes: Vec<Node>,
    pub balancer: Balancer,
    pub https: bool,
    pub pass_host: PassHost,
    /// Extra tries after the first; `None` = nodes − 1.
    pub retries: Option<u32>,
    /// Give up retrying after this long since the first try (`None`: no limit).
    pub retry_timeout: Option<Duration>,
    pub timeout: Option<Timeouts>,
    pub keepalive_pool: KeepalivePool,
    /// Verify the node's certificate (`tls.verify`, default off as in APISIX).
    pub tls_verify: bool,
}

impl UpstreamConf {
    /// True for an upstream with no `nodes` at all (what ADC writes for a service without
    /// one): stored and fetchable, but left out of lists.
    pub fn is_placeholder(v: &Value) -> bool {
        v.get("nodes").is_none() && v.get("service_name").is_none()
    }
}

const FIELDS: &[&str] = &[
    "id",
    "name",
    "desc",
    "labels",
    "create_time",
    "update_time",
    "nodes",
    "type",
    "hash_on",
    "key",
    "scheme",
    "pass_host",
    "upstream_host",
    "retries",
    "retry_timeout",
    "timeout",
    "keepalive_pool",
    "tls",
    "checks",
    "service_name",
    "discovery_type",
    "discovery_args",
];

fn invalid(msg: impl std::fmt::Display) -> String {
    format!("invalid configuration: {msg}")
}

fn prop(field: &str, msg: impl std::fmt::Display) -> String {
    invalid(format!("property \"{field}\" validation failed: {msg}"))
}

/// Parses `{connect, send, read}` (each seconds > 0, all three required).
pub fn parse_timeouts(v: &Value, field: &str) -> Result<Timeouts, String> {
    let m = v
        .as_object()
        .ok_or_else(|| prop(field, "wrong type: expected object"))?;
    if let Some(k) = m
        .keys()
        .find(|k| !["connect", "send", "read"].contains(&k.as_str()))
    {
        return Err(prop(
            field,
            format!("additional properties forbidden, found {k}"),
        ));
    }
    let one = |k: &str| -> Result<Duration, String> {
        let x = m
            .get(k)
            .ok_or_else(|| prop(field, format!("property \"{k}\" is required")))?;
        match x.as_f64() {
            Some(n) if n > 0.0 && n < 1e9 => Ok(Duration::from_secs_f64(n)),
            Some(n) => Err(prop(
                &format!("{field}.{k}"),
                format!("expected {n} to be greater than 0"),
            )),
            None => Err(prop(&format!("{field}.{k}"), "wrong type: expected number")),
        }
    };
    Ok(Timeouts {
        connect: one("connect")?,
        send: one("send")?,
        read: one("read")?,
    })
}

fn nonneg_int(v: &Value, field: &str) -> Result<u64, String> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    match v.as_i64() {
        Some(n) => Err(prop(field, format!("expected {n} to be at least 0"))),
        None => Err(prop(field, "wrong type: expected integer")),
    }
}

fn parse_node(host: &str, port: Option<u64>, weight: &Value, https: bool) -> Result<Node, String> {
    if host.contains(':') && !host.starts_with('[') {
        // `host:port` written in the key of the hash form
        if host.matches(':').count() > 1 {
            return Err(invalid("IPv6 address must be enclosed with '[' and ']'"));
        }
    }
    if host.is_empty() {
        return Err(prop("nodes", "a node needs a host"));
    }
    let weight = u32::try_from(nonneg_int(weight, "nodes.weight")?)
        .map_err(|_| prop("nodes.weight", "too large"))?;
    let port = match port {
        Some(p) if (1..=65535).contains(&p) => p as u16,
        Some(p) => return Err(invalid(format!("invalid port {p}"))),
        None if https => 443,
        None => 80,
    };
    Ok(Node {
        host: host.to_string(),
        port,
        weight,
        priority: 0,
    })
}

/// Splits `host[:port]` (IPv6 in brackets).
fn split_host_port(s: &str) -> Result<(&str, Option<u64>), String> {
    let bad_port = |p: &str| invalid(format!("invalid port {p}"));
    if s.starts_with('[') {
        let end = s
            .find(']')
            .ok_or_else(|| invalid("IPv6 address must be enclosed with '[' and ']'"))?;
        let host = &s[..=end];
        return match s[end + 1..].strip_prefix(':') {
            Some(p) => Ok((host, Some(p.parse().map_err(|_| bad_port(p))?))),
            None => Ok((host, None)),
        };
    }
    if s.matches(':').count() > 1 {
        return Err(invalid("IPv6 address must be enclosed with '[' and ']'"));
    }
    match s.split_once(':') {
        Some((h, p)) => Ok((h, Some(p.parse().map_err(|_| bad_port(p))?))),
        None => Ok((s, None)),
    }
}

fn parse_nodes(v: &Value, https: bool) -> Result<Vec<Node>, String> {
    let mut out = Vec::new();
    match v {
        Value::Object(m) => {
            for (k, w) in m {
                let (host, port) = split_host_port(k)?;
                out.push(parse_node(host, port, w, https)?);
            }
        }
        Value::Array(a) => {
            for n in a {
                let m = n
                    .as_object()
                    .ok_or_else(|| prop("nodes", "wrong type: expected object"))?;
                if let Some(k) = m.keys().find(|k| {
                    !["host", "port", "weight", "priority", "metadata"].contains(&k.as_str())
                }) {
                    return Err(prop(
                        "nodes",
                        format!("additional properties forbidden, found {k}"),
                    ));
                }
                let host = m
                    .get("host")
                    .and_then(Value::as_str)
                    .ok_or_else(|| prop("nodes", "property \"host\" is required"))?;
                let port = match m.get("port") {
                    None | Some(Value::Null) => None,
                    Some(p) => Some(
                        p.as_u64()
                            .ok_or_else(|| invalid(format!("invalid port {p}")))?,
                    ),
                };
                let weight = m
                    .get("weight")
                    .ok_or_else(|| prop("nodes", "property \"weight\" is required"))?;
                let mut node = parse_node(host, port, weight, https)?;
                if let Some(p) = m.get("priority") {
                    node.priority = p
                        .as_i64()
                        .ok_or_else(|| prop("nodes.priority", "wrong type: expected integer"))?;
                }
                out.push(node);
            }
        }
        _ => return Err(prop("nodes", "wrong type: expected object or array")),
    }
    Ok(out)
}

const VAR_KEYS: &[&str] = &[
    "uri",
    "server_name",
    "server_addr",
    "request_uri",
    "remote_port",
    "remote_addr",
    "query_string",
    "host",
    "hostname",
    "mqtt_client_id",
];

/// APISIX's pattern for a chash `key` under `hash_on` (`vars`: an nginx variable of the list or
/// `arg_<name>`; `header`, `cookie`: a name; others: anything), and its message on a mismatch.
pub fn check_chash_key(hash_on: &str, k: &str) -> Result<(), String> {
    let name = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let (pattern, ok) = match hash_on {
        "vars" => (
            "^((uri|server_name|server_addr|request_uri|remote_port|remote_addr|query_string|host|hostname|mqtt_client_id)|arg_[0-9a-zA-z_-]+)$",
            VAR_KEYS.contains(&k) || k.strip_prefix("arg_").is_some_and(name),
        ),
        "header" | "cookie" => ("^[a-zA-Z0-9-_]+$", name(k)),
        _ => return Ok(()),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "failed to match pattern \"{pattern}\" with \"{k}\""
        ))
    }
}

fn parse_balancer(m: &Map<String, Value>) -> Result<Balancer, String> {
    let ty = match m.get("type") {
        None => "roundrobin",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(prop("type", "wrong type: expected string")),
    };
    match ty {
        "roundrobin" => Ok(Balancer::RoundRobin),
        "least_conn" => Ok(Balancer::LeastConn),
        "chash" => {
            let hash_on = match m.get("hash_on") {
                None => "vars",
                Some(Value::String(s)) => s.as_str(),
                Some(_) => return Err(prop("hash_on", "wrong type: expected string")),
            };
            let key = m.get("key").and_then(Value::as_str);
            if m.get("key").is_some() && key.is_none() {
                return Err(prop("key", "wrong type: expected string"));
            }
            let need = || {
                key.map(String::from)
                    .ok_or_else(|| "missing key".to_string())
            };
            let on = match hash_on {
                "vars" => {
                    let k = need()?;
                    check_chash_key(hash_on, &k).map_err(invalid)?;
                    HashOn::Vars(k)
                }
                "header" | "cookie" => {
                    let k = need()?;
                    check_chash_key(hash_on, &k).map_err(invalid)?;
                    if hash_on == "header" {
                        HashOn::Header(k)
                    } else {
                        HashOn::Cookie(k)
                    }
                }
                "consumer" => HashOn::Consumer,
                "vars_combinations" => HashOn::VarsCombinations(need()?),
                _ => {
                    return Err(prop("hash_on", "matches none of the enum values"));
                }
            };
            Ok(Balancer::Chash(on))
        }
        other => Err(prop(
            "type",
            format!("\"{other}\" is not supported by Ferry (roundrobin, chash, least_conn)"),
        )),
    }
}

/// Parses and checks an upstream object (the stored body, or an inline `upstream`).
pub fn parse(v: &Value) -> Result<UpstreamConf, String> {
    let m = v
        .as_object()
        .ok_or_else(|| invalid("wrong type: expected object"))?;
    if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "additional properties forbidden, found {k}"
        )));
    }
    if m.contains_key("discovery_type") || m.contains_key("service_name") {
        return Err(prop(
            "discovery_type",
            "service discovery is not supported by Ferry: list the upstream's nodes",
        ));
    }
    let https = match m.get("scheme") {
        None => false,
        Some(Value::String(s)) if s == "http" => false,
        Some(Value::String(s)) if s == "https" => true,
        Some(Value::String(s)) => {
            return Err(prop(
                "scheme",
                format!("\"{s}\" is not supported by Ferry (http, https)"),
            ));
        }
        Some(_) => return Err(prop("scheme", "wrong type: expected string")),
    };
    let nodes = match m.get("nodes") {
        Some(n) => parse_nodes(n, https)?,
        None => Vec::new(),
    };
    let balancer = parse_balancer(m)?;
    let pass_host = match m.get("pass_host").map(|p| p.as_str()) {
        None | Some(Some("pass")) => PassHost::Pass,
        Some(Some("node")) => PassHost::Node,
        Some(Some("rewrite")) => match m.get("upstream_host").and_then(Value::as_str) {
            Some(h) if !h.is_empty() => PassHost::Rewrite(h.to_string()),
            _ => {
                return Err(
                    "`upstream_host` can't be empty when `pass_host` is `rewrite`".to_string(),
                );
            }
        },
        Some(_) => return Err(prop("pass_host", "matches none of the enum values")),
    };
    let retries = match m.get("retries") {
        Some(r) => Some(
            u32::try_from(nonneg_int(r, "retries")?).map_err(|_| prop("retries", "too large"))?,
        ),
        None => None,
    };
    let retry_timeout = match m.get("retry_timeout") {
        None => None,
        Some(x) => match x.as_f64() {
            Some(0.0) => None,
            Some(n) if n > 0.0 && n < 1e9 => Some(Duration::from_secs_f64(n)),
            Some(n) => {
                return Err(prop(
                    "retry_timeout",
                    format!("expected {n} to be at least 0"),
                ));
            }
            None => return Err(prop("retry_timeout", "wrong type: expected number")),
        },
    };
    let timeout = match m.get("timeout") {
        Some(t) => Some(parse_timeouts(t, "timeout")?),
        None => None,
    };
    let mut keepalive_pool = KeepalivePool::default();
    if let Some(k) = m.get("keepalive_pool") {
        let km = k
            .as_object()
            .ok_or_else(|| prop("keepalive_pool", "wrong type: expected object"))?;
        for (f, x) in km {
            let n = nonneg_int(x, &format!("keepalive_pool.{f}"))?;
            match f.as_str() {
                "size" | "requests" if n == 0 => {
                    return Err(prop(
                        &format!("keepalive_pool.{f}"),
                        "expected 0 to be at least 1",
                    ));
                }
                "size" => keepalive_pool.size = n.min(u32::MAX as u64) as u32,
                "requests" => keepalive_pool.requests = n.min(u32::MAX as u64) as u32,
                "idle_timeout" => keepalive_pool.idle_timeout = Duration::from_secs(n),
                _ => {
                    return Err(prop(
                        "keepalive_pool",
                        format!("additional properties forbidden, found {f}"),
                    ));
                }
            }
        }
    }
    let mut tls_verify = false;
    if let Some(t) = m.get("tls") {
        let tm = t
            .as_object()
            .ok_or_else(|| prop("tls", "wrong type: expected object"))?;
        for (f, x) in tm {
            match f.as_str() {
                "verify" => {
                    tls_verify = x
                        .as_bool()
                        .ok_or_else(|| prop("tls.verify", "wrong type: expected boolean"))?;
                }
                "client_cert" | "client_key" | "client_cert_id" => {
                    return Err(prop(
                        &format!("tls.{f}"),
                        "client certificates to upstreams are not supported by Ferry yet",
                    ));
                }
                _ => {
                    return Err(prop(
                        "tls",
                        format!("additional properties forbidden, found {f}"),
                    ));
                }
            }
        }
    }
    if let Some(c) = m.get("checks")
        && !c.is_object()
    {
        return Err(prop("checks", "wrong type: expected object"));
    }
    Ok(UpstreamConf {
        nodes,
        balancer,
        https,
        pass_host,
        retries,
        retry_timeout,
        timeout,
        keepalive_pool,
        tls_verify,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_both_forms_and_defaults() {
        let u = parse(&json!({"nodes": {"127.0.0.1:1980": 2, "a.example": 1}})).unwrap();
        assert_eq!(u.nodes.len(), 2);
        assert_eq!(u.nodes[0].authority(), "127.0.0.1:1980");
        assert_eq!(u.nodes[0].weight, 2);
        assert_eq!(u.nodes[1].port, 80);
        let u = parse(
            &json!({"scheme": "https", "nodes": [{"host": "[::1]", "weight": 1, "priority": -1}]}),
        )
        .unwrap();
        assert_eq!(u.nodes[0].port, 443);
        assert_eq!(u.nodes[0].priority, -1);
        assert_eq!(u.balancer, Balancer::RoundRobin);
        assert_eq!(u.pass_host, PassHost::Pass);
        assert!(parse(&json!({})).unwrap().nodes.is_empty());
        assert!(UpstreamConf::is_placeholder(&json!({"id": "1"})));
        assert!(!UpstreamConf::is_placeholder(&json!({"nodes": []})));
    }

    #[test]
    fn apisix_messages() {
        let e = |v: Value| parse(&v).unwrap_err();
        assert_eq!(
            e(json!({"nodes": {"a:1": 1}, "retries": -1})),
            "invalid configuration: property \"retries\" validation failed: expected -1 to be at least 0"
        );
        assert_eq!(
            e(json!({"timeout": {"connect": 1, "send": 1, "read": 0}})),
            "invalid configuration: property \"timeout.read\" validation failed: expected 0 to be greater than 0"
        );
        assert_eq!(
            e(json!({"type": "chash", "hash_on": "header"})),
            "missing key"
        );
        assert!(e(json!({"type": "chash", "key": "bad key"})).contains("failed to match pattern"));
        assert!(
            e(json!({"type": "chash", "hash_on": "x", "key": "a"}))
                .contains("matches none of the enum values")
        );
        assert_eq!(
            e(json!({"pass_host": "rewrite"})),
            "`upstream_host` can't be empty when `pass_host` is `rewrite`"
        );
        assert_eq!(
            e(json!({"nodes": {"::1:80": 1}})),
            "invalid configuration: IPv6 address must be enclosed with '[' and ']'"
        );
        assert_eq!(
            e(json!({"nodes": [{"host": "a", "port": 70000, "weight": 1}]})),
            "invalid configuration: invalid port 70000"
        );
        assert!(e(json!({"scheme": "grpc"})).contains("not supported by Ferry"));
        assert!(e(json!({"type": "ewma"})).contains("not supported by Ferry"));
        assert!(e(json!({"discovery_type": "dns", "service_name": "x"})).contains("discovery"));
        assert!(e(json!({"foo": 1})).contains("additional properties forbidden, found foo"));
    }
}
