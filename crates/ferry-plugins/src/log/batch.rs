//! APISIX's batch processor: entries queue (bounded) in front of one task per logger
//! configuration, which sends them in batches by size (`batch_max_size`), by quiet time
//! (`inactive_timeout`) or by age (`buffer_duration`), retrying failed batches
//! (`max_retry_count`, `retry_delay`). A full queue drops and counts; nothing ever waits on a
//! sink. Pending entries are flushed on graceful shutdown.

use super::entry::Entry;
use ferry_core::shared::WeakCache;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The batch-processor fields every logger plugin accepts, with APISIX's defaults.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct BatchConf {
    #[serde(default = "d_name")]
    pub name: String,
    #[serde(default = "d_batch")]
    pub batch_max_size: u64,
    #[serde(default = "d_inactive")]
    pub inactive_timeout: u64,
    #[serde(default = "d_buffer")]
    pub buffer_duration: u64,
    #[serde(default)]
    pub max_retry_count: u64,
    #[serde(default = "d_retry_delay")]
    pub retry_delay: u64,
}

fn d_name() -> String {
    "batch-processor".into()
}
/// APISIX's defaults for the batch-processor fields, shared by every logger's schema.
pub(crate) fn d_batch() -> u64 {
    1000
}
pub(crate) fn d_inactive() -> u64 {
    5
}
pub(crate) fn d_buffer() -> u64 {
    60
}
pub(crate) fn d_retry_delay() -> u64 {
    1
}

impl BatchConf {
    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in [
            ("batch_max_size", self.batch_max_size),
            ("inactive_timeout", self.inactive_timeout),
            ("buffer_duration", self.buffer_duration),
        ] {
            if v < 1 {
                return Err(format!(
                    "property \"{k}\" validation failed: expected 1 or more, got {v}"
                ));
            }
        }
        Ok(())
    }

    /// Entries that may wait for the sink before new ones are dropped.
    pub fn queue_bound(&self) -> usize {
        (self.batch_max_size as usize)
            .saturating_mul(10)
            .clamp(1000, 100_000)
    }
}

/// Where batches go.
pub trait Sink: Send + Sync {
    fn send<'a>(
        &'a self,
        batch: &'a [Entry],
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
    /// Waits until what `send` accepted is really out (a flush; shutdown).
    fn drain(&self) {}
}

enum Msg {
    Entry(Entry),
    Flush(oneshot::Sender<()>),
}

/// Counters of one processor.
#[derive(Debug, Default)]
pub struct Stats {
    /// Entries delivered.
    pub sent: AtomicU64,
    /// Entries dropped: queue full, or a batch that failed every retry.
    pub dropped: AtomicU64,
    /// Entries waiting in the queue.
    pub queued: AtomicU64,
}

/// One running processor.
pub struct Batcher {
    tx: mpsc::Sender<Msg>,
    pub name: String,
    pub stats: Arc<Stats>,
    last_warn: AtomicU64,
}

fn registry() -> &'static Mutex<Vec<Weak<Batcher>>> {
    static R: OnceLock<Mutex<Vec<Weak<Batcher>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Vec::new()))
}

impl Batcher {
    /// Starts a processor on the current runtime.
    pub fn start(conf: &BatchConf, sink: Arc<dyn Sink>) -> Arc<Batcher> {
        let (tx, rx) = mpsc::channel(conf.queue_bound());
        let stats = Arc::new(Stats::default());
        tokio::spawn(run(conf.clone(), sink, rx, stats.clone()));
        let b = Arc::new(Batcher {
            tx,
            name: conf.name.clone(),
            stats,
            last_warn: AtomicU64::new(0),
        });
        if let Ok(mut r) = registry().lock() {
            r.retain(|w| w.strong_count() > 0);
            r.push(Arc::downgrade(&b));
        }
        b
    }

    /// Queues an entry; drops and counts it when the queue is full.
    pub fn push(&self, v: Entry) {
        match self.tx.try_send(Msg::Entry(v)) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                if self.last_warn.swap(now, Ordering::Relaxed) != now {
                    tracing::warn!(logger = %self.name, dropped_total = n, "log queue full: entries dropped");
                }
            }
        }
    }

    /// Sends everything queued so far (bounded by `timeout`).
    pub async fn flush(&self, timeout: Duration) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = tokio::time::timeout(timeout, done).await;
        }
    }
}

