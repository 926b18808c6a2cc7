//! Keeps the data plane's snapshot in step with the store: rebuild on every announced
//! revision and swap atomically. Several quick writes coalesce into one rebuild.

use crate::plugin::Registry;
use crate::server::Shared;
use crate::snapshot::Snapshot;
use ferry_config::store::{Store, StoreError};
use std::sync::Arc;

/// Builds a snapshot of the store's current content.
pub async fn load(store: &dyn Store, registry: &Registry) -> Result<Snapshot, StoreError> {
    let s = store.snapshot().await?;
    let (snap, errors) = Snapshot::build(&s, registry);
    for e in errors {
        tracing::error!(
            revision = s.revision,
            "skipped while building the snapshot: {e}"
        );
    }
    Ok(snap)
}

/// Rebuilds and publishes whenever the store's revision moves. Runs until the store goes away.
pub async fn follow(store: Arc<dyn Store>, shared: Arc<Shared>, registry: Arc<Registry>) {
    let mut rx = store.watch();
    loop {
        let want = *rx.borrow_and_update();
        if want != shared.snapshot.load().revision {
            match load(store.as_ref(), &registry).await {
                Ok(snap) => {
                    tracing::debug!(
                        revision = snap.revision,
                        routes = snap.router.len(),
                        "snapshot published"
                    );
                    shared.publish(snap);
                }
                Err(e) => tracing::error!("cannot rebuild the snapshot: {e}"),
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
