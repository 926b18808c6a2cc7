//! Authentication before the body: a plugin that refuses a request in its rewrite phase (as
//! `key-auth` does) answers before the body is read, so an unauthenticated client cannot make
//! the gateway take in a 50 MB upload. Measured as the bytes the server read off the socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_config::Kind;
use ferry_config::store::{Record, StoreSnapshot};
use ferry_core::ctx::{Ctx, Peer, RouteInfo};
use ferry_core::error::GatewayError;
use ferry_core::plugin::{Flow, Phase, Plugin, PluginFactory, Registry};
use ferry_gateway::Shared;
use ferry_gateway::snapshot::Snapshot;
use http::StatusCode;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Refuses every request that lacks `x-key: secret`, in the rewrite phase.
struct Auth;

impl Plugin for Auth {
    fn rewrite(&self, ctx: &mut Ctx) -> Flow {
        if ctx.header_str("x-key") == Some("secret") {
            return Flow::Continue;
        }
        Flow::Respond(
            GatewayError::client(StatusCode::UNAUTHORIZED, "Missing API key in request")
                .into_response(),
        )
    }
}

/// Reads the body in its access phase and answers with its size (as `ai-proxy` reads it).
struct Reader;

impl Plugin for Reader {
    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Phase<'a> {
        Phase::Wait(Box::pin(async move {
            match ctx.read_body().await {
                Ok(b) => {
                    let n = b.len();
                    Flow::Respond(
                        GatewayError::client(StatusCode::OK, format!("read {n}")).into_response(),
                    )
                }
                Err(e) => Flow::Respond(e.into_response()),
            }
        }))
    }
}

struct Factory(&'static str, i32);

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        self.0
    }
    fn priority(&self) -> i32 {
        self.1
    }
    fn schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn check(&self, conf: &Value) -> Result<Value, String> {
        Ok(conf.clone())
    }
    fn build(&self, _: &Value, _: &Arc<RouteInfo>) -> Result<Arc<dyn Plugin>, String> {
        Ok(match self.0 {
            "auth" => Arc::new(Auth),
            _ => Arc::new(Reader),
        })
    }
}

/// A socket that counts the bytes read from it.
struct Counting {
    inner: TcpStream,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The gateway with two routes: `/secure` (auth, then reader) and `/open` (reader only).
async fn serve() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let mut reg = Registry::default();
    reg.add(Arc::new(Factory("auth", 2500)));
    reg.add(Arc::new(Factory("reader", 1040)));
    let route = |id: &str, plugins: Value, rev| Record {
        kind: Kind::Routes,
        id: id.into(),
        value: json!({"id": id, "uri": format!("/{id}"), "plugins": plugins}),
        create_rev: rev,
        mod_rev: rev,
    };
    let (snap, errors) = Snapshot::build(
        &StoreSnapshot {
            revision: 2,
            records: vec![
                route("secure", json!({"auth": {}, "reader": {}}), 1),
                route("open", json!({"reader": {}}), 2),
            ],
        },
        &reg,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let shared = Shared::new(None, ferry_core::ctx::BodyLimits::default(), 0);
    shared.publish(snap);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let read = Arc::new(AtomicU64::new(0));
    let counter = read.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, remote)) = listener.accept().await else {
                return;
            };
            let io = Counting {
                inner: stream,
                read: counter.clone(),
            };
            let peer = Arc::new(Peer::new(remote, addr));
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let (shared, peer) = (shared.clone(), peer.clone());
                    async move { Ok::<_, std::convert::Infallible>(shared.handle(req, &peer).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), svc)
                    .await;
            });
        }
    });
    (addr, read)
}

const BODY: usize = 50 * 1024 * 1024;

/// Sends a request with a 50 MB body, writing while the server takes it; returns the status
/// line once an answer arrives (or the server stops reading and closes).
async fn upload(addr: std::net::SocketAddr, path: &str, key: Option<&str>) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {BODY}\r\n"
    );
    if let Some(k) = key {
        head.push_str(&format!("x-key: {k}\r\n"));
    }
    head.push_str("\r\n");
    // The writer hands its half back when done: dropping it would half-close the connection
    // before the answer came.
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await.ok()?;
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < BODY {
            wr.write_all(&chunk[..chunk.len().min(BODY - sent)])
                .await
                .ok()?;
            sent += chunk.len().min(BODY - sent);
        }
        Some(wr)
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer in time");
    writer.abort();
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or("").to_string()
}

#[tokio::test]
async fn an_unauthenticated_upload_is_refused_unread() {
    let (addr, read) = serve().await;
    let status = upload(addr, "/secure", None).await;
    assert!(status.contains("401"), "{status}");
    // Give the writer time to push more: the server still reads nothing of it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = read.load(Ordering::Relaxed);
    println!("unauthenticated 50 MB upload: {n} bytes read by the server");
    assert!(
        n < 512 * 1024,
        "the server read {n} bytes of a refused upload"
    );

    // The same upload, authenticated, is read whole: the count above measures what it should.
    read.store(0, Ordering::Relaxed);
    let status = upload(addr, "/secure", Some("secret")).await;
    assert!(status.contains("200"), "{status}");
    let n = read.load(Ordering::Relaxed);
    assert!(n >= BODY as u64, "authenticated: only {n} bytes read");

    // Without an auth plugin the reader reads it too.
    read.store(0, Ordering::Relaxed);
    let status = upload(addr, "/open", None).await;
    assert!(status.contains("200"), "{status}");
    assert!(read.load(Ordering::Relaxed) >= BODY as u64);
}
