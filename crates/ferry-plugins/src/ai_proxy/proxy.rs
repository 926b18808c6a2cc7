//! The upstream exchange of `ai-proxy`, in three steps: [`plan`] shapes the body and builds
//! the upstream request (URL, method, headers), [`exchange`] sends it and records what the
//! transport saw, [`respond`] turns the answer into the client's response (a stream passed
//! through or converted, or a whole body). Failures are one [`GatewayError`], rendered in the
//! client's protocol by the caller.

use super::conf::Compiled;
use super::stream::{Converting, Passing, SseState, StreamError, UpstreamBody};
use super::{AiState, ms_since};
use crate::key_auth::Credential;
use crate::transport::UpError;
use bytes::Bytes;
use ferry_core::body::{Response, full};
use ferry_core::ctx::Ctx;
use ferry_core::error::GatewayError;
use ferry_core::stats::RequestType;
use ferry_core::transport::UpBody;
use ferry_protocol::convert::{Converted, Pair};
use ferry_protocol::shape::{MaxTokensField, Shaping, shape};
use ferry_protocol::wire::StreamOptions;
use ferry_protocol::{Observed, Protocol, observe};
use ferry_provider::headers::{keep_response_header, upstream_request_headers};
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpInfo;
use serde_json::Value;
use std::time::Instant;

type GwResult<T> = Result<T, GatewayError>;

fn bad_gateway(msg: impl Into<String>) -> GatewayError {
    GatewayError::upstream(StatusCode::BAD_GATEWAY, msg)
}

/// Runs the exchange for a request admitted by the access phase.
pub async fn run(conf: &Compiled, ctx: &mut Ctx) -> Response {
    // Errors go out in the client's protocol (plan refuses a request without state).
    let client = ctx.ext.get::<AiState>().map(|s| s.client);
    attempt(conf, ctx)
        .await
        .unwrap_or_else(|e| e.render(client))
}

/// One upstream exchange for the request's state: the client's response, or why there is
/// none. A stream's response is returned once its first events arrived (its commit point).
pub async fn attempt(conf: &Compiled, ctx: &mut Ctx) -> GwResult<Response> {
    let mut p = plan(conf, ctx)?;
    if let Some(g) = &conf.gcp {
        // The provider is not contacted without a token.
        let token = g.token().await?;
        let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            GatewayError::gateway(
                StatusCode::BAD_GATEWAY,
                "failed to get gcp access token: the token is not a valid header value",
            )
        })?;
        v.set_sensitive(true);
        p.request.headers_mut().insert(header::AUTHORIZATION, v);
    }
    let (resp, sent) = exchange(conf, ctx, p.request, p.port).await?;
    respond(conf, ctx, p.answer, resp, sent).await
}

/// The hook to tell when the stream breaks after its first byte.
fn fail_hook(ctx: &mut Ctx) -> Option<super::stream::FailHook> {
    ctx.ext
        .get_mut::<AiState>()
        .and_then(|s| s.on_stream_fail.take())
}

/// A stream that ended before it produced anything.
fn no_output(ctx: &mut Ctx, sent: Instant) -> GatewayError {
    ctx.llm.upstream_response_ms = Some(ms_since(sent));
    tracing::warn!("streaming response completed without producing any output");
    bad_gateway(
        "streaming response completed without producing any output; the upstream likely returned a different stream format than expected",
    )
}

/// What [`respond`] needs to know about the request that was sent.
struct Answer {
    /// The protocol the provider answers in.
    target: Protocol,
    pair: Option<Pair>,
    converted: Option<Converted>,
    /// Remove the usage-only chunk Ferry asked for on the client's behalf.
    hide_usage: bool,
}

/// The upstream request, and how to read its answer.
struct Plan {
    request: http::Request<Full<Bytes>>,
    /// The target's port (its host is in the context's upstream info).
    port: u16,
    answer: Answer,
}

