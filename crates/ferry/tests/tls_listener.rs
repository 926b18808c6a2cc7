//! The data plane over TLS (`apisix.ssl.listen`): certificates from `ssls` resources chosen by
//! SNI (exact, one-label wildcard), HTTP/2 by ALPN and HTTP/1.1, a handshake refused for a
//! name without a certificate, and certificate writes applied without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ferry_testkit::tls::TestCa;
use ferry_testkit::{Ferry, TempDir, free_port};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use std::sync::Arc;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// A TLS client trusting `ca_pem`, offering `alpn`.
fn connector(ca_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Connects with SNI `name`: the negotiated protocol and the server's certificate, or the
/// handshake error.
async fn handshake(
    port: u16,
    tls: &tokio_rustls::TlsConnector,
    name: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let sni = ServerName::try_from(name.to_string()).unwrap();
    tls.connect(sni, tcp).await.map_err(|e| e.to_string())
}

fn peer_cert(s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn get(
    s: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    host: &str,
) -> (http::Version, u16, String) {
    let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
    let req = http::Request::get(format!("https://{host}/nowhere"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(s),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.version,
        parts.status.as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn certificates_by_sni_http2_by_alpn_and_reload_without_restart() {
    let dir = TempDir::new("tls-listener");
    let tls_port = free_port();
    let ferry = Ferry::start(
        BIN,
        &dir.0,
        &format!("apisix:\n  ssl:\n    listen:\n      - ip: 127.0.0.1\n        port: {tls_port}\n"),
    );
    let exact = TestCa::new(&["a.test"]);
    let wild = TestCa::new(&["*.example.com"]);
    let (s, v) = ferry
        .admin(
            "PUT",
            "/ssls/1",
            Some(json!({"cert": exact.cert_pem, "key": exact.key_pem, "snis": ["a.test"]})),
        )
        .await;
    assert!(s == 200 || s == 201, "{v}");
    let (s, v) = ferry
        .admin(
            "PUT",
            "/ssls/2",
            Some(json!({"cert": wild.cert_pem, "key": wild.key_pem, "sni": "*.example.com"})),
        )
        .await;
    assert!(s == 200 || s == 201, "{v}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // HTTP/2 by ALPN, HTTP/1.1 without it; the request goes through routing (404, no route).
    let both = connector(&exact.ca_pem, &[b"h2", b"http/1.1"]);
    let s = handshake(tls_port, &both, "a.test").await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (version, status, body) = get(s, "a.test").await;
    assert_eq!((version, status), (http::Version::HTTP_2, 404), "{body}");
    assert!(body.contains("404 Route Not Found"), "{body}");
    let h1 = connector(&exact.ca_pem, &[b"http/1.1"]);
    let s = handshake(tls_port, &h1, "a.test").await.unwrap();
    let (version, status, _) = get(s, "a.test").await;
    assert_eq!((version, status), (http::Version::HTTP_11, 404));

    // The wildcard covers exactly one more label.
    let w = connector(&wild.ca_pem, &[b"http/1.1"]);
    let s = handshake(tls_port, &w, "api.example.com").await.unwrap();
    assert_eq!(get(s, "api.example.com").await.1, 404);
    let e = handshake(tls_port, &w, "a.b.example.com")
        .await
        .unwrap_err();
    assert!(!e.is_empty());
    // A name without a certificate: no handshake.
    let e = handshake(tls_port, &both, "other.test").await.unwrap_err();
    assert!(e.contains("alert") || e.contains("handshake"), "{e}");

    // A new certificate for a.test applies to the next handshake, without a restart.
    let before = peer_cert(&handshake(tls_port, &both, "a.test").await.unwrap());
    let renewed = TestCa::new(&["a.test"]);
    let (s, _) = ferry
        .admin(
            "PUT",
            "/ssls/1",
            Some(json!({"cert": renewed.cert_pem, "key": renewed.key_pem, "snis": ["a.test"]})),
        )
        .await;
    assert_eq!(s, 200);
    let fresh = connector(&renewed.ca_pem, &[b"http/1.1"]);
    let mut served = None;
    for _ in 0..50 {
        if let Ok(s) = handshake(tls_port, &fresh, "a.test").await {
            served = Some(peer_cert(&s));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let after = served.expect("the renewed certificate is served");
    assert_ne!(before, after);
    assert_eq!(after, renewed.cert.to_vec());
    // Deleted: refused again.
    let (s, _) = ferry.admin("DELETE", "/ssls/1", None).await;
    assert_eq!(s, 200);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(handshake(tls_port, &fresh, "a.test").await.is_err());
    // The plain port still serves.
    let r = ferry_testkit::send("GET", &ferry.url("/nowhere"), &[], "").await;
    assert_eq!(r.status, 404);
}
