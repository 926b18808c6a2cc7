//! Google service-account tokens for `auth.gcp` (Vertex AI and any Google endpoint): the
//! OAuth 2.0 JWT-bearer grant (an RS256 JWT signed with the key's `private_key`, posted to its
//! `token_uri`), cached for `expires_in` less `expire_early_secs` (at most `max_ttl`). One fetch
//! serves every concurrent request (single flight); a failing token endpoint is retried with a
//! per-key backoff (1 s doubling to 30 s), never per request. Sources with equal settings are
//! shared across routes. No secret (key, assertion, token) is ever logged.

use crate::transport::{ClientKey, Transport, Upstream};
use bytes::Bytes;
use ferry_core::error::GatewayError;
use ferry_core::shared::WeakCache;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The environment variable read when the configuration names no key.
pub const ENV_KEY: &str = "GCP_SERVICE_ACCOUNT";
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `auth.gcp` as configured.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct GcpConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_json: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<u64>,
    #[serde(default = "d_early")]
    pub expire_early_secs: u64,
}

fn d_early() -> u64 {
    60
}

/// Where the key comes from, decided at load; read at fetch time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeySource {
    Inline(String),
    /// `$ENV://NAME` or `$ENV://NAME/field`.
    Env(String, Option<String>),
    /// The `GCP_SERVICE_ACCOUNT` environment variable.
    Default,
}

impl GcpConf {
    /// APISIX's checks: `max_ttl` ≥ 1; a key that is not a secret reference must be a JSON
    /// object (whether it has a usable `private_key` is found per request).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_ttl == Some(0) {
            return Err(
                "property \"auth.gcp.max_ttl\" validation failed: expected 0 to be at least 1"
                    .into(),
            );
        }
        let Some(sa) = &self.service_account_json else {
            return Ok(());
        };
        if sa.starts_with("$secret://") {
            return Err("auth.gcp.service_account_json: $secret:// references need a secret manager, which Ferry does not have; use $ENV://NAME or the key itself".into());
        }
        if env_ref(sa).is_some() {
            return Ok(());
        }
        match serde_json::from_str::<Value>(sa) {
            Ok(Value::Object(_)) => Ok(()),
            Ok(_) => Err("invalid gcp service_account_json: expected a JSON object".into()),
            Err(e) => Err(format!("invalid gcp service_account_json: {e}")),
        }
    }

    fn source(&self) -> KeySource {
        match &self.service_account_json {
            None => KeySource::Default,
            Some(s) if env_ref(s).is_some() => {
                let rest = env_ref(s).unwrap_or_default();
                match rest.split_once('/') {
                    Some((name, field)) => KeySource::Env(name.into(), Some(field.into())),
                    None => KeySource::Env(rest.into(), None),
                }
            }
            Some(s) => KeySource::Inline(s.clone()),
        }
    }
}

/// What follows `$ENV://` (any case), if `s` is such a reference.
fn env_ref(s: &str) -> Option<&str> {
    const P: &str = "$ENV://";
    s.get(..P.len())
        .filter(|p| p.eq_ignore_ascii_case(P))
        .map(|_| &s[P.len()..])
}

/// The fields of a service-account key Ferry uses.
#[derive(Deserialize)]
struct ServiceAccount {
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
    scope: Option<Value>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    scope: &'a str,
    iat: u64,
    exp: u64,
}

/// What a token fetch failed with: the status to answer and a message without secrets.
#[derive(Debug, Clone)]
struct Failure(StatusCode, String);

impl Failure {
    fn config(msg: impl Into<String>) -> Failure {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, msg.into())
    }
    fn upstream(msg: impl Into<String>) -> Failure {
        Failure(StatusCode::BAD_GATEWAY, msg.into())
    }
}

#[derive(Default)]
struct State {
    token: Option<(Arc<str>, Instant)>,
    failures: u32,
    retry_at: Option<Instant>,
    last: Option<Failure>,
}

/// Tokens for one (key, policy, instance): shared by every route with the same settings.
pub struct TokenSource {
    key: KeySource,
    expire_early: u64,
    max_ttl: Option<u64>,
    client: Arc<Upstream>,
    state: tokio::sync::Mutex<State>,
    fetches: std::sync::atomic::AtomicU64,
}

/// The identity of a token source (APISIX's cache key, without hashing: it never leaves memory).
#[derive(Clone, PartialEq, Eq, Hash)]
struct SourceKey {
    key: KeySource,
    expire_early: u64,
    max_ttl: Option<u64>,
    instance: Option<String>,
}

fn sources() -> &'static WeakCache<SourceKey, TokenSource> {
    static S: OnceLock<WeakCache<SourceKey, TokenSource>> = OnceLock::new();
    S.get_or_init(WeakCache::default)
}

