//! APISIX's `key-auth`: authenticates a request by a key in a header (default `apikey`) or,
//! when the header is absent, a query argument, against the keys of consumers and their
//! credentials; attaches the consumer (or the anonymous consumer) or answers 401. It runs in
//! rewrite, from the request head alone: an unauthenticated client's body is never read.
//! The key's location is recorded so LLM plugins never forward it to a provider.

use ferry_core::body::full;
use ferry_core::consumer::{Attached, Directory};
use ferry_core::ctx::{Ctx, RouteInfo};
use ferry_core::plugin::{Flow, Plugin, PluginFactory, parse_conf};
use http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

const NAME: &str = "key-auth";

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default = "apikey")]
    header: String,
    #[serde(default = "apikey")]
    query: String,
    #[serde(default)]
    hide_credentials: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous_consumer: Option<String>,
    #[serde(default = "default_realm")]
    realm: String,
}

fn apikey() -> String {
    "apikey".into()
}
fn default_realm() -> String {
    "key".into()
}

impl Conf {
    fn validate(&self) -> Result<(), String> {
        if HeaderName::from_bytes(self.header.as_bytes()).is_err() {
            return Err(format!(
                "property \"header\" validation failed: \"{}\" is not a valid header name",
                self.header
            ));
        }
        if self.query.is_empty() {
            return Err("property \"query\" validation failed: string too short".into());
        }
        if self.anonymous_consumer.as_deref() == Some("") {
            return Err(
                "property \"anonymous_consumer\" validation failed: string too short, expected at least 1 characters"
                    .into(),
            );
        }
        let realm_ok = (1..=128).contains(&self.realm.len())
            && self
                .realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        if !realm_ok {
            return Err(
                "property \"realm\" validation failed: 1-128 printable characters without '\"' or '\\'"
                    .into(),
            );
        }
        Ok(())
    }
}

/// What a consumer or credential carries for key-auth.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ConsumerConf {
    key: String,
}

/// Where a request's credential was looked for: plugins that call an LLM provider drop this
/// header and query argument from what they forward.
#[derive(Debug, Clone)]
pub struct Credential {
    pub header: HeaderName,
    pub query: String,
}

/// Builds `key-auth` instances over the consumer directory.
pub struct Factory {
    pub directory: Directory,
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        2500
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "header": {"type": "string", "default": "apikey"},
                "query": {"type": "string", "default": "apikey"},
                "hide_credentials": {"type": "boolean", "default": false},
                "anonymous_consumer": {"type": "string", "minLength": 1},
                "realm": {"type": "string", "minLength": 1, "maxLength": 128, "default": "key"}
            },
            "consumer_schema": {
                "type": "object",
                "properties": {"key": {"type": "string", "minLength": 1}},
                "required": ["key"]
            }
        })
    }

    fn check(&self, conf: &Value) -> Result<Value, String> {
        let c: Conf = parse_conf(conf)?;
        c.validate()?;
        serde_json::to_value(&c).map_err(|e| e.to_string())
    }

    fn is_auth(&self) -> bool {
        true
    }

    fn check_consumer(&self, conf: &Value) -> Result<Value, String> {
        let c: ConsumerConf = parse_conf(conf)?;
        if c.key.is_empty() {
            return Err("property \"key\" validation failed: string too short, expected at least 1 characters".into());
        }
        serde_json::to_value(&c).map_err(|e| e.to_string())
    }

    fn consumer_key(&self, conf: &Value) -> Option<String> {
        conf.get("key")?.as_str().map(String::from)
    }

    fn build(&self, conf: &Value, _route: &Arc<RouteInfo>) -> Result<Arc<dyn Plugin>, String> {
        let c: Conf = parse_conf(conf)?;
        c.validate()?;
        let header = HeaderName::from_bytes(c.header.as_bytes()).map_err(|e| e.to_string())?;
        let www = HeaderValue::from_str(&format!("apikey realm=\"{}\"", c.realm))
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(KeyAuth {
            credential: Credential {
                header,
                query: c.query,
            },
            hide: c.hide_credentials,
            anonymous: c.anonymous_consumer,
            www_authenticate: www,
            directory: self.directory.clone(),
        }))
    }
}

struct KeyAuth {
    credential: Credential,
    hide: bool,
    anonymous: Option<String>,
    www_authenticate: HeaderValue,
    directory: Directory,
}

/// Where the key came from.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    Header,
    Query,
}

/// The value of query argument `name` when it appears exactly once with a value (a repeated
/// argument is a list, and `?apikey` alone has no value: neither authenticates).
fn single_arg(query: &str, name: &str) -> Option<String> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (pair, None),
        };
        if decode(k) != name {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some(v.map(decode));
    }
    found.flatten()
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Removes query argument `name` from the request URI.
pub fn remove_query_arg(uri: &Uri, name: &str) -> Uri {
    let Some(q) = uri.query() else {
        return uri.clone();
    };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|p| !p.is_empty() && decode(p.split('=').next().unwrap_or("")) != name)
        .collect();
    let pq = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

