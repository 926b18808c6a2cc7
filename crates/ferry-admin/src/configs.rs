//! Standalone, API-driven mode (APISIX 3.13+, what the Ingress Controller 2.x and ADC's
//! `apisix-standalone` backend drive): the whole configuration as one document,
//! `GET|PUT|HEAD /apisix/admin/configs` with versions per type and a digest, and
//! `POST /apisix/admin/configs/validate`. Unlike APISIX, the accepted document is persisted.

use crate::handlers::{ApiError, ApiResult, bad, wait_applied};
use crate::{AdminState, ConfigSource};
use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use ferry_config::document::{self, TYPES};
use serde_json::{Map, Value, json};
use std::sync::Arc;

type S = State<Arc<AdminState>>;

/// Largest document accepted.
pub const MAX_DOCUMENT: usize = 256 * 1024 * 1024;

const LAST_MODIFIED: &str = "X-Last-Modified";
const DIGEST: &str = "X-Digest";

fn standalone(state: &AdminState) -> Result<(), ApiError> {
    match state.source {
        ConfigSource::StandaloneApi => Ok(()),
        _ => Err(ApiError(
            StatusCode::NOT_FOUND,
            "/apisix/admin/configs is served in standalone mode only (deployment.role_traditional.config_provider: yaml)".into(),
        )),
    }
}

/// The stored document with every version key present (0 before the first PUT).
async fn current(state: &AdminState) -> Result<Map<String, Value>, ApiError> {
    let mut doc = match state.store.document().await? {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (ty, _) in TYPES.iter().chain(&[("plugins", None)]) {
        doc.entry(format!("{ty}_conf_version")).or_insert(json!(0));
    }
    Ok(doc)
}

fn stamp_headers(doc: &Map<String, Value>, headers: &mut HeaderMap) {
    for name in [LAST_MODIFIED, DIGEST] {
        let text = match doc.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => continue,
        };
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.insert(name, v);
        }
    }
}

fn wants_yaml(h: &HeaderMap, name: header::HeaderName) -> bool {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("yaml"))
}

pub async fn get(state: S, req_headers: HeaderMap) -> ApiResult {
    standalone(&state)?;
    let doc = current(&state).await?;
    let mut resp = if wants_yaml(&req_headers, header::ACCEPT) {
        let text = serde_yaml_ng::to_string(&doc).map_err(|e| bad(e.to_string()))?;
        ([(header::CONTENT_TYPE, "application/yaml")], text).into_response()
    } else {
        Json(Value::Object(doc.clone())).into_response()
    };
    stamp_headers(&doc, resp.headers_mut());
    Ok(resp)
}

pub async fn head(state: S) -> ApiResult {
    standalone(&state)?;
    let doc = current(&state).await?;
    let mut resp = StatusCode::OK.into_response();
    stamp_headers(&doc, resp.headers_mut());
    Ok(resp)
}

async fn parse_body(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let bytes = to_bytes(body, MAX_DOCUMENT).await.map_err(|_| {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("invalid request body: larger than {MAX_DOCUMENT} bytes"),
        )
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("invalid request body: empty request body"));
    }
    let v: Value = if wants_yaml(headers, header::CONTENT_TYPE) {
        serde_yaml_ng::from_slice(&bytes).map_err(|e| bad(format!("invalid request body: {e}")))?
    } else {
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid request body: {e}")))?
    };
    if !v.is_object() {
        return Err(bad(
            "invalid request body: the configuration must be an object",
        ));
    }
    Ok(v)
}

pub async fn put(state: S, headers: HeaderMap, body: Body) -> ApiResult {
    standalone(&state)?;
    let Some(digest) = headers
        .get(DIGEST)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
    else {
        return Err(bad("missing digest header"));
    };
    let doc = parse_body(&headers, body).await?;
    let old = current(&state).await?;
    if old.get(DIGEST).and_then(Value::as_str) == Some(digest.as_str()) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (mut items, errors) = document::items(&doc, state.plugins.as_ref(), false);
    if let Some(e) = errors.first() {
        return Err(bad(e.message()));
    }
    let body = doc.as_object().cloned().unwrap_or_default();
    let mut next = Map::new();
    // Types whose version did not move keep what was stored; the body's items for them go.
    let mut kept = Map::new();
    for (ty, kind) in TYPES.iter().chain(&[("plugins", None)]) {
        let cur = document::version(&old, ty).map_err(bad)?.unwrap_or(0);
        let given = document::version(&body, ty).map_err(bad)?;
        let key = format!("{ty}_conf_version");
        let keep = match given {
            Some(v) if v < cur => {
                return Err(bad(format!(
                    "{key} must be greater than or equal to ({cur})"
                )));
            }
            Some(v) => {
                next.insert(key, json!(v));
                v == cur
            }
            None => {
                next.insert(key, json!(cur + 1));
                false
            }
        };
        if *ty == "plugins" {
            continue;
        }
        let src = if keep { &old } else { &body };
        if let Some(arr) = src.get(*ty) {
            next.insert(ty.to_string(), arr.clone());
            if keep {
                kept.insert(ty.to_string(), arr.clone());
            }
        }
        if keep && let Some(kind) = kind {
            let credentials = *kind == ferry_config::Kind::Consumers;
            items.retain(|(k, _, _)| {
                *k != *kind && !(credentials && *k == ferry_config::Kind::Credentials)
            });
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    next.insert(LAST_MODIFIED.into(), json!(now.to_string()));
    next.insert(DIGEST.into(), json!(digest));
    let next = Value::Object(next);
    // What was stored was valid when it was accepted.
    let (old_items, _) = document::items(&Value::Object(kept), state.plugins.as_ref(), false);
    items.extend(old_items);
    let rev = state.store.replace_all(items, next.clone()).await?;
    wait_applied(&state, rev).await;
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Value::Object(m) = &next {
        stamp_headers(m, resp.headers_mut());
    }
    Ok(resp)
}

pub async fn validate(state: S, headers: HeaderMap, body: Body) -> ApiResult {
    let doc = parse_body(&headers, body).await?;
    let (_, mut errors) = document::items(&doc, state.plugins.as_ref(), false);
    if let Some(m) = doc.as_object() {
        for (ty, _) in TYPES.iter().chain(&[("plugins", None)]) {
            if let Err(e) = document::version(m, ty) {
                errors.push(document::ItemError {
                    resource_type: ty.to_string(),
                    resource_id: String::new(),
                    index: 0,
                    error: e,
                });
            }
        }
    }
    if errors.is_empty() {
        return Ok(Json(json!({})).into_response());
    }
    let list: Vec<Value> = errors
        .iter()
        .map(|e| {
            json!({"resource_type": e.resource_type, "resource_id": e.resource_id, "index": e.index, "error": e.error})
        })
        .collect();
    Ok((
        StatusCode::BAD_REQUEST,
        Json(json!({"error_msg": "Configuration validation failed", "errors": list})),
    )
        .into_response())
}
