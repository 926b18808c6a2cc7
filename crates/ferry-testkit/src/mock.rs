//! A mock LLM provider speaking OpenAI chat (JSON and SSE), Responses, embeddings, Anthropic
//! Messages and Vertex AI `:predict`, with knobs (request headers) for faults and timing:
//!
//! | header | effect |
//! |---|---|
//! | `x-mock-status: N` | answer status N with an OpenAI-style error body (`retry-after: 1` on 429) |
//! | `x-mock-delay-ms: N` | wait before the response head |
//! | `x-mock-chunk-delay-ms: N` | wait between stream chunks |
//! | `x-mock-chunks: N` | number of content chunks in a stream (default 3) |
//! | `x-mock-fixture: PATH` | serve a file (`.sse` as `text/event-stream`, one chunk per event) |
//! | `x-mock-echo: 1` | answer the received method, path, query, headers and body as JSON |
//! | `x-mock-tool-call: 1` | answer chat with a tool call |
//! | `x-mock-malformed: 1` | a stream of garbage and broken JSON |
//! | `x-mock-reset-after: N` | reset the connection after N stream chunks |
//! | `x-mock-stall: 1` | send the head of a stream, then nothing |
//! | `x-mock-stall-after: N` | send N stream chunks, then nothing |
//! | `x-mock-drip-ms: N` | send the stream one byte at a time, N ms apart |
//! | `x-mock-long-line: N` | after the first event, a `data:` line of N bytes (64 KiB pieces) |
//! | `x-mock-invalid-utf8: 1` | a stream event whose text holds bytes that are not UTF-8 |
//! | `x-mock-endless: 1` | a stream that never ends |
//!
//! Switches for health tests: [`Mock::set_status`] answers every LLM request with a status
//! (0: off), and `/_mock/health` answers [`Mock::set_health`]'s status (default 200).
//! [`Mock::open_streams`] counts event streams still being sent (a reader that went away
//! ends its stream).
//!
//! With a key configured, requests need `Authorization: Bearer KEY`, `x-api-key: KEY`,
//! `api-key: KEY` or `?api_key=KEY`, else 401. `GET /_mock/requests` lists what was received.

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Mock settings.
#[derive(Debug, Clone, Default)]
pub struct MockConfig {
    /// Required credential, if any.
    pub key: Option<String>,
    /// Keep received requests for `/_mock/requests` (off for benchmarks).
    pub record: bool,
    /// Answer plain chat requests (no `x-mock-*` knob but `x-mock-chunks`) with pre-rendered
    /// bytes in one frame, as a static file server would: the benchmarks' cheap upstream.
    pub fast: bool,
    /// HTTP/2: the most concurrent streams one connection accepts (SETTINGS).
    pub h2_max_streams: Option<u32>,
}

/// One received request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct State {
    cfg: MockConfig,
    /// Answer every LLM request with this status (0: off).
    forced: std::sync::atomic::AtomicU16,
    /// The status of `/_mock/health`.
    health: std::sync::atomic::AtomicU16,
    seen: Mutex<Vec<Recorded>>,
    rendered: Mutex<HashMap<FastKey, Bytes>>,
    /// Event streams being sent.
    open_streams: std::sync::atomic::AtomicUsize,
    /// Connections accepted.
    connections: std::sync::atomic::AtomicUsize,
}

