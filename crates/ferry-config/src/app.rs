//! `conf/config.yaml` in APISIX's shape: the keys Ferry uses, `${{VAR}}` environment references,
//! and a list of APISIX keys that Ferry ignores (reported once, never an error).

use crate::cluster::{DataEncryption, EtcdConf, RawDataEncryption, RawEtcd, Role};
use crate::limits::TimeValue;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default access-log format, as APISIX ships it.
pub const DEFAULT_ACCESS_LOG_FORMAT: &str = "$remote_addr - $remote_user [$time_local] $http_host \"$request\" $status $body_bytes_sent $request_time \"$http_referer\" \"$http_user_agent\" $upstream_addr $upstream_status $upstream_response_time \"$upstream_scheme://$upstream_host$upstream_uri\"";

/// Where routes and services live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigProvider {
    /// SQLite in the data dir (Ferry's default).
    Embedded,
    Etcd,
    /// Standalone, API-driven: `PUT /apisix/admin/configs` sets the whole document.
    Yaml,
    /// Standalone, file-driven (`deployment.role: data_plane`): `apisix.yaml` (or
    /// `apisix.json` when `json`) next to config.yaml is the configuration.
    File {
        json: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRole {
    Admin,
    Viewer,
}

#[derive(Debug, Clone)]
pub struct AdminKey {
    pub name: String,
    pub key: String,
    pub role: AdminRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEscape {
    /// nginx's default: `"`, `\` and control bytes as `\xHH`.
    Default,
    /// JSON string escaping.
    Json,
    None,
}

#[derive(Debug, Clone)]
pub struct AccessLogConf {
    pub enabled: bool,
    /// File path, relative to the working directory; `/dev/stdout` works.
    pub path: PathBuf,
    pub format: String,
    pub escape: LogEscape,
}

/// Ferry's settings, resolved from config.yaml and defaults.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub node_listen: Vec<SocketAddr>,
    pub admin_enabled: bool,
    pub admin_listen: SocketAddr,
    pub admin_keys: Vec<AdminKey>,
    /// `deployment.admin.allow_admin`: CIDRs allowed to reach the Admin API (empty: all).
    pub allow_admin: Vec<ipnet::IpNet>,
    pub config_provider: ConfigProvider,
    /// `deployment.role`.
    pub role: Role,
    /// `deployment.etcd` (used when `config_provider` is etcd).
    pub etcd: EtcdConf,
    /// `apisix.data_encryption` (applies to values stored in etcd).
    pub data_encryption: DataEncryption,
    pub access_log: AccessLogConf,
    /// Request-body limit for the data plane, bytes (0: unlimited).
    pub client_max_body_size: u64,
    /// Largest request head (request line plus headers) accepted, bytes.
    pub max_header_size: usize,
    /// Client timeouts and the connection cap.
    pub client: crate::limits::ClientLimits,
    /// `ferry.upstream_max_streams`: requests one upstream connection carries (HTTP/2
    /// streams) before the next go to another connection.
    pub upstream_max_streams: usize,
    pub data_dir: PathBuf,
    pub drain_timeout: Duration,
    /// `apisix.ssl.ssl_trusted_certificate`: extra CA certificates (PEM) for upstream TLS.
    pub trusted_ca: Option<PathBuf>,
    /// `apisix.ssl`: the TLS listeners of the data plane.
    pub ssl: SslConf,
    /// `plugin_attr.prometheus.export_addr` (None: `enable_export_server: false`).
    pub prometheus_export: Option<SocketAddr>,
    /// `plugin_attr.prometheus.export_uri`.
    pub prometheus_uri: String,
    /// `ferry.worker_threads`: data-plane threads (default: one per CPU).
    pub worker_threads: Option<usize>,
    /// `ferry.resolve`: upstream host → address overrides, like curl's `--resolve`.
    pub resolve: Vec<(String, SocketAddr)>,
    /// `apisix.disable_upstream_healthcheck`: no active health checks (ai-proxy-multi).
    pub disable_upstream_healthcheck: bool,
    /// APISIX keys present in the file that Ferry does not use.
    pub ignored_keys: Vec<String>,
}

/// `apisix.ssl`: the data plane's TLS listeners; certificates come from the `ssls` resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslConf {
    pub enabled: bool,
    pub listen: Vec<SocketAddr>,
    /// The name used when a client sends no SNI.
    pub fallback_sni: Option<String>,
    /// `TLSv1.2`, `TLSv1.3`.
    pub protocols: Vec<String>,
}

