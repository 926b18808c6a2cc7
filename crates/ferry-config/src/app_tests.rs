//! Tests for config.yaml parsing.

use super::*;

#[test]
fn empty_file_gives_defaults() {
    let c = AppConfig::parse("").unwrap();
    assert_eq!(c.node_listen, vec!["0.0.0.0:9080".parse().unwrap()]);
    assert_eq!(c.admin_listen, "127.0.0.1:9180".parse().unwrap());
    assert!(c.admin_keys.is_empty());
    assert_eq!(c.config_provider, ConfigProvider::Embedded);
    assert_eq!(c.access_log.path, PathBuf::from("logs/access.log"));
    assert_eq!(c.access_log.format, DEFAULT_ACCESS_LOG_FORMAT);
    assert_eq!(c.data_dir, PathBuf::from("data"));
}

#[test]
fn apisix_shape() {
    let text = r#"
apisix:
  node_listen:
    - 9080
    - ip: 127.0.0.1
      port: 9081
  enable_admin: true
  router:
    http: radixtree_host_uri
  ssl:
    ssl_trusted_certificate: /etc/ssl/ca.pem
deployment:
  role: traditional
  role_traditional:
    config_provider: embedded
  admin:
    admin_key:
      - name: admin
        key: edd1c9f034335f136f87ad84b625c8f1
        role: admin
      - name: viewer
        key: 4054f7cf07e344346cd3f287985e76a2
        role: viewer
    admin_listen:
      ip: 0.0.0.0
      port: 19180
    allow_admin:
      - 127.0.0.0/24
nginx_config:
  http:
    enable_access_log: true
    access_log: /tmp/ferry-access.log
    access_log_format: "$remote_addr $status $llm_model"
    access_log_format_escape: json
    client_max_body_size: 8m
ferry:
  data_dir: /var/lib/ferry
  drain_timeout_ms: 2500
  resolve:
    API.openai.com: 127.0.0.1:8443
"#;
    let c = AppConfig::parse(text).unwrap();
    assert_eq!(
        c.node_listen,
        vec![
            "0.0.0.0:9080".parse().unwrap(),
            "127.0.0.1:9081".parse().unwrap()
        ]
    );
    assert_eq!(c.admin_listen, "0.0.0.0:19180".parse().unwrap());
    assert_eq!(c.admin_keys.len(), 2);
    assert_eq!(c.admin_keys[0].key, "edd1c9f034335f136f87ad84b625c8f1");
    assert_eq!(c.admin_keys[1].role, AdminRole::Viewer);
    assert_eq!(c.allow_admin.len(), 1);
    assert_eq!(c.access_log.path, PathBuf::from("/tmp/ferry-access.log"));
    assert_eq!(c.access_log.format, "$remote_addr $status $llm_model");
    assert_eq!(c.access_log.escape, LogEscape::Json);
    assert_eq!(c.client_max_body_size, 8 * 1024 * 1024);
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/ferry"));
    assert_eq!(c.drain_timeout, Duration::from_millis(2500));
    assert_eq!(c.trusted_ca, Some(PathBuf::from("/etc/ssl/ca.pem")));
    assert_eq!(c.ignored_keys, vec!["apisix.router".to_string()]);
    assert_eq!(
        c.resolve,
        vec![(
            "api.openai.com".to_string(),
            "127.0.0.1:8443".parse().unwrap()
        )]
    );
}

#[test]
fn single_port_and_empty_key() {
    let c = AppConfig::parse(
        "apisix:\n  node_listen: 9999\ndeployment:\n  admin:\n    admin_key:\n      - name: admin\n        key: ''\n        role: admin\n",
    )
    .unwrap();
    assert_eq!(c.node_listen, vec!["0.0.0.0:9999".parse().unwrap()]);
    assert!(c.admin_keys.is_empty(), "an empty key means generate one");
}

