//! The embedded store: SQLite (WAL, `synchronous=FULL`) in the data dir. Every write is one
//! immediate transaction that bumps the revision, so a `kill -9` at any moment loses no
//! acknowledged write and leaves no half-written resource. One process at a time: the data dir
//! is locked (`ferry.lock`) while a store has it open, since another process's data plane would
//! never see this one's writes.

use super::{
    Change, ChangeLog, Record, Store, StoreError, StoreSnapshot, WriteFn, WriteOutcome, now_secs,
    referrers, stamp,
};
use crate::resource::Kind;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    rev_tx: watch::Sender<u64>,
    /// Writes since this process opened the store, recorded under the connection's lock right
    /// after each commit (so in revision order).
    log: Arc<ChangeLog>,
    /// Held for the store's life: the exclusive lock on the data dir.
    _lock: std::fs::File,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    value TEXT NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS documents (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0);
";

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/ferry.db`.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| backend(format!("cannot create data dir {}: {e}", dir.display())))?;
        let lock_path = dir.join("ferry.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| backend(format!("cannot open {}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(backend(format!(
                    "data dir {} is in use by another Ferry process (it holds {}); stop that one, or give this one its own ferry.data_dir",
                    dir.display(),
                    lock_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(backend(format!("cannot lock {}: {e}", lock_path.display())));
            }
        }
        let path = dir.join("ferry.db");
        let conn = Connection::open(&path)
            .map_err(|e| backend(format!("cannot open {}: {e}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        let rev = read_revision(&conn)?;
        let (rev_tx, _) = watch::channel(rev);
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            rev_tx,
            log: Arc::new(ChangeLog::new(rev)),
            _lock: lock,
        })
    }

    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| backend("store lock poisoned"))?;
            f(&mut guard)
        })
        .await
        .map_err(backend)?
    }
}

/// Writes one row at revision `rev`.
fn upsert(
    conn: &Connection,
    kind: Kind,
    id: String,
    value: Value,
    old: Option<&Record>,
    rev: u64,
) -> Result<Record, StoreError> {
    let create_rev = old.map_or(rev, |o| o.create_rev);
    let text = serde_json::to_string(&value).map_err(backend)?;
    conn.execute(
        "INSERT INTO resources (kind, id, value, create_rev, mod_rev) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (kind, id) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev",
        params![kind.as_str(), id, text, create_rev as i64, rev as i64],
    )
    .map_err(backend)?;
    Ok(Record {
        kind,
        id,
        value,
        create_rev,
        mod_rev: rev,
    })
}

fn remove_row(conn: &Connection, kind: Kind, id: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM resources WHERE kind = ?1 AND id = ?2",
        params![kind.as_str(), id],
    )
    .map_err(backend)?;
    Ok(())
}

fn set_revision(conn: &Connection, rev: u64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'revision'",
        params![rev as i64],
    )
    .map_err(backend)?;
    Ok(())
}

fn read_revision(conn: &Connection) -> Result<u64, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|v| v as u64)
    .map_err(backend)
}

fn row_to_record(
    kind: Kind,
    id: String,
    value: String,
    c: i64,
    m: i64,
) -> Result<Record, StoreError> {
    Ok(Record {
        kind,
        id,
        value: serde_json::from_str(&value).map_err(backend)?,
        create_rev: c as u64,
        mod_rev: m as u64,
    })
}

fn get_row(conn: &Connection, kind: Kind, id: &str) -> Result<Option<Record>, StoreError> {
    conn.query_row(
        "SELECT value, create_rev, mod_rev FROM resources WHERE kind = ?1 AND id = ?2",
        params![kind.as_str(), id],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        },
    )
    .optional()
    .map_err(backend)?
    .map(|(v, c, m)| row_to_record(kind, id.to_string(), v, c, m))
    .transpose()
}

fn list_rows(conn: &Connection, kind: Kind) -> Result<Vec<Record>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, value, create_rev, mod_rev FROM resources WHERE kind = ?1 ORDER BY create_rev, id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![kind.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(backend)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, v, c, m) = row.map_err(backend)?;
        out.push(row_to_record(kind, id, v, c, m)?);
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, kind: Kind, id: &str) -> Result<Option<Record>, StoreError> {
        let id = id.to_string();
        self.with_conn(move |c| get_row(c, kind, &id)).await
    }

    async fn list(&self, kind: Kind) -> Result<Vec<Record>, StoreError> {
        self.with_conn(move |c| list_rows(c, kind)).await
    }

    async fn write(
        &self,
        kind: Kind,
        id: &str,
        mut f: WriteFn,
    ) -> Result<WriteOutcome, StoreError> {
        let id = id.to_string();
        let log = self.log.clone();
        let out = self
            .with_conn(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(backend)?;
                let old = get_row(&tx, kind, &id)?;
                let (mut value, refs) = f(old.as_ref().map(|r| &r.value))?;
                for (rk, rid) in refs {
                    if get_row(&tx, rk, &rid)?.is_none() {
                        return Err(StoreError::MissingRef(rk, rid));
                    }
                }
                let rev = read_revision(&tx)? + 1;
                if kind.stamped() {
                    stamp(&mut value, old.as_ref(), now_secs());
                }
                let record = upsert(&tx, kind, id, value, old.as_ref(), rev)?;
                set_revision(&tx, rev)?;
                tx.commit().map_err(backend)?;
                log.push(Change {
                    revision: rev,
                    kind,
                    id: record.id.clone(),
                    record: Some(record.clone()),
                });
                Ok(WriteOutcome {
                    created: old.is_none(),
                    record,
                })
            })
            .await?;
        self.rev_tx.send_replace(out.record.mod_rev);
        Ok(out)
    }

    async fn delete(&self, kind: Kind, id: &str, force: bool) -> Result<(Record, u64), StoreError> {
        let id = id.to_string();
        let log = self.log.clone();
        let (rec, rev) = self
            .with_conn(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(backend)?;
                let rec = get_row(&tx, kind, &id)?.ok_or(StoreError::NotFound)?;
                for (by_kind, field) in referrers(kind).iter().filter(|_| !force) {
                    let user: Option<String> = tx
                        .query_row(
                            &format!(
                                "SELECT id FROM resources WHERE kind = ?1 AND CAST(json_extract(value, '$.{field}') AS TEXT) = ?2 LIMIT 1"
                            ),
                            params![by_kind.as_str(), id],
                            |r| r.get(0),
                        )
                        .optional()
                        .map_err(backend)?;
                    if let Some(user) = user {
                        return Err(StoreError::InUse(kind, *by_kind, user));
                    }
                }
                let mut rev = read_revision(&tx)?;
                let mut gone = Vec::new();
                if kind == Kind::Consumers {
                    let prefix = Kind::credential_id(&id, "");
                    for c in list_rows(&tx, Kind::Credentials)? {
                        if c.id.starts_with(&prefix) {
                            rev += 1;
                            remove_row(&tx, Kind::Credentials, &c.id)?;
                            gone.push((rev, Kind::Credentials, c.id));
                        }
                    }
                }
                rev += 1;
                remove_row(&tx, kind, &id)?;
                gone.push((rev, kind, id));
                set_revision(&tx, rev)?;
                tx.commit().map_err(backend)?;
                for (revision, kind, id) in gone {
                    log.push(Change {
                        revision,
                        kind,
                        id,
                        record: None,
                    });
                }
                Ok((rec, rev))
            })
            .await?;
        self.rev_tx.send_replace(rev);
        Ok((rec, rev))
    }

    async fn snapshot(&self) -> Result<StoreSnapshot, StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction().map_err(backend)?;
            let revision = read_revision(&tx)?;
            let mut records = Vec::new();
            for k in Kind::ALL {
                records.extend(list_rows(&tx, k)?);
            }
            Ok(StoreSnapshot { revision, records })
        })
        .await
    }

    async fn replace_all(
        &self,
        items: Vec<(Kind, String, Value)>,
        doc: Value,
    ) -> Result<u64, StoreError> {
        let log = self.log.clone();
        let rev = self
            .with_conn(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(backend)?;
                let mut rev = read_revision(&tx)?;
                let mut current: std::collections::HashMap<(Kind, String), Record> =
                    std::collections::HashMap::new();
                for k in Kind::ALL {
                    for r in list_rows(&tx, k)? {
                        current.insert((k, r.id.clone()), r);
                    }
                }
                let mut changes = Vec::new();
                for (kind, id, value) in items {
                    let old = current.remove(&(kind, id.clone()));
                    if old.as_ref().is_some_and(|o| o.value == value) {
                        continue;
                    }
                    rev += 1;
                    let record = upsert(&tx, kind, id.clone(), value, old.as_ref(), rev)?;
                    changes.push(Change {
                        revision: rev,
                        kind,
                        id,
                        record: Some(record),
                    });
                }
                let mut gone: Vec<_> = current.into_values().collect();
                gone.sort_by_key(|r| r.create_rev);
                for r in gone {
                    rev += 1;
                    remove_row(&tx, r.kind, &r.id)?;
                    changes.push(Change {
                        revision: rev,
                        kind: r.kind,
                        id: r.id,
                        record: None,
                    });
                }
                let text = serde_json::to_string(&doc).map_err(backend)?;
                tx.execute(
                    "INSERT INTO documents (name, value) VALUES ('standalone', ?1)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    params![text],
                )
                .map_err(backend)?;
                set_revision(&tx, rev)?;
                tx.commit().map_err(backend)?;
                for c in changes {
                    log.push(c);
                }
                Ok(rev)
            })
            .await?;
        self.rev_tx.send_replace(rev);
        Ok(rev)
    }

    async fn document(&self) -> Result<Option<Value>, StoreError> {
        self.with_conn(|conn| {
            let text: Option<String> = conn
                .query_row(
                    "SELECT value FROM documents WHERE name = 'standalone'",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            text.map(|t| serde_json::from_str(&t).map_err(backend))
                .transpose()
        })
        .await
    }

    async fn changes_since(&self, rev: u64) -> Result<Option<Vec<Change>>, StoreError> {
        Ok(self.log.since(rev))
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.rev_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(v: Value) -> WriteFn {
        Box::new(move |_| Ok((v.clone(), vec![])))
    }

    #[tokio::test]
    async fn write_read_delete_and_revisions() {
        let dir = std::env::temp_dir().join(format!("ferry-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = SqliteStore::open(&dir).unwrap();
        let mut w = s.watch();
        let a = s
            .write(Kind::Routes, "1", put(json!({"id": "1", "uri": "/a"})))
            .await
            .unwrap();
        assert!(a.created);
        assert_eq!(a.record.mod_rev, 1);
        assert!(w.has_changed().unwrap());
        assert_eq!(*w.borrow_and_update(), 1);
        let b = s
            .write(Kind::Routes, "1", put(json!({"id": "1", "uri": "/b"})))
            .await
            .unwrap();
        assert!(!b.created);
        assert_eq!((b.record.create_rev, b.record.mod_rev), (1, 2));
        assert_eq!(b.record.value["create_time"], a.record.value["create_time"]);
        let got = s.get(Kind::Routes, "1").await.unwrap().unwrap();
        assert_eq!(got.value["uri"], "/b");
        // references: a route pointing at a missing service is refused
        let refs: WriteFn = Box::new(|_| {
            Ok((
                json!({"id": "2", "service_id": "s1"}),
                vec![(Kind::Services, "s1".into())],
            ))
        });
        let e = s.write(Kind::Routes, "2", refs).await.unwrap_err();
        assert_eq!(e, StoreError::MissingRef(Kind::Services, "s1".into()));
        s.write(Kind::Services, "s1", put(json!({"id": "s1"})))
            .await
            .unwrap();
        let refs: WriteFn = Box::new(|_| {
            Ok((
                json!({"id": "2", "service_id": "s1"}),
                vec![(Kind::Services, "s1".into())],
            ))
        });
        s.write(Kind::Routes, "2", refs).await.unwrap();
        let e = s.delete(Kind::Services, "s1", false).await.unwrap_err();
        assert_eq!(
            e,
            StoreError::InUse(Kind::Services, Kind::Routes, "2".into())
        );
        assert_eq!(
            e.to_string(),
            "can not delete this service directly, route [2] is still using it now"
        );
        s.delete(Kind::Routes, "2", false).await.unwrap();
        s.delete(Kind::Services, "s1", false).await.unwrap();
        assert_eq!(
            s.delete(Kind::Services, "s1", false).await.unwrap_err(),
            StoreError::NotFound
        );
        // every write is in the change log, in order
        let changes = s.changes_since(0).await.unwrap().unwrap();
        let revs: Vec<u64> = changes.iter().map(|c| c.revision).collect();
        assert_eq!(revs, vec![1, 2, 3, 4, 5, 6]);
        assert!(changes[4].record.is_none(), "route 2 deleted");
        assert_eq!(changes[1].record.as_ref().unwrap().value["uri"], "/b");
        assert_eq!(s.changes_since(6).await.unwrap(), Some(vec![]));
        // a second store on the same dir is refused while the first is open
        let e = SqliteStore::open(&dir).err().unwrap();
        assert!(
            e.to_string().contains("in use by another Ferry process"),
            "{e}"
        );
        // reopen: data and revision survive
        drop(s);
        let s = SqliteStore::open(&dir).unwrap();
        let snap = s.snapshot().await.unwrap();
        assert_eq!(snap.revision, 6);
        assert_eq!(snap.records.len(), 1);
        assert_eq!(snap.records[0].value["uri"], "/b");
        assert_eq!(
            s.changes_since(5).await.unwrap(),
            None,
            "before this process"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
