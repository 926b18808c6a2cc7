//! Tests: Anthropic client → OpenAI provider.

use super::*;
use crate::convert::StreamConverter;
use crate::convert::test_rng::Rng;
use crate::sse::Decoder;
use serde_json::json;

fn req(v: Value) -> Value {
    request(&v).unwrap().body
}

#[test]
fn request_whitelist_and_mappings() {
    let out = req(json!({
        "model": "claude-x", "max_tokens": 1024, "temperature": 0.5, "top_p": 0.9, "top_k": 5,
        "stop_sequences": ["END"], "metadata": {"user_id": "u1", "other": 1}, "service_tier": "auto",
        "stream": true, "container": "c", "unknown": true, "thinking": {"type": "enabled", "budget_tokens": 2048},
        "system": [{"type": "text", "text": "Be ", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "brief."}],
        "messages": [{"role": "user", "content": "hi"}]
    }));
    assert_eq!(
        out,
        json!({
            "model": "claude-x", "max_completion_tokens": 1024, "temperature": 0.5, "top_p": 0.9, "stop": ["END"],
            "user": "u1", "service_tier": "auto", "stream": true, "stream_options": {"include_usage": true},
            "reasoning_effort": "medium",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
        })
    );
}

#[test]
fn thinking_budgets() {
    let e = |t: Value| {
        req(json!({"messages": [{"role": "user", "content": "x"}], "thinking": t}))["reasoning_effort"].clone()
    };
    assert_eq!(e(json!({"type": "enabled", "budget_tokens": 0})), "minimal");
    assert_eq!(
        e(json!({"type": "enabled", "budget_tokens": 1023})),
        "minimal"
    );
    assert_eq!(e(json!({"type": "enabled", "budget_tokens": 1024})), "low");
    assert_eq!(e(json!({"type": "enabled", "budget_tokens": 2047})), "low");
    assert_eq!(
        e(json!({"type": "enabled", "budget_tokens": 4095})),
        "medium"
    );
    assert_eq!(
        e(json!({"type": "enabled", "budget_tokens": 32000})),
        "high"
    );
    assert_eq!(e(json!({"type": "enabled"})), "minimal");
    assert_eq!(e(json!({"type": "adaptive"})), "medium");
    assert_eq!(e(json!({"type": "disabled"})), Value::Null);
    let out = req(
        json!({"messages": [{"role": "user", "content": "x"}], "thinking": {"type": "adaptive"}, "output_config": {"effort": "xhigh"}}),
    );
    assert_eq!(out["reasoning_effort"], "xhigh");
}

#[test]
fn tools_and_choice() {
    let tools = json!([
        {"name": "get_weather", "description": "w", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
        {"type": "web_search_20250305", "name": "web_search"},
        {"type": "bash_20250124", "name": "bash"},
        {"name": ""},
        "junk",
        {"name": "mcp.tool/x", "input_schema": {"type": "object"}}
    ]);
    let c = request(
        &json!({"messages": [{"role": "user", "content": "x"}], "tools": tools,
        "tool_choice": {"type": "tool", "name": "mcp.tool/x", "disable_parallel_tool_use": true}}),
    )
    .unwrap();
    let t = &c.body["tools"];
    assert_eq!(t.as_array().unwrap().len(), 2);
    assert_eq!(
        t[0],
        json!({"type": "function", "function": {"name": "get_weather", "description": "w", "parameters": {"type": "object"}}})
    );
    let sanitised = t[1]["function"]["name"].as_str().unwrap();
    assert!(sanitised.starts_with("mcp_tool_x_"));
    assert_eq!(
        c.body["tool_choice"],
        json!({"type": "function", "function": {"name": sanitised}})
    );
    assert_eq!(c.body["parallel_tool_calls"], false);
    assert_eq!(c.tool_names.restore(sanitised), "mcp.tool/x");
    for (choice, want) in [
        ("auto", json!("auto")),
        ("any", json!("required")),
        ("none", json!("none")),
    ] {
        let out = req(
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"name": "f"}], "tool_choice": {"type": choice}}),
        );
        assert_eq!(out["tool_choice"], want);
    }
    // Without tools, no tools and no tool_choice.
    let out = req(
        json!({"messages": [{"role": "user", "content": "x"}], "tools": [], "tool_choice": {"type": "any"}}),
    );
    assert!(out.get("tools").is_none() && out.get("tool_choice").is_none());
}

