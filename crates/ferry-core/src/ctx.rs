//! The per-request context: the request head, the (lazily read) body, the matched route as a
//! read-only [`RouteInfo`], the typed LLM stats plugins record, and what the log phase needs.
//! One struct per request; it also answers every `$variable` (see [`VarSource`]).

use crate::error::GatewayError;
use crate::fmt::{hostname, millis3, random_id, time_iso8601, time_local};
use crate::stats::LlmStats;
use bytes::Bytes;
use ferry_config::var::Builtin;
use ferry_config::{LlmVar, Val, Var, VarSource};
use http::{HeaderMap, Method, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How a request body may be read: its largest size (0: unbounded) and the longest wait for
/// its next bytes (`client_body_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max: u64,
    pub timeout: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            max: 0,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Per-request plugin state, one value per type (no `Clone` needed, unlike `http`'s).
#[derive(Default)]
pub struct Extensions(Vec<Box<dyn std::any::Any + Send>>);

impl Extensions {
    pub fn insert<T: Send + 'static>(&mut self, v: T) {
        self.remove::<T>();
        self.0.push(Box::new(v));
    }

    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.iter().find_map(|b| b.downcast_ref::<T>())
    }

    pub fn get_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.0.iter_mut().find_map(|b| b.downcast_mut::<T>())
    }

    pub fn remove<T: 'static>(&mut self) -> Option<T> {
        let i = self.0.iter().position(|b| b.is::<T>())?;
        self.0.swap_remove(i).downcast::<T>().ok().map(|b| *b)
    }
}

/// The matched route as plugins and logs see it (read-only; shared by every request on it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteInfo {
    pub id: String,
    pub name: Option<String>,
    pub service_id: Option<String>,
    pub service_name: Option<String>,
}

/// What the log phase keeps of the response for loggers (when a plugin asked for it).
#[derive(Debug, Default)]
pub struct ResponseRecord {
    pub headers: HeaderMap,
    /// Captured body (when a logger asked for it), capped by the logger.
    pub body: Option<Vec<u8>>,
}

/// What the gateway knows about the upstream exchange, for `$upstream_*` variables.
#[derive(Debug, Default, Clone)]
pub struct UpstreamInfo {
    pub addr: Option<String>,
    pub status: Option<u16>,
    /// Every attempt's status, `", "`-joined, when there was more than one (`$upstream_status`).
    pub status_list: Option<String>,
    pub scheme: Option<&'static str>,
    pub host: Option<String>,
    pub uri: Option<String>,
    /// Seconds, as nginx reports them.
    pub connect_time: Option<f64>,
    pub header_time: Option<f64>,
    pub response_time: Option<f64>,
    pub response_length: u64,
}

enum ReqBody {
    Unread(Incoming),
    Read(Bytes),
    Failed,
}

/// The two ends of a client connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub remote: SocketAddr,
    pub remote_ip: Arc<str>,
    pub local: SocketAddr,
}

impl Peer {
    pub fn new(remote: SocketAddr, local: SocketAddr) -> Peer {
        Peer {
            remote,
            remote_ip: remote.ip().to_string().into(),
            local,
        }
    }
}

/// Per-request state shared by the router, the plugins and the log phase.
pub struct Ctx {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub remote: SocketAddr,
    /// `remote` as text, made once per connection.
    pub remote_ip: Arc<str>,
    pub local: SocketAddr,
    pub start: Instant,
    pub start_wall: SystemTime,
    body: ReqBody,
    body_limits: BodyLimits,
    json: OnceCell<Option<Value>>,
    /// The matched route, once routing is done.
    pub route: Option<Arc<RouteInfo>>,
    /// The consumer an authentication plugin attached.
    pub consumer: Option<crate::consumer::Attached>,
    /// `$apisix_request_id`: random per request; `request-id` replaces it with its own.
    pub request_id: String,
    /// What an AI plugin recorded (`$llm_*`).
    pub llm: LlmStats,
    pub upstream: UpstreamInfo,
    pub status: u16,
    pub body_bytes_sent: u64,
    /// Which of the route's plugins run for this request (see `Chain::run`).
    pub plugin_mask: u64,
    /// The response head (and body) kept for loggers.
    pub response: Option<ResponseRecord>,
    /// Per-request state of plugins, by type.
    pub ext: Extensions,
    /// When the last byte was handed to the connection (set by the log phase).
    pub end: Option<Instant>,
}

