//! Prometheus metrics on the export listener, scraped and parsed as Prometheus text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, JSON, chat_body};
use ferry_testkit::send;
use serde_json::json;
use std::collections::HashMap;

/// Parses the text format into `name{labels}` → value.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The export listener's metrics, parsed.
async fn scrape(env: &Env) -> HashMap<String, f64> {
    let port = env.ferry.metrics_port.unwrap();
    let r = send(
        "GET",
        &format!("http://127.0.0.1:{port}/apisix/prometheus/metrics"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    parse(&r.text())
}

fn find(m: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")) || k.as_str() == name)
        .filter(|(k, _)| labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| *v)
        .sum()
}

#[tokio::test]
async fn route_and_llm_metrics() {
    let env = Env::start("metrics").await;
    let dead = ferry_testkit::free_port();
    env.route_with(json!({"id": "m", "uri": "/m", "plugins": {"ai-proxy": env.ai("openai", ""), "prometheus": {},
        "http-logger": {"uri": format!("http://127.0.0.1:{dead}/x"), "batch_max_size": 1, "name": "dead receiver"}}}))
        .await;
    assert_eq!(
        send("POST", &env.url("/m"), &JSON, chat_body())
            .await
            .status,
        200
    );
    let stream =
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string();
    send("POST", &env.url("/m"), &JSON, stream).await.text();
    send(
        "POST",
        &env.url("/m"),
        &[
            ("content-type", "application/json"),
            ("x-mock-status", "429"),
        ],
        chat_body(),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let m = scrape(&env).await;
    let llm = ["route=\"m\"", "provider=\"openai\"", "model=\"gpt-4\""];
    assert_eq!(
        find(&m, "apisix_http_status", &["code=\"200\"", "route=\"m\""]),
        2.0
    );
    assert_eq!(
        find(&m, "apisix_http_status", &["code=\"429\"", "route=\"m\""]),
        1.0
    );
    assert_eq!(find(&m, "apisix_llm_requests_total", &llm), 3.0);
    assert_eq!(find(&m, "apisix_llm_prompt_tokens", &llm), 38.0);
    assert_eq!(find(&m, "apisix_llm_completion_tokens", &llm), 14.0);
    assert_eq!(find(&m, "apisix_llm_time_to_first_token_count", &llm), 3.0);
    assert_eq!(
        find(&m, "ferry_gateway_overhead_ms_count", &["route=\"m\""]),
        3.0
    );
    assert_eq!(
        find(
            &m,
            "apisix_http_latency_count",
            &["type=\"upstream\"", "route=\"m\""]
        ),
        3.0
    );
    assert_eq!(find(&m, "apisix_llm_active_connections", &[]), 0.0);
    assert!(find(&m, "ferry_config_revision", &[]) >= 1.0);
    assert_eq!(find(&m, "ferry_routes", &[]), 1.0);
    assert_eq!(
        find(
            &m,
            "ferry_logger_dropped_total",
            &["logger=\"dead receiver\""]
        ),
        3.0,
        "losses are visible"
    );
    let port = env.ferry.metrics_port.unwrap();
    let r = send("GET", &format!("http://127.0.0.1:{port}/other"), &[], "").await;
    assert_eq!(r.status, 404);
}

/// A client cannot create unbounded series: past the per-route cap, models count as `other`.
#[tokio::test]
async fn model_label_is_bounded_per_route() {
    let env = Env::start("metrics-cap").await;
    let mut ai = env.ai("openai", "");
    ai.as_object_mut().unwrap().remove("options");
    env.route_with(
        json!({"id": "cap", "uri": "/cap", "plugins": {"ai-proxy": ai, "prometheus": {}}}),
    )
    .await;
    let n = ferry_plugins::prometheus::MODEL_LABELS + 6;
    for i in 0..n {
        let body =
            json!({"model": format!("m-{i}"), "messages": [{"role": "user", "content": "hi"}]});
        let r = send("POST", &env.url("/cap"), &JSON, body.to_string()).await;
        assert_eq!(r.status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let m = scrape(&env).await;
    let series: Vec<&String> = m
        .keys()
        .filter(|k| k.starts_with("apisix_llm_requests_total{") && k.contains("route=\"cap\""))
        .collect();
    assert_eq!(
        series.len(),
        ferry_plugins::prometheus::MODEL_LABELS + 1,
        "{series:?}"
    );
    assert_eq!(
        find(
            &m,
            "apisix_llm_requests_total",
            &["route=\"cap\"", "model=\"other\""]
        ),
        6.0
    );
    assert_eq!(
        find(&m, "apisix_llm_requests_total", &["route=\"cap\""]),
        n as f64,
        "every request is counted"
    );
}