/// An event stream being sent: counted until its body is dropped.
struct OpenStream(Arc<State>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0
            .open_streams
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What a pre-rendered answer depends on: model, stream, include_usage, chunks.
type FastKey = (String, bool, bool, usize);

/// The fields of a chat request the fast path reads.
#[derive(serde::Deserialize)]
struct ChatPeek {
    model: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptionsPeek>,
}

#[derive(serde::Deserialize)]
struct StreamOptionsPeek {
    include_usage: Option<bool>,
}

/// The pre-rendered answer to a plain chat request, when `fast` is on and it is one.
fn fast_answer(state: &State, path: &str, h: &HeaderMap, body: &[u8]) -> Option<Response<Body>> {
    if !path.ends_with("/chat/completions")
        || h.keys()
            .any(|k| k.as_str().starts_with("x-mock-") && k != "x-mock-chunks")
        || !authorized(&state.cfg, h, "")
    {
        return None;
    }
    let peek: ChatPeek = serde_json::from_slice(body).ok()?;
    let stream = peek.stream == Some(true);
    let usage = peek
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let model = peek.model.unwrap_or_else(|| "mock-model".into());
    let key = (model, stream, usage, chunk_count(h));
    let mut cache = state.rendered.lock().ok()?;
    let bytes = cache
        .entry(key)
        .or_insert_with_key(|(model, stream, usage, n)| {
            if *stream {
                Bytes::from(chat_events(model, *n, *usage, false).concat())
            } else {
                Bytes::from(chat_json(model, false).to_string())
            }
        })
        .clone();
    drop(cache);
    let ct = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    Some(full(StatusCode::OK, ct, bytes))
}

/// A running mock.
pub struct Mock {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Mock {
    /// Starts on 127.0.0.1 with an ephemeral port.
    pub async fn start(cfg: MockConfig) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        Mock::on(listener, cfg)
    }

    /// Serves on a bound listener.
    pub fn on(listener: TcpListener, cfg: MockConfig) -> Mock {
        Mock::serving(listener, cfg, None)
    }

    /// Starts on 127.0.0.1 over TLS (HTTP/2 and HTTP/1.1 by ALPN) with a certificate for
    /// `hosts` issued by a fresh test CA; returns the CA certificate (PEM) to trust.
    pub async fn start_tls(cfg: MockConfig, hosts: &[&str]) -> (Mock, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let ca = crate::tls::TestCa::new(hosts);
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config());
        (Mock::serving(listener, cfg, Some(acceptor)), ca.ca_pem)
    }

    fn serving(
        listener: TcpListener,
        cfg: MockConfig,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Mock {
        let addr = listener.local_addr().expect("mock addr");
        let state = Arc::new(State {
            cfg,
            forced: std::sync::atomic::AtomicU16::new(0),
            health: std::sync::atomic::AtomicU16::new(200),
            seen: Mutex::new(Vec::new()),
            rendered: Mutex::new(HashMap::new()),
            open_streams: std::sync::atomic::AtomicUsize::new(0),
            connections: std::sync::atomic::AtomicUsize::new(0),
        });
        let task = tokio::spawn(serve(listener, state.clone(), tls));
        Mock { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .seen
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    pub fn last(&self) -> Option<Recorded> {
        self.requests().pop()
    }

    /// Answers every LLM request with `status` (an OpenAI-style error body); 0 turns it off.
    pub fn set_status(&self, status: u16) {
        self.state
            .forced
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }

    /// The status `/_mock/health` answers.
    pub fn set_health(&self, status: u16) {
        self.state
            .health
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many requests with this path were received (recording on).
    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Event streams still being sent (not with `fast`).
    pub fn open_streams(&self) -> usize {
        self.state
            .open_streams
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, state: Arc<State>, tls: Option<tokio_rustls::TlsAcceptor>) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Some(n) = state.cfg.h2_max_streams {
        builder.http2().max_concurrent_streams(n);
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        state
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, state).await) }
            });
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
            }
        });
    }
}

fn full(status: StatusCode, ct: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
    r
}

fn json_resp(status: StatusCode, v: &Value) -> Response<Body> {
    full(status, "application/json", v.to_string())
}

