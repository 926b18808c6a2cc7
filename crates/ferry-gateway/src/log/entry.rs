//! The log entry every logger plugin sends, in APISIX's shape (request, response, route,
//! upstream, latencies), plus `llm_summary`, `llm_request` and `llm_response_text` when the
//! route's `ai-proxy` has `logging.summaries` / `logging.payloads`. Secrets are redacted.

use crate::ctx::Ctx;
use bytes::Bytes;
use http::HeaderMap;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::value::RawValue;
use std::time::SystemTime;

/// What `ai-proxy` asks loggers to add (set when its `logging` is on).
#[derive(Debug, Clone, Default)]
pub struct LlmLogging {
    pub summaries: bool,
    pub payloads: bool,
    /// Header names whose values never appear in an entry (the route's `auth.header`).
    pub secret_headers: Vec<String>,
    /// Query arguments whose values never appear (the route's `auth.query`).
    pub secret_args: Vec<String>,
}

/// What the log phase kept of the response for loggers.
#[derive(Debug, Default)]
pub struct ResponseRecord {
    pub headers: HeaderMap,
    /// Captured body (when a logger asked for it), capped.
    pub body: Option<Vec<u8>>,
}

/// Largest response body a logger captures.
pub const MAX_CAPTURED_BODY: usize = 1 << 20;

const REDACTED: &str = "******";
const ALWAYS_SECRET: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "cookie",
];

/// One log entry, serialised once when the request ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// The entry object as JSON text.
    Json(String),
    /// Raw text (`kafka-logger`'s `meta_format: origin`): sent as is on its own, as a JSON
    /// string inside a batch.
    Text(String),
}

impl Entry {
    /// The entry as sent on its own.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Entry::Json(s) | Entry::Text(s) => s.as_bytes(),
        }
    }

    /// Appends the entry as a JSON value.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Entry::Json(s) => out.extend_from_slice(s.as_bytes()),
            Entry::Text(t) => {
                // Serialising a string into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, t);
            }
        }
    }
}

/// A batch as one JSON array.
pub fn json_array(batch: &[Entry]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(batch.iter().map(|e| e.as_bytes().len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, e) in batch.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        e.write_json(&mut out);
    }
    out.push(b']');
    out
}

/// Headers as a JSON object, secrets redacted.
struct Headers<'a>(&'a HeaderMap, &'a [String]);

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.keys_len()))?;
        for (k, v) in self.0 {
            let name = k.as_str();
            if ALWAYS_SECRET.contains(&name) || self.1.iter().any(|x| x.eq_ignore_ascii_case(name))
            {
                m.serialize_entry(name, REDACTED)?;
            } else if let Ok(text) = v.to_str() {
                m.serialize_entry(name, text)?;
            } else {
                m.serialize_entry(name, &String::from_utf8_lossy(v.as_bytes()))?;
            }
        }
        m.end()
    }
}

/// The query string as a JSON object, secrets redacted.
struct Query<'a>(&'a str, &'a [String]);

impl Serialize for Query<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in url::form_urlencoded::parse(self.0.as_bytes()) {
            if self.1.iter().any(|x| *x == k) {
                m.serialize_entry(&k, REDACTED)?;
            } else {
                m.serialize_entry(&k, &v)?;
            }
        }
        m.end()
    }
}

/// A captured body: its JSON when it is JSON, else its text.
struct Body<'a>(&'a [u8]);

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0).map(serde_json::from_str::<&RawValue>) {
            Ok(Ok(raw)) => raw.serialize(s),
            _ => s.serialize_str(&String::from_utf8_lossy(self.0)),
        }
    }
}

/// Milliseconds with microsecond precision.
fn ms(secs: f64) -> f64 {
    (secs * 1000.0 * 1000.0).round() / 1000.0
}

fn var_num(ctx: &Ctx, name: &str) -> u64 {
    ctx.var(name)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

#[derive(Serialize)]
struct RequestOut<'a> {
    method: &'a str,
    uri: &'a str,
    url: String,
    headers: Headers<'a>,
    querystring: Query<'a>,
    size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Body<'a>>,
}

#[derive(Serialize)]
struct ResponseOut<'a> {
    status: u16,
    headers: Headers<'a>,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Body<'a>>,
}

#[derive(Serialize)]
struct ServerOut {
    hostname: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Summary<'a> {
    request_model: &'a str,
    model: &'a str,
    duration: u64,
    time_to_first_token: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    upstream_response_time: u64,
    stream: bool,
    tool_count: u64,
    has_tool_calls: bool,
    end_user_id: &'a str,
    cache_read_input_tokens: u64,
    cache_creation_input_tokens: u64,
    reasoning_tokens: u64,
    content_risk_level: &'a str,
}

