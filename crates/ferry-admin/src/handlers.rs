//! Admin API resource handlers: create, replace, merge, read, list (with APISIX's filters and
//! paging) and delete, in APISIX's response shapes (`{"key": "/apisix/routes/1", "value": ...}`).

use crate::{AdminState, ConfigSource, conflicts, error, lists};
use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_config::resource::{id_string, valid_id, validate};
use ferry_config::store::{Guard, Record, StoreError, WriteFn, WriteOutcome};
use ferry_config::upstream::UpstreamConf;
use ferry_config::{Kind, PluginChecker};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;

type S = State<Arc<AdminState>>;
type Q = Query<HashMap<String, String>>;

/// Largest resource body, as APISIX.
pub const MAX_BODY: usize = 1_572_864;

/// A failed admin call: rendered as `{"error_msg": ...}` with its status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.0 == StatusCode::NOT_FOUND && self.1 == "Key not found" {
            return (
                self.0,
                Json(json!({"message": "Key not found", "error_msg": "Key not found"})),
            )
                .into_response();
        }
        error(self.0, self.1)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::NotFound => StatusCode::NOT_FOUND,
            StoreError::MissingRef(..) | StoreError::InUse(..) | StoreError::Rejected(_) => {
                StatusCode::BAD_REQUEST
            }
            StoreError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Stale => StatusCode::CONFLICT,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("admin store error: {e}");
        }
        ApiError(status, e.to_string())
    }
}

pub type ApiResult = Result<Response, ApiError>;

pub fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

const STREAM_ROUTES: &str = "stream_routes";

fn kind_of(s: &str) -> Result<Kind, ApiError> {
    if s == STREAM_ROUTES {
        return Err(bad(
            "stream mode is disabled, can not add stream routes: Ferry has no L4 (stream) proxy",
        ));
    }
    Kind::from_path(s).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("Unsupported resource type: {s}"),
        )
    })
}

fn not_supported(method: &Method, kind: Kind) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("not supported `{method}` method for {}", kind.noun()),
    )
}

/// Writes are refused when a document, not the Admin API, is the source of configuration.
fn writable(state: &AdminState) -> Result<(), ApiError> {
    match &state.source {
        ConfigSource::Store => Ok(()),
        ConfigSource::StandaloneApi => Err(bad(
            "Ferry runs in standalone mode (config_provider: yaml): resources are read-only here; send the whole configuration with PUT /apisix/admin/configs",
        )),
        ConfigSource::File(path) => Err(bad(format!(
            "Ferry runs in file-driven standalone mode: the configuration comes from {}; edit that file instead",
            path.display()
        ))),
    }
}

/// What any answer may show of a stored value: never an SSL private key.
fn public(kind: Kind, v: &Value) -> Value {
    if kind == Kind::Ssls
        && let Some(m) = v.as_object()
    {
        let mut m = m.clone();
        m.remove("key");
        m.remove("keys");
        return Value::Object(m);
    }
    v.clone()
}

pub(crate) fn item(prefix: &str, r: &Record) -> Value {
    json!({
        "key": r.kind.key_in(prefix, &r.id),
        "value": public(r.kind, &r.value),
        "createdIndex": r.create_rev,
        "modifiedIndex": r.mod_rev,
    })
}

/// Reads a JSON body; `None` when it is empty.
pub async fn read_json(body: Body, limit: usize) -> Result<Option<Value>, ApiError> {
    let bytes = to_bytes(body, limit).await.map_err(|_| {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "invalid request body: request size is greater than the maximum size {limit} allowed"
            ),
        )
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| bad(format!("invalid request body: {e}")))
}

async fn body_of(body: Body) -> Result<Value, ApiError> {
    read_json(body, MAX_BODY)
        .await?
        .ok_or_else(|| bad("missing configurations"))
}

/// `create_time` / `update_time` may not be sent with PUT or POST.
fn no_times(v: &Value) -> Result<(), ApiError> {
    for scope in [Some(v), v.get("upstream")].into_iter().flatten() {
        for f in ["create_time", "update_time"] {
            if scope.get(f).is_some() {
                return Err(bad(format!("the property is forbidden:  {f}")));
            }
        }
    }
    Ok(())
}

fn check(
    kind: Kind,
    id: &str,
    value: &Value,
    plugins: &dyn PluginChecker,
) -> Result<Vec<(Kind, String)>, StoreError> {
    if kind == Kind::PluginMetadata && !plugins.has(id) {
        return Err(StoreError::Rejected("invalid plugin name".into()));
    }
    let mut refs = validate(kind, value, plugins).map_err(StoreError::Rejected)?;
    if kind == Kind::Credentials
        && let Some((user, _)) = id.split_once('/')
    {
        refs.push((Kind::Consumers, user.to_string()));
    }
    Ok(refs)
}

