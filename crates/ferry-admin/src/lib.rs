//! The Admin API: APISIX's `/apisix/admin/...` paths, shapes and status codes over a
//! [`Store`], with `X-API-KEY` checked in constant time and every write validated first.

mod configs;
mod conflicts;
mod handlers;
mod lists;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use ferry_config::PluginChecker;
use ferry_config::app::{AdminKey, AdminRole};
use ferry_config::store::Store;
use ipnet::IpNet;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What the Admin API works with.
pub struct AdminState {
    pub store: Arc<dyn Store>,
    pub plugins: Arc<dyn PluginChecker>,
    pub keys: Vec<AdminKey>,
    /// Client networks allowed in (empty: all).
    pub allow: Vec<IpNet>,
    /// The revision the data plane has applied. When set, a write answers only once its
    /// revision is live (bounded by [`APPLY_WAIT`]), so a client can use it right away.
    pub applied: Option<tokio::sync::watch::Receiver<u64>>,
    /// Where the configuration comes from; resource writes are refused unless the store.
    pub source: ConfigSource,
    /// Serialises this node's writes that are checked against other resources (unique auth
    /// keys, one plugin per global rule, limit-count groups).
    pub checked_writes: tokio::sync::Mutex<()>,
}

/// Where the configuration comes from (APISIX's deployment modes).
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigSource {
    /// The Admin API writes resources one by one (traditional mode).
    Store,
    /// `PUT /apisix/admin/configs` replaces the whole document (standalone, API-driven).
    StandaloneApi,
    /// A file is the source (standalone, file-driven); the Admin API only reads.
    File(std::path::PathBuf),
}

/// How long a write waits for the data plane to apply it before answering anyway.
pub const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a write whose cross-resource checks keep being overtaken by other nodes' writes
/// is checked again before it answers `409`.
pub const STALE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// An `{"error_msg": ...}` response.
pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error_msg": msg.into() }))).into_response()
}

/// Builds the Admin API router.
pub fn router(state: Arc<AdminState>) -> Router {
    let api = Router::new()
        .route(
            "/apisix/admin/configs",
            get(configs::get).put(configs::put).head(configs::head),
        )
        .route("/apisix/admin/configs/validate", post(configs::validate))
        .route("/apisix/admin/plugins/list", get(handlers::plugin_list))
        .route("/apisix/admin/plugins/{name}", get(handlers::plugin_schema))
        .route(
            "/apisix/admin/{kind}",
            get(handlers::list)
                .put(handlers::put_collection)
                .post(handlers::post)
                .patch(handlers::missing_id)
                .delete(handlers::missing_id),
        )
        .route(
            "/apisix/admin/{kind}/{id}",
            get(handlers::get_one)
                .put(handlers::put_id)
                .patch(handlers::patch)
                .delete(handlers::delete)
                .post(handlers::post_id),
        )
        .route("/apisix/admin/{kind}/{id}/{*path}", any(handlers::sub_path))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "404 Not Found") })
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state);
    // ADC's standalone backend probes `HEAD /apisix/admin` without a key.
    Router::new()
        .route(
            "/apisix/admin",
            axum::routing::head(|| async { StatusCode::OK }),
        )
        .merge(api)
        .layer(middleware::map_response(api_version))
}

/// Every Admin API answer names the API version; none names APISIX (ADC would then assume an
/// old one).
async fn api_version(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert("x-api-version", axum::http::HeaderValue::from_static("v3"));
    resp.headers_mut().insert(
        axum::http::header::SERVER,
        axum::http::HeaderValue::from_static(concat!("Ferry/", env!("CARGO_PKG_VERSION"))),
    );
    resp
}

fn key_from(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.to_string());
    }
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "api_key").then(|| v.to_string())
    })
}

/// Checks the client network and the admin key; viewers may only read.
async fn auth(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if !state.allow.is_empty() && !state.allow.iter().any(|n| n.contains(&remote.ip())) {
        tracing::warn!(%remote, "admin request from a network not in allow_admin");
        return error(
            StatusCode::FORBIDDEN,
            "Access from this address is not allowed",
        );
    }
    let given = key_from(req.headers(), req.uri().query());
    let role = given.as_deref().and_then(|g| {
        // Compare against every key so timing does not reveal which one matched.
        let mut found = None;
        for k in &state.keys {
            if bool::from(k.key.as_bytes().ct_eq(g.as_bytes())) {
                found = Some(k.role.clone());
            }
        }
        found
    });
    match role {
        None => {
            tracing::warn!(
                %remote,
                method = %req.method(),
                path = req.uri().path(),
                key_present = given.is_some(),
                "admin request rejected: wrong or missing X-API-KEY"
            );
            error(StatusCode::UNAUTHORIZED, "failed to check token")
        }
        Some(AdminRole::Viewer) if req.method() != Method::GET => error(
            StatusCode::UNAUTHORIZED,
            "failed to check token: the viewer role can only read",
        ),
        Some(_) => next.run(req).await,
    }
}

/// Serves the Admin API until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
