//! `ferry-cluster-bench`: the cluster figures of issue #12 against a release build and a real
//! etcd (started here on free ports): propagation time from an etcd write to every node serving
//! it, start-up with many routes in etcd, and data-plane throughput while writes stream in.
//! Usage: `ferry-cluster-bench [FERRY_BIN] [--writes 200] [--routes 10000] [--secs 10]`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use etcd_client::{Client, Txn, TxnOp};
use ferry_testkit::etcd::Etcd;
use ferry_testkit::mock::{Mock, MockConfig};
use ferry_testkit::{Ferry, Ports, TempDir, client, send_with};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn route(id: &str, uri: &str, mock: &str) -> String {
    json!({"uri": uri, "plugins": {"ai-proxy": {
        "provider": "openai",
        "auth": {"header": {"Authorization": "Bearer token"}},
        "options": {"model": "gpt-4"},
        "override": {"endpoint": format!("{mock}/v1/chat/completions")}
    }}, "id": id})
    .to_string()
}

fn node(bin: &str, etcd: &Etcd, role: &str, prefix: &str) -> (TempDir, Ferry) {
    let dir = TempDir::new("cluster-bench");
    let dep = format!(
        "  role: {role}\n  role_{role}:\n    config_provider: etcd\n  etcd:\n    host: [\"{}\"]\n    prefix: {prefix}\n",
        etcd.endpoint()
    );
    let extra = "nginx_config:\n  http:\n    enable_access_log: false\n";
    let ports = if role == "data_plane" {
        Ports::Data
    } else {
        Ports::Both
    };
    let f = Ferry::start_node(bin, &dir.0, &dep, extra, ports);
    (dir, f)
}

const BODY: &str = r#"{"messages":[{"role":"user","content":"hi"}]}"#;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "target/release/ferry".into());
    let writes = arg(&args, "--writes", 200);
    let routes = arg(&args, "--routes", 10_000);
    let secs = arg(&args, "--secs", 10);
    let etcd = Etcd::start();
    let mock = Mock::start(MockConfig {
        key: Some("token".into()),
        fast: true,
        ..Default::default()
    })
    .await;
    let mut kv = Client::connect([etcd.endpoint()], None).await.unwrap();
    let http = client(false);
    let json = [("content-type", "application/json")];

    // 1. Propagation: etcd acknowledges a put; every node serves the route.
    let nodes = [
        node(&bin, &etcd, "traditional", "/apisix"),
        node(&bin, &etcd, "traditional", "/apisix"),
        node(&bin, &etcd, "data_plane", "/apisix"),
    ];
    let mut all = Vec::new();
    for i in 0..writes {
        let (id, uri) = (format!("p{i}"), format!("/p{i}"));
        kv.put(
            format!("/apisix/routes/{id}"),
            route(&id, &uri, &mock.url()),
            None,
        )
        .await
        .unwrap();
        let t0 = Instant::now();
        let mut worst = 0f64;
        for (_, f) in &nodes {
            let url = f.url(&uri);
            loop {
                let r = send_with(&http, "POST", &url, &json, BODY.into()).await;
                if r.status != 404 {
                    break;
                }
            }
            worst = worst.max(t0.elapsed().as_secs_f64() * 1000.0);
        }
        all.push(worst);
    }
    let (p50, p99, max) = (pct(&mut all, 0.5), pct(&mut all, 0.99), pct(&mut all, 1.0));
    println!(
        "propagation, etcd put acknowledged -> all 3 nodes serve it ({writes} writes): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
    );

    // 2. Data-plane throughput on one node, without and with 50 writes/s into etcd.
    let (_keep, target) = {
        let mut it = nodes.into_iter();
        let first = it.next().unwrap();
        drop(it); // stop the other two nodes
        first
    };
    let url = target.url("/p0");
    let rate = |writing: Option<&'static str>| {
        let url = url.clone();
        let mock = mock.url();
        let endpoint = etcd.endpoint();
        async move {
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let (url, stop, done, failed) =
                    (url.clone(), stop.clone(), done.clone(), failed.clone());
                tasks.push(tokio::spawn(async move {
                    let http = client(false);
                    while !stop.load(Ordering::Relaxed) {
                        let r = send_with(&http, "POST", &url, &json, BODY.into()).await;
                        if r.status == 200 {
                            done.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            let writer = writing.map(|prefix| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut kv = Client::connect([endpoint], None).await.unwrap();
                    let mut tick = tokio::time::interval(Duration::from_millis(20));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let id = format!("w{}", i % 500);
                        kv.put(
                            format!("{prefix}/routes/{id}"),
                            route(&id, &format!("/{id}"), &mock),
                            None,
                        )
                        .await
                        .unwrap();
                        i += 1;
                    }
                    i
                })
            });
            tokio::time::sleep(Duration::from_secs(secs)).await;
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                t.await.unwrap();
            }
            let w = match writer {
                Some(w) => w.await.unwrap(),
                None => 0,
            };
            (
                done.load(Ordering::Relaxed) as f64 / secs as f64,
                failed.load(Ordering::Relaxed),
                w,
            )
        }
    };
    // Five rounds of the three cases, interleaved, medians reported (the machine is shared):
    // the ratio is taken within each round, then its median.
    let (mut quiet, mut other, mut busy) = (Vec::new(), Vec::new(), Vec::new());
    let (mut failed, mut wrote) = (0, 0);
    let rounds = 5;
    for _ in 0..rounds {
        for (mode, out) in [
            (None, &mut quiet),
            (Some("/elsewhere"), &mut other),
            (Some("/apisix"), &mut busy),
        ] {
            let (r, f, w) = rate(mode).await;
            out.push(r);
            failed += f;
            wrote += w;
        }
    }
    let mut ratios: Vec<f64> = busy.iter().zip(&other).map(|(b, o)| b / o).collect();
    let ratio = pct(&mut ratios, 0.5);
    let (quiet, other, busy) = (
        pct(&mut quiet, 0.5),
        pct(&mut other, 0.5),
        pct(&mut busy, 0.5),
    );
    println!(
        "throughput on one node, 16 connections, median of {rounds} x {secs} s: {quiet:.0} req/s without writes; with {:.0} etcd writes/s: {other:.0} req/s when they are outside the node's prefix (etcd's own cost), {busy:.0} req/s when the node applies them (median per-round ratio {ratio:.2}, range {:.2}..{:.2}); failed requests: {failed}",
        wrote as f64 / (2 * rounds * secs) as f64,
        ratios[0],
        ratios[ratios.len() - 1]
    );
    drop(target);

    // 3. Start-up with many routes already in etcd.
    let mut batch = Vec::new();
    for i in 0..routes {
        let id = format!("r{i}");
        batch.push(TxnOp::put(
            format!("/big/routes/{id}"),
            route(&id, &format!("/r{i}"), &mock.url()),
            None,
        ));
        if batch.len() == 100 {
            kv.txn(Txn::new().and_then(std::mem::take(&mut batch)))
                .await
                .unwrap();
        }
    }
    if !batch.is_empty() {
        kv.txn(Txn::new().and_then(batch)).await.unwrap();
    }
    let t0 = Instant::now();
    let (_d, f) = node(&bin, &etcd, "data_plane", "/big");
    let listening = t0.elapsed();
    let last = send_with(
        &http,
        "POST",
        &f.url(&format!("/r{}", routes - 1)),
        &json,
        BODY.into(),
    )
    .await;
    println!(
        "start-up with {routes} routes in etcd: listening after {} ms (last route answers {})",
        listening.as_millis(),
        last.status
    );
}
