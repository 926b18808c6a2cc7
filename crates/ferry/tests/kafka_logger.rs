//! `kafka-logger` against a real Kafka-protocol broker (Tansu on 127.0.0.1): the docs'
//! "Send Request Log to Logger" example, records read back from the topic, and a broker that
//! goes away under load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, JSON, chat_body};
use ferry_testkit::send;
use ferry_testkit::tansu::Tansu;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The broker these tests need. They are `#[ignore]`d, so they run only when asked
/// (`--include-ignored`), and then a missing broker is a failure, never a silent pass.
fn broker() -> Tansu {
    Tansu::start().unwrap_or_else(|| {
        panic!("no Kafka-protocol broker: set FERRY_TANSU=$(tests/kafka/install-tansu.sh) first")
    })
}

/// Reads records from every partition of `topic`, from the beginning, until they hold `n` log
/// entries (a record is one entry, or an array of entries when `batch_max_size` > 1).
fn read(addr: &str, topic: &str, n: usize, wait: Duration) -> Vec<Vec<u8>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "ferry-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    // Every partition: a topic auto-created by the producer's metadata request (after a broker
    // restart lost it) may have several, and a record may be in any of them.
    let partitions: Vec<i32> = c
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()
        .and_then(|md| {
            md.topics()
                .iter()
                .find(|t| t.name() == topic)
                .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        })
        .filter(|v: &Vec<i32>| !v.is_empty())
        .unwrap_or_else(|| vec![0]);
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut entries = 0;
    let deadline = Instant::now() + wait;
    while entries < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let p = m.payload().unwrap_or_default().to_vec();
            entries += match serde_json::from_slice::<serde_json::Value>(&p) {
                Ok(serde_json::Value::Array(a)) => a.len(),
                _ => 1,
            };
            out.push(p);
        }
    }
    out
}

#[tokio::test]
#[ignore = "needs a Kafka-protocol broker: FERRY_TANSU=$(tests/kafka/install-tansu.sh) cargo test -- --include-ignored"]
async fn docs_example_records_reach_the_topic() {
    let kafka = broker();
    kafka.create_topic("test2");
    let env = Env::start("kafka-docs").await;
    let mut ai = env.ai("openai", "");
    ai["logging"] = json!({"summaries": true, "payloads": true});
    env.route_with(json!({"id": "kafka-logger-route", "uri": "/anything", "plugins": {
        "ai-proxy": ai,
        "kafka-logger": {"brokers": [{"host": "127.0.0.1", "port": kafka.port}], "kafka_topic": "test2", "key": "key1",
                         "batch_max_size": 1, "name": "kafka logger"}}}))
        .await;
    let r = send("POST", &env.url("/anything"), &JSON, chat_body()).await;
    assert_eq!(r.status, 200);
    let recs = tokio::task::spawn_blocking(move || {
        read(&kafka.addr(), "test2", 1, Duration::from_secs(20))
    })
    .await
    .unwrap();
    assert_eq!(recs.len(), 1, "no record in the topic");
    let e: Value = serde_json::from_slice(&recs[0]).unwrap();
    assert_eq!(e["route_id"], "kafka-logger-route");
    assert_eq!(e["llm_summary"]["model"], "gpt-4");
    assert_eq!(e["llm_summary"]["total_tokens"], 31);
    assert_eq!(
        e["llm_request"]["messages"][0]["content"],
        "You are a mathematician"
    );
    assert_eq!(e["llm_response_text"]["content"], "1+1 equals 2.");
}

#[tokio::test]
#[ignore = "needs a Kafka-protocol broker: FERRY_TANSU=$(tests/kafka/install-tansu.sh) cargo test -- --include-ignored"]
async fn broker_down_never_slows_requests_and_losses_are_bounded() {
    let mut kafka = broker();
    kafka.create_topic("down");
    let env = Env::start("kafka-down").await;
    env.route_with(json!({"id": "k", "uri": "/k", "plugins": {"ai-proxy": env.ai("openai", ""),
        "kafka-logger": {"brokers": [{"host": "127.0.0.1", "port": kafka.port}], "kafka_topic": "down",
                         "batch_max_size": 10, "inactive_timeout": 1, "timeout": 1}}}))
        .await;
    kafka.kill();
    let t = Instant::now();
    for _ in 0..200 {
        assert_eq!(
            send("POST", &env.url("/k"), &JSON, chat_body())
                .await
                .status,
            200
        );
    }
    let took = t.elapsed();
    eprintln!("200 requests with the broker down: {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "requests slowed down: {took:?}"
    );
}

