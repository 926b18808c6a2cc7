//! Route `vars` expressions: any JSON compiles or is refused, and a compiled one evaluates
//! against a request without panicking.
#![no_main]

use bytes::Bytes;
use ferry_config::Expr;
use ferry_core::ctx::Ctx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(expr) = Expr::compile(&v) else {
        return;
    };
    let (parts, ()) = http::Request::post("/v1/chat/completions?a=1&b=x")
        .header("content-type", "application/json")
        .header("x-user", "alice")
        .header("cookie", "session=abc; theme=dark")
        .body(())
        .expect("a request")
        .into_parts();
    let body = Bytes::from_static(br#"{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"hi"}]}"#);
    let ctx = Ctx::with_body(
        parts,
        body,
        "127.0.0.1:5000".parse().expect("addr"),
        "127.0.0.1:9080".parse().expect("addr"),
    );
    let _ = expr.eval(&ctx);
});
