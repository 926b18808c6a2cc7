//! The router's URI index: key → routes, split into shards that are shared between snapshots
//! and copied on write. A configuration write touches one shard per URI it changes, so its
//! cost does not grow with the number of routes; a lookup hashes the path once (foldhash) and
//! probes one shard.

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Shards per index: a write copies one of them (1/256 of the keys).
const SHARDS: usize = 256;

struct Slot<T> {
    key: Arc<str>,
    routes: Vec<Arc<T>>,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Slot {
            key: self.key.clone(),
            routes: self.routes.clone(),
        }
    }
}

/// Routes (`T`) by URI key (an exact path, or a prefix without its `*`).
pub struct UriIndex<T> {
    hasher: RandomState,
    shards: Vec<Arc<HashTable<Slot<T>>>>,
}

impl<T> Clone for UriIndex<T> {
    fn clone(&self) -> Self {
        UriIndex {
            hasher: self.hasher.clone(),
            shards: self.shards.clone(),
        }
    }
}

impl<T> Default for UriIndex<T> {
    fn default() -> Self {
        UriIndex {
            hasher: RandomState::default(),
            shards: (0..SHARDS).map(|_| Arc::new(HashTable::new())).collect(),
        }
    }
}

impl<T> UriIndex<T> {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(h: u64) -> usize {
        // The table uses the low bits; pick the shard from the high ones.
        (h >> 56) as usize % SHARDS
    }

    /// The routes stored under `key`.
    pub fn get(&self, key: &str) -> Option<&[Arc<T>]> {
        let h = self.hash(key);
        self.shards[Self::shard(h)]
            .find(h, |s| &*s.key == key)
            .map(|s| s.routes.as_slice())
    }

    /// Adds `route` under `key`; true when the key is new.
    pub fn insert(&mut self, key: &str, route: Arc<T>) -> bool {
        let h = self.hash(key);
        let table = Arc::make_mut(&mut self.shards[Self::shard(h)]);
        if let Some(slot) = table.find_mut(h, |s| &*s.key == key) {
            slot.routes.push(route);
            return false;
        }
        let hasher = self.hasher.clone();
        table.insert_unique(
            h,
            Slot {
                key: key.into(),
                routes: vec![route],
            },
            |s| hasher.hash_one(&*s.key),
        );
        true
    }

    /// Removes `route` (by identity) from `key`; true when the key has no route left.
    pub fn remove(&mut self, key: &str, route: &Arc<T>) -> bool {
        let h = self.hash(key);
        let shard = &mut self.shards[Self::shard(h)];
        if shard.find(h, |s| &*s.key == key).is_none() {
            return false;
        }
        let table = Arc::make_mut(shard);
        let Ok(mut entry) = table.find_entry(h, |s| &*s.key == key) else {
            return false;
        };
        entry.get_mut().routes.retain(|r| !Arc::ptr_eq(r, route));
        if entry.get().routes.is_empty() {
            entry.remove();
            return true;
        }
        false
    }
}