/// Shapes the body, records the request's stats, and builds the upstream request.
fn plan(conf: &Compiled, ctx: &mut Ctx) -> GwResult<Plan> {
    let Some(st) = ctx.ext.get::<AiState>() else {
        return Err(GatewayError::gateway(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ai-proxy state missing",
        ));
    };
    let (target, pair) = (st.target, st.pair);
    let cap = conf.provider.capability(target);
    let max_tokens_field = cap.and_then(|c| c.max_tokens);
    let fast = match (&st.peek, pair) {
        (Some(pk), None) => fast_plan(conf, target, max_tokens_field, pk),
        _ => None,
    };
    let prepared = match fast {
        Some(p) => p,
        None => prepare_value(conf, ctx, target, pair, max_tokens_field)
            .map_err(|(status, msg)| GatewayError::client(status, msg))?,
    };
    let llm = &mut ctx.llm;
    if let Some(m) = conf.options_model.clone().or(prepared.model) {
        llm.model = Some(m);
    }
    llm.request_type = if prepared.stream {
        RequestType::AiStream
    } else {
        RequestType::AiChat
    };
    llm.stream = prepared.stream;
    llm.tool_count = prepared.tool_count as u64;
    if let Some(u) = prepared.end_user {
        llm.end_user = Some(u);
    }

    let Some(t) = conf.targets.get(&target) else {
        return Err(GatewayError::client(
            StatusCode::BAD_REQUEST,
            "could not resolve upstream path",
        ));
    };
    let passthrough = target == Protocol::Passthrough;
    let (uri, path) = match (&t.path, conf.uris.get(&target)) {
        (Some(p), Some(u)) if !passthrough => (u.clone(), p.clone()),
        _ => {
            let mut path = t.path.clone().unwrap_or_else(|| ctx.uri.path().to_string());
            if path.contains(super::conf::MODEL_SLOT) {
                if ctx.llm.model.is_none() {
                    ctx.llm.model = ctx.llm.request_model.clone();
                }
                let Some(model) = ctx.llm.model.as_deref().filter(|m| !m.is_empty()) else {
                    return Err(GatewayError::client(
                        StatusCode::BAD_REQUEST,
                        "could not resolve upstream path: ensure the route or request body specifies a model, or that override.endpoint includes a path",
                    ));
                };
                path = path.replace(super::conf::MODEL_SLOT, model);
            }
            let mut query = t.query.clone();
            if passthrough {
                let credential = ctx.ext.get::<Credential>().map(|c| c.query.as_str());
                for (k, v) in url::form_urlencoded::parse(ctx.query().as_bytes()) {
                    let k = k.into_owned();
                    // the gateway's own auth key never goes to the provider
                    if conf.auth_query_keys.contains(&k) || credential == Some(k.as_str()) {
                        continue;
                    }
                    match query.iter_mut().find(|(qk, _)| *qk == k) {
                        Some(slot) => slot.1 = v.into_owned(),
                        None => query.push((k, v.into_owned())),
                    }
                }
            }
            let u = t
                .uri(&path, &query)
                .map_err(|e| GatewayError::client(StatusCode::BAD_REQUEST, e))?;
            (u, path)
        }
    };
    let mut req = http::Request::new(Full::new(prepared.out));
    *req.method_mut() = if passthrough {
        ctx.method.clone()
    } else {
        http::Method::POST
    };
    *req.uri_mut() = uri;
    // The client's gateway credential (key-auth) is never forwarded to an LLM provider (nor
    // converted into a provider key); a key configured in `auth` is the provider's own.
    let mut client_headers = match ctx.ext.get::<Credential>() {
        Some(c) => {
            let mut h = ctx.headers.clone();
            h.remove(&c.header);
            std::borrow::Cow::Owned(h)
        }
        None => std::borrow::Cow::Borrowed(&ctx.headers),
    };
    // A Gemini client may send its key as `?key=`: it is treated as `x-goog-api-key`.
    if pair == Some(Pair::GeminiToOpenAi)
        && !client_headers.contains_key("x-goog-api-key")
        && let Some(key) = ctx.arg("key").and_then(|k| HeaderValue::from_str(k).ok())
    {
        client_headers.to_mut().insert("x-goog-api-key", key);
    }
    *req.headers_mut() = upstream_request_headers(&client_headers, &conf.auth_headers, pair);
    ctx.upstream.scheme = Some(t.scheme);
    ctx.upstream.host = Some(t.host.clone());
    ctx.upstream.uri = Some(path);
    Ok(Plan {
        request: req,
        port: t.port,
        answer: Answer {
            target,
            pair,
            converted: prepared.converted,
            hide_usage: prepared.hide_usage,
        },
    })
}