#[test]
fn content_blocks() {
    let out = req(json!({"messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAA"}},
            {"type": "image", "source": {"type": "url", "url": "https://x/cat.png"}},
            {"type": "image", "source": {"type": "url", "url": ""}},
            {"type": "document", "source": {"type": "base64", "data": "PDF"}}
        ]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
        ]},
        {"role": "user", "content": [
            {"type": "text", "text": "and?"},
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sun"}, {"type": "text", "text": "ny"}]}
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2", "content": [
            {"type": "text", "text": "chart"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "IMG"}}]}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "user", "content": []}
    ]}));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAA"}},
                {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
                {"type": "image_url", "image_url": {"url": "data:application/pdf;base64,PDF"}}
            ]},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "user", "content": [{"type": "text", "text": "and?"}]},
            {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "chart"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,IMG"}}]},
            {"role": "assistant", "content": "ab"},
            {"role": "user", "content": ""}
        ])
    );
}

#[test]
fn structured_output_and_billing_header() {
    let out = req(json!({"messages": [{"role": "user", "content": "x"}],
        "output_format": {"type": "json_schema", "schema": {"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "object", "properties": {"z": {}}}}}},
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=1; cch=abc"}, {"type": "text", "text": "Hi"}]}));
    assert_eq!(
        out["response_format"]["json_schema"]["schema"],
        json!({"type": "object", "additionalProperties": false, "required": ["a", "b"],
        "properties": {"b": {"type": "string"}, "a": {"type": "object", "properties": {"z": {}}, "additionalProperties": false, "required": ["z"]}}})
    );
    assert_eq!(out["response_format"]["json_schema"]["strict"], true);
    assert_eq!(
        out["messages"][0]["content"],
        "x-anthropic-billing-header: cc_version=1Hi"
    );
    let out = req(
        json!({"messages": [{"role": "user", "content": "x"}], "output_format": {"type": "json_object"}}),
    );
    assert!(out.get("response_format").is_none());
}

#[test]
fn request_errors() {
    for (body, want) in [
        (json!([1]), "request body must be a table"),
        (json!({"model": "m"}), "missing messages"),
        (json!({"messages": "hello"}), "missing messages"),
        (json!({"messages": []}), "missing messages"),
        (
            json!({"messages": [{"content": "x"}]}),
            "invalid message at index 1",
        ),
        (
            json!({"messages": [{"role": "user", "content": 5}]}),
            "invalid message content at index 1",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image", "source": true}]}]}),
            "invalid image source",
        ),
    ] {
        assert!(request(&body).unwrap_err().contains(want), "{body}");
    }
}

#[test]
fn json_responses() {
    let mut names = ToolNames::default();
    let safe = names.sanitise("mcp.tool/x");
    let res = json!({"id": "chatcmpl-1", "model": "gpt-4o", "choices": [{"finish_reason": "tool_calls", "message": {
        "content": "Checking.", "reasoning_content": "think",
        "tool_calls": [{"id": "call_abc123", "function": {"name": safe, "arguments": "{\"q\":1}"}},
                       {"id": "call_2", "function": {"name": "f", "arguments": "not json"}},
                       {"id": "call_3", "function": {"name": "g", "arguments": "[1]"}}]}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 10, "cache_creation_input_tokens": 5}}});
    let out = response(&res, &names, Some("configured")).unwrap();
    assert_eq!(
        out,
        json!({"id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "configured",
        "content": [
            {"type": "thinking", "thinking": "think", "signature": ""},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_abc123", "name": "mcp.tool/x", "input": {"q": 1}},
            {"type": "tool_use", "id": "call_2", "name": "f", "input": {}},
            {"type": "tool_use", "id": "call_3", "name": "g", "input": {}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 20, "output_tokens": 5, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 5}})
    );
    let out = response(
        &json!({"choices": [{"message": null, "finish_reason": null}], "usage": null}),
        &names,
        None,
    )
    .unwrap();
    assert_eq!(out["content"], json!([{"type": "text", "text": ""}]));
    assert_eq!(out["usage"], json!({"input_tokens": 0, "output_tokens": 0}));
    assert_eq!(out["stop_reason"], "end_turn");
    let out = response(&json!({"error": {"message": "The model `x` does not exist", "type": "invalid_request_error"}}), &names, None).unwrap();
    assert_eq!(
        out,
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "The model `x` does not exist"}})
    );
    assert_eq!(
        response(&json!({"id": "x"}), &names, None).unwrap_err(),
        "no choices in response"
    );
    for (f, want) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "end_turn"),
        ("function_call", "tool_use"),
    ] {
        let out = response(
            &json!({"choices": [{"message": {"content": "x"}, "finish_reason": f}]}),
            &names,
            None,
        )
        .unwrap();
        assert_eq!(out["stop_reason"], want);
    }
}

/// Runs a transcript through the decoder and the converter, split at `split`.
fn convert(stream: &str, split: usize, names: &ToolNames) -> Vec<(String, Value)> {
    let mut d = Decoder::new();
    let mut evs = Vec::new();
    d.feed(&stream.as_bytes()[..split], &mut evs);
    d.feed(&stream.as_bytes()[split..], &mut evs);
    d.finish(&mut evs);
    let mut conv = Stream::new(names.clone(), Some("cfg-model".into()));
    let mut out = Vec::new();
    for e in evs {
        conv.event(&e.kind, &e.data, &mut out);
    }
    conv.finish(&mut out);
    out.into_iter()
        .map(|e| (e.kind.to_string(), serde_json::from_str(&e.data).unwrap()))
        .collect()
}

fn kinds(evs: &[(String, Value)]) -> Vec<String> {
    evs.iter()
        .map(|(k, v)| {
            match v["delta"]["type"]
                .as_str()
                .or(v["content_block"]["type"].as_str())
            {
                Some(t) => format!("{k}:{t}"),
                None => k.clone(),
            }
        })
        .collect()
}

fn chunk(v: Value) -> String {
    format!("data: {v}\n\n")
}

const TEXT_STREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n",
    ": keep-alive\n\n",
    "data:\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" world\"},\"finish_reason\":\"null\"}],\"usage\":null}\r\n\r\n",
    "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":10}}}\n\n",
    "data: [DONE]\n\n",
);