#[test]
fn providers() {
    for (name, want) in [
        ("etcd", ConfigProvider::Etcd),
        ("yaml", ConfigProvider::Yaml),
        ("embedded", ConfigProvider::Embedded),
    ] {
        let t = format!("deployment:\n  role_traditional:\n    config_provider: {name}\n");
        assert_eq!(AppConfig::parse(&t).unwrap().config_provider, want);
    }
    let e = AppConfig::parse("deployment:\n  role_traditional:\n    config_provider: zk\n")
        .unwrap_err();
    assert!(e.0.contains("unknown provider \"zk\""), "{e}");
}

#[test]
fn cluster_roles_and_etcd_section() {
    use crate::cluster::Role;
    use std::time::Duration;
    // An etcd section alone makes a traditional node use etcd; APISIX's defaults fill the rest.
    let c = AppConfig::parse("deployment:\n  etcd:\n    host: [\"http://10.0.0.1:2379\", \"https://10.0.0.2:2379\"]\n    prefix: /gw/\n    timeout: 3\n    user: root\n    password: p\n").unwrap();
    assert_eq!(
        (c.role, c.config_provider),
        (Role::Traditional, ConfigProvider::Etcd)
    );
    assert_eq!(c.etcd.hosts.len(), 2);
    assert_eq!(c.etcd.prefix, "/gw");
    assert_eq!(c.etcd.timeout, Duration::from_secs(3));
    assert_eq!(c.etcd.watch_timeout, Duration::from_secs(50));
    assert_eq!(c.etcd.startup_retry, 2);
    assert_eq!(c.etcd.user.as_deref(), Some("root"));
    assert!(c.data_encryption.fields);
    assert_eq!(
        c.data_encryption.keyring,
        ["qeddd145sfvddff3", "edd1c9f0985e76a2"]
    );
    // No etcd section: the embedded store stays the default.
    assert_eq!(
        AppConfig::parse("apisix:\n  node_listen: 9080\n")
            .unwrap()
            .config_provider,
        ConfigProvider::Embedded
    );
    // A data plane on etcd never opens the Admin API; a control plane always does.
    let dp = AppConfig::parse("apisix:\n  enable_admin: true\ndeployment:\n  role: data_plane\n  role_data_plane:\n    config_provider: etcd\n").unwrap();
    assert_eq!((dp.role, dp.admin_enabled), (Role::DataPlane, false));
    let cp = AppConfig::parse("apisix:\n  enable_admin: false\ndeployment:\n  role: control_plane\n  role_control_plane:\n    config_provider: etcd\n").unwrap();
    assert_eq!(
        (cp.role, cp.admin_enabled, cp.config_provider),
        (Role::ControlPlane, true, ConfigProvider::Etcd)
    );
    for (text, want) in [
        (
            "deployment:\n  role: control_plane\n",
            "property \"role_control_plane\" is required",
        ),
        (
            "deployment:\n  role: control_plane\n  role_control_plane:\n    config_provider: yaml\n",
            "a control plane needs etcd",
        ),
        (
            "deployment:\n  role: data_plane\n  role_data_plane:\n    config_provider: xds\n",
            "unknown provider \"xds\"",
        ),
        ("deployment:\n  role: edge\n", "unknown role \"edge\""),
        (
            "deployment:\n  etcd:\n    host: [\"10.0.0.1:2379\"]\n",
            "must start with http:// or https://",
        ),
        (
            "deployment:\n  etcd:\n    timeout: 0\n",
            "deployment.etcd.timeout",
        ),
        (
            "apisix:\n  data_encryption:\n    keyring: [\"short\"]\n",
            "16 (AES-128) or 32 (AES-256)",
        ),
    ] {
        let e = AppConfig::parse(text).unwrap_err();
        assert!(e.0.contains(want), "{text}: {e}");
    }
}

#[test]
fn errors_carry_line_and_column() {
    let e = AppConfig::parse("apisix:\n  node_listen: [9080\n").unwrap_err();
    assert!(e.0.contains("line "), "{e}");
    let e = AppConfig::parse("apisix:\n  enable_admin: maybe\n").unwrap_err();
    assert!(e.0.contains("line 2 column"), "{e}");
    let e = AppConfig::parse("ferry:\n  data_dirr: x\n").unwrap_err();
    assert!(e.0.contains("data_dirr"), "{e}");
    let e =
        AppConfig::parse("nginx_config:\n  http:\n    client_max_body_size: lots\n").unwrap_err();
    assert!(e.0.contains("invalid size"), "{e}");
}

