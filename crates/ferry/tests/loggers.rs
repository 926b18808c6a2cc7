//! `http-logger` and `file-logger` with `ai-proxy`'s `logging` options: the entries that reach
//! an HTTP receiver and a file, their LLM fields, redaction, batching, failures, reopening.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, JSON, chat_body};
use ferry_testkit::mock::{Mock, MockConfig};
use ferry_testkit::send;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn wait_for(receiver: &Mock, n: usize) -> Vec<ferry_testkit::mock::Recorded> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = receiver.requests();
        if r.len() >= n {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "receiver got {} of {n} batches",
            r.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn http_logger_entries_with_llm_fields() {
    let env = Env::start("log-http").await;
    let receiver = Mock::start(MockConfig {
        key: None,
        record: true,
        ..Default::default()
    })
    .await;
    let mut ai = env.ai("openai", "");
    ai["logging"] = json!({"summaries": true, "payloads": true});
    ai["auth"]["query"] = json!({"api_key": "token"});
    env.route_with(json!({"id": "logged", "uri": "/anything", "plugins": {
        "ai-proxy": ai,
        "http-logger": {"uri": format!("{}/log", receiver.url()), "batch_max_size": 1}}}))
        .await;
    let hdrs = [
        ("content-type", "application/json"),
        ("authorization", "Bearer client-secret"),
    ];
    let r = send(
        "POST",
        &env.url("/anything?api_key=leak&x=1"),
        &hdrs,
        chat_body(),
    )
    .await;
    assert_eq!(r.status, 200);
    let got = wait_for(&receiver, 1).await;
    assert_eq!(got[0].path, "/log");
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    let e = got[0].json();
    assert_eq!(e["route_id"], "logged");
    assert_eq!(e["request"]["method"], "POST");
    assert_eq!(e["request"]["uri"], "/anything?api_key=******&x=1");
    assert!(!e.to_string().contains("leak"), "no secret anywhere: {e}");
    assert_eq!(
        e["request"]["headers"]["authorization"], "******",
        "client Authorization redacted"
    );
    assert_eq!(
        e["request"]["querystring"]["api_key"], "******",
        "auth.query values redacted"
    );
    assert_eq!(e["request"]["querystring"]["x"], "1");
    assert_eq!(e["response"]["status"], 200);
    assert_eq!(e["response"]["headers"]["content-type"], "application/json");
    assert!(e["latency"].as_f64().unwrap() > 0.0);
    assert_eq!(e["upstream"], env.mock.addr.to_string());
    assert!(!got[0].body.windows(13).any(|w| w == b"client-secret"));
    let s = &e["llm_summary"];
    assert_eq!(
        (
            s["model"].as_str(),
            s["prompt_tokens"].as_u64(),
            s["completion_tokens"].as_u64(),
            s["total_tokens"].as_u64()
        ),
        (Some("gpt-4"), Some(23), Some(8), Some(31))
    );
    assert_eq!(
        (
            s["stream"].as_bool(),
            s["has_tool_calls"].as_bool(),
            s["tool_count"].as_u64()
        ),
        (Some(false), Some(false), Some(0))
    );
    assert!(s["duration"].as_u64().is_some() && s["time_to_first_token"].as_u64().is_some());
    assert_eq!(
        e["llm_request"]["messages"][0]["content"],
        "You are a mathematician"
    );
    assert_eq!(e["llm_request"]["stream"], false);
    assert_eq!(e["llm_response_text"]["content"], "1+1 equals 2.");

    // Streams record their text too.
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string();
    send("POST", &env.url("/anything"), &JSON, body)
        .await
        .text();
    let got = wait_for(&receiver, 2).await;
    let e = got[1].json();
    assert_eq!(e["llm_summary"]["stream"], true);
    assert_eq!(e["llm_summary"]["total_tokens"], 21);
    assert_eq!(e["llm_response_text"]["content"], "1+1 equals 2.");
}

#[tokio::test]
async fn summaries_only_batching_and_failing_receivers() {
    let env = Env::start("log-batch").await;
    let receiver = Mock::start(MockConfig {
        key: None,
        record: true,
        ..Default::default()
    })
    .await;
    let mut ai = env.ai("openai", "");
    ai["logging"] = json!({"summaries": true});
    env.route_with(json!({"id": "b", "uri": "/b", "plugins": {"ai-proxy": ai,
        "http-logger": {"uri": format!("{}/batch", receiver.url()), "batch_max_size": 2, "concat_method": "new_line", "inactive_timeout": 1}}}))
        .await;
    for _ in 0..3 {
        assert_eq!(
            send("POST", &env.url("/b"), &JSON, chat_body())
                .await
                .status,
            200
        );
    }
    let got = wait_for(&receiver, 2).await;
    let first = String::from_utf8_lossy(&got[0].body).to_string();
    let lines: Vec<Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "two entries per batch, one per line");
    assert!(lines[0].get("llm_summary").is_some());
    assert!(lines[0].get("llm_request").is_none() && lines[0].get("llm_response_text").is_none());
    assert_eq!(
        String::from_utf8_lossy(&got[1].body).lines().count(),
        1,
        "the last one after inactive_timeout"
    );

    // A receiver that fails: requests are unaffected.
    let dead = ferry_testkit::free_port();
    env.route_with(json!({"id": "d", "uri": "/d", "plugins": {"ai-proxy": env.ai("openai", ""),
        "http-logger": {"uri": format!("http://127.0.0.1:{dead}/x"), "batch_max_size": 1, "max_retry_count": 1, "retry_delay": 0}}}))
        .await;
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            send("POST", &env.url("/d"), &JSON, chat_body())
                .await
                .status,
            200
        );
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a dead receiver never slows requests"
    );
}