/// Processors shared by instances with identical logger configurations, so a rebuilt route
/// keeps the one already running (and its queue); a processor no instance uses any more ends
/// (after sending what it holds), and with it its sink's connections or producer.
#[derive(Default)]
pub struct SharedBatchers(WeakCache<String, Batcher>);

impl SharedBatchers {
    /// The processor for `key` (the serialised configuration), started with `sink()` if new.
    pub fn get_or_start(
        &self,
        key: String,
        conf: &BatchConf,
        sink: impl FnOnce() -> Result<Arc<dyn Sink>, String>,
    ) -> Result<Arc<Batcher>, String> {
        self.0
            .get_or_try_insert(key, || Ok(Batcher::start(conf, sink()?)))
    }
}

/// The batch processor's fields in a logger's JSON schema, added to its own `properties`.
pub fn with_schema_props(mut schema: serde_json::Value) -> serde_json::Value {
    let props = serde_json::json!({
        "batch_max_size": {"type": "integer", "minimum": 1, "default": d_batch()},
        "inactive_timeout": {"type": "integer", "minimum": 1, "default": d_inactive()},
        "buffer_duration": {"type": "integer", "minimum": 1, "default": d_buffer()},
        "max_retry_count": {"type": "integer", "minimum": 0, "default": 0},
        "retry_delay": {"type": "integer", "minimum": 0, "default": d_retry_delay()}});
    if let (Some(target), Some(extra)) = (
        schema.get_mut("properties").and_then(|p| p.as_object_mut()),
        props.as_object(),
    ) {
        target.extend(extra.clone());
    }
    schema
}

/// Every processor still in use.
pub fn live() -> Vec<Arc<Batcher>> {
    registry()
        .lock()
        .map(|r| r.iter().filter_map(Weak::upgrade).collect())
        .unwrap_or_default()
}

/// Flushes every live processor (graceful shutdown).
pub async fn flush_all(timeout: Duration) {
    for b in live() {
        b.flush(timeout).await;
    }
}

async fn deliver(conf: &BatchConf, sink: &dyn Sink, batch: &mut Vec<Entry>, stats: &Stats) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let mut attempt = 0;
    loop {
        match sink.send(batch).await {
            Ok(()) => {
                stats.sent.fetch_add(n, Ordering::Relaxed);
                break;
            }
            Err(e) if attempt < conf.max_retry_count => {
                attempt += 1;
                tracing::warn!(logger = %conf.name, attempt, "log batch failed, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(conf.retry_delay) * attempt as u32).await;
            }
            Err(e) => {
                stats.dropped.fetch_add(n, Ordering::Relaxed);
                tracing::error!(logger = %conf.name, entries = n, "log batch dropped: {e}");
                break;
            }
        }
    }
    stats.queued.fetch_sub(
        n.min(stats.queued.load(Ordering::Relaxed)),
        Ordering::Relaxed,
    );
    batch.clear();
}

/// Waits for the sink to push out what it holds (a Kafka producer's flush blocks its thread):
/// on the blocking pool, off the request workers.
async fn drain(sink: &Arc<dyn Sink>) {
    let s = sink.clone();
    let _ = tokio::task::spawn_blocking(move || s.drain()).await;
}

