//! Admin API handlers: create, replace, merge, read, list and delete resources in APISIX's
//! response shapes (`{"key": "/apisix/routes/1", "value": {...}}`).

use crate::{AdminState, MAX_BODY, error};
use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_config::resource::{id_string, valid_id, validate};
use ferry_config::store::{Record, StoreError, WriteFn};
use ferry_config::{Kind, PluginChecker};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

type S = State<Arc<AdminState>>;

/// A failed admin call: rendered as `{"error_msg": ...}` with its status.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        store_error(e)
    }
}

type ApiResult = Result<Response, ApiError>;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn kind_of(s: &str) -> Result<Kind, ApiError> {
    Kind::from_path(s).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("unsupported resource type: {s}"),
        )
    })
}

fn store_error(e: StoreError) -> ApiError {
    let status = match e {
        StoreError::NotFound => StatusCode::NOT_FOUND,
        StoreError::MissingRef(..) | StoreError::InUse(..) | StoreError::Rejected(_) => {
            StatusCode::BAD_REQUEST
        }
        StoreError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!("admin store error: {e}");
    }
    ApiError(status, e.to_string())
}

fn item(r: &Record) -> Value {
    json!({
        "key": r.kind.key(&r.id),
        "value": r.value,
        "createdIndex": r.create_rev,
        "modifiedIndex": r.mod_rev,
    })
}

async fn read_json(body: Body) -> Result<Value, ApiError> {
    let bytes = to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("invalid request body: larger than {MAX_BODY} bytes"),
        )
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("invalid request body: empty"));
    }
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid request body: {e}")))
}

/// Validates a full resource body for `kind/id` and returns the write function for the store.
fn checked(kind: Kind, id: String, mut value: Value, plugins: Arc<dyn PluginChecker>) -> WriteFn {
    Box::new(move |_old| {
        if let Some(obj) = value.as_object_mut() {
            obj.insert("id".into(), Value::String(id));
        }
        let refs = validate(kind, &mut value, plugins.as_ref()).map_err(StoreError::Rejected)?;
        Ok((value, refs))
    })
}

async fn write(state: &AdminState, kind: Kind, id: String, f: WriteFn) -> ApiResult {
    let out = state.store.write(kind, &id, f).await?;
    wait_applied(state, out.record.mod_rev).await;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let r = &out.record;
    Ok((
        status,
        Json(json!({"key": kind.key(&r.id), "value": r.value})),
    )
        .into_response())
}

/// Waits until the data plane runs revision `rev` or newer (bounded).
async fn wait_applied(state: &AdminState, rev: u64) {
    if let Some(rx) = &state.applied {
        let mut rx = rx.clone();
        let _ = tokio::time::timeout(crate::APPLY_WAIT, rx.wait_for(|r| *r >= rev)).await;
    }
}

/// Validates and stores a whole resource body as `kind/id`.
async fn put_value(state: &AdminState, kind: Kind, id: String, value: Value) -> ApiResult {
    let f = checked(kind, id.clone(), value, state.plugins.clone());
    write(state, kind, id, f).await
}

fn check_id(kind: Kind, id: &str) -> Result<(), ApiError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(bad(format!(
            "invalid {} id: expected 1-64 characters of [a-zA-Z0-9-_.]",
            kind.noun()
        )))
    }
}

pub async fn list(state: S, Path(kind): Path<String>) -> ApiResult {
    let kind = kind_of(&kind)?;
    let rs = state.store.list(kind).await?;
    let list: Vec<Value> = rs.iter().map(item).collect();
    Ok(Json(json!({"total": rs.len(), "list": list})).into_response())
}

pub async fn get_one(state: S, Path((kind, id)): Path<(String, String)>) -> ApiResult {
    let kind = kind_of(&kind)?;
    let r = state
        .store
        .get(kind, &id)
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(Json(item(&r)).into_response())
}

/// `PUT /apisix/admin/<kind>` with the id in the body (as the APISIX docs' examples do).
pub async fn put_collection(state: S, Path(kind): Path<String>, body: Body) -> ApiResult {
    let kind = kind_of(&kind)?;
    let value = read_json(body).await?;
    let Some(id) = value.get("id").and_then(id_string) else {
        return Err(bad(format!("missing {} id", kind.noun())));
    };
    check_id(kind, &id)?;
    put_value(&state, kind, id, value).await
}

