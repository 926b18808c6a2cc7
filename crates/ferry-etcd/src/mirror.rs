//! The in-memory copy of etcd that the data plane compiles from: every valid resource under the
//! prefix at one etcd revision, kept current by watch events and re-lists, with the recent
//! changes for incremental updates. Pure: no I/O, fed with decoded key-values.

use crate::crypt::Keyring;
use crate::layout::Layout;
use ferry_config::store::{Change, ChangeLog, Record, StoreSnapshot};
use ferry_config::{Kind, PluginChecker};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// One key-value as etcd reports it; `value: None` is a delete.
#[derive(Debug, Clone)]
pub struct Kv {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub create_rev: u64,
    pub mod_rev: u64,
}

/// Turns etcd values into resources: key → kind and id, JSON, decryption, validation.
pub struct Decoder {
    pub layout: Layout,
    pub keyring: Keyring,
    pub plugins: Arc<dyn PluginChecker>,
}

/// What a value read from etcd is worth.
#[derive(Debug)]
pub enum Item {
    /// Not a resource key (markers, `gen_id`, directories Ferry has no use for).
    Ignored,
    /// A resource key with a value Ferry would not accept; the reason names the key.
    Invalid(String),
    Valid(Record),
}

/// Sets the id a stored value carries from its key, as APISIX does (the key wins).
fn set_id(kind: Kind, id: &str, value: &mut Value) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    match kind {
        Kind::Consumers => {
            obj.entry("username")
                .or_insert_with(|| Value::String(id.into()));
        }
        Kind::PluginMetadata => {}
        Kind::Credentials => {
            let cid = id.rsplit('/').next().unwrap_or(id);
            obj.insert("id".into(), Value::String(cid.into()));
        }
        _ => {
            obj.insert("id".into(), Value::String(id.into()));
        }
    }
}

impl Decoder {
    /// The resource at `key`, decrypted, without validation (what the Admin API shows);
    /// `Err` when the value is not a JSON object.
    pub fn read(&self, kv: &Kv) -> Result<Option<Record>, String> {
        let Some((kind, id)) = self.layout.parse(&kv.key) else {
            return Ok(None);
        };
        let Some(bytes) = &kv.value else {
            return Ok(None);
        };
        let mut value: Value = match serde_json::from_slice(bytes) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Err(format!(
                    "invalid item data of [{}], val: {}, it should be an object",
                    kv.key,
                    String::from_utf8_lossy(bytes)
                ));
            }
        };
        set_id(kind, &id, &mut value);
        self.keyring.open(kind, &mut value);
        Ok(Some(Record {
            kind,
            id,
            value,
            create_rev: kv.create_rev,
            mod_rev: kv.mod_rev,
        }))
    }

    /// The resource at `key` if Ferry's Admin API would have accepted it.
    pub fn check(&self, kv: &Kv) -> Item {
        let r = match self.read(kv) {
            Ok(Some(r)) => r,
            Ok(None) => return Item::Ignored,
            Err(e) => return Item::Invalid(e),
        };
        let bad = |e: String| {
            Item::Invalid(format!(
                "failed to check item data of [{}] err: {e}",
                kv.key
            ))
        };
        if r.kind == Kind::PluginMetadata && !self.plugins.has(&r.id) {
            return bad(format!("unknown plugin [{}]", r.id));
        }
        match ferry_config::resource::validate(r.kind, &r.value, self.plugins.as_ref()) {
            Ok(_) => Item::Valid(r),
            Err(e) => bad(e),
        }
    }
}

/// Every valid resource at one revision, and the changes that led there.
pub struct Mirror {
    revision: u64,
    items: HashMap<(Kind, String), Record>,
    log: ChangeLog,
}

impl Default for Mirror {
    fn default() -> Self {
        Mirror {
            revision: 0,
            items: HashMap::new(),
            log: ChangeLog::new(0),
        }
    }
}

