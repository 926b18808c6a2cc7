//! `ai-proxy-multi` against several mock providers with injected faults: distribution by
//! weight, priorities, chash stickiness, fallback rules (strategies, statuses, max_retries,
//! the retry window), stream failover before the first byte and the in-band error after it,
//! mixed providers with conversion, and the log variables of a fallback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::multi::{JSON, Multi, anthropic_stream, chat, failing, model};
use ferry_testkit::send;
use serde_json::{Value, json};

#[tokio::test]
async fn weights_priorities_and_chash() {
    let env = Multi::start("multi-balance", 2, "").await;
    let (mut a, mut b) = (
        env.instance("a", 0, "model-a"),
        env.instance("b", 1, "model-b"),
    );
    a["weight"] = json!(8);
    b["weight"] = json!(2);
    env.route("wrr", json!({"instances": [a, b]})).await;
    // The documentation's example: ten requests, exactly eight and two.
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(model(&env.chat("wrr").await));
    }
    assert_eq!(
        seen.iter().filter(|m| *m == "model-a").count(),
        8,
        "{seen:?}"
    );
    // 200 concurrent requests share one picker: exactly 160 and 40.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let url = env.ferry.url("/wrr");
        set.spawn(async move { send("POST", &url, &JSON, chat()).await });
    }
    let mut a_count = 0;
    while let Some(r) = set.join_next().await {
        if model(&r.unwrap()) == "model-a" {
            a_count += 1;
        }
    }
    assert_eq!(a_count, 160);

    // Priorities: everything to the higher group while it serves.
    let (mut hi, mut lo) = (
        env.instance("hi", 0, "model-hi"),
        env.instance("lo", 1, "model-lo"),
    );
    hi["priority"] = json!(1);
    hi["weight"] = json!(0);
    lo["weight"] = json!(0);
    env.route(
        "prio",
        json!({"instances": [hi, lo], "fallback_strategy": ["http_5xx"]}),
    )
    .await;
    for _ in 0..4 {
        assert_eq!(model(&env.chat("prio").await), "model-hi");
    }
    env.mocks[0].set_status(503);
    for _ in 0..3 {
        assert_eq!(model(&env.chat("prio").await), "model-lo");
    }
    env.mocks[0].set_status(0);

    // chash on a query argument: sticky per key, spread across keys.
    env.route(
        "hash",
        json!({"instances": [env.instance("a", 0, "model-a"), env.instance("b", 1, "model-b")],
               "balancer": {"algorithm": "chash", "hash_on": "vars", "key": "arg_user"}}),
    )
    .await;
    let mut per_user = std::collections::HashMap::new();
    for u in 0..40 {
        let url = env.ferry.url(&format!("/hash?user=u{u}"));
        let first = model(&send("POST", &url, &JSON, chat()).await);
        for _ in 0..3 {
            assert_eq!(
                model(&send("POST", &url, &JSON, chat()).await),
                first,
                "sticky"
            );
        }
        per_user.insert(u, first);
    }
    let on_a = per_user.values().filter(|m| *m == "model-a").count();
    assert!((8..=32).contains(&on_a), "keys spread: {on_a} of 40 on a");
}

