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
    let mut raw = ctx.body().cloned().unwrap_or_default();
    let mut body = ctx.take_json().unwrap_or(Value::Null);
    let converted = match pair {
        Some(p) => match p.request(&body) {
            Ok(c) => {
                body = c.body.clone();
                raw = match serde_json::to_vec(&body) {
                    Ok(v) => Bytes::from(v),
                    Err(e) => {
                        return fail(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &format!("cannot encode the request body: {e}"),
                        );
                    }
                };
                Some(c)
            }
            Err(e) => return fail(StatusCode::BAD_REQUEST, &e),
        },
        None => None,
    };
    if let Some(m) = conf
        .options_model
        .clone()
        .or_else(|| body.get("model").and_then(Value::as_str).map(String::from))
    {
        ctx.set_var("llm_model", m);
    }
    let cap = conf.provider.capability(target);
    let mut stream = target.can_stream() && body.get("stream") == Some(&Value::Bool(true));
    let mut hide_usage = false;
    let out: Bytes = match body.as_object_mut() {
        Some(obj) if target != Protocol::Passthrough || conf.options.is_some() => {
            let shaping = Shaping {
                options: conf.options.as_ref(),
                max_tokens: conf.max_tokens.zip(cap.and_then(|c| c.max_tokens)),
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
            if shaped.changed {
                match serde_json::to_vec(&body) {
                    Ok(v) => Bytes::from(v),
                    Err(e) => {
                        return fail(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &format!("cannot encode the request body: {e}"),
                        );
                    }
                }
            } else {
                raw
            }
        }
        _ => raw,
    };
    ctx.set_var("request_type", if stream { "ai_stream" } else { "ai_chat" });
    ctx.set_var("llm_stream", if stream { "true" } else { "false" });
    ctx.set_var("llm_tool_count", observe::tool_count(&body).to_string());
    if let Some(u) = observe::end_user(target, &body) {
        ctx.set_var("llm_end_user_id", u.to_string());
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
