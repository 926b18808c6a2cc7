//! The log entry every logger plugin sends, in APISIX's shape (request, response, route,
//! upstream, latencies), plus `llm_summary`, `llm_request` and `llm_response_text` when the
//! route's `ai-proxy` has `logging.summaries` / `logging.payloads`. Secrets are redacted.

use super::json::{Obj, push_str};
use ferry_core::ctx::Ctx;
use http::HeaderMap;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;
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
fn headers(o: &mut Obj<'_>, h: &HeaderMap, secret: &[String]) {
    for (k, v) in h {
        let name = k.as_str();
        if ALWAYS_SECRET.contains(&name) || secret.iter().any(|x| x.eq_ignore_ascii_case(name)) {
            o.str(name, REDACTED);
        } else if let Ok(text) = v.to_str() {
            o.str(name, text);
        } else {
            o.str(name, &String::from_utf8_lossy(v.as_bytes()));
        }
    }
}

/// A captured body: its JSON when it is JSON, else its text.
fn body(o: &mut Obj<'_>, b: &[u8]) {
    match std::str::from_utf8(b).map(serde_json::from_str::<&RawValue>) {
        Ok(Ok(raw)) => o.raw("body", raw.get()),
        _ => o.str("body", &String::from_utf8_lossy(b)),
    };
}

/// The `messages` (or `input`, or Gemini's `contents`) of a JSON request body, unparsed.
#[derive(serde::Deserialize)]
struct Messages<'a> {
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    /// A Gemini client's `contents`.
    #[serde(borrow)]
    contents: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
}

/// Builds the entry for a finished request, written straight from the context.
pub fn build(ctx: &Ctx, include_req_body: bool, include_resp_body: bool) -> Entry {
    let llm = ctx.ext.get::<Arc<LlmLogging>>().map(Arc::as_ref);
    let mut secret_headers: Cow<'_, [String]> =
        Cow::Borrowed(llm.map_or(&[], |l| &l.secret_headers));
    let mut secret_args: Cow<'_, [String]> = Cow::Borrowed(llm.map_or(&[], |l| &l.secret_args));
    // A gateway credential (key-auth) is never written to a log.
    if let Some(c) = ctx.ext.get::<crate::key_auth::Credential>() {
        secret_headers.to_mut().push(c.header.as_str().to_string());
        secret_args.to_mut().push(c.query.clone());
    }
    let (secret_headers, secret_args) = (&*secret_headers, &*secret_args);
    let uri = redacted_uri(ctx, secret_args);
    let uri = uri.as_ref();
    let req_body = ctx.body().filter(|b| !b.is_empty());
    let rec = ctx.response.as_ref();
    let total = ctx.elapsed_secs();
    let upstream = ctx.upstream.response_time.unwrap_or(0.0);
    let stream = ctx.llm.stream;
    let mut out = String::with_capacity(1536);
    let mut e = Obj::start(&mut out);
    e.obj("request", |r| {
        r.str("method", ctx.method.as_str()).str("uri", uri);
        let mut url = String::with_capacity(uri.len() + 32);
        url.push_str("http://");
        url.push_str(&ctx.host());
        url.push(':');
        url.push_str(itoa::Buffer::new().format(ctx.local.port()));
        url.push_str(uri);
        r.str("url", &url);
        r.obj("headers", |h| headers(h, &ctx.headers, secret_headers));
        r.obj("querystring", |q| {
            for (k, v) in url::form_urlencoded::parse(ctx.query().as_bytes()) {
                let v = if secret_args.iter().any(|x| *x == k) {
                    REDACTED.into()
                } else {
                    v
                };
                q.str(&json_key(&k), &v);
            }
        });
        r.u64("size", ctx.body().map_or(0, |b| b.len() as u64));
        if let Some(b) = req_body.filter(|_| include_req_body) {
            body(r, b);
        }
    });
    e.obj("response", |r| {
        r.u64("status", u64::from(ctx.status));
        r.obj("headers", |h| {
            if let Some(rec) = rec {
                headers(h, &rec.headers, &[]);
            }
        });
        r.u64("size", ctx.body_bytes_sent);
        if let Some(b) = rec
            .and_then(|r| r.body.as_deref())
            .filter(|b| include_resp_body && !b.is_empty())
        {
            body(r, b);
        }
    });
    e.obj("server", |s| {
        s.str("hostname", ferry_core::fmt::hostname())
            .str("version", concat!("ferry/", env!("CARGO_PKG_VERSION")));
    });
    e.str("client_ip", &ctx.remote_ip)
        .u64(
            "start_time",
            ctx.start_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        )
        .ms("latency", total)
        .ms("upstream_latency", upstream)
        .ms("apisix_latency", (total - upstream).max(0.0));
    if let Some(r) = &ctx.route {
        e.str("route_id", &r.id);
        if let Some(s) = &r.service_id {
            e.str("service_id", s);
        }
    }
    if let Some(a) = &ctx.upstream.addr {
        e.str("upstream", a);
    }
    if let Some(c) = &ctx.consumer {
        e.obj("consumer", |o| {
            o.str("username", &c.consumer.username);
        });
    }
    if let Some(l) = llm {
        if l.summaries {
            let m = &ctx.llm;
            e.obj("llm_summary", |s| {
                s.str("request_model", m.request_model.as_deref().unwrap_or(""))
                    .str("model", m.model.as_deref().unwrap_or(""))
                    .u64("duration", (total * 1000.0).round() as u64)
                    .u64("time_to_first_token", m.ttft_ms.unwrap_or(0))
                    .u64("prompt_tokens", m.prompt_tokens())
                    .u64("completion_tokens", m.completion_tokens())
                    .u64("total_tokens", m.total_tokens())
                    .u64(
                        "upstream_response_time",
                        m.upstream_response_ms.unwrap_or(0),
                    )
                    .bool("stream", stream)
                    .u64("tool_count", m.tool_count)
                    .bool("has_tool_calls", m.has_tool_calls)
                    .str("end_user_id", m.end_user.as_deref().unwrap_or(""))
                    .u64("cache_read_input_tokens", m.cache_read_tokens())
                    .u64("cache_creation_input_tokens", m.cache_creation_tokens())
                    .u64("reasoning_tokens", m.reasoning_tokens())
                    .str("content_risk_level", "");
            });
        }
        if l.payloads {
            let messages = req_body
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|b| serde_json::from_str::<Messages>(b).ok())
                .and_then(|m| m.messages.or(m.input).or(m.contents));
            e.obj("llm_request", |r| {
                r.bool("stream", stream);
                if let Some(m) = messages {
                    r.raw("messages", m.get());
                }
            });
            e.obj("llm_response_text", |t| {
                t.str("content", ctx.llm.response_text.as_deref().unwrap_or(""));
            });
        }
    }
    e.end();
    Entry::Json(out)
}

