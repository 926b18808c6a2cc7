//! The access log: `access_log_format` compiled once into literal and variable segments,
//! rendered at the end of each request, and written by a background thread through a bounded
//! queue (full queue: the line is dropped and counted, never blocking a request). SIGUSR1
//! reopens the file for logrotate.

use ferry_config::app::{AccessLogConf, LogEscape};
use ferry_config::{Var, VarSource};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;

#[derive(Debug)]
enum Seg {
    Lit(String),
    Var(Var),
}

/// A compiled `access_log_format`.
#[derive(Debug)]
pub struct Template {
    segs: Vec<Seg>,
    escape: LogEscape,
}

impl Template {
    /// Compiles `$name` and `${name}` references; `$` not followed by a name stays literal.
    pub fn compile(format: &str, escape: LogEscape) -> Result<Template, String> {
        let mut segs = Vec::new();
        let mut lit = String::new();
        let b = format.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'$' {
                let (name, next) = if b.get(i + 1) == Some(&b'{') {
                    let end = format[i + 2..]
                        .find('}')
                        .ok_or_else(|| format!("unterminated ${{ at byte {i}"))?;
                    (&format[i + 2..i + 2 + end], i + 3 + end)
                } else {
                    let end = b[i + 1..]
                        .iter()
                        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                        .map_or(b.len(), |p| i + 1 + p);
                    (&format[i + 1..end], end)
                };
                if !name.is_empty() {
                    if !lit.is_empty() {
                        segs.push(Seg::Lit(std::mem::take(&mut lit)));
                    }
                    segs.push(Seg::Var(Var::parse(name)?));
                    i = next;
                    continue;
                }
            }
            let ch = format[i..].chars().next().unwrap_or('$');
            lit.push(ch);
            i += ch.len_utf8();
        }
        if !lit.is_empty() {
            segs.push(Seg::Lit(lit));
        }
        Ok(Template { segs, escape })
    }

    /// Renders one line (without the newline). Unset variables print as `-`, as nginx does.
    pub fn render(&self, src: &dyn VarSource, out: &mut String) {
        for s in &self.segs {
            match s {
                Seg::Lit(l) => out.push_str(l),
                Seg::Var(v) => match src.get(v).to_text() {
                    Some(t) if !t.is_empty() => escape_into(&t, self.escape, out),
                    _ => out.push('-'),
                },
            }
        }
    }
}

fn escape_into(s: &str, mode: LogEscape, out: &mut String) {
    match mode {
        LogEscape::None => out.push_str(s),
        LogEscape::Default => {
            for &b in s.as_bytes() {
                if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
                    out.push_str(&format!("\\x{b:02X}"));
                } else {
                    out.push(b as char);
                }
            }
        }
        LogEscape::Json => {
            let quoted = serde_json::Value::String(s.to_string()).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
        }
    }
}

/// `$time_local`: `25/Nov/2026:15:38:05 +0000` (UTC).
pub fn time_local(t: SystemTime) -> String {
    let d = OffsetDateTime::from(t);
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        d.day(),
        MON[d.month() as usize - 1],
        d.year(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// `$time_iso8601`: `2026-11-25T15:38:05+00:00` (UTC).
pub fn time_iso8601(t: SystemTime) -> String {
    let d = OffsetDateTime::from(t);
    format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
        d.year(),
        d.month() as u8,
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// Requests a reopen of every access-log file (SIGUSR1).
static REOPEN: AtomicBool = AtomicBool::new(false);

pub fn request_reopen() {
    REOPEN.store(true, Ordering::SeqCst);
}

/// The access-log sink: a bounded queue in front of a writer thread.
pub struct AccessLog {
    pub template: Template,
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    last_warn: AtomicU64,
}

const QUEUE: usize = 16 * 1024;

enum Msg {
    Line(String),
    /// Flush everything queued before it, then acknowledge.
    Flush(SyncSender<()>),
}

impl AccessLog {
    /// Opens the file (creating its directory) and starts the writer thread.
    pub fn start(conf: &AccessLogConf) -> Result<Arc<AccessLog>, String> {
        let template = Template::compile(&conf.format, conf.escape)
            .map_err(|e| format!("nginx_config.http.access_log_format: {e}"))?;
        let file = open(&conf.path)?;
        let (tx, rx) = sync_channel(QUEUE);
        let path = conf.path.clone();
        std::thread::Builder::new()
            .name("ferry-access-log".into())
            .spawn(move || writer(rx, file, path))
            .map_err(|e| format!("cannot start access-log thread: {e}"))?;
        Ok(Arc::new(AccessLog {
            template,
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            last_warn: AtomicU64::new(0),
        }))
    }

    /// Queues a finished line; drops it (and counts) when the writer is behind.
    pub fn submit(&self, line: String) {
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                if self.last_warn.swap(now, Ordering::Relaxed) != now {
                    tracing::warn!(dropped_total = n, "access log queue full: lines dropped");
                }
            }
        }
    }

    /// Waits (up to `timeout`) until every queued line is on disk.
    pub fn flush(&self, timeout: Duration) {
        let (ack_tx, ack_rx) = sync_channel(1);
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(timeout);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn open(path: &Path) -> Result<BufWriter<File>, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(|f| BufWriter::with_capacity(64 * 1024, f))
        .map_err(|e| format!("cannot open access log {}: {e}", path.display()))
}

fn writer(rx: Receiver<Msg>, mut file: BufWriter<File>, path: PathBuf) {
    let mut failing = false;
    let mut write = |file: &mut BufWriter<File>, msg: Msg| match msg {
        Msg::Line(l) => {
            let r = file.write_all(l.as_bytes());
            if let Err(e) = &r
                && !failing
            {
                tracing::error!("access log write to {} failed: {e}", path.display());
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
        if REOPEN.swap(false, Ordering::SeqCst) {
            let _ = file.flush();
            match open(&path) {
                Ok(f) => file = f,
                Err(e) => tracing::error!("access log reopen failed: {e}"),
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
    use ferry_config::Val;
    use ferry_config::var::Builtin;

    struct Src;
    impl VarSource for Src {
        fn get(&self, v: &Var) -> Val<'_> {
            match v {
                Var::Builtin(Builtin::Status) => Val::str("200"),
                Var::Builtin(Builtin::Request) => Val::str("GET /a\"b HTTP/1.1"),
                Var::Custom(n) if n == "llm_model" => Val::str("gpt-4"),
                _ => Val::Nil,
            }
        }
    }

    fn render(fmt: &str, esc: LogEscape) -> String {
        let t = Template::compile(fmt, esc).unwrap();
        let mut s = String::new();
        t.render(&Src, &mut s);
        s
    }

    #[test]
    fn templates() {
        assert_eq!(
            render("$status $llm_model $upstream_addr", LogEscape::Default),
            "200 gpt-4 -"
        );
        assert_eq!(render("${status}x $ $", LogEscape::Default), "200x $ $");
        assert_eq!(
            render("\"$request\"", LogEscape::Default),
            "\"GET /a\\x22b HTTP/1.1\""
        );
        assert_eq!(render("$request", LogEscape::Json), "GET /a\\\"b HTTP/1.1");
        assert_eq!(render("é$status", LogEscape::None), "é200");
        assert!(Template::compile("${status", LogEscape::Default).is_err());
    }

    #[test]
    fn times() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_707_485);
        assert_eq!(time_local(t), "26/Nov/2026:15:38:05 +0000");
        assert_eq!(time_iso8601(t), "2026-11-26T15:38:05+00:00");
    }
}
