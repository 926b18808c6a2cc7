//! Ferry's data plane: listener, router, plugin chain, request context, access log, and the
//! snapshot that ties them to the configuration store.

pub mod access_log;
pub mod body;
pub mod ctx;
pub mod error;
pub mod line_file;
pub mod log;
pub mod metrics;
pub mod plugin;
pub mod reload;
pub mod router;
pub mod server;
pub mod snapshot;

pub use plugin::Registry;
pub use server::{ServerConf, Shared};