impl Default for SslConf {
    fn default() -> Self {
        SslConf {
            enabled: true,
            listen: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9443)],
            fallback_sni: None,
            protocols: vec!["TLSv1.2".into(), "TLSv1.3".into()],
        }
    }
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            node_listen: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9080)],
            admin_enabled: true,
            admin_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180),
            admin_keys: Vec::new(),
            allow_admin: Vec::new(),
            config_provider: ConfigProvider::Embedded,
            role: Role::Traditional,
            etcd: EtcdConf::default(),
            data_encryption: DataEncryption::default(),
            access_log: AccessLogConf {
                enabled: true,
                path: PathBuf::from("logs/access.log"),
                format: DEFAULT_ACCESS_LOG_FORMAT.to_string(),
                escape: LogEscape::Default,
            },
            client_max_body_size: 64 * 1024 * 1024,
            max_header_size: 64 * 1024,
            client: crate::limits::ClientLimits::default(),
            upstream_max_streams: 100,
            data_dir: PathBuf::from("data"),
            drain_timeout: Duration::from_secs(10),
            trusted_ca: None,
            ssl: SslConf::default(),
            prometheus_export: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9091)),
            prometheus_uri: "/apisix/prometheus/metrics".into(),
            worker_threads: None,
            resolve: Vec::new(),
            disable_upstream_healthcheck: false,
            ignored_keys: Vec::new(),
        }
    }
}

// ---- raw YAML shape -------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct Raw {
    #[serde(default)]
    apisix: RawApisix,
    #[serde(default)]
    plugin_attr: RawPluginAttr,
    #[serde(default)]
    deployment: RawDeployment,
    #[serde(default)]
    nginx_config: RawNginx,
    #[serde(default)]
    ferry: RawFerry,
}

#[derive(Deserialize, Default)]
struct RawApisix {
    node_listen: Option<NodeListen>,
    enable_admin: Option<bool>,
    disable_upstream_healthcheck: Option<bool>,
    ssl: Option<RawSsl>,
    data_encryption: Option<RawDataEncryption>,
}

#[derive(Deserialize, Default)]
struct RawPluginAttr {
    prometheus: Option<RawPrometheus>,
}

#[derive(Deserialize)]
struct RawPrometheus {
    export_uri: Option<String>,
    enable_export_server: Option<bool>,
    export_addr: Option<ListenAddr>,
}

#[derive(Deserialize)]
struct RawSsl {
    ssl_trusted_certificate: Option<PathBuf>,
    enable: Option<bool>,
    listen: Option<Vec<RawSslListen>>,
    fallback_sni: Option<String>,
    ssl_protocols: Option<String>,
    /// Accepted for compatibility: rustls offers its own modern suites.
    #[allow(dead_code)]
    ssl_ciphers: Option<String>,
    #[allow(dead_code)]
    ssl_session_tickets: Option<bool>,
}

#[derive(Deserialize)]
struct RawSslListen {
    ip: Option<IpAddr>,
    port: Option<u16>,
    #[allow(dead_code)]
    enable_http3: Option<bool>,
    enable_http2: Option<serde_yaml_ng::Value>,
}

/// `apisix.node_listen`: a port, or a list of ports and `{ip, port}` maps.
enum NodeListen {
    Port(u16),
    List(Vec<ListenItem>),
}

enum ListenItem {
    Port(u16),
    Addr(ListenAddr),
}

const NODE_LISTEN_EXPECTED: &str = "a port (9080), a list of ports ([9080, 9081]) or a list of {ip, port} maps ([{ip: 127.0.0.1, port: 9080}])";