pub async fn put_id(state: S, Path((kind, id)): Path<(String, String)>, body: Body) -> ApiResult {
    let kind = kind_of(&kind)?;
    check_id(kind, &id)?;
    let value = read_json(body).await?;
    if let Some(body_id) = value.get("id")
        && id_string(body_id).as_deref() != Some(id.as_str())
    {
        return Err(bad(format!("wrong {} id", kind.noun())));
    }
    put_value(&state, kind, id, value).await
}

/// A new id for POST: time-ordered digits, unique within this process.
fn new_id() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return format!("{next:020}"),
            Err(p) => prev = p,
        }
    }
}

pub async fn post(state: S, Path(kind): Path<String>, body: Body) -> ApiResult {
    let kind = kind_of(&kind)?;
    let value = read_json(body).await?;
    if value.get("id").is_some() {
        return Err(bad(format!("wrong {} id, do not need it", kind.noun())));
    }
    let id = new_id();
    put_value(&state, kind, id, value).await
}

/// RFC 7386 merge: objects merge key by key, `null` deletes, anything else replaces.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge(t.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p,
    }
}

fn patched(
    kind: Kind,
    id: String,
    apply: impl FnOnce(&mut Value) -> Result<(), String> + Send + 'static,
    plugins: Arc<dyn PluginChecker>,
) -> WriteFn {
    Box::new(move |old| {
        let mut value = old.cloned().ok_or(StoreError::NotFound)?;
        apply(&mut value).map_err(StoreError::Rejected)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("id".into(), Value::String(id));
        }
        let refs = validate(kind, &mut value, plugins.as_ref()).map_err(StoreError::Rejected)?;
        Ok((value, refs))
    })
}

pub async fn patch(state: S, Path((kind, id)): Path<(String, String)>, body: Body) -> ApiResult {
    let kind = kind_of(&kind)?;
    let p = read_json(body).await?;
    if !p.is_object() {
        return Err(bad("invalid request body: a PATCH body must be an object"));
    }
    if let Some(body_id) = p.get("id")
        && id_string(body_id).as_deref() != Some(id.as_str())
    {
        return Err(bad(format!("wrong {} id", kind.noun())));
    }
    let f = patched(
        kind,
        id.clone(),
        move |v| {
            merge(v, p);
            Ok(())
        },
        state.plugins.clone(),
    );
    write(&state, kind, id, f).await
}

/// `PATCH /apisix/admin/<kind>/<id>/<path>`: replaces the value at `path` (e.g. `plugins`).
pub async fn patch_path(
    state: S,
    Path((kind, id, path)): Path<(String, String, String)>,
    body: Body,
) -> ApiResult {
    let kind = kind_of(&kind)?;
    let p = read_json(body).await?;
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if segs.is_empty() || segs[0] == "id" {
        return Err(bad(format!("invalid sub path: {path}")));
    }
    let f = patched(
        kind,
        id.clone(),
        move |v| {
            let mut cur = v;
            for (i, s) in segs.iter().enumerate() {
                let obj = cur.as_object_mut().ok_or_else(|| {
                    format!("invalid sub path: {} is not an object", segs[..i].join("/"))
                })?;
                if i + 1 == segs.len() {
                    obj.insert(s.clone(), p);
                    return Ok(());
                }
                cur = obj
                    .entry(s.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
            }
            Ok(())
        },
        state.plugins.clone(),
    );
    write(&state, kind, id, f).await
}

pub async fn delete(state: S, Path((kind, id)): Path<(String, String)>) -> ApiResult {
    let kind = kind_of(&kind)?;
    let (r, rev) = state.store.delete(kind, &id).await?;
    wait_applied(&state, rev).await;
    Ok(Json(json!({"deleted": "1", "key": kind.key(&r.id)})).into_response())
}

pub async fn plugin_list(state: S) -> Response {
    Json(state.plugins.names()).into_response()
}

pub async fn plugin_schema(state: S, Path(name): Path<String>) -> Response {
    match state.plugins.schema(&name) {
        Some(s) => Json(s).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("plugin not found: {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch() {
        let mut v = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]});
        merge(
            &mut v,
            json!({"a": null, "b": {"c": 5}, "e": [3], "f": "x"}),
        );
        assert_eq!(v, json!({"b": {"c": 5, "d": 3}, "e": [3], "f": "x"}));
    }

    #[test]
    fn ids_increase() {
        let a = new_id();
        let b = new_id();
        assert!(b > a);
        assert_eq!(a.len(), 20);
    }
}