/// The token source for `conf` (ai-proxy-multi passes the instance name: APISIX keeps one
/// token per instance).
pub fn source(
    conf: &GcpConf,
    instance: Option<&str>,
    transport: &Transport,
) -> Result<Arc<TokenSource>, String> {
    let key = SourceKey {
        key: conf.source(),
        expire_early: conf.expire_early_secs,
        max_ttl: conf.max_ttl,
        instance: instance.map(String::from),
    };
    let client = transport.client(ClientKey {
        ssl_verify: true,
        keepalive: true,
        keepalive_timeout_ms: 60_000,
        keepalive_pool: 2,
        timeout_ms: FETCH_TIMEOUT.as_millis() as u64,
        connect_timeout_ms: None,
        sni: None,
    })?;
    sources().get_or_try_insert(key.clone(), || {
        Ok(Arc::new(TokenSource {
            key: key.key,
            expire_early: key.expire_early,
            max_ttl: key.max_ttl,
            client,
            state: tokio::sync::Mutex::new(State::default()),
            fetches: std::sync::atomic::AtomicU64::new(0),
        }))
    })
}

impl TokenSource {
    /// A valid access token: the cached one, or one fetched now (one fetch however many
    /// requests wait). During a backoff after failures, the last failure at once.
    pub async fn token(&self) -> Result<Arc<str>, GatewayError> {
        let mut st = self.state.lock().await;
        let now = Instant::now();
        if let Some((t, until)) = &st.token
            && now < *until
        {
            return Ok(t.clone());
        }
        st.token = None;
        if let (Some(at), Some(f)) = (st.retry_at, &st.last)
            && now < at
        {
            return Err(render(f));
        }
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.fetch().await {
            Ok((token, expires_in)) => {
                let ttl = self.lifetime(expires_in);
                let token: Arc<str> = Arc::from(token);
                st.token = Some((token.clone(), Instant::now() + ttl));
                st.failures = 0;
                st.retry_at = None;
                st.last = None;
                Ok(token)
            }
            Err(f) => {
                st.failures += 1;
                let wait = Duration::from_secs(1u64 << (st.failures - 1).min(5)).min(MAX_BACKOFF);
                st.retry_at = Some(Instant::now() + wait);
                tracing::warn!(
                    "failed to get gcp access token: {} (next attempt in {}s)",
                    f.1,
                    wait.as_secs()
                );
                let e = render(&f);
                st.last = Some(f);
                Err(e)
            }
        }
    }

    /// How many token requests were made (tests).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `expires_in` less `expire_early_secs` (when it leaves something), at most `max_ttl`.
    fn lifetime(&self, expires_in: u64) -> Duration {
        let mut ttl = expires_in;
        if ttl > self.expire_early {
            ttl -= self.expire_early;
        }
        if let Some(m) = self.max_ttl {
            ttl = ttl.min(m);
        }
        Duration::from_secs(ttl)
    }

    /// The key's JSON text.
    fn key_text(&self) -> Result<String, Failure> {
        match &self.key {
            KeySource::Inline(s) => Ok(s.clone()),
            KeySource::Env(name, field) => {
                let v = std::env::var(name)
                    .map_err(|_| Failure::config(format!("$ENV://{name} is not set")))?;
                match field {
                    None => Ok(v),
                    Some(f) => serde_json::from_str::<Value>(&v)
                        .ok()
                        .and_then(|j| match j.get(f.as_str()) {
                            Some(Value::String(s)) => Some(s.clone()),
                            Some(other) => Some(other.to_string()),
                            None => None,
                        })
                        .ok_or_else(|| Failure::config(format!("$ENV://{name}/{f} is not set"))),
                }
            }
            KeySource::Default => std::env::var(ENV_KEY).map_err(|_| {
                Failure::config(format!(
                    "no service account (set auth.gcp.service_account_json or {ENV_KEY})"
                ))
            }),
        }
    }

