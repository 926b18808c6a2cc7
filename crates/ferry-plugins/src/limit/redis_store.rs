//! `policy: redis`: APISIX's `redis_*` settings, one multiplexed connection per (host, port,
//! database, credentials) shared by every plugin instance that uses it, and the fixed-window
//! update as one Lua script (EVALSHA, EVAL when the script is not cached yet), bounded by
//! `redis_timeout` so a slow or dead Redis never hangs a request.

use super::Window;
use ferry_core::shared::WeakCache;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// The `redis_*` fields of limit-count / ai-rate-limiting.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Hash)]
pub struct RedisConf {
    pub redis_host: String,
    pub redis_port: u16,
    pub redis_username: Option<String>,
    pub redis_password: Option<String>,
    pub redis_database: u32,
    /// Milliseconds, for connecting and for each command.
    pub redis_timeout: u64,
    /// TLS to Redis (`rediss://`), and whether its certificate is verified (system roots).
    pub redis_ssl: bool,
    pub redis_ssl_verify: bool,
}

impl RedisConf {
    fn url(&self) -> String {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let auth = match (&self.redis_username, &self.redis_password) {
            (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(p)),
            (None, Some(p)) => format!(":{}@", enc(p)),
            (Some(u), None) => format!("{}@", enc(u)),
            (None, None) => String::new(),
        };
        let host = if self.redis_host.contains(':') {
            format!("[{}]", self.redis_host)
        } else {
            self.redis_host.clone()
        };
        let (scheme, insecure) = match (self.redis_ssl, self.redis_ssl_verify) {
            (false, _) => ("redis", ""),
            (true, true) => ("rediss", ""),
            (true, false) => ("rediss", "#insecure"),
        };
        format!(
            "{scheme}://{auth}{host}:{}/{}{insecure}",
            self.redis_port, self.redis_database
        )
    }
}

/// Connections by settings, released with their last user.
#[derive(Default)]
pub struct RedisPool {
    conns: WeakCache<RedisConf, ConnectionManager>,
}

impl RedisPool {
    /// The shared connection for `conf`; it connects on first use and reconnects by itself.
    pub fn get(&self, conf: &RedisConf) -> Result<Arc<ConnectionManager>, String> {
        self.conns.get_or_try_insert(conf.clone(), || {
            if conf.redis_ssl {
                // The Redis client's TLS uses the process's default provider: Ferry's.
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            }
            let client = redis::Client::open(conf.url())
                .map_err(|e| format!("redis {}:{}: {e}", conf.redis_host, conf.redis_port))?;
            let timeout = Duration::from_millis(conf.redis_timeout);
            let cfg = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1);
            client
                .get_connection_manager_lazy(cfg)
                .map(Arc::new)
                .map_err(|e| format!("redis {}:{}: {e}", conf.redis_host, conf.redis_port))
        })
    }
}

/// Starts a window (`SET .. EX`) or adds to it (`INCRBY`); returns the count and the window's
/// remaining milliseconds.
static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local ttl = redis.call('pttl', KEYS[1])
if ttl < 0 then
  redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[1])
  return {tonumber(ARGV[2]), tonumber(ARGV[1]) * 1000}
end
return {redis.call('incrby', KEYS[1], ARGV[2]), ttl}
"#,
    )
});

pub async fn add(
    conn: &ConnectionManager,
    timeout: Duration,
    id: &str,
    cost: u64,
    window: Duration,
) -> Result<Window, String> {
    let mut conn = conn.clone();
    let key = format!("ferry:limit:v1:{id}");
    let mut invocation = SCRIPT.key(key);
    invocation.arg(window.as_secs().max(1)).arg(cost);
    let call = invocation.invoke_async::<(i64, i64)>(&mut conn);
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok((used, ttl))) => Ok(Window {
            used: used.max(0) as u64,
            reset: Duration::from_millis(ttl.max(0) as u64),
        }),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("redis timed out after {} ms", timeout.as_millis())),
    }
}
