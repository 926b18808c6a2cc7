//! Streaming: the upstream body as it arrives (with `max_stream_duration_ms` enforced by a
//! timer and `max_response_bytes` by count), and the body filter that decodes the SSE events
//! passing through to record usage, text and tool calls, optionally removing the usage-only
//! chunk Ferry asked for on the client's behalf.

use super::transport::UpError;
use super::{AiState, ms_since, publish};
use crate::body::BoxError;
use crate::ctx::Ctx;
use bytes::{Bytes, BytesMut};
use ferry_protocol::convert::{OutEvent, StreamConverter};
use ferry_protocol::sse::Decoder;
use ferry_protocol::{Observed, Protocol};
use http::StatusCode;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// Why a stream stopped early.
#[derive(Debug)]
pub enum StreamError {
    Duration,
    Bytes,
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
            StreamError::Upstream(e) if e.is_timeout() => f.write_str("upstream read timed out"),
            StreamError::Upstream(e) => write!(f, "upstream stream {e}"),
        }
    }
}

/// The upstream response body, bounded in time (whole stream and each read) and size.
pub struct UpstreamBody {
    body: Incoming,
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
        body: Incoming,
        sent: Instant,
        read_timeout: Duration,
        max_duration: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Self {
        UpstreamBody {
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
                self.done = true;
                return Poll::Ready(Some(Err(StreamError::Duration)));
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => {
                    let Ok(b) = f.into_data() else {
                        continue; // trailers
                    };
                    self.read += b.len() as u64;
                    if self.max_bytes.is_some_and(|m| self.read > m) {
                        self.done = true;
                        return Poll::Ready(Some(Err(StreamError::Bytes)));
                    }
                    let next = tokio::time::Instant::now() + self.read_timeout;
                    self.idle.as_mut().reset(next);
                    return Poll::Ready(Some(Ok(b)));
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(StreamError::Upstream(UpError::body(&e)))));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if self.idle.as_mut().poll(cx).is_ready() {
                        self.done = true;
                        return Poll::Ready(Some(Err(StreamError::Upstream(UpError::Timeout))));
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
        match self.poll_chunk(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => {
                // The status line is gone already: end the stream where it is.
                tracing::warn!("aborting AI stream: {e}");
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none()
    }
}

/// What the body filter keeps for an SSE response.
pub struct SseState {
    proto: Protocol,
    hide_usage: bool,
    decoder: Decoder,
    observed: Observed,
    bytes: u64,
    finished: bool,
}

impl SseState {
    /// `keep_text`: the response text is needed (payload logging).
    pub fn new(proto: Protocol, hide_usage: bool, keep_text: bool) -> SseState {
        metrics::gauge!("apisix_llm_active_connections").increment(1.0);
        SseState {
            proto,
            hide_usage,
            decoder: if hide_usage {
                Decoder::keeping_raw()
            } else {
                Decoder::new()
            },
            observed: Observed {
                skip_text: !keep_text,
                ..Observed::default()
            },
            bytes: 0,
            finished: false,
        }
    }

    /// Observes a chunk; returns the bytes to send instead when events were removed (or held
    /// back until complete, so that a removed event never goes out in part).
    fn feed(&mut self, chunk: &Bytes, end: bool) -> Option<Bytes> {
        self.bytes += chunk.len() as u64;
        let (proto, observed) = (self.proto, &mut self.observed);
        if !self.hide_usage {
            self.decoder
                .feed_each(chunk, |e| _ = observed.event(proto, e.kind, e.data));
            if end {
                self.decoder
                    .finish_each(|e| _ = observed.event(proto, e.kind, e.data));
            }
            return None;
        }
        // Events made only of this chunk's bytes are slices of it: note the removed ranges
        // and cut them out at the end (usually nothing, or the one usage chunk).
        let carried = self.decoder.pending_raw() > 0;
        let mut kept = Vec::new();
        let mut cut: Vec<(usize, usize)> = Vec::new();
        let mut pos = 0usize;
        let mut on_event = |e: ferry_protocol::sse::EventRef<'_>| {
            let usage_only = observed.event(proto, e.kind, e.data);
            if carried {
                if !usage_only {
                    kept.extend_from_slice(e.raw);
                }
            } else if usage_only {
                cut.push((pos, pos + e.raw.len()));
            }
            pos += e.raw.len();
        };
        self.decoder.feed_each(chunk, &mut on_event);
        let rest = if end {
            let rest = self.decoder.finish_each(&mut on_event);
            Some(rest)
        } else {
            None
        };
        if carried {
            if let Some(r) = rest {
                kept.extend_from_slice(&r);
            }
            return Some(Bytes::from(kept));
        }
        // Bytes of an event still incomplete wait for it; at the end they go out as they are.
        let complete = if end { chunk.len() } else { pos };
        if cut.is_empty() {
            return (complete < chunk.len()).then(|| chunk.slice(..complete));
        }
        let mut out = Vec::with_capacity(complete);
        let mut from = 0;
        for (a, b) in cut {
            out.extend_from_slice(&chunk[from..a]);
            from = b;
        }
        out.extend_from_slice(&chunk[from..complete]);
        Some(Bytes::from(out))
    }
}

/// `ai-proxy`'s body filter: observes SSE responses chunk by chunk; at the end (or when the
/// client goes away) publishes the totals.
pub fn body_filter(ctx: &mut Ctx, chunk: &mut Bytes, end: bool) {
    let Some(mut st) = ctx.ext.remove::<AiState>() else {
        return;
    };
    if let Some(sse) = st.sse.as_mut().filter(|s| !s.finished) {
        if let Some(replaced) = sse.feed(chunk, end) {
            *chunk = replaced;
        }
        if end {
            sse.finished = true;
            metrics::gauge!("apisix_llm_active_connections").decrement(1.0);
            let observed = std::mem::take(&mut sse.observed);
            let bytes = sse.bytes;
            publish(ctx, &observed);
            if let Some(sent) = st.sent {
                ctx.set_var("apisix_upstream_response_time", ms_since(sent));
                ctx.upstream.response_time = Some(sent.elapsed().as_secs_f64());
            }
            ctx.upstream.response_length = bytes;
        }
    }
    ctx.ext.insert(st);
}

/// An upstream event stream converted event by event into the client's protocol.
pub struct Converting {
    up: UpstreamBody,
    decoder: Decoder,
    conv: Box<dyn StreamConverter>,
    out: Vec<OutEvent>,
    pending: Option<Bytes>,
    ended: bool,
}

impl Converting {
    pub fn new(up: UpstreamBody, conv: Box<dyn StreamConverter>) -> Converting {
        Converting {
            up,
            decoder: Decoder::new(),
            conv,
            out: Vec::new(),
            pending: None,
            ended: false,
        }
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

    fn encode(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            return None;
        }
        let mut s = String::new();
        for e in self.out.drain(..) {
            e.encode(&mut s);
        }
        Some(Bytes::from(s))
    }

    fn poll_converted(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamError>>> {
        if let Some(p) = self.pending.take() {
            return Poll::Ready(Some(Ok(p)));
        }
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            match self.up.poll_chunk(cx) {
                Poll::Ready(Some(Ok(b))) => {
                    let (conv, out) = (&mut self.conv, &mut self.out);
                    self.decoder
                        .feed_each(&b, |e| conv.event(e.kind, e.data, out));
                    if let Some(bytes) = self.encode() {
                        return Poll::Ready(Some(Ok(bytes)));
                    }
                }
                Poll::Ready(other) => {
                    // End of the upstream (cleanly or not): flush what the converter owes.
                    self.ended = true;
                    let (conv, out) = (&mut self.conv, &mut self.out);
                    self.decoder
                        .finish_each(|e| conv.event(e.kind, e.data, out));
                    self.conv.finish(&mut self.out);
                    let flushed = self.encode();
                    return match (other, flushed) {
                        (Some(Err(e)), None) => Poll::Ready(Some(Err(e))),
                        (Some(Err(e)), Some(b)) => {
                            tracing::warn!("aborting AI stream: {e}");
                            Poll::Ready(Some(Ok(b)))
                        }
                        (_, Some(b)) => Poll::Ready(Some(Ok(b))),
                        (_, None) => Poll::Ready(None),
                    };
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Body for Converting {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.poll_converted(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!("aborting AI stream: {e}");
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pending.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    /// Whatever the chunk boundaries, the client gets the stream without the usage-only
    /// chunk, and the usage is still observed.
    #[test]
    fn usage_chunk_removed_at_every_split() {
        let input = format!("{CHUNK}{CHUNK}{USAGE}{DONE}");
        let expected = format!("{CHUNK}{CHUNK}{DONE}");
        let b = Bytes::from(input.clone());
        for i in 0..=b.len() {
            for j in i..=b.len() {
                let mut st = SseState::new(Protocol::OpenAiChat, true, true);
                let mut out = Vec::new();
                let parts = [b.slice(..i), b.slice(i..j), b.slice(j..)];
                for (n, p) in parts.iter().enumerate() {
                    let sent = st.feed(p, n == 2).unwrap_or_else(|| p.clone());
                    out.extend_from_slice(&sent);
                }
                assert_eq!(String::from_utf8(out).unwrap(), expected, "split {i},{j}");
                assert_eq!(st.observed.usage.map(|u| u.total), Some(4));
                assert_eq!(st.observed.text, "hihi");
            }
        }
    }

    /// Without hiding, chunks pass through untouched (no copy) and are still observed.
    #[test]
    fn observed_without_rewriting() {
        let mut st = SseState::new(Protocol::OpenAiChat, false, true);
        let input = Bytes::from(format!("{CHUNK}{USAGE}{DONE}"));
        assert!(st.feed(&input.slice(..10), false).is_none());
        assert!(st.feed(&input.slice(10..), true).is_none());
        assert_eq!(st.observed.usage.map(|u| u.total), Some(4));
        assert!(st.observed.done);
    }
}