impl KeyAuth {
    fn unauthorized(&self, message: &str) -> Flow {
        let body = format!("{}\n", json!({ "message": message }));
        let mut resp = http::Response::new(full(body));
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        let h = resp.headers_mut();
        h.insert(header::WWW_AUTHENTICATE, self.www_authenticate.clone());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Flow::Respond(resp)
    }

    fn remove(&self, ctx: &mut Ctx, source: Source) {
        match source {
            Source::Header => {
                ctx.headers.remove(&self.credential.header);
            }
            Source::Query => ctx.uri = remove_query_arg(&ctx.uri, &self.credential.query),
        }
    }
}

/// Attaches the consumer and tells the upstream who it is (APISIX's identity headers; a
/// client cannot set them itself).
fn attach(ctx: &mut Ctx, att: Attached) {
    let h = &mut ctx.headers;
    h.remove("x-credential-identifier");
    h.remove("x-consumer-custom-id");
    if let Ok(v) = HeaderValue::from_str(&att.consumer.username) {
        h.insert("x-consumer-username", v);
    }
    if let Some(v) = att
        .credential_id
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        h.insert("x-credential-identifier", v);
    }
    if let Some(v) = att
        .consumer
        .custom_id
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        h.insert("x-consumer-custom-id", v);
    }
    ctx.consumer = Some(att);
}

impl Plugin for KeyAuth {
    fn rewrite(&self, ctx: &mut Ctx) -> Flow {
        ctx.ext.insert(self.credential.clone());
        let (key, source) = match ctx.headers.get(&self.credential.header) {
            Some(v) => (v.to_str().ok().map(String::from), Source::Header),
            None => (
                single_arg(ctx.query(), &self.credential.query),
                Source::Query,
            ),
        };
        let table = self.directory.load();
        let found = key.as_deref().and_then(|k| table.by_key(NAME, k)).cloned();
        if let Some(att) = found {
            if self.hide {
                self.remove(ctx, source);
            }
            attach(ctx, att);
            return Flow::Continue;
        }
        let message = if key.is_none() {
            "Missing API key in request"
        } else {
            tracing::warn!(
                route = ctx.route.as_ref().map(|r| r.id.as_str()),
                client = %ctx.remote_ip,
                "key-auth: invalid API key"
            );
            "Invalid API key in request"
        };
        let Some(anonymous) = &self.anonymous else {
            return self.unauthorized(message);
        };
        if self.hide {
            self.remove(ctx, Source::Header);
            self.remove(ctx, Source::Query);
        }
        match table.consumer(anonymous) {
            Some(c) => {
                attach(
                    ctx,
                    Attached {
                        consumer: c.clone(),
                        credential_id: None,
                    },
                );
                Flow::Continue
            }
            None => {
                tracing::error!("key-auth: failed to get anonymous consumer {anonymous}");
                self.unauthorized("Invalid user authorization")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_args() {
        assert_eq!(single_arg("apikey=k1&x=1", "apikey").as_deref(), Some("k1"));
        assert_eq!(single_arg("apikey=a%2Bb", "apikey").as_deref(), Some("a+b"));
        assert_eq!(
            single_arg("apikey=1&apikey=2", "apikey"),
            None,
            "a list never matches"
        );
        assert_eq!(single_arg("apikey", "apikey"), None);
        assert_eq!(single_arg("other=1", "apikey"), None);
        let u: Uri = "/a/b?x=1&apikey=k&y=2".parse().unwrap();
        assert_eq!(remove_query_arg(&u, "apikey").to_string(), "/a/b?x=1&y=2");
        let u: Uri = "/a?apikey=k".parse().unwrap();
        assert_eq!(remove_query_arg(&u, "apikey").to_string(), "/a");
    }

    #[test]
    fn confs() {
        let f = Factory {
            directory: ferry_core::consumer::directory(),
        };
        let c = f.check(&json!({})).unwrap();
        assert_eq!(c["header"], "apikey");
        assert!(
            f.check(&json!({"key": "x"}))
                .unwrap_err()
                .contains("unknown field `key`")
        );
        assert!(
            f.check_consumer(&json!({}))
                .unwrap_err()
                .starts_with("property \"key\" is required")
        );
        assert!(f.check_consumer(&json!({"key": 123})).is_err());
        assert_eq!(f.consumer_key(&json!({"key": "k"})).as_deref(), Some("k"));
        assert!(f.check(&json!({"realm": "a\"b"})).is_err());
    }
}
