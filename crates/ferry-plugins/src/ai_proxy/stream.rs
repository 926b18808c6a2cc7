//! Streaming: the upstream body as it arrives (with `max_stream_duration_ms` enforced by a
//! timer and `max_response_bytes` by count), the body filter that watches the SSE events
//! passing through (`ferry_protocol::observe_stream`) and records what they carried, and the
//! event-by-event conversion into the client's protocol.

use super::{AiState, ms_since};
use crate::transport::UpError;
use bytes::{Bytes, BytesMut};
use ferry_core::body::BoxError;
use ferry_core::ctx::Ctx;
use ferry_core::transport::UpBody;
use ferry_protocol::Protocol;
use ferry_protocol::convert::{OutEvent, StreamConverter};
use ferry_protocol::observe_stream::StreamObserver;
use ferry_protocol::sse::Decoder;
use http::StatusCode;
use http_body::{Body, Frame};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// Why a stream stopped early.
#[derive(Debug)]
pub enum StreamError {
    Duration,
    Bytes,
    /// One event grew past `ferry.max_sse_event_size`.
    EventTooLarge,
    Upstream(UpError),
}

impl StreamError {
    pub fn status(&self) -> StatusCode {
        match self {
            StreamError::Duration => StatusCode::GATEWAY_TIMEOUT,
            StreamError::Upstream(e) if e.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Duration => f.write_str("max_stream_duration_ms exceeded"),
            StreamError::Bytes => f.write_str("max_response_bytes exceeded"),
            StreamError::EventTooLarge => write!(
                f,
                "an upstream event exceeds {} bytes (ferry.max_sse_event_size)",
                ferry_protocol::sse::max_event()
            ),
            StreamError::Upstream(e) if e.is_timeout() => f.write_str("upstream read timed out"),
            StreamError::Upstream(e) => write!(f, "upstream stream {e}"),
        }
    }
}

/// Told once when a stream breaks after its first byte reached the client.
pub type FailHook = Box<dyn FnOnce(&StreamError) + Send>;

/// The upstream response body, bounded in time (whole stream and each read) and size.
pub struct UpstreamBody {
    on_fail: Option<FailHook>,
    body: UpBody,
    pending: Option<Bytes>,
    deadline: Option<Pin<Box<Sleep>>>,
    /// The per-read timeout, re-armed after each chunk.
    idle: Pin<Box<Sleep>>,
    read_timeout: Duration,
    max_bytes: Option<u64>,
    read: u64,
    done: bool,
}

impl UpstreamBody {
    pub fn new(
        body: UpBody,
        sent: Instant,
        read_timeout: Duration,
        max_duration: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Self {
        UpstreamBody {
            on_fail: None,
            body,
            pending: None,
            deadline: max_duration.map(|d| Box::pin(tokio::time::sleep_until((sent + d).into()))),
            idle: Box::pin(tokio::time::sleep(read_timeout)),
            read_timeout,
            max_bytes,
            read: 0,
            done: false,
        }
    }

    /// Puts a chunk back in front (the first one, read before answering the client).
    pub fn push_front(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.pending = Some(b);
        }
    }

    /// Sets who is told when the rest of the stream breaks.
    pub fn set_fail_hook(&mut self, hook: Option<FailHook>) {
        self.on_fail = hook;
    }

    /// A failure: reported to the hook, once.
    fn fail(&mut self, e: StreamError) -> Poll<Option<Result<Bytes, StreamError>>> {
        self.done = true;
        if let Some(h) = self.on_fail.take() {
            h(&e);
        }
        Poll::Ready(Some(Err(e)))
    }

