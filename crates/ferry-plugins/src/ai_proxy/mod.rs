//! APISIX's `ai-proxy` plugin (priority 1040): in the (async) access phase it checks the
//! content type, reads the body, and detects the client's protocol; in before_proxy it shapes
//! the request for the provider, sends it, and returns the answer (JSON read whole; SSE
//! streamed through as it arrives), recording tokens, latency and models in the context's
//! typed LLM stats.

pub(crate) mod conf;
pub(crate) mod proxy;
pub(crate) mod stream;

use crate::transport::Transport;
use bytes::Bytes;
use conf::{Compiled, Conf};
use ferry_core::ctx::{Ctx, RouteInfo};
use ferry_core::error::GatewayError;
use ferry_core::plugin::{Flow, Phase, Plugin, PluginFactory, ProxyFuture, parse_conf};
use ferry_core::stats::RequestType;
use ferry_protocol::convert::{self, Pair};
use ferry_protocol::wire::{RequestPeek, Shape};
use ferry_protocol::{Protocol, detect, observe};
use http::{StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

/// Builds `ai-proxy` instances; holds the shared upstream clients.
pub struct Factory {
    pub transport: Arc<Transport>,
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "ai-proxy"
    }

    fn priority(&self) -> i32 {
        1040
    }

    fn schema(&self) -> Value {
        let mut props = provider_schema();
        props.extend(shared_schema());
        json!({"type": "object", "required": ["provider", "auth"], "properties": props})
    }

    fn check(&self, conf: &Value) -> Result<Value, String> {
        let c: Conf = parse_conf(conf).map_err(with_example)?;
        c.validate()?;
        serde_json::to_value(&c).map_err(|e| e.to_string())
    }

    fn build(&self, conf: &Value, _route: &Arc<RouteInfo>) -> Result<Arc<dyn Plugin>, String> {
        let c: Conf = parse_conf(conf)?;
        Ok(Arc::new(AiProxy {
            conf: Compiled::build(c, &self.transport)?,
        }))
    }
}

/// The schema of what picks and shapes for a provider (an `ai-proxy-multi` instance has it too).
pub(crate) fn provider_schema() -> serde_json::Map<String, Value> {
    let v = json!({
        "provider": {"type": "string", "enum": ferry_provider::names()},
        "provider_conf": {"type": "object", "properties": {"project_id": {"type": "string"}, "region": {"type": "string"}}},
        "auth": {"type": "object", "properties": {"header": {"type": "object"}, "query": {"type": "object"}}},
        "options": {"type": "object", "properties": {"model": {"type": "string"}}},
        "override": {"type": "object", "properties": {
            "endpoint": {"type": "string"},
            "llm_options": {"type": "object", "properties": {"max_tokens": {"type": "integer", "minimum": 1}}},
            "request_body": {"type": "object"},
            "request_body_force_override": {"type": "boolean", "default": false}
        }}
    });
    json_map(v)
}

/// The object of a `json!` map literal.
pub(crate) fn json_map(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// The schema of the transfer settings (`ai-proxy-multi` shares them across its instances).
pub(crate) fn shared_schema() -> serde_json::Map<String, Value> {
    let v = json!({
        "logging": {"type": "object", "properties": {"summaries": {"type": "boolean", "default": false}, "payloads": {"type": "boolean", "default": false}}},
        "timeout": {"type": "integer", "minimum": 1, "maximum": 600000, "default": 30000},
        "max_req_body_size": {"type": "integer", "minimum": 1, "default": 67108864},
        "max_stream_duration_ms": {"type": "integer", "minimum": 1},
        "max_response_bytes": {"type": "integer", "minimum": 1},
        "keepalive": {"type": "boolean", "default": true},
        "keepalive_timeout": {"type": "integer", "minimum": 1000, "default": 60000},
        "keepalive_pool": {"type": "integer", "minimum": 1, "default": 30},
        "streaming_flush_interval_ms": {"type": "integer", "minimum": 0, "default": 10},
        "ssl_verify": {"type": "boolean", "default": true}
    });
    json_map(v)
}

struct AiProxy {
    conf: Compiled,
}

/// Per-request state, kept in the context's extensions.
pub(crate) struct AiState {
    pub(crate) client: Protocol,
    target: Protocol,
    /// Set when client and provider speak different protocols.
    pair: Option<Pair>,
    /// When the upstream request was sent.
    sent: Option<Instant>,
    sse: Option<stream::SseState>,
    /// What the request peek read (absent when the body needed a full parse).
    peek: Option<PeekInfo>,
    /// Told when a stream breaks after its first byte (passive health of `ai-proxy-multi`).
    pub(crate) on_stream_fail: Option<stream::FailHook>,
}

impl AiState {
    /// The state of a request taken by `intake`, headed for a provider speaking `target`.
    pub(crate) fn new(intake: Intake, target: Protocol, pair: Option<Pair>) -> AiState {
        AiState {
            client: intake.client,
            target,
            pair,
            sent: None,
            sse: None,
            peek: intake.peek,
            on_stream_fail: None,
        }
    }

    /// Points the state at another provider (a fallback attempt of `ai-proxy-multi`).
    pub(crate) fn retarget(&mut self, target: Protocol, pair: Option<Pair>) {
        self.target = target;
        self.pair = pair;
        self.sent = None;
        self.sse = None;
    }
}

/// What the access phase learnt from the request body, whatever the provider.
pub(crate) struct Intake {
    pub(crate) client: Protocol,
    pub(crate) stream: bool,
    pub(crate) request_model: Option<String>,
    peek: Option<PeekInfo>,
}

/// A JSON-object request body as the peek read it, for the exchange to use without a parse.
pub(crate) struct PeekInfo {
    raw: Bytes,
    model: Option<String>,
    has_model: bool,
    stream: bool,
    tool_count: usize,
    end_user: Option<String>,
    stream_options: ferry_protocol::wire::StreamOptions,
}

/// A missing required field, with what a working value looks like.
fn with_example(e: String) -> String {
    let example = if e.starts_with("property \"auth\" is required") {
        r#"e.g. "auth": {"header": {"Authorization": "Bearer <your key>"}}"#
    } else if e.starts_with("property \"provider\" is required") {
        r#"e.g. "provider": "openai" (one of the providers in /apisix/admin/plugins/ai-proxy)"#
    } else {
        return e;
    };
    format!("{e}; {example}")
}

/// Why the access phase refused a request, and the protocol to say it in.
pub(crate) struct Refusal(pub(crate) Protocol, pub(crate) GatewayError);

fn too_large(len: u64, max: u64) -> GatewayError {
    GatewayError::client(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "could not get body: request size {len} is greater than the maximum size {max} allowed"
        ),
    )
}