/// The store write of a whole body for `kind/id`.
fn checked(kind: Kind, id: String, value: Value, plugins: Arc<dyn PluginChecker>) -> WriteFn {
    Box::new(move |_old| {
        let mut value = value.clone();
        ferry_config::resource::set_id(kind, &id, &mut value);
        let refs = check(kind, &id, &value, plugins.as_ref())?;
        Ok((value, refs))
    })
}

async fn write(state: &AdminState, kind: Kind, id: String, f: WriteFn) -> ApiResult {
    let out = commit(state, kind, &id, f, &Guard::default()).await;
    answer(state, kind, out)
}

/// Stores a write (guarded when `guard` names collections).
async fn commit(
    state: &AdminState,
    kind: Kind,
    id: &str,
    f: WriteFn,
    guard: &Guard,
) -> Result<WriteOutcome, StoreError> {
    let out = if guard.kinds.is_empty() {
        state.store.write(kind, id, f).await
    } else {
        state.store.write_guarded(kind, id, f, guard).await
    }?;
    wait_applied(state, out.record.mod_rev).await;
    Ok(out)
}

/// APISIX's answer to a write: 201 when created, 200 when replaced.
fn answer(state: &AdminState, kind: Kind, out: Result<WriteOutcome, StoreError>) -> ApiResult {
    let out = match out {
        Err(StoreError::MissingRef(Kind::Consumers, _)) if kind == Kind::Credentials => {
            return Err(ApiError(StatusCode::NOT_FOUND, "consumer not found".into()));
        }
        r => r?,
    };
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let r = &out.record;
    Ok((
        status,
        Json(json!({"key": kind.key_in(state.store.prefix(), &r.id), "value": public(kind, &r.value)})),
    )
        .into_response())
}

/// Waits until the data plane runs revision `rev` or newer (bounded).
pub async fn wait_applied(state: &AdminState, rev: u64) {
    if let Some(rx) = &state.applied {
        let mut rx = rx.clone();
        let _ = tokio::time::timeout(crate::APPLY_WAIT, rx.wait_for(|r| *r >= rev)).await;
    }
}

/// Validates and stores a whole resource body as `kind/id`.
async fn put_value(state: &AdminState, kind: Kind, id: String, value: Value) -> ApiResult {
    writable(state)?;
    no_times(&value)?;
    // Writes checked against other resources go one at a time on a node, so the checks are
    // exact; across nodes sharing etcd, the write is guarded by what the checks read.
    let consumer = matches!(kind, Kind::Consumers | Kind::Credentials);
    let kinds = conflicts::checked_kinds(state.plugins.as_ref(), kind, &value);
    let _serial = match kinds.is_empty() {
        true => None,
        false => Some(state.checked_writes.lock().await),
    };
    let deadline = std::time::Instant::now() + crate::STALE_RETRY;
    loop {
        let since = match kinds.is_empty() {
            true => 0,
            false => state.store.guard_revision().await?,
        };
        if kind == Kind::GlobalRules {
            conflicts::global_rule_conflict(state, &id, &value).await?;
        }
        conflicts::group_conflict(state, kind, &id, &value).await?;
        if consumer {
            conflicts::duplicate_key(state, kind, &id, &value).await?;
        }
        let f = checked(kind, id.clone(), value.clone(), state.plugins.clone());
        let guard = Guard {
            since,
            kinds: kinds.clone(),
        };
        match commit(state, kind, &id, f, &guard).await {
            Err(StoreError::Stale) if std::time::Instant::now() < deadline => continue,
            out => return answer(state, kind, out),
        }
    }
}

fn check_id(kind: Kind, id: &str) -> Result<(), ApiError> {
    let ok = match kind {
        Kind::Consumers => ferry_config::resource::valid_username(id),
        Kind::PluginMetadata => !id.is_empty(),
        _ => valid_id(id),
    };
    if ok {
        Ok(())
    } else {
        Err(bad(
            "invalid configuration: property \"id\" validation failed: object matches none of the required",
        ))
    }
}

pub async fn list(state: S, Path(kind): Path<String>, Query(q): Q) -> ApiResult {
    if kind == STREAM_ROUTES {
        return Ok(Json(json!({"total": 0, "list": []})).into_response());
    }
    let kind = kind_of(&kind)?;
    let mut rs = state.store.list(kind).await?;
    if kind == Kind::Upstreams {
        // ADC's placeholders (no nodes) are fetchable by id but not listed.
        rs.retain(|r| !UpstreamConf::is_placeholder(&r.value));
    }
    let (total, rs) = lists::filtered(rs, &q)?;
    Ok(lists::list_answer(state.store.prefix(), total, &rs))
}

