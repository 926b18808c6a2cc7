//! The `ai-proxy` configuration: APISIX's schema (defaults, ranges) with Ferry's stricter
//! checks (unknown keys, endpoint format, providers that need an endpoint), compiled once into
//! what the request path uses: header values, resolved targets, an upstream client.

use crate::transport::{ClientKey, Transport, Upstream};
use ferry_protocol::Protocol;
use ferry_provider::{Endpoint, Provider, ProviderConf, Target};
use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Conf {
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_conf: Option<RawProviderConf>,
    pub auth: Auth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Map<String, Value>>,
    #[serde(rename = "override", default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Override>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    #[serde(default = "d_timeout")]
    pub timeout: u64,
    #[serde(default = "d_max_req")]
    pub max_req_body_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stream_duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<u64>,
    #[serde(default = "yes")]
    pub keepalive: bool,
    #[serde(default = "d_keepalive_timeout")]
    pub keepalive_timeout: u64,
    #[serde(default = "d_pool")]
    pub keepalive_pool: u64,
    #[serde(default = "d_flush")]
    pub streaming_flush_interval_ms: u64,
    #[serde(default = "yes")]
    pub ssl_verify: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProviderConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<crate::gcp::GcpConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<Value>,
}

impl Auth {
    /// `auth.query` as (name, value) pairs.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Override {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_options: Option<LlmOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<BTreeMap<String, Map<String, Value>>>,
    #[serde(default)]
    pub request_body_force_override: bool,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LlmOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    #[serde(default)]
    pub summaries: bool,
    #[serde(default)]
    pub payloads: bool,
}

fn d_timeout() -> u64 {
    30_000
}
fn d_max_req() -> u64 {
    64 * 1024 * 1024
}
fn yes() -> bool {
    true
}
/// The bound of a buffered (not streamed) upstream answer when `max_response_bytes` is unset.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

fn d_keepalive_timeout() -> u64 {
    60_000
}
fn d_pool() -> u64 {
    30
}
fn d_flush() -> u64 {
    10
}

fn range(name: &str, v: u64, min: u64, max: u64) -> Result<(), String> {
    if v < min || v > max {
        let bound = if max == u64::MAX {
            format!("expected {min} or more")
        } else {
            format!("expected a value from {min} to {max}")
        };
        return Err(format!(
            "property \"{name}\" validation failed: {bound}, got {v}"
        ));
    }
    Ok(())
}

impl Conf {
    /// Schema and cross-field checks. Returns the provider row and the parsed endpoint.
    pub fn validate(&self) -> Result<(&'static Provider, Option<Endpoint>), String> {
        let provider = ferry_provider::get(&self.provider).ok_or_else(|| {
            format!(
                "property \"provider\" validation failed: matches none of the enum values ({})",
                ferry_provider::names().join(", ")
            )
        })?;
        if let Some(why) = provider.unavailable {
            return Err(why.to_string());
        }
        range("timeout", self.timeout, 1, 600_000)?;
        range("max_req_body_size", self.max_req_body_size, 1, u64::MAX)?;
        if let Some(v) = self.max_stream_duration_ms {
            range("max_stream_duration_ms", v, 1, u64::MAX)?;
        }
        if let Some(v) = self.max_response_bytes {
            range("max_response_bytes", v, 1, u64::MAX)?;
        }
        range("keepalive_timeout", self.keepalive_timeout, 1000, u64::MAX)?;
        range("keepalive_pool", self.keepalive_pool, 1, u64::MAX)?;
        if let Some(g) = &self.auth.gcp {
            g.validate()?;
        }
        if self.auth.aws.is_some() {
            return Err("auth.aws (SigV4) is not available in this release".into());
        }
        for (k, v) in self.auth.header.iter().flatten() {
            HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                format!("property \"auth.header\" validation failed: invalid header name \"{k}\"")
            })?;
            HeaderValue::from_str(v).map_err(|_| {
                format!("property \"auth.header.{k}\" validation failed: invalid header value")
            })?;
        }
        if let Some(m) = self.options.as_ref().and_then(|o| o.get("model"))
            && !m.is_string()
        {
            return Err(
                "property \"options.model\" validation failed: wrong type: expected string".into(),
            );
        }
        let ov = self.overrides.as_ref();
        if let Some(n) = ov
            .and_then(|o| o.llm_options.as_ref())
            .and_then(|l| l.max_tokens)
        {
            range("override.llm_options.max_tokens", n, 1, u64::MAX)?;
        }
        for k in ov
            .and_then(|o| o.request_body.as_ref())
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if Protocol::from_name(k).is_none() && k != "bedrock-converse" {
                return Err(format!(
                    "property \"override.request_body\" validation failed: additional properties forbidden, found {k}"
                ));
            }
        }
        let endpoint =
            match ov.and_then(|o| o.endpoint.as_deref()) {
                Some(e) => Some(ferry_provider::parse_endpoint(e).map_err(|e| {
                    format!("property \"override.endpoint\" validation failed: {e}")
                })?),
                None => None,
            };
        if provider.needs_endpoint && endpoint.is_none() {
            return Err(format!(
                "provider {} requires override.endpoint",
                provider.name
            ));
        }
        let pc = self.provider_conf.as_ref();
        let located = pc
            .and_then(|p| p.project_id.as_deref())
            .is_some_and(|p| !p.is_empty())
            && pc
                .and_then(|p| p.region.as_deref())
                .is_some_and(|r| !r.is_empty());
        if provider.name == "vertex-ai" && !located {
            match &endpoint {
                None => return Err("vertex-ai requires either provider_conf (project_id + region) or override.endpoint".into()),
                // Without a path the template paths need the project and region.
                Some(e) if e.path.is_none() => return Err("vertex-ai requires either provider_conf (project_id + region) or override.endpoint with a path".into()),
                Some(_) => {}
            }
        }
        Ok((provider, endpoint))
    }
}

