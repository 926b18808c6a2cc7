//! Cluster mode: the configuration store on etcd, in APISIX's key layout and value format, with
//! a watched in-memory mirror that the data plane reads without ever waiting on etcd.

pub mod crypt;
pub mod layout;
pub mod mirror;
mod pool;
mod store;
mod sync;

pub use store::{EtcdStore, Options};
