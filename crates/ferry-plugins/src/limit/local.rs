//! Fixed-window counters in this process, sharded by identity so requests on different
//! counters do not contend; expired windows are dropped as they are met.

use super::Window;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 32;

/// Counters by identity.
pub struct LocalCounters {
    shards: Vec<Mutex<HashMap<String, (u64, Instant)>>>,
}

impl Default for LocalCounters {
    fn default() -> Self {
        LocalCounters {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl LocalCounters {
    /// Adds `cost` to `id`; a counter that is absent or expired starts a new window.
    pub fn add(&self, id: &str, cost: u64, window: Duration) -> Window {
        let i = (super::fnv1a(id.as_bytes()) as usize) % SHARDS;
        let now = Instant::now();
        let Ok(mut map) = self.shards[i].lock() else {
            return Window {
                used: 0,
                reset: window,
            };
        };
        if map.len() > 10_000 {
            map.retain(|_, (_, end)| *end > now);
        }
        let entry = match map.get_mut(id) {
            Some(e) => e,
            None => map.entry(id.to_string()).or_insert((0, now + window)),
        };
        if entry.1 <= now {
            *entry = (0, now + window);
        }
        entry.0 += cost;
        Window {
            used: entry.0,
            reset: entry.1 - now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_and_expire() {
        let c = LocalCounters::default();
        let w = Duration::from_millis(200);
        assert_eq!(c.add("a", 1, w).used, 1);
        assert_eq!(c.add("a", 1, w).used, 2);
        assert_eq!(c.add("b", 5, w).used, 5);
        assert_eq!(c.add("a", 0, w).used, 2, "cost 0 only reads");
        std::thread::sleep(Duration::from_millis(250));
        let r = c.add("a", 1, w);
        assert_eq!(r.used, 1, "a new window");
        assert!(r.reset <= w);
    }
}