fn knob(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn authorized(cfg: &MockConfig, h: &HeaderMap, query: &str) -> bool {
    let Some(key) = &cfg.key else { return true };
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    get("authorization") == Some(&format!("Bearer {key}"))
        || get("x-api-key") == Some(key)
        || get("api-key") == Some(key)
        || query.split('&').any(|kv| kv == format!("api_key={key}"))
}

/// Answers a request; an event stream is counted in [`Mock::open_streams`] while it is sent.
async fn handle(req: Request<Incoming>, state: Arc<State>) -> Response<Body> {
    let resp = answer(req, state.clone()).await;
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !is_sse || state.cfg.fast {
        return resp;
    }
    state
        .open_streams
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let open = OpenStream(state);
    resp.map(|body| {
        let s = http_body_util::BodyStream::new(body).map(move |f| {
            let _ = &open;
            f
        });
        BodyExt::boxed_unsync(StreamBody::new(s))
    })
}

async fn answer(req: Request<Incoming>, state: Arc<State>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    if state.cfg.fast
        && parts.uri.query().is_none()
        && let Some(r) = fast_answer(&state, parts.uri.path(), &parts.headers, &body)
    {
        return r;
    }
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let h = parts.headers;
    if path == "/_mock/requests" {
        let seen = state.seen.lock().map(|v| v.clone()).unwrap_or_default();
        let list: Vec<Value> = seen.iter().map(describe).collect();
        return json_resp(StatusCode::OK, &Value::Array(list));
    }
    let rec = Recorded {
        version: format!("{:?}", parts.version),
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: h.clone(),
        body: body.clone(),
    };
    if state.cfg.record
        && let Ok(mut v) = state.seen.lock()
    {
        if v.len() >= 1000 {
            v.remove(0);
        }
        v.push(rec.clone());
    }
    if path == "/_mock/health" {
        let code = state.health.load(std::sync::atomic::Ordering::Relaxed);
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        return json_resp(status, &json!({"status": code}));
    }
    if let Some(ms) = knob(&h, "x-mock-delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if !authorized(&state.cfg, &h, &query) {
        return json_resp(
            StatusCode::UNAUTHORIZED,
            &json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}),
        );
    }
    let forced = state.forced.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(code) = knob(&h, "x-mock-status").or((forced != 0).then_some(u64::from(forced))) {
        let status = StatusCode::from_u16(code as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = json_resp(
            status,
            &json!({"error": {"message": format!("mock error {code}"), "type": "server_error", "code": null}}),
        );
        if code == 429 {
            r.headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("1"));
        }
        r.headers_mut()
            .insert("x-request-id", http::HeaderValue::from_static("req_mock"));
        return r;
    }
    if h.contains_key("x-mock-echo") {
        return json_resp(StatusCode::OK, &describe(&rec));
    }
    if let Some(file) = h.get("x-mock-fixture").and_then(|v| v.to_str().ok()) {
        return fixture(file, &h).await;
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_string();
    let stream = req.get("stream") == Some(&Value::Bool(true));
    let kind = if path.ends_with("/chat/completions") || path.ends_with("/completions") {
        "chat"
    } else if path.ends_with("/embeddings") {
        "embeddings"
    } else if path.ends_with("/responses") {
        "responses"
    } else if path.ends_with("/messages") {
        "anthropic"
    } else if path.ends_with(":predict") {
        // Vertex AI embeddings: one prediction per instance.
        let n = req["instances"].as_array().map_or(0, Vec::len);
        let p: Vec<Value> = (0..n)
            .map(|_| {
                json!({"embeddings": {"values": [0.0123, -0.0456, 0.0789, 0.0012],
                "statistics": {"token_count": 7, "truncated": false}}})
            })
            .collect();
        return json_resp(
            StatusCode::OK,
            &json!({"predictions": p, "metadata": {"billableCharacterCount": 26}}),
        );
    } else {
        return json_resp(
            StatusCode::OK,
            &json!({"passthrough": true, "path": path, "method": rec.method, "query": query}),
        );
    };
    if h.contains_key("x-mock-malformed") {
        let events = vec![
            "data: {not json\n\n".to_string(),
            "garbage without colon\n\n".to_string(),
            "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\n".to_string(),
            "data: [DONE]\n\n".to_string(),
        ];
        return sse(events, &h);
    }
    match (kind, stream) {
        ("chat", false) => json_resp(
            StatusCode::OK,
            &chat_json(&model, h.contains_key("x-mock-tool-call")),
        ),
        ("chat", true) => {
            let include_usage = req
                .get("stream_options")
                .and_then(|s| s.get("include_usage"))
                == Some(&Value::Bool(true));
            sse(
                chat_events(
                    &model,
                    chunk_count(&h),
                    include_usage,
                    h.contains_key("x-mock-tool-call"),
                ),
                &h,
            )
        }
        ("embeddings", _) => json_resp(
            StatusCode::OK,
            &json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.0123, -0.0456, 0.0789, 0.0012]}],
                    "model": model, "usage": {"prompt_tokens": 7, "total_tokens": 7}}),
        ),
        ("responses", false) => json_resp(
            StatusCode::OK,
            &json!({"id": "resp_mock", "object": "response", "model": model, "status": "completed",
                    "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "1+1 equals 2."}]}],
                    "usage": {"input_tokens": 20, "output_tokens": 5, "total_tokens": 25}}),
        ),
        ("responses", true) => sse(responses_events(&model, chunk_count(&h)), &h),
        ("anthropic", false) => {
            let (content, stop) = if h.contains_key("x-mock-tool-call") {
                (
                    json!([{"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "toolu_mock", "name": "get_weather", "input": {"city": "Paris"}}]),
                    "tool_use",
                )
            } else {
                (
                    json!([{"type": "text", "text": "1+1 equals 2."}]),
                    "end_turn",
                )
            };
            json_resp(
                StatusCode::OK,
                &json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                        "content": content, "stop_reason": stop, "stop_sequence": null,
                        "usage": {"input_tokens": 10, "output_tokens": 8, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}),
            )
        }
        _ => sse(
            anthropic_events(&model, chunk_count(&h), h.contains_key("x-mock-tool-call")),
            &h,
        ),
    }
}

