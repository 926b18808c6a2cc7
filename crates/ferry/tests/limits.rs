//! `limit-count` through a real `ferry serve`: per-consumer keys, consumer-level limits over the
//! route's, `X-RateLimit-*` headers, rejection codes and messages, window reset; with Redis:
//! two Ferry nodes sharing one budget, and a Redis outage (500, or through with
//! `allow_degradation`), never a hang.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, JSON, chat_body};
use ferry_testkit::redis::Redis;
use ferry_testkit::{Resp, send};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn put(env: &Env, path: &str, body: Value) {
    let (s, v) = env.ferry.admin("PUT", path, Some(body)).await;
    assert!(s == 200 || s == 201, "PUT {path}: {s} {v}");
}

fn quota(r: &Resp) -> (Option<&str>, Option<&str>) {
    (
        r.header("x-ratelimit-limit"),
        r.header("x-ratelimit-remaining"),
    )
}

#[tokio::test]
async fn per_consumer_counts_and_consumer_limits() {
    let env = Env::start("limit-local").await;
    put(
        &env,
        "/consumers",
        json!({"username": "jack", "plugins": {"key-auth": {"key": "jack-key"}}}),
    )
    .await;
    put(
        &env,
        "/consumers",
        json!({"username": "bob", "plugins": {"key-auth": {"key": "bob-key"}}}),
    )
    .await;
    put(&env, "/consumers", json!({"username": "alice", "plugins": {"key-auth": {"key": "alice-key"},
        "limit-count": {"count": 1, "time_window": 60, "rejected_code": 403, "rejected_msg": "alice is over"}}})).await;
    env.route_with(json!({"id": "r", "uri": "/anything", "plugins": {
        "key-auth": {},
        "limit-count": {"count": 2, "time_window": 2, "rejected_code": 429, "key_type": "var", "key": "consumer_name"},
        "ai-proxy": env.ai("openai", "")
    }}))
    .await;
    let url = env.url("/anything");
    let call = |key: &'static str| {
        let url = url.clone();
        async move { send("POST", &url, &[JSON[0], ("apikey", key)], chat_body()).await }
    };
    let r = call("jack-key").await;
    assert_eq!(
        (r.status.as_u16(), quota(&r)),
        (200, (Some("2"), Some("1")))
    );
    assert_eq!(r.header("x-ratelimit-reset"), Some("2"));
    let r = call("jack-key").await;
    assert_eq!(
        (r.status.as_u16(), quota(&r)),
        (200, (Some("2"), Some("0")))
    );
    let before = env.mock.requests().len();
    let r = call("jack-key").await;
    assert_eq!(
        (r.status.as_u16(), quota(&r)),
        (429, (Some("2"), Some("0")))
    );
    assert_eq!(r.json()["error_msg"], "Too Many Requests");
    assert_eq!(
        env.mock.requests().len(),
        before,
        "a rejected request never reaches the provider"
    );
    // bob has his own counter (key: consumer_name)
    assert_eq!(call("bob-key").await.status, 200);
    // alice's own limit-count replaces the route's
    let r = call("alice-key").await;
    assert_eq!(
        (r.status.as_u16(), quota(&r)),
        (200, (Some("1"), Some("0")))
    );
    let r = call("alice-key").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error_msg"], "alice is over");
    // the window ends
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = call("jack-key").await;
    assert_eq!(
        (r.status.as_u16(), quota(&r)),
        (200, (Some("2"), Some("1")))
    );

    // a group shares one counter, so its configurations must agree
    let grouped = |count: u64| json!({"uri": "/g", "plugins": {"limit-count": {"count": count, "time_window": 60, "group": "g1"}}, "upstream_id": "none"});
    put(&env, "/upstreams/none", json!({})).await;
    put(&env, "/routes/g1", grouped(5)).await;
    put(&env, "/routes/g1", grouped(6)).await; // its only member may change
    let (s, v) = env.ferry.admin("PUT", "/routes/g2", Some(grouped(7))).await;
    assert_eq!(s, 400);
    assert!(
        v["error_msg"]
            .as_str()
            .unwrap()
            .ends_with("group conf mismatched"),
        "{v}"
    );
    put(&env, "/routes/g2", grouped(6)).await;

    // schema errors as APISIX words them
    let (s, v) = env
        .ferry
        .admin(
            "PUT",
            "/routes/bad",
            Some(
                json!({"uri": "/bad", "plugins": {"limit-count": {"count": 0, "time_window": 60}}}),
            ),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        v["error_msg"],
        "failed to check the configuration of plugin limit-count err: property \"count\" validation failed: value should match only one schema, but matches none"
    );
}

