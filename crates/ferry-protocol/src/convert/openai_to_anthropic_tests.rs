//! Tests: OpenAI client → Anthropic provider.

use super::*;
use crate::convert::test_rng::Rng;
use crate::sse::Decoder;
use serde_json::json;

#[test]
fn request_mapping() {
    let c = request(&json!({
        "model": "claude-sonnet-4", "max_completion_tokens": 300, "temperature": 1.5, "top_p": 0.9, "stop": "END",
        "user": "alice", "stream": true, "stream_options": {"include_usage": true}, "n": 1,
        "reasoning_effort": "low", "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "w", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "required", "parallel_tool_calls": false,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,IMG"}},
                                          {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}}]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "oops"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
            {"role": "user", "content": "Thanks"}
        ]
    }))
    .unwrap();
    assert!(c.stream && c.include_usage);
    assert_eq!(
        c.body,
        json!({
            "model": "claude-sonnet-4", "max_tokens": 1025, "temperature": 1.0, "top_p": 0.9, "stop_sequences": ["END"],
            "metadata": {"user_id": "alice"}, "stream": true, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "output_format": {"type": "json_schema", "schema": {"type": "object"}},
            "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use tools."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "IMG"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "rain"},
                    {"type": "text", "text": "Thanks"}]}
            ]
        })
    );
}

#[test]
fn defaults_and_errors() {
    let c = request(&json!({"messages": [{"role": "user", "content": "x"}]})).unwrap();
    assert_eq!(c.body["max_tokens"], DEFAULT_MAX_TOKENS);
    assert!(!c.stream && !c.include_usage);
    let c = request(&json!({"max_tokens": 100, "reasoning_effort": "high", "messages": [{"role": "user", "content": "x"}]})).unwrap();
    assert_eq!(
        c.body["max_tokens"], 4097,
        "max_tokens must exceed the thinking budget"
    );
    for (body, want) in [
        (json!("x"), "request body must be a JSON object"),
        (json!({"messages": []}), "missing messages"),
        (
            json!({"messages": [{"content": "x"}]}),
            "invalid message at index 0: missing role",
        ),
        (
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            "unknown role",
        ),
        (
            json!({"messages": [{"role": "system", "content": "x"}]}),
            "only system messages",
        ),
    ] {
        assert!(request(&body).unwrap_err().contains(want), "{body}");
    }
}

#[test]
fn json_responses() {
    let out = response(&json!({"id": "msg_1", "model": "claude", "stop_reason": "tool_use",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
        "usage": {"input_tokens": 50, "output_tokens": 30, "cache_read_input_tokens": 200, "cache_creation_input_tokens": 100}}))
    .unwrap();
    assert_eq!(
        out["choices"][0]["message"],
        json!({"role": "assistant", "content": "Let me check.", "refusal": null, "reasoning_content": "hmm",
        "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
    );
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 350, "completion_tokens": 30, "total_tokens": 380, "prompt_tokens_details": {"cached_tokens": 200}})
    );
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["id"], "msg_1");
    let out = response(
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
    .unwrap();
    assert_eq!(out["error"]["message"], "Overloaded");
    assert_eq!(out["error"]["type"], "overloaded_error");
    assert!(response(&json!({"id": "x"})).is_err());
    for (r, want) in [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
    ] {
        assert_eq!(
            response(&json!({"content": [], "stop_reason": r})).unwrap()["choices"][0]["finish_reason"],
            want
        );
    }
}

const STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1,\"cache_read_input_tokens\":5}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hm\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"s\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":7}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

fn convert(s: &str, split: usize, include_usage: bool) -> Vec<String> {
    let mut d = Decoder::new();
    let mut evs = Vec::new();
    d.feed(&s.as_bytes()[..split], &mut evs);
    d.feed(&s.as_bytes()[split..], &mut evs);
    d.finish(&mut evs);
    let mut conv = Stream::created_at(include_usage, 1_700_000_000);
    let mut out = Vec::new();
    for e in evs {
        conv.event(&e.kind, &e.data, &mut out);
    }
    conv.finish(&mut out);
    out.into_iter().map(|e| e.data).collect()
}

