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

#[tokio::test]
async fn ai_proxy_multi_per_instance_metrics() {
    let env = Env::start("metrics-multi").await;
    let instance = |name: &str, extra: &[(&str, &str)]| {
        let mut i = env.ai("openai", "/v1/chat/completions");
        i["name"] = json!(name);
        i["weight"] = json!(1);
        for (k, v) in extra {
            i["auth"]["header"][*k] = json!(v);
        }
        i
    };
    let mut a = instance("a", &[("x-mock-status", "503")]);
    a["priority"] = json!(1);
    let mut b = instance(
        "b",
        &[("x-mock-reset-after", "2"), ("x-mock-chunk-delay-ms", "20")],
    );
    b["priority"] = json!(0);
    let c = instance("c", &[]);
    env.route_with(
        json!({"id": "mm", "uri": "/mm", "plugins": {"prometheus": {}, "ai-proxy-multi":
        {"instances": [a, b], "fallback_strategy": ["http_5xx"]}}}),
    )
    .await;
    env.route_with(
        json!({"id": "mc", "uri": "/mc", "plugins": {"ai-proxy-multi": {"instances": [c]}}}),
    )
    .await;
    // a fails, b serves: twice as JSON, once as a stream that b breaks after two events.
    for _ in 0..2 {
        assert_eq!(
            send("POST", &env.url("/mm"), &JSON, chat_body())
                .await
                .status,
            200
        );
    }
    let stream =
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string();
    let r = send("POST", &env.url("/mm"), &JSON, stream).await;
    assert!(r.aborted, "{} {}", r.status, r.text());
    assert_eq!(
        send("POST", &env.url("/mc"), &JSON, chat_body())
            .await
            .status,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let m = scrape(&env).await;
    let at = |inst: &str, outcome: &str| {
        find(
            &m,
            "ferry_ai_instance_attempts_total",
            &[
                &format!("instance=\"{inst}\""),
                &format!("outcome=\"{outcome}\""),
                "route=\"mm\"",
            ],
        )
    };
    assert_eq!(at("a", "http_5xx"), 3.0);
    assert_eq!(at("b", "ok"), 3.0);
    assert_eq!(at("b", "stream_broken"), 1.0);
    assert_eq!(
        find(
            &m,
            "ferry_ai_instance_latency_ms_count",
            &["instance=\"a\"", "route=\"mm\""]
        ),
        3.0
    );
    // Tokens of the JSON answers b served (the broken stream carried none).
    assert_eq!(
        find(
            &m,
            "ferry_ai_instance_tokens_total",
            &["instance=\"b\"", "type=\"prompt\""]
        ),
        2.0 * 23.0
    );
    assert_eq!(
        find(&m, "ferry_ai_instance_tokens_total", &["instance=\"a\""]),
        0.0
    );
    assert_eq!(at("c", "ok"), 0.0);
    assert_eq!(
        find(
            &m,
            "ferry_ai_instance_attempts_total",
            &["instance=\"c\"", "outcome=\"ok\"", "route=\"mc\""]
        ),
        1.0,
        "per route"
    );
}