pub async fn get_one(state: S, Path((kind, id)): Path<(String, String)>) -> ApiResult {
    if kind == STREAM_ROUTES {
        return Err(StoreError::NotFound.into());
    }
    let kind = kind_of(&kind)?;
    let r = state
        .store
        .get(kind, &id)
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(Json(item(state.store.prefix(), &r)).into_response())
}

/// `PUT /apisix/admin/<kind>` with the id (a consumer's `username`) in the body.
pub async fn put_collection(state: S, Path(kind): Path<String>, body: Body) -> ApiResult {
    let kind = kind_of(&kind)?;
    let value = body_of(body).await?;
    let id = match kind {
        Kind::Consumers => value
            .get("username")
            .and_then(Value::as_str)
            .map(String::from),
        Kind::PluginMetadata => return Err(bad("missing plugin name")),
        _ => value.get("id").and_then(id_string),
    };
    let Some(id) = id else {
        return Err(match kind {
            Kind::Consumers => bad("invalid configuration: property \"username\" is required"),
            _ => bad(format!("missing {} id", kind.noun())),
        });
    };
    check_id(kind, &id)?;
    put_value(&state, kind, id, value).await
}

pub async fn put_id(state: S, Path((kind, id)): Path<(String, String)>, body: Body) -> ApiResult {
    let kind = kind_of(&kind)?;
    check_id(kind, &id)?;
    let value = match read_json(body, MAX_BODY).await? {
        Some(v) => v,
        // ADC writes an empty upstream for every service that has none.
        None if kind == Kind::Upstreams => json!({}),
        None => return Err(bad("missing configurations")),
    };
    match kind {
        Kind::Consumers => {
            if let Some(u) = value.get("username")
                && u.as_str() != Some(id.as_str())
            {
                return Err(bad("wrong username"));
            }
        }
        Kind::PluginMetadata => {}
        _ => {
            if let Some(body_id) = value.get("id")
                && id_string(body_id).as_deref() != Some(id.as_str())
            {
                return Err(bad(format!("wrong {} id", kind.noun())));
            }
        }
    }
    put_value(&state, kind, id, value).await
}

pub async fn post(state: S, Path(kind): Path<String>, body: Body) -> ApiResult {
    let kind = kind_of(&kind)?;
    if !kind.allows_post() {
        return Err(not_supported(&Method::POST, kind));
    }
    let value = body_of(body).await?;
    if value.get("id").is_some() {
        return Err(bad(format!("wrong {} id, do not need it", kind.noun())));
    }
    let id = state.store.post_id().await?;
    put_value(&state, kind, id, value).await
}

pub async fn post_id(_state: S, Path((kind, _id)): Path<(String, String)>) -> ApiResult {
    let kind = kind_of(&kind)?;
    if !kind.allows_post() {
        return Err(not_supported(&Method::POST, kind));
    }
    Err(bad(format!("wrong {} id, do not need it", kind.noun())))
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
    apply: impl FnMut(&mut Value) -> Result<(), String> + Send + 'static,
    plugins: Arc<dyn PluginChecker>,
) -> WriteFn {
    let mut apply = apply;
    Box::new(move |old| {
        let mut value = old.cloned().ok_or(StoreError::NotFound)?;
        apply(&mut value).map_err(StoreError::Rejected)?;
        if value.get("id").and_then(id_string).as_deref() != Some(id.as_str()) {
            return Err(StoreError::Rejected(format!("wrong {} id", kind.noun())));
        }
        let refs = check(kind, &id, &value, plugins.as_ref())?;
        Ok((value, refs))
    })
}

async fn patch_with(
    state: &AdminState,
    kind: Kind,
    id: String,
    apply: impl FnMut(&mut Value) -> Result<(), String> + Send + 'static,
) -> ApiResult {
    writable(state)?;
    if !kind.allows_patch() {
        return Err(not_supported(&Method::PATCH, kind));
    }
    let f = patched(kind, id.clone(), apply, state.plugins.clone());
    write(state, kind, id, f).await
}

pub async fn patch(state: S, Path((kind, id)): Path<(String, String)>, body: Body) -> ApiResult {
    let kind = kind_of(&kind)?;
    if !kind.allows_patch() {
        return Err(not_supported(&Method::PATCH, kind));
    }
    let p = body_of(body).await?;
    if !p.is_object() {
        return Err(bad("invalid configuration: a PATCH body must be an object"));
    }
    if kind == Kind::GlobalRules {
        conflicts::global_rule_conflict(&state, &id, &p).await?;
    }
    patch_with(&state, kind, id, move |v| {
        merge(v, p.clone());
        Ok(())
    })
    .await
}

