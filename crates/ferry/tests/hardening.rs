//! Client faults against the data plane: a slow-loris head or body is cut at its timeout, an
//! idle kept-alive connection closes at `keepalive_timeout`, a reader that stops reading is cut
//! at `send_timeout` (and the upstream stream stops), the connection cap closes extra
//! connections with a log line, and 10,000 idle connections leave room for one more request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BIN, Env};
use ferry_testkit::{Ferry, TempDir};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One-second client clocks (under `nginx_config.http`).
const CLOCKS: &str = "    client_header_timeout: 1s\n    client_body_timeout: 1s\n    keepalive_timeout: 1s\n    send_timeout: 1s\n";

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).await.unwrap()
}

/// Reads until the server closes the connection (or `limit` passes); returns what came and
/// when the close came.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let t = Instant::now();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = limit.saturating_sub(t.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return (out, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, Some(t.elapsed())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Polls `f` until it holds or `limit` passes.
async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

#[tokio::test]
async fn a_slow_loris_head_is_cut_at_client_header_timeout() {
    let env = Env::with_extra("hard-head", CLOCKS).await;
    env.route("r", "/r", env.ai("openai", "")).await;
    let mut s = connect(env.ferry.port).await;
    let t = Instant::now();
    s.write_all(b"GET /r HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header line every 200 ms: bytes keep coming, the head never completes.
    let mut closed = false;
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut b = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await
        {
            closed = true;
            break;
        }
    }
    let took = t.elapsed();
    assert!(closed, "the trickled head was not cut");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "cut after {took:?}, expected about 1 s"
    );
    assert_eq!(env.mock.count("/v1/chat/completions"), 0);
}

#[tokio::test]
async fn a_stalled_body_is_cut_at_client_body_timeout_and_a_trickled_one_is_not() {
    let env = Env::with_extra("hard-body", CLOCKS).await;
    env.route("r", "/r", env.ai("openai", "")).await;
    let body = common::chat_body();
    let head = format!(
        "POST /r HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // Part of the body, then nothing: 408 and the end of the connection, nothing upstream.
    let mut s = connect(env.ferry.port).await;
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body.as_bytes()[..10]).await.unwrap();
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    let took = closed.expect("the connection was not closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("client_body_timeout"), "{text}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(env.mock.count("/v1/chat/completions"), 0);
    // The same body in five pieces 300 ms apart (1.5 s in all, no gap of 1 s) is served.
    let mut s = connect(env.ferry.port).await;
    s.write_all(head.as_bytes()).await.unwrap();
    let piece = body.len().div_ceil(5);
    for c in body.as_bytes().chunks(piece) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(c).await.unwrap();
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(env.mock.count("/v1/chat/completions"), 1);
}

#[tokio::test]
async fn an_idle_connection_closes_at_keepalive_timeout() {
    let env = Env::with_extra("hard-idle", CLOCKS).await;
    let mut s = connect(env.ferry.port).await;
    let req = b"GET /none HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    // Reused while it is used within the timeout.
    for _ in 0..3 {
        s.write_all(req).await.unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 404"));
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    s.write_all(req).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 404"));
    let t = Instant::now();
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    let took = closed.expect("the idle connection stayed open");
    assert!(
        t.elapsed() >= Duration::from_millis(800) && took < Duration::from_millis(2500),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_send_timeout_and_the_upstream_stops() {
    let env = Env::with_extra("hard-send", CLOCKS).await;
    env.route("r", "/r", env.ai("openai", "")).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock
        .connect(format!("127.0.0.1:{}", env.ferry.port).parse().unwrap())
        .await
        .unwrap();
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string();
    let req = format!(
        "POST /r HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Mock-Endless: 1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // The stream runs while nobody reads it.
    assert!(eventually(Duration::from_secs(5), || env.mock.open_streams() == 1).await);
    // Writes block once the buffers are full; a second later Ferry gives up on the client and
    // stops reading the upstream.
    assert!(
        eventually(Duration::from_secs(15), || env.mock.open_streams() == 0).await,
        "the upstream stream was still read"
    );
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(30)).await;
    assert!(closed.is_some(), "the connection was not closed");
    let l = env.log_line(1).await;
    assert_eq!(l.get("status"), "200");
}

#[tokio::test]
async fn the_connection_cap_closes_extra_connections_with_a_log_line() {
    let dir = TempDir::new("hard-cap");
    let ferry = Ferry::start(BIN, &dir.0, "  max_connections: 5\n");
    let port = ferry.port;
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut s = connect(port).await;
        s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 404"));
        open.push(s);
    }
    // The sixth is closed at once, unanswered.
    let mut extra = connect(port).await;
    let _ = extra.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (got, closed) = read_to_close(&mut extra, Duration::from_secs(3)).await;
    assert!(closed.is_some() && got.is_empty(), "{got:?}");
    let err = ferry.wait_stderr("ferry.max_connections");
    assert!(err.contains("5 client connections open"), "{err}");
    // One goes away: there is room again.
    drop(open.pop());
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut s = connect(port).await;
        let _ = s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (got, _) = read_to_close(&mut s, Duration::from_millis(500)).await;
        if got.starts_with(b"HTTP/1.1 404") {
            ok = true;
            break;
        }
    }
    assert!(ok, "no room after a connection closed");
}

/// The resident set size of a process, in KiB.
fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
#[ignore = "needs an open-files hard limit of at least 10,500 (ulimit -Hn): it opens 10,000 connections"]
async fn ten_thousand_idle_connections_then_one_request() {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    assert!(
        hard >= 10_500,
        "the open-files hard limit is {hard}: this test needs 10,500"
    );
    rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard).unwrap();
    let dir = TempDir::new("hard-10k");
    let ferry = Ferry::start(BIN, &dir.0, "");
    let pid = ferry.child.id();
    let before = rss_kib(pid, "VmRSS:");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", ferry.port).parse().unwrap();
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // Every one was accepted (the kernel queue is short), then one more request is served.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let r = ferry_testkit::send("GET", &ferry.url("/none"), &[], "").await;
    assert_eq!(r.status, 404);
    let took = t.elapsed();
    let after = rss_kib(pid, "VmRSS:");
    eprintln!(
        "10,000 idle connections: RSS {before} KiB -> {after} KiB ({} bytes per connection); one more request in {took:?}",
        after.saturating_sub(before) * 1024 / 10_000
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(after < 200 * 1024, "RSS {after} KiB");
    drop(idle);
    rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard).unwrap();
}