/// The access phase's checks common to `ai-proxy` and `ai-proxy-multi`: content type, body
/// size, JSON, protocol, stream flag and model. What can be judged from the head (content type,
/// a declared length) is judged before the body is read. `model_fixed`: every provider the
/// request may go to has `options.model` (a non-string `model` is then tolerated).
pub(crate) async fn intake(ctx: &mut Ctx, max: u64, model_fixed: bool) -> Result<Intake, Refusal> {
    let guess = if ctx.uri.path().ends_with("/v1/messages") {
        Protocol::AnthropicMessages
    } else {
        Protocol::OpenAiChat
    };
    let fail = |status, msg: String| Refusal(guess, GatewayError::client(status, msg));
    let ct = ctx.header_str("content-type").unwrap_or("application/json");
    if !ct.starts_with("application/json") {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("unsupported content-type: {ct}, only application/json is supported"),
        ));
    }
    if let Some(len) = ctx
        .header_str(header::CONTENT_LENGTH.as_str())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|len| *len > max)
    {
        return Err(Refusal(guess, too_large(len, max)));
    }
    let body: Bytes = match ctx.read_body().await {
        Ok(b) => b.clone(),
        Err(e) => return Err(Refusal(guess, e)),
    };
    if body.len() as u64 > max {
        return Err(Refusal(guess, too_large(body.len() as u64, max)));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "could not get body: request body is empty".into(),
        ));
    }
    let peeked = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .filter(|b| **b == b'{')
        // Valid UTF-8 first: skipped strings are not checked by the parser.
        .and_then(|_| std::str::from_utf8(&body).ok())
        .and_then(|text| serde_json::from_str::<RequestPeek>(text).ok());
    let (client, stream, request_model, peek) = match peeked {
        Some(p) => check_peek(ctx, &body, &p, model_fixed).map_err(|(s, m)| fail(s, m))?,
        None => check_value(ctx, model_fixed).map_err(|(s, m)| fail(s, m))?,
    };
    Ok(Intake {
        client,
        stream,
        request_model,
        peek,
    })
}

/// The protocol to speak to `provider` for a `client` request, and the converter pair when
/// they differ; a 400 when the provider cannot serve it.
pub(crate) fn route_for(
    provider: &ferry_provider::Provider,
    client: Protocol,
) -> Result<(Protocol, Option<Pair>), GatewayError> {
    if provider.capability(client).is_some() {
        Ok((client, None))
    } else if client == Protocol::Passthrough {
        Ok((Protocol::Passthrough, None))
    } else if let Some((pair, t)) = convert::find(client, |p| provider.capability(p).is_some()) {
        Ok((t, Some(pair)))
    } else {
        Err(GatewayError::client(
            StatusCode::BAD_REQUEST,
            format!(
                "provider {} does not support {} protocol (supported: {})",
                provider.name,
                client.name(),
                provider.protocol_names()
            ),
        ))
    }
}

/// Records what the access phase learnt in the request's LLM stats.
pub(crate) fn record_intake(ctx: &mut Ctx, intake: &Intake, provider: &'static str) {
    ctx.llm.request_type = if intake.stream {
        RequestType::AiStream
    } else {
        RequestType::AiChat
    };
    ctx.llm.provider = Some(provider);
    ctx.llm.request_model = intake.request_model.clone();
}

