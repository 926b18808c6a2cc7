//! Tests for resource validation messages and normalisation.

use super::*;
use serde_json::json;

/// Knows one plugin, `request-id`, whose only field is a string `header_name`.
struct Plugins;

impl PluginChecker for Plugins {
    fn check(&self, name: &str, conf: &Value) -> Result<Value, PluginCheckError> {
        if name != "request-id" {
            return Err(PluginCheckError::Unknown);
        }
        match conf.get("header_name") {
            Some(Value::String(_)) | None => {
                let mut c = conf.clone();
                c.as_object_mut()
                    .map(|o| o.entry("header_name").or_insert(json!("X-Request-Id")));
                Ok(c)
            }
            Some(_) => Err(PluginCheckError::Invalid(
                "property \"header_name\" validation failed: wrong type: expected string, got number".into(),
            )),
        }
    }
}

fn check(kind: Kind, v: Value) -> Result<(Value, Vec<Ref>), String> {
    validate(kind, &v, &Plugins).map(|r| (v, r))
}

#[test]
fn valid_routes() {
    let (v, refs) = check(
        Kind::Routes,
        json!({"id": "r1", "uri": "/anything", "methods": ["POST"], "plugins": {"request-id": {}},
               "vars": [["post_arg.model", "==", "openai"]], "priority": 2, "hosts": ["*.example.com"],
               "remote_addrs": ["10.0.0.0/8", "::1"], "service_id": "s1", "labels": {"team": "ai"},
               "status": 1, "timeout": {"connect": 3, "send": 3, "read": 3}}),
    )
    .unwrap();
    assert_eq!(
        v["plugins"]["request-id"],
        json!({}),
        "checked, not rewritten: defaults apply at compile time"
    );
    assert_eq!(refs, vec![(Kind::Services, "s1".to_string())]);
    check(
        Kind::Routes,
        json!({"id": 12, "uris": ["/a", "/b*"], "plugin_config_id": 3}),
    )
    .unwrap();
    check(
        Kind::Routes,
        json!({"uri": "/a", "upstream": {"nodes": {"127.0.0.1:80": 1}}}),
    )
    .unwrap();
}

#[test]
fn route_errors() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"uri": "/a"}), "needs at least one of"),
        (json!({"plugins": {}}), "\"uri\" or \"uris\" is required"),
        (
            json!({"uri": 5, "plugins": {}}),
            "property \"uri\" validation failed: wrong type: expected string, got integer",
        ),
        (
            json!({"uri": "/a", "uris": ["/b"], "plugins": {}}),
            "only one of",
        ),
        (json!({"uris": [], "plugins": {}}), "at least 1 items"),
        (json!({"uris": ["/a", "/a"], "plugins": {}}), "duplicated"),
        (
            json!({"uri": "/a*b", "plugins": {}}),
            "'*' is only allowed at the end",
        ),
        (
            json!({"uri": "/a", "plugins": {}, "methods": ["FETCH"]}),
            "\"methods\" validation failed",
        ),
        (
            json!({"uri": "/a", "plugins": {}, "host": "bad host"}),
            "\"host\" validation failed",
        ),
        (
            json!({"uri": "/a", "plugins": {}, "remote_addrs": ["1.2.3.999"]}),
            "\"remote_addrs[0]\" validation failed",
        ),
        (
            json!({"uri": "/a", "plugins": {}, "vars": [["arg_a", "=~", "x"]]}),
            "failed to validate the 'vars' expression: invalid operator '=~'",
        ),
        (
            json!({"uri": "/a", "plugins": {}, "priority": "high"}),
            "\"priority\" validation failed",
        ),
        (
            json!({"uri": "/a", "plugins": {}, "status": 2}),
            "\"status\" validation failed",
        ),
        (
            json!({"uri": "/a", "plugins": {}, "bogus": 1}),
            "additional properties forbidden, found bogus",
        ),
        (
            json!({"uri": "/a", "plugins": {"nope": {}}}),
            "unknown plugin [nope]",
        ),
        (
            json!({"uri": "/a", "plugins": {"request-id": {"header_name": 1}}}),
            "failed to check the configuration of plugin request-id err: property \"header_name\"",
        ),
        (
            json!({"uri": "/a", "plugins": {"request-id": []}}),
            "failed to check the configuration of plugin request-id err: wrong type: expected object",
        ),
        (
            json!({"uri": "/a", "plugins": {}, "id": "bad id!"}),
            "property \"id\" validation failed",
        ),
        (
            json!({"uri": "/a", "upstream": {"nodes": {"a:1": 1}, "retries": -1}}),
            "property \"upstream.retries\" validation failed: expected -1 to be at least 0",
        ),
        (
            json!({"uri": "/a", "plugins": {}, "filter_func": "function() end"}),
            "\"filter_func\" is not supported",
        ),
        (
            json!({"uri": "/a", "plugins": {}, "name": ""}),
            "\"name\" validation failed",
        ),
        (
            json!({"uri": "/a", "plugins": {}, "timeout": {"connect": 0}}),
            "timeout.connect",
        ),
        (json!([1, 2]), "expected object"),
    ];
    for (v, want) in cases {
        let err = check(Kind::Routes, v.clone()).err().unwrap_or_default();
        assert!(err.contains(want), "{v}: got {err:?}, want {want:?}");
    }
}

#[test]
fn services_and_plugin_configs() {
    check(
        Kind::Services,
        json!({"id": "s", "plugins": {"request-id": {}}, "hosts": ["a.com"]}),
    )
    .unwrap();
    let e = check(Kind::Services, json!({"uri": "/a"})).unwrap_err();
    assert!(
        e.contains("additional properties forbidden, found uri"),
        "{e}"
    );
    let e = check(Kind::PluginConfigs, json!({"id": "p"})).unwrap_err();
    assert!(e.contains("\"plugins\" is required"), "{e}");
    check(Kind::PluginConfigs, json!({"id": "p", "plugins": {}})).unwrap();
}

#[test]
fn ids() {
    assert!(valid_id("ai-proxy-route_1.v2"));
    assert!(!valid_id(""));
    assert!(!valid_id("a/b"));
    assert!(!valid_id(&"x".repeat(65)));
    assert_eq!(id_string(&json!(7)), Some("7".to_string()));
    assert_eq!(id_string(&json!(1.5)), None);
}
