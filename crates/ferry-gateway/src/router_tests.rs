//! Route matching and priority tests.

use super::*;
use ferry_core::plugin::Chain;
use serde_json::json;

fn route(id: &str, uris: &[&str], f: impl FnOnce(&mut Route)) -> Arc<Route> {
    let info = Arc::new(RouteInfo {
        id: id.into(),
        ..RouteInfo::default()
    });
    let mut r = Route {
        chain: Arc::new(Chain::empty(info.clone())),
        plugins: Default::default(),
        consumer_chains: Default::default(),
        info,
        priority: 0,
        uris: uris.iter().map(|s| s.to_string()).collect(),
        methods: 0,
        hosts: vec![],
        remote_addrs: vec![],
        vars: Expr::default(),
        target: crate::upstream::Target::Fail(http::StatusCode::SERVICE_UNAVAILABLE, "none".into()),
        seq: id.bytes().map(u64::from).sum(),
    };
    f(&mut r);
    Arc::new(r)
}

fn probe<'a>(path: &'a str, host: &'a str, method: &'a str) -> Probe<'a> {
    Probe {
        path,
        host,
        method,
        remote: "127.0.0.1".parse().unwrap(),
    }
}

fn ids(r: &Router, p: Probe<'_>) -> Vec<String> {
    r.candidates(&p)
        .iter()
        .map(|r| r.id().to_string())
        .collect()
}

#[test]
fn exact_beats_prefix_and_longer_prefix_wins() {
    let r = Router::new(vec![
        route("a", &["/v1/*"], |_| {}),
        route("b", &["/v1/chat/*"], |_| {}),
        route("c", &["/v1/chat/completions"], |_| {}),
        route("d", &["/*"], |_| {}),
    ]);
    assert_eq!(
        ids(&r, probe("/v1/chat/completions", "", "POST")),
        ["c", "b", "a", "d"]
    );
    assert_eq!(ids(&r, probe("/v1/models", "", "GET")), ["a", "d"]);
    assert_eq!(ids(&r, probe("/other", "", "GET")), ["d"]);
    assert_eq!(
        ids(&r, probe("/v1", "", "GET")),
        ["d"],
        "prefix /v1/ needs the slash"
    );
}

#[test]
fn priority_first() {
    let r = Router::new(vec![
        route("exact", &["/a"], |_| {}),
        route("prefix-high", &["/*"], |r| r.priority = 10),
    ]);
    assert_eq!(ids(&r, probe("/a", "", "GET")), ["prefix-high", "exact"]);
}

#[test]
fn methods_hosts_addrs() {
    let r = Router::new(vec![
        route("post", &["/x"], |r| r.methods = method_bit("POST")),
        route("wild", &["/x"], |r| {
            r.hosts = vec![HostPat::parse("*.Example.com")]
        }),
        route("exact-host", &["/x"], |r| {
            r.hosts = vec![HostPat::parse("api.example.com")]
        }),
        route("lan", &["/x"], |r| {
            r.remote_addrs = vec!["10.0.0.0/8".parse().unwrap()]
        }),
    ]);
    assert_eq!(ids(&r, probe("/x", "", "GET")), Vec::<String>::new());
    assert_eq!(ids(&r, probe("/x", "", "POST")), ["post"]);
    assert_eq!(ids(&r, probe("/x", "a.b.example.com", "GET")), ["wild"]);
    assert_eq!(
        ids(&r, probe("/x", "example.com", "GET")),
        Vec::<String>::new()
    );
    let got = ids(&r, probe("/x", "api.example.com", "GET"));
    assert_eq!(
        got,
        ["exact-host", "wild"],
        "host routes before host-less ones"
    );
    let mut p = probe("/x", "", "GET");
    p.remote = "10.9.9.9".parse().unwrap();
    assert_eq!(ids(&r, p), ["lan"]);
}

#[test]
fn same_uri_different_vars_keep_order() {
    let vars = |m: &str| Expr::compile(&json!([["post_arg.model", "==", m]])).unwrap();
    let r = Router::new(vec![
        route("openai", &["/anything"], |r| r.vars = vars("openai")),
        route("deepseek", &["/anything"], |r| r.vars = vars("deepseek")),
    ]);
    let c = r.candidates(&probe("/anything", "", "POST"));
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|r| r.needs_body()));
}

#[test]
fn route_with_two_uris_listed_once() {
    let r = Router::new(vec![route("a", &["/a", "/*"], |_| {})]);
    assert_eq!(ids(&r, probe("/a", "", "GET")), ["a"]);
}

/// Routes added and removed one by one give the same table as one built at once, and a clone
/// taken before a change (a published snapshot) does not see it.
#[test]
fn updates_route_by_route() {
    let a = route("a", &["/v1/*"], |_| {});
    let b = route("b", &["/v1/chat/*", "/b"], |_| {});
    let c = route("c", &["/v1/chat/completions"], |_| {});
    let mut r = Router::default();
    for x in [&a, &b, &c] {
        r.insert(x.clone());
    }
    let before = r.clone();
    r.remove(&b);
    assert_eq!(r.len(), 2);
    assert_eq!(
        ids(&r, probe("/v1/chat/completions", "", "POST")),
        ["c", "a"]
    );
    assert!(ids(&r, probe("/b", "", "GET")).is_empty());
    assert_eq!(
        r.prefix_lens,
        vec![4],
        "the /v1/chat/ prefix length is gone"
    );
    assert_eq!(
        ids(&before, probe("/v1/chat/completions", "", "POST")),
        ["c", "b", "a"],
        "the earlier clone is unchanged"
    );
    let b2 = route("b", &["/v1/chat/*"], |x| x.priority = 9);
    r.insert(b2);
    assert_eq!(
        ids(&r, probe("/v1/chat/completions", "", "POST")),
        ["b", "c", "a"]
    );
    // Many routes: removing every other one leaves exactly the rest.
    let many: Vec<_> = (0..2000)
        .map(|i| {
            route(
                &format!("m{i}"),
                &[&format!("/m/{i}"), &format!("/p{i}/*")],
                |_| {},
            )
        })
        .collect();
    let mut r = Router::new(many.clone());
    for m in many.iter().step_by(2) {
        r.remove(m);
    }
    assert_eq!(r.len(), 1000);
    for (i, m) in many.iter().enumerate() {
        let found = ids(&r, probe(&format!("/m/{i}"), "", "GET"));
        let want: Vec<String> = if i % 2 == 1 {
            vec![m.id().to_string()]
        } else {
            vec![]
        };
        assert_eq!(found, want);
        assert_eq!(ids(&r, probe(&format!("/p{i}/x"), "", "GET")), want);
    }
}
