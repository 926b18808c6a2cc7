//! Resources that plugin instances built from equal settings share (upstream clients, log
//! processors, open files): found by key while some instance holds them, and released with the
//! last instance that uses them, so nothing a deleted route needed stays alive.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

/// A map of weak references: an entry lives as long as someone holds its `Arc`.
pub struct WeakCache<K, V> {
    map: Mutex<HashMap<K, Weak<V>>>,
}

impl<K, V> Default for WeakCache<K, V> {
    fn default() -> Self {
        WeakCache {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V> WeakCache<K, V> {
    /// The live value for `key`, or a new one from `make` (dead entries are swept then).
    pub fn get_or_try_insert(
        &self,
        key: K,
        make: impl FnOnce() -> Result<Arc<V>, String>,
    ) -> Result<Arc<V>, String> {
        let mut map = self
            .map
            .lock()
            .map_err(|_| "shared resource cache poisoned".to_string())?;
        if let Some(v) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(v);
        }
        map.retain(|_, w| w.strong_count() > 0);
        let v = make()?;
        map.insert(key, Arc::downgrade(&v));
        Ok(v)
    }

    /// Every value still in use.
    pub fn live(&self) -> Vec<Arc<V>> {
        self.map
            .lock()
            .map(|m| m.values().filter_map(Weak::upgrade).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_while_held_released_after() {
        let c: WeakCache<&str, String> = WeakCache::default();
        let a = c
            .get_or_try_insert("k", || Ok(Arc::new("one".into())))
            .unwrap();
        let b = c
            .get_or_try_insert("k", || Ok(Arc::new("two".into())))
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(c.live().len(), 1);
        drop((a, b));
        assert!(c.live().is_empty());
        let d = c
            .get_or_try_insert("k", || Ok(Arc::new("three".into())))
            .unwrap();
        assert_eq!(*d, "three");
        assert!(c.get_or_try_insert("x", || Err("no".into())).is_err());
    }
}