async fn run(conf: BatchConf, sink: Arc<dyn Sink>, mut rx: mpsc::Receiver<Msg>, stats: Arc<Stats>) {
    let max = conf.batch_max_size as usize;
    let inactive = Duration::from_secs(conf.inactive_timeout);
    let age = Duration::from_secs(conf.buffer_duration);
    let mut batch: Vec<Entry> = Vec::new();
    let mut first_at = Instant::now();
    let mut last_at = first_at;
    // One timer, armed for the batch's first entry and moved on (not per entry) when it
    // fires early because later entries arrived.
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    loop {
        let msg = if batch.is_empty() {
            rx.recv().await
        } else {
            tokio::select! {
                m = rx.recv() => m,
                _ = &mut timer => {
                    let due = (last_at + inactive).min(first_at + age);
                    if Instant::now() >= due {
                        deliver(&conf, sink.as_ref(), &mut batch, &stats).await;
                    } else {
                        timer.as_mut().reset(due);
                    }
                    continue;
                }
            }
        };
        match msg {
            Some(Msg::Entry(v)) => {
                last_at = Instant::now();
                if batch.is_empty() {
                    first_at = last_at;
                    timer
                        .as_mut()
                        .reset((last_at + inactive).min(first_at + age));
                }
                batch.push(v);
                if batch.len() >= max {
                    deliver(&conf, sink.as_ref(), &mut batch, &stats).await;
                }
            }
            Some(Msg::Flush(ack)) => {
                deliver(&conf, sink.as_ref(), &mut batch, &stats).await;
                drain(&sink).await;
                let _ = ack.send(());
            }
            None => {
                deliver(&conf, sink.as_ref(), &mut batch, &stats).await;
                drain(&sink).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_props_join_the_logger_properties() {
        let s =
            with_schema_props(json!({"type": "object", "properties": {"uri": {"type": "string"}}}));
        assert_eq!(s["properties"]["uri"]["type"], "string");
        assert_eq!(s["properties"]["batch_max_size"]["default"], 1000);
        assert_eq!(s["properties"]["retry_delay"]["minimum"], 0);
    }
    use serde_json::json;

    struct Collect {
        got: Mutex<Vec<usize>>,
        fail_first: AtomicU64,
    }

    impl Sink for Collect {
        fn send<'a>(
            &'a self,
            batch: &'a [Entry],
        ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
            Box::pin(async move {
                if self.fail_first.load(Ordering::SeqCst) > 0 {
                    self.fail_first.fetch_sub(1, Ordering::SeqCst);
                    return Err("down".into());
                }
                self.got.lock().unwrap().push(batch.len());
                Ok(())
            })
        }
    }

    fn conf(max: u64, retries: u64) -> BatchConf {
        BatchConf {
            name: "t".into(),
            batch_max_size: max,
            inactive_timeout: 1,
            buffer_duration: 60,
            max_retry_count: retries,
            retry_delay: 0,
        }
    }

    #[tokio::test]
    async fn batches_by_size_then_by_quiet_time_and_flush() {
        let sink = Arc::new(Collect {
            got: Mutex::new(vec![]),
            fail_first: AtomicU64::new(0),
        });
        let b = Batcher::start(&conf(3, 0), sink.clone());
        for i in 0..7 {
            b.push(Entry::Json(json!({"i": i}).to_string()));
        }
        b.flush(Duration::from_secs(2)).await;
        assert_eq!(*sink.got.lock().unwrap(), vec![3, 3, 1]);
        b.push(Entry::Json(json!({}).to_string()));
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(
            *sink.got.lock().unwrap(),
            vec![3, 3, 1, 1],
            "inactive_timeout sends"
        );
        assert_eq!(b.stats.sent.load(Ordering::Relaxed), 8);
    }

    /// A sink whose drain blocks its thread (as a Kafka producer's flush does).
    struct SlowDrain;

    impl Sink for SlowDrain {
        fn send<'a>(
            &'a self,
            _batch: &'a [Entry],
        ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
            Box::pin(async { Ok(()) })
        }

        fn drain(&self) {
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// On a single-threaded runtime, other tasks keep running while a sink drains.
    #[tokio::test(flavor = "current_thread")]
    async fn a_blocking_drain_does_not_stall_the_runtime() {
        let b = Batcher::start(&conf(10, 0), Arc::new(SlowDrain));
        b.push(Entry::Json(json!({}).to_string()));
        let ticks = Arc::new(AtomicU64::new(0));
        let t = ticks.clone();
        let ticker = tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                t.fetch_add(1, Ordering::SeqCst);
            }
        });
        b.flush(Duration::from_secs(2)).await;
        // 500 ms of draining: the 10 ms ticker ran meanwhile (blocked, it would not have).
        assert!(ticks.load(Ordering::SeqCst) >= 10, "{ticks:?}");
        ticker.abort();
    }

    #[tokio::test]
    async fn retries_then_drops_and_counts() {
        let sink = Arc::new(Collect {
            got: Mutex::new(vec![]),
            fail_first: AtomicU64::new(1),
        });
        let b = Batcher::start(&conf(2, 1), sink.clone());
        b.push(Entry::Json(json!({}).to_string()));
        b.push(Entry::Json(json!({}).to_string()));
        b.flush(Duration::from_secs(2)).await;
        assert_eq!(*sink.got.lock().unwrap(), vec![2], "retried once");
        sink.fail_first.store(5, Ordering::SeqCst);
        b.push(Entry::Json(json!({}).to_string()));
        b.flush(Duration::from_secs(2)).await;
        assert_eq!(b.stats.dropped.load(Ordering::Relaxed), 1);
    }
}
