//! Cluster mode when things go wrong: etcd outages and restarts, compaction while a node is cut
//! off, idle watches, start-up while etcd is away, etcd authentication and endpoint failover, TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cluster::*;
use common::{BIN, JSON, chat_body};
use ferry_testkit::etcd::Etcd;
use ferry_testkit::{Ferry, Ports, TempDir, send};
use std::time::{Duration, Instant};

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn etcd_outage_keeps_serving_and_writes_fail_clearly() {
    let mut etcd = Etcd::start();
    let m = mock().await;
    let a = node("cl-out", &etcd, "traditional", "/apisix");
    let (s, _) =
        a.f.admin("PUT", "/routes/1", Some(route("1", "/chat", &m)))
            .await;
    assert_eq!(s, 201);
    until(&a, "/chat", 200).await;

    // Load through the outage: every request answered 200.
    let url = a.f.url("/chat");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if send("POST", &url, &JSON, chat_body()).await.status == 200 {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Admin reads and writes: 503 naming etcd, within the 2 s timeout (bounded loosely).
    let t = Instant::now();
    let (s, v) =
        a.f.admin("PUT", "/routes/2", Some(route("2", "/two", &m)))
            .await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error_msg"]
            .as_str()
            .unwrap()
            .starts_with("etcd unavailable: "),
        "{v}"
    );
    let (s, _) = a.f.admin("GET", "/routes", None).await;
    assert_eq!(s, 503);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "bounded by deployment.etcd.timeout"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Back: a write made right away reaches the node.
    etcd.restart();
    etcd.ctl(&[
        "put",
        "/apisix/routes/3",
        &route("3", "/three", &m).to_string(),
    ]);
    until(&a, "/three", 200).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) =
            a.f.admin("PUT", "/routes/2", Some(route("2", "/two", &m)))
                .await;
        if s == 201 {
            break;
        }
        assert!(Instant::now() < deadline, "writes still refused: {s} {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until(&a, "/two", 200).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert_eq!(
        failed, 0,
        "{ok} answered, {failed} failed during the outage"
    );
    assert!(ok > 10);
    let err = a.f.wait_stderr("reconnected to etcd");
    assert!(err.contains("lost connection to etcd"), "{err}");
    assert!(err.contains("reconnected to etcd"), "{err}");
    // Not a tight loop: a handful of attempts per second at most.
    assert!(err.matches("lost connection to etcd").count() <= 2, "{err}");
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn changes_compacted_while_cut_off_arrive_by_relist() {
    let mut etcd = Etcd::start();
    let m = mock().await;
    let a = node("cl-compact", &etcd, "traditional", "/apisix");
    for id in ["keep", "gone", "upd"] {
        a.f.admin(
            "PUT",
            &format!("/routes/{id}"),
            Some(route(id, &format!("/{id}"), &m)),
        )
        .await;
    }
    until(&a, "/upd", 200).await;
    etcd.kill();
    a.f.wait_stderr("lost connection to etcd");
    // Freeze the node so it cannot reconnect before the history is compacted away.
    let pid = a.f.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    etcd.restart();
    etcd.ctl(&["del", "/apisix/routes/gone"]);
    etcd.ctl(&[
        "put",
        "/apisix/routes/upd",
        &route("upd", "/upd2", &m).to_string(),
    ]);
    etcd.ctl(&[
        "put",
        "/apisix/routes/new",
        &route("new", "/new", &m).to_string(),
    ]);
    let rev = etcd.revision();
    etcd.ctl(&["compact", &rev.to_string()]);
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    until(&a, "/new", 200).await;
    assert_eq!(chat(&a, "/gone").await, 404, "no resurrected delete");
    assert_eq!(chat(&a, "/upd").await, 404);
    assert_eq!(chat(&a, "/upd2").await, 200);
    assert_eq!(chat(&a, "/keep").await, 200);
    assert!(a.f.wait_stderr("re-listing").contains("compacted"));
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn idle_watch_recreated_from_the_same_revision() {
    let etcd = Etcd::start();
    let m = mock().await;
    let a = node_with(
        "cl-idle",
        &etcd,
        "traditional",
        "/apisix",
        "    watch_timeout: 1\n",
    );
    // Writes outside the prefix move etcd's revision while the watch idles past its timeout.
    for i in 0..5 {
        etcd.ctl(&["put", &format!("/elsewhere/{i}"), "x"]);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    etcd.ctl(&[
        "put",
        "/apisix/routes/late",
        &route("late", "/late", &m).to_string(),
    ]);
    until(&a, "/late", 200).await;
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn start_up_waits_for_etcd_or_gives_up_clearly() {
    let mut etcd = Etcd::start();
    etcd.ctl(&["put", "/apisix/routes/1", r#"{"uri":"/x","plugins":{"ai-proxy":{"provider":"openai","auth":{"header":{"Authorization":"Bearer token"}},"options":{"model":"gpt-4"},"override":{"endpoint":"http://127.0.0.1:9/v1/chat/completions"}}}}"#]);
    etcd.kill();

    // Too few attempts: exits non-zero naming the endpoint.
    let dir = TempDir::new("cl-giveup");
    let cfg = format!(
        "apisix:\n  node_listen: {}\n  ssl:\n    enable: false\ndeployment:\n{}",
        ferry_testkit::free_port(),
        deployment(&etcd, "data_plane", "/apisix", "    startup_retry: 2\n")
    );
    std::fs::write(dir.0.join("config.yaml"), cfg).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.0.join("config.yaml"))
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("all etcd nodes are unavailable"), "{err}");
    assert!(
        err.contains(&format!(
            "Warning! Request etcd endpoint '{}/version' error",
            etcd.endpoint()
        )),
        "{err}"
    );
    assert!(err.contains("retry time=2"), "{err}");

    // Enough attempts: waits with its port closed, then loads and serves.
    let dir = TempDir::new("cl-wait");
    let port = ferry_testkit::free_port();
    let cfg = format!(
        "apisix:\n  node_listen:\n    - ip: 127.0.0.1\n      port: {port}\n  ssl:\n    enable: false\ndeployment:\n{}",
        deployment(&etcd, "data_plane", "/apisix", "    startup_retry: 30\n")
    );
    std::fs::write(dir.0.join("config.yaml"), cfg).unwrap();
    let mut f = Ferry::spawn_unchecked(BIN, &dir.0, port);
    let err = f.wait_stderr("retry time=2");
    assert!(err.contains("retry time=2"), "{err}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "listeners stay closed"
    );
    etcd.restart();
    f.ports = Ports::Data;
    f.wait_listening().unwrap();
    let r = send("POST", &f.url("/x"), &JSON, chat_body()).await;
    assert_ne!(r.status, 404, "the route loaded before the port opened");
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn etcd_auth_a_read_only_data_plane_and_endpoint_failover() {
    let mut etcd = Etcd::start();
    let m = mock().await;
    for cmd in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "reader"],
        &[
            "role",
            "grant-permission",
            "--prefix=true",
            "reader",
            "read",
            "/apisix",
        ],
        &["user", "add", "dp:dppw"],
        &["user", "grant-role", "dp", "reader"],
        &["auth", "enable"],
    ] {
        etcd.ctl(cmd);
    }
    etcd.auth = Some("root:rootpw".into());
    let a = node_with(
        "cl-auth-a",
        &etcd,
        "traditional",
        "/apisix",
        "    user: root\n    password: rootpw\n",
    );
    let (s, v) =
        a.f.admin("PUT", "/routes/1", Some(route("1", "/chat", &m)))
            .await;
    assert_eq!(s, 201, "{v}");
    // The data plane reads with a read-only user, the first endpoint being dead.
    let dead = format!("http://127.0.0.1:{}", ferry_testkit::free_port());
    let dir = TempDir::new("cl-auth-dp");
    let dep = format!(
        "  role: data_plane\n  role_data_plane:\n    config_provider: etcd\n  etcd:\n    host:\n      - {dead}\n      - {}\n    user: dp\n    password: dppw\n    timeout: 2\n",
        etcd.endpoint()
    );
    let dp = Node {
        f: Ferry::start_node(BIN, &dir.0, &dep, "", Ports::Data),
        _dir: dir,
    };
    until(&dp, "/chat", 200).await;
    let err = dp.f.stderr_text();
    assert!(
        err.contains(&format!(
            "Warning! Request etcd endpoint '{dead}/version' error"
        )),
        "{err}"
    );
    let (s, _) = a.f.admin("DELETE", "/routes/1", None).await;
    assert_eq!(s, 200);
    until(&dp, "/chat", 404).await;

    // A wrong password: the node refuses to start, in etcd's words.
    let dir = TempDir::new("cl-auth-bad");
    let cfg = format!(
        "apisix:\n  node_listen: {}\n  ssl:\n    enable: false\ndeployment:\n{}",
        ferry_testkit::free_port(),
        deployment(
            &etcd,
            "data_plane",
            "/apisix",
            "    user: dp\n    password: wrong\n    startup_retry: 1\n"
        )
    );
    std::fs::write(dir.0.join("config.yaml"), cfg).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.0.join("config.yaml"))
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid user ID or password"), "{err}");
    etcd.kill();
}

#[tokio::test]
#[ignore = "needs etcd and etcdctl (PATH or FERRY_ETCD/FERRY_ETCDCTL); .ci/run installs them"]
async fn etcd_over_tls() {
    let ca = ferry_testkit::tls::TestCa::new(&["localhost", "127.0.0.1"]);
    let etcd = Etcd::start_tls(&ca);
    let m = mock().await;
    let dir = TempDir::new("cl-tls");
    std::fs::write(dir.0.join("ca.crt"), &ca.ca_pem).unwrap();
    let (port, admin) = (ferry_testkit::free_port(), ferry_testkit::free_port());
    let cfg = format!(
        "apisix:\n  node_listen:\n    - ip: 127.0.0.1\n      port: {port}\n  ssl:\n    enable: false\n    ssl_trusted_certificate: ca.crt\n\
         deployment:\n  admin:\n    admin_key:\n      - name: admin\n        key: {}\n        role: admin\n    admin_listen:\n      ip: 127.0.0.1\n      port: {admin}\n  etcd:\n    host:\n      - {}\n    tls:\n      sni: localhost\n",
        ferry_testkit::TEST_KEY,
        etcd.endpoint()
    );
    std::fs::write(dir.0.join("config.yaml"), cfg).unwrap();
    let f = Ferry::spawn(BIN, &dir.0, port, admin, ferry_testkit::TEST_KEY.into());
    let n = Node { f, _dir: dir };
    let (s, v) =
        n.f.admin("PUT", "/routes/1", Some(route("1", "/chat", &m)))
            .await;
    assert_eq!(s, 201, "{v}");
    until(&n, "/chat", 200).await;
    assert!(etcd.get("/apisix/routes/1").is_some());
}