#[tokio::test]
async fn unreachable_broker_at_start_and_schema() {
    let env = Env::start("kafka-schema").await;
    let dead = ferry_testkit::free_port();
    env.route_with(
        json!({"id": "u", "uri": "/u", "plugins": {"ai-proxy": env.ai("openai", ""),
        "kafka-logger": {"brokers": [{"host": "127.0.0.1", "port": dead}], "kafka_topic": "t"}}}),
    )
    .await;
    assert_eq!(
        send("POST", &env.url("/u"), &JSON, chat_body())
            .await
            .status,
        200
    );
    for (conf, want) in [
        (json!({"kafka_topic": "t"}), "missing field `brokers`"),
        (
            json!({"brokers": [], "kafka_topic": "t"}),
            "at least 1 items",
        ),
        (
            json!({"brokers": [{"host": "h", "port": 1}], "kafka_topic": "t", "meta_format": "xml"}),
            "meta_format",
        ),
        (
            json!({"brokers": [{"host": "h", "port": 1}], "kafka_topic": "t", "required_acks": 2}),
            "required_acks",
        ),
    ] {
        let (s, v) = env
            .ferry
            .admin(
                "PUT",
                "/routes/x",
                Some(json!({"uri": "/x", "plugins": {"kafka-logger": conf}})),
            )
            .await;
        assert_eq!(s, 400);
        assert!(v["error_msg"].as_str().unwrap().contains(want), "{v}");
    }
}

/// True when the broker knows `topic` with at least one partition.
fn topic_exists(addr: &str, topic: &str) -> bool {
    let Ok(c) = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create::<BaseConsumer>()
    else {
        return false;
    };
    c.fetch_metadata(Some(topic), Duration::from_secs(2))
        .is_ok_and(|md| {
            md.topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        })
}

#[tokio::test]
#[ignore = "needs a Kafka-protocol broker: FERRY_TANSU=$(tests/kafka/install-tansu.sh) cargo test -- --include-ignored"]
async fn entries_queued_while_the_broker_is_down_arrive_after_it_returns() {
    let mut kafka = broker();
    kafka.create_topic("again");
    let env = Env::start("kafka-restart").await;
    env.route_with(json!({"id": "r", "uri": "/r", "plugins": {"ai-proxy": env.ai("openai", ""),
        "kafka-logger": {"brokers": [{"host": "127.0.0.1", "port": kafka.port}], "kafka_topic": "again",
                         "batch_max_size": 5, "inactive_timeout": 1, "timeout": 2, "max_retry_count": 60, "retry_delay": 1}}}))
        .await;
    kafka.kill();
    for _ in 0..10 {
        assert_eq!(
            send("POST", &env.url("/r"), &JSON, chat_body())
                .await
                .status,
            200
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(kafka.restart(), "broker did not restart");
    // The broker kept its topics in memory: create the topic again. The producer's metadata
    // requests may create it first (then creating fails, and it exists); a broker still
    // starting up on a loaded machine gets up to 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let addr = kafka.addr();
        let exists = tokio::task::spawn_blocking(move || topic_exists(&addr, "again"))
            .await
            .unwrap();
        if exists || kafka.try_create_topic("again") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the topic could not be created again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let addr = kafka.addr();
    let recs =
        tokio::task::spawn_blocking(move || read(&addr, "again", 10, Duration::from_secs(90)))
            .await
            .unwrap();
    // batch_max_size 5: APISIX's shape, one record per batch holding a JSON array.
    let entries: Vec<serde_json::Value> = recs
        .iter()
        .flat_map(|r| {
            let v: serde_json::Value = serde_json::from_slice(r).unwrap();
            v.as_array().expect("a batch is an array").clone()
        })
        .collect();
    assert_eq!(
        entries.len(),
        10,
        "entries queued during the outage were delivered; ferry said:\n{}",
        env.ferry.stderr_text()
    );
    assert!(entries.iter().all(|e| e["route_id"] == "r"));
    assert!(recs.len() < 10, "batched into few records: {}", recs.len());
}

/// An unreachable broker is reported, not repeated several times a second; once no route uses
/// the producer it is released and the lines stop.
#[tokio::test]
async fn an_unreachable_broker_is_reported_not_flooded() {
    let env = Env::start("kafka-quiet").await;
    let dead = ferry_testkit::free_port();
    env.route_with(
        json!({"id": "q", "uri": "/q", "plugins": {"ai-proxy": env.ai("openai", ""),
        "kafka-logger": {"brokers": [{"host": "127.0.0.1", "port": dead}], "kafka_topic": "t", "timeout": 1}}}),
    )
    .await;
    assert_eq!(
        send("POST", &env.url("/q"), &JSON, chat_body())
            .await
            .status,
        200
    );
    let kafka_lines = || {
        env.ferry
            .stderr
            .lock()
            .unwrap()
            .lines()
            .filter(|l| l.contains("kafka:"))
            .count()
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after_4s = kafka_lines();
    assert!(after_4s >= 1, "the outage is reported");
    assert!(
        after_4s <= 6,
        "{after_4s} lines in 4 s: {}",
        env.ferry.stderr.lock().unwrap()
    );
    // The route goes: the producer is released (after its flush timeout) and the lines stop.
    let (s, _) = env.ferry.admin("DELETE", "/routes/q", None).await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let settled = kafka_lines();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        kafka_lines(),
        settled,
        "{}",
        env.ferry.stderr.lock().unwrap()
    );
}