fn port<E: serde::de::Error>(v: u64) -> Result<u16, E> {
    u16::try_from(v)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| E::custom(format!("port {v} is out of range (1-65535)")))
}

impl<'de> Deserialize<'de> for NodeListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NodeListen;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(NODE_LISTEN_EXPECTED)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<NodeListen, E> {
                port(v).map(NodeListen::Port)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<NodeListen, E> {
                port(u64::try_from(v).unwrap_or(0)).map(NodeListen::Port)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<NodeListen, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = a.next_element::<ListenItem>()? {
                    out.push(item);
                }
                Ok(NodeListen::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ListenItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ListenItem;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port (9080) or an {ip, port} map ({ip: 127.0.0.1, port: 9080})")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ListenItem, E> {
                port(v).map(ListenItem::Port)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ListenItem, E> {
                port(u64::try_from(v).unwrap_or(0)).map(ListenItem::Port)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<ListenItem, A::Error> {
                ListenAddr::deserialize(serde::de::value::MapAccessDeserializer::new(a))
                    .map(ListenItem::Addr)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct ListenAddr {
    ip: Option<IpAddr>,
    port: u16,
    #[serde(default)]
    #[allow(dead_code)]
    enable_http2: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RawDeployment {
    role: Option<String>,
    role_traditional: Option<RawRoleTraditional>,
    role_data_plane: Option<RawRoleTraditional>,
    role_control_plane: Option<RawRoleTraditional>,
    etcd: Option<RawEtcd>,
    #[serde(default)]
    admin: RawAdmin,
}

#[derive(Deserialize)]
struct RawRoleTraditional {
    config_provider: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawAdmin {
    admin_key: Option<Vec<RawAdminKey>>,
    admin_listen: Option<ListenAddr>,
    allow_admin: Option<Vec<String>>,
    #[allow(dead_code)]
    admin_key_required: Option<bool>,
}

#[derive(Deserialize)]
struct RawAdminKey {
    name: Option<String>,
    key: Option<String>,
    role: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawNginx {
    #[serde(default)]
    http: RawNginxHttp,
}

#[derive(Deserialize, Default)]
struct RawNginxHttp {
    enable_access_log: Option<bool>,
    access_log: Option<String>,
    access_log_format: Option<String>,
    access_log_format_escape: Option<String>,
    client_max_body_size: Option<SizeValue>,
    client_header_timeout: Option<TimeValue>,
    client_body_timeout: Option<TimeValue>,
    send_timeout: Option<TimeValue>,
    keepalive_timeout: Option<TimeValue>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Num(u64),
    Text(String),
}

impl SizeValue {
    fn resolve(self, key: &str) -> Result<u64, ConfigError> {
        match self {
            SizeValue::Num(n) => Ok(n),
            SizeValue::Text(t) => parse_size(&t).ok_or_else(|| {
                ConfigError(format!(
                    "{key}: invalid size \"{t}\" (e.g. 1048576, 512k, 64m, 1g)"
                ))
            }),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFerry {
    data_dir: Option<PathBuf>,
    drain_timeout_ms: Option<u64>,
    max_header_size: Option<usize>,
    worker_threads: Option<usize>,
    max_connections: Option<usize>,
    max_sse_event_size: Option<SizeValue>,
    upstream_max_streams: Option<usize>,
    /// `host: ip:port`, e.g. `api.openai.com: 127.0.0.1:8443`.
    resolve: Option<std::collections::BTreeMap<String, SocketAddr>>,
}

/// A config error, rendered with the file (and line/column when known).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl AppConfig {
    /// Loads a config file; `None` means defaults (no file).
    pub fn load(path: Option<&Path>) -> Result<AppConfig, ConfigError> {
        let Some(path) = path else {
            return Ok(AppConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses config.yaml text (after `${{VAR}}` substitution).
    pub fn parse(text: &str) -> Result<AppConfig, ConfigError> {
        let text = substitute_env(text, |k| std::env::var(k).ok())?;
        if text.trim().is_empty() {
            return Ok(AppConfig::default());
        }
        let mut ignored = Vec::new();
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        let raw: Raw =
            serde_ignored::deserialize(de, |p| ignored.push(p.to_string().replace(".?", "")))
                .map_err(|e| ConfigError(yaml_error(&e)))?;
        let mut cfg = AppConfig {
            ignored_keys: ignored,
            ..AppConfig::default()
        };
        cfg.apply(raw)?;
        Ok(cfg)
    }

    fn apply(&mut self, raw: Raw) -> Result<(), ConfigError> {
        let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        if let Some(nl) = raw.apisix.node_listen {
            self.node_listen = match nl {
                NodeListen::Port(p) => vec![SocketAddr::new(unspecified, p)],
                NodeListen::List(items) => items
                    .into_iter()
                    .map(|i| match i {
                        ListenItem::Port(p) => SocketAddr::new(unspecified, p),
                        ListenItem::Addr(a) => SocketAddr::new(a.ip.unwrap_or(unspecified), a.port),
                    })
                    .collect(),
            };
            if self.node_listen.is_empty() {
                return Err(ConfigError(
                    "apisix.node_listen: needs at least one port".into(),
                ));
            }
        }
        if let Some(ssl) = raw.apisix.ssl {
            self.trusted_ca = ssl.ssl_trusted_certificate;
            if let Some(e) = ssl.enable {
                self.ssl.enabled = e;
            }
            if let Some(items) = ssl.listen {
                let mut out = Vec::new();
                for (i, l) in items.into_iter().enumerate() {
                    if l.enable_http2.is_some() {
                        return Err(ConfigError(format!(
                            "apisix.ssl.listen[{i}].enable_http2: port-level enable_http2 is not supported; use apisix.enable_http2"
                        )));
                    }
                    out.push(SocketAddr::new(
                        l.ip.unwrap_or(unspecified),
                        l.port.unwrap_or(9443),
                    ));
                }
                self.ssl.listen = out;
            }
            if let Some(f) = ssl.fallback_sni {
                self.ssl.fallback_sni = Some(f);
            }
            if let Some(p) = ssl.ssl_protocols {
                self.ssl.protocols = p.split_whitespace().map(String::from).collect();
                for n in &self.ssl.protocols {
                    if !matches!(n.as_str(), "TLSv1.2" | "TLSv1.3") {
                        return Err(ConfigError(format!(
                            "apisix.ssl.ssl_protocols: {n} is not supported (Ferry speaks TLSv1.2 and TLSv1.3)"
                        )));
                    }
                }
                if self.ssl.protocols.is_empty() {
                    return Err(ConfigError("apisix.ssl.ssl_protocols: empty".into()));
                }
            }
        }
        if let Some(p) = raw.plugin_attr.prometheus {
            if let Some(u) = p.export_uri {
                self.prometheus_uri = u;
            }
            if let Some(a) = p.export_addr {
                self.prometheus_export = Some(SocketAddr::new(
                    a.ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    a.port,
                ));
            }
            if p.enable_export_server == Some(false) {
                self.prometheus_export = None;
            }
        }
        if let Some(d) = raw.apisix.disable_upstream_healthcheck {
            self.disable_upstream_healthcheck = d;
        }
        if let Some(e) = raw.apisix.enable_admin {
            self.admin_enabled = e;
        }
        if let Some(d) = raw.apisix.data_encryption {
            self.data_encryption = d.resolve()?;
        }
        let has_etcd = raw.deployment.etcd.is_some();
        if let Some(e) = raw.deployment.etcd {
            self.etcd = e.resolve(std::env::var("APISIX_DEPLOYMENT_ETCD_HOST").ok())?;
        } else if let Ok(env) = std::env::var("APISIX_DEPLOYMENT_ETCD_HOST") {
            self.etcd = RawEtcd::default().resolve(Some(env))?;
        }
        let provider = |section: Option<RawRoleTraditional>,
                        key: &str|
         -> Result<Option<String>, ConfigError> {
            match section {
                Some(s) => Ok(s.config_provider),
                None => Err(ConfigError(format!(
                    "invalid deployment {key} configuration: property \"role_{key}\" is required"
                ))),
            }
        };
        match raw.deployment.role.as_deref() {
            None | Some("traditional") => {
                self.role = Role::Traditional;
                let p = raw
                    .deployment
                    .role_traditional
                    .and_then(|r| r.config_provider);
                self.config_provider = match p.as_deref() {
                    Some("embedded") => ConfigProvider::Embedded,
                    Some("etcd") => ConfigProvider::Etcd,
                    Some("yaml") => ConfigProvider::Yaml,
                    None if has_etcd => ConfigProvider::Etcd,
                    None => ConfigProvider::Embedded,
                    Some(other) => {
                        return Err(ConfigError(format!(
                            "deployment.role_traditional.config_provider: unknown provider \"{other}\" (expected embedded, etcd or yaml)"
                        )));
                    }
                };
            }
            Some("control_plane") => {
                self.role = Role::ControlPlane;
                self.config_provider = match provider(
                    raw.deployment.role_control_plane,
                    "control_plane",
                )?
                .as_deref()
                {
                    Some("etcd") | None => ConfigProvider::Etcd,
                    Some(other) => {
                        return Err(ConfigError(format!(
                            "deployment.role_control_plane.config_provider: \"{other}\" is not supported (a control plane needs etcd)"
                        )));
                    }
                };
                self.admin_enabled = true;
            }
            Some("data_plane") => {
                self.role = Role::DataPlane;
                self.config_provider = match provider(raw.deployment.role_data_plane, "data_plane")?
                    .as_deref()
                {
                    Some("yaml") => ConfigProvider::File { json: false },
                    Some("json") => ConfigProvider::File { json: true },
                    Some("etcd") | None => ConfigProvider::Etcd,
                    Some(other) => {
                        return Err(ConfigError(format!(
                            "deployment.role_data_plane.config_provider: unknown provider \"{other}\" (expected yaml, json or etcd)"
                        )));
                    }
                };
                if self.config_provider == ConfigProvider::Etcd {
                    // A data plane never opens the Admin API, whatever the file says.
                    self.admin_enabled = false;
                }
            }
            Some(other) => {
                return Err(ConfigError(format!(
                    "deployment.role: unknown role \"{other}\" (expected traditional, control_plane or data_plane)"
                )));
            }
        }
        let admin = raw.deployment.admin;
        if let Some(l) = admin.admin_listen {
            self.admin_listen =
                SocketAddr::new(l.ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), l.port);
        }
        if let Some(allow) = admin.allow_admin {
            self.allow_admin = allow
                .iter()
                .map(|s| crate::expr::parse_net(s))
                .collect::<Result<_, _>>()
                .map_err(|e| ConfigError(format!("deployment.admin.allow_admin: {e}")))?;
        }
        for (i, k) in admin.admin_key.unwrap_or_default().into_iter().enumerate() {
            let role = match k.role.as_deref().unwrap_or("admin") {
                "admin" => AdminRole::Admin,
                "viewer" => AdminRole::Viewer,
                other => {
                    return Err(ConfigError(format!(
                        "deployment.admin.admin_key[{i}].role: unknown role \"{other}\" (expected admin or viewer)"
                    )));
                }
            };
            let key = k.key.unwrap_or_default();
            // An empty key means "generate one", as APISIX does.
            if key.is_empty() {
                continue;
            }
            self.admin_keys.push(AdminKey {
                name: k.name.unwrap_or_else(|| format!("key{i}")),
                key,
                role,
            });
        }
        let http = raw.nginx_config.http;
        if let Some(e) = http.enable_access_log {
            self.access_log.enabled = e;
        }
        if let Some(p) = http.access_log {
            if p == "off" {
                self.access_log.enabled = false;
            } else {
                self.access_log.path = PathBuf::from(p);
            }
        }
        if let Some(f) = http.access_log_format {
            self.access_log.format = f;
        }
        if let Some(e) = http.access_log_format_escape {
            self.access_log.escape = match e.as_str() {
                "default" => LogEscape::Default,
                "json" => LogEscape::Json,
                "none" => LogEscape::None,
                other => {
                    return Err(ConfigError(format!(
                        "nginx_config.http.access_log_format_escape: unknown value \"{other}\" (expected default, json or none)"
                    )));
                }
            };
        }
        if let Some(s) = http.client_max_body_size {
            self.client_max_body_size = s.resolve("nginx_config.http.client_max_body_size")?;
        }
        let time = |v: Option<TimeValue>, key: &str, into: &mut Duration| {
            if let Some(v) = v {
                *into = v
                    .resolve(&format!("nginx_config.http.{key}"))
                    .map_err(ConfigError)?;
            }
            Ok::<(), ConfigError>(())
        };
        let c = &mut self.client;
        time(
            http.client_header_timeout,
            "client_header_timeout",
            &mut c.header_timeout,
        )?;
        time(
            http.client_body_timeout,
            "client_body_timeout",
            &mut c.body_timeout,
        )?;
        time(http.send_timeout, "send_timeout", &mut c.send_timeout)?;
        time(
            http.keepalive_timeout,
            "keepalive_timeout",
            &mut c.keepalive_timeout,
        )?;
        for (d, key) in [
            (c.header_timeout, "client_header_timeout"),
            (c.body_timeout, "client_body_timeout"),
            (c.send_timeout, "send_timeout"),
        ] {
            if d.is_zero() {
                return Err(ConfigError(format!(
                    "nginx_config.http.{key}: must be more than 0"
                )));
            }
        }
        if let Some(n) = raw.ferry.max_connections {
            if n == 0 {
                return Err(ConfigError(
                    "ferry.max_connections: must be at least 1".into(),
                ));
            }
            self.client.max_connections = n;
        }
        if let Some(n) = raw.ferry.upstream_max_streams {
            if n == 0 {
                return Err(ConfigError(
                    "ferry.upstream_max_streams: must be at least 1".into(),
                ));
            }
            self.upstream_max_streams = n;
        }
        if let Some(s) = raw.ferry.max_sse_event_size {
            let n = s.resolve("ferry.max_sse_event_size")?;
            if n < 1024 {
                return Err(ConfigError(
                    "ferry.max_sse_event_size: must be at least 1024 bytes".into(),
                ));
            }
            self.client.max_sse_event = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(d) = raw.ferry.data_dir {
            self.data_dir = d;
        }
        if let Some(w) = raw.ferry.worker_threads {
            if w == 0 {
                return Err(ConfigError(
                    "ferry.worker_threads: must be at least 1".into(),
                ));
            }
            self.worker_threads = Some(w);
        }
        if let Some(r) = raw.ferry.resolve {
            self.resolve = r
                .into_iter()
                .map(|(h, a)| (h.to_ascii_lowercase(), a))
                .collect();
        }
        if let Some(ms) = raw.ferry.drain_timeout_ms {
            self.drain_timeout = Duration::from_millis(ms);
        }
        if let Some(h) = raw.ferry.max_header_size {
            if h < 1024 {
                return Err(ConfigError(
                    "ferry.max_header_size: must be at least 1024".into(),
                ));
            }
            self.max_header_size = h;
        }
        Ok(())
    }
}

/// nginx-style sizes: `1024`, `512k`, `64m`, `1g`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1024),
        b'm' | b'M' => (&s[..s.len() - 1], 1024 * 1024),
        b'g' | b'G' => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mul)
}

fn yaml_error(e: &serde_yaml_ng::Error) -> String {
    match e.location() {
        Some(l) => format!("line {} column {}: {e}", l.line(), l.column()),
        None => e.to_string(),
    }
}

/// Replaces `${{VAR}}` and `${{VAR:=default}}` as APISIX does; an unset variable without a
/// default is an error.
pub fn substitute_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after
            .find("}}")
            .ok_or_else(|| ConfigError("unterminated ${{ in config".into()))?;
        let inner = after[..end].trim();
        let (name, default) = match inner.split_once(":=") {
            Some((n, d)) => (n.trim(), Some(d.trim())),
            None => (inner, None),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ConfigError(format!(
                "invalid environment reference ${{{{{inner}}}}}"
            )));
        }
        match (lookup(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(ConfigError(format!(
                    "can't find environment variable {name}"
                )));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
