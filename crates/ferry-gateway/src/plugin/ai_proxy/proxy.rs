//! The upstream exchange of `ai-proxy`: shape the body, build the URL and headers, send, and
//! turn the answer (or the failure) into the client's response.

use super::conf::Compiled;
use super::stream::{Converting, SseState, StreamError, UpstreamBody};
use super::transport::UpError;
use super::{AiState, client_error, ms_since, publish};
use crate::body::{Response, full};
use crate::ctx::Ctx;
use bytes::Bytes;
use ferry_protocol::convert::Pair;
use ferry_protocol::shape::{Shaping, shape};
use ferry_protocol::wire::StreamOptions;
use ferry_protocol::{Observed, Protocol, observe};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpInfo;
use serde_json::Value;
use std::time::Instant;

/// Request headers never forwarded upstream.
fn skip_request_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "accept-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "expect"
            | "proxy-authorization"
            | "proxy-authenticate"
    )
}

/// Upstream response headers worth passing to the client.
fn keep_response_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "content-type" | "retry-after" | "x-request-id" | "request-id" | "cache-control"
    ) || n.starts_with("x-ratelimit-")
        || n.starts_with("anthropic-ratelimit-")
        || n.starts_with("openai-")
}

fn encode_query(pairs: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .finish()
}

/// Header rules when converting: toward an OpenAI provider an Anthropic `x-api-key` becomes a
/// bearer token (unless one is configured) and `anthropic-*` headers go; toward Anthropic the
/// client's bearer token goes (unless configured) and `anthropic-version` is ensured.
fn convert_headers(p: Pair, h: &mut HeaderMap, configured: &[(HeaderName, HeaderValue)]) {
    let set_by_route = |n: &HeaderName| configured.iter().any(|(k, _)| k == n);
    let drop: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-stainless-"))
        .cloned()
        .collect();
    for k in drop {
        h.remove(k);
    }
    match p {
        Pair::AnthropicToOpenAi => {
            if let Some(key) = h.remove("x-api-key")
                && !h.contains_key(header::AUTHORIZATION)
                && !key.is_empty()
                && let Ok(v) = HeaderValue::from_bytes(&[b"Bearer ", key.as_bytes()].concat())
            {
                h.insert(header::AUTHORIZATION, v);
            }
            let anthropic: Vec<HeaderName> = h
                .keys()
                .filter(|k| k.as_str().starts_with("anthropic-"))
                .cloned()
                .collect();
            for k in anthropic {
                h.remove(k);
            }
        }
        Pair::OpenAiToAnthropic => {
            if !set_by_route(&header::AUTHORIZATION) {
                h.remove(header::AUTHORIZATION);
            }
            let openai: Vec<HeaderName> = h
                .keys()
                .filter(|k| k.as_str().starts_with("openai-"))
                .cloned()
                .collect();
            for k in openai {
                h.remove(k);
            }
            if !h.contains_key("anthropic-version") {
                h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
            }
        }
    }
}

