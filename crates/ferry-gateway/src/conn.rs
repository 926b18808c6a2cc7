//! One client connection's clocks, as nginx keeps them: the request head must arrive within
//! `client_header_timeout` (from accept, or from the first byte of the next request), an idle
//! kept-alive connection closes after `keepalive_timeout`, and a write blocked for
//! `send_timeout` ends the connection. The socket is wrapped; the service marks when requests
//! are in flight, so the wrapper knows which clock runs.

use atomic_waker::AtomicWaker;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The timeouts a connection enforces itself.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    pub header: Duration,
    pub keepalive: Duration,
    pub send: Duration,
}

/// Requests in flight on one connection, shared by the socket wrapper and the service.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    /// The reader waiting while requests were in flight: woken when the last one ends, so the
    /// idle clock starts even if nothing else polls the connection.
    reader: AtomicWaker,
}

impl InFlight {
    /// Marks a request in flight until the returned guard is dropped (with the response body).
    pub fn enter(self: &Arc<Self>) -> RequestGuard {
        self.count.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }
}

/// One request in flight.
pub struct RequestGuard(Arc<InFlight>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Requests in flight: their bodies have their own clock.
    Busy,
    /// Between requests, nothing read yet.
    Idle,
}

/// A client socket with the connection's clocks.
pub struct Guarded<T> {
    io: T,
    inflight: Arc<InFlight>,
    clocks: Clocks,
    phase: Phase,
    /// The read clock (head or idle), armed while reading in those phases.
    read_timer: Pin<Box<Sleep>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// The write clock runs (a write is blocked).
    write_waiting: bool,
}

impl<T> Guarded<T> {
    /// Wraps a just-accepted socket: the head clock starts now.
    pub fn new(io: T, inflight: Arc<InFlight>, clocks: Clocks) -> Guarded<T> {
        Guarded {
            io,
            inflight,
            clocks,
            phase: Phase::Head,
            read_timer: Box::pin(tokio::time::sleep(clocks.header)),
            write_timer: None,
            write_waiting: false,
        }
    }

    fn timed_out(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, what.to_string())
    }

    /// A write could not proceed: the send clock starts (or goes on).
    fn write_blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let deadline = Instant::now() + self.clocks.send;
        let timer = match &mut self.write_timer {
            Some(t) => {
                if !self.write_waiting {
                    t.as_mut().reset(deadline);
                }
                t
            }
            None => self
                .write_timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.write_waiting = true;
        if timer.as_mut().poll(cx).is_ready() {
            tracing::debug!("client send timeout: closing the connection");
            return Poll::Ready(Err(Self::timed_out("send_timeout")));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.inflight.count.load(Ordering::Acquire) > 0 {
            this.phase = Phase::Busy;
            this.inflight.reader.register(cx.waker());
            // Checked again: the last request may have ended before the registration.
            if this.inflight.count.load(Ordering::Acquire) > 0 {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
        }
        if this.phase == Phase::Busy {
            this.phase = Phase::Idle;
            let deadline = Instant::now() + this.clocks.keepalive;
            this.read_timer.as_mut().reset(deadline);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    // The next request begins: its head has its own time.
                    this.phase = Phase::Head;
                    let deadline = Instant::now() + this.clocks.header;
                    this.read_timer.as_mut().reset(deadline);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.read_timer.as_mut().poll(cx).is_ready() {
                    let what = match this.phase {
                        Phase::Idle => "keepalive_timeout",
                        _ => "client_header_timeout",
                    };
                    tracing::debug!("client {what}: closing the connection");
                    return Poll::Ready(Err(Self::timed_out(what)));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Pending => self.write_blocked(cx),
            done => {
                self.write_waiting = false;
                done
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.write_blocked(cx),
            done => {
                self.write_waiting = false;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
