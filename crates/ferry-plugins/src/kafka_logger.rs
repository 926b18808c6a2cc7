//! APISIX's `kafka-logger` (priority 403): each request's log entry produced to a Kafka topic
//! with librdkafka, one record per entry, through the shared batch processor (bounded queue,
//! retries, drops counted). `meta_format: origin` sends the raw HTTP request instead.

use crate::kafka_quiet::QuietContext;
use crate::log::batch::{self, BatchConf, Batcher, SharedBatchers, Sink};
use crate::log::entry::Entry;
use crate::loggers::{Deliver, Logger};
use ferry_core::ctx::{Ctx, RouteInfo};
use ferry_core::plugin::{Plugin, PluginFactory, parse_conf};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Sasl {
    #[serde(default = "d_mechanism")]
    mechanism: String,
    user: String,
    password: String,
}

fn d_mechanism() -> String {
    "PLAIN".into()
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Broker {
    host: String,
    port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sasl_config: Option<Sasl>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Conf {
    brokers: Vec<Broker>,
    kafka_topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default = "d_producer_type")]
    producer_type: String,
    #[serde(default = "d_acks")]
    required_acks: i64,
    #[serde(default = "d_timeout")]
    timeout: u64,
    #[serde(default = "d_meta")]
    meta_format: String,
    #[serde(default)]
    include_req_body: bool,
    #[serde(default)]
    include_resp_body: bool,
    #[serde(default = "d_cluster")]
    cluster_name: u64,
    #[serde(default = "d_batch_num")]
    producer_batch_num: u64,
    #[serde(default = "d_batch_size")]
    producer_batch_size: u64,
    #[serde(default = "d_max_buffering")]
    producer_max_buffering: u64,
    #[serde(default = "d_linger")]
    producer_time_linger: u64,
    #[serde(default = "d_refresh")]
    meta_refresh_interval: u64,
    #[serde(default = "d_name")]
    name: String,
    #[serde(default = "batch::d_batch")]
    batch_max_size: u64,
    #[serde(default = "batch::d_inactive")]
    inactive_timeout: u64,
    #[serde(default = "batch::d_buffer")]
    buffer_duration: u64,
    #[serde(default)]
    max_retry_count: u64,
    #[serde(default = "batch::d_retry_delay")]
    retry_delay: u64,
}

fn d_producer_type() -> String {
    "async".into()
}
fn d_acks() -> i64 {
    1
}
fn d_timeout() -> u64 {
    3
}
fn d_meta() -> String {
    "default".into()
}
fn d_cluster() -> u64 {
    1
}
fn d_batch_num() -> u64 {
    200
}
fn d_batch_size() -> u64 {
    1_048_576
}
fn d_max_buffering() -> u64 {
    50_000
}
fn d_linger() -> u64 {
    1
}
fn d_refresh() -> u64 {
    30
}
fn d_name() -> String {
    "kafka logger".into()
}

impl Conf {
    fn validate(&self) -> Result<(), String> {
        if self.brokers.is_empty() {
            return Err(
                "property \"brokers\" validation failed: expect array to have at least 1 items"
                    .into(),
            );
        }
        for (i, b) in self.brokers.iter().enumerate() {
            if b.host.is_empty() || b.port == 0 {
                return Err(format!(
                    "property \"brokers[{i}]\" validation failed: host and port (1-65535) are required"
                ));
            }
            if let Some(s) = &b.sasl_config
                && !matches!(
                    s.mechanism.as_str(),
                    "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512"
                )
            {
                return Err(format!(
                    "property \"brokers[{i}].sasl_config.mechanism\" validation failed: matches none of the enum values"
                ));
            }
        }
        if self.kafka_topic.is_empty() {
            return Err("property \"kafka_topic\" validation failed: string too short".into());
        }
        if !matches!(self.producer_type.as_str(), "async" | "sync") {
            return Err("property \"producer_type\" validation failed: matches none of the enum values (async, sync)".into());
        }
        if !matches!(self.required_acks, -1..=1) {
            return Err("property \"required_acks\" validation failed: matches none of the enum values (1, -1, 0)".into());
        }
        if !matches!(self.meta_format.as_str(), "default" | "origin") {
            return Err("property \"meta_format\" validation failed: matches none of the enum values (default, origin)".into());
        }
        if self.timeout < 1 || self.cluster_name < 1 {
            return Err("property \"timeout\" and \"cluster_name\" must be 1 or more".into());
        }
        self.batch().validate()
    }

