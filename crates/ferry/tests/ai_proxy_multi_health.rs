//! `ai-proxy-multi` state over time: passive ejection and return after the cool-down, active
//! probes (with the instance's credentials) taking an instance out and back, fail-open when
//! every instance is down, `disable_upstream_healthcheck`, `ai-rate-limiting` budgets per
//! instance (skipped with the `rate_limiting` strategy, charged to the serving instance), and
//! state kept across writes to other routes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::multi::{Multi, model};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Models that served `n` requests on route `id`.
async fn served(env: &Multi, id: &str, n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(model(&env.chat(id).await));
    }
    v
}

fn count(v: &[String], m: &str) -> usize {
    v.iter().filter(|x| *x == m).count()
}

/// Waits until `cond` holds (checked every 100 ms), up to `secs`.
async fn eventually<F, Fut>(secs: u64, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn passive_ejection_and_return() {
    let env = Multi::start("multi-passive", 2, "").await;
    let mut a = env.instance("a", 0, "model-a");
    a["priority"] = json!(1);
    a["checks"] = json!({"passive": {"unhealthy": {"http_failures": 3}, "cooldown": 1}});
    let b = env.instance("b", 1, "model-b");
    env.route(
        "r",
        json!({"instances": [a, b], "fallback_strategy": ["http_5xx"]}),
    )
    .await;
    env.mocks[0].set_status(500);
    let v = served(&env, "r", 8).await;
    assert_eq!(
        count(&v, "model-b"),
        8,
        "every request served despite a's failures"
    );
    assert_eq!(
        env.mocks[0].count("/v1/chat/completions"),
        3,
        "a is skipped after three failures in a row"
    );
    // Writes to other routes keep the state.
    env.route("other", json!({"instances": [env.instance("x", 1, "m")]}))
        .await;
    served(&env, "r", 2).await;
    assert_eq!(env.mocks[0].count("/v1/chat/completions"), 3);
    // After the cool-down a is tried again, and serves once it is well.
    env.mocks[0].set_status(0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(served(&env, "r", 3).await, vec!["model-a"; 3]);
}

#[tokio::test]
async fn active_checks_take_an_instance_out_and_back() {
    let env = Multi::start("multi-active", 2, "").await;
    let checks = json!({"active": {
        "http_path": "/_mock/health?probe=ready",
        "healthy": {"interval": 1, "successes": 1},
        "unhealthy": {"interval": 1, "http_failures": 1}}});
    let mut a = env.instance("a", 0, "model-a");
    a["checks"] = checks.clone();
    a["auth"]["query"] = json!({"api_key": "token"});
    let b = env.instance("b", 1, "model-b");
    env.mocks[0].set_health(500);
    env.route("r", json!({"instances": [a, b.clone()]})).await;
    // Probing starts when the route is published (no warm-up request).
    eventually(5, "a probed and out", || async {
        count(&served(&env, "r", 4).await, "model-b") == 4
    })
    .await;
    let probe = env.mocks[0]
        .requests()
        .into_iter()
        .find(|r| r.path == "/_mock/health")
        .unwrap();
    assert_eq!(probe.method, "GET");
    assert_eq!(probe.query, "probe=ready&api_key=token");
    assert_eq!(probe.header("authorization"), Some("Bearer token"));
    env.mocks[0].set_health(200);
    eventually(5, "a back", || async {
        count(&served(&env, "r", 4).await, "model-a") == 2
    })
    .await;

    // Every instance down: fail open, requests still served by all.
    let mut b2 = b.clone();
    b2["checks"] = checks.clone();
    let mut a2 = env.instance("a", 0, "model-a");
    a2["checks"] = checks.clone();
    env.mocks[0].set_health(503);
    env.mocks[1].set_health(503);
    env.route("both", json!({"instances": [a2, b2]})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = served(&env, "both", 4).await;
    assert_eq!((count(&v, "model-a"), count(&v, "model-b")), (2, 2));

    // Deleting the routes stops their probes.
    for id in ["r", "both", "other"] {
        env.ferry
            .admin("DELETE", &format!("/routes/{id}"), None)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = env.mocks[0].count("/_mock/health");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        env.mocks[0].count("/_mock/health"),
        before,
        "no probes after delete"
    );
}

#[tokio::test]
async fn healthchecks_can_be_disabled() {
    let env = Multi::start(
        "multi-nohc",
        2,
        "apisix:\n  disable_upstream_healthcheck: true\n",
    )
    .await;
    let mut a = env.instance("a", 0, "model-a");
    a["checks"] =
        json!({"active": {"http_path": "/_mock/health", "unhealthy": {"http_failures": 1}}});
    env.mocks[0].set_health(500);
    env.route(
        "r",
        json!({"instances": [a, env.instance("b", 1, "model-b")]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let v = served(&env, "r", 4).await;
    assert_eq!(count(&v, "model-a"), 2);
    assert_eq!(env.mocks[0].count("/_mock/health"), 0);
}

/// Two instances (a at priority 1) with `ai-rate-limiting` on the route.
fn limited(env: &Multi, strategy: Value, limits: Value) -> Value {
    let mut a = env.instance("a", 0, "model-a");
    a["priority"] = json!(1);
    let mut multi = json!({"instances": [a, env.instance("b", 1, "model-b")]});
    if !strategy.is_null() {
        multi["fallback_strategy"] = strategy;
    }
    json!({"ai-proxy-multi": multi, "ai-rate-limiting": limits})
}

#[tokio::test]
async fn token_budgets_per_instance() {
    let env = Multi::start("multi-limits", 2, "").await;
    // The documentation's example: a budget of 10 per instance, 31 tokens per answer.
    let plugins = limited(
        &env,
        json!("instance_health_and_rate_limiting"),
        json!({"limit": 10, "time_window": 60}),
    );
    env.route_with(json!({"id": "skip", "uri": "/skip", "plugins": plugins}))
        .await;
    assert_eq!(model(&env.chat("skip").await), "model-a");
    let r = env.chat("skip").await;
    assert_eq!(model(&r), "model-b");
    assert!(r.header("x-ai-ratelimit-remaining-b").is_some());
    let r = env.chat("skip").await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("all servers tried"), "{}", r.text());

    // Without the strategy the exhausted instance is not skipped: ai-rate-limiting refuses.
    let plugins = limited(&env, Value::Null, json!({"limit": 10, "time_window": 60}));
    env.route_with(json!({"id": "noskip", "uri": "/noskip", "plugins": plugins}))
        .await;
    assert_eq!(model(&env.chat("noskip").await), "model-a");
    let r = env.chat("noskip").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-ai-ratelimit-remaining-a"), Some("0"));
    assert_eq!(
        env.mocks[1].count("/v1/chat/completions"),
        1,
        "b served only the first route"
    );

    // Tokens are charged to the instance that served after a fallback.
    let plugins = limited(
        &env,
        json!(["rate_limiting", "http_5xx"]),
        json!({"instances": [{"name": "a", "limit": 40, "time_window": 60}, {"name": "b", "limit": 40, "time_window": 60}]}),
    );
    env.route_with(json!({"id": "charge", "uri": "/charge", "plugins": plugins}))
        .await;
    env.mocks[0].set_status(500);
    assert_eq!(served(&env, "charge", 2).await, vec!["model-b"; 2]);
    env.mocks[0].set_status(0);
    // a's budget is untouched (b's is spent): a serves twice, then nothing is left.
    assert_eq!(served(&env, "charge", 2).await, vec!["model-a"; 2]);
    let r = env.chat("charge").await;
    assert_eq!(r.status, 503, "{}", r.text());
}

#[tokio::test]
async fn round_robin_position_survives_other_writes_and_resets_on_its_own() {
    let env = Multi::start("multi-state", 2, "").await;
    let multi =
        json!({"instances": [env.instance("a", 0, "model-a"), env.instance("b", 1, "model-b")]});
    env.route("r", multi.clone()).await;
    let first = model(&env.chat("r").await);
    for i in 0..3 {
        env.route(&format!("other{i}"), multi.clone()).await;
        let next = model(&env.chat("r").await);
        assert_ne!(next, first, "the position moved on");
        let again = model(&env.chat("r").await);
        assert_eq!(again, first);
    }
}
