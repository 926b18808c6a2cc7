//! A file written one line at a time by a background thread through a bounded queue: a full
//! queue drops the line and counts it (never blocking a request), write errors are counted and
//! reported once per streak, and every file reopens on SIGUSR1 (logrotate).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

fn registry() -> &'static std::sync::Mutex<Vec<std::sync::Weak<LineFile>>> {
    static R: std::sync::OnceLock<std::sync::Mutex<Vec<std::sync::Weak<LineFile>>>> =
        std::sync::OnceLock::new();
    R.get_or_init(|| std::sync::Mutex::new(Vec::new()))
}

/// Every line file in use (for metrics).
pub fn live() -> Vec<Arc<LineFile>> {
    registry()
        .lock()
        .map(|r| r.iter().filter_map(std::sync::Weak::upgrade).collect())
        .unwrap_or_default()
}

/// Bumped on SIGUSR1; each writer reopens when it sees a new value.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Asks every [`LineFile`] to reopen its file.
pub fn request_reopen() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// How often the writer looks for new lines.
const POLL: Duration = Duration::from_millis(10);

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
    pub path: PathBuf,
    dropped: AtomicU64,
    failed: Arc<AtomicU64>,
    last_warn: AtomicU64,
}

impl LineFile {
    /// Opens `path` for appending (creating its directory) and starts the writer; `what` names
    /// the file in messages. Fails when the file cannot be opened.
    pub fn open(path: &Path, what: &'static str) -> Result<Arc<LineFile>, String> {
        let file = open(path, what)?;
        Self::start(path, what, Some(file))
    }

    /// Like [`LineFile::open`], but a file that cannot be opened yet is not an error: lines are
    /// counted as failed until it can be (retried every few seconds and on SIGUSR1).
    pub fn open_lenient(path: &Path, what: &'static str) -> Result<Arc<LineFile>, String> {
        let file = match open(path, what) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!("{e}; lines are counted as lost until it opens");
                None
            }
        };
        Self::start(path, what, file)
    }

    fn start(
        path: &Path,
        what: &'static str,
        file: Option<BufWriter<File>>,
    ) -> Result<Arc<LineFile>, String> {
        let (tx, rx) = sync_channel(QUEUE);
        let failed = Arc::new(AtomicU64::new(0));
        let p = path.to_path_buf();
        let f = failed.clone();
        std::thread::Builder::new()
            .name("ferry-log-writer".into())
            .spawn(move || writer(rx, file, p, what, f))
            .map_err(|e| format!("cannot start the {what} writer: {e}"))?;
        let lf = Arc::new(LineFile {
            tx,
            what,
            path: path.to_path_buf(),
            dropped: AtomicU64::new(0),
            failed,
            last_warn: AtomicU64::new(0),
        });
        if let Ok(mut r) = registry().lock() {
            r.retain(|w| w.strong_count() > 0);
            r.push(Arc::downgrade(&lf));
        }
        Ok(lf)
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
    mut file: Option<BufWriter<File>>,
    path: PathBuf,
    what: &str,
    failed: Arc<AtomicU64>,
) {
    let mut seen = GENERATION.load(Ordering::SeqCst);
    let mut failing = false;
    let mut last_try = std::time::Instant::now();
    let mut write = |file: &mut Option<BufWriter<File>>, msg: Msg| match msg {
        Msg::Line(l) => {
            let r = match file.as_mut() {
                Some(f) => f.write_all(l.as_bytes()).map_err(|e| e.to_string()),
                None => Err("not open".to_string()),
            };
            if let Err(e) = &r {
                failed.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::error!("{what} write to {} failed: {e}", path.display());
                }
            }
            failing = r.is_err();
        }
        Msg::Flush(ack) => {
            if let Some(f) = file.as_mut() {
                let _ = f.flush();
            }
            let _ = ack.send(());
        }
    };
    // The writer polls instead of blocking on the queue: a request that queues a line then
    // never has to wake this thread (no futex, no context switch on the request path).
    loop {
        let g = GENERATION.load(Ordering::SeqCst);
        let retry = file.is_none() && last_try.elapsed() > Duration::from_secs(5);
        if g != seen || retry {
            seen = g;
            last_try = std::time::Instant::now();
            if let Some(f) = file.as_mut() {
                let _ = f.flush();
            }
            match open(&path, what) {
                Ok(f) => file = Some(f),
                Err(e) => tracing::error!("{what} reopen failed: {e}"),
            }
        }
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(m) => {
                    write(&mut file, m);
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if let Some(f) = file.as_mut() {
                        let _ = f.flush();
                    }
                    return;
                }
            }
        }
        if wrote && let Some(f) = file.as_mut() {
            let _ = f.flush();
        }
        std::thread::sleep(POLL);
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