/// Sends the request; records the upstream's address, status and header time.
async fn exchange(
    conf: &Compiled,
    ctx: &mut Ctx,
    req: http::Request<Full<Bytes>>,
    port: u16,
) -> GwResult<(http::Response<UpBody>, Instant)> {
    let sent = Instant::now();
    if let Some(st) = ctx.ext.get_mut::<AiState>() {
        st.sent = Some(sent);
    }
    let authority = |ctx: &Ctx| format!("{}:{port}", ctx.upstream.host.as_deref().unwrap_or(""));
    let resp = match conf.client.send(req).await {
        Ok(r) => r,
        Err(e) => {
            let a = authority(ctx);
            let failure = transport_failure(ctx, sent, &e, &a);
            ctx.upstream.addr = Some(a);
            return Err(failure);
        }
    };
    ctx.upstream.header_time = Some(sent.elapsed().as_secs_f64());
    ctx.upstream.status = Some(resp.status().as_u16());
    ctx.upstream.addr = Some(
        resp.extensions()
            .get::<HttpInfo>()
            .map_or_else(|| authority(ctx), |i| i.remote_addr().to_string()),
    );
    Ok((resp, sent))
}

/// The client's response: a stream (passed through or converted) or a whole body.
async fn respond(
    conf: &Compiled,
    ctx: &mut Ctx,
    a: Answer,
    resp: http::Response<UpBody>,
    sent: Instant,
) -> GwResult<Response> {
    let status = resp.status();
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
    let bad_head = |_| bad_gateway("bad upstream response head");
    if is_sse {
        let keep_text = conf.logging.as_ref().is_some_and(|l| l.payloads);
        let up = UpstreamBody::new(
            resp.into_body(),
            sent,
            conf.client.timeout,
            conf.max_stream_duration,
            conf.max_response_bytes,
        );
        // A Gemini client without `alt=sse` gets one JSON array of events.
        let json_array = a.pair == Some(Pair::GeminiToOpenAi)
            && !ctx.query().split('&').any(|kv| kv == "alt=sse");
        let (body, observed_proto) = match (a.pair, &a.converted) {
            (Some(p), Some(c)) => {
                let client = st_client(ctx);
                let mut conv = Converting::new(up, p.stream(c, ctx.llm.model.clone()), client);
                if json_array {
                    conv = conv.json_array();
                    if let Some(h) = head.headers_mut() {
                        h.insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                    }
                }
                let first = match conv.first().await {
                    Ok(Some(b)) => b,
                    Ok(None) => return Err(no_output(ctx, sent)),
                    Err(e) => return Err(broken_before_first_byte(ctx, sent, e)),
                };
                conv.push_front(first);
                conv.set_fail_hook(fail_hook(ctx));
                (conv.boxed_unsync(), client)
            }
            _ => {
                let mut pass = Passing::new(up, a.target);
                let first = match pass.first().await {
                    Ok(Some(b)) => b,
                    Ok(None) => return Err(no_output(ctx, sent)),
                    Err(e) => return Err(broken_before_first_byte(ctx, sent, e)),
                };
                pass.push_front(first);
                pass.set_fail_hook(fail_hook(ctx));
                (pass.boxed_unsync(), a.target)
            }
        };
        if let Some(st) = ctx.ext.get_mut::<AiState>() {
            st.sse = Some(if json_array {
                SseState::json_array(observed_proto, keep_text)
            } else {
                SseState::new(observed_proto, a.hide_usage, keep_text)
            });
        }
        ctx.llm.ttft_ms = Some(ms_since(sent));
        return head.body(body).map_err(bad_head);
    }

    // A whole JSON (or other) body.
    let content_length = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A buffered answer is always bounded: by the setting, else by Ferry's default.
    let max = conf
        .max_response_bytes
        .unwrap_or(super::conf::DEFAULT_MAX_RESPONSE_BYTES);
    if let Some(len) = content_length
        && len > max
    {
        tracing::warn!(
            "aborting AI response: Content-Length {len} exceeds max_response_bytes {max}"
        );
        ctx.llm.upstream_response_ms = Some(ms_since(sent));
        return Err(bad_gateway("max_response_bytes exceeded"));
    }
    let mut up = UpstreamBody::new(resp.into_body(), sent, conf.client.timeout, None, Some(max));
    let body = match up.read_all().await {
        Ok(b) => b,
        Err(StreamError::Bytes) => {
            tracing::warn!("aborting AI response: body size exceeds max_response_bytes");
            ctx.llm.upstream_response_ms = Some(ms_since(sent));
            return Err(bad_gateway("max_response_bytes exceeded"));
        }
        Err(StreamError::Upstream(e)) => {
            let addr = ctx.upstream.addr.clone().unwrap_or_default();
            return Err(transport_failure(ctx, sent, &e, &addr));
        }
        Err(e) => return Err(GatewayError::upstream(e.status(), e.to_string())),
    };
    let took = ms_since(sent);
    ctx.llm.ttft_ms = Some(took);
    ctx.llm.upstream_response_ms = Some(took);
    ctx.upstream.response_time = Some(sent.elapsed().as_secs_f64());
    ctx.upstream.response_length = body.len() as u64;
    let body = match (a.pair, &a.converted) {
        (Some(p), Some(c)) => {
            let parsed = serde_json::from_slice::<Value>(&body).ok();
            if status.is_success()
                && let Some(v) = &parsed
            {
                ctx.llm.record(Observed::from_json(a.target, v));
            }
            let Some(v) = parsed else {
                let st = if status.is_success() {
                    StatusCode::BAD_GATEWAY
                } else {
                    status
                };
                return Err(GatewayError::upstream(
                    st,
                    format!("the provider answered {status} in an unexpected format"),
                ));
            };
            // Embeddings answer with the client's model, else the one in the URL.
            let model = match p {
                Pair::EmbeddingsToVertex => ctx.llm.request_model.as_deref(),
                _ => None,
            }
            .or(ctx.llm.model.as_deref());
            let out = match p.response(&v, c, model) {
                Ok(out) => out,
                // An error the converter cannot read: its status and headers, the provider's
                // message in the client's error shape.
                Err(_) if !status.is_success() => {
                    let msg = ferry_protocol::convert::vertex_predict::error_message(&body);
                    let err = ferry_protocol::error::error_body(
                        Some(st_client(ctx)),
                        status.as_u16(),
                        &msg,
                    );
                    serde_json::from_slice::<Value>(&err).unwrap_or(Value::Null)
                }
                Err(e) => return Err(bad_gateway(e)),
            };
            if let Some(h) = head.headers_mut() {
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            Bytes::from(out.to_string())
        }
        _ => {
            if status.is_success()
                && let Some(o) = Observed::from_slice(a.target, &body)
            {
                ctx.llm.record(o);
            }
            body
        }
    };
    if let Some(h) = head.headers_mut() {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    head.body(full(body)).map_err(bad_head)
}

/// The protocol the client speaks (what a converted stream is observed in).
fn st_client(ctx: &Ctx) -> Protocol {
    ctx.ext
        .get::<AiState>()
        .map_or(Protocol::OpenAiChat, |s| s.client)
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
    converted: Option<Converted>,
}

/// The body without a full parse, when the request was read through the peek and nothing but
/// (perhaps) `stream_options.include_usage` must change: the client's bytes, with that field
/// spliced in front when absent.
fn fast_plan(
    conf: &Compiled,
    target: Protocol,
    max_tokens_field: Option<MaxTokensField>,
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
    max_tokens_field: Option<MaxTokensField>,
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
            let c = p
                .request(&body, ctx.uri.path())
                .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
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

/// A stream that broke before its first event: nothing reached the client yet.
fn broken_before_first_byte(ctx: &mut Ctx, sent: Instant, e: StreamError) -> GatewayError {
    ctx.llm.upstream_response_ms = Some(ms_since(sent));
    tracing::warn!("AI stream broke before its first event: {e}");
    GatewayError::upstream(e.status(), e.to_string())
}

/// A failure before or while reading the response: 504 on timeouts, 502 otherwise.
fn transport_failure(ctx: &mut Ctx, sent: Instant, e: &UpError, authority: &str) -> GatewayError {
    ctx.llm.upstream_response_ms = Some(ms_since(sent));
    ctx.upstream.response_time = Some(sent.elapsed().as_secs_f64());
    let status = if e.is_timeout() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    let msg = e.describe(authority);
    tracing::warn!("AI upstream request: {msg}");
    GatewayError::upstream(status, msg)
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
