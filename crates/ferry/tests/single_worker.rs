//! `ferry.worker_threads: 1` runs tokio's single-threaded scheduler, where the data plane, the
//! Admin API and shutdown share one thread: concurrent streams (passed through and converted)
//! all complete, an Admin write applies while a slow stream is open, and a graceful stop lets
//! an open stream finish before Ferry exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Env;
use ferry_testkit::send;
use serde_json::json;
use std::time::Duration;
use tokio::task::JoinSet;

fn stream_body() -> String {
    json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string()
}

fn anthropic_body() -> String {
    json!({"model": "gpt-4o", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string()
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_serves_streams_admin_writes_and_a_graceful_stop() {
    let mut env = Env::with_sections("one-worker", "  worker_threads: 1\n", "").await;
    let started = env.ferry.wait_stderr("started in ");
    assert!(
        started.contains(", 1 worker thread (single-threaded scheduler), started in "),
        "{started}"
    );
    env.route("chat", "/chat", env.ai("openai", "")).await;
    let mut ai = env.ai("openai", "");
    ai.as_object_mut().unwrap().remove("options");
    env.route("a2o", "/v1/messages", ai).await;

    // 64 streams at once, half of them converted for an Anthropic client.
    let mut set = JoinSet::new();
    for i in 0..64 {
        let (url, body, end) = if i % 2 == 0 {
            (env.url("/chat"), stream_body(), "data: [DONE]")
        } else {
            (
                env.url("/v1/messages"),
                anthropic_body(),
                "event: message_stop",
            )
        };
        set.spawn(async move {
            let r = send("POST", &url, &[JSON, ("x-mock-chunks", "8")], body).await;
            (r.status.as_u16(), r.text().contains(end))
        });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap(), (200, true));
    }

    // A slow stream stays open while an Admin write applies and the new route serves.
    let slow = |env: &Env| {
        let url = env.url("/chat");
        tokio::spawn(async move {
            let knobs = [
                JSON,
                ("x-mock-chunks", "5"),
                ("x-mock-chunk-delay-ms", "200"),
            ];
            let r = send("POST", &url, &knobs, stream_body()).await;
            (r.status, r.text())
        })
    };
    let open = slow(&env);
    tokio::time::sleep(Duration::from_millis(150)).await;
    env.route("later", "/later", env.ai("openai", "")).await;
    let r = send("POST", &env.url("/later"), &[JSON], stream_body()).await;
    assert_eq!(r.status, 200);
    let (status, text) = open.await.unwrap();
    assert_eq!(status, 200);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");

    // A graceful stop while a slow stream is open: the stream finishes, Ferry exits 0.
    let open = slow(&env);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let code = tokio::task::spawn_blocking(move || env.ferry.terminate().code())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    let (status, text) = open.await.unwrap();
    assert_eq!(status, 200);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}
