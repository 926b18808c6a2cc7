//! Table-driven tests for `vars` expressions, following lua-resty-expr's semantics.

use super::*;
use crate::var::{Builtin, Val, Var};
use serde_json::json;

/// A fixed request: GET /v1/chat?name=alice&n=10 from 10.1.2.3 with a JSON body.
struct Req {
    body: Value,
}

impl VarSource for Req {
    fn get(&self, var: &Var) -> Val<'_> {
        match var {
            Var::Builtin(Builtin::Uri) => Val::str("/v1/chat"),
            Var::Builtin(Builtin::Host) => Val::str("api.example.com"),
            Var::Builtin(Builtin::RemoteAddr) => Val::str("10.1.2.3"),
            Var::Builtin(Builtin::RequestMethod) => Val::str("GET"),
            Var::Arg(a) if a == "name" => Val::str("alice"),
            Var::Arg(a) if a == "n" => Val::str("10"),
            Var::Arg(a) if a == "hex" => Val::str("0x1f"),
            Var::Header(h) if h == "x-team" => Val::str("Platform"),
            Var::Cookie(c) if c == "sid" => Val::str("abc123"),
            Var::PostArg(p) => p.resolve(&self.body),
            _ => Val::Nil,
        }
    }
}

fn eval(rule: Value) -> Result<bool, String> {
    let req = Req {
        body: json!({
            "model": "gpt-4", "temperature": 0.5, "stream": true, "n": 2,
            "meta": {"name": "openai", "tags": ["a", "b"]},
            "messages": [{"role": "user", "content": [{"type": "text"}, {"type": "image_url"}]}]
        }),
    };
    Expr::compile(&rule).map(|e| e.eval(&req))
}

#[test]
fn operators() {
    let cases: Vec<(Value, bool)> = vec![
        // ==, with string and number rhs
        (json!([["arg_name", "==", "alice"]]), true),
        (json!([["arg_name", "==", "bob"]]), false),
        (json!([["arg_n", "==", 10]]), true),
        (json!([["arg_n", "==", "10"]]), true),
        (json!([["arg_n", "==", 10.0]]), true),
        (json!([["arg_hex", "==", 31]]), true),
        (json!([["arg_name", "==", 1]]), false),
        (json!([["arg_missing", "==", "x"]]), false),
        (json!([["arg_missing", "==", null]]), true),
        (json!([["arg_missing", "=="]]), true),
        // two-element shorthand means ==
        (json!([["arg_name", "alice"]]), true),
        // ~=
        (json!([["arg_name", "~=", "bob"]]), true),
        (json!([["arg_name", "~=", "alice"]]), false),
        (json!([["arg_name", "~=", 5]]), true),
        (json!([["arg_n", "~=", 10]]), false),
        (json!([["arg_missing", "~=", "x"]]), true),
        // numeric comparisons
        (json!([["arg_n", ">", 9]]), true),
        (json!([["arg_n", ">", "9"]]), true),
        (json!([["arg_n", ">", 10]]), false),
        (json!([["arg_n", ">=", 10]]), true),
        (json!([["arg_n", "<", 11]]), true),
        (json!([["arg_n", "<=", 9]]), false),
        (json!([["arg_name", ">", 1]]), false),
        (json!([["arg_missing", "<", 1]]), false),
        (json!([["arg_n", ">", "abc"]]), false),
        // regexes
        (json!([["uri", "~~", "^/v1/"]]), true),
        (json!([["uri", "~~", "^/v2/"]]), false),
        (json!([["http_x_team", "~~", "^plat"]]), false),
        (json!([["http_x_team", "~*", "^plat"]]), true),
        (json!([["arg_missing", "~~", ".*"]]), false),
        (json!([["post_arg.n", "~~", "^2$"]]), true),
        // in / has
        (json!([["request_method", "in", ["GET", "POST"]]]), true),
        (json!([["request_method", "in", ["PUT"]]]), false),
        (json!([["arg_n", "in", [10]]]), false),
        (json!([["post_arg.meta.tags", "has", "a"]]), true),
        (json!([["post_arg.meta.tags", "has", "z"]]), false),
        (json!([["arg_name", "has", "alice"]]), false),
        // ipmatch
        (json!([["remote_addr", "ipmatch", ["10.0.0.0/8"]]]), true),
        (json!([["remote_addr", "ipmatch", "10.1.2.3"]]), true),
        (
            json!([["remote_addr", "ipmatch", ["192.168.0.0/16", "::1"]]]),
            false,
        ),
        // negation
        (json!([["arg_name", "!", "==", "bob"]]), true),
        (json!([["arg_name", "!", "==", "alice"]]), false),
        (
            json!([["remote_addr", "!", "ipmatch", ["10.0.0.0/8"]]]),
            false,
        ),
        // case-insensitive operator names
        (json!([["request_method", "IN", ["GET"]]]), true),
        (json!([["remote_addr", "IPMATCH", "10.0.0.0/8"]]), true),
        // cookies and headers
        (json!([["cookie_sid", "==", "abc123"]]), true),
        (json!([["http_x_team", "==", "Platform"]]), true),
        // post_arg: strings, numbers, booleans, objects, nested, JSONPath
        (json!([["post_arg.model", "==", "gpt-4"]]), true),
        (json!([["post_arg.temperature", "<", 1]]), true),
        (json!([["post_arg.temperature", "==", 0.5]]), true),
        (json!([["post_arg.stream", "==", true]]), true),
        (json!([["post_arg.stream", "==", "true"]]), false),
        (json!([["post_arg.meta", "==", "x"]]), false),
        (json!([["post_arg.meta.name", "==", "openai"]]), true),
        (
            json!([["post_arg.messages[*].content[*].type", "has", "image_url"]]),
            true,
        ),
        (
            json!([["post_arg.messages[*].content[*].type", "has", "audio"]]),
            false,
        ),
        (json!([["post_arg.messages[*].role", "has", "user"]]), true),
        (json!([["post_arg..type", "has", "text"]]), true),
        (json!([["post_arg.nothing[*]", "==", null]]), true),
        // empty rule matches everything
        (json!([]), true),
    ];
    for (rule, want) in cases {
        assert_eq!(eval(rule.clone()), Ok(want), "rule {rule}");
    }
}

