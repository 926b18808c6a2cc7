//! The cluster keys of config.yaml: `deployment.role`, `deployment.etcd` and
//! `apisix.data_encryption`, in APISIX's shape and with APISIX's defaults.

use crate::app::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `deployment.role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Data plane and Admin API in one node (APISIX's default).
    Traditional,
    /// Admin API only; the data-plane port is not opened.
    ControlPlane,
    /// Data plane only; the Admin API is never opened and nothing is written to etcd.
    DataPlane,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Traditional => "traditional",
            Role::ControlPlane => "control_plane",
            Role::DataPlane => "data_plane",
        }
    }
}

/// `deployment.etcd`.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConf {
    /// Endpoints of one cluster, `http://` or `https://`.
    pub hosts: Vec<String>,
    /// Every key lives under it (no trailing slash).
    pub prefix: String,
    /// Bound of each etcd call on the Admin path.
    pub timeout: Duration,
    /// A watch idle this long is re-created from the same revision.
    pub watch_timeout: Duration,
    /// Attempts per endpoint at start-up.
    pub startup_retry: u32,
    pub user: Option<String>,
    pub password: Option<String>,
    pub tls: Option<EtcdTls>,
}

impl Default for EtcdConf {
    fn default() -> Self {
        EtcdConf {
            hosts: vec!["http://127.0.0.1:2379".into()],
            prefix: "/apisix".into(),
            timeout: Duration::from_secs(30),
            watch_timeout: Duration::from_secs(50),
            startup_retry: 2,
            user: None,
            password: None,
            tls: None,
        }
    }
}

/// `deployment.etcd.tls`.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub verify: bool,
    pub sni: Option<String>,
}

/// `apisix.data_encryption`: secrets stored encrypted in etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct DataEncryption {
    /// `enable_encrypt_fields`: plugin fields listed by APISIX as secrets are encrypted.
    pub fields: bool,
    /// AES keys (16 or 32 bytes), first one encrypts, each one is tried to decrypt.
    pub keyring: Vec<String>,
}

impl Default for DataEncryption {
    fn default() -> Self {
        DataEncryption {
            fields: true,
            keyring: vec!["qeddd145sfvddff3".into(), "edd1c9f0985e76a2".into()],
        }
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct RawEtcd {
    host: Option<Vec<String>>,
    prefix: Option<String>,
    timeout: Option<u64>,
    watch_timeout: Option<u64>,
    startup_retry: Option<u32>,
    user: Option<String>,
    password: Option<String>,
    tls: Option<RawEtcdTls>,
    // `resync_delay` and `health_check_timeout` are not read: Ferry's reconnect backoff (100 ms
    // doubling to 2 s) replaces both, and `ferry validate` lists them as ignored.
}

#[derive(Deserialize)]
struct RawEtcdTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    verify: Option<bool>,
    sni: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct RawDataEncryption {
    enable_encrypt_fields: Option<bool>,
    keyring: Option<Keyring>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Keyring {
    One(String),
    Many(Vec<String>),
}

impl RawEtcd {
    /// The resolved section; `env_hosts` is `APISIX_DEPLOYMENT_ETCD_HOST` (a JSON array).
    pub(crate) fn resolve(self, env_hosts: Option<String>) -> Result<EtcdConf, ConfigError> {
        let mut hosts = self
            .host
            .unwrap_or_else(|| vec!["http://127.0.0.1:2379".into()]);
        if let Some(env) = env_hosts {
            hosts = serde_json::from_str(&env).map_err(|e| {
                ConfigError(format!(
                    "APISIX_DEPLOYMENT_ETCD_HOST: expected a JSON array of URLs, e.g. [\"http://127.0.0.1:2379\"]: {e}"
                ))
            })?;
        }
        if hosts.is_empty() {
            return Err(ConfigError(
                "deployment.etcd.host: needs at least one endpoint".into(),
            ));
        }
        for h in &hosts {
            if !(h.starts_with("http://") || h.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "deployment.etcd.host: \"{h}\" must start with http:// or https://"
                )));
            }
        }
        let https = hosts.iter().filter(|h| h.starts_with("https://")).count();
        if https != 0 && https != hosts.len() {
            tracing::warn!("mixed protocols among etcd endpoints: {}", hosts.join(", "));
        }
        let prefix = self.prefix.unwrap_or_else(|| "/apisix".into());
        let prefix = prefix.trim_end_matches('/').to_string();
        if !prefix.starts_with('/') {
            return Err(ConfigError(format!(
                "deployment.etcd.prefix: \"{prefix}\" must start with /"
            )));
        }
        let secs = |v: Option<u64>, d: u64, key: &str| match v {
            Some(0) => Err(ConfigError(format!(
                "deployment.etcd.{key}: must be at least 1 (seconds)"
            ))),
            v => Ok(Duration::from_secs(v.unwrap_or(d))),
        };
        let tls = match self.tls {
            Some(t) => {
                if t.cert.is_some() != t.key.is_some() {
                    return Err(ConfigError(
                        "deployment.etcd.tls: cert and key go together".into(),
                    ));
                }
                Some(EtcdTls {
                    cert: t.cert,
                    key: t.key,
                    verify: t.verify.unwrap_or(true),
                    sni: t.sni,
                })
            }
            None => None,
        };
        Ok(EtcdConf {
            hosts,
            prefix,
            timeout: secs(self.timeout, 30, "timeout")?,
            watch_timeout: secs(self.watch_timeout, 50, "watch_timeout")?,
            startup_retry: self.startup_retry.unwrap_or(2).max(1),
            user: self.user,
            password: self.password,
            tls,
        })
    }
}

impl RawDataEncryption {
    pub(crate) fn resolve(self) -> Result<DataEncryption, ConfigError> {
        let mut d = DataEncryption::default();
        if let Some(f) = self.enable_encrypt_fields {
            d.fields = f;
        }
        if let Some(k) = self.keyring {
            d.keyring = match k {
                Keyring::One(s) => vec![s],
                Keyring::Many(v) => v,
            };
        }
        for k in &d.keyring {
            if k.len() != 16 && k.len() != 32 {
                return Err(ConfigError(format!(
                    "apisix.data_encryption.keyring: \"{k}\" is {} bytes; each key must be 16 (AES-128) or 32 (AES-256) bytes",
                    k.len()
                )));
            }
        }
        Ok(d)
    }
}
