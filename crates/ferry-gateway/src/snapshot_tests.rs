//! The compiler applies writes one by one: a write recompiles only what it touches, and every
//! plugin instance (with its state) built from unchanged inputs survives it.

use super::*;
use bytes::Bytes;
use ferry_core::ctx::Ctx;
use ferry_core::plugin::{Flow, Plugin, PluginFactory};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

/// A plugin with state: it counts the requests it saw and stamps the count on the request.
struct Counting {
    seen: AtomicU64,
}

impl Plugin for Counting {
    fn rewrite(&self, ctx: &mut Ctx) -> Flow {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        ctx.request_id = n.to_string();
        Flow::Continue
    }
}

#[derive(Default)]
struct CountingFactory {
    built: Arc<AtomicU64>,
}

impl PluginFactory for CountingFactory {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn priority(&self) -> i32 {
        1000
    }
    fn schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn check(&self, conf: &Value) -> Result<Value, String> {
        Ok(conf.clone())
    }
    fn build(&self, _conf: &Value, _route: &Arc<RouteInfo>) -> Result<Arc<dyn Plugin>, String> {
        self.built.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(Counting {
            seen: AtomicU64::new(0),
        }))
    }
}

fn registry() -> (Registry, Arc<AtomicU64>) {
    let f = CountingFactory::default();
    let built = f.built.clone();
    let mut r = Registry::default();
    r.add(Arc::new(f));
    (r, built)
}

fn rec(kind: Kind, id: &str, value: Value, rev: u64) -> Record {
    Record {
        kind,
        id: id.into(),
        value,
        create_rev: rev,
        mod_rev: rev,
    }
}

fn put(kind: Kind, id: &str, value: Value, rev: u64) -> Change {
    Change {
        revision: rev,
        kind,
        id: id.into(),
        record: Some(rec(kind, id, value, rev)),
    }
}

fn del(kind: Kind, id: &str, rev: u64) -> Change {
    Change {
        revision: rev,
        kind,
        id: id.into(),
        record: None,
    }
}

fn instance(c: &Compiler, route: &str) -> *const () {
    let r = c.route(route).expect("route compiled");
    Arc::as_ptr(r.chain.instance("counting").expect("plugin")) as *const ()
}

/// Runs a request through route `id`'s chain; returns the count its plugin stamped.
async fn hit(c: &Compiler, id: &str) -> String {
    let route = c.route(id).expect("route compiled").clone();
    let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
    let mut ctx = Ctx::with_body(
        parts,
        Bytes::new(),
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    );
    let _ = route.chain.run(&mut ctx).await;
    ctx.request_id
}

fn two_routes() -> StoreSnapshot {
    StoreSnapshot {
        revision: 2,
        records: vec![
            rec(
                Kind::Routes,
                "a",
                json!({"id": "a", "uri": "/a", "plugins": {"counting": {"n": 1}}}),
                1,
            ),
            rec(
                Kind::Routes,
                "b",
                json!({"id": "b", "uri": "/b", "plugins": {"counting": {"n": 1}}}),
                2,
            ),
        ],
    }
}

#[tokio::test]
async fn a_route_write_leaves_other_routes_and_their_state_untouched() {
    let (reg, built) = registry();
    let mut c = Compiler::default();
    assert!(c.load(&two_routes(), &reg).is_empty());
    assert_eq!(built.load(Ordering::Relaxed), 2);
    assert_eq!(hit(&c, "b").await, "1");
    assert_eq!(hit(&c, "b").await, "2");
    assert_eq!(hit(&c, "a").await, "1");
    let b_route = c.route("b").unwrap().clone();
    let (a_before, b_before) = (instance(&c, "a"), instance(&c, "b"));

    // Route a changes its plugin configuration: a new instance for a, nothing else rebuilt.
    let errs = c.apply(
        &[put(
            Kind::Routes,
            "a",
            json!({"id": "a", "uri": "/a", "plugins": {"counting": {"n": 2}}}),
            3,
        )],
        &reg,
    );
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(c.revision(), 3);
    assert_eq!(
        built.load(Ordering::Relaxed),
        3,
        "only a's plugin was built"
    );
    assert_ne!(instance(&c, "a"), a_before);
    assert!(
        Arc::ptr_eq(c.route("b").unwrap(), &b_route),
        "route b not recompiled"
    );
    assert_eq!(instance(&c, "b"), b_before);
    assert_eq!(hit(&c, "b").await, "3", "b's counter went on");
    assert_eq!(hit(&c, "a").await, "1", "a's new instance starts afresh");

    // Route a moves to another uri with the same plugins: its instance (and count) stay.
    let a_now = instance(&c, "a");
    c.apply(
        &[put(
            Kind::Routes,
            "a",
            json!({"id": "a", "uri": "/a2", "plugins": {"counting": {"n": 2}}}),
            4,
        )],
        &reg,
    );
    assert_eq!(built.load(Ordering::Relaxed), 3);
    assert_eq!(instance(&c, "a"), a_now);
    assert_eq!(hit(&c, "a").await, "2");
    assert_eq!(c.snapshot().router.len(), 2);

    // A full reload (as after a gap in the change feed) keeps every unchanged instance too.
    let store = StoreSnapshot {
        revision: 4,
        records: vec![
            rec(
                Kind::Routes,
                "a",
                json!({"id": "a", "uri": "/a2", "plugins": {"counting": {"n": 2}}}),
                1,
            ),
            rec(
                Kind::Routes,
                "b",
                json!({"id": "b", "uri": "/b", "plugins": {"counting": {"n": 1}}}),
                2,
            ),
        ],
    };
    assert!(c.load(&store, &reg).is_empty());
    assert_eq!(built.load(Ordering::Relaxed), 3);
    assert_eq!(hit(&c, "b").await, "4");

    // Deleting a drops it (and its instance) and leaves b alone.
    c.apply(&[del(Kind::Routes, "a", 5)], &reg);
    assert!(c.route("a").is_none());
    assert_eq!(instance(&c, "b"), b_before);
    assert_eq!(c.snapshot().router.len(), 1);
}

