//! Keeps the [`Mirror`](crate::mirror::Mirror) equal to etcd: one watch on the whole prefix from
//! the loaded revision + 1, each response applied as one batch and announced; an idle watch is
//! re-created from the same revision; a compacted start revision or an etcd that went back in
//! time is answered with a re-list. When etcd is unreachable the mirror stays as it is (the
//! data plane keeps serving it) and the watch is retried with backoff: 100 ms doubling to 2 s,
//! ±20 % jitter, one log line when the connection is lost and one when it is back.

use crate::mirror::Kv;
use crate::store::{Inner, describe, kv_of};
use etcd_client::{EventType, WatchOptions};
use std::sync::Arc;
use std::time::Duration;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// Why a watch ended.
enum End {
    /// Idle for `watch_timeout`: re-create from the same revision, no pause.
    Idle,
    /// The start revision was compacted, or etcd's revision went backwards: re-list.
    Relist(String),
    /// etcd failed or went away: pause, then watch again.
    Failed(String),
}

/// The watch loop; runs for the life of the process.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut backoff = FIRST_RETRY;
    let mut lost: Option<String> = None;
    loop {
        let end = watch_once(&inner, &mut lost, &mut backoff).await;
        let failure = match end {
            End::Idle => None,
            End::Relist(why) => {
                tracing::info!("re-listing the configuration from etcd: {why}");
                relist(&inner).await.err()
            }
            End::Failed(e) => Some(e),
        };
        if let Some(e) = failure {
            if lost.is_none() {
                tracing::warn!(
                    "lost connection to etcd: {e}; serving the last configuration (revision {}) and retrying",
                    revision(&inner)
                );
                lost = Some(e);
            } else {
                tracing::debug!("etcd still unreachable: {e}");
            }
            let jitter = rand::random_range(0.8..1.2);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(MAX_RETRY);
        }
    }
}

fn revision(inner: &Inner) -> u64 {
    inner.mirror.read().map_or(0, |m| m.revision())
}

async fn relist(inner: &Inner) -> Result<(), String> {
    let (kvs, rev) = inner.list_all().await.map_err(|e| e.to_string())?;
    let (n, at) = {
        let mut m = inner.mirror.write().map_err(|_| "mirror lock poisoned")?;
        let n = m.relist(&inner.dec, &kvs, rev);
        (n, m.revision())
    };
    tracing::info!(revision = at, changes = n, "re-listed the configuration");
    inner.rev_tx.send_replace(at);
    Ok(())
}

async fn watch_once(inner: &Inner, lost: &mut Option<String>, backoff: &mut Duration) -> End {
    let from = revision(inner) + 1;
    let (endpoint, client) = inner.pool.current().await;
    let fail = |e: String| {
        inner.pool.failed(endpoint);
        End::Failed(format!("{}: {e}", inner.pool.host(endpoint)))
    };
    let mut client = match client {
        Ok(c) => c,
        Err(e) => return fail(describe(&e)),
    };
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(from as i64);
    let mut stream = match client.watch(inner.dec.layout.all(), Some(opts)).await {
        Ok(s) => s,
        Err(e) => return fail(describe(&e)),
    };
    loop {
        let msg = match tokio::time::timeout(inner.conf.watch_timeout, stream.message()).await {
            Err(_) => return End::Idle,
            Ok(Err(e)) => return fail(describe(&e)),
            Ok(Ok(None)) => return fail("the watch stream was closed".into()),
            Ok(Ok(Some(m))) => m,
        };
        if msg.compact_revision() > 0 {
            return End::Relist(format!(
                "revision {from} was compacted (etcd keeps {} and later)",
                msg.compact_revision()
            ));
        }
        if msg.canceled() {
            return End::Failed(format!("the watch was canceled: {}", msg.cancel_reason()));
        }
        let header = msg.header().map_or(0, |h| h.revision().max(0) as u64);
        if msg.created() {
            if header + 1 < from {
                return End::Relist(format!(
                    "etcd is at revision {header}, behind the {} already loaded (restored from a backup?)",
                    from - 1
                ));
            }
            if let Some(cause) = lost.take() {
                tracing::info!("reconnected to etcd (was: {cause}); resuming from revision {from}");
            }
            *backoff = FIRST_RETRY;
        }
        if msg.events().is_empty() {
            continue;
        }
        let events: Vec<Kv> = msg
            .events()
            .iter()
            .filter_map(|ev| {
                let kv = ev.kv()?;
                let mut k = kv_of(kv);
                if ev.event_type() == EventType::Delete {
                    k.value = None;
                }
                Some(k)
            })
            .collect();
        if events.len() > 1 {
            tracing::debug!(count = events.len(), "etcd events sent in bulk");
        }
        let at = match inner.mirror.write() {
            Ok(mut m) => {
                m.apply(&inner.dec, &events);
                m.revision()
            }
            Err(_) => return End::Failed("mirror lock poisoned".into()),
        };
        inner.rev_tx.send_replace(at);
    }
}