impl Ctx {
    pub fn new(req: http::Request<Incoming>, peer: &Peer, limits: BodyLimits) -> Ctx {
        let (parts, body) = req.into_parts();
        Ctx::from_parts(parts, ReqBody::Unread(body), peer, limits)
    }

    fn from_parts(
        parts: http::request::Parts,
        body: ReqBody,
        peer: &Peer,
        body_limits: BodyLimits,
    ) -> Ctx {
        Ctx {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            remote: peer.remote,
            remote_ip: peer.remote_ip.clone(),
            local: peer.local,
            start: Instant::now(),
            start_wall: SystemTime::now(),
            body,
            body_limits,
            json: OnceCell::new(),
            route: None,
            consumer: None,
            request_id: random_id(),
            llm: LlmStats::default(),
            upstream: UpstreamInfo::default(),
            status: 0,
            body_bytes_sent: 0,
            plugin_mask: u64::MAX,
            response: None,
            ext: Extensions::default(),
            end: None,
        }
    }

    /// A context whose body is already in memory (benchmarks, tests, internal requests).
    pub fn with_body(
        parts: http::request::Parts,
        body: Bytes,
        remote: SocketAddr,
        local: SocketAddr,
    ) -> Ctx {
        Ctx::from_parts(
            parts,
            ReqBody::Read(body),
            &Peer::new(remote, local),
            BodyLimits::default(),
        )
    }

    /// Reads the whole request body once (bounded by the body-size limit, each wait for more
    /// bytes by the body timeout) and returns it.
    pub async fn read_body(&mut self) -> Result<&Bytes, GatewayError> {
        if let ReqBody::Unread(_) = self.body {
            let BodyLimits { max, timeout } = self.body_limits;
            if let Some(len) = self
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                && max > 0
                && len > max
            {
                self.body = ReqBody::Failed;
                return Err(too_large(len, max));
            }
            let ReqBody::Unread(incoming) = std::mem::replace(&mut self.body, ReqBody::Failed)
            else {
                unreachable!("checked above")
            };
            let limit = if max == 0 { usize::MAX } else { max as usize };
            let mut body = Limited::new(incoming, limit);
            let mut first: Option<Bytes> = None;
            let mut more: Vec<u8> = Vec::new();
            loop {
                let frame = match tokio::time::timeout(timeout, body.frame()).await {
                    Err(_) => {
                        return Err(GatewayError::client(
                            StatusCode::REQUEST_TIMEOUT,
                            format!(
                                "client_body_timeout: no request body bytes for {} ms",
                                timeout.as_millis()
                            ),
                        ));
                    }
                    Ok(None) => break,
                    Ok(Some(Ok(f))) => f,
                    Ok(Some(Err(e))) => {
                        if e.is::<http_body_util::LengthLimitError>() {
                            return Err(too_large(max + 1, max));
                        }
                        return Err(GatewayError::client(
                            StatusCode::BAD_REQUEST,
                            format!("failed to read request body: {e}"),
                        ));
                    }
                };
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                match &first {
                    None => first = Some(data),
                    Some(f) => {
                        if more.is_empty() {
                            more.extend_from_slice(f);
                        }
                        more.extend_from_slice(&data);
                    }
                }
            }
            self.body = ReqBody::Read(if more.is_empty() {
                first.unwrap_or_default()
            } else {
                Bytes::from(more)
            });
        }
        match &self.body {
            ReqBody::Read(b) => Ok(b),
            _ => Err(GatewayError::client(
                StatusCode::BAD_REQUEST,
                "failed to read request body",
            )),
        }
    }

    /// The body, if it was read.
    pub fn body(&self) -> Option<&Bytes> {
        match &self.body {
            ReqBody::Read(b) => Some(b),
            _ => None,
        }
    }