#[tokio::test]
async fn fallback_rules() {
    let env = Multi::start("multi-fallback", 3, "").await;
    let a = |s| failing(env.instance("a", 0, "model-a"), s);
    let b = env.instance("b", 1, "model-b");
    let hi = |mut v: Value| {
        v["priority"] = json!(1);
        v
    };
    // 429 falls back only with http_429; the failed attempt's headers stay behind.
    env.route(
        "r429",
        json!({"instances": [hi(a(429)), b.clone()], "fallback_strategy": ["http_429"]}),
    )
    .await;
    let r = env.chat("r429").await;
    assert_eq!(model(&r), "model-b");
    assert!(
        r.header("retry-after").is_none(),
        "a failed attempt's headers never reach the client"
    );
    env.route(
        "no429",
        json!({"instances": [hi(a(429)), b.clone()], "fallback_strategy": ["http_5xx"]}),
    )
    .await;
    let r = env.chat("no429").await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    // No strategy: nothing is retried.
    env.route("none", json!({"instances": [hi(a(500)), b.clone()]}))
        .await;
    assert_eq!(env.chat("none").await.status, 500);
    // "instance_health_and_rate_limiting" alone retries no status.
    env.route("health", json!({"instances": [hi(a(503)), b.clone()], "fallback_strategy": "instance_health_and_rate_limiting"}))
        .await;
    assert_eq!(env.chat("health").await.status, 503);

    // fallback_http_statuses without a strategy; with max_retries 0 the first answer stands.
    let mut bad_key = env.instance("bad", 0, "model-a");
    bad_key["auth"]["header"]["Authorization"] = json!("Bearer wrong");
    env.route(
        "s401",
        json!({"instances": [hi(bad_key.clone()), b.clone()], "fallback_http_statuses": [401]}),
    )
    .await;
    assert_eq!(model(&env.chat("s401").await), "model-b");
    env.route("s401max0", json!({"instances": [hi(bad_key), b.clone()], "fallback_http_statuses": [401], "max_retries": 0}))
        .await;
    let r = env.chat("s401max0").await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("Incorrect API key"), "{}", r.text());

    // Three failing instances, max_retries 1: two attempts, the second's 500 returned.
    let fail3 = json!({"instances": [
        failing(env.instance("x", 0, "m"), 500), failing(env.instance("y", 1, "m"), 500), failing(env.instance("z", 2, "m"), 500)],
        "fallback_strategy": ["http_5xx"], "max_retries": 1});
    env.route("max1", fail3).await;
    let before: usize = env
        .mocks
        .iter()
        .map(|m| m.count("/v1/chat/completions"))
        .sum();
    assert_eq!(env.chat("max1").await.status, 500);
    let after: usize = env
        .mocks
        .iter()
        .map(|m| m.count("/v1/chat/completions"))
        .sum();
    assert_eq!(after - before, 2);

    // Everything failed: a 502 in the client's protocol naming the last instance.
    env.route(
        "allfail",
        json!({"instances": [hi(a(429)), failing(env.instance("c", 2, "m"), 500)],
        "fallback_strategy": ["http_429", "http_5xx"]}),
    )
    .await;
    for _ in 0..3 {
        let r = env.chat("allfail").await;
        assert_eq!(r.status, 502);
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains("all ai-proxy-multi instances failed"), "{msg}");
    }

    // The retry window: a slow 500 is returned, a fast one falls back.
    let mut slow = a(500);
    slow["auth"]["header"]["x-mock-delay-ms"] = json!("400");
    env.route("window", json!({"instances": [hi(slow), b.clone()], "fallback_strategy": ["http_5xx"], "retry_on_failure_within_ms": 200}))
        .await;
    assert_eq!(env.chat("window").await.status, 500);
    env.route("window2", json!({"instances": [hi(a(500)), b.clone()], "fallback_strategy": ["http_5xx"], "retry_on_failure_within_ms": 5000}))
        .await;
    assert_eq!(model(&env.chat("window2").await), "model-b");

    // A single instance is never retried.
    env.route(
        "single",
        json!({"instances": [a(500)], "fallback_strategy": ["http_5xx"]}),
    )
    .await;
    assert_eq!(env.chat("single").await.status, 500);
}

