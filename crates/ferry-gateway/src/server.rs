//! The data-plane listener (HTTP/1.1 and cleartext HTTP/2 on one port) and the request flow:
//! match a route, run the plugin chain, wrap the response for the body-filter and log phases.
//! Graceful shutdown stops accepting and lets in-flight requests finish up to a deadline.

use crate::access_log::AccessLog;
use crate::conn::{Clocks, Guarded, InFlight, RequestGuard};
use crate::logged::LoggedBody;
use crate::router::Match;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use ferry_config::limits::ClientLimits;
use ferry_core::body::Response;
use ferry_core::ctx::{BodyLimits, Ctx, Peer, ResponseRecord};
use ferry_core::error::GatewayError;
use ferry_core::plugin::{Chain, Registry};
use http::StatusCode;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// State shared by every request: the current snapshot and the log sinks.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub access_log: Option<Arc<AccessLog>>,
    /// Request-body size limit and read timeout.
    pub body: BodyLimits,
    /// Request-head limit in bytes (0: unchecked here). The HTTP parser allows twice as much,
    /// so a head over the limit gets a 431 with a body that says why.
    pub max_header: usize,
    /// The revision of the published snapshot, for callers that wait for a write to apply.
    applied: watch::Sender<u64>,
    /// Builds the chains of routes merged with a consumer's plugins.
    registry: std::sync::OnceLock<Arc<Registry>>,
}

impl Shared {
    pub fn new(
        access_log: Option<Arc<AccessLog>>,
        body: BodyLimits,
        max_header: usize,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            access_log,
            body,
            max_header,
            applied: watch::channel(0).0,
            registry: std::sync::OnceLock::new(),
        })
    }

    /// The plugin registry consumers' plugins are built from (without one, a consumer's
    /// plugins are not merged into its requests).
    pub fn set_registry(&self, registry: Arc<Registry>) {
        let _ = self.registry.set(registry);
    }

    /// Publishes a new snapshot; in-flight requests keep the one they started with.
    pub fn publish(&self, snap: Snapshot) {
        let rev = snap.revision;
        self.snapshot.store(Arc::new(snap));
        self.applied.send_replace(rev);
    }

    /// Announces the revision of each published snapshot.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Handles one request end to end.
    pub async fn handle(
        &self,
        req: http::Request<Incoming>,
        peer: &Peer,
    ) -> http::Response<LoggedBody> {
        let mut ctx = Box::new(Ctx::new(req, peer, self.body));
        let (chain, resp) = match head_size(&ctx) {
            n if self.max_header > 0 && n > self.max_header => {
                let e = GatewayError::client(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    format!(
                        "Request Header Fields Too Large: the request head is {n} bytes, more than the {} allowed (ferry.max_header_size)",
                        self.max_header
                    ),
                );
                (None, e.into_response())
            }
            _ => self.route_and_run(&mut ctx).await,
        };
        let (mut parts, body) = resp.into_parts();
        if let Some(chain) = &chain {
            chain.header_filter(&mut ctx, &mut parts);
            if chain.wants_response_record() {
                ctx.response = Some(ResponseRecord {
                    headers: parts.headers.clone(),
                    body: None,
                });
            }
        }
        ctx.status = parts.status.as_u16();
        let log = self.access_log.clone();
        http::Response::from_parts(parts, LoggedBody::new(body, ctx, chain, log))
    }

    /// Routes the request and runs its chain; returns the chain that served it (for the
    /// filter and log phases) and the response.
    async fn route_and_run(&self, ctx: &mut Ctx) -> (Option<Arc<Chain>>, Response) {
        let snap = self.snapshot.load_full();
        let mut matched = snap.router.find(ctx);
        if let Match::NeedBody = matched {
            if let Err(e) = ctx.read_body().await {
                return (None, e.into_response());
            }
            matched = snap.router.find(ctx);
        }
        let Match::Found(route) = matched else {
            let not_found = || {
                GatewayError::client(StatusCode::NOT_FOUND, "404 Route Not Found").into_response()
            };
            // Global rules run for every request, matched or not.
            return match &snap.global {
                Some(g) => {
                    let resp = g.chain.run(ctx).await.unwrap_or_else(not_found);
                    (Some(g.chain.clone()), resp)
                }
                None => (None, not_found()),
            };
        };
        ctx.route = Some(route.info.clone());
        let mut chain = route.chain.clone();
        if let Some(r) = chain.rewrite(ctx).await {
            return (Some(chain), r);
        }
        // An authentication plugin attached a consumer that brings plugins: continue with the
        // route's chain merged with them.
        if let Some(att) = &ctx.consumer
            && !att.consumer.plugins.is_empty()
            && let Some(registry) = self.registry.get()
        {
            let consumer = att.consumer.clone();
            match route.consumer_chain(&consumer, registry) {
                Ok(merged) => {
                    if let Some(r) = merged.rewrite_after(&chain, ctx).await {
                        return (Some(merged), r);
                    }
                    chain = merged;
                }
                Err(e) => {
                    tracing::error!(
                        route = route.id(),
                        consumer = consumer.username.as_str(),
                        "cannot merge the consumer's plugins: {e}"
                    );
                    let e = GatewayError::gateway(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "failed to merge the consumer's plugins",
                    );
                    return (Some(chain), e.into_response());
                }
            }
        }
        let resp = match chain.proceed(ctx).await {
            Some(r) => r,
            None => crate::upstream::forward(&route.target, ctx).await,
        };
        (Some(chain), resp)
    }
}