/// Where the request's model goes in a provider path (Vertex `:predict`).
pub const MODEL_SLOT: &str = "{model}";

/// The compiled configuration used per request.
pub struct Compiled {
    pub provider: &'static Provider,
    pub auth_headers: Vec<(HeaderName, HeaderValue)>,
    /// `auth.query` keys: a passthrough client cannot override them.
    pub auth_query_keys: Vec<String>,
    pub options: Option<Map<String, Value>>,
    pub options_model: Option<String>,
    pub max_tokens: Option<u64>,
    pub request_body: HashMap<Protocol, Map<String, Value>>,
    pub force: bool,
    pub max_req_body_size: u64,
    pub max_stream_duration: Option<Duration>,
    pub max_response_bytes: Option<u64>,
    /// Set when `logging.summaries` or `logging.payloads` is on.
    pub logging: Option<std::sync::Arc<crate::log::entry::LlmLogging>>,
    pub client: std::sync::Arc<Upstream>,
    /// The upstream URI of each target with a fixed path (all but passthrough), made once.
    pub uris: HashMap<Protocol, http::Uri>,
    /// Per protocol the provider speaks, plus passthrough.
    pub targets: HashMap<Protocol, Target>,
    /// `auth.gcp`: where the Bearer token comes from.
    pub gcp: Option<std::sync::Arc<crate::gcp::TokenSource>>,
}

impl Compiled {
    pub fn build(conf: Conf, transport: &Transport) -> Result<Compiled, String> {
        Compiled::build_for(conf, transport, None)
    }

    /// Builds an `ai-proxy-multi` instance (`instance`: its name, which keys its GCP tokens).
    pub fn build_for(
        conf: Conf,
        transport: &Transport,
        instance: Option<&str>,
    ) -> Result<Compiled, String> {
        let (provider, endpoint) = conf.validate()?;
        let pc = conf.provider_conf.as_ref();
        let provider_conf = ProviderConf {
            project_id: pc.and_then(|p| p.project_id.clone()),
            region: pc.and_then(|p| p.region.clone()),
        };
        let auth_query = conf.auth.query_pairs();
        let mut targets = HashMap::new();
        for proto in provider
            .capabilities
            .iter()
            .map(|c| c.protocol)
            .chain([Protocol::Passthrough])
        {
            let t = ferry_provider::resolve(
                provider,
                proto,
                endpoint.as_ref(),
                &provider_conf,
                &auth_query,
            )?;
            targets.insert(proto, t);
        }
        let auth_headers = conf
            .auth
            .header
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok()?;
                let mut value = HeaderValue::from_str(v).ok()?;
                value.set_sensitive(true);
                Some((name, value))
            })
            .collect();
        let ov = conf.overrides.unwrap_or_default();
        let request_body = ov
            .request_body
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| Protocol::from_name(&k).map(|p| (p, v)))
            .collect();
        let client = transport.client(ClientKey {
            ssl_verify: conf.ssl_verify,
            keepalive: conf.keepalive,
            keepalive_timeout_ms: conf.keepalive_timeout,
            keepalive_pool: conf.keepalive_pool,
            timeout_ms: conf.timeout,
            connect_timeout_ms: None,
            sni: None,
        })?;
        Ok(Compiled {
            provider,
            auth_headers,
            auth_query_keys: auth_query.iter().map(|(k, _)| k.clone()).collect(),
            options_model: conf
                .options
                .as_ref()
                .and_then(|o| o.get("model"))
                .and_then(Value::as_str)
                .map(String::from),
            options: conf.options.filter(|o| !o.is_empty()),
            max_tokens: ov.llm_options.and_then(|l| l.max_tokens),
            request_body,
            force: ov.request_body_force_override,
            max_req_body_size: conf.max_req_body_size,
            max_stream_duration: conf.max_stream_duration_ms.map(Duration::from_millis),
            max_response_bytes: conf.max_response_bytes,
            logging: conf.logging.filter(|l| l.summaries || l.payloads).map(|l| {
                std::sync::Arc::new(crate::log::entry::LlmLogging {
                    summaries: l.summaries,
                    payloads: l.payloads,
                    secret_headers: conf
                        .auth
                        .header
                        .iter()
                        .flatten()
                        .map(|(k, _)| k.to_ascii_lowercase())
                        .collect(),
                    secret_args: conf
                        .auth
                        .query
                        .iter()
                        .flatten()
                        .map(|(k, _)| k.clone())
                        .collect(),
                })
            }),
            client,
            uris: targets
                .iter()
                .filter(|(p, _)| **p != Protocol::Passthrough)
                .filter_map(|(p, t)| {
                    // A path naming the request's model is made per request.
                    let path = t.path.as_deref().filter(|p| !p.contains(MODEL_SLOT))?;
                    Some(t.uri(path, &t.query).map(|u| (*p, u)))
                })
                .collect::<Result<_, String>>()?,
            targets,
            gcp: match &conf.auth.gcp {
                Some(g) => Some(crate::gcp::source(g, instance, transport)?),
                None => None,
            },
        })
    }
}