/// A route with `limit-count` on Redis, the same on two nodes.
fn redis_route(env: &Env, port: u16, extra: Value) -> Value {
    let mut lc = json!({"count": 3, "time_window": 60, "rejected_code": 429, "key_type": "constant", "key": "all",
                        "policy": "redis", "redis_host": "127.0.0.1", "redis_port": port, "redis_timeout": 300});
    for (k, v) in extra.as_object().unwrap() {
        lc[k] = v.clone();
    }
    json!({"id": "shared", "uri": "/anything", "plugins": {"limit-count": lc, "ai-proxy": env.ai("openai", "")}})
}

#[tokio::test]
#[ignore = "needs redis-server (PATH or FERRY_REDIS); .ci/run installs it"]
async fn two_nodes_share_a_redis_budget_and_survive_an_outage() {
    let mut redis = Redis::start();
    let a = Env::start("limit-redis-a").await;
    let b = Env::start("limit-redis-b").await;
    a.route_with(redis_route(&a, redis.port, json!({}))).await;
    b.route_with(redis_route(&b, redis.port, json!({}))).await;
    let go = |env: &Env| {
        let url = env.url("/anything");
        async move { send("POST", &url, &JSON, chat_body()).await }
    };
    let r = go(&a).await;
    assert_eq!(
        (r.status.as_u16(), quota(&r)),
        (200, (Some("3"), Some("2")))
    );
    let r = go(&b).await;
    assert_eq!(
        (r.status.as_u16(), quota(&r)),
        (200, (Some("3"), Some("1"))),
        "the other node sees the same counter"
    );
    let r = go(&a).await;
    assert_eq!(quota(&r), (Some("3"), Some("0")));
    let r = go(&b).await;
    assert_eq!(r.status, 429);
    let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!((1..=60).contains(&reset), "{reset}");

    // Redis goes away: 500 at once, or through with allow_degradation; never a hang
    redis.kill();
    let t = Instant::now();
    let r = go(&a).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["error_msg"], "failed to limit count");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    b.route_with(redis_route(
        &b,
        redis.port,
        json!({"allow_degradation": true}),
    ))
    .await;
    let r = go(&b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-limit"), None);
}

/// The remaining-tokens header of the mock's OpenAI instance.
fn ai_remaining(r: &Resp) -> Option<&str> {
    r.header("x-ai-ratelimit-remaining-ai-proxy-openai")
}

#[tokio::test]
async fn token_budgets() {
    let env = Env::start("ai-rate-local").await;
    // the mock's usage: 23 prompt + 8 completion = 31 per chat; a 3-chunk stream 15 + 6 = 21
    let route = |id: &str, uri: &str, rl: Value| json!({"id": id, "uri": uri, "plugins": {"ai-rate-limiting": rl, "ai-proxy": env.ai("openai", "")}});
    env.route_with(route(
        "total",
        "/total",
        json!({"limit": 50, "time_window": 60}),
    ))
    .await;
    env.route_with(route("completion", "/completion", json!({"limit": 20, "time_window": 60, "limit_strategy": "completion_tokens", "rejected_code": 429, "rejected_msg": "out of tokens"}))).await;
    env.route_with(route(
        "stream",
        "/stream",
        json!({"limit": 40, "time_window": 60}),
    ))
    .await;
    let go = |path: &str, body: String| {
        let url = env.url(path);
        async move {
            // the commit happens as the response ends; give it a moment
            tokio::time::sleep(Duration::from_millis(30)).await;
            send("POST", &url, &JSON, body).await
        }
    };
    let r = go("/total", chat_body()).await;
    assert_eq!((r.status.as_u16(), ai_remaining(&r)), (200, Some("50")));
    assert_eq!(r.header("x-ai-ratelimit-limit-ai-proxy-openai"), Some("50"));
    assert_eq!(r.header("x-ai-ratelimit-reset-ai-proxy-openai"), Some("60"));
    let r = go("/total", chat_body()).await;
    assert_eq!(
        (r.status.as_u16(), ai_remaining(&r)),
        (200, Some("19")),
        "admitted with 19 left, though it costs 31"
    );
    let before = env.mock.requests().len();
    let r = go("/total", chat_body()).await;
    assert_eq!((r.status.as_u16(), ai_remaining(&r)), (503, Some("0")));
    assert_eq!(
        env.mock.requests().len(),
        before,
        "not sent to the provider"
    );

    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = go("/completion", chat_body()).await;
        seen.push((r.status.as_u16(), ai_remaining(&r).map(String::from)));
    }
    let want: Vec<(u16, Option<String>)> = vec![
        (200, Some("20".into())),
        (200, Some("12".into())),
        (200, Some("4".into())),
        (429, Some("0".into())),
    ];
    assert_eq!(seen, want);
    let r = go("/completion", chat_body()).await;
    assert_eq!(r.json()["error_msg"], "out of tokens");

    // streams are counted from their usage chunk
    let stream =
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string();
    let r = go("/stream", stream.clone()).await;
    assert_eq!((r.status.as_u16(), ai_remaining(&r)), (200, Some("40")));
    assert!(r.text().ends_with("data: [DONE]\n\n"));
    let r = go("/stream", stream.clone()).await;
    assert_eq!(ai_remaining(&r), Some("19"));
    let r = go("/stream", stream).await;
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn token_budgets_per_consumer() {
    let env = Env::start("ai-rate-consumers").await;
    for (user, key) in [("jack", "jack-key"), ("rose", "rose-key")] {
        put(
            &env,
            "/consumers",
            json!({"username": user, "plugins": {"key-auth": {"key": key},
            "ai-rate-limiting": {"limit": 40, "time_window": 60}}}),
        )
        .await;
    }
    env.route_with(json!({"id": "r", "uri": "/anything", "plugins": {"key-auth": {}, "ai-proxy": env.ai("openai", "")}}))
        .await;
    let go = |key: &'static str| {
        let url = env.url("/anything");
        async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            send("POST", &url, &[JSON[0], ("apikey", key)], chat_body()).await
        }
    };
    assert_eq!(ai_remaining(&go("jack-key").await), Some("40"));
    assert_eq!(ai_remaining(&go("jack-key").await), Some("9"));
    assert_eq!(go("jack-key").await.status, 503);
    // identical configuration, another consumer: its own budget
    assert_eq!(ai_remaining(&go("rose-key").await), Some("40"));
}

