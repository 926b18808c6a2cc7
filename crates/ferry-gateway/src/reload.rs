//! Keeps the data plane's snapshot in step with the store: on every announced revision, the
//! writes since the last one are applied to the [`Compiler`] (only the routes they touch are
//! recompiled) and the new snapshot is swapped in atomically. Several quick writes coalesce
//! into one update; a follower that fell behind the store's change window reloads everything.

use crate::server::Shared;
use crate::snapshot::Compiler;
use ferry_config::store::{Store, StoreError};
use ferry_core::plugin::Registry;
use std::sync::Arc;

/// Compiles the store's current content into `c`.
pub async fn load(
    mut c: Compiler,
    store: &dyn Store,
    registry: &Registry,
) -> Result<Compiler, StoreError> {
    reload_all(&mut c, store, registry).await?;
    Ok(c)
}

async fn reload_all(
    c: &mut Compiler,
    store: &dyn Store,
    registry: &Registry,
) -> Result<(), StoreError> {
    let s = store.snapshot().await?;
    report(s.revision, c.load(&s, registry));
    Ok(())
}

fn report(revision: u64, errors: Vec<String>) {
    for e in errors {
        tracing::error!(revision, "skipped while building the snapshot: {e}");
    }
}

/// Brings `c` up to the store's current revision: the changes since its revision, or
/// everything when the store no longer has them.
pub async fn catch_up(
    c: &mut Compiler,
    store: &dyn Store,
    registry: &Registry,
) -> Result<(), StoreError> {
    match store.changes_since(c.revision()).await? {
        Some(changes) => {
            let errors = c.apply(&changes, registry);
            report(c.revision(), errors);
            Ok(())
        }
        None => reload_all(c, store, registry).await,
    }
}

/// What a follower applies: the writes since its revision, or everything.
enum Update {
    Changes(Vec<ferry_config::store::Change>),
    All(ferry_config::store::StoreSnapshot),
}

fn lock(c: &std::sync::Mutex<Compiler>) -> std::sync::MutexGuard<'_, Compiler> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Follows the store's revisions and publishes each update. Compiling (plugin instances may
/// open files or create producers) runs on the blocking pool, off the request workers. Runs
/// until the store goes away.
pub async fn follow(
    store: Arc<dyn Store>,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    compiler: Compiler,
) {
    let compiler = Arc::new(std::sync::Mutex::new(compiler));
    let mut rx = store.watch();
    loop {
        let want = *rx.borrow_and_update();
        let have = lock(&compiler).revision();
        if want != have {
            let update = match store.changes_since(have).await {
                Ok(Some(changes)) => Ok(Update::Changes(changes)),
                Ok(None) => store.snapshot().await.map(Update::All),
                Err(e) => Err(e),
            };
            match update {
                Ok(u) => {
                    let (c, r, sh) = (compiler.clone(), registry.clone(), shared.clone());
                    let done = tokio::task::spawn_blocking(move || {
                        let mut c = lock(&c);
                        let errors = match u {
                            Update::Changes(ch) => c.apply(&ch, &r),
                            Update::All(s) => c.load(&s, &r),
                        };
                        report(c.revision(), errors);
                        let snap = c.snapshot();
                        tracing::debug!(
                            revision = snap.revision,
                            routes = snap.router.len(),
                            "snapshot published"
                        );
                        sh.publish(snap);
                    })
                    .await;
                    if let Err(e) = done {
                        tracing::error!("cannot update the snapshot: {e}");
                    }
                }
                Err(e) => tracing::error!("cannot update the snapshot: {e}"),
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