/// Everything under `/<kind>/<id>/...`: a consumer's credentials, or a sub-path PATCH.
pub async fn sub_path(
    state: S,
    method: Method,
    Path((kind, id, path)): Path<(String, String, String)>,
    body: Body,
) -> ApiResult {
    let k = kind_of(&kind)?;
    if k == Kind::Consumers
        && let Some(rest) = path.strip_prefix("credentials")
    {
        return credentials(&state, method, &id, rest.trim_matches('/'), body).await;
    }
    if method != Method::PATCH {
        return Err(not_supported(&method, k));
    }
    let p = read_json(body, MAX_BODY).await?.unwrap_or(Value::Null);
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if segs.is_empty() {
        return Err(bad(format!("invalid sub-path: /{path}")));
    }
    patch_with(&state, k, id, move |v| {
        let mut cur = v;
        for (i, s) in segs.iter().enumerate() {
            let obj = cur
                .as_object_mut()
                .ok_or_else(|| format!("invalid sub-path: /{}", segs[..i].join("/")))?;
            if i + 1 == segs.len() {
                obj.insert(s.clone(), p.clone());
                return Ok(());
            }
            cur = obj
                .entry(s.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        Ok(())
    })
    .await
}

async fn credentials(
    state: &AdminState,
    method: Method,
    user: &str,
    cid: &str,
    body: Body,
) -> ApiResult {
    let consumer_missing = || ApiError(StatusCode::NOT_FOUND, "consumer not found".into());
    if cid.is_empty() {
        return match method {
            Method::GET => {
                if state.store.get(Kind::Consumers, user).await?.is_none() {
                    return Err(consumer_missing());
                }
                let prefix = Kind::credential_id(user, "");
                let mut rs = state.store.list(Kind::Credentials).await?;
                rs.retain(|r| r.id.starts_with(&prefix));
                Ok(lists::list_answer(state.store.prefix(), rs.len(), &rs))
            }
            Method::PUT => {
                let value = body_of(body).await?;
                let Some(cid) = value.get("id").and_then(id_string) else {
                    return Err(bad("missing credential id"));
                };
                check_id(Kind::Credentials, &cid)?;
                put_value(
                    state,
                    Kind::Credentials,
                    Kind::credential_id(user, &cid),
                    value,
                )
                .await
            }
            m => Err(not_supported(&m, Kind::Credentials)),
        };
    }
    check_id(Kind::Credentials, cid)?;
    let id = Kind::credential_id(user, cid);
    match method {
        Method::GET => {
            let r = state
                .store
                .get(Kind::Credentials, &id)
                .await?
                .ok_or(StoreError::NotFound)?;
            Ok(Json(item(state.store.prefix(), &r)).into_response())
        }
        Method::PUT => {
            let value = body_of(body).await?;
            if let Some(b) = value.get("id")
                && id_string(b).as_deref() != Some(cid)
            {
                return Err(bad("wrong credential id"));
            }
            put_value(state, Kind::Credentials, id, value).await
        }
        Method::DELETE => {
            writable(state)?;
            let (r, rev) = state.store.delete(Kind::Credentials, &id, false).await?;
            wait_applied(state, rev).await;
            Ok(Json(
                json!({"deleted": "1", "key": Kind::Credentials.key_in(state.store.prefix(), &r.id)}),
            )
            .into_response())
        }
        m => Err(not_supported(&m, Kind::Credentials)),
    }
}

pub async fn delete(state: S, Path((kind, id)): Path<(String, String)>, Query(q): Q) -> ApiResult {
    let kind = kind_of(&kind)?;
    writable(&state)?;
    let force = q.get("force").is_some_and(|f| f == "true");
    let (r, rev) = state.store.delete(kind, &id, force).await?;
    wait_applied(&state, rev).await;
    Ok(
        Json(json!({"deleted": "1", "key": kind.key_in(state.store.prefix(), &r.id)}))
            .into_response(),
    )
}

pub async fn missing_id(method: Method, Path(kind): Path<String>) -> ApiResult {
    let kind = kind_of(&kind)?;
    if method == Method::PATCH && !kind.allows_patch() {
        return Err(not_supported(&method, kind));
    }
    Err(bad(format!("missing {} id", kind.noun())))
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
        let a = ferry_config::store::local_post_id();
        let b = ferry_config::store::local_post_id();
        assert!(b > a);
        assert_eq!(a.len(), 20);
    }
}
