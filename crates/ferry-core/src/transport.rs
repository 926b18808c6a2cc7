//! Upstream HTTP clients (hyper-util's pooled client over rustls). A pool per distinct (TLS
//! verification, keep-alive, connect timeout) setting is shared by every plugin instance that
//! uses it, whatever their request timeouts, made at config load and released when no instance
//! uses it any more. HTTP/2 is used when a TLS upstream offers it (ALPN); a connection that
//! carries `max_streams` requests makes the next ones go to another connection (a pool has up to
//! [`MAX_SLOTS`] of them per host) rather than wait behind long streams. Extra trusted CAs
//! (`apisix.ssl.ssl_trusted_certificate`) and host overrides (`ferry.resolve`) apply to all.

use crate::shared::WeakCache;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

/// The settings that make two routes need different clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub ssl_verify: bool,
    pub keepalive: bool,
    pub keepalive_timeout_ms: u64,
    pub keepalive_pool: u64,
    /// The request timeout: connect, send and response head (each body read is the caller's).
    pub timeout_ms: u64,
    /// A connect timeout of its own (upstreams' `timeout.connect`); `None`: `timeout_ms`
    /// bounds the connect as part of the request.
    pub connect_timeout_ms: Option<u64>,
    /// The TLS server name to send and verify, when it is not the URI's host (APISIX's
    /// upstreams use the upstream `Host`, whatever node address they connect to).
    pub sni: Option<Arc<str>>,
}

type Connector = HttpsConnector<HttpConnector<Resolver>>;

/// Connections (HTTP/2) or connection pools (HTTP/1.1) per host a pool may spread requests over.
pub const MAX_SLOTS: usize = 16;

/// The default number of requests one upstream connection carries before the next go to
/// another (`ferry.upstream_max_streams`; HTTP/2 servers allow at least 100 as a rule).
pub const DEFAULT_MAX_STREAMS: usize = 100;

type Hyper = Client<Connector, Full<Bytes>>;

/// One client (its own connections) and the requests it carries now.
struct Slot {
    client: Hyper,
    inflight: Arc<AtomicUsize>,
}

/// Clients of one setting: the first with room takes the next request.
pub struct Pool {
    slots: [OnceLock<Slot>; MAX_SLOTS],
    make: Box<dyn Fn() -> Hyper + Send + Sync>,
    max_streams: usize,
}

impl Pool {
    /// The client for the next request, counted until the lease (kept with the response body)
    /// is dropped.
    fn lease(&self) -> (&Hyper, Lease) {
        let mut least: Option<&Slot> = None;
        for cell in &self.slots {
            let slot = cell.get_or_init(|| Slot {
                client: (self.make)(),
                inflight: Arc::default(),
            });
            let n = slot.inflight.load(Ordering::Relaxed);
            if n < self.max_streams {
                return (&slot.client, Lease::take(&slot.inflight));
            }
            if least.is_none_or(|l| n < l.inflight.load(Ordering::Relaxed)) {
                least = Some(slot);
            }
        }
        let slot = least.unwrap_or_else(|| unreachable!("MAX_SLOTS > 0"));
        (&slot.client, Lease::take(&slot.inflight))
    }

    /// How many clients were opened (for tests).
    pub fn slots_open(&self) -> usize {
        self.slots.iter().filter(|c| c.get().is_some()).count()
    }
}

/// One request counted on its client.
struct Lease(Arc<AtomicUsize>);

impl Lease {
    fn take(n: &Arc<AtomicUsize>) -> Lease {
        n.fetch_add(1, Ordering::Relaxed);
        Lease(n.clone())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An upstream response body; its request stays counted on its connection until it is dropped.
pub struct UpBody {
    inner: Incoming,
    _lease: Lease,
}

impl http_body::Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A pooled upstream client with its request timeout (connect, response head; each body
/// read is the caller's).
pub struct Upstream {
    pool: Arc<Pool>,
    pub timeout: Duration,
}

/// Why an upstream exchange failed.
#[derive(Debug)]
pub enum UpError {
    /// No answer (or no next body chunk) within the timeout.
    Timeout,
    /// The connection could not be made (refused, DNS, TLS handshake).
    Connect(String),
    /// The connection broke while sending or reading.
    Broken(String),
}

impl UpError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpError::Timeout)
    }

