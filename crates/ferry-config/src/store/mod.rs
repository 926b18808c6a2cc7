//! The configuration store: where routes, services and plugin configs live, with a revision
//! that increases on every write and a watch channel that announces it.

mod changelog;
mod sqlite;

pub use changelog::ChangeLog;
pub use sqlite::SqliteStore;

use crate::resource::{Kind, Ref};
use serde_json::Value;
use tokio::sync::watch;

/// One stored resource. `value` carries `id`, `create_time` and `update_time`.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub kind: Kind,
    pub id: String,
    pub value: Value,
    /// Store revision of the write that created it.
    pub create_rev: u64,
    /// Store revision of its latest write.
    pub mod_rev: u64,
}

/// One committed write: the resource as it is after it, or `None` when it was deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub revision: u64,
    pub kind: Kind,
    pub id: String,
    pub record: Option<Record>,
}

/// Everything in the store at one revision.
#[derive(Debug, Clone, Default)]
pub struct StoreSnapshot {
    pub revision: u64,
    pub records: Vec<Record>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StoreError {
    #[error("Key not found")]
    NotFound,
    /// The write references a resource that does not exist.
    #[error("failed to fetch {} info by {} id [{}], response code: 404", .0.noun(), .0.noun(), .1)]
    MissingRef(Kind, String),
    /// A delete would leave another resource pointing at nothing.
    #[error("can not delete this {}, {} [{}] is still using it now", in_use_noun(*.0), .1.noun(), .2)]
    InUse(Kind, Kind, String),
    /// The caller's write function refused the change (validation).
    #[error("{0}")]
    Rejected(String),
    #[error("store error: {0}")]
    Backend(String),
    /// The shared store (etcd) cannot be reached; nothing was written.
    #[error("etcd unavailable: {0}")]
    Unavailable(String),
    /// A [`Guard`]ed write lost to another writer: what the caller checked may have changed,
    /// so it checks again and retries.
    #[error("the configuration changed while this write was checked; try again")]
    Stale,
}

/// What a write's cross-resource checks read: the collections, and the store revision taken
/// before reading them. A store shared by several writers (etcd) commits the write only if
/// none of those collections changed since; a single-process store needs nothing more than
/// its own serialisation.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub since: u64,
    pub kinds: Vec<Kind>,
}

/// APISIX says "this service directly" and "this upstream".
fn in_use_noun(k: Kind) -> &'static str {
    match k {
        Kind::Services => "service directly",
        k => k.noun(),
    }
}

/// Computes the new value of a resource from its current one (`None` when absent), and the
/// resources it references. Runs inside the store's write transaction, so read-modify-write
/// (PATCH) is atomic; a store that commits optimistically (etcd) calls it again on the newer
/// value when another writer got there first.
pub type WriteFn = Box<dyn FnMut(Option<&Value>) -> Result<(Value, Vec<Ref>), StoreError> + Send>;

/// The references that keep a resource alive: (referencing kind, JSON field).
pub fn referrers(kind: Kind) -> &'static [(Kind, &'static str)] {
    match kind {
        Kind::Upstreams => &[
            (Kind::Routes, "upstream_id"),
            (Kind::Services, "upstream_id"),
        ],
        Kind::Services => &[(Kind::Routes, "service_id")],
        Kind::PluginConfigs => &[(Kind::Routes, "plugin_config_id")],
        Kind::ConsumerGroups => &[(Kind::Consumers, "group_id")],
        _ => &[],
    }
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Sets `create_time` (kept from `old`, or now) and `update_time` (now).
pub fn stamp(value: &mut Value, old: Option<&Record>, now: i64) {
    let create_time = old
        .and_then(|o| o.value.get("create_time").cloned())
        .unwrap_or(Value::from(now));
    if let Some(obj) = value.as_object_mut() {
        obj.entry("create_time").or_insert(create_time);
        obj.insert("update_time".into(), Value::from(now));
    }
}

/// A POST id when the store has no counter of its own: 20 zero-padded digits, increasing
/// (microseconds since the epoch, bumped past the last one handed out).
pub fn local_post_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
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

/// What a write did.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub record: Record,
    pub created: bool,
}

/// A configuration store. Writes are durable before they return.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// The key prefix shown in Admin answers (`/apisix/routes/1`).
    fn prefix(&self) -> &str {
        "/apisix"
    }
    /// A fresh id for `POST`: 20 digits, unique among every writer of this store.
    async fn post_id(&self) -> Result<String, StoreError> {
        Ok(local_post_id())
    }
    /// The revision to put in a [`Guard`] before reading what a write is checked against
    /// (0 where guards are not needed).
    async fn guard_revision(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    /// [`Store::write`], committed only while `guard`'s collections are unchanged; answers
    /// [`StoreError::Stale`] otherwise (then the caller checks again).
    async fn write_guarded(
        &self,
        kind: Kind,
        id: &str,
        f: WriteFn,
        _guard: &Guard,
    ) -> Result<WriteOutcome, StoreError> {
        self.write(kind, id, f).await
    }
    async fn get(&self, kind: Kind, id: &str) -> Result<Option<Record>, StoreError>;
    async fn list(&self, kind: Kind) -> Result<Vec<Record>, StoreError>;
    /// Creates or replaces `kind/id` with what `f` returns; stamps times and revisions.
    async fn write(&self, kind: Kind, id: &str, f: WriteFn) -> Result<WriteOutcome, StoreError>;
    /// Deletes `kind/id`; refuses while another resource references it unless `force`.
    /// Deleting a consumer deletes its credentials. Returns the deleted record and the
    /// revision of the delete.
    async fn delete(&self, kind: Kind, id: &str, force: bool) -> Result<(Record, u64), StoreError>;
    /// Makes the store hold exactly `items` (standalone mode: one document replaces all),
    /// writing only what differs, and keeps `doc` as the document last accepted. Returns the
    /// revision after the change.
    async fn replace_all(
        &self,
        items: Vec<(Kind, String, Value)>,
        doc: Value,
    ) -> Result<u64, StoreError>;
    /// The document last given to [`Store::replace_all`], if any.
    async fn document(&self) -> Result<Option<Value>, StoreError>;
    /// All resources at the current revision.
    async fn snapshot(&self) -> Result<StoreSnapshot, StoreError>;
    /// The writes after revision `rev`, oldest first, so a follower applies only what
    /// changed; `None` when the store no longer has them all (take a [`Store::snapshot`]).
    async fn changes_since(&self, rev: u64) -> Result<Option<Vec<Change>>, StoreError>;
    /// The current revision, announced after every committed write.
    fn watch(&self) -> watch::Receiver<u64>;
}