impl Mirror {
    /// The etcd revision this copy is complete up to.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Applies one watch response's events (in revision order); returns how many changed
    /// what is served. `revision` is the response's header revision.
    pub fn apply(&mut self, dec: &Decoder, events: &[Kv], revision: u64) -> usize {
        let mut n = 0;
        for ev in events {
            let Some((kind, id)) = dec.layout.parse(&ev.key) else {
                continue;
            };
            let slot = (kind, id);
            if self
                .items
                .get(&slot)
                .is_some_and(|r| r.mod_rev >= ev.mod_rev)
            {
                continue; // seen already (an overlap after a reconnect or re-list)
            }
            if ev.value.is_none() {
                if self.items.remove(&slot).is_some() {
                    self.push(slot.0, slot.1, None, ev.mod_rev);
                    n += 1;
                }
                continue;
            }
            match dec.check(ev) {
                Item::Valid(r) => {
                    self.items.insert(slot.clone(), r.clone());
                    self.push(slot.0, slot.1, Some(r), ev.mod_rev);
                    n += 1;
                }
                Item::Invalid(e) => tracing::error!("{e}; the previous value (if any) stays in service"),
                Item::Ignored => {}
            }
        }
        let last = events.iter().map(|e| e.mod_rev).max().unwrap_or(0);
        self.revision = self.revision.max(last).max(revision);
        n
    }

    /// Makes the copy equal etcd's content at `revision` (`kvs`: every key under the
    /// prefix): unchanged items are kept untouched, changed ones re-validated (an invalid new
    /// value keeps the previous one), missing ones removed. Returns the number of changes.
    pub fn relist(&mut self, dec: &Decoder, kvs: &[Kv], revision: u64) -> usize {
        if revision < self.revision {
            // etcd went back in time (restored from a backup): start over from its state.
            tracing::warn!(
                from = self.revision,
                to = revision,
                "etcd's revision went backwards; reloading everything"
            );
            let old = std::mem::take(&mut self.items);
            self.log = ChangeLog::new(revision);
            self.revision = revision;
            for kv in kvs {
                match dec.check(kv) {
                    Item::Valid(r) => {
                        self.items.insert((r.kind, r.id.clone()), r);
                    }
                    Item::Invalid(e) => {
                        tracing::error!("{e}");
                        if let Some((k, id)) = dec.layout.parse(&kv.key)
                            && let Some(prev) = old.get(&(k, id.clone()))
                        {
                            self.items.insert((k, id), prev.clone());
                        }
                    }
                    Item::Ignored => {}
                }
            }
            return self.items.len() + old.len();
        }
        let mut seen = std::collections::HashSet::new();
        let mut n = 0;
        for kv in kvs {
            let Some(slot) = dec.layout.parse(&kv.key) else {
                continue;
            };
            seen.insert(slot.clone());
            if self
                .items
                .get(&slot)
                .is_some_and(|r| r.mod_rev == kv.mod_rev)
            {
                continue;
            }
            match dec.check(kv) {
                Item::Valid(r) => {
                    self.items.insert(slot.clone(), r.clone());
                    self.push(slot.0, slot.1, Some(r), revision);
                    n += 1;
                }
                Item::Invalid(e) => tracing::error!("{e}; the previous value (if any) stays in service"),
                Item::Ignored => {}
            }
        }
        let gone: Vec<_> = self
            .items
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for slot in gone {
            self.items.remove(&slot);
            self.push(slot.0, slot.1, None, revision);
            n += 1;
        }
        self.revision = self.revision.max(revision);
        n
    }

    /// Forgets the changes so far (after the initial load, which nobody follows).
    pub fn reset_log(&mut self) {
        self.log = ChangeLog::new(self.revision);
    }

    fn push(&mut self, kind: Kind, id: String, record: Option<Record>, revision: u64) {
        self.log.push(Change {
            revision,
            kind,
            id,
            record,
        });
    }

    /// Everything served now, in a stable order.
    pub fn snapshot(&self) -> StoreSnapshot {
        let mut records: Vec<Record> = self.items.values().cloned().collect();
        records.sort_by(|a, b| (a.kind, a.create_rev, &a.id).cmp(&(b.kind, b.create_rev, &b.id)));
        StoreSnapshot {
            revision: self.revision,
            records,
        }
    }

    /// The changes after `rev`; `None` when they are not all kept (or `rev` is ahead of this
    /// copy, after etcd went back in time): the follower then takes a whole snapshot.
    pub fn changes_since(&self, rev: u64) -> Option<Vec<Change>> {
        if rev > self.revision {
            return None;
        }
        self.log.since(rev)
    }
}