#[test]
fn text_stream_identical_at_every_split() {
    let names = ToolNames::default();
    let want = convert(TEXT_STREAM, 0, &names);
    assert_eq!(
        kinds(&want),
        [
            "message_start",
            "content_block_start:text",
            "content_block_delta:text_delta",
            "content_block_delta:text_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(want[0].1["message"]["id"], "chatcmpl-1");
    assert_eq!(want[0].1["message"]["model"], "gpt-4o");
    assert_eq!(
        want[2].1["delta"]["text"], "Hello",
        "content in the first chunk is kept"
    );
    assert_eq!(want[5].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        want[5].1["usage"],
        json!({"input_tokens": 20, "output_tokens": 2, "cache_read_input_tokens": 10})
    );
    for i in 0..=TEXT_STREAM.len() {
        assert_eq!(convert(TEXT_STREAM, i, &names), want, "split at {i}");
    }
}

#[test]
fn interleaved_parallel_tool_calls_land_in_their_blocks() {
    let mut names = ToolNames::default();
    let safe = names.sanitise("ns.search");
    let c = |d: Value| {
        chunk(
            json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": d, "finish_reason": null}]}),
        )
    };
    let s = [
        c(json!({"reasoning_content": "plan"})),
        c(json!({"content": "Two calls."})),
        c(json!({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "get_weather", "arguments": ""}}]})),
        c(json!({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": safe, "arguments": "{\"q\":"}}]})),
        c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]})),
        c(json!({"tool_calls": [{"index": 1, "function": {"arguments": "\"x\"}"}}]})),
        c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]})),
        chunk(json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 9, "completion_tokens": 4}})),
    ]
    .concat();
    let out = convert(&s, 0, &names);
    assert_eq!(
        kinds(&out),
        [
            "message_start",
            "content_block_start:thinking",
            "content_block_delta:thinking_delta",
            "content_block_stop",
            "content_block_start:text",
            "content_block_delta:text_delta",
            "content_block_stop",
            "content_block_start:tool_use",
            "content_block_delta:input_json_delta",
            "content_block_delta:input_json_delta",
            "content_block_stop",
            "content_block_start:tool_use",
            "content_block_delta:input_json_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let json_for = |idx: u64| -> String {
        out.iter()
            .filter(|(_, v)| v["index"] == idx && v["delta"]["type"] == "input_json_delta")
            .map(|(_, v)| v["delta"]["partial_json"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(json_for(2), "{\"city\":\"Paris\"}");
    assert_eq!(json_for(3), "{\"q\":\"x\"}");
    assert_eq!(
        out[11].1["content_block"]["name"], "ns.search",
        "names restored"
    );
    assert_eq!(out[11].1["content_block"]["id"], "call_b");
    assert_eq!(out[14].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(out[14].1["usage"]["input_tokens"], 9);
}

#[test]
fn ends_without_done_and_done_right_after_start() {
    let names = ToolNames::default();
    // Cut after the finish chunk: still message_delta + message_stop.
    let cut = TEXT_STREAM.split("data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n").next().unwrap();
    let out = convert(cut, 0, &names);
    assert_eq!(kinds(&out).last().unwrap(), "message_stop");
    assert_eq!(out.iter().filter(|(k, _)| k == "message_stop").count(), 1);
    // [DONE] right after the first chunk.
    let s = concat!(
        "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n",
        "data: [DONE]\n\n"
    );
    let out = convert(s, 0, &names);
    assert_eq!(
        kinds(&out),
        ["message_start", "message_delta", "message_stop"]
    );
    assert_eq!(
        out[0].1["message"]["model"], "cfg-model",
        "model from the route when chunks carry none"
    );
    // Nothing at all: nothing out (the gateway answers 502).
    assert!(convert("event: message_start\ndata: {}\n\n", 0, &names).is_empty());
    // Chunks after the end are ignored.
    let mut conv = Stream::new(names.clone(), None);
    let mut out = Vec::new();
    conv.event("message", "{\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1}}", &mut out);
    let n = out.len();
    conv.event(
        "message",
        "{\"choices\":[{\"delta\":{\"content\":\"late\"}}]}",
        &mut out,
    );
    conv.finish(&mut out);
    assert_eq!(out.len(), n);
}

/// Checks the Anthropic event grammar: message_start, blocks opened one at a time with
/// increasing indices, deltas only into the open block, then message_delta and message_stop.
fn assert_valid_anthropic(evs: &[(String, Value)]) {
    assert_eq!(
        evs.first().map(|e| e.0.as_str()),
        Some("message_start"),
        "{evs:?}"
    );
    let n = evs.len();
    assert_eq!(evs[n - 2].0, "message_delta", "{evs:?}");
    assert_eq!(evs[n - 1].0, "message_stop", "{evs:?}");
    let mut open: Option<u64> = None;
    let mut next = 0;
    for (k, v) in &evs[1..n - 2] {
        match k.as_str() {
            "content_block_start" => {
                assert!(
                    open.is_none(),
                    "block opened while another is open: {evs:?}"
                );
                assert_eq!(v["index"], next);
                open = Some(next);
                next += 1;
            }
            "content_block_delta" => {
                assert_eq!(Some(v["index"].as_u64().unwrap()), open, "{evs:?}")
            }
            "content_block_stop" => {
                assert_eq!(Some(v["index"].as_u64().unwrap()), open);
                open = None;
            }
            other => panic!("unexpected {other} in {evs:?}"),
        }
    }
    assert!(open.is_none());
}

#[test]
fn property_any_openai_sequence_gives_a_valid_anthropic_stream() {
    let names = ToolNames::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..500 {
        let mut s = String::new();
        let tools = rng.next(4);
        let steps = 1 + rng.next(12);
        for _ in 0..steps {
            let d = match rng.next(4) {
                0 => json!({"reasoning_content": "r"}),
                1 => json!({"content": "t"}),
                _ if tools > 0 => {
                    let i = rng.next(tools);
                    json!({"tool_calls": [{"index": i, "id": format!("call_{i}"), "function": {"name": format!("f{i}"), "arguments": "{}"}}]})
                }
                _ => json!({"content": "u"}),
            };
            s.push_str(&chunk(json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": d, "finish_reason": null}]})));
        }
        match rng.next(3) {
            0 => s.push_str(&chunk(
                json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            )),
            1 => {
                s.push_str(&chunk(json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})));
                s.push_str(&chunk(json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})));
            }
            _ => {}
        }
        if rng.next(2) == 0 {
            s.push_str("data: [DONE]\n\n");
        }
        let out = convert(&s, rng.next(s.len() as u64 + 1) as usize, &names);
        assert_valid_anthropic(&out);
        // Every tool's arguments arrive whole, in its own block.
        for t in 0..tools {
            let name = format!("f{t}");
            let starts = out
                .iter()
                .filter(|(_, v)| v["content_block"]["name"] == name.as_str())
                .count();
            assert!(starts <= 1, "tool {name} opened twice: {out:?}");
        }
    }
}

/// Text-only chunks take the direct path (their text copied as escaped); the same chunks with
/// one field the scanner does not know take the typed parse. Both write the same events, and
/// every event is valid JSON whose text decodes to the upstream's.
#[test]
fn direct_text_path_writes_what_the_typed_parse_writes() {
    let texts = [
        "plain",
        "quote \" backslash \\ slash / tab \t line\n",
        "é ✓ 🚢 \u{1}",
        "",
    ];
    let stream = |extra: &str| {
        let mut s = chunk(
            json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
        );
        for t in texts {
            let mut c = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"content": t}, "logprobs": null, "finish_reason": null}]});
            if !extra.is_empty() {
                c[extra] = json!(1);
            }
            // Escape the non-ASCII as \u sequences in one copy, to cover that spelling too.
            s.push_str(&chunk(c).replace('é', "\\u00e9"));
        }
        s.push_str(&chunk(json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})));
        s.push_str("data: [DONE]\n\n");
        s
    };
    let names = ToolNames::default();
    // Every text chunk of the first stream is one the scanner takes.
    let direct_stream = stream("");
    let data: Vec<&str> = direct_stream
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert!(
        data[1..=texts.len()]
            .iter()
            .all(|d| crate::text_chunk::text_chunk(d).is_some())
    );
    let direct = convert(&direct_stream, 0, &names);
    let typed = convert(&stream("x_unknown"), 0, &names);
    assert_eq!(direct, typed);
    let text: String = direct
        .iter()
        .filter_map(|(_, v)| v["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, texts.concat());
    assert!(
        crate::text_chunk::text_chunk(&format!(
            "{}",
            json!({"choices": [{"delta": {"content": "a"}}], "x_unknown": 1})
        ))
        .is_none()
    );
}
