//! Converter and SSE throughput: each direction, streaming and not (bytes/s and events/s).
//! Run: `cargo bench -p ferry-protocol --bench convert`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use ferry_protocol::convert::{
    StreamConverter, ToolNames, anthropic_to_openai, gemini_to_openai, openai_to_anthropic,
};
use ferry_protocol::sse::Decoder;
use serde_json::{Value, json};

fn main() {
    divan::main();
}

/// An OpenAI chat stream of `n` content chunks (plus role, finish, usage, [DONE]).
fn openai_stream(n: usize) -> String {
    let mut s = String::new();
    let c = |d: Value, f: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_bench", "choices": [{"index": 0, "delta": d, "logprobs": null, "finish_reason": f}]})
        )
    };
    s.push_str(&c(json!({"role": "assistant", "content": ""}), Value::Null));
    for i in 0..n {
        s.push_str(&c(
            json!({"content": format!("token{i} of a streamed answer ")}),
            Value::Null,
        ));
    }
    s.push_str(&c(json!({}), json!("stop")));
    s.push_str(&format!("data: {}\n\n", json!({"id": "chatcmpl-bench", "choices": [], "usage": {"prompt_tokens": 120, "completion_tokens": n, "total_tokens": 120 + n}})));
    s.push_str("data: [DONE]\n\n");
    s
}

fn anthropic_stream(n: usize) -> String {
    let e = |k: &str, v: Value| format!("event: {k}\ndata: {v}\n\n");
    let mut s = e(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_bench", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4", "content": [], "usage": {"input_tokens": 120, "output_tokens": 1}}}),
    );
    s.push_str(&e("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
    for i in 0..n {
        s.push_str(&e(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": format!("token{i} of a streamed answer ")}}),
        ));
    }
    s.push_str(&e(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    s.push_str(&e("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": n}})));
    s.push_str(&e("message_stop", json!({"type": "message_stop"})));
    s
}

fn run(stream: &str, conv: &mut dyn StreamConverter) -> usize {
    let mut d = Decoder::new();
    let mut evs = Vec::new();
    let mut out = Vec::new();
    for chunk in stream.as_bytes().chunks(512) {
        d.feed(chunk, &mut evs);
        for e in evs.drain(..) {
            conv.event(&e.kind, &e.data, &mut out);
        }
    }
    conv.finish(&mut out);
    out.len()
}

#[divan::bench]
fn sse_decode(b: Bencher) {
    let s = openai_stream(18);
    b.counter(BytesCount::new(s.len()))
        .counter(ItemsCount::new(22usize))
        .bench(|| {
            let mut d = Decoder::new();
            let mut evs = Vec::new();
            for chunk in black_box(s.as_bytes()).chunks(512) {
                d.feed(chunk, &mut evs);
            }
            evs.len()
        });
}

#[divan::bench]
fn stream_openai_to_anthropic_events(b: Bencher) {
    let s = openai_stream(18);
    b.counter(BytesCount::new(s.len()))
        .counter(ItemsCount::new(22usize))
        .bench(|| {
            run(
                black_box(&s),
                &mut anthropic_to_openai::Stream::new(ToolNames::default(), None),
            )
        });
}

#[divan::bench]
fn stream_anthropic_to_openai_chunks(b: Bencher) {
    let s = anthropic_stream(18);
    b.counter(BytesCount::new(s.len()))
        .counter(ItemsCount::new(23usize))
        .bench(|| run(black_box(&s), &mut openai_to_anthropic::Stream::new(true)));
}

#[divan::bench]
fn stream_openai_to_gemini_events(b: Bencher) {
    let s = openai_stream(18);
    b.counter(BytesCount::new(s.len()))
        .counter(ItemsCount::new(22usize))
        .bench(|| run(black_box(&s), &mut gemini_to_openai::Stream::new(false)));
}

