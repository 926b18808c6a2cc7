//! The response body wrapper that runs the body-filter and log phases as the body is sent
//! (the log phase runs exactly once: at end of stream, or when the client goes away), and the
//! log phase itself: the plugins' `log`, then the access-log line.

use crate::access_log::AccessLog;
use bytes::Bytes;
use ferry_core::body::{BoxError, GwBody};
use ferry_core::ctx::Ctx;
use ferry_core::plugin::Chain;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Wraps a response body: counts bytes, feeds plugins' body filters, and runs the log phase.
pub struct LoggedBody {
    inner: GwBody,
    ctx: Option<Box<Ctx>>,
    /// The chain that served the request (the route's, merged with its consumer's plugins,
    /// or the global rules'), which runs the filters and the log phase.
    chain: Option<Arc<Chain>>,
    access_log: Option<Arc<AccessLog>>,
    filters: bool,
    ended: bool,
}

impl LoggedBody {
    pub fn new(
        inner: GwBody,
        ctx: Box<Ctx>,
        chain: Option<Arc<Chain>>,
        access_log: Option<Arc<AccessLog>>,
    ) -> Self {
        let filters = chain.as_ref().is_some_and(|c| c.has_body_filters());
        LoggedBody {
            inner,
            ctx: Some(ctx),
            chain,
            access_log,
            filters,
            ended: false,
        }
    }

    fn finish(&mut self) {
        if let Some(mut ctx) = self.ctx.take() {
            // A body that ended early (client gone, error) still gets its final filter call.
            if self.filters
                && !self.ended
                && let Some(chain) = &self.chain
            {
                chain.body_filter(&mut ctx, &mut Bytes::new(), true);
            }
            log_phase(ctx, self.chain.as_deref(), self.access_log.as_deref());
        }
    }
}

/// The log phase: plugins' `log`, then the access-log line. Runs once per request.
pub fn log_phase(mut ctx: Box<Ctx>, chain: Option<&Chain>, access_log: Option<&AccessLog>) {
    ctx.end = Some(std::time::Instant::now());
    if let Some(chain) = chain {
        chain.log(&ctx);
    }
    if let Some(log) = access_log {
        let mut line = String::with_capacity(256);
        log.template.render(&*ctx, &mut line);
        line.push('\n');
        log.submit(line);
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.ended {
            this.finish();
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(mut data) => {
                        if let Some(ctx) = this.ctx.as_mut() {
                            if this.filters
                                && let Some(chain) = &this.chain
                            {
                                chain.body_filter(ctx, &mut data, false);
                            }
                            ctx.body_bytes_sent += data.len() as u64;
                        }
                        Frame::data(data)
                    }
                    Err(other) => other,
                };
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                if this.filters
                    && let Some(ctx) = this.ctx.as_mut()
                    && let Some(chain) = &this.chain
                {
                    let mut tail = Bytes::new();
                    chain.body_filter(ctx, &mut tail, true);
                    if !tail.is_empty() {
                        this.ended = true;
                        ctx.body_bytes_sent += tail.len() as u64;
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                }
                this.ended = true;
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Report the end only after the log phase ran, so it runs inside poll_frame.
        self.ctx.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.filters {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // The end of the body, or the client went away first: the log phase runs either way.
        self.finish();
    }
}