/// The request URI with the values of secret query arguments replaced.
fn redacted_uri<'a>(ctx: &'a Ctx, secret_args: &[String]) -> std::borrow::Cow<'a, str> {
    let full = ctx.uri.path_and_query().map_or("/", |p| p.as_str());
    let query = ctx.query();
    let secret = |k: &str| {
        let name = url::form_urlencoded::parse(k.as_bytes())
            .next()
            .map(|(n, _)| n.into_owned())
            .unwrap_or_default();
        secret_args.contains(&name)
    };
    if secret_args.is_empty()
        || !query
            .split('&')
            .any(|kv| secret(kv.split('=').next().unwrap_or("")))
    {
        return std::borrow::Cow::Borrowed(full);
    }
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| {
            let k = kv.split('=').next().unwrap_or("");
            if secret(k) {
                format!("{k}={REDACTED}")
            } else {
                kv.to_string()
            }
        })
        .collect();
    std::borrow::Cow::Owned(format!("{}?{}", ctx.uri.path(), parts.join("&")))
}

/// A query-argument name as the inside of a JSON key (escaped when needed).
fn json_key(k: &str) -> std::borrow::Cow<'_, str> {
    let mut quoted = String::new();
    push_str(&mut quoted, k);
    if quoted.len() == k.len() + 2 {
        std::borrow::Cow::Borrowed(k)
    } else {
        std::borrow::Cow::Owned(quoted[1..quoted.len() - 1].to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Odd names and values still give valid JSON, with secrets redacted.
    #[test]
    fn entry_is_valid_json_with_secrets_redacted() {
        let req = http::Request::post("/p?a%22b=1&key=secret&q=x%0Ay")
            .header("host", "gw.test:9080")
            .header("authorization", "Bearer sk-1")
            .header(
                "x-odd",
                http::HeaderValue::from_bytes(b"caf\xc3\xa9 \"q\"").unwrap(),
            )
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let mut ctx = Ctx::with_body(
            parts,
            bytes::Bytes::from_static(br#"{"messages":[{"role":"user","content":"hi"}]}"#),
            "10.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:9080".parse().unwrap(),
        );
        ctx.status = 200;
        ctx.llm.usage = Some(ferry_protocol::Usage {
            prompt: 7,
            ..Default::default()
        });
        ctx.ext.insert(Arc::new(LlmLogging {
            summaries: true,
            payloads: true,
            secret_headers: vec![],
            secret_args: vec!["key".into()],
        }));
        let Entry::Json(text) = build(&ctx, true, false) else {
            panic!("not json")
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["request"]["headers"]["authorization"], REDACTED);
        assert_eq!(v["request"]["headers"]["x-odd"], "café \"q\"");
        assert_eq!(v["request"]["querystring"]["a\"b"], "1");
        assert_eq!(v["request"]["querystring"]["key"], REDACTED);
        assert_eq!(v["request"]["querystring"]["q"], "x\ny");
        assert_eq!(
            v["request"]["url"],
            "http://gw.test:9080/p?a%22b=1&key=******&q=x%0Ay"
        );
        assert_eq!(v["request"]["body"]["messages"][0]["content"], "hi");
        assert_eq!(v["client_ip"], "10.0.0.1");
        assert_eq!(v["llm_summary"]["prompt_tokens"], 7);
        assert_eq!(v["llm_request"]["messages"][0]["role"], "user");
        assert_eq!(v["request"]["uri"], "/p?a%22b=1&key=******&q=x%0Ay");
        assert!(!text.contains("secret"), "{text}");
    }
}