#[divan::bench]
fn request_gemini_to_openai(b: Bencher) {
    let text = json!({
        "systemInstruction": {"parts": [{"text": "You are a careful assistant."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "What is the weather in Paris and in Rome? ".repeat(10)}]},
            {"role": "model", "parts": [{"text": "Checking."}, {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "sunny"}}}, {"text": "And Rome?"}]}],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
            "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}]}],
        "generationConfig": {"maxOutputTokens": 1024, "temperature": 0.2}})
    .to_string();
    let call = gemini_to_openai::Call {
        model: "gemini-2.5-flash",
        stream: true,
    };
    b.counter(BytesCount::new(text.len())).bench(|| {
        let parsed: Value = serde_json::from_str(black_box(&text)).unwrap();
        serde_json::to_vec(&gemini_to_openai::request(&parsed, call).unwrap().body)
            .unwrap()
            .len()
    });
}

#[divan::bench]
fn response_openai_to_gemini(b: Bencher) {
    let text = json!({"id": "chatcmpl-1", "model": "gpt-4o", "choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "The weather in Rome is sunny with a light breeze. ".repeat(8)}}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 80, "total_tokens": 380}}).to_string();
    b.counter(BytesCount::new(text.len())).bench(|| {
        let parsed: Value = serde_json::from_str(black_box(&text)).unwrap();
        gemini_to_openai::response(&parsed, false)
            .unwrap()
            .to_string()
            .len()
    });
}

fn anthropic_request() -> Value {
    json!({"model": "claude-sonnet-4", "max_tokens": 1024, "system": "You are a careful assistant.",
    "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
    "messages": [
        {"role": "user", "content": "What is the weather in Paris and in Rome? ".repeat(10)},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}, {"type": "text", "text": "And Rome?"}]}
    ]})
}

fn openai_request() -> Value {
    json!({"model": "gpt-4o", "max_tokens": 1024,
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    "messages": [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "What is the weather in Paris and in Rome? ".repeat(10)},
        {"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "user", "content": "And Rome?"}
    ]})
}

#[divan::bench]
fn request_anthropic_to_openai(b: Bencher) {
    let v = anthropic_request();
    let text = v.to_string();
    b.counter(BytesCount::new(text.len())).bench(|| {
        let parsed: Value = serde_json::from_str(black_box(&text)).unwrap();
        serde_json::to_vec(&anthropic_to_openai::request(&parsed).unwrap().body)
            .unwrap()
            .len()
    });
}

#[divan::bench]
fn request_openai_to_anthropic(b: Bencher) {
    let text = openai_request().to_string();
    b.counter(BytesCount::new(text.len())).bench(|| {
        let parsed: Value = serde_json::from_str(black_box(&text)).unwrap();
        serde_json::to_vec(&openai_to_anthropic::request(&parsed).unwrap().body)
            .unwrap()
            .len()
    });
}

#[divan::bench]
fn response_openai_to_anthropic(b: Bencher) {
    let text = json!({"id": "chatcmpl-1", "model": "gpt-4o", "choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "The weather in Rome is sunny with a light breeze. ".repeat(8)}}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 80, "total_tokens": 380}}).to_string();
    let names = ToolNames::default();
    b.counter(BytesCount::new(text.len())).bench(|| {
        let parsed: Value = serde_json::from_str(black_box(&text)).unwrap();
        anthropic_to_openai::response(&parsed, &names, None)
            .unwrap()
            .to_string()
            .len()
    });
}

#[divan::bench]
fn response_anthropic_to_openai(b: Bencher) {
    let text = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "end_turn",
        "content": [{"type": "text", "text": "The weather in Rome is sunny with a light breeze. ".repeat(8)}],
        "usage": {"input_tokens": 300, "output_tokens": 80}}).to_string();
    b.counter(BytesCount::new(text.len())).bench(|| {
        let parsed: Value = serde_json::from_str(black_box(&text)).unwrap();
        openai_to_anthropic::response(&parsed)
            .unwrap()
            .to_string()
            .len()
    });
}