/// The size of the request head as it came: request line and header lines.
fn head_size(ctx: &Ctx) -> usize {
    let line =
        ctx.method.as_str().len() + ctx.uri.path_and_query().map_or(1, |p| p.as_str().len()) + 12;
    ctx.headers
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ServerConf {
    pub max_header_size: usize,
    pub drain_timeout: Duration,
    /// Client timeouts and the connection cap.
    pub client: ClientLimits,
    /// The TLS settings of the TLS listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A response body that keeps its request counted as in flight until it is dropped.
pub struct Counted<B> {
    body: B,
    _guard: RequestGuard,
}

impl<B: http_body::Body + Unpin> http_body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Says, at most once a second, that the connection cap turned connections away.
struct CapWarning {
    last: std::sync::Mutex<Option<std::time::Instant>>,
    refused: std::sync::atomic::AtomicU64,
}

impl CapWarning {
    fn refused(&self, max: usize) {
        use std::sync::atomic::Ordering;
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(std::time::Instant::now());
        self.refused.store(0, Ordering::Relaxed);
        tracing::warn!(
            "{max} client connections open (ferry.max_connections): closed {n} new connection(s) at once"
        );
    }
}

/// Binds every address, failing with a clear message (e.g. port in use).
pub async fn bind(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, String> {
    let mut out = Vec::with_capacity(addrs.len());
    for a in addrs {
        let l = TcpListener::bind(a)
            .await
            .map_err(|e| format!("cannot listen on {a}: {e}"))?;
        out.push(l);
    }
    Ok(out)
}

/// Serves until `shutdown` resolves, then drains in-flight requests for up to the drain
/// timeout. Returns true when every connection finished in time.
///
/// `tls_listeners` speak TLS (with `conf.tls`); the others HTTP/1.1 and cleartext HTTP/2.
pub async fn serve(
    listeners: Vec<TcpListener>,
    tls_listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    conf: ServerConf,
    shutdown: impl std::future::Future<Output = ()>,
) -> bool {
    let limits = conf.client;
    let clocks = Clocks {
        header: limits.header_timeout,
        keepalive: limits.keepalive_timeout,
        send: limits.send_timeout,
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The head, idle and send clocks are the socket wrapper's (`conn`), as nginx keeps them.
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(!limits.keepalive_timeout.is_zero())
        .header_read_timeout(None)
        .max_buf_size((conf.max_header_size * 2).max(16 * 1024));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(conf.max_header_size * 2).unwrap_or(u32::MAX));
    let graceful = Arc::new(GracefulShutdown::new());
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let cap_warning = Arc::new(CapWarning {
        last: std::sync::Mutex::new(None),
        refused: std::sync::atomic::AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let acceptor = conf.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let all = listeners
        .into_iter()
        .map(|l| (l, None))
        .chain(tls_listeners.into_iter().map(|l| (l, acceptor.clone())));
    for (listener, tls) in all {
        let builder = builder.clone();
        let shared = shared.clone();
        let graceful = graceful.clone();
        let slots = slots.clone();
        let cap_warning = cap_warning.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop.changed() => break,
                };
                let (stream, remote) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // At the cap: closed at once (as nginx does when worker_connections run out).
                    drop(stream);
                    cap_warning.refused(limits.max_connections);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(remote);
                let shared = shared.clone();
                let peer = Arc::new(Peer::new(remote, local));
                let inflight = Arc::new(InFlight::default());
                let io = Guarded::new(stream, inflight.clone(), clocks);
                let svc = service_fn(move |req| {
                    let shared = shared.clone();
                    let peer = peer.clone();
                    let guard = inflight.enter();
                    async move {
                        let resp = shared.handle(req, &peer).await;
                        Ok::<_, Infallible>(resp.map(|body| Counted {
                            body,
                            _guard: guard,
                        }))
                    }
                });
                let builder = builder.clone();
                // Registered now: a shutdown waits for this connection (and its handshake).
                let watcher = graceful.watcher();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let served = match tls {
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(io), svc);
                            watcher.watch(conn.into_owned()).await
                        }
                        Some(acceptor) => {
                            // The handshake is part of the head: it has the head's time.
                            let hs =
                                tokio::time::timeout(limits.header_timeout, acceptor.accept(io));
                            match hs.await {
                                Ok(Ok(tls)) => {
                                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                                    watcher.watch(conn.into_owned()).await
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!("TLS handshake with {remote} failed: {e}");
                                    Ok(())
                                }
                                Err(_) => Ok(()),
                            }
                        }
                    };
                    if let Err(e) = served {
                        tracing::debug!("connection from {remote} ended: {e}");
                    }
                    drop(slot);
                });
            }
        }));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    // Every accept loop has ended, so this is the last reference.
    let drained = match Arc::try_unwrap(graceful) {
        Ok(g) => tokio::time::timeout(conf.drain_timeout, g.shutdown())
            .await
            .is_ok(),
        Err(_) => false,
    };
    if let Some(log) = &shared.access_log {
        log.flush(Duration::from_secs(2));
    }
    drained
}
