//! What one configuration write costs the data plane at 1,000 and 10,000 routes: the store
//! change applied to the compiled configuration (only the touched route is recompiled) and the
//! new snapshot made, against rebuilding every route as a reload did before.
//! Run: `cargo bench -p ferry-gateway --bench reload`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use divan::Bencher;
use ferry_config::Kind;
use ferry_config::store::{Change, Record, StoreSnapshot};
use ferry_core::plugin::Registry;
use ferry_gateway::snapshot::{Compiler, Snapshot};
use serde_json::{Value, json};

fn main() {
    divan::main();
}

fn registry() -> Registry {
    ferry_plugins::builtin(Default::default(), Default::default())
}

/// A route as the docs write them: ai-proxy to OpenAI, prometheus, request-id, a `vars` rule.
fn route(i: usize, model: &str) -> Value {
    json!({"id": format!("r{i}"), "uri": format!("/v1/team{i}/chat/completions"), "methods": ["POST"],
        "vars": [["http_x_team", "==", format!("team{i}")]],
        "plugins": {
            "ai-proxy": {"provider": "openai", "auth": {"header": {"Authorization": "Bearer sk-test"}},
                "options": {"model": model}},
            "prometheus": {}, "request-id": {}}})
}

fn store(n: usize) -> StoreSnapshot {
    let records = (0..n)
        .map(|i| Record {
            kind: Kind::Routes,
            id: format!("r{i}"),
            value: route(i, "gpt-4o"),
            create_rev: i as u64 + 1,
            mod_rev: i as u64 + 1,
        })
        .collect();
    StoreSnapshot {
        revision: n as u64,
        records,
    }
}

/// One route rewritten (its model changes, so its ai-proxy instance is rebuilt): the change
/// applied and the snapshot made, as the follower does per write.
#[divan::bench(args = [1_000, 10_000])]
fn one_route_write(b: Bencher, n: usize) {
    let reg = registry();
    let mut c = Compiler::default();
    assert!(c.load(&store(n), &reg).is_empty());
    let mut rev = n as u64;
    b.bench_local(|| {
        rev += 1;
        let model = if rev.is_multiple_of(2) {
            "gpt-4o-mini"
        } else {
            "gpt-4o"
        };
        let id = (rev as usize * 7919) % n;
        let change = Change {
            revision: rev,
            kind: Kind::Routes,
            id: format!("r{id}"),
            record: Some(Record {
                kind: Kind::Routes,
                id: format!("r{id}"),
                value: route(id, model),
                create_rev: id as u64 + 1,
                mod_rev: rev,
            }),
        };
        assert!(c.apply(&[change], &reg).is_empty());
        divan::black_box(c.snapshot());
    });
}

/// Every route compiled from scratch: what each write cost before changes were applied one
/// by one.
#[divan::bench(args = [1_000, 10_000], sample_count = 5, sample_size = 1)]
fn full_rebuild(b: Bencher, n: usize) {
    let reg = registry();
    let s = store(n);
    b.bench_local(|| {
        let (snap, errors) = Snapshot::build(&s, &reg);
        assert!(errors.is_empty());
        divan::black_box(snap);
    });
}
