//! Request handling before the upstream call: the typed peek (what the fast path reads) and
//! full parse + shaping + re-encoding (what a changed body costs), for a 2 KB and a 100 KB chat
//! body. Run: `cargo bench -p ferry-protocol --bench shape`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use divan::Bencher;
use ferry_protocol::shape::{MaxTokensField, Shaping, shape};
use ferry_protocol::wire::RequestPeek;
use serde_json::{Map, Value, json};

fn main() {
    divan::main();
}

/// A chat body of about `kb` kilobytes (a system prompt and alternating turns).
fn body(kb: usize) -> String {
    let mut messages = vec![json!({"role": "system", "content": "You are a helpful assistant."})];
    let turn = "Tell me about ferries crossing rivers at night, in detail, please. ";
    while serde_json::to_string(&messages).unwrap().len() < kb * 1024 {
        messages.push(json!({"role": "user", "content": turn.repeat(3)}));
        messages.push(json!({"role": "assistant", "content": turn.repeat(4)}));
    }
    json!({"model": "gpt-4o-mini", "stream": true, "temperature": 0.2, "messages": messages,
           "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]})
    .to_string()
}

#[divan::bench(args = [2, 100])]
fn peek(b: Bencher, kb: usize) {
    let text = body(kb);
    b.counter(divan::counter::BytesCount::new(text.len()))
        .bench(|| {
            let p: RequestPeek = serde_json::from_str(divan::black_box(&text)).unwrap();
            p.tools.items.len()
        });
}

#[divan::bench(args = [2, 100])]
fn parse_shape_encode(b: Bencher, kb: usize) {
    let text = body(kb);
    let options: Map<String, Value> = json!({"model": "gpt-4o"}).as_object().unwrap().clone();
    let patch: Map<String, Value> = json!({"user": "ferry"}).as_object().unwrap().clone();
    b.counter(divan::counter::BytesCount::new(text.len()))
        .bench(|| {
            let mut v: Value = serde_json::from_str(divan::black_box(&text)).unwrap();
            let shaping = Shaping {
                options: Some(&options),
                max_tokens: Some((
                    512,
                    MaxTokensField::MaxCompletionTokens {
                        delete_max_tokens: true,
                    },
                )),
                request_body: Some(&patch),
                force: false,
                remove_model: false,
                inject_usage: true,
            };
            let shaped = shape(v.as_object_mut().unwrap(), &shaping);
            assert!(shaped.changed);
            serde_json::to_vec(&v).unwrap().len()
        });
}