impl AiProxy {
    /// The access phase's checks; a refusal when the request cannot go upstream.
    async fn admit(&self, ctx: &mut Ctx) -> Result<AiState, Refusal> {
        let model_fixed = self.conf.options_model.is_some();
        let intake = intake(ctx, self.conf.max_req_body_size, model_fixed).await?;
        let provider = self.conf.provider;
        let (target, pair) =
            route_for(provider, intake.client).map_err(|e| Refusal(intake.client, e))?;
        record_intake(ctx, &intake, provider.name);
        Ok(AiState::new(intake, target, pair))
    }
}

/// Checks a body read through the peek: protocol, stream flag, model.
fn check_peek(
    ctx: &Ctx,
    body: &Bytes,
    p: &RequestPeek<'_>,
    model_fixed: bool,
) -> Result<Checked, (StatusCode, String)> {
    if !matches!(p.model, Shape::Absent | Shape::Null | Shape::Str(_)) && !model_fixed {
        return Err((StatusCode::BAD_REQUEST, MODEL_NOT_STRING.into()));
    }
    if !matches!(p.stream, Shape::Absent | Shape::Null | Shape::Bool(_)) {
        return Err((StatusCode::BAD_REQUEST, STREAM_NOT_BOOL.into()));
    }
    let client = detect::detect_peek(ctx.uri.path(), p)
        .ok_or((StatusCode::BAD_REQUEST, NO_PROTOCOL.to_string()))?;
    let mut stream = client.can_stream() && p.stream == Shape::Bool(true);
    let mut model = p.model.as_str().map(String::from);
    if client == Protocol::Gemini
        && let Some((m, s)) = detect::gemini_call(ctx.uri.path())
    {
        (model, stream) = (Some(m), s);
    }
    let info = PeekInfo {
        raw: body.clone(),
        model: model.clone(),
        has_model: p.model != Shape::Absent,
        stream: p.stream == Shape::Bool(true),
        tool_count: p.tools.items.len(),
        end_user: observe::end_user_peek(client, p).map(String::from),
        stream_options: p.stream_options,
    };
    Ok((client, stream, model, Some(info)))
}

/// Checks a body through a full parse (not an object, or the peek could not read it).
fn check_value(ctx: &Ctx, model_fixed: bool) -> Result<Checked, (StatusCode, String)> {
    let Some(json) = ctx.json() else {
        let e = ctx
            .body()
            .and_then(|b| serde_json::from_slice::<Value>(b).err())
            .map_or_else(String::new, |e| e.to_string());
        return Err((
            StatusCode::BAD_REQUEST,
            format!("could not parse JSON request body: {e}"),
        ));
    };
    if !json.is_object() && !json.is_array() {
        return Err((
            StatusCode::BAD_REQUEST,
            "request body must be a JSON object".into(),
        ));
    }
    let model = json.get("model");
    if model.is_some_and(|m| !m.is_string() && !m.is_null()) && !model_fixed {
        return Err((StatusCode::BAD_REQUEST, MODEL_NOT_STRING.into()));
    }
    if json
        .get("stream")
        .is_some_and(|s| !s.is_boolean() && !s.is_null())
    {
        return Err((StatusCode::BAD_REQUEST, STREAM_NOT_BOOL.into()));
    }
    let client = detect::detect(ctx.uri.path(), json)
        .ok_or((StatusCode::BAD_REQUEST, NO_PROTOCOL.to_string()))?;
    if client == Protocol::Gemini
        && let Some((m, stream)) = detect::gemini_call(ctx.uri.path())
    {
        return Ok((client, stream, Some(m), None));
    }
    let stream = detect::wants_stream(client, json);
    Ok((
        client,
        stream,
        model.and_then(Value::as_str).map(String::from),
        None,
    ))
}

/// Protocol, stream flag, request model and peek of a checked body.
type Checked = (Protocol, bool, Option<String>, Option<PeekInfo>);

const MODEL_NOT_STRING: &str =
    "invalid request body: \"model\" must be a string (or set options.model on the route)";
const STREAM_NOT_BOOL: &str = "invalid request body: \"stream\" must be a boolean";
const NO_PROTOCOL: &str = "no matching AI protocol for the request";

impl Plugin for AiProxy {
    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Phase<'a> {
        Phase::Wait(Box::pin(async move {
            match self.admit(ctx).await {
                Ok(st) => {
                    ctx.ext.insert(st);
                    if let Some(l) = &self.conf.logging {
                        ctx.ext.insert(l.clone());
                    }
                    Flow::Continue
                }
                Err(Refusal(proto, e)) => Flow::Respond(e.render(Some(proto))),
            }
        }))
    }

    fn before_proxy<'a>(&'a self, ctx: &'a mut Ctx) -> Option<ProxyFuture<'a>> {
        ctx.ext.get::<AiState>()?;
        Some(Box::pin(proxy::run(&self.conf, ctx)))
    }

    fn has_body_filter(&self) -> bool {
        true
    }

    fn body_filter(&self, ctx: &mut Ctx, chunk: &mut Bytes, end: bool) {
        stream::body_filter(ctx, chunk, end);
    }
}

/// Milliseconds since `t`.
pub(crate) fn ms_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}