#[derive(Serialize)]
struct LlmRequest<'a> {
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct ResponseText<'a> {
    content: &'a str,
}

/// The `messages` (or `input`) of a JSON request body, unparsed.
#[derive(serde::Deserialize)]
struct Messages<'a> {
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    request: RequestOut<'a>,
    response: ResponseOut<'a>,
    server: ServerOut,
    client_ip: &'a str,
    start_time: u64,
    latency: f64,
    upstream_latency: f64,
    apisix_latency: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    route_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_summary: Option<Summary<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_request: Option<LlmRequest<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_response_text: Option<ResponseText<'a>>,
}

/// Builds the entry for a finished request, serialised straight from the context.
pub fn build(ctx: &Ctx, include_req_body: bool, include_resp_body: bool) -> Entry {
    let llm = ctx.ext.get::<LlmLogging>();
    let secret_headers: &[String] = llm.map_or(&[], |l| &l.secret_headers);
    let secret_args: &[String] = llm.map_or(&[], |l| &l.secret_args);
    let uri = ctx.uri.path_and_query().map_or("/", |p| p.as_str());
    let req_body = ctx.body().filter(|b| !b.is_empty());
    let rec = ctx.ext.get::<ResponseRecord>();
    let empty = HeaderMap::new();
    let total = ctx.elapsed_secs();
    let upstream = ctx.upstream.response_time.unwrap_or(0.0);
    let stream = ctx.var("llm_stream") == Some("true");
    let messages = match llm {
        Some(l) if l.payloads => req_body
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|b| serde_json::from_str::<Messages>(b).ok())
            .and_then(|m| m.messages.or(m.input)),
        _ => None,
    };
    let out = EntryOut {
        request: RequestOut {
            method: ctx.method.as_str(),
            uri,
            url: format!("http://{}:{}{uri}", ctx.host(), ctx.local.port()),
            headers: Headers(&ctx.headers, secret_headers),
            querystring: Query(ctx.query(), secret_args),
            size: ctx.body().map_or(0, Bytes::len),
            body: req_body.filter(|_| include_req_body).map(|b| Body(b)),
        },
        response: ResponseOut {
            status: ctx.status,
            headers: Headers(rec.map_or(&empty, |r| &r.headers), &[]),
            size: ctx.body_bytes_sent,
            body: rec
                .and_then(|r| r.body.as_deref())
                .filter(|b| include_resp_body && !b.is_empty())
                .map(Body),
        },
        server: ServerOut {
            hostname: crate::server::hostname(),
            version: concat!("ferry/", env!("CARGO_PKG_VERSION")),
        },
        client_ip: &ctx.remote_ip,
        start_time: ctx
            .start_wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        latency: ms(total),
        upstream_latency: ms(upstream),
        apisix_latency: ms((total - upstream).max(0.0)),
        route_id: ctx.route.as_ref().map(|r| r.id.as_str()),
        service_id: ctx.route.as_ref().and_then(|r| r.service_id.as_deref()),
        upstream: ctx.upstream.addr.as_deref(),
        llm_summary: llm.filter(|l| l.summaries).map(|_| Summary {
            request_model: ctx.var("request_llm_model").unwrap_or(""),
            model: ctx.var("llm_model").unwrap_or(""),
            duration: (total * 1000.0).round() as u64,
            time_to_first_token: var_num(ctx, "llm_time_to_first_token"),
            prompt_tokens: var_num(ctx, "llm_prompt_tokens"),
            completion_tokens: var_num(ctx, "llm_completion_tokens"),
            total_tokens: var_num(ctx, "llm_total_tokens"),
            upstream_response_time: var_num(ctx, "apisix_upstream_response_time"),
            stream,
            tool_count: var_num(ctx, "llm_tool_count"),
            has_tool_calls: ctx.var("llm_has_tool_calls") == Some("true"),
            end_user_id: ctx.var("llm_end_user_id").unwrap_or(""),
            cache_read_input_tokens: var_num(ctx, "llm_cache_read_input_tokens"),
            cache_creation_input_tokens: var_num(ctx, "llm_cache_creation_input_tokens"),
            reasoning_tokens: var_num(ctx, "llm_reasoning_tokens"),
            content_risk_level: ctx.var("llm_content_risk_level").unwrap_or(""),
        }),
        llm_request: llm
            .filter(|l| l.payloads)
            .map(|_| LlmRequest { stream, messages }),
        llm_response_text: llm.filter(|l| l.payloads).map(|_| ResponseText {
            content: ctx.var("llm_response_text").unwrap_or(""),
        }),
    };
    // Every part serialises infallibly (strings, numbers, maps with string keys).
    Entry::Json(serde_json::to_string(&out).unwrap_or_default())
}
