//! Ferry's data plane server on top of `ferry-core`: the listener, the router, the snapshot
//! compiled from the configuration store (kept in step change by change), the response wrapper
//! that runs the body-filter and log phases, and the access log. It knows plugins only through
//! the core's contract; the built-in ones live in `ferry-plugins`.

pub mod access_log;
pub mod conn;
pub mod logged;
pub mod reload;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;
pub mod uri_index;

pub use server::{ServerConf, Shared};