#[test]
fn logic() {
    let cases: Vec<(Value, bool)> = vec![
        (
            json!([["arg_name", "==", "alice"], ["arg_n", "==", 10]]),
            true,
        ),
        (
            json!([["arg_name", "==", "alice"], ["arg_n", "==", 11]]),
            false,
        ),
        (
            json!(["AND", ["arg_name", "==", "alice"], ["arg_n", ">", 5]]),
            true,
        ),
        (
            json!(["OR", ["arg_name", "==", "bob"], ["arg_n", ">", 5]]),
            true,
        ),
        (
            json!(["OR", ["arg_name", "==", "bob"], ["arg_n", ">", 50]]),
            false,
        ),
        (
            json!(["!AND", ["arg_name", "==", "alice"], ["arg_n", ">", 5]]),
            false,
        ),
        (
            json!(["!OR", ["arg_name", "==", "bob"], ["arg_n", ">", 50]]),
            true,
        ),
        (
            json!(["or", ["arg_name", "==", "bob"], ["arg_n", ">", 5]]),
            true,
        ),
        (
            json!([
                "AND",
                ["OR", ["arg_name", "==", "bob"], ["arg_name", "==", "alice"]],
                ["!OR", ["uri", "~~", "^/admin"], ["arg_n", "<", 1]]
            ]),
            true,
        ),
        (
            json!([
                ["uri", "==", "/v1/chat"],
                ["OR", ["arg_x", "==", "1"], ["arg_name", "==", "alice"]]
            ]),
            true,
        ),
    ];
    for (rule, want) in cases {
        assert_eq!(eval(rule.clone()), Ok(want), "rule {rule}");
    }
}

#[test]
fn compile_errors() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"a": 1}), "vars must be an array"),
        (
            json!(["arg_name", "==", "alice"]),
            "rule should be wrapped inside brackets",
        ),
        (json!([["arg_name", "=~", "x"]]), "invalid operator '=~'"),
        (
            json!([["arg_name", "?", "==", "x"]]),
            "bad 'not' expression",
        ),
        (json!(["OR", ["arg_name", "==", "x"]]), "rule too short"),
        (json!([["uri", "~~", "("]]), "invalid regex"),
        (json!([["uri", "~~", 5]]), "needs a string regex"),
        (json!([["uri", "in", "x"]]), "'in' needs an array"),
        (
            json!([["remote_addr", "ipmatch", ["300.1.1.1"]]]),
            "invalid IP address",
        ),
        (json!([[1, "==", "x"]]), "variable name must be a string"),
        (json!([["a"]]), "invalid expression"),
        (json!([["a", "==", 1, 2, 3]]), "invalid expression"),
        (json!([["post_arg.a[", "has", "x"]]), "invalid JSONPath"),
        (json!([["arg_a", "==", "x"], "oops"]), "invalid expression"),
    ];
    for (rule, want) in cases {
        let err = Expr::compile(&rule).err().unwrap_or_default();
        assert!(
            err.contains(want),
            "rule {rule}: got {err:?}, want {want:?}"
        );
    }
}

#[test]
fn needs_body_tracks_post_args() {
    let e = Expr::compile(&json!([["arg_a", "==", "1"]])).unwrap();
    assert!(!e.needs_body());
    let e = Expr::compile(&json!([
        "OR",
        ["arg_a", "==", "1"],
        ["post_arg.model", "==", "x"]
    ]))
    .unwrap();
    assert!(e.needs_body());
}