#[tokio::test]
#[ignore = "needs redis-server (PATH or FERRY_REDIS); .ci/run installs it"]
async fn token_budgets_shared_through_redis() {
    let redis = Redis::start();
    let a = Env::start("ai-rate-redis-a").await;
    let b = Env::start("ai-rate-redis-b").await;
    for env in [&a, &b] {
        env.route_with(json!({"id": "r", "uri": "/anything", "plugins": {
            "ai-rate-limiting": {"limit": 50, "time_window": 60, "policy": "redis", "redis_host": "127.0.0.1", "redis_port": redis.port},
            "ai-proxy": env.ai("openai", "")}}))
            .await;
    }
    let go = |env: &Env| {
        let url = env.url("/anything");
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            send("POST", &url, &JSON, chat_body()).await
        }
    };
    assert_eq!(ai_remaining(&go(&a).await), Some("50"));
    assert_eq!(
        ai_remaining(&go(&b).await),
        Some("19"),
        "node b sees node a's 31 tokens"
    );
    assert_eq!(go(&a).await.status, 503);
}

#[tokio::test]
#[ignore = "needs redis-server (PATH or FERRY_REDIS); .ci/run installs it"]
async fn redis_over_tls() {
    let env = Env::start("limit-redis-tls").await;
    let ca = ferry_testkit::tls::TestCa::new(&["localhost", "127.0.0.1"]);
    let redis = Redis::start_tls(&ca, &env.dir.0);
    // not verified (redis_ssl_verify defaults to false, as APISIX): a private CA is fine
    env.route_with(redis_route(&env, redis.port, json!({"redis_ssl": true})))
        .await;
    let go = || {
        let url = env.url("/anything");
        async move { send("POST", &url, &JSON, chat_body()).await }
    };
    let r = go().await;
    assert_eq!(
        (r.status.as_u16(), quota(&r)),
        (200, (Some("3"), Some("2"))),
        "{}",
        r.text()
    );
    let r = go().await;
    assert_eq!(quota(&r), (Some("3"), Some("1")));
}

#[tokio::test]
#[ignore = "needs redis-server (PATH or FERRY_REDIS); .ci/run installs it"]
async fn redis_password_and_database() {
    let redis = Redis::start_with(&["--requirepass", "s3cret"]);
    let env = Env::start("limit-redis-auth").await;
    env.route_with(redis_route(
        &env,
        redis.port,
        json!({"redis_password": "s3cret", "redis_database": 3}),
    ))
    .await;
    let r = send("POST", &env.url("/anything"), &JSON, chat_body()).await;
    assert_eq!(
        (r.status.as_u16(), quota(&r)),
        (200, (Some("3"), Some("2"))),
        "{}",
        r.text()
    );
    // the counter lives in database 3
    let mut c = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    use std::io::{Read, Write};
    c.write_all(b"AUTH s3cret\r\nSELECT 3\r\nDBSIZE\r\nSELECT 0\r\nDBSIZE\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut buf = [0u8; 256];
    let n = c.read(&mut buf).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        "+OK\r\n+OK\r\n:1\r\n+OK\r\n:0\r\n"
    );
    // a wrong password: the limiter fails, so the request does (APISIX: 500)
    env.route_with(redis_route(
        &env,
        redis.port,
        json!({"redis_password": "wrong"}),
    ))
    .await;
    let r = send("POST", &env.url("/anything"), &JSON, chat_body()).await;
    assert_eq!(r.status, 500, "{}", r.text());
}
