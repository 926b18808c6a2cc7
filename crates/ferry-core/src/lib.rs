//! Ferry's gateway core, the layer every plugin builds on: the request context (with the
//! resolved route as a read-only [`RouteInfo`] and typed [`LlmStats`]), response body types, the
//! one data-plane error type, the plugin contract (phases, factories, chains, registry), and
//! small shared pieces (weighted picking, time formats, line files, caches of shared resources, the upstream HTTP
//! clients shared by plugins and the gateway's upstream proxy). No server here.

pub mod body;
pub mod consumer;
pub mod ctx;
pub mod error;
pub mod fmt;
pub mod hash;
pub mod hash_key;
pub mod line_file;
pub mod pick;
pub mod plugin;
pub mod shared;
pub mod stats;
pub mod transport;

pub use ctx::{Ctx, RouteInfo};
pub use error::GatewayError;
pub use plugin::{Chain, Flow, Phase, Plugin, PluginFactory, Registry};
pub use stats::LlmStats;