    fn batch(&self) -> BatchConf {
        BatchConf {
            name: self.name.clone(),
            batch_max_size: self.batch_max_size,
            inactive_timeout: self.inactive_timeout,
            buffer_duration: self.buffer_duration,
            max_retry_count: self.max_retry_count,
            retry_delay: self.retry_delay,
        }
    }

    fn producer(&self) -> Result<FutureProducer<QuietContext>, String> {
        let servers: Vec<String> = self
            .brokers
            .iter()
            .map(|b| format!("{}:{}", b.host, b.port))
            .collect();
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", servers.join(","))
            .set("acks", self.required_acks.to_string())
            .set("message.timeout.ms", (self.timeout * 1000).to_string())
            // librdkafka wants the linger below the delivery timeout.
            .set(
                "linger.ms",
                (self.producer_time_linger * 1000)
                    .min(self.timeout * 500)
                    .min(900_000)
                    .to_string(),
            )
            .set("batch.num.messages", self.producer_batch_num.to_string())
            .set("batch.size", self.producer_batch_size.to_string())
            .set(
                "queue.buffering.max.messages",
                self.producer_max_buffering.to_string(),
            )
            .set(
                "topic.metadata.refresh.interval.ms",
                (self.meta_refresh_interval * 1000).to_string(),
            );
        if let Some(s) = self.brokers.iter().find_map(|b| b.sasl_config.as_ref()) {
            c.set("security.protocol", "SASL_PLAINTEXT")
                .set("sasl.mechanisms", &s.mechanism)
                .set("sasl.username", &s.user)
                .set("sasl.password", &s.password);
        }
        c.create_with_context(QuietContext::new(&self.name))
            .map_err(|e| format!("kafka producer: {e}"))
    }
}

struct KafkaSink {
    producer: FutureProducer<QuietContext>,
    topic: String,
    key: Option<String>,
    timeout: Duration,
    /// `batch_max_size` 1: each entry is its own record (a JSON object); otherwise a batch is
    /// one record holding a JSON array of entries, as APISIX sends it.
    single: bool,
}

/// Largest record Ferry produces: below the broker's default `message.max.bytes` (1 MB). A
/// batch that would be larger is split into several arrays.
const MAX_RECORD: usize = 900_000;

/// The records for a batch: each entry on its own when `single`, else JSON arrays of entries
/// (each kept below [`MAX_RECORD`] unless a single entry is larger).
fn records(batch: &[Entry], single: bool) -> Vec<Vec<u8>> {
    if single {
        return batch.iter().map(|e| e.as_bytes().to_vec()).collect();
    }
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for e in batch {
        if !cur.is_empty() && cur.len() + e.as_bytes().len() + 4 > MAX_RECORD {
            cur.push(b']');
            out.push(std::mem::take(&mut cur));
        }
        cur.push(if cur.is_empty() { b'[' } else { b',' });
        e.write_json(&mut cur);
    }
    if !cur.is_empty() {
        cur.push(b']');
        out.push(cur);
    }
    out
}

impl Sink for KafkaSink {
    fn send<'a>(
        &'a self,
        batch: &'a [Entry],
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let payloads = records(batch, self.single);
            let sends = payloads.iter().map(|p| {
                let mut rec: FutureRecord<'_, str, [u8]> =
                    FutureRecord::to(&self.topic).payload(p.as_slice());
                if let Some(k) = &self.key {
                    rec = rec.key(k.as_str());
                }
                self.producer.send(rec, self.timeout)
            });
            let results = futures_util::future::join_all(sends).await;
            let failed = results.iter().filter(|r| r.is_err()).count();
            match results.into_iter().find_map(Result::err) {
                None => Ok(()),
                Some((e, _)) => Err(format!(
                    "kafka-logger: {failed} of {} records failed: {e}",
                    payloads.len()
                )),
            }
        })
    }

    fn drain(&self) {
        let _ = self.producer.flush(Duration::from_secs(3));
    }
}