    fn from_chain(connect: bool, e: &(dyn std::error::Error + 'static)) -> UpError {
        let cause = reason(e);
        if connect {
            UpError::Connect(cause)
        } else {
            UpError::Broken(cause)
        }
    }

    /// The failure said for a person, naming the provider's `host:port`.
    pub fn describe(&self, authority: &str) -> String {
        match self {
            UpError::Timeout => {
                format!(
                    "the provider at {authority} timed out (no answer within the route's timeout)"
                )
            }
            UpError::Connect(c) => format!("could not connect to the provider at {authority}: {c}"),
            UpError::Broken(c) => {
                format!("the connection to the provider at {authority} failed: {c}")
            }
        }
    }

    pub fn body(e: &hyper::Error) -> UpError {
        UpError::from_chain(false, e)
    }
}

/// The root cause of an error chain as a short phrase: the innermost I/O error's text without
/// its `(os error N)`, else the innermost message (`connection refused`, not hyper's
/// `client error (Connect): tcp connect error: ...`).
fn reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    let mut io: Option<&std::io::Error> = None;
    let mut cur = Some(e);
    while let Some(x) = cur {
        if let Some(i) = x.downcast_ref::<std::io::Error>() {
            io = Some(i);
        }
        last = x;
        cur = x.source();
    }
    let text = match io {
        Some(i) => i.to_string(),
        None => last.to_string(),
    };
    let text = match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => "unknown error".into(),
    }
}

impl std::fmt::Display for UpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpError::Timeout => f.write_str("timed out"),
            UpError::Connect(c) => write!(f, "could not connect: {c}"),
            UpError::Broken(c) => write!(f, "failed: {c}"),
        }
    }
}

impl Upstream {
    /// Sends a request; resolves with the response head (the body streams afterwards).
    pub async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<UpBody>, UpError> {
        self.send_within(req, self.timeout).await
    }

    /// Sends a request, waiting at most `timeout` for the response head.
    pub async fn send_within(
        &self,
        req: http::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<http::Response<UpBody>, UpError> {
        let (client, lease) = self.pool.lease();
        match tokio::time::timeout(timeout, client.request(req)).await {
            Err(_) => Err(UpError::Timeout),
            Ok(Ok(r)) => Ok(r.map(|inner| UpBody {
                inner,
                _lease: lease,
            })),
            Ok(Err(e)) => Err(UpError::from_chain(e.is_connect(), &e)),
        }
    }

    /// The shared pool behind this client.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

/// Name resolution with `ferry.resolve` overrides in front of the system resolver.
#[derive(Clone)]
struct Resolver {
    overrides: Arc<HashMap<String, SocketAddr>>,
    gai: GaiResolver,
}

type Addrs = Box<dyn Iterator<Item = SocketAddr> + Send>;

impl tower_service::Service<Name> for Resolver {
    type Response = Addrs;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Addrs, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        self.gai.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        if let Some(a) = self.overrides.get(name.as_str()) {
            let a = *a;
            return Box::pin(async move { Ok(Box::new(std::iter::once(a)) as Addrs) });
        }
        let fut = self.gai.call(name);
        Box::pin(async move { Ok(Box::new(fut.await?) as Addrs) })
    }
}

/// Builds and caches upstream clients.
pub struct Transport {
    roots: Arc<RootCertStore>,
    resolver: Resolver,
    clients: WeakCache<ClientKey, Upstream>,
    /// Pools by their key's connection settings (request timeout left out).
    pools: WeakCache<ClientKey, Pool>,
    max_streams: usize,
}

impl Default for Transport {
    fn default() -> Self {
        Transport::new(None, Vec::new()).unwrap_or_else(|_| Transport {
            roots: Arc::new(RootCertStore::empty()),
            resolver: Resolver {
                overrides: Arc::default(),
                gai: GaiResolver::new(),
            },
            clients: WeakCache::default(),
            pools: WeakCache::default(),
            max_streams: DEFAULT_MAX_STREAMS,
        })
    }
}

impl Transport {
    /// `trusted_ca`: a PEM bundle of extra CAs (added to the Mozilla roots Ferry carries);
    /// `resolve`: host → address overrides.
    pub fn new(
        trusted_ca: Option<&Path>,
        resolve: Vec<(String, SocketAddr)>,
    ) -> Result<Transport, String> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(p) = trusted_ca {
            let what = || format!("apisix.ssl.ssl_trusted_certificate: {}", p.display());
            let pem = std::fs::read(p).map_err(|e| format!("{}: cannot read: {e}", what()))?;
            let mut n = 0;
            for cert in rustls_pemfile_certs(&pem).map_err(|e| format!("{}: {e}", what()))? {
                roots.add(cert).map_err(|e| format!("{}: {e}", what()))?;
                n += 1;
            }
            if n == 0 {
                return Err(format!("{}: no certificate found", what()));
            }
        }
        Ok(Transport {
            roots: Arc::new(roots),
            resolver: Resolver {
                overrides: Arc::new(resolve.into_iter().collect()),
                gai: GaiResolver::new(),
            },
            clients: WeakCache::default(),
            pools: WeakCache::default(),
            max_streams: DEFAULT_MAX_STREAMS,
        })
    }