    /// The body parsed as JSON (once), if it was read and is JSON.
    pub fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| self.body().and_then(|b| serde_json::from_slice(b).ok()))
            .as_ref()
    }

    /// Takes the parsed JSON body out of the context (to shape it without a copy).
    pub fn take_json(&mut self) -> Option<Value> {
        self.json();
        self.json.take().flatten()
    }

    /// `$host`: the request's host without port, lower-cased.
    pub fn host(&self) -> Cow<'_, str> {
        let raw = self
            .uri
            .host()
            .or_else(|| self.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        let no_port = strip_port(raw);
        if no_port.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(no_port.to_ascii_lowercase())
        } else {
            Cow::Borrowed(no_port)
        }
    }

    pub fn query(&self) -> &str {
        self.uri.query().unwrap_or("")
    }

    /// `$arg_<name>`: the first matching query argument, raw (not URL-decoded), as nginx.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.query().split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            k.eq_ignore_ascii_case(name).then_some(v)
        })
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == name).then_some(v)
            })
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn content_type(&self) -> &str {
        self.header_str("content-type").unwrap_or("")
    }

    fn form_arg(&self, name: &str) -> Option<String> {
        if !self
            .content_type()
            .starts_with("application/x-www-form-urlencoded")
        {
            return None;
        }
        let body = self.body()?;
        let text = std::str::from_utf8(body).ok()?;
        text.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (url_decode(k) == name).then(|| url_decode(v))
        })
    }

    /// `post_arg.*` against a JSON body, or a form body for single-key paths.
    fn post_arg(&self, path: &ferry_config::var::BodyPath) -> Val<'_> {
        if let Some(json) = self.json() {
            return path.resolve(json);
        }
        if let ferry_config::var::BodyPath::Keys(keys) = path
            && keys.len() == 1
        {
            return self
                .form_arg(&keys[0])
                .map_or(Val::Nil, |v| Val::Str(Cow::Owned(v)));
        }
        Val::Nil
    }

    /// Seconds since the request started, as `$request_time` prints it.
    pub fn elapsed_secs(&self) -> f64 {
        self.end
            .unwrap_or_else(Instant::now)
            .duration_since(self.start)
            .as_secs_f64()
    }

    fn builtin(&self, b: Builtin) -> Val<'_> {
        fn s(v: &str) -> Val<'_> {
            Val::Str(Cow::Borrowed(v))
        }
        fn owned(v: String) -> Val<'static> {
            Val::Str(Cow::Owned(v))
        }
        match b {
            Builtin::Uri => s(self.uri.path()),
            Builtin::RequestUri => s(self.uri.path_and_query().map_or("/", |p| p.as_str())),
            Builtin::Host => Val::Str(self.host()),
            Builtin::RemoteAddr => s(&self.remote_ip),
            Builtin::RemotePort => owned(self.remote.port().to_string()),
            Builtin::RemoteUser => Val::Nil,
            Builtin::ServerAddr => owned(self.local.ip().to_string()),
            Builtin::ServerPort => owned(self.local.port().to_string()),
            Builtin::ServerProtocol => s(protocol(self.version)),
            Builtin::RequestMethod => s(self.method.as_str()),
            Builtin::Scheme => s("http"),
            Builtin::QueryString => match self.uri.query() {
                Some(q) => s(q),
                None => Val::Nil,
            },
            Builtin::Request => owned(format!(
                "{} {} {}",
                self.method,
                self.uri.path_and_query().map_or("/", |p| p.as_str()),
                protocol(self.version)
            )),
            Builtin::RequestLength => self.body().map_or(Val::Nil, |b| owned(b.len().to_string())),
            Builtin::ContentType => self.header_str("content-type").map_or(Val::Nil, s),
            Builtin::ContentLength => self.header_str("content-length").map_or(Val::Nil, s),
            Builtin::Hostname => s(hostname()),
            Builtin::RouteId => self.route.as_ref().map_or(Val::Nil, |r| s(&r.id)),
            Builtin::ConsumerName => self
                .consumer
                .as_ref()
                .map_or(Val::Nil, |c| s(&c.consumer.username)),
            Builtin::ConsumerGroupId => self
                .consumer
                .as_ref()
                .and_then(|c| c.consumer.group_id.as_deref())
                .map_or(Val::Nil, s),
            Builtin::RouteName => self
                .route
                .as_ref()
                .and_then(|r| r.name.as_deref())
                .map_or(Val::Nil, s),
            Builtin::ServiceId => self
                .route
                .as_ref()
                .and_then(|r| r.service_id.as_deref())
                .map_or(Val::Nil, s),
            Builtin::ServiceName => self
                .route
                .as_ref()
                .and_then(|r| r.service_name.as_deref())
                .map_or(Val::Nil, s),
            Builtin::RequestId => s(&self.request_id),
            Builtin::Status => owned(itoa::Buffer::new().format(self.status).to_string()),
            Builtin::BodyBytesSent | Builtin::BytesSent => {
                owned(itoa::Buffer::new().format(self.body_bytes_sent).to_string())
            }
            Builtin::RequestTime => owned(millis3(self.elapsed_secs())),
            Builtin::TimeLocal => owned(time_local(self.start_wall)),
            Builtin::TimeIso8601 => owned(time_iso8601(self.start_wall)),
            Builtin::Msec => owned(millis3(
                self.start_wall
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            )),
            Builtin::UpstreamAddr => self.upstream.addr.as_deref().map_or(Val::Nil, s),
            Builtin::UpstreamStatus => match &self.upstream.status_list {
                Some(l) => s(l),
                None => self
                    .upstream
                    .status
                    .map_or(Val::Nil, |v| owned(v.to_string())),
            },
            Builtin::BalancerIp => self.llm.instance.as_deref().map_or(Val::Nil, s),
            Builtin::UpstreamConnectTime => secs(self.upstream.connect_time),
            Builtin::UpstreamHeaderTime => secs(self.upstream.header_time),
            Builtin::UpstreamResponseTime => secs(self.upstream.response_time),
            Builtin::UpstreamResponseLength => match self.upstream.addr {
                Some(_) => owned(self.upstream.response_length.to_string()),
                None => Val::Nil,
            },
            Builtin::UpstreamUri => self.upstream.uri.as_deref().map_or(Val::Nil, s),
            Builtin::UpstreamHost => self.upstream.host.as_deref().map_or(Val::Nil, s),
            Builtin::UpstreamScheme => self.upstream.scheme.map_or(Val::Nil, s),
        }
    }
}