/// Builds `kafka-logger` instances; producers are shared by identical configurations.
#[derive(Default)]
pub struct Factory {
    shared: SharedBatchers,
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "kafka-logger"
    }

    fn priority(&self) -> i32 {
        403
    }

    fn schema(&self) -> Value {
        batch::with_schema_props(
            json!({"type": "object", "required": ["brokers", "kafka_topic"], "properties": {
            "brokers": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["host", "port"], "properties": {
                "host": {"type": "string"}, "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "sasl_config": {"type": "object", "properties": {"mechanism": {"type": "string", "enum": ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], "default": "PLAIN"},
                    "user": {"type": "string"}, "password": {"type": "string"}}}}}},
            "kafka_topic": {"type": "string"}, "key": {"type": "string"},
            "producer_type": {"type": "string", "enum": ["async", "sync"], "default": "async"},
            "required_acks": {"type": "integer", "enum": [1, -1, 0], "default": 1},
            "timeout": {"type": "integer", "minimum": 1, "default": 3},
            "meta_format": {"type": "string", "enum": ["default", "origin"], "default": "default"},
            "include_req_body": {"type": "boolean", "default": false}, "include_resp_body": {"type": "boolean", "default": false},
            "cluster_name": {"type": "integer", "minimum": 1, "default": 1}}}),
        )
    }

    fn check(&self, conf: &Value) -> Result<Value, String> {
        let c: Conf = parse_conf(conf)?;
        c.validate()?;
        serde_json::to_value(&c).map_err(|e| e.to_string())
    }

    fn build(&self, conf: &Value, _route: &Arc<RouteInfo>) -> Result<Arc<dyn Plugin>, String> {
        let c: Conf = parse_conf(conf)?;
        c.validate()?;
        let key = serde_json::to_string(&c).map_err(|e| e.to_string())?;
        let batcher = self.shared.get_or_start(key, &c.batch(), || {
            let sink = KafkaSink {
                producer: c.producer()?,
                topic: c.kafka_topic.clone(),
                key: c.key.clone(),
                timeout: Duration::from_secs(c.timeout),
                single: c.batch_max_size == 1,
            };
            Ok(Arc::new(sink) as Arc<dyn Sink>)
        })?;
        Ok(Arc::new(Logger {
            output: KafkaOutput {
                batcher,
                origin: c.meta_format == "origin",
            },
            req_body: c.include_req_body,
            resp_body: c.include_resp_body,
        }))
    }
}

/// Kafka's output: the entry, or the raw request with `meta_format: origin`.
struct KafkaOutput {
    batcher: Arc<Batcher>,
    origin: bool,
}

impl Deliver for KafkaOutput {
    fn deliver(&self, ctx: &Ctx, req_body: bool, resp_body: bool) {
        if self.origin {
            self.batcher.push(Entry::Text(origin(ctx)));
        } else {
            self.batcher.deliver(ctx, req_body, resp_body);
        }
    }
}

/// `meta_format: origin`: the request as it arrived (request line, headers, body).
fn origin(ctx: &Ctx) -> String {
    let mut s = format!(
        "{} {} HTTP/1.1\r\n",
        ctx.method,
        ctx.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    for (k, v) in &ctx.headers {
        s.push_str(k.as_str());
        s.push_str(": ");
        s.push_str(&String::from_utf8_lossy(v.as_bytes()));
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    if let Some(b) = ctx.body() {
        s.push_str(&String::from_utf8_lossy(b));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn batches_are_arrays_split_below_the_record_limit() {
        let one = vec![Entry::Json(r#"{"a":1}"#.into())];
        assert_eq!(records(&one, true), vec![br#"{"a":1}"#.to_vec()]);
        assert_eq!(records(&one, false), vec![br#"[{"a":1}]"#.to_vec()]);
        let raw = vec![Entry::Text("GET / HTTP/1.1\r\n".into())];
        assert_eq!(records(&raw, true), vec![b"GET / HTTP/1.1\r\n".to_vec()]);
        assert_eq!(
            records(&raw, false),
            vec![br#"["GET / HTTP/1.1\r\n"]"#.to_vec()]
        );
        let big: Vec<Entry> = (0..40)
            .map(|i| Entry::Json(json!({"i": i, "pad": "x".repeat(50_000)}).to_string()))
            .collect();
        let recs = records(&big, false);
        assert!(recs.len() > 1);
        let mut n = 0;
        for r in &recs {
            assert!(r.len() <= MAX_RECORD);
            let v: Value = serde_json::from_slice(r).unwrap();
            for e in v.as_array().unwrap() {
                assert_eq!(e["i"], n);
                n += 1;
            }
        }
        assert_eq!(n, 40);
    }
}
