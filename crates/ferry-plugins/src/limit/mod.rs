//! What the limiting plugins share: fixed-window counters, kept in this process (`local`) or
//! in Redis (`redis`, so every Ferry node on that Redis shares one budget), addressed by an
//! identity derived from content (owner resource, configuration digest, key), never from a
//! node-local revision; and the `redis_*` settings as APISIX spells them.

pub mod count;
mod local;
mod redis_store;
pub mod tokens;

pub use local::LocalCounters;
pub use redis_store::{RedisConf, RedisPool};

use serde_json::Value;
use std::time::Duration;

/// The counters and Redis connections every limiting plugin shares (so one Redis setting is
/// one connection, whichever plugin uses it).
#[derive(Default)]
pub struct Limits {
    counters: std::sync::Arc<LocalCounters>,
    redis: RedisPool,
}

impl Limits {
    /// Where a configuration's counters live: here, or the Redis it names.
    pub fn store(&self, redis: Option<&RedisConf>) -> Result<Store, String> {
        Ok(match redis {
            None => Store::Local(self.counters.clone()),
            Some(r) => Store::Redis(self.redis.get(r)?, Duration::from_millis(r.redis_timeout)),
        })
    }
}

/// The resource a configuration came from; a route's own when the compiler did not say.
pub fn owner_key(owner: Option<&str>, route: &ferry_core::ctx::RouteInfo) -> String {
    owner
        .map(String::from)
        .unwrap_or_else(|| format!("/apisix/routes/{}", route.id))
}

/// Where counters live.
#[derive(Clone)]
pub enum Store {
    Local(std::sync::Arc<LocalCounters>),
    Redis(std::sync::Arc<redis::aio::ConnectionManager>, Duration),
}

/// A counter after an update: how much was used in the window and when it ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub used: u64,
    pub reset: Duration,
}

impl Store {
    /// Adds `cost` to the counter `id` (a new counter lasts `window`); `cost` 0 only reads.
    pub async fn add(&self, id: &str, cost: u64, window: Duration) -> Result<Window, String> {
        match self {
            Store::Local(c) => Ok(c.add(id, cost, window)),
            Store::Redis(conn, timeout) => redis_store::add(conn, *timeout, id, cost, window).await,
        }
    }
}

/// A stable 64-bit digest of a configuration (FNV-1a over its canonical JSON), so the same
/// configuration addresses the same counter on every node and after a restart.
pub fn digest(conf: &Value) -> String {
    format!("{:016x}", fnv1a(conf.to_string().as_bytes()))
}

pub use ferry_core::hash::fnv1a;

/// Seconds until the window ends, rounded up, at least 1.
pub fn reset_secs(reset: Duration) -> u64 {
    reset.as_millis().div_ceil(1000).max(1) as u64
}
