//! A plain HTTP origin for upstream-proxying tests: answers every request with JSON naming the
//! node and echoing what arrived (method, URI, headers, body), optionally after a delay, and
//! over TLS when given a certificate (recording the SNI it was reached by).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Map, Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A running origin; stopped when dropped.
pub struct Echo {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    /// An origin on 127.0.0.1 named `name`, answering after `delay`.
    pub async fn start(name: &str, delay: Duration) -> Echo {
        Echo::start_with(name, delay, None).await
    }

    /// The same over TLS with `tls`'s certificate.
    pub async fn start_with(
        name: &str,
        delay: Duration,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Echo {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let name: Arc<str> = Arc::from(name);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { break };
                let name = name.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            let Ok(tls) = a.accept(s).await else { return };
                            let sni = tls.get_ref().1.server_name().map(String::from);
                            serve(TokioIo::new(tls), name, delay, sni).await;
                        }
                        None => serve(TokioIo::new(s), name, delay, None).await,
                    }
                });
            }
        });
        Echo { addr, task }
    }

    /// `127.0.0.1:<port>`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }
}

async fn serve<I>(io: I, name: Arc<str>, delay: Duration, sni: Option<String>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let name = name.clone();
        let sni = sni.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            tokio::time::sleep(delay).await;
            let mut headers = Map::new();
            for (k, v) in &parts.headers {
                headers.insert(
                    k.as_str().to_string(),
                    Value::String(v.to_str().unwrap_or("").to_string()),
                );
            }
            let out = json!({
                "node": &*name,
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
                "sni": sni,
            });
            let resp = http::Response::builder()
                .header("content-type", "application/json")
                .header("x-node", &*name)
                .body(Full::new(Bytes::from(out.to_string())))
                .unwrap();
            Ok::<_, Infallible>(resp)
        }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, svc)
        .await;
}
