//! Prometheus metrics: the recorder, the names Ferry reports, and the text served on the export
//! listener (`plugin_attr.prometheus.export_addr`). Per-request metrics are recorded by the
//! `prometheus` plugin's log phase; gauges about the gateway itself are read at scrape time.

use ferry_gateway::Shared;
use ferry_plugins::log::batch;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::Ordering;

/// Request, upstream and gateway latencies (milliseconds).
const LATENCY_MS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0,
    60000.0,
];
/// The gateway's own share of a request (milliseconds): finer at the low end.
const OVERHEAD_MS: &[f64] = &[0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0];

/// Installs the process-wide recorder (once, at start-up).
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("ferry_gateway_overhead_ms".into()),
            OVERHEAD_MS,
        )
        .and_then(|b| b.set_buckets(LATENCY_MS))
        .and_then(|b| b.install_recorder())
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))
}

/// The exposition text: scrape-time gauges updated, then everything rendered.
pub fn render(handle: &PrometheusHandle, shared: &Shared) -> String {
    let snap = shared.snapshot.load();
    metrics::gauge!("ferry_config_revision").set(snap.revision as f64);
    let age = snap.built_wall.elapsed().map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!("ferry_config_snapshot_age_seconds").set(age);
    metrics::gauge!("ferry_routes").set(snap.router.len() as f64);
    for b in batch::live() {
        let name = b.name.clone();
        metrics::gauge!("ferry_logger_queue_depth", "logger" => name.clone())
            .set(b.stats.queued.load(Ordering::Relaxed) as f64);
        metrics::gauge!("ferry_logger_dropped_total", "logger" => name.clone())
            .set(b.stats.dropped.load(Ordering::Relaxed) as f64);
        metrics::gauge!("ferry_logger_sent_total", "logger" => name)
            .set(b.stats.sent.load(Ordering::Relaxed) as f64);
    }
    for f in ferry_core::line_file::live() {
        let lost = (f.dropped() + f.failed()) as f64;
        metrics::gauge!("ferry_log_file_lost_total", "path" => f.path.display().to_string())
            .set(lost);
    }
    handle.render()
}

/// Serves the exposition text at `uri` until `shutdown` resolves; other paths get 404.
pub async fn serve_export(
    listener: tokio::net::TcpListener,
    uri: String,
    handle: PrometheusHandle,
    shared: std::sync::Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let uri = std::sync::Arc::new(uri);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(x) => x, Err(_) => continue },
            _ = &mut shutdown => return,
        };
        let (handle, shared, uri, builder) =
            (handle.clone(), shared.clone(), uri.clone(), builder.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let resp = if req.uri().path() == uri.as_str() {
                    http::Response::builder()
                        .header("content-type", "text/plain; version=0.0.4")
                        .body(Full::new(bytes::Bytes::from(render(&handle, &shared))))
                } else {
                    http::Response::builder()
                        .status(404)
                        .body(Full::new(bytes::Bytes::from_static(b"404 Not Found\n")))
                };
                async move { resp }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
