//! The log entry every logger plugin sends, in APISIX's shape (request, response, route,
//! upstream, latencies), plus `llm_summary`, `llm_request` and `llm_response_text` when the
//! route's `ai-proxy` has `logging.summaries` / `logging.payloads`. Secrets are redacted.

use crate::ctx::Ctx;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value, json};
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

fn headers_json(h: &HeaderMap, secret: &[String]) -> Value {
    let mut m = Map::new();
    for (k, v) in h {
        let name = k.as_str();
        let val = if ALWAYS_SECRET.contains(&name)
            || secret.iter().any(|s| s.eq_ignore_ascii_case(name))
        {
            REDACTED.to_string()
        } else {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        };
        m.insert(name.to_string(), Value::String(val));
    }
    Value::Object(m)
}

fn ms(secs: f64) -> Value {
    json!((secs * 1000.0 * 1000.0).round() / 1000.0)
}

fn var_num(ctx: &Ctx, name: &str) -> Value {
    ctx.var(name)
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(json!(0), |n| json!(n))
}

fn body_value(b: &[u8]) -> Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned()))
}

/// Builds the entry for a finished request.
pub fn build(ctx: &Ctx, include_req_body: bool, include_resp_body: bool) -> Value {
    let llm = ctx.ext.get::<LlmLogging>();
    let secret_headers: &[String] = llm.map_or(&[], |l| &l.secret_headers);
    let secret_args: &[String] = llm.map_or(&[], |l| &l.secret_args);
    let mut qs = Map::new();
    for (k, v) in url::form_urlencoded::parse(ctx.query().as_bytes()) {
        let v = if secret_args.iter().any(|s| *s == k) {
            REDACTED.to_string()
        } else {
            v.into_owned()
        };
        qs.insert(k.into_owned(), Value::String(v));
    }
    let host = ctx.host();
    let port = ctx.local.port();
    let uri = ctx.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = json!({
        "method": ctx.method.as_str(),
        "uri": uri,
        "url": format!("http://{host}:{port}{uri}"),
        "headers": headers_json(&ctx.headers, secret_headers),
        "querystring": qs,
        "size": ctx.body().map_or(0, Bytes::len),
    });
    if include_req_body && let Some(b) = ctx.body().filter(|b| !b.is_empty()) {
        request["body"] = body_value(b);
    }
    let rec = ctx.ext.get::<ResponseRecord>();
    let mut response = json!({
        "status": ctx.status,
        "headers": rec.map_or_else(|| json!({}), |r| headers_json(&r.headers, &[])),
        "size": ctx.body_bytes_sent,
    });
    if include_resp_body
        && let Some(b) = rec.and_then(|r| r.body.as_ref()).filter(|b| !b.is_empty())
    {
        response["body"] = body_value(b);
    }
    let total = ctx.elapsed_secs();
    let upstream = ctx.upstream.response_time.unwrap_or(0.0);
    let start_ms = ctx
        .start_wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut entry = json!({
        "request": request,
        "response": response,
        "server": {"hostname": crate::server::hostname(), "version": concat!("ferry/", env!("CARGO_PKG_VERSION"))},
        "client_ip": ctx.remote.ip().to_string(),
        "start_time": start_ms,
        "latency": ms(total),
        "upstream_latency": ms(upstream),
        "apisix_latency": ms((total - upstream).max(0.0)),
    });
    if let Some(route) = &ctx.route {
        entry["route_id"] = json!(route.id);
        if let Some(s) = &route.service_id {
            entry["service_id"] = json!(s);
        }
    }
    if let Some(a) = &ctx.upstream.addr {
        entry["upstream"] = json!(a);
    }
    if let Some(l) = llm {
        if l.summaries {
            entry["llm_summary"] = json!({
                "request_model": ctx.var("request_llm_model").unwrap_or(""),
                "model": ctx.var("llm_model").unwrap_or(""),
                "duration": (total * 1000.0).round() as u64,
                "time_to_first_token": var_num(ctx, "llm_time_to_first_token"),
                "prompt_tokens": var_num(ctx, "llm_prompt_tokens"),
                "completion_tokens": var_num(ctx, "llm_completion_tokens"),
                "total_tokens": var_num(ctx, "llm_total_tokens"),
                "upstream_response_time": var_num(ctx, "apisix_upstream_response_time"),
                "stream": ctx.var("llm_stream") == Some("true"),
                "tool_count": var_num(ctx, "llm_tool_count"),
                "has_tool_calls": ctx.var("llm_has_tool_calls") == Some("true"),
                "end_user_id": ctx.var("llm_end_user_id").unwrap_or(""),
                "cache_read_input_tokens": var_num(ctx, "llm_cache_read_input_tokens"),
                "cache_creation_input_tokens": var_num(ctx, "llm_cache_creation_input_tokens"),
                "reasoning_tokens": var_num(ctx, "llm_reasoning_tokens"),
                "content_risk_level": ctx.var("llm_content_risk_level").unwrap_or(""),
            });
        }
        if l.payloads {
            let body: Value = ctx
                .body()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            let mut req = json!({"stream": ctx.var("llm_stream") == Some("true")});
            if let Some(m) = body.get("messages").or_else(|| body.get("input")) {
                req["messages"] = m.clone();
            }
            entry["llm_request"] = req;
            entry["llm_response_text"] =
                json!({"content": ctx.var("llm_response_text").unwrap_or("")});
        }
    }
    entry
}