#[tokio::test]
async fn file_logger_writes_json_lines_and_reopens() {
    let env = Env::start("log-file").await;
    let path = env.dir.0.join("logs/ai.jsonl");
    env.route_with(json!({"id": "f", "uri": "/f", "plugins": {"ai-proxy": env.ai("openai", ""),
        "file-logger": {"path": path.to_str().unwrap(), "include_req_body": true, "include_resp_body": true}}}))
        .await;
    send("POST", &env.url("/f"), &JSON, chat_body()).await;
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(5);
    while read(&path).is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e: Value = serde_json::from_str(read(&path).lines().next().unwrap()).unwrap();
    assert_eq!(e["route_id"], "f");
    assert_eq!(
        e["request"]["body"]["messages"][1]["content"],
        "What is 1+1?"
    );
    assert_eq!(
        e["response"]["body"]["choices"][0]["message"]["content"],
        "1+1 equals 2."
    );
    // logrotate: move the file, SIGUSR1, and the next entry goes to a new file.
    let rotated = env.dir.0.join("logs/ai.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    std::process::Command::new("kill")
        .args(["-USR1", &env.ferry.child.id().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    send("POST", &env.url("/f"), &JSON, chat_body()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while read(&path).is_empty() {
        assert!(Instant::now() < deadline, "no new file after SIGUSR1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read(&rotated).lines().count(), 1);
}

#[tokio::test]
async fn logger_schemas() {
    let env = Env::start("log-schema").await;
    for (plugins, want) in [
        (json!({"http-logger": {}}), "missing field `uri`"),
        (
            json!({"http-logger": {"uri": "ftp://x"}}),
            "expected an http or https URL",
        ),
        (
            json!({"http-logger": {"uri": "http://x", "concat_method": "xml"}}),
            "concat_method",
        ),
        (
            json!({"http-logger": {"uri": "http://x", "batch_max_size": 0}}),
            "batch_max_size",
        ),
        (json!({"file-logger": {}}), "missing field `path`"),
    ] {
        let (s, v) = env
            .ferry
            .admin(
                "PUT",
                "/routes/x",
                Some(json!({"uri": "/x", "plugins": plugins})),
            )
            .await;
        assert_eq!(s, 400);
        assert!(v["error_msg"].as_str().unwrap().contains(want), "{v}");
    }
    let (s, v) = env
        .ferry
        .admin(
            "PUT",
            "/routes/ok",
            Some(json!({"uri": "/x", "plugins": {"http-logger": {"uri": "http://127.0.0.1:1/x"}}})),
        )
        .await;
    assert_eq!(s, 201);
    // Stored as sent; the schema carries the defaults applied at compile time.
    assert_eq!(
        v["value"]["plugins"]["http-logger"],
        json!({"uri": "http://127.0.0.1:1/x"})
    );
    let (_, schema) = env.ferry.admin("GET", "/plugins/http-logger", None).await;
    let p = &schema["properties"];
    assert_eq!(
        (
            p["batch_max_size"]["default"].as_u64(),
            p["inactive_timeout"]["default"].as_u64(),
            p["concat_method"]["default"].as_str()
        ),
        (Some(1000), Some(5), Some("json")),
        "{schema}"
    );
}

#[tokio::test]
async fn an_unwritable_log_file_never_stops_requests() {
    let env = Env::start("log-unwritable").await;
    env.route_with(json!({"id": "u", "uri": "/u", "plugins": {"ai-proxy": env.ai("openai", ""), "prometheus": {},
        "file-logger": {"path": "/proc/ferry-cannot-write-here/x.log"}}}))
        .await;
    for _ in 0..5 {
        assert_eq!(
            send("POST", &env.url("/u"), &JSON, chat_body())
                .await
                .status,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let port = env.ferry.metrics_port.unwrap();
    let text = send(
        "GET",
        &format!("http://127.0.0.1:{port}/apisix/prometheus/metrics"),
        &[],
        "",
    )
    .await
    .text();
    let lost = text
        .lines()
        .find(|l| {
            l.starts_with("ferry_log_file_lost_total{path=\"/proc/ferry-cannot-write-here/x.log\"}")
        })
        .unwrap_or_else(|| panic!("no loss metric in {text}"));
    assert!(lost.ends_with(" 5"), "{lost}");
}

#[tokio::test]
async fn pending_entries_are_flushed_on_graceful_shutdown() {
    let mut env = Env::start("log-shutdown").await;
    let receiver = Mock::start(MockConfig {
        key: None,
        record: true,
        ..Default::default()
    })
    .await;
    env.route_with(json!({"id": "s", "uri": "/s", "plugins": {"ai-proxy": env.ai("openai", ""),
        "http-logger": {"uri": format!("{}/log", receiver.url()), "batch_max_size": 1000, "inactive_timeout": 60}}}))
        .await;
    for _ in 0..3 {
        assert_eq!(
            send("POST", &env.url("/s"), &JSON, chat_body())
                .await
                .status,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.requests().is_empty(), "batched, not sent yet");
    let status = tokio::task::spawn_blocking(move || {
        let s = env.ferry.terminate();
        (s, env)
    })
    .await
    .unwrap()
    .0;
    assert_eq!(status.code(), Some(0));
    let got = wait_for(&receiver, 1).await;
    assert_eq!(
        got[0].json().as_array().map(Vec::len),
        Some(3),
        "one batch of 3 sent at shutdown"
    );
}