#[tokio::test]
async fn service_and_plugin_config_writes_recompile_only_their_routes() {
    let (reg, built) = registry();
    let mut c = Compiler::default();
    let store = StoreSnapshot {
        revision: 5,
        records: vec![
            rec(
                Kind::Services,
                "s",
                json!({"id": "s", "name": "svc", "plugins": {"counting": {"v": 1}}}),
                1,
            ),
            rec(
                Kind::PluginConfigs,
                "p",
                json!({"id": "p", "plugins": {}}),
                2,
            ),
            rec(
                Kind::Routes,
                "uses-s",
                json!({"id": "uses-s", "uri": "/s", "service_id": "s"}),
                3,
            ),
            rec(
                Kind::Routes,
                "uses-p",
                json!({"id": "uses-p", "uri": "/p", "plugin_config_id": "p", "plugins": {"counting": {}}}),
                4,
            ),
            rec(
                Kind::Routes,
                "alone",
                json!({"id": "alone", "uri": "/x", "plugins": {"counting": {}}}),
                5,
            ),
        ],
    };
    assert!(c.load(&store, &reg).is_empty());
    assert_eq!(built.load(Ordering::Relaxed), 3);
    assert_eq!(
        c.route("uses-s").unwrap().info.service_name.as_deref(),
        Some("svc")
    );
    let (p0, alone0) = (instance(&c, "uses-p"), instance(&c, "alone"));

    // The service's plugin changes: its route gets a new instance; the others are untouched.
    c.apply(
        &[put(
            Kind::Services,
            "s",
            json!({"id": "s", "name": "svc", "plugins": {"counting": {"v": 2}}}),
            6,
        )],
        &reg,
    );
    assert_eq!(built.load(Ordering::Relaxed), 4);
    assert_eq!(
        (instance(&c, "uses-p"), instance(&c, "alone")),
        (p0, alone0)
    );

    // Renaming the service changes what its route's plugins see: rebuilt, with the new name.
    c.apply(
        &[put(
            Kind::Services,
            "s",
            json!({"id": "s", "name": "svc2", "plugins": {"counting": {"v": 2}}}),
            7,
        )],
        &reg,
    );
    assert_eq!(built.load(Ordering::Relaxed), 5);
    assert_eq!(
        c.route("uses-s").unwrap().info.service_name.as_deref(),
        Some("svc2")
    );

    // A plugin config that gains a plugin the route overrides: the route's own conf wins, and
    // the instance built from it is kept.
    c.apply(
        &[put(
            Kind::PluginConfigs,
            "p",
            json!({"id": "p", "plugins": {"counting": {"from": "pc"}}}),
            8,
        )],
        &reg,
    );
    assert_eq!(built.load(Ordering::Relaxed), 5);
    assert_eq!(instance(&c, "uses-p"), p0);

    // The route leaves its service: the service no longer lists it as a user.
    c.apply(
        &[put(
            Kind::Routes,
            "uses-s",
            json!({"id": "uses-s", "uri": "/s"}),
            9,
        )],
        &reg,
    );
    assert!(
        c.route("uses-s")
            .unwrap()
            .chain
            .instance("counting")
            .is_none()
    );
    let before = built.load(Ordering::Relaxed);
    c.apply(
        &[put(
            Kind::Services,
            "s",
            json!({"id": "s", "plugins": {"counting": {"v": 3}}}),
            10,
        )],
        &reg,
    );
    assert_eq!(
        built.load(Ordering::Relaxed),
        before,
        "no route uses the service now"
    );
    assert_eq!(c.revision(), 10);
}

#[test]
fn a_disabled_route_is_not_served_and_a_broken_one_is_reported() {
    let (reg, _) = registry();
    let mut c = Compiler::default();
    let errs = c.apply(
        &[
            put(
                Kind::Routes,
                "off",
                json!({"id": "off", "uri": "/o", "status": 0}),
                1,
            ),
            put(
                Kind::Routes,
                "bad",
                json!({"id": "bad", "uri": "/b", "plugins": {"nope": {}}}),
                2,
            ),
        ],
        &reg,
    );
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("unknown plugin"), "{errs:?}");
    assert!(c.route("off").is_none() && c.route("bad").is_none());
    assert_eq!(c.snapshot().revision, 2);
}
