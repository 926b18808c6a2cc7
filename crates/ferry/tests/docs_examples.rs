//! The documentation's shell examples, run as a newcomer would: every page in reading order
//! against one Ferry and the mock provider (the docs' ports are rewritten to the test's), so an
//! example that fails, answers an error, or is hidden by another page's route fails here.
//! Blocks that start processes (`cargo run`, benchmarks, exports) are left out; every block
//! made only of `curl` commands (and `admin_key=`) runs under `set -euo pipefail`, and every
//! HTTP answer must be 2xx.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, run_block, runnable, shell_blocks};
use std::path::{Path, PathBuf};

/// The pages in the order the README lists them.
const PAGES: &[&str] = &[
    "README.md",
    "docs/configuration.md",
    "docs/admin-api.md",
    "docs/routing.md",
    "docs/upstreams.md",
    "docs/adc.md",
    "docs/standalone.md",
    "docs/kubernetes.md",
    "docs/access-log.md",
    "docs/plugins/ai-proxy.md",
    "docs/plugins/ai-proxy-multi.md",
    "docs/plugins/request-id.md",
    "docs/plugins/key-auth.md",
    "docs/plugins/limit-count.md",
    "docs/plugins/ai-rate-limiting.md",
    "docs/plugins/kafka-logger.md",
    "docs/plugins/http-logger.md",
    "docs/plugins/file-logger.md",
    "docs/plugins/prometheus.md",
    "docs/plugins/log-entries.md",
    "docs/mock.md",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// Multi-threaded: the examples run as blocking child processes while the mock serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_docs_example_runs_against_the_mock() {
    let env = Env::start("docs-examples").await;
    let f = &env.ferry;
    let mock = env.mock.url();
    let mock_authority = mock.trim_start_matches("http://").trim_end_matches('/');
    let metrics = f.metrics_port.unwrap();
    // Where the examples run: `cat data/admin_key` finds the key, as after a first start.
    let cwd = env.dir.0.join("reader");
    std::fs::create_dir_all(cwd.join("data")).unwrap();
    std::fs::write(cwd.join("data/admin_key"), &f.key).unwrap();
    let mut ran = 0;
    let mut skipped = Vec::new();
    for page in PAGES {
        let text = std::fs::read_to_string(root().join(page)).unwrap();
        for (line, block) in shell_blocks(&text) {
            if !runnable(&block) {
                skipped.push(format!("{page}:{line}"));
                continue;
            }
            let script = block
                .replace("127.0.0.1:9080", &format!("127.0.0.1:{}", f.port))
                .replace("127.0.0.1:9180", &format!("127.0.0.1:{}", f.admin_port))
                .replace("127.0.0.1:9091", &format!("127.0.0.1:{metrics}"))
                .replace("127.0.0.1:1980", mock_authority);
            run_block(&script, &cwd, &f.key, &format!("{page}:{line}"));
            ran += 1;
        }
    }
    println!(
        "docs examples: {ran} run, {} left out: {skipped:?}",
        skipped.len()
    );
    assert!(ran >= 10, "only {ran} examples ran; left out: {skipped:?}");
}

#[test]
fn runnable_blocks() {
    assert!(runnable("curl -s http://x | grep y\n"));
    assert!(runnable(
        "admin_key=$(cat data/admin_key)\n\ncurl \"u\" -X PUT \\\n  -d '{\n  \"a\": 1\n}'\n"
    ));
    assert!(!runnable("cargo run --release -- serve\n"));
    assert!(!runnable("export FERRY_TANSU=x\ncargo test\n"));
    assert!(!runnable("bench/macro.sh 10\n"));
}
