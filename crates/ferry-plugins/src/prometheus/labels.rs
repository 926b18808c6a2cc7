//! A small lock-free cache of metric handles by label value, read on every request without a
//! lock or an allocation and written only when a new label value appears; bounded, so clients
//! cannot create unbounded series.

use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex};

/// Handles by key, at most `cap` of them.
pub struct LabelCache<K, V> {
    entries: ArcSwap<Vec<(K, V)>>,
    /// Serialises inserts, so a handle is made only when it will be kept.
    insert: Mutex<()>,
    cap: usize,
}

impl<K: Clone + PartialEq, V: Clone> LabelCache<K, V> {
    pub fn new(cap: usize) -> Self {
        LabelCache {
            entries: ArcSwap::from_pointee(Vec::new()),
            insert: Mutex::new(()),
            cap,
        }
    }

    /// The handle for a key matching `is_key`, made by `make` when new; `None` when the cache
    /// is full and the key is not in it (then nothing is made).
    pub fn get_or_make(
        &self,
        is_key: impl Fn(&K) -> bool,
        key: impl FnOnce() -> K,
        make: impl FnOnce(&K) -> V,
    ) -> Option<V> {
        let find = |v: &Vec<(K, V)>| v.iter().find(|(k, _)| is_key(k)).map(|(_, v)| v.clone());
        if let Some(v) = find(&self.entries.load()) {
            return Some(v);
        }
        let _g = self.insert.lock().ok()?;
        let cur = self.entries.load_full();
        if let Some(v) = find(&cur) {
            return Some(v);
        }
        if cur.len() >= self.cap {
            return None;
        }
        let key = key();
        let value = make(&key);
        let mut next = Vec::with_capacity(cur.len() + 1);
        next.extend(cur.iter().cloned());
        next.push((key, value.clone()));
        self.entries.store(Arc::new(next));
        Some(value)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.load().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_stable() {
        let c: LabelCache<String, usize> = LabelCache::new(2);
        let get = |k: &str, v| c.get_or_make(|x| x == k, || k.to_string(), |_| v);
        assert_eq!(get("a", 1), Some(1));
        assert_eq!(get("a", 9), Some(1), "the first handle stays");
        assert_eq!(get("b", 2), Some(2));
        let mut made = false;
        assert_eq!(
            c.get_or_make(
                |x| x == "c",
                || "c".into(),
                |_| {
                    made = true;
                    3
                }
            ),
            None,
            "full"
        );
        assert!(!made, "nothing is made for a key that is not kept");
        assert_eq!(c.len(), 2);
    }
}
