//! Consumers at run time: the directory authentication plugins look keys up in (rebuilt by the
//! snapshot compiler whenever consumers, credentials or consumer groups change, and swapped
//! atomically), and the consumer a request was authenticated as.

use arc_swap::ArcSwap;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// One consumer as requests see it.
#[derive(Debug, PartialEq)]
pub struct Consumer {
    pub username: String,
    /// `labels.custom_id`, sent upstream as `X-Consumer-Custom-ID`.
    pub custom_id: Option<String>,
    pub group_id: Option<String>,
    /// The plugins the consumer brings to a request: its group's, overlaid by its own
    /// (authentication plugins left out: they already ran).
    pub plugins: Map<String, Value>,
}

/// The consumer a request was authenticated as, and through which credential.
#[derive(Debug, Clone)]
pub struct Attached {
    pub consumer: Arc<Consumer>,
    pub credential_id: Option<String>,
}

/// Every consumer and every authentication key, at one configuration revision.
#[derive(Debug, Default)]
pub struct ConsumerTable {
    consumers: HashMap<String, Arc<Consumer>>,
    /// auth plugin → key → the owning consumer and credential.
    keys: HashMap<String, HashMap<String, Attached>>,
}

impl ConsumerTable {
    pub fn new() -> ConsumerTable {
        ConsumerTable::default()
    }

    pub fn insert(&mut self, consumer: Consumer) -> Arc<Consumer> {
        let c = Arc::new(consumer);
        self.consumers.insert(c.username.clone(), c.clone());
        c
    }

    /// Registers `key` of auth plugin `plugin` as belonging to `consumer`.
    pub fn add_key(
        &mut self,
        plugin: &str,
        key: String,
        consumer: Arc<Consumer>,
        credential_id: Option<String>,
    ) {
        self.keys.entry(plugin.to_string()).or_default().insert(
            key,
            Attached {
                consumer,
                credential_id,
            },
        );
    }

    pub fn consumer(&self, username: &str) -> Option<&Arc<Consumer>> {
        self.consumers.get(username)
    }

    /// Who owns `key` for auth plugin `plugin` (exact, case-sensitive).
    pub fn by_key(&self, plugin: &str, key: &str) -> Option<&Attached> {
        self.keys.get(plugin)?.get(key)
    }

    pub fn len(&self) -> usize {
        self.consumers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.consumers.is_empty()
    }
}

/// The current consumer table, shared by the compiler (writer) and auth plugins (readers).
pub type Directory = Arc<ArcSwap<ConsumerTable>>;

/// An empty directory.
pub fn directory() -> Directory {
    Arc::new(ArcSwap::from_pointee(ConsumerTable::new()))
}
