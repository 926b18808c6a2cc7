//! Route matching over 1,000 and 10,000 routes with `vars`, and `vars` evaluation alone.
//! Run: `cargo bench -p ferry-gateway --bench router`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use divan::Bencher;
use ferry_config::Kind;
use ferry_config::store::{Record, StoreSnapshot};
use ferry_core::ctx::Ctx;
use ferry_gateway::router::Match;
use ferry_gateway::snapshot::Snapshot;
use serde_json::json;

fn main() {
    divan::main();
}

/// `n` routes: every tenth a prefix route, each with a header and a body condition; plus the
/// docs' pair of routes on one uri told apart by `post_arg.model`.
fn snapshot(n: usize) -> Snapshot {
    let mut records = Vec::new();
    for i in 0..n {
        let uri = if i % 10 == 0 {
            format!("/svc{i}/*")
        } else {
            format!("/v1/team{i}/chat/completions")
        };
        records.push(Record {
            kind: Kind::Routes,
            id: format!("r{i}"),
            value: json!({"id": format!("r{i}"), "uri": uri, "methods": ["POST"],
                "vars": [["http_x_team", "==", format!("team{i}")], ["arg_mode", "~~", "^(fast|slow)$"]],
                "plugins": {"request-id": {}}}),
            create_rev: i as u64 + 1,
            mod_rev: i as u64 + 1,
        });
    }
    for (i, model) in ["openai", "deepseek"].iter().enumerate() {
        records.push(Record {
            kind: Kind::Routes,
            id: format!("docs-{model}"),
            value: json!({"id": model, "uri": "/anything", "methods": ["POST"],
                "vars": [["post_arg.model", "==", model]], "plugins": {"request-id": {}}}),
            create_rev: (n + i + 1) as u64,
            mod_rev: (n + i + 1) as u64,
        });
    }
    let (snap, errors) = Snapshot::build(
        &StoreSnapshot {
            revision: 1,
            records,
        },
        &ferry_plugins::builtin(Default::default(), Default::default()),
    );
    assert!(errors.is_empty(), "{errors:?}");
    snap
}

fn ctx(path: &str, team: &str, body: &str) -> Ctx {
    let req = http::Request::post(path)
        .header("host", "gw.local")
        .header("x-team", team)
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (parts, _) = req.into_parts();
    Ctx::with_body(
        parts,
        Bytes::from(body.to_string()),
        "127.0.0.1:5000".parse().unwrap(),
        "127.0.0.1:9080".parse().unwrap(),
    )
}

#[divan::bench(args = [1_000, 10_000])]
fn match_exact_with_vars(b: Bencher, n: usize) {
    let snap = snapshot(n);
    let i = n - 3;
    let c = ctx(
        &format!("/v1/team{i}/chat/completions?mode=fast"),
        &format!("team{i}"),
        "{}",
    );
    b.bench_local(|| {
        let m = snap.router.find(divan::black_box(&c));
        assert!(matches!(m, Match::Found(_)));
    });
}

#[divan::bench(args = [1_000, 10_000])]
fn match_prefix_with_vars(b: Bencher, n: usize) {
    let snap = snapshot(n);
    let i = (n / 2 / 10) * 10;
    let c = ctx(
        &format!("/svc{i}/deep/path?mode=slow"),
        &format!("team{i}"),
        "{}",
    );
    b.bench_local(|| {
        let m = snap.router.find(divan::black_box(&c));
        assert!(matches!(m, Match::Found(_)));
    });
}

#[divan::bench(args = [1_000, 10_000])]
fn match_miss(b: Bencher, n: usize) {
    let snap = snapshot(n);
    let c = ctx("/nowhere/at/all", "x", "{}");
    b.bench_local(|| {
        let m = snap.router.find(divan::black_box(&c));
        assert!(matches!(m, Match::None));
    });
}

/// The docs' example: the body is parsed once per request (a fresh context each time).
#[divan::bench]
fn match_post_arg_model(b: Bencher) {
    let snap = snapshot(1_000);
    let body = r#"{"model":"deepseek","messages":[{"role":"user","content":"What is 1+1?"}]}"#;
    b.with_inputs(|| ctx("/anything", "x", body))
        .bench_local_refs(|c| {
            let m = snap.router.find(c);
            assert!(matches!(m, Match::Found(_)));
        });
}

/// `vars` evaluation alone: a header equality, a query regex and an IP range.
#[divan::bench]
fn vars_eval(b: Bencher) {
    let expr = ferry_config::expr::Expr::compile(&json!([
        ["http_x_team", "==", "team7"],
        ["arg_mode", "~~", "^(fast|slow)$"],
        ["remote_addr", "ipmatch", ["127.0.0.0/8"]],
    ]))
    .unwrap();
    let c = ctx("/v1/team7/chat/completions?mode=fast", "team7", "{}");
    b.bench_local(|| assert!(expr.eval(divan::black_box(&c))));
}
