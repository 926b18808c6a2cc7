//! The `ferry` binary: CLI, wiring of store, data plane and Admin API, signals, and graceful
//! shutdown.

mod admin_key;
mod metrics;
mod standalone_file;

/// jemalloc: chosen by measurement (bench/macro.sh) over glibc malloc and mimalloc.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand};
use ferry_admin::{AdminState, ConfigSource};
use ferry_config::app::{AppConfig, ConfigProvider};
use ferry_config::cluster::Role;
use ferry_config::store::{SqliteStore, Store};
use ferry_core::line_file;
use ferry_etcd::{EtcdStore, Options as EtcdOptions};
use ferry_gateway::access_log::{AccessLog, Template};
use ferry_gateway::snapshot::Compiler;
use ferry_gateway::{ServerConf, Shared, reload, server};
use ferry_plugins::transport::Transport;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry: an AI gateway with APISIX's ai-proxy contract"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (data plane on 9080, Admin API on 127.0.0.1:9180 by default).
    Serve {
        /// Config file in APISIX's config.yaml shape (default: conf/config.yaml if present).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a config file and exit 0 (valid) or 1 (with the reasons).
    Validate {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Also print the effective settings (file values over defaults; keys masked).
        #[arg(long)]
        print: bool,
    },
}

fn config_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        let p = PathBuf::from("conf/config.yaml");
        p.exists().then_some(p)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = std::env::var("FERRY_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.cmd {
        Cmd::Validate { config, print } => validate(config_path(config).as_deref(), print),
        Cmd::Serve { config } => {
            let path = config_path(config);
            // The thread count is needed before the runtime starts; errors are reported by serve.
            let threads = AppConfig::load(path.as_deref())
                .ok()
                .and_then(|c| c.worker_threads);
            let threads = threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            });
            // One worker: the single-threaded scheduler. Its one FIFO run queue is fair under
            // many connections, where the multi-threaded one's bounded local queue spills
            // tasks to a global queue it visits rarely (p99 at 256 connections: 15 ms
            // against 48 ms; docs/design.md).
            let mut builder = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(threads);
                b
            };
            let rt = match builder.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("ferry: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(serve(path)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ferry: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Everything `validate` and `serve` check before starting.
fn check(cfg: &AppConfig) -> Vec<String> {
    let mut errs = Vec::new();
    if let Err(e) = Template::compile(&cfg.access_log.format, cfg.access_log.escape) {
        errs.push(format!("nginx_config.http.access_log_format: {e}"));
    }
    errs
}

/// The settings Ferry runs with, one per line under APISIX's key names; admin keys masked.
fn effective(c: &AppConfig) -> String {
    let list = |v: Vec<String>| format!("[{}]", v.join(", "));
    let lines = [
        (
            "apisix.node_listen",
            list(c.node_listen.iter().map(|a| a.to_string()).collect()),
        ),
        ("apisix.enable_admin", c.admin_enabled.to_string()),
        ("deployment.admin.admin_listen", c.admin_listen.to_string()),
        (
            "deployment.admin.admin_key",
            list(
                c.admin_keys
                    .iter()
                    .map(|k| format!("{} ({:?}, ******)", k.name, k.role).to_lowercase())
                    .collect(),
            ),
        ),
        (
            "deployment.admin.allow_admin",
            list(c.allow_admin.iter().map(|n| n.to_string()).collect()),
        ),
        ("deployment.role", c.role.as_str().to_string()),
        (
            "deployment.config_provider",
            format!("{:?}", c.config_provider).to_lowercase(),
        ),
        ("deployment.etcd.host", list(c.etcd.hosts.clone())),
        ("deployment.etcd.prefix", c.etcd.prefix.clone()),
        (
            "deployment.etcd.timeout",
            c.etcd.timeout.as_secs().to_string(),
        ),
        (
            "nginx_config.http.enable_access_log",
            c.access_log.enabled.to_string(),
        ),
        (
            "nginx_config.http.access_log",
            c.access_log.path.display().to_string(),
        ),
        (
            "nginx_config.http.access_log_format",
            format!("{:?}", c.access_log.format),
        ),
        (
            "nginx_config.http.access_log_format_escape",
            format!("{:?}", c.access_log.escape).to_lowercase(),
        ),
        (
            "nginx_config.http.client_max_body_size",
            c.client_max_body_size.to_string(),
        ),
        ("ferry.max_header_size", c.max_header_size.to_string()),
        (
            "apisix.ssl.listen",
            if c.ssl.enabled {
                list(c.ssl.listen.iter().map(|a| a.to_string()).collect())
            } else {
                "off".into()
            },
        ),
        (
            "apisix.ssl.fallback_sni",
            c.ssl.fallback_sni.clone().unwrap_or_else(|| "-".into()),
        ),
        ("apisix.ssl.ssl_protocols", c.ssl.protocols.join(" ")),
        (
            "nginx_config.http.client_header_timeout",
            ms(c.client.header_timeout),
        ),
        (
            "nginx_config.http.client_body_timeout",
            ms(c.client.body_timeout),
        ),
        ("nginx_config.http.send_timeout", ms(c.client.send_timeout)),
        (
            "nginx_config.http.keepalive_timeout",
            ms(c.client.keepalive_timeout),
        ),
        (
            "ferry.max_connections",
            c.client.max_connections.to_string(),
        ),
        (
            "ferry.max_sse_event_size",
            c.client.max_sse_event.to_string(),
        ),
        (
            "apisix.ssl.ssl_trusted_certificate",
            c.trusted_ca
                .as_ref()
                .map_or("-".into(), |p| p.display().to_string()),
        ),
        (
            "plugin_attr.prometheus.export_addr",
            c.prometheus_export.map_or("off".into(), |a| a.to_string()),
        ),
        (
            "plugin_attr.prometheus.export_uri",
            c.prometheus_uri.clone(),
        ),
        ("ferry.data_dir", c.data_dir.display().to_string()),
        (
            "ferry.drain_timeout_ms",
            c.drain_timeout.as_millis().to_string(),
        ),
        (
            "ferry.worker_threads",
            c.worker_threads
                .map_or("one per CPU".into(), |n| n.to_string()),
        ),
        (
            "ferry.resolve",
            list(
                c.resolve
                    .iter()
                    .map(|(h, a)| format!("{h} -> {a}"))
                    .collect(),
            ),
        ),
    ];
    lines.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

fn validate(path: Option<&Path>, print: bool) -> ExitCode {
    let name = path.map_or("(defaults, no config file)".to_string(), |p| {
        p.display().to_string()
    });
    let cfg = match AppConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid: {e}");
            return ExitCode::FAILURE;
        }
    };
    let errs = check(&cfg);
    if errs.is_empty() {
        for k in &cfg.ignored_keys {
            eprintln!("note: {k} is not used by Ferry and is ignored");
        }
        println!("ok: {name}");
        if print {
            print!("{}", effective(&cfg));
        }
        ExitCode::SUCCESS
    } else {
        for e in errs {
            eprintln!("invalid: {name}: {e}");
        }
        ExitCode::FAILURE
    }
}

