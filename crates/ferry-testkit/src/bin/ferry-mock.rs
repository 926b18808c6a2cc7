//! `ferry-mock`: the mock LLM provider as a process, for benchmarks and manual tries.
//! Usage: `ferry-mock [--listen 127.0.0.1:1980] [--key KEY] [--record] [--fast]`
//! (`--fast`: pre-rendered answers to plain chat requests, for benchmarks).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ferry_testkit::mock::{Mock, MockConfig};

const HELP: &str = "\
ferry-mock: a mock LLM provider for trying Ferry and for its tests and benchmarks.

Usage: ferry-mock [--listen ADDR] [--key KEY] [--record] [--fast]

Options:
  --listen ADDR  where to listen (default 127.0.0.1:1980)
  --key KEY      require this credential: Authorization: Bearer KEY, x-api-key: KEY,
                 api-key: KEY or ?api_key=KEY; anything else gets 401
  --record       keep the last 1,000 requests for GET /_mock/requests
  --fast         answer plain chat requests with pre-rendered bytes (benchmarks)
  -h, --help     this text
Environment: FERRY_MOCK_THREADS=N worker threads (default 1).

Endpoints (any path prefix; the ending picks the protocol, the answer echoes the model):
  .../chat/completions, .../completions   OpenAI chat (JSON, or SSE with \"stream\": true)
  .../responses                            OpenAI Responses
  .../embeddings                           OpenAI embeddings
  .../messages                             Anthropic Messages (JSON or SSE)
  GET /_mock/requests                      what was received (with --record), as JSON

Request headers that change the answer:
  x-mock-status: N          status N with an OpenAI-style error body (retry-after: 1 on 429)
  x-mock-delay-ms: N        wait before the response head
  x-mock-chunk-delay-ms: N  wait between stream chunks
  x-mock-chunks: N          content chunks in a stream (default 3)
  x-mock-fixture: PATH      serve a file (.sse as text/event-stream, one chunk per event)
  x-mock-echo: 1            answer the received method, path, query, headers and body as JSON
  x-mock-tool-call: 1       answer chat with a tool call
  x-mock-malformed: 1       a stream of garbage and broken JSON
  x-mock-reset-after: N     reset the connection after N stream chunks
  x-mock-stall: 1           send the head of a stream, then nothing
  x-mock-stall-after: N     send N stream chunks, then nothing
  x-mock-drip-ms: N         send the stream one byte at a time, N ms apart
  x-mock-long-line: N       after the first event, a data: line of N bytes
  x-mock-invalid-utf8: 1    a stream event whose text is not valid UTF-8
  x-mock-endless: 1         a stream that never ends

See docs/mock.md.
";

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
                print!("{HELP}");
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