    /// One grant: the signed assertion posted to the token endpoint.
    async fn fetch(&self) -> Result<(String, u64), Failure> {
        let text = self.key_text()?;
        let sa: ServiceAccount = serde_json::from_str(&text).map_err(|e| {
            Failure::config(format!("the service account key is not valid JSON: {e}"))
        })?;
        let email = sa
            .client_email
            .ok_or_else(|| Failure::config("the service account key has no client_email"))?;
        let pem = sa
            .private_key
            .ok_or_else(|| Failure::config("the service account key has no private_key"))?;
        let token_uri = sa.token_uri.unwrap_or_else(|| DEFAULT_TOKEN_URI.into());
        let scope = match sa.scope {
            Some(Value::String(s)) => s,
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            _ => DEFAULT_SCOPE.into(),
        };
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
            Failure::config("the service account's private_key is not an RSA key in PEM")
        })?;
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut head = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        head.kid = sa.private_key_id;
        let claims = Claims {
            iss: &email,
            aud: &token_uri,
            scope: &scope,
            iat,
            exp: iat + 3600,
        };
        let assertion = jsonwebtoken::encode(&head, &claims, &key)
            .map_err(|e| Failure::config(format!("cannot sign the token request: {e}")))?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let uri: http::Uri = token_uri
            .parse()
            .map_err(|_| Failure::config(format!("invalid token_uri {token_uri}")))?;
        let mut req = http::Request::new(Full::new(Bytes::from(form)));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = uri;
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let authority = token_uri.as_str();
        let resp = self
            .client
            .send_within(req, FETCH_TIMEOUT)
            .await
            .map_err(|e| {
                Failure::upstream(
                    e.describe(authority)
                        .replace("the provider", "the token endpoint"),
                )
            })?;
        let status = resp.status();
        let body = tokio::time::timeout(
            FETCH_TIMEOUT,
            Limited::new(resp.into_body(), 64 * 1024).collect(),
        )
        .await
        .map_err(|_| Failure::upstream(format!("token endpoint {token_uri} timed out")))?
        .map_err(|e| Failure::upstream(format!("token endpoint {token_uri}: {e}")))?
        .to_bytes();
        let v: Option<Value> = serde_json::from_slice(&body).ok();
        if status != StatusCode::OK {
            let why = v
                .as_ref()
                .and_then(|v| v["error"].as_str().map(String::from))
                .unwrap_or_else(|| "an unexpected answer".into());
            return Err(Failure::upstream(format!(
                "token endpoint {token_uri} answered {}: {why}",
                status.as_u16()
            )));
        }
        let v = v.ok_or_else(|| {
            Failure::upstream(format!("token endpoint {token_uri} answered invalid JSON"))
        })?;
        let token = v["access_token"].as_str().ok_or_else(|| {
            Failure::upstream(format!(
                "token endpoint {token_uri} answered no access_token"
            ))
        })?;
        Ok((token.to_string(), v["expires_in"].as_u64().unwrap_or(3600)))
    }
}

fn render(f: &Failure) -> GatewayError {
    GatewayError::gateway(f.0, format!("failed to get gcp access token: {}", f.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(v: Value) -> GcpConf {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn checks_and_sources() {
        assert!(conf(serde_json::json!({})).validate().is_ok());
        assert!(
            conf(serde_json::json!({"service_account_json": "{\"type\":\"service_account\"}"}))
                .validate()
                .is_ok()
        );
        assert!(
            conf(serde_json::json!({"service_account_json": "$env://GCP_KEY"}))
                .validate()
                .is_ok()
        );
        assert_eq!(
            conf(serde_json::json!({"service_account_json": "123"}))
                .validate()
                .unwrap_err(),
            "invalid gcp service_account_json: expected a JSON object"
        );
        assert!(
            conf(serde_json::json!({"service_account_json": "{nope"}))
                .validate()
                .unwrap_err()
                .starts_with("invalid gcp service_account_json: ")
        );
        assert!(conf(serde_json::json!({"max_ttl": 0})).validate().is_err());
        assert_eq!(conf(serde_json::json!({})).expire_early_secs, 60);
        assert_eq!(
            conf(serde_json::json!({"service_account_json": "$ENV://K/json"})).source(),
            KeySource::Env("K".into(), Some("json".into()))
        );
        assert_eq!(conf(serde_json::json!({})).source(), KeySource::Default);
    }

    #[test]
    fn lifetimes_as_apisix_computes_them() {
        let t = |expires_in, early, max_ttl| {
            let s = TokenSource {
                key: KeySource::Default,
                expire_early: early,
                max_ttl,
                client: Transport::default()
                    .client(ClientKey {
                        ssl_verify: true,
                        keepalive: true,
                        keepalive_timeout_ms: 1000,
                        keepalive_pool: 1,
                        timeout_ms: 1000,
                        connect_timeout_ms: None,
                        sni: None,
                    })
                    .unwrap(),
                state: tokio::sync::Mutex::new(State::default()),
                fetches: Default::default(),
            };
            s.lifetime(expires_in).as_secs()
        };
        assert_eq!(t(5, 60, None), 5);
        assert_eq!(t(10, 60, Some(8)), 8);
        assert_eq!(t(3600, 60, None), 3540);
        assert_eq!(t(3, 2, None), 1);
        assert_eq!(t(3600, 60, Some(1)), 1);
    }
}