async fn serve(path: Option<PathBuf>) -> Result<(), String> {
    let started = Instant::now();
    let mut cfg = AppConfig::load(path.as_deref()).map_err(|e| e.to_string())?;
    if let Some(e) = check(&cfg).into_iter().next() {
        return Err(e);
    }
    if !cfg.ignored_keys.is_empty() {
        tracing::warn!(
            "ignoring config keys Ferry does not use: {}",
            cfg.ignored_keys.join(", ")
        );
    }
    // Plugin instances resolve their metric handles when built: the recorder comes first.
    let metrics = metrics::install()?;
    let transport = Arc::new(
        Transport::new(cfg.trusted_ca.as_deref(), cfg.resolve.clone())?
            .with_max_streams(cfg.upstream_max_streams),
    );
    let directory = ferry_core::consumer::directory();
    let registry = Arc::new(ferry_plugins::builtin_with(
        transport.clone(),
        directory.clone(),
        ferry_plugins::Settings {
            healthchecks: !cfg.disable_upstream_healthcheck,
        },
    ));
    let store: Arc<dyn Store> = if cfg.config_provider == ConfigProvider::Etcd {
        Arc::new(
            EtcdStore::connect(
                &cfg.etcd,
                EtcdOptions {
                    encryption: &cfg.data_encryption,
                    trusted_ca: cfg.trusted_ca.as_deref(),
                    plugins: registry.clone(),
                    writes: cfg.role != Role::DataPlane,
                },
            )
            .await?,
        )
    } else {
        Arc::new(SqliteStore::open(&cfg.data_dir).map_err(|e| e.to_string())?)
    };
    if cfg.admin_keys.is_empty() && cfg.admin_enabled {
        cfg.admin_keys
            .push(admin_key::load_or_create(&cfg.data_dir)?);
    }
    let access_log = if cfg.access_log.enabled {
        Some(AccessLog::start(&cfg.access_log)?)
    } else {
        None
    };
    let body = ferry_core::ctx::BodyLimits {
        max: cfg.client_max_body_size,
        timeout: cfg.client.body_timeout,
    };
    let shared = Shared::new(access_log, body, cfg.max_header_size);
    ferry_protocol::sse::set_max_event(cfg.client.max_sse_event);
    raise_open_files(cfg.client.max_connections);
    let source = match cfg.config_provider {
        ConfigProvider::Yaml => ConfigSource::StandaloneApi,
        ConfigProvider::File { json } => {
            let file = standalone_file::path_for(path.as_deref(), json);
            let plugins: Arc<dyn ferry_config::PluginChecker> = registry.clone();
            let first = std::fs::read(&file).ok();
            if let Err(e) =
                standalone_file::load(&file, json, store.as_ref(), plugins.as_ref()).await
            {
                tracing::error!(file = %file.display(), "configuration not loaded: {e}");
            }
            tokio::spawn(standalone_file::follow(
                file.clone(),
                json,
                store.clone(),
                plugins,
                first,
            ));
            ConfigSource::File(file)
        }
        _ => ConfigSource::Store,
    };
    shared.set_registry(registry.clone());
    let compiler = reload::load(
        Compiler::new(transport, directory),
        store.as_ref(),
        &registry,
    )
    .await
    .map_err(|e| e.to_string())?;
    shared.publish(compiler.snapshot());

    // A control plane only answers the Admin API.
    let node_listen = if cfg.role == Role::ControlPlane {
        Vec::new()
    } else {
        cfg.node_listen.clone()
    };
    let listeners = server::bind(&node_listen).await?;
    // TLS listeners (apisix.ssl), with certificates from the `ssls` resources by SNI.
    let tls_listen = if cfg.role == Role::ControlPlane || !cfg.ssl.enabled {
        Vec::new()
    } else {
        cfg.ssl.listen.clone()
    };
    let tls_listeners = server::bind(&tls_listen).await?;
    let tls = if tls_listen.is_empty() {
        None
    } else {
        let versions = ferry_gateway::tls::versions(&cfg.ssl.protocols)?;
        let resolver =
            ferry_gateway::tls::Resolver::new(shared.clone(), cfg.ssl.fallback_sni.clone());
        Some(ferry_gateway::tls::server_config(
            Arc::new(resolver),
            &versions,
        )?)
    };
    let export_listener = match cfg.prometheus_export {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| format!("cannot listen on {a} (prometheus export): {e}"))?,
        ),
        None => None,
    };
    let admin_listener = if cfg.admin_enabled {
        Some(
            tokio::net::TcpListener::bind(cfg.admin_listen)
                .await
                .map_err(|e| format!("cannot listen on {} (Admin API): {e}", cfg.admin_listen))?,
        )
    } else {
        None
    };

    tokio::spawn(reload::follow(
        store.clone(),
        shared.clone(),
        registry.clone(),
        compiler,
    ));
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            line_file::request_reopen();
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_task = admin_listener.map(|l| {
        let state = Arc::new(AdminState {
            store: store.clone(),
            plugins: registry.clone(),
            keys: cfg.admin_keys.clone(),
            allow: cfg.allow_admin.clone(),
            applied: Some(shared.applied()),
            source: source.clone(),
            checked_writes: Default::default(),
        });
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = ferry_admin::serve(l, state, stop).await {
                tracing::error!("Admin API stopped: {e}");
            }
        })
    });
    if let Some(l) = export_listener {
        let mut rx = stop_rx.clone();
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tokio::spawn(metrics::serve_export(
            l,
            cfg.prometheus_uri.clone(),
            metrics,
            shared.clone(),
            stop,
        ));
    }
    let addrs: Vec<String> = node_listen
        .iter()
        .map(|a| a.to_string())
        .chain(tls_listen.iter().map(|a| format!("{a} (TLS)")))
        .collect();
    let rt = tokio::runtime::Handle::current();
    let workers = match rt.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => {
            "1 worker thread (single-threaded scheduler)".to_string()
        }
        _ => format!("{} worker threads", rt.metrics().num_workers()),
    };
    eprintln!(
        "ferry {} ({}) listening on {} (admin {}), data dir {}, {workers}, started in {} ms",
        env!("CARGO_PKG_VERSION"),
        cfg.role.as_str(),
        if addrs.is_empty() {
            "no data-plane port".to_string()
        } else {
            addrs.join(", ")
        },
        if cfg.admin_enabled {
            cfg.admin_listen.to_string()
        } else {
            "off".into()
        },
        cfg.data_dir.display(),
        started.elapsed().as_millis()
    );
    let conf = ServerConf {
        max_header_size: cfg.max_header_size,
        drain_timeout: cfg.drain_timeout,
        client: cfg.client,
        tls,
    };
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("ferry: shutting down, draining in-flight requests");
        let _ = stop_tx.send(true);
    };
    let drained = server::serve(listeners, tls_listeners, shared, conf, shutdown).await;
    ferry_plugins::log::batch::flush_all(std::time::Duration::from_secs(5)).await;
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    if !drained {
        tracing::warn!("drain timeout reached; remaining connections were closed");
    }
    eprintln!("ferry: stopped");
    Ok(())
}

/// A duration as `ferry validate --print` shows it.
fn ms(d: std::time::Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Raises the open-files soft limit toward the hard one (as nginx's `worker_rlimit_nofile`), so
/// the connection cap can be reached; says so when it cannot.
fn raise_open_files(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let need = max_connections as u64 + 1024;
            if limit < need {
                tracing::warn!(
                    "open-files limit is {limit}: fewer than ferry.max_connections ({max_connections}) client connections fit with room for upstreams and files; raise the hard limit (ulimit -Hn) or lower ferry.max_connections"
                );
            }
        }
        Err(e) => tracing::warn!("cannot raise the open-files limit: {e}"),
    }
}