#[test]
fn env_references() {
    let env = |k: &str| match k {
        "PORT" => Some("9555".to_string()),
        _ => None,
    };
    assert_eq!(substitute_env("a: ${{PORT}}", env).unwrap(), "a: 9555");
    assert_eq!(substitute_env("a: ${{ PORT }}", env).unwrap(), "a: 9555");
    assert_eq!(substitute_env("a: ${{NOPE:=7}}", env).unwrap(), "a: 7");
    assert_eq!(substitute_env("a: ${{PORT:=7}}", env).unwrap(), "a: 9555");
    let e = substitute_env("a: ${{NOPE}}", env).unwrap_err();
    assert!(e.0.contains("can't find environment variable NOPE"));
    assert!(substitute_env("a: ${{NOPE", env).is_err());
}

#[test]
fn sizes() {
    assert_eq!(parse_size("1024"), Some(1024));
    assert_eq!(parse_size("2k"), Some(2048));
    assert_eq!(parse_size("1G"), Some(1 << 30));
    assert_eq!(parse_size("x"), None);
}

#[test]
fn node_listen_errors_say_what_is_expected() {
    for bad in [
        "apisix:\n  node_listen: abc\n",
        "apisix:\n  node_listen: [abc]\n",
        "apisix:\n  node_listen: 70000\n",
    ] {
        let e = AppConfig::parse(bad).unwrap_err().to_string();
        assert!(!e.contains("untagged enum"), "{e}");
        assert!(
            e.contains("apisix.node_listen") || e.contains("line"),
            "{e}"
        );
        assert!(e.contains("9080") || e.contains("out of range"), "{e}");
    }
    let c =
        AppConfig::parse("apisix:\n  node_listen: [9081, {ip: 127.0.0.1, port: 9082}]\n").unwrap();
    assert_eq!(
        c.node_listen,
        vec![
            "0.0.0.0:9081".parse().unwrap(),
            "127.0.0.1:9082".parse().unwrap()
        ]
    );
}

#[test]
fn client_limits_defaults_and_settings() {
    use crate::limits::ClientLimits;
    let c = AppConfig::parse("").unwrap();
    assert_eq!(c.client, ClientLimits::default());
    assert_eq!(c.client.header_timeout, Duration::from_secs(60));
    assert_eq!(c.client.send_timeout, Duration::from_secs(10));
    assert_eq!(c.client.max_connections, 10240);
    assert_eq!(c.client.max_sse_event, 4 << 20);
    assert_eq!(c.upstream_max_streams, 100);
    let c = AppConfig::parse(
        "nginx_config:\n  http:\n    client_header_timeout: 5s\n    client_body_timeout: 500ms\n    send_timeout: 2m\n    keepalive_timeout: 0\nferry:\n  max_connections: 100\n  max_sse_event_size: 1m\n",
    )
    .unwrap();
    assert_eq!(
        c.client,
        ClientLimits {
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_millis(500),
            send_timeout: Duration::from_secs(120),
            keepalive_timeout: Duration::ZERO,
            max_connections: 100,
            max_sse_event: 1 << 20,
        }
    );
    assert!(c.ignored_keys.is_empty(), "{:?}", c.ignored_keys);
    for (bad, says) in [
        (
            "nginx_config:\n  http:\n    send_timeout: soon\n",
            "nginx_config.http.send_timeout: invalid time \"soon\"",
        ),
        (
            "nginx_config:\n  http:\n    client_body_timeout: 0s\n",
            "client_body_timeout: must be more than 0",
        ),
        ("ferry:\n  max_connections: 0\n", "at least 1"),
        ("ferry:\n  upstream_max_streams: 0\n", "at least 1"),
        ("ferry:\n  max_sse_event_size: 10\n", "at least 1024"),
    ] {
        let e = AppConfig::parse(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }
}