#[tokio::test]
async fn fallback_keeps_the_client_body_and_logs_every_attempt() {
    let env = Multi::start("multi-body", 2, "").await;
    let mut a = failing(env.instance("a", 0, "upstream-model-A"), 500);
    a["priority"] = json!(1);
    a["options"]["temperature"] = json!(0.1);
    let b = env.instance("b", 1, "upstream-model-B");
    // A refused connection counts as a 5xx too: a dead first instance, then a and b.
    let dead = json!({"name": "dead", "provider": "openai", "weight": 1, "priority": 2,
        "auth": {"header": {"Authorization": "Bearer token"}},
        "override": {"endpoint": "http://127.0.0.1:1/v1/chat/completions"}});
    env.route(
        "r",
        json!({"instances": [dead, a, b], "fallback_strategy": ["http_5xx"]}),
    )
    .await;
    let r = env.chat("r").await;
    assert_eq!(model(&r), "upstream-model-B");
    let got = env.mocks[1].last().unwrap().json();
    assert_eq!(got["model"], "upstream-model-B");
    assert!(
        got.get("temperature").is_none(),
        "a's options stay with a: {got}"
    );
    assert_eq!(got["messages"][0]["content"], "What is 1+1?");
    let l = env.log(1).await;
    let (a_addr, b_addr) = (env.mocks[0].addr.to_string(), env.mocks[1].addr.to_string());
    assert_eq!(l[0], "200");
    assert_eq!(l[1], "b", "$balancer_ip is the serving instance");
    assert_eq!(l[2], format!("127.0.0.1:1, {a_addr}, {b_addr}"));
    assert_eq!(l[3], "502, 500, 200");
    assert_eq!(
        (l[4].as_str(), l[5].as_str()),
        ("client-model", "upstream-model-B")
    );
    assert_eq!(l[6], "31", "b's usage");
}

#[tokio::test]
async fn stream_failover_before_the_first_byte() {
    let env = Multi::start("multi-stream", 2, "").await;
    let good = env.instance("b", 1, "model-b");
    let cases: Vec<(&str, Value)> = vec![
        ("reset", {
            let mut a = env.instance("a", 0, "model-a");
            a["auth"]["header"]["x-mock-reset-after"] = json!("0");
            a
        }),
        ("stall", {
            let mut a = env.instance("a", 0, "model-a");
            a["auth"]["header"]["x-mock-stall"] = json!("1");
            a
        }),
        ("status", failing(env.instance("a", 0, "model-a"), 503)),
        (
            "refused",
            json!({"name": "a", "provider": "openai", "weight": 1,
            "auth": {"header": {"Authorization": "Bearer token"}},
            "override": {"endpoint": "http://127.0.0.1:1/v1/chat/completions"}}),
        ),
    ];
    let reference = {
        env.route("ref", json!({"instances": [good.clone()]})).await;
        env.stream("ref").await.text()
    };
    assert!(reference.ends_with("data: [DONE]\n\n"));
    for (name, mut a) in cases {
        a["priority"] = json!(1);
        env.route(name, json!({"instances": [a, good.clone()], "fallback_strategy": ["http_5xx"], "timeout": 300}))
            .await;
        let r = env.stream(name).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("text/event-stream"),
            "{name}"
        );
        assert!(!r.aborted, "{name}");
        assert_eq!(
            r.text(),
            reference,
            "{name}: the client sees only b's stream"
        );
    }
    // An Anthropic client converted to the OpenAI instances gets b's stream, converted, whole.
    let mut a = failing(env.instance("a", 0, "model-a"), 500);
    a["priority"] = json!(1);
    env.route_with(
        json!({"id": "conv", "uri": "/conv/v1/messages", "plugins": {"ai-proxy-multi":
        {"instances": [a, good.clone()], "fallback_strategy": ["http_5xx"]}}}),
    )
    .await;
    let r = send(
        "POST",
        &env.ferry.url("/conv/v1/messages"),
        &JSON,
        anthropic_stream(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(
        text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{text}"
    );
}

#[tokio::test]
async fn stream_error_after_the_first_byte() {
    let env = Multi::start("multi-midstream", 2, "").await;
    let mut a = env.instance("a", 0, "model-a");
    a["priority"] = json!(1);
    a["auth"]["header"]["x-mock-reset-after"] = json!("2");
    a["auth"]["header"]["x-mock-chunk-delay-ms"] = json!("20");
    let b = env.instance("b", 1, "model-b");
    env.route(
        "r",
        json!({"instances": [a.clone(), b.clone()], "fallback_strategy": ["http_5xx"]}),
    )
    .await;
    let r = env.stream("r").await;
    assert_eq!(r.status, 200);
    let text = r.text();
    let events: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 3, "{text}");
    assert!(
        events[0].contains("model-a") && events[1].contains("model-a"),
        "{text}"
    );
    let err: Value = serde_json::from_str(events[2].trim_start_matches("data: ")).unwrap();
    assert_eq!(err["error"]["type"], "server_error");
    assert!(!text.contains("[DONE]"));
    assert!(r.aborted, "the transfer is cut, not ended");
    assert_eq!(
        env.mocks[1].count("/v1/chat/completions"),
        0,
        "b never contacted"
    );

    // An Anthropic client: `event: error`, no message_stop, a cut transfer.
    env.route_with(
        json!({"id": "conv", "uri": "/conv/v1/messages", "plugins": {"ai-proxy-multi":
        {"instances": [a, b], "fallback_strategy": ["http_5xx"]}}}),
    )
    .await;
    let r = send(
        "POST",
        &env.ferry.url("/conv/v1/messages"),
        &JSON,
        anthropic_stream(),
    )
    .await;
    let text = r.text();
    assert!(text.contains("event: message_start"), "{text}");
    assert!(
        text.trim_end()
            .rsplit("\n\n")
            .next()
            .unwrap()
            .starts_with("event: error\ndata: {\"error\":{\"message\""),
        "{text}"
    );
    assert!(!text.contains("message_stop"), "{text}");
    assert!(r.aborted);
    assert_eq!(env.mocks[1].count("/v1/chat/completions"), 0);
}

