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
        // The key gives the id, as in APISIX (a value put without one works).
        ferry_config::resource::set_id(kind, &id, &mut value);
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
    /// what is served. The copy is then complete up to the last event's revision (not the
    /// response header's: a later watch restarts right after the last event seen).
    pub fn apply(&mut self, dec: &Decoder, events: &[Kv]) -> usize {
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
                Item::Invalid(e) => {
                    tracing::error!("{e}; the previous value (if any) stays in service")
                }
                Item::Ignored => {}
            }
        }
        let last = events.iter().map(|e| e.mod_rev).max().unwrap_or(0);
        self.revision = self.revision.max(last);
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
                Item::Invalid(e) => {
                    tracing::error!("{e}; the previous value (if any) stays in service")
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_config::PluginCheckError;
    use ferry_config::cluster::DataEncryption;
    use serde_json::json;

    struct P;
    impl PluginChecker for P {
        fn check(&self, name: &str, c: &Value) -> Result<Value, PluginCheckError> {
            match name {
                "echo" | "key-auth" => Ok(c.clone()),
                _ => Err(PluginCheckError::Unknown),
            }
        }
        fn names(&self) -> Vec<String> {
            vec!["echo".into(), "key-auth".into()]
        }
        fn is_auth(&self, name: &str) -> bool {
            name == "key-auth"
        }
    }

    fn dec() -> Decoder {
        Decoder {
            layout: Layout::new("/apisix"),
            keyring: Keyring::new(&DataEncryption::default()),
            plugins: Arc::new(P),
        }
    }

    fn put(key: &str, v: &str, c: u64, m: u64) -> Kv {
        Kv {
            key: key.into(),
            value: Some(v.as_bytes().to_vec()),
            create_rev: c,
            mod_rev: m,
        }
    }

    fn del(key: &str, m: u64) -> Kv {
        Kv {
            key: key.into(),
            value: None,
            create_rev: 0,
            mod_rev: m,
        }
    }

    fn uri(m: &Mirror, id: &str) -> Option<String> {
        m.items
            .get(&(Kind::Routes, id.to_string()))
            .map(|r| r.value["uri"].as_str().unwrap_or("").to_string())
    }

    #[test]
    fn events_apply_once_in_order_and_invalid_values_keep_the_old_one() {
        let d = dec();
        let mut m = Mirror::default();
        let n = m.apply(
            &d,
            &[
                put(
                    "/apisix/routes/1",
                    r#"{"uri":"/a","plugins":{"echo":{}}}"#,
                    2,
                    2,
                ),
                put("/apisix/routes/", "init_dir", 3, 3),
                put("/apisix/routes/2", "not json", 4, 4),
            ],
        );
        assert_eq!((n, m.revision()), (1, 4));
        assert_eq!(uri(&m, "1").as_deref(), Some("/a"));
        assert_eq!(m.items[&(Kind::Routes, "1".into())].value["id"], "1");
        // an invalid new value: the old one stays
        m.apply(&d, &[put("/apisix/routes/1", r#"{"uri":5}"#, 2, 5)]);
        assert_eq!(uri(&m, "1").as_deref(), Some("/a"));
        // an unknown plugin is not served
        m.apply(
            &d,
            &[put(
                "/apisix/routes/3",
                r#"{"uri":"/c","plugins":{"nope":{}}}"#,
                6,
                6,
            )],
        );
        assert_eq!(uri(&m, "3"), None);
        // a replayed (older) event is ignored; a delete removes
        m.apply(
            &d,
            &[put(
                "/apisix/routes/1",
                r#"{"uri":"/old","plugins":{"echo":{}}}"#,
                2,
                2,
            )],
        );
        assert_eq!(uri(&m, "1").as_deref(), Some("/a"));
        m.apply(&d, &[del("/apisix/routes/1", 7)]);
        assert_eq!(uri(&m, "1"), None);
        let ch = m.changes_since(4).unwrap();
        assert_eq!(ch.len(), 1, "only the delete changed what is served");
        assert!(ch[0].record.is_none());
        assert_eq!(m.changes_since(99), None, "a follower ahead reloads");
    }

    #[test]
    fn relist_is_a_diff_without_resurrection() {
        let d = dec();
        let mut m = Mirror::default();
        m.relist(
            &d,
            &[
                put(
                    "/apisix/routes/keep",
                    r#"{"uri":"/k","plugins":{"echo":{}}}"#,
                    2,
                    2,
                ),
                put(
                    "/apisix/routes/gone",
                    r#"{"uri":"/g","plugins":{"echo":{}}}"#,
                    3,
                    3,
                ),
                put(
                    "/apisix/routes/upd",
                    r#"{"uri":"/u","plugins":{"echo":{}}}"#,
                    4,
                    4,
                ),
            ],
            4,
        );
        m.reset_log();
        let n = m.relist(
            &d,
            &[
                put(
                    "/apisix/routes/keep",
                    r#"{"uri":"/k","plugins":{"echo":{}}}"#,
                    2,
                    2,
                ),
                put(
                    "/apisix/routes/upd",
                    r#"{"uri":"/u2","plugins":{"echo":{}}}"#,
                    4,
                    8,
                ),
                put(
                    "/apisix/routes/new",
                    r#"{"uri":"/n","plugins":{"echo":{}}}"#,
                    9,
                    9,
                ),
            ],
            10,
        );
        assert_eq!(n, 3, "gone, upd and new; keep untouched");
        assert_eq!(uri(&m, "gone"), None);
        assert_eq!(uri(&m, "upd").as_deref(), Some("/u2"));
        assert_eq!(m.revision(), 10);
        let ch = m.changes_since(4).unwrap();
        assert_eq!(ch.len(), 3);
        assert!(ch.iter().all(|c| c.revision == 10 && c.id != "keep"));
        // nothing changed: nothing to rebuild
        let again: Vec<Kv> = vec![
            put(
                "/apisix/routes/keep",
                r#"{"uri":"/k","plugins":{"echo":{}}}"#,
                2,
                2,
            ),
            put(
                "/apisix/routes/upd",
                r#"{"uri":"/u2","plugins":{"echo":{}}}"#,
                4,
                8,
            ),
            put(
                "/apisix/routes/new",
                r#"{"uri":"/n","plugins":{"echo":{}}}"#,
                9,
                9,
            ),
        ];
        assert_eq!(m.relist(&d, &again, 11), 0);
        // etcd restored to an older revision: the copy follows, followers reload
        m.relist(&d, &again[..1], 5);
        assert_eq!(m.revision(), 5);
        assert_eq!(uri(&m, "new"), None);
        assert_eq!(m.changes_since(11), None);
    }

    #[test]
    fn credentials_and_secrets() {
        let d = dec();
        let mut m = Mirror::default();
        let sealed = d.keyring.encrypt("k1").unwrap();
        m.apply(
            &d,
            &[
                put("/apisix/consumers/jack", r#"{"username":"jack"}"#, 2, 2),
                put(
                    "/apisix/consumers/jack/credentials/c1",
                    &json!({"plugins": {"key-auth": {"key": sealed}}}).to_string(),
                    3,
                    3,
                ),
            ],
        );
        let c = &m.items[&(Kind::Credentials, "jack/credentials/c1".into())];
        assert_eq!(c.value["id"], "c1");
        assert_eq!(c.value["plugins"]["key-auth"]["key"], "k1", "decrypted");
        assert!(m.items.contains_key(&(Kind::Consumers, "jack".into())));
    }
}
