//! `ferry-mock`: the mock LLM provider as a process, for benchmarks and manual tries.
//! Usage: `ferry-mock [--listen 127.0.0.1:1980] [--key KEY] [--record] [--fast]`
//! (`--fast`: pre-rendered answers to plain chat requests, for benchmarks).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ferry_testkit::mock::{Mock, MockConfig};

fn main() {
    let mut listen = "127.0.0.1:1980".to_string();
    let mut cfg = MockConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            "--key" => cfg.key = args.next(),
            "--record" => cfg.record = true,
            "--fast" => cfg.fast = true,
            "-h" | "--help" => {
                println!("ferry-mock [--listen 127.0.0.1:1980] [--key KEY] [--record] [--fast]");
                return;
            }
            other => {
                eprintln!("ferry-mock: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let threads = std::env::var("FERRY_MOCK_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
        let mock = Mock::on(listener, cfg);
        eprintln!("ferry-mock listening on {}", mock.addr);
        let _ = tokio::signal::ctrl_c().await;
    });
}