    /// Requests one upstream connection carries before the next go to another.
    pub fn with_max_streams(mut self, n: usize) -> Transport {
        self.max_streams = n.max(1);
        self
    }

    /// The client for these settings (shared while in use).
    pub fn client(&self, key: ClientKey) -> Result<Arc<Upstream>, String> {
        self.clients
            .get_or_try_insert(key.clone(), || self.build(&key))
    }

    /// The number of clients in use (for tests: clients are released with their users).
    pub fn clients_in_use(&self) -> usize {
        self.clients.live().len()
    }

    /// The number of connection pools in use (clients that differ only in their request
    /// timeout share one).
    pub fn pools_in_use(&self) -> usize {
        self.pools.live().len()
    }

    fn build(&self, key: &ClientKey) -> Result<Arc<Upstream>, String> {
        let pool_key = ClientKey {
            timeout_ms: 0,
            ..key.clone()
        };
        let pool = self
            .pools
            .get_or_try_insert(pool_key, || self.build_pool(key))?;
        Ok(Arc::new(Upstream {
            pool,
            timeout: Duration::from_millis(key.timeout_ms),
        }))
    }

    fn build_pool(&self, key: &ClientKey) -> Result<Arc<Pool>, String> {
        let mut http = HttpConnector::new_with_resolver(self.resolver.clone());
        http.enforce_http(false);
        http.set_nodelay(true);
        // Without a connect timeout of its own, the request's timeout bounds the connect; a
        // connect left over after it (finishing for the pool) is bounded here.
        http.set_connect_timeout(Some(Duration::from_millis(
            key.connect_timeout_ms.unwrap_or(60_000),
        )));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let tls = if key.ssl_verify {
            builder
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth()
        };
        let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        if let Some(sni) = &key.sni {
            let name = ServerName::try_from(sni.to_string())
                .map_err(|e| format!("TLS server name {sni}: {e}"))?;
            builder =
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
        }
        let https = builder.enable_http1().enable_http2().wrap_connector(http);
        let (idle, per_host) = (
            Duration::from_millis(key.keepalive_timeout_ms),
            if key.keepalive {
                key.keepalive_pool as usize
            } else {
                0
            },
        );
        let make = move || {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(idle)
                .pool_max_idle_per_host(per_host)
                .build(https.clone())
        };
        Ok(Arc::new(Pool {
            slots: std::array::from_fn(|_| OnceLock::new()),
            make: Box::new(make),
            max_streams: self.max_streams,
        }))
    }
}

/// The certificates in a PEM bundle.
fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))
}

/// `ssl_verify: false`: any certificate is accepted (signatures are still checked, so the
/// handshake itself is sound).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_a_person_would_say_them() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = UpError::from_chain(true, &refused);
        assert_eq!(
            e.describe("127.0.0.1:9"),
            "could not connect to the provider at 127.0.0.1:9: connection refused"
        );
        let os = std::io::Error::from_raw_os_error(111);
        assert_eq!(reason(&os), "connection refused");
        assert!(UpError::Timeout.describe("h:1").contains("timed out"));
    }

    /// A client is shared by equal settings and released with its last user.
    #[test]
    fn clients_are_shared_then_released() {
        let t = Transport::default();
        let key = ClientKey {
            ssl_verify: true,
            keepalive: true,
            keepalive_timeout_ms: 60_000,
            keepalive_pool: 4,
            timeout_ms: 1000,
            connect_timeout_ms: None,
            sni: None,
        };
        let a = t.client(key.clone()).unwrap();
        let b = t.client(key.clone()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = t
            .client(ClientKey {
                timeout_ms: 2000,
                ..key.clone()
            })
            .unwrap();
        assert_eq!(t.clients_in_use(), 2);
        // Only the request timeout differs: one pool.
        assert_eq!(t.pools_in_use(), 1);
        assert!(Arc::ptr_eq(a.pool(), c.pool()));
        let d = t
            .client(ClientKey {
                keepalive_pool: 8,
                ..key
            })
            .unwrap();
        assert_eq!(t.pools_in_use(), 2);
        drop((a, b, d));
        assert_eq!(t.clients_in_use(), 1);
        drop(c);
        assert_eq!(t.clients_in_use(), 0);
        assert_eq!(t.pools_in_use(), 0);
    }
}