#[tokio::test]
async fn mixed_providers_with_conversion() {
    let env = Multi::start("multi-mixed", 2, "").await;
    let claude = json!({"name": "claude", "provider": "anthropic", "weight": 1,
        "auth": {"header": {"x-api-key": "token"}},
        "options": {"model": "claude-model"},
        "override": {"endpoint": format!("{}/v1/messages", env.mocks[0].url())}});
    let gpt = env.instance("gpt", 1, "gpt-model");
    env.route("mix", json!({"instances": [claude.clone(), gpt.clone()]}))
        .await;
    // An OpenAI client: one answer converted from Anthropic Messages, one direct.
    let mut models = Vec::new();
    for _ in 0..2 {
        let r = env.chat("mix").await;
        let v = r.json();
        assert_eq!(v["object"], "chat.completion", "{v}");
        assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
        models.push(model(&r));
    }
    models.sort();
    assert_eq!(models, vec!["claude-model", "gpt-model"]);
    assert_eq!(env.mocks[0].last().unwrap().path, "/v1/messages");
    // A failing Anthropic instance falls back to the OpenAI one, streams included.
    let mut bad = failing(claude, 529);
    bad["priority"] = json!(1);
    env.route(
        "mixfail",
        json!({"instances": [bad, gpt], "fallback_strategy": ["http_5xx"]}),
    )
    .await;
    let r = env.stream("mixfail").await;
    assert!(r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
    let l = env.log(3).await;
    assert_eq!(
        (l[1].as_str(), l[3].as_str(), l[7].as_str()),
        ("gpt", "529, 200", "openai")
    );
}

#[tokio::test]
async fn admin_checks_in_apisix_words() {
    let env = Multi::start("multi-admin", 1, "").await;
    let put = |plugin: Value| {
        let f = &env.ferry;
        async move {
            f.admin(
                "PUT",
                "/routes",
                Some(json!({"id": "x", "uri": "/x", "plugins": {"ai-proxy-multi": plugin}})),
            )
            .await
        }
    };
    let i = env.instance("same-name", 0, "m");
    let (s, v) =
        put(json!({"instances": [i.clone(), env.instance("other", 0, "m"), i.clone()]})).await;
    assert_eq!(s, 400);
    assert_eq!(
        v["error_msg"],
        "failed to check the configuration of plugin ai-proxy-multi err: duplicate instance name 'same-name' at instances[1] and instances[3]"
    );
    let (s, v) = put(json!({"instances": [i.clone()], "fallback_http_statuses": [200]})).await;
    assert_eq!(s, 400);
    assert!(
        v["error_msg"]
            .as_str()
            .unwrap()
            .contains("expected 200 to be at least 400"),
        "{v}"
    );
    let mut e = i.clone();
    e["override"]["endpoint"] = json!("http//127.0.0.1:1980");
    let (s, v) = put(json!({"instances": [e]})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) =
        put(json!({"instances": [i.clone()], "balancer": {"algorithm": "semantic"}})).await;
    assert_eq!(s, 400);
    assert!(
        v["error_msg"].as_str().unwrap().contains("not supported"),
        "{v}"
    );
    // Stored as sent (defaults apply when built, as for every plugin).
    let (s, _) = put(json!({"instances": [i]})).await;
    assert!(s == 200 || s == 201);
    let (_, v) = env.ferry.admin("GET", "/routes/x", None).await;
    let conf = &v["value"]["plugins"]["ai-proxy-multi"];
    assert_eq!(conf["instances"][0]["name"], "same-name");
}

/// The page's shell blocks with the ```text block that follows each (its expected output).
fn blocks_with_output(text: &str) -> Vec<(usize, String, Option<String>)> {
    let mut out: Vec<(usize, String, Option<String>)> = Vec::new();
    let mut cur: Option<(usize, String, String)> = None;
    let mut last_closed_shell = false;
    for (i, line) in text.lines().enumerate() {
        match &mut cur {
            None if line.trim_start().starts_with("```") => {
                let lang = line.trim_start().trim_start_matches('`').to_string();
                cur = Some((i + 1, lang, String::new()));
            }
            None => {
                if !line.trim().is_empty() {
                    last_closed_shell = false;
                }
            }
            Some(_) if line.trim_start().starts_with("```") => {
                let (at, lang, body) = cur.take().unwrap();
                if lang == "shell" {
                    out.push((at, body, None));
                    last_closed_shell = true;
                } else {
                    if lang == "text"
                        && last_closed_shell
                        && let Some(last) = out.last_mut()
                    {
                        last.2 = Some(body);
                    }
                    last_closed_shell = false;
                }
            }
            Some((_, _, b)) => {
                b.push_str(line);
                b.push('\n');
            }
        }
    }
    out
}

/// Every example of docs/plugins/ai-proxy-multi.md, loops included, run in order against the
/// mock; where the page shows the output, the output must be that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_page_examples_print_what_the_page_shows() {
    let env = common::Env::start("multi-docs").await;
    let f = &env.ferry;
    let mock = env.mock.url();
    let mock_authority = mock.trim_start_matches("http://").trim_end_matches('/');
    let cwd = env.dir.0.join("reader");
    std::fs::create_dir_all(&cwd).unwrap();
    let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/plugins/ai-proxy-multi.md");
    let text = std::fs::read_to_string(page).unwrap();
    let mut checked = 0;
    for (line, block, expected) in blocks_with_output(&text) {
        if block.trim_start().starts_with("cargo ") {
            continue;
        }
        let script = block
            .replace("127.0.0.1:9080", &format!("127.0.0.1:{}", f.port))
            .replace("127.0.0.1:9180", &format!("127.0.0.1:{}", f.admin_port))
            .replace("127.0.0.1:1980", mock_authority);
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\n{script}"))
            .current_dir(&cwd)
            .env("admin_key", &f.key)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "line {line}: {script}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(want) = expected {
            let norm = |s: &str| {
                s.lines()
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join("\n")
                    .trim()
                    .to_string()
            };
            assert_eq!(norm(&stdout), norm(&want), "line {line}: {script}");
            checked += 1;
        } else {
            assert!(
                stdout.contains("\"key\""),
                "line {line}: a write answered {stdout}"
            );
        }
    }
    assert!(checked >= 5, "only {checked} outputs checked");
}