fn describe(r: &Recorded) -> Value {
    let headers: serde_json::Map<String, Value> = r
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Value::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    let body = serde_json::from_slice::<Value>(&r.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.body).into_owned()));
    json!({"method": r.method, "path": r.path, "query": r.query, "headers": headers, "body": body})
}

fn chunk_count(h: &HeaderMap) -> usize {
    knob(h, "x-mock-chunks").unwrap_or(3) as usize
}

const WORDS: [&str; 3] = ["1+1", " equals", " 2."];

/// The mock's non-stream chat completion.
pub fn chat_json(model: &str, tool: bool) -> Value {
    let message = if tool {
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_mock", "type": "function",
               "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
    } else {
        json!({"role": "assistant", "content": "1+1 equals 2.", "refusal": null})
    };
    json!({"id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000, "model": model,
           "choices": [{"index": 0, "message": message, "logprobs": null,
                        "finish_reason": if tool { "tool_calls" } else { "stop" }}],
           "usage": {"prompt_tokens": 23, "completion_tokens": 8, "total_tokens": 31}})
}

fn chunk(model: &str, delta: Value, finish: Value) -> String {
    let c = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

/// The mock's chat stream: role, `n` content chunks, finish, usage (if asked), `[DONE]`.
pub fn chat_events(model: &str, n: usize, include_usage: bool, tool: bool) -> Vec<String> {
    let mut v = vec![chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if tool {
        v.push(chunk(
            model,
            json!({"tool_calls": [{"index": 0, "id": "call_mock", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            Value::Null,
        ));
        v.push(chunk(model, json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}]}), Value::Null));
    }
    for i in 0..n {
        v.push(chunk(model, json!({"content": WORDS[i % 3]}), Value::Null));
    }
    v.push(chunk(
        model,
        json!({}),
        json!(if tool { "tool_calls" } else { "stop" }),
    ));
    if include_usage {
        let u = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                       "choices": [], "usage": {"prompt_tokens": 15, "completion_tokens": n.max(1) * 2, "total_tokens": 15 + n.max(1) * 2}});
        v.push(format!("data: {u}\n\n"));
    }
    v.push("data: [DONE]\n\n".to_string());
    v
}

fn event(kind: &str, data: Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

fn responses_events(model: &str, n: usize) -> Vec<String> {
    let mut v = vec![event(
        "response.created",
        json!({"type": "response.created", "response": {"id": "resp_mock", "model": model}}),
    )];
    for i in 0..n {
        v.push(event(
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "delta": WORDS[i % 3]}),
        ));
    }
    v.push(event(
        "response.completed",
        json!({"type": "response.completed", "response": {"id": "resp_mock", "model": model, "status": "completed",
               "output": [{"type": "message", "content": [{"type": "output_text", "text": "1+1 equals 2."}]}],
               "usage": {"input_tokens": 20, "output_tokens": 5, "total_tokens": 25}}}),
    ));
    v
}

