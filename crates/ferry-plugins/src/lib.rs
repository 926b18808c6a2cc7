//! Ferry's built-in plugins on the core's contract: `ai-proxy`, `ai-proxy-multi`, the loggers (`http-logger`,
//! `file-logger`, `kafka-logger`) with their shared batch processor and log entry, `prometheus`,
//! `request-id`, `key-auth`, `limit-count` and `ai-rate-limiting`. [`builtin`] is the registry.

pub mod ai_proxy;
pub mod ai_proxy_multi;
pub mod gcp;
pub mod kafka_logger;
mod kafka_quiet;
pub mod key_auth;
pub mod limit;
pub mod log;
pub mod loggers;
pub mod prometheus;
pub mod request_id;
pub use ferry_core::transport;

use ferry_core::consumer::Directory;
use ferry_core::plugin::Registry;
use std::sync::Arc;
use transport::Transport;

/// Settings of the built-in plugins from `config.yaml`.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Active health checks of `ai-proxy-multi` run (`apisix.disable_upstream_healthcheck`).
    pub healthchecks: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { healthchecks: true }
    }
}

/// The registry with every built-in plugin and default settings.
pub fn builtin(transport: Arc<Transport>, directory: Directory) -> Registry {
    builtin_with(transport, directory, Settings::default())
}

/// The registry with every built-in plugin; `transport` makes the upstream clients of
/// `ai-proxy`, `ai-proxy-multi` and `http-logger`; authentication plugins look consumers up in
/// `directory`.
pub fn builtin_with(
    transport: Arc<Transport>,
    directory: Directory,
    settings: Settings,
) -> Registry {
    let mut r = Registry::default();
    r.add(Arc::new(key_auth::Factory { directory }));
    let limits = Arc::new(limit::Limits::default());
    r.add(Arc::new(limit::count::Factory {
        limits: limits.clone(),
    }));
    r.add(Arc::new(limit::tokens::Factory { limits }));
    r.add(Arc::new(request_id::Factory));
    r.add(Arc::new(loggers::HttpFactory::new(transport.clone())));
    r.add(Arc::new(ai_proxy_multi::Factory {
        transport: transport.clone(),
        healthchecks: settings.healthchecks,
    }));
    r.add(Arc::new(ai_proxy::Factory { transport }));
    r.add(Arc::new(loggers::FileFactory::default()));
    r.add(Arc::new(kafka_logger::Factory::default()));
    r.add(Arc::new(prometheus::Factory));
    r
}