impl Ctx {
    /// `$llm_*`, `$request_type` and friends from the typed stats, with APISIX's defaults.
    fn llm_var(&self, v: LlmVar) -> Val<'_> {
        fn num(n: u64) -> Val<'static> {
            Val::Str(Cow::Owned(itoa::Buffer::new().format(n).to_string()))
        }
        fn opt(s: Option<&str>) -> Val<'_> {
            s.map_or(Val::Nil, Val::str)
        }
        fn flag(b: bool) -> Val<'static> {
            Val::str(if b { "true" } else { "false" })
        }
        let l = &self.llm;
        match v {
            LlmVar::RequestType => Val::str(l.request_type.as_str()),
            LlmVar::Provider => opt(l.provider),
            LlmVar::RequestModel => opt(l.request_model.as_deref()),
            LlmVar::Model => opt(l.model.as_deref()),
            LlmVar::Stream => flag(l.stream),
            LlmVar::PromptTokens => num(l.prompt_tokens()),
            LlmVar::CompletionTokens => num(l.completion_tokens()),
            LlmVar::TotalTokens => num(l.total_tokens()),
            LlmVar::CacheReadInputTokens => num(l.cache_read_tokens()),
            LlmVar::CacheCreationInputTokens => num(l.cache_creation_tokens()),
            LlmVar::ReasoningTokens => num(l.reasoning_tokens()),
            LlmVar::TimeToFirstToken => num(l.ttft_ms.unwrap_or(0)),
            LlmVar::UpstreamResponseTime => l.upstream_response_ms.map_or(Val::Nil, num),
            LlmVar::ToolCount => num(l.tool_count),
            LlmVar::HasToolCalls => flag(l.has_tool_calls),
            LlmVar::EndUserId => opt(l.end_user.as_deref()),
            LlmVar::ResponseText => opt(l.response_text.as_deref()),
            LlmVar::ContentRiskLevel => Val::Nil,
        }
    }
}

fn secs(v: Option<f64>) -> Val<'static> {
    v.map_or(Val::Nil, |t| Val::Str(Cow::Owned(millis3(t))))
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

impl VarSource for Ctx {
    fn get(&self, var: &Var) -> Val<'_> {
        match var {
            Var::Builtin(b) => self.builtin(*b),
            Var::Arg(a) => self.arg(a).map_or(Val::Nil, Val::str),
            Var::Header(h) => self.header_str(h).map_or(Val::Nil, Val::str),
            Var::Cookie(c) => self.cookie(c).map_or(Val::Nil, Val::str),
            Var::PostArg(p) => self.post_arg(p),
            Var::PostArgForm(n) => self
                .form_arg(n)
                .map_or(Val::Nil, |v| Val::Str(Cow::Owned(v))),
            Var::Llm(l) => self.llm_var(*l),
            Var::Custom(_) => Val::Nil,
        }
    }
}

fn too_large(len: u64, max: u64) -> GatewayError {
    GatewayError::client(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request size {len} is greater than the maximum size {max} allowed"),
    )
}

/// Removes a `:port` suffix (keeping IPv6 brackets intact).
pub fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        return h.find(']').map_or(h, |i| &h[..=i]);
    }
    match h.rfind(':') {
        Some(i) if h[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &h[..i],
        _ => h,
    }
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_decoding() {
        assert_eq!(strip_port("a.com:9080"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(url_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(url_decode("%41%42"), "AB");
    }
}