fn anthropic_events(model: &str, n: usize, tool: bool) -> Vec<String> {
    let mut v = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    for i in 0..n {
        v.push(event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": WORDS[i % 3]}})));
    }
    v.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    if tool {
        v.push(event("content_block_start", json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_mock", "name": "get_weather", "input": {}}})));
        for part in ["{\"city\":", "\"Paris\"}"] {
            v.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
        }
        v.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ));
    }
    let stop = if tool { "tool_use" } else { "end_turn" };
    v.push(event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 8}})));
    v.push(event("message_stop", json!({"type": "message_stop"})));
    v
}

/// Streams `events`, honouring the timing and fault knobs.
fn sse(events: Vec<String>, h: &HeaderMap) -> Response<Body> {
    let mut delay = knob(h, "x-mock-chunk-delay-ms").map(Duration::from_millis);
    let reset_after = knob(h, "x-mock-reset-after").map(|n| n as usize);
    let stall_after = knob(h, "x-mock-stall-after").map(|n| n as usize);
    let stall = h.contains_key("x-mock-stall");
    let endless = h.contains_key("x-mock-endless");
    let mut items: Vec<Bytes> = events.into_iter().map(Bytes::from).collect();
    if h.contains_key("x-mock-invalid-utf8") {
        let bad = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"bad \xff\xfe bytes\"}}]}\n\n";
        items.insert(1.min(items.len()), Bytes::from_static(bad));
    }
    if let Some(n) = knob(h, "x-mock-long-line") {
        // One event whose data line never ends, in 64 KiB pieces, after the first event.
        let mut long = vec![Bytes::from_static(b"data: ")];
        let piece = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut left = n as usize;
        while left > 0 {
            let k = left.min(piece.len());
            long.push(piece.slice(..k));
            left -= k;
        }
        long.push(Bytes::from_static(b"\n\n"));
        let at = 1.min(items.len());
        items.splice(at..at, long);
    }
    if let Some(d) = knob(h, "x-mock-drip-ms") {
        // Every byte on its own, `d` ms apart.
        let all: Vec<u8> = items.concat();
        items = all.iter().map(|b| Bytes::copy_from_slice(&[*b])).collect();
        delay = Some(Duration::from_millis(d));
    }
    let s = futures_util::stream::unfold(0usize, move |i| {
        let items = items.clone();
        async move {
            if stall || stall_after == Some(i) {
                std::future::pending::<()>().await;
            }
            if i > 0
                && let Some(d) = delay
            {
                tokio::time::sleep(d).await;
            }
            if reset_after == Some(i) {
                return Some((Err(std::io::Error::other("mock reset")), i + 1));
            }
            if endless {
                let c = chunk("mock-model", json!({"content": "more "}), Value::Null);
                return Some((Ok(Frame::data(Bytes::from(c))), i + 1));
            }
            let e = items.get(i)?;
            Some((Ok(Frame::data(e.clone())), i + 1))
        }
    });
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(s.boxed())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    r
}

async fn fixture(path: &str, h: &HeaderMap) -> Response<Body> {
    let Ok(text) = tokio::fs::read_to_string(path).await else {
        return json_resp(
            StatusCode::NOT_FOUND,
            &json!({"error": {"message": format!("no fixture {path}")}}),
        );
    };
    if path.ends_with(".sse") {
        let events: Vec<String> = text.split_inclusive("\n\n").map(String::from).collect();
        return sse(events, h);
    }
    full(StatusCode::OK, "application/json", text)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(addr: SocketAddr, body: &str, chunks: &str) -> (String, String) {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::post("/v1/chat/completions")
            .header("host", "mock")
            .header("authorization", "Bearer k")
            .header("x-mock-chunks", chunks)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let ct = resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (ct, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// `fast` answers with the same bytes as the regular path, just pre-rendered.
    #[tokio::test]
    async fn fast_answers_match_the_regular_ones() {
        let cfg = |fast| MockConfig {
            key: Some("k".into()),
            fast,
            ..MockConfig::default()
        };
        let (slow, fast) = (Mock::start(cfg(false)).await, Mock::start(cfg(true)).await);
        for body in [
            r#"{"model":"m1","messages":[]}"#,
            r#"{"model":"m2","stream":true,"messages":[]}"#,
            r#"{"stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
        ] {
            for _ in 0..2 {
                let a = post(slow.addr, body, "5").await;
                let b = post(fast.addr, body, "5").await;
                assert_eq!(a, b, "{body}");
            }
        }
    }
}