#[test]
fn stream_identical_at_every_split() {
    let want = convert(STREAM, 0, true);
    let v: Vec<Value> = want
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(want.last().unwrap(), "[DONE]");
    assert_eq!(
        v[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(v[0]["id"], "msg_1");
    assert_eq!(v[1]["choices"][0]["delta"]["reasoning_content"], "hm");
    assert_eq!(v[2]["choices"][0]["delta"]["content"], "Hi");
    assert_eq!(
        v[3]["choices"][0]["delta"]["tool_calls"][0],
        json!({"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": ""}})
    );
    let args: String = v[4..6]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(args, "{\"a\":1}");
    assert_eq!(v[6]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v[7]["choices"], json!([]));
    assert_eq!(
        v[7]["usage"],
        json!({"prompt_tokens": 15, "completion_tokens": 7, "total_tokens": 22, "prompt_tokens_details": {"cached_tokens": 5}})
    );
    for i in 0..=STREAM.len() {
        assert_eq!(convert(STREAM, i, true), want, "split at {i}");
    }
    // Without include_usage there is no usage chunk.
    let no_usage = convert(STREAM, 0, false);
    assert_eq!(no_usage.len(), want.len() - 1);
    assert!(!no_usage.iter().any(|d| d.contains("\"usage\"")));
}

#[test]
fn stream_cut_and_errors() {
    // Cut mid tool call: still a finish chunk and [DONE].
    let cut = &STREAM[..STREAM
        .find("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}")
        .unwrap()];
    let out = convert(cut, 0, false);
    assert_eq!(out.last().unwrap(), "[DONE]");
    assert!(out[out.len() - 2].contains("\"finish_reason\":\"stop\""));
    // An error event becomes an OpenAI error object and ends the stream.
    let s = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{}}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    );
    let out = convert(s, 0, true);
    assert_eq!(out.len(), 2);
    assert!(out[1].contains("\"message\":\"Overloaded\""));
    // Nothing upstream: nothing out.
    assert!(convert("data: [DONE]\n\n", 0, true).is_empty());
}

#[test]
fn property_any_anthropic_sequence_gives_a_valid_openai_stream() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let ev = |k: &str, v: Value| format!("event: {k}\ndata: {v}\n\n");
    for _ in 0..500 {
        let mut s = ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 3}}}),
        );
        let blocks = rng.next(5);
        let mut tools = 0;
        for i in 0..blocks {
            let kind = rng.next(3);
            let start = match kind {
                0 => json!({"type": "text", "text": ""}),
                1 => json!({"type": "thinking", "thinking": ""}),
                _ => {
                    tools += 1;
                    json!({"type": "tool_use", "id": format!("t{i}"), "name": "f", "input": {}})
                }
            };
            s.push_str(&ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": i, "content_block": start}),
            ));
            for _ in 0..rng.next(4) {
                let delta = match kind {
                    0 => json!({"type": "text_delta", "text": "x"}),
                    1 => json!({"type": "thinking_delta", "thinking": "y"}),
                    _ => json!({"type": "input_json_delta", "partial_json": "{}"}),
                };
                s.push_str(&ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": i, "delta": delta}),
                ));
            }
            s.push_str(&ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": i}),
            ));
        }
        if rng.next(3) > 0 {
            s.push_str(&ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": if tools > 0 { "tool_use" } else { "end_turn" }}, "usage": {"output_tokens": 5}})));
            if rng.next(2) == 0 {
                s.push_str(&ev("message_stop", json!({"type": "message_stop"})));
            }
        }
        let include_usage = rng.next(2) == 0;
        let out = convert(&s, rng.next(s.len() as u64 + 1) as usize, include_usage);
        // role chunk first, [DONE] last, exactly one finish reason, usage only when asked, last.
        assert_eq!(out.last().map(String::as_str), Some("[DONE]"), "{out:?}");
        let chunks: Vec<Value> = out[..out.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let finishes = chunks
            .iter()
            .filter(|c| c["choices"][0]["finish_reason"].is_string())
            .count();
        assert_eq!(finishes, 1, "{out:?}");
        let usage = chunks.iter().filter(|c| c.get("usage").is_some()).count();
        assert_eq!(usage, usize::from(include_usage));
        if include_usage {
            assert_eq!(chunks.last().unwrap()["choices"], json!([]));
        }
        let tool_ids = chunks
            .iter()
            .filter(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"].is_string())
            .count();
        assert_eq!(tool_ids, tools, "each tool call announced once");
    }
}