/// Runs the exchange for a request admitted by the access phase.
pub async fn run(conf: &Compiled, ctx: &mut Ctx) -> Response {
    let Some(st) = ctx.ext.get::<AiState>() else {
        return client_error(
            None,
            StatusCode::INTERNAL_SERVER_ERROR,
            "ai-proxy state missing",
        );
    };
    let (client, target, pair) = (st.client, st.target, st.pair);
    let fail = |status: StatusCode, msg: &str| client_error(Some(client), status, msg);

    // The body: shaped when something must change, else the client's bytes.
    let cap = conf.provider.capability(target);
    let fast = match (&st.peek, pair) {
        (Some(pk), None) => fast_plan(conf, target, cap.and_then(|c| c.max_tokens), pk),
        _ => None,
    };
    let prepared = match fast {
        Some(plan) => Ok(plan),
        None => prepare_value(conf, ctx, target, pair, cap.and_then(|c| c.max_tokens)),
    };
    let Prepared {
        out,
        stream,
        hide_usage,
        tool_count,
        end_user,
        model,
        converted,
    } = match prepared {
        Ok(p) => p,
        Err((status, msg)) => return fail(status, &msg),
    };
    if let Some(m) = conf.options_model.clone().or(model) {
        ctx.set_var("llm_model", m);
    }
    ctx.set_var("request_type", if stream { "ai_stream" } else { "ai_chat" });
    ctx.set_var("llm_stream", if stream { "true" } else { "false" });
    ctx.set_var("llm_tool_count", tool_count.to_string());
    if let Some(u) = end_user {
        ctx.set_var("llm_end_user_id", u);
    }

    // Where it goes.
    let Some(t) = conf.targets.get(&target) else {
        return fail(StatusCode::BAD_REQUEST, "could not resolve upstream path");
    };
    let passthrough = target == Protocol::Passthrough;
    let (uri, path) = match (&t.path, conf.uris.get(&target)) {
        (Some(p), Some(u)) if !passthrough => (u.clone(), p.clone()),
        _ => {
            let path = t.path.clone().unwrap_or_else(|| ctx.uri.path().to_string());
            let mut query = t.query.clone();
            if passthrough {
                for (k, v) in url::form_urlencoded::parse(ctx.query().as_bytes()) {
                    let k = k.into_owned();
                    if conf.auth_query_keys.contains(&k) {
                        continue;
                    }
                    match query.iter_mut().find(|(qk, _)| *qk == k) {
                        Some(slot) => slot.1 = v.into_owned(),
                        None => query.push((k, v.into_owned())),
                    }
                }
            }
            match target_uri(t, &path, &query) {
                Ok(u) => (u, path),
                Err(e) => return fail(StatusCode::BAD_REQUEST, &e),
            }
        }
    };
    let method = if passthrough {
        ctx.method.clone()
    } else {
        http::Method::POST
    };

    let mut headers = HeaderMap::with_capacity(ctx.headers.len() + conf.auth_headers.len() + 1);
    for (k, v) in &ctx.headers {
        if !skip_request_header(k) {
            headers.append(k.clone(), v.clone());
        }
    }
    for (k, v) in &conf.auth_headers {
        headers.insert(k.clone(), v.clone());
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(p) = pair {
        convert_headers(p, &mut headers, &conf.auth_headers);
    }

    ctx.upstream.scheme = Some(t.scheme);
    ctx.upstream.host = Some(t.host.clone());
    ctx.upstream.uri = Some(path);
    let sent = Instant::now();
    if let Some(st) = ctx.ext.get_mut::<AiState>() {
        st.sent = Some(sent);
    }
    let mut req = http::Request::new(Full::new(out));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    let resp = match conf.client.send(req).await {
        Ok(r) => r,
        Err(e) => return transport_failure(ctx, client, sent, &e),
    };
    let status = resp.status();
    ctx.upstream.header_time = Some(sent.elapsed().as_secs_f64());
    ctx.upstream.status = Some(status.as_u16());
    ctx.upstream.addr = Some(resp.extensions().get::<HttpInfo>().map_or_else(
        || format!("{}:{}", t.host, t.port),
        |i| i.remote_addr().to_string(),
    ));
    let mut head = http::Response::builder().status(status);
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if let Some(h) = head.headers_mut() {
        for (k, v) in resp.headers() {
            if keep_response_header(k) {
                h.append(k.clone(), v.clone());
            }
        }
    }

    if is_sse {
        let keep_text = conf.logging.as_ref().is_some_and(|l| l.payloads);
        let mut up = UpstreamBody::new(
            resp.into_body(),
            sent,
            conf.client.timeout,
            conf.max_stream_duration,
            conf.max_response_bytes,
        );
        if let (Some(p), Some(c)) = (pair, &converted) {
            let model = ctx.var("llm_model").map(String::from);
            let mut conv = Converting::new(up, p.stream(c, model));
            let first = match conv.first().await {
                Ok(Some(b)) => b,
                Ok(None) => {
                    ctx.set_var("apisix_upstream_response_time", ms_since(sent));
                    tracing::warn!("streaming response completed without producing any output");
                    return fail(
                        StatusCode::BAD_GATEWAY,
                        "streaming response completed without producing any output; the upstream likely returned a different stream format than the converter expects",
                    );
                }
                Err(e) => {
                    ctx.set_var("apisix_upstream_response_time", ms_since(sent));
                    return fail(e.status(), &e.to_string());
                }
            };
            conv.push_front(first);
            if let Some(st) = ctx.ext.get_mut::<AiState>() {
                st.sse = Some(SseState::new(client, hide_usage, keep_text));
            }
            ctx.set_var("llm_time_to_first_token", ms_since(sent));
            return head
                .body(conv.boxed_unsync())
                .unwrap_or_else(|_| fail(StatusCode::BAD_GATEWAY, "bad upstream response head"));
        }
        let first = match up.frame().await {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                ctx.set_var("apisix_upstream_response_time", ms_since(sent));
                return fail(e.status(), &e.to_string());
            }
            None => Bytes::new(),
        };
        up.push_front(first);
        if let Some(st) = ctx.ext.get_mut::<AiState>() {
            st.sse = Some(SseState::new(target, hide_usage, keep_text));
        }
        ctx.set_var("llm_time_to_first_token", ms_since(sent));
        return head
            .body(up.boxed_unsync())
            .unwrap_or_else(|_| fail(StatusCode::BAD_GATEWAY, "bad upstream response head"));
    }

    // A whole JSON (or other) body.
    let content_length = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let (Some(max), Some(len)) = (conf.max_response_bytes, content_length)
        && len > max
    {
        tracing::warn!(
            "aborting AI response: Content-Length {len} exceeds max_response_bytes {max}"
        );
        ctx.set_var("apisix_upstream_response_time", ms_since(sent));
        return fail(StatusCode::BAD_GATEWAY, "max_response_bytes exceeded");
    }
    let mut up = UpstreamBody::new(
        resp.into_body(),
        sent,
        conf.client.timeout,
        None,
        conf.max_response_bytes,
    );
    let body = match up.read_all().await {
        Ok(b) => b,
        Err(StreamError::Bytes) => {
            tracing::warn!("aborting AI response: body size exceeds max_response_bytes");
            ctx.set_var("apisix_upstream_response_time", ms_since(sent));
            return fail(StatusCode::BAD_GATEWAY, "max_response_bytes exceeded");
        }
        Err(StreamError::Upstream(e)) => return transport_failure(ctx, client, sent, &e),
        Err(e) => return fail(e.status(), &e.to_string()),
    };
    let took = ms_since(sent);
    ctx.set_var("llm_time_to_first_token", took.clone());
    ctx.set_var("apisix_upstream_response_time", took);
    ctx.upstream.response_time = Some(sent.elapsed().as_secs_f64());
    ctx.upstream.response_length = body.len() as u64;
    let body = match (pair, &converted) {
        (Some(p), Some(c)) => {
            let parsed = serde_json::from_slice::<Value>(&body).ok();
            if status.is_success()
                && let Some(v) = &parsed
            {
                publish(ctx, &Observed::from_json(target, v));
            }
            let Some(v) = parsed else {
                let st = if status.is_success() {
                    StatusCode::BAD_GATEWAY
                } else {
                    status
                };
                return fail(
                    st,
                    &format!("the provider answered {status} in an unexpected format"),
                );
            };
            let model = ctx.var("llm_model").map(String::from);
            match p.response(&v, c, model.as_deref()) {
                Ok(out) => {
                    if let Some(h) = head.headers_mut() {
                        h.insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                    }
                    Bytes::from(out.to_string())
                }
                Err(e) => return fail(StatusCode::BAD_GATEWAY, &e),
            }
        }
        _ => {
            if status.is_success()
                && let Some(o) = Observed::from_slice(target, &body)
            {
                publish(ctx, &o);
            }
            body
        }
    };
    if let Some(h) = head.headers_mut() {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    head.body(full(body))
        .unwrap_or_else(|_| fail(StatusCode::BAD_GATEWAY, "bad upstream response head"))
}

/// The upstream body and what was learnt shaping it.
struct Prepared {
    out: Bytes,
    stream: bool,
    /// Remove the usage-only chunk Ferry asked for on the client's behalf.
    hide_usage: bool,
    tool_count: usize,
    end_user: Option<String>,
    /// The body's `model`.
    model: Option<String>,
    converted: Option<ferry_protocol::convert::Converted>,
}

/// The body without a full parse, when the request was read through the peek and nothing but
/// (perhaps) `stream_options.include_usage` must change: the client's bytes, with that field
/// spliced in front when absent.
fn fast_plan(
    conf: &Compiled,
    target: Protocol,
    max_tokens_field: Option<ferry_protocol::shape::MaxTokensField>,
    pk: &super::PeekInfo,
) -> Option<Prepared> {
    let shaping_target = target != Protocol::Passthrough;
    if conf.options.is_some()
        || (shaping_target
            && (conf.max_tokens.zip(max_tokens_field).is_some()
                || conf.request_body.contains_key(&target)
                || (conf.provider.remove_model && pk.has_model)))
    {
        return None;
    }
    let stream = target.can_stream() && pk.stream;
    let usage_target = stream && target == Protocol::OpenAiChat;
    let (inject, wants) = match (usage_target, pk.stream_options) {
        (false, _) => (false, false),
        (true, StreamOptions::Absent) => (true, false),
        (true, StreamOptions::WantsUsage) => (false, true),
        (true, StreamOptions::Other) => return None,
    };
    let out = if inject {
        splice_include_usage(&pk.raw)?
    } else {
        pk.raw.clone()
    };
    Some(Prepared {
        out,
        stream,
        hide_usage: usage_target && !wants,
        tool_count: pk.tool_count,
        end_user: pk.end_user.clone(),
        model: pk.model.clone(),
        converted: None,
    })
}

/// `{"stream_options":{"include_usage":true},` + the rest of a non-empty JSON object.
fn splice_include_usage(raw: &Bytes) -> Option<Bytes> {
    const FIELD: &[u8] = br#""stream_options":{"include_usage":true},"#;
    let open = raw.iter().position(|b| !b.is_ascii_whitespace())?;
    if raw[open] != b'{' {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() + FIELD.len());
    out.extend_from_slice(&raw[..=open]);
    out.extend_from_slice(FIELD);
    out.extend_from_slice(&raw[open + 1..]);
    Some(Bytes::from(out))
}

/// The body through a full parse: conversion and/or shaping, re-encoded when it changed.
fn prepare_value(
    conf: &Compiled,
    ctx: &mut Ctx,
    target: Protocol,
    pair: Option<Pair>,
    max_tokens_field: Option<ferry_protocol::shape::MaxTokensField>,
) -> Result<Prepared, (StatusCode, String)> {
    let encode = |v: &Value| {
        serde_json::to_vec(v).map(Bytes::from).map_err(|e| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the request body: {e}"),
            )
        })
    };
    let mut raw = ctx.body().cloned().unwrap_or_default();
    let mut body = ctx.take_json().unwrap_or(Value::Null);
    let converted = match pair {
        Some(p) => {
            let c = p.request(&body).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
            body = c.body.clone();
            raw = encode(&body)?;
            Some(c)
        }
        None => None,
    };
    let model = body.get("model").and_then(Value::as_str).map(String::from);
    let mut stream = target.can_stream() && body.get("stream") == Some(&Value::Bool(true));
    let mut hide_usage = false;
    let out: Bytes = match body.as_object_mut() {
        Some(obj) if target != Protocol::Passthrough || conf.options.is_some() => {
            let shaping = Shaping {
                options: conf.options.as_ref(),
                max_tokens: conf.max_tokens.zip(max_tokens_field),
                request_body: conf.request_body.get(&target),
                force: conf.force,
                remove_model: conf.provider.remove_model,
                inject_usage: target == Protocol::OpenAiChat,
            };
            let shaped = shape(obj, &shaping);
            stream = target.can_stream() && shaped.stream;
            hide_usage = match (&converted, pair) {
                (Some(c), Some(Pair::OpenAiToAnthropic)) => !c.include_usage,
                (Some(_), _) => false,
                (None, _) => stream && target == Protocol::OpenAiChat && !shaped.client_wants_usage,
            };
            if shaped.changed { encode(&body)? } else { raw }
        }
        _ => raw,
    };
    Ok(Prepared {
        out,
        stream,
        hide_usage,
        tool_count: observe::tool_count(&body),
        end_user: observe::end_user(target, &body).map(String::from),
        model,
        converted,
    })
}

