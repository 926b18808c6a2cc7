//! A small lock-free cache of metric handles by label value, read on every request without a
//! lock or an allocation and written only when a new label value appears; bounded, so clients
//! cannot create unbounded series.

use arc_swap::ArcSwap;
use std::sync::Arc;

/// Handles by key, at most `cap` of them.
pub struct LabelCache<K, V> {
    entries: ArcSwap<Vec<(K, V)>>,
    cap: usize,
}

impl<K: Clone + PartialEq, V: Clone> LabelCache<K, V> {
    pub fn new(cap: usize) -> Self {
        LabelCache {
            entries: ArcSwap::from_pointee(Vec::new()),
            cap,
        }
    }

    /// The handle for a key matching `is_key`, made by `make` when new; `None` when the cache
    /// is full and the key is not in it.
    pub fn get_or_make(
        &self,
        is_key: impl Fn(&K) -> bool,
        key: impl FnOnce() -> K,
        make: impl FnOnce(&K) -> V,
    ) -> Option<V> {
        if let Some((_, v)) = self.entries.load().iter().find(|(k, _)| is_key(k)) {
            return Some(v.clone());
        }
        let key = key();
        let value = make(&key);
        let mut out = None;
        self.entries.rcu(|cur| {
            if let Some((_, v)) = cur.iter().find(|(k, _)| *k == key) {
                out = Some(v.clone());
                return Arc::clone(cur);
            }
            if cur.len() >= self.cap {
                out = None;
                return Arc::clone(cur);
            }
            let mut next = Vec::with_capacity(cur.len() + 1);
            next.extend(cur.iter().cloned());
            next.push((key.clone(), value.clone()));
            out = Some(value.clone());
            Arc::new(next)
        });
        out
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
        assert_eq!(get("c", 3), None, "full");
        assert_eq!(c.len(), 2);
    }
}