    /// The next chunk.
    pub async fn frame(&mut self) -> Option<Result<Bytes, StreamError>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// The whole rest of the body.
    pub async fn read_all(&mut self) -> Result<Bytes, StreamError> {
        let first = match self.frame().await {
            None => return Ok(Bytes::new()),
            Some(r) => r?,
        };
        let Some(second) = self.frame().await.transpose()? else {
            return Ok(first);
        };
        let mut buf = BytesMut::with_capacity(first.len() + second.len());
        buf.extend_from_slice(&first);
        buf.extend_from_slice(&second);
        while let Some(c) = self.frame().await {
            buf.extend_from_slice(&c?);
        }
        Ok(buf.freeze())
    }

    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamError>>> {
        if let Some(p) = self.pending.take() {
            return Poll::Ready(Some(Ok(p)));
        }
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if let Some(d) = self.deadline.as_mut()
                && d.as_mut().poll(cx).is_ready()
            {
                return self.fail(StreamError::Duration);
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => {
                    let Ok(b) = f.into_data() else {
                        continue; // trailers
                    };
                    self.read += b.len() as u64;
                    if self.max_bytes.is_some_and(|m| self.read > m) {
                        return self.fail(StreamError::Bytes);
                    }
                    let next = tokio::time::Instant::now() + self.read_timeout;
                    self.idle.as_mut().reset(next);
                    return Poll::Ready(Some(Ok(b)));
                }
                Poll::Ready(Some(Err(e))) => {
                    return self.fail(StreamError::Upstream(UpError::body(&e)));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if self.idle.as_mut().poll(cx).is_ready() {
                        return self.fail(StreamError::Upstream(UpError::Timeout));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

use std::future::Future;

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        to_frame(self.poll_chunk(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none()
    }
}

/// A chunk as a body frame. A failure after the status line went out cuts the transfer, so
/// the client sees an incomplete answer rather than a normal end.
fn to_frame(
    p: Poll<Option<Result<Bytes, StreamError>>>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match p {
        Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
        Poll::Ready(Some(Err(e))) => {
            tracing::warn!("aborting AI stream: {e}");
            Poll::Ready(Some(Err(e.to_string().into())))
        }
        Poll::Ready(None) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    }
}

/// What the body filter keeps for an SSE response.
pub struct SseState {
    observer: StreamObserver,
    finished: bool,
}

impl SseState {
    /// `keep_text`: the response text is needed (payload logging).
    pub fn new(proto: Protocol, hide_usage: bool, keep_text: bool) -> SseState {
        SseState::watching(StreamObserver::new(proto, hide_usage, keep_text))
    }

    /// The state for an answer framed as one JSON array of events.
    pub fn json_array(proto: Protocol, keep_text: bool) -> SseState {
        SseState::watching(StreamObserver::json_array(proto, keep_text))
    }

    fn watching(observer: StreamObserver) -> SseState {
        metrics::gauge!("apisix_llm_active_connections").increment(1.0);
        SseState {
            observer,
            finished: false,
        }
    }
}

/// `ai-proxy`'s body filter: observes SSE responses chunk by chunk; at the end (or when the
/// client goes away) records the totals.
pub fn body_filter(ctx: &mut Ctx, chunk: &mut Bytes, end: bool) {
    let Some(st) = ctx.ext.get_mut::<AiState>() else {
        return;
    };
    let sent = st.sent;
    let Some(sse) = st.sse.as_mut().filter(|s| !s.finished) else {
        return;
    };
    if let Some(replaced) = sse.observer.feed(chunk, end) {
        *chunk = replaced;
    }
    if !end {
        return;
    }
    sse.finished = true;
    metrics::gauge!("apisix_llm_active_connections").decrement(1.0);
    let observed = std::mem::take(&mut sse.observer.observed);
    let bytes = sse.observer.bytes;
    ctx.llm.record(observed);
    if let Some(sent) = sent {
        ctx.llm.upstream_response_ms = Some(ms_since(sent));
        ctx.upstream.response_time = Some(sent.elapsed().as_secs_f64());
    }
    ctx.upstream.response_length = bytes;
}

/// How a stream that already sent events ends: cleanly, or with an error event in the client's
/// protocol followed by a cut transfer.
#[derive(Default)]
struct Ending {
    ended: bool,
    /// The upstream failure, reported (as a body error) after the error event went out.
    failed: Option<StreamError>,
    /// One poll was let pass after the error event, so the server flushed it before the cut.
    flushed: bool,
}

impl Ending {
    /// The error event for `client`; the failure follows it.
    fn fail(&mut self, client: Protocol, e: StreamError) -> Bytes {
        let event = ferry_protocol::error::stream_error_event(client, &e.to_string());
        self.fail_with(Bytes::from(event), e)
    }

    /// `event` (already framed) tells the client; the failure follows it.
    fn fail_with(&mut self, event: Bytes, e: StreamError) -> Bytes {
        self.ended = true;
        self.failed = Some(e);
        event
    }

    /// After the end: the server writes out what it holds while the body is pending (a body
    /// error right away would drop the error event with the connection), then the cut.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamError>>> {
        if self.failed.is_some() && !self.flushed {
            self.flushed = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.failed.take().map(Err))
    }

    fn is_clean(&self) -> bool {
        self.ended && self.failed.is_none()
    }
}

/// An upstream event stream passed through in the client's own protocol, whole events at a
/// time: the bytes of an event not yet complete are held back until it is. When the upstream
/// breaks off, the client gets the complete events, an error event in its protocol (the
/// partial one is dropped), then a cut transfer, never a terminator that claims a normal end.
pub struct Passing {
    up: UpstreamBody,
    /// `None` for a protocol without a known error event (passthrough): just the cut.
    client: Option<Protocol>,
    held: BytesMut,
    /// The bound of `held` (one event).
    max_event: usize,
    /// Events went out already (a failure before that is the caller's to answer).
    started: bool,
    end: Ending,
}

impl Passing {
    pub fn new(up: UpstreamBody, client: Protocol) -> Passing {
        Passing {
            up,
            client: (client != Protocol::Passthrough).then_some(client),
            held: BytesMut::new(),
            max_event: ferry_protocol::sse::max_event(),
            started: false,
            end: Ending::default(),
        }
    }

    /// The first complete events; `Ok(None)` when the upstream ended without any.
    pub async fn first(&mut self) -> Result<Option<Bytes>, StreamError> {
        std::future::poll_fn(|cx| self.poll_events(cx))
            .await
            .transpose()
    }

    /// Puts the first events back in front.
    pub fn push_front(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.up.push_front(b);
        }
    }

    pub fn set_fail_hook(&mut self, hook: Option<FailHook>) {
        self.up.set_fail_hook(hook);
    }

    fn poll_events(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamError>>> {
        loop {
            if self.end.ended {
                return self.end.poll(cx);
            }
            match self.up.poll_chunk(cx) {
                Poll::Ready(Some(Ok(b))) => {
                    if self.held.is_empty() && ends_event(&b) {
                        self.started = true;
                        return Poll::Ready(Some(Ok(b)));
                    }
                    // Only the new bytes (and the two before them) can end an event.
                    let from = self.held.len().saturating_sub(2);
                    if self.held.len() + b.len() > self.max_event && last_event_end(&b).is_none() {
                        // Refused before it is copied: what is held stays under the bound.
                        self.held = BytesMut::new();
                        return self.broken(StreamError::EventTooLarge);
                    }
                    self.held.extend_from_slice(&b);
                    if let Some(end) = last_event_end(&self.held[from..]) {
                        self.started = true;
                        return Poll::Ready(Some(Ok(self.held.split_to(from + end).freeze())));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.held.clear();
                    return self.broken(e);
                }
                Poll::Ready(None) => {
                    // A clean end: whatever is left goes out as it came.
                    self.end.ended = true;
                    if self.held.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(self.held.split().freeze())));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Passing {
    /// The upstream broke off: before any event, the caller answers; after, the client gets an
    /// error event in its protocol and a cut transfer.
    fn broken(&mut self, e: StreamError) -> Poll<Option<Result<Bytes, StreamError>>> {
        let Some(client) = self.client.filter(|_| self.started) else {
            self.end.ended = true;
            return Poll::Ready(Some(Err(e)));
        };
        Poll::Ready(Some(Ok(self.end.fail(client, e))))
    }
}

/// True when `b` ends with a blank line (the end of an SSE event).
fn ends_event(b: &[u8]) -> bool {
    b.ends_with(b"\n\n") || b.ends_with(b"\r\n\r\n") || b.ends_with(b"\r\r")
}

/// The length of the prefix of `b` that ends with the last complete event.
fn last_event_end(b: &[u8]) -> Option<usize> {
    (1..b.len()).rev().find_map(|i| match (b[i - 1], b[i]) {
        (b'\n', b'\n') | (b'\r', b'\r') => Some(i + 1),
        (b'\n', b'\r') if b.get(i + 1) == Some(&b'\n') => Some(i + 2),
        _ => None,
    })
}

impl Body for Passing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        to_frame(self.poll_events(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.end.is_clean()
    }
}

/// An upstream event stream converted event by event into the client's protocol. When the
/// upstream breaks off, the client gets what was converted, then an error event in its
/// protocol, then a cut transfer: never the closing events of a normal end.
pub struct Converting {
    up: UpstreamBody,
    decoder: Decoder,
    conv: Box<dyn StreamConverter>,
    client: Protocol,
    out: Vec<OutEvent>,
    pending: Option<Bytes>,
    /// Converted bytes went out already.
    started: bool,
    end: Ending,
    /// Events go out as one JSON array (`[e`, `,e`, `]`) instead of SSE: a Gemini stream
    /// without `alt=sse`.
    json_array: bool,
}

impl Converting {
    pub fn new(up: UpstreamBody, conv: Box<dyn StreamConverter>, client: Protocol) -> Converting {
        Converting {
            up,
            decoder: Decoder::new(),
            conv,
            client,
            out: Vec::new(),
            pending: None,
            started: false,
            end: Ending::default(),
            json_array: false,
        }
    }

    /// Frames the events as one JSON array.
    pub fn json_array(mut self) -> Converting {
        self.json_array = true;
        self
    }

    /// The first converted bytes; `Ok(None)` when the upstream ended without producing any.
    pub async fn first(&mut self) -> Result<Option<Bytes>, StreamError> {
        std::future::poll_fn(|cx| self.poll_converted(cx))
            .await
            .transpose()
    }

    pub fn push_front(&mut self, b: Bytes) {
        self.pending = Some(b);
    }

    pub fn set_fail_hook(&mut self, hook: Option<FailHook>) {
        self.up.set_fail_hook(hook);
    }

    fn encode(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            return None;
        }
        let size: usize = self
            .out
            .iter()
            .map(|e| e.data.len() + e.kind.len() + 16)
            .sum();
        let mut s = String::with_capacity(size);
        for e in self.out.drain(..) {
            if self.json_array {
                s.push(if self.started { ',' } else { '[' });
                s.push_str(&e.data);
            } else {
                e.encode(&mut s);
            }
            self.started = true;
        }
        Some(Bytes::from(s))
    }

    fn poll_converted(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamError>>> {
        if let Some(p) = self.pending.take() {
            return Poll::Ready(Some(Ok(p)));
        }
        loop {
            if self.end.ended {
                return self.end.poll(cx);
            }
            match self.up.poll_chunk(cx) {
                Poll::Ready(Some(Ok(b))) => {
                    let (conv, out) = (&mut self.conv, &mut self.out);
                    self.decoder
                        .feed_each(&b, |e| conv.event(e.kind, e.data, out));
                    if self.decoder.overflowed() {
                        self.out.clear();
                        return self.broken(StreamError::EventTooLarge);
                    }
                    if let Some(bytes) = self.encode() {
                        return Poll::Ready(Some(Ok(bytes)));
                    }
                }
                Poll::Ready(Some(Err(e))) => return self.broken(e),
                Poll::Ready(None) => {
                    // The upstream ended: flush what the converter owes (also without [DONE]).
                    self.end.ended = true;
                    let (conv, out) = (&mut self.conv, &mut self.out);
                    self.decoder
                        .finish_each(|e| conv.event(e.kind, e.data, out));
                    self.conv.finish(&mut self.out);
                    let mut bytes = self.encode().map(|b| b.to_vec()).unwrap_or_default();
                    if self.json_array && self.started {
                        bytes.push(b']');
                    }
                    return if bytes.is_empty() {
                        Poll::Ready(None)
                    } else {
                        Poll::Ready(Some(Ok(Bytes::from(bytes))))
                    };
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Converting {
    /// Broken off: the error in the client's protocol, then a cut transfer; no closing events.
    /// Before any output, the caller answers with an error.
    fn broken(&mut self, e: StreamError) -> Poll<Option<Result<Bytes, StreamError>>> {
        if !self.started {
            self.end.ended = true;
            return Poll::Ready(Some(Err(e)));
        }
        if self.json_array {
            let body = ferry_protocol::error::error_body(Some(self.client), 502, &e.to_string());
            let mut event = b",".to_vec();
            event.extend_from_slice(body.trim_ascii_end());
            return Poll::Ready(Some(Ok(self.end.fail_with(Bytes::from(event), e))));
        }
        Poll::Ready(Some(Ok(self.end.fail(self.client, e))))
    }
}

impl Body for Converting {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        to_frame(self.poll_converted(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.end.is_clean()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_boundaries() {
        assert!(ends_event(b"data: 1\n\n"));
        assert!(ends_event(b"data: 1\r\n\r\n"));
        assert!(!ends_event(b"data: 1\n"));
        assert_eq!(last_event_end(b"data: 1\n\ndata: 2"), Some(9));
        assert_eq!(last_event_end(b"data: 1\r\n\r\ndata"), Some(11));
        assert_eq!(last_event_end(b"data: 1\n"), None);
        assert_eq!(last_event_end(b""), None);
    }
}