/// A failure before or while reading the response: 504 on timeouts, 502 otherwise.
fn transport_failure(ctx: &mut Ctx, client: Protocol, sent: Instant, e: &UpError) -> Response {
    ctx.set_var("apisix_upstream_response_time", ms_since(sent));
    ctx.upstream.response_time = Some(sent.elapsed().as_secs_f64());
    let status = if e.is_timeout() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    tracing::warn!("AI upstream request {e}");
    client_error(Some(client), status, &format!("upstream request {e}"))
}

/// The upstream URI for a target, path and query.
pub(super) fn target_uri(
    t: &ferry_provider::Target,
    path: &str,
    query: &[(String, String)],
) -> Result<http::Uri, String> {
    let mut url = format!("{}{}", t.origin(), path);
    if !query.is_empty() {
        url.push('?');
        url.push_str(&encode_query(query));
    }
    http::Uri::try_from(url.as_str()).map_err(|e| format!("invalid upstream URL {url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_usage_spliced_into_the_client_bytes() {
        let raw = Bytes::from_static(b"  {\"stream\": true, \"messages\": []}");
        let out = splice_include_usage(&raw).unwrap();
        assert_eq!(
            &out[..],
            b"  {\"stream_options\":{\"include_usage\":true},\"stream\": true, \"messages\": []}"
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert!(splice_include_usage(&Bytes::from_static(b"[1]")).is_none());
    }
}
