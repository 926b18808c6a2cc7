//! A file written one line at a time by a background thread through a bounded queue: a full
//! queue drops the line and counts it (never blocking a request), write errors are counted and
//! reported once per streak, and every file reopens on SIGUSR1 (logrotate).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

/// Bumped on SIGUSR1; each writer reopens when it sees a new value.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Asks every [`LineFile`] to reopen its file.
pub fn request_reopen() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Lines waiting for the writer, at most.
pub const QUEUE: usize = 16 * 1024;

enum Msg {
    Line(String),
    /// Flush everything queued before it, then acknowledge.
    Flush(SyncSender<()>),
}

/// One file and its writer thread.
pub struct LineFile {
    tx: SyncSender<Msg>,
    what: &'static str,
    dropped: AtomicU64,
    failed: Arc<AtomicU64>,
    last_warn: AtomicU64,
}

impl LineFile {
    /// Opens `path` for appending (creating its directory) and starts the writer; `what` names
    /// the file in messages.
    pub fn open(path: &Path, what: &'static str) -> Result<Arc<LineFile>, String> {
        let file = open(path, what)?;
        let (tx, rx) = sync_channel(QUEUE);
        let failed = Arc::new(AtomicU64::new(0));
        let path = path.to_path_buf();
        let f = failed.clone();
        std::thread::Builder::new()
            .name("ferry-log-writer".into())
            .spawn(move || writer(rx, file, path, what, f))
            .map_err(|e| format!("cannot start the {what} writer: {e}"))?;
        Ok(Arc::new(LineFile {
            tx,
            what,
            dropped: AtomicU64::new(0),
            failed,
            last_warn: AtomicU64::new(0),
        }))
    }

    /// Queues a line (it should end with `\\n`); drops and counts it when the writer is behind.
    pub fn submit(&self, line: String) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Msg::Line(line))
        {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if self.last_warn.swap(now, Ordering::Relaxed) != now {
                tracing::warn!(dropped_total = n, "{} queue full: lines dropped", self.what);
            }
        }
    }

    /// Waits (up to `timeout`) until every queued line is written.
    pub fn flush(&self, timeout: Duration) {
        let (ack_tx, ack_rx) = sync_channel(1);
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(timeout);
        }
    }

    /// Lines dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Lines lost to write errors (full or read-only disk).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

fn open(path: &Path, what: &str) -> Result<BufWriter<File>, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(|f| BufWriter::with_capacity(64 * 1024, f))
        .map_err(|e| format!("cannot open {what} {}: {e}", path.display()))
}

fn writer(
    rx: Receiver<Msg>,
    mut file: BufWriter<File>,
    path: PathBuf,
    what: &str,
    failed: Arc<AtomicU64>,
) {
    let mut seen = GENERATION.load(Ordering::SeqCst);
    let mut failing = false;
    let mut write = |file: &mut BufWriter<File>, msg: Msg| match msg {
        Msg::Line(l) => {
            let r = file.write_all(l.as_bytes());
            if let Err(e) = &r {
                failed.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::error!("{what} write to {} failed: {e}", path.display());
                }
            }
            failing = r.is_err();
        }
        Msg::Flush(ack) => {
            let _ = file.flush();
            let _ = ack.send(());
        }
    };
    loop {
        let msg = rx.recv_timeout(Duration::from_millis(200));
        let g = GENERATION.load(Ordering::SeqCst);
        if g != seen {
            seen = g;
            let _ = file.flush();
            match open(&path, what) {
                Ok(f) => file = f,
                Err(e) => tracing::error!("{what} reopen failed: {e}"),
            }
        }
        match msg {
            Ok(m) => {
                write(&mut file, m);
                // Flush once the queue is drained, so lines appear promptly.
                while let Ok(more) = rx.try_recv() {
                    write(&mut file, more);
                }
                let _ = file.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = file.flush();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_flushes_and_reopens() {
        let dir = std::env::temp_dir().join(format!("ferry-linefile-{}", std::process::id()));
        let path = dir.join("sub/x.log");
        let f = LineFile::open(&path, "test log").unwrap();
        f.submit("one\n".into());
        f.flush(Duration::from_secs(2));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        // logrotate: move the file away, signal, keep writing to a new file.
        let rotated = dir.join("sub/x.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        request_reopen();
        std::thread::sleep(Duration::from_millis(300));
        f.submit("two\n".into());
        f.flush(Duration::from_secs(2));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "one\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
