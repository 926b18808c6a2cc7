//! A local Google OAuth token endpoint for `auth.gcp` tests: it verifies the JWT-bearer grant
//! as Google does (form body, RS256 signature with the test key's public half, `iss`, `aud`,
//! `scope`, `iat`, `exp = iat + 3600`) and answers `{"access_token": "ya29.test-<n>",
//! "expires_in": …}`; it counts fetches and can be made to fail or to be slow. The test
//! service-account key (a throwaway RSA key generated for these tests) is in `fixtures/`.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// The test key (PKCS#8), its PKCS#1 form and its public key.
pub const TEST_KEY: &str = include_str!("../fixtures/gcp-test-key.pem");
pub const TEST_KEY_PKCS1: &str = include_str!("../fixtures/gcp-test-key-pkcs1.pem");
const TEST_PUBLIC_KEY: &str = include_str!("../fixtures/gcp-test-key.pub.pem");
pub const CLIENT_EMAIL: &str = "ferry-test@ferry-project.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

struct State {
    fetches: AtomicU64,
    expires_in: AtomicU64,
    fail: AtomicU16,
    delay_ms: AtomicU64,
    /// Claims of every accepted grant.
    grants: Mutex<Vec<Value>>,
    url: String,
}

/// A running token endpoint.
pub struct TokenEndpoint {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenEndpoint {
    pub async fn start() -> TokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind token endpoint");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            fetches: AtomicU64::new(0),
            expires_in: AtomicU64::new(3600),
            fail: AtomicU16::new(0),
            delay_ms: AtomicU64::new(0),
            grants: Mutex::new(Vec::new()),
            url: format!("http://{addr}/token"),
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(handle(req, s).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TokenEndpoint { addr, state, task }
    }

    /// The `token_uri`.
    pub fn url(&self) -> String {
        self.state.url.clone()
    }

    /// A service-account key whose `token_uri` is this endpoint.
    pub fn service_account(&self) -> Value {
        json!({"type": "service_account", "project_id": "ferry-project", "private_key_id": "k1",
            "private_key": TEST_KEY, "client_email": CLIENT_EMAIL, "client_id": "1",
            "token_uri": self.url()})
    }

    /// Token requests received (valid or not).
    pub fn fetches(&self) -> u64 {
        self.state.fetches.load(Ordering::Relaxed)
    }

    /// Claims of the grants accepted so far.
    pub fn grants(&self) -> Vec<Value> {
        self.state
            .grants
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    pub fn set_expires_in(&self, secs: u64) {
        self.state.expires_in.store(secs, Ordering::Relaxed);
    }

    /// Answer every grant with this status (0: answer normally).
    pub fn set_failure(&self, status: u16) {
        self.state.fail.store(status, Ordering::Relaxed);
    }

    pub fn set_delay_ms(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::Relaxed);
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json_resp(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn invalid(why: &str) -> Response<Full<Bytes>> {
    json_resp(
        StatusCode::BAD_REQUEST,
        json!({"error": "invalid_grant", "error_description": why}),
    )
}

async fn handle(req: Request<Incoming>, s: Arc<State>) -> Response<Full<Bytes>> {
    let n = s.fetches.fetch_add(1, Ordering::Relaxed) + 1;
    let delay = s.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let fail = s.fail.load(Ordering::Relaxed);
    if fail != 0 {
        let status = StatusCode::from_u16(fail).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return json_resp(status, json!({"error": "backend_error"}));
    }
    if req.method() != http::Method::POST {
        return invalid("POST required");
    }
    let form_ct = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_ct {
        return invalid("content type must be application/x-www-form-urlencoded");
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if get("grant_type").as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return invalid("bad grant_type");
    }
    let Some(assertion) = get("assertion") else {
        return invalid("no assertion");
    };
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY.as_bytes()) else {
        return invalid("test key unreadable");
    };
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[s.url.as_str()]);
    v.set_issuer(&[CLIENT_EMAIL]);
    v.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let claims = match jsonwebtoken::decode::<Value>(&assertion, &key, &v) {
        Ok(d) => d.claims,
        Err(e) => return invalid(&format!("assertion rejected: {e}")),
    };
    if claims["scope"] != SCOPE {
        return invalid("bad scope");
    }
    let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
    if iat.zip(exp).is_none_or(|(i, e)| e != i + 3600) {
        return invalid("exp must be iat + 3600");
    }
    if let Ok(mut g) = s.grants.lock() {
        g.push(claims);
    }
    json_resp(
        StatusCode::OK,
        json!({"access_token": format!("ya29.test-{n}"), "expires_in": s.expires_in.load(Ordering::Relaxed), "token_type": "Bearer"}),
    )
}
