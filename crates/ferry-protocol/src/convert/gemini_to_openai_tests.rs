use super::*;
use crate::convert::StreamConverter;
use crate::convert::test_rng::Rng;
use crate::sse::Decoder;

fn call(stream: bool) -> Call<'static> {
    Call {
        model: "gemini-2.5-flash",
        stream,
    }
}

fn req(v: Value) -> Value {
    request(&v, call(false)).unwrap().body
}

#[test]
fn text_system_and_config() {
    let b = req(json!({
        "systemInstruction": {"role": "user", "parts": [{"text": "Be brief."}, {"text": "Be kind."}]},
        "contents": [{"role": "user", "parts": [{"text": "What is "}, {"text": "1+1?"}]}],
        "generationConfig": {"temperature": 0.2, "top_p": 0.9, "maxOutputTokens": 64,
            "stopSequences": ["END"], "candidateCount": 1, "seed": 7,
            "thinkingConfig": {"thinking_budget": 2048, "include_thoughts": true}},
        "safetySettings": [{"category": "x"}]
    }));
    assert_eq!(
        b,
        json!({"model": "gemini-2.5-flash", "messages": [
            {"role": "system", "content": "Be brief.\nBe kind."},
            {"role": "user", "content": "What is 1+1?"}],
            "temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 64, "stop": ["END"], "seed": 7,
            "reasoning_effort": "medium"})
    );
    let c = request(
        &json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"thinkingConfig": {"includeThoughts": true}}}),
        call(true),
    )
    .unwrap();
    assert!(c.include_thoughts && c.stream);
    assert_eq!(c.body["stream_options"], json!({"include_usage": true}));
    // A bare string system instruction.
    let b = req(json!({"systemInstruction": "Sys", "contents": [{"parts": [{"text": "x"}]}]}));
    assert_eq!(
        b["messages"][0],
        json!({"role": "system", "content": "Sys"})
    );
}

#[test]
fn function_calls_and_responses_pair_up() {
    let b = req(json!({"contents": [
        {"role": "user", "parts": [{"text": "weather in Paris and Rome?"}]},
        {"role": "model", "parts": [
            {"text": "thinking", "thought": true},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"t": 20}}},
            {"functionResponse": {"name": "get_weather", "response": {"t": 25}}}]},
        {"role": "model", "parts": [{"functionCall": {"id": "given", "name": "f", "args": {}}}]},
        {"role": "function", "parts": [{"functionResponse": {"id": "given", "name": "f", "response": {}}}, {"text": "thanks"}]}
    ]}));
    let m = b["messages"].as_array().unwrap();
    assert_eq!(m[1]["role"], "assistant");
    assert_eq!(m[1]["content"], Value::Null);
    assert_eq!(m[1]["tool_calls"][0]["id"], "call_1_1");
    assert_eq!(m[1]["tool_calls"][1]["id"], "call_1_2");
    assert_eq!(
        m[1]["tool_calls"][1]["function"]["arguments"],
        "{\"city\":\"Rome\"}"
    );
    assert_eq!(
        m[2],
        json!({"role": "tool", "tool_call_id": "call_1_1", "content": "{\"t\":20}"})
    );
    assert_eq!(m[3]["tool_call_id"], "call_1_2");
    assert_eq!(m[4]["tool_calls"][0]["id"], "given");
    assert_eq!(m[5]["tool_call_id"], "given");
    assert_eq!(m[6], json!({"role": "user", "content": "thanks"}));
}

#[test]
fn media_parts() {
    let b = req(json!({"contents": [{"parts": [
        {"text": "look"},
        {"inline_data": {"mime_type": "image/png", "data": "AAA"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "BBB"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "CCC"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x/y.jpg"}}]}]}));
    let c = &b["messages"][0]["content"];
    assert_eq!(c[1]["image_url"]["url"], "data:image/png;base64,AAA");
    assert_eq!(
        c[2],
        json!({"type": "input_audio", "input_audio": {"data": "BBB", "format": "wav"}})
    );
    assert_eq!(c[3]["file"]["file_data"], "data:application/pdf;base64,CCC");
    assert_eq!(c[4]["image_url"]["url"], "https://x/y.jpg");
}

#[test]
fn bad_requests_say_what_is_wrong() {
    let e = |v: Value| request(&v, call(false)).unwrap_err();
    assert_eq!(e(json!([1])), "request body must be a JSON object");
    assert_eq!(e(json!({})), "contents is required");
    assert_eq!(e(json!({"contents": []})), "contents is required");
    assert_eq!(
        e(json!({"contents": [{"role": "system", "parts": [{"text": "x"}]}]})),
        "contents[0].role must be \"user\" or \"model\""
    );
    assert_eq!(
        e(json!({"contents": [{"parts": [{"text": "x"}, {"videoMetadata": {}}]}]})),
        "contents[0].parts[1] has no supported data"
    );
    assert!(e(json!({"contents": [{"parts": [{"fileData": {"mimeType": "video/mp4", "fileUri": "gs://x"}}]}]})).contains("parts[0]"));
    assert!(
        e(json!({"cachedContent": "c/1", "contents": [{"parts": [{"text": "x"}]}]}))
            .contains("cachedContent")
    );
}

#[test]
fn tools_schemas_and_choice() {
    let b = req(json!({
        "contents": [{"parts": [{"text": "x"}]}],
        "tools": [{"functionDeclarations": [
            {"name": "get_weather", "description": "Weather", "parameters": {"type": "OBJECT",
                "properties": {"city": {"type": "STRING", "description": "City"}, "days": {"type": "INTEGER", "nullable": true},
                               "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "example": ["a"]}},
                "required": ["city"], "propertyOrdering": ["city"]}},
            {"name": "raw", "parameters_json_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
            {"name": "bare"}]},
            {"googleSearch": {}}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}
    }));
    let tools = b["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 3);
    assert_eq!(
        tools[0]["function"]["parameters"],
        json!({"type": "object", "properties": {"city": {"type": "string", "description": "City"},
            "days": {"type": ["integer", "null"]}, "tags": {"type": "array", "items": {"type": "string"}, "examples": [["a"]]}},
            "required": ["city"]})
    );
    assert_eq!(
        tools[1]["function"]["parameters"]["properties"]["q"]["type"],
        "string"
    );
    assert_eq!(
        tools[2]["function"]["parameters"],
        json!({"type": "object", "properties": {}})
    );
    assert_eq!(b["tool_choice"], "required");
    let one = req(json!({"contents": [{"parts": [{"text": "x"}]}],
        "tools": [{"functionDeclarations": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["b"]}}}));
    assert_eq!(
        one["tool_choice"],
        json!({"type": "function", "function": {"name": "b"}})
    );
    let two = req(json!({"contents": [{"parts": [{"text": "x"}]}],
        "tools": [{"functionDeclarations": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["a", "c"]}}}));
    assert_eq!(two["tools"].as_array().unwrap().len(), 2);
    let none = req(
        json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}],
        "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}),
    );
    assert!(none.get("tools").is_none() && none.get("tool_choice").is_none());
    let json_out = req(json!({"contents": [{"parts": [{"text": "x"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": {"type": "OBJECT"}}}));
    assert_eq!(
        json_out["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}})
    );
}

fn openai_answer() -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "1+1 equals 2.",
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 23, "completion_tokens": 8, "total_tokens": 31}})
}

#[test]
fn answers_back_in_gemini_shape() {
    let r = response(&openai_answer(), false).unwrap();
    assert_eq!(
        r,
        json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "1+1 equals 2."}, {"functionCall": {"id": "call_9", "name": "f", "args": {"a": 1}}}]},
            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 23, "candidatesTokenCount": 8, "totalTokenCount": 31},
            "modelVersion": "gpt-4o", "responseId": "chatcmpl-1"})
    );
    let mut a = openai_answer();
    a["choices"][0]["message"] =
        json!({"content": null, "refusal": "no", "reasoning_content": "hmm"});
    a["choices"][0]["finish_reason"] = json!("length");
    a["usage"]["completion_tokens_details"] = json!({"reasoning_tokens": 3});
    a["usage"]["prompt_tokens_details"] = json!({"cached_tokens": 5});
    let r = response(&a, true).unwrap();
    let c = &r["candidates"][0];
    assert_eq!(
        c["content"]["parts"],
        json!([{"text": "hmm", "thought": true}, {"text": "no"}])
    );
    assert_eq!(c["finishReason"], "SAFETY");
    assert_eq!(r["usageMetadata"]["candidatesTokenCount"], 5);
    assert_eq!(r["usageMetadata"]["thoughtsTokenCount"], 3);
    assert_eq!(r["usageMetadata"]["cachedContentTokenCount"], 5);
    a["choices"][0]["message"] = json!({"content": ""});
    assert_eq!(
        response(&a, false).unwrap()["candidates"][0]["content"]["parts"],
        json!([{"text": ""}])
    );
    assert_eq!(finish_reason(Some("length")), "MAX_TOKENS");
    assert_eq!(finish_reason(None), "OTHER");
    assert!(response(&json!({"error": {}}), false).is_err());
    assert_eq!(
        error_body(429, "slow down"),
        json!({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}})
    );
}

/// An upstream OpenAI stream: two text deltas, two parallel tool calls in fragments, the
/// finish, the usage chunk, [DONE].
fn upstream_stream() -> String {
    let c = |v: Value| format!("data: {v}\n\n");
    [
        c(json!({"id": "s1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello "}}]})),
        c(json!({"id": "s1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "world"}}]})),
        c(json!({"id": "s1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_a", "function": {"name": "get_weather", "arguments": "{\"ci"}}]}}]})),
        c(json!({"id": "s1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 1, "id": "call_b", "function": {"name": "get_time", "arguments": "{}"}},
            {"index": 0, "function": {"arguments": "ty\":\"Paris\"}"}}]}}]})),
        c(json!({"id": "s1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})),
        c(json!({"id": "s1", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 15, "completion_tokens": 20, "total_tokens": 35}})),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat()
}

fn run_stream(input: &str, split: usize) -> Vec<Value> {
    let mut conv = Stream::new(false);
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    for piece in input.as_bytes().chunks(split.max(1)) {
        dec.feed_each(piece, |e| conv.event(e.kind, e.data, &mut out));
    }
    dec.finish_each(|e| conv.event(e.kind, e.data, &mut out));
    conv.finish(&mut out);
    out.iter()
        .map(|e| {
            assert_eq!(e.kind, "message");
            serde_json::from_str(&e.data).unwrap()
        })
        .collect()
}

#[test]
fn stream_text_as_it_comes_calls_whole_one_final_event() {
    let events = run_stream(&upstream_stream(), usize::MAX);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        events[0]["candidates"][0]["content"]["parts"],
        json!([{"text": "Hello "}])
    );
    assert_eq!(events[0]["modelVersion"], "gpt-4o");
    assert_eq!(events[0]["responseId"], "s1");
    assert!(events[0]["candidates"][0].get("finishReason").is_none());
    let last = &events[2];
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        last["candidates"][0]["content"]["parts"],
        json!([{"functionCall": {"id": "call_a", "name": "get_weather", "args": {"city": "Paris"}}},
               {"functionCall": {"id": "call_b", "name": "get_time", "args": {}}}])
    );
    assert_eq!(
        last["usageMetadata"],
        json!({"promptTokenCount": 15, "candidatesTokenCount": 20, "totalTokenCount": 35})
    );
    let finishes = events
        .iter()
        .filter(|e| e["candidates"][0].get("finishReason").is_some())
        .count();
    assert_eq!(finishes, 1);
}

#[test]
fn every_byte_split_gives_the_same_events() {
    let input = upstream_stream();
    let whole = run_stream(&input, usize::MAX);
    for split in 1..24 {
        assert_eq!(run_stream(&input, split), whole, "split {split}");
    }
}

#[test]
fn streams_that_end_early() {
    // EOF after text, no finish, no [DONE]: a final STOP event is still sent.
    let text =
        "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
    let events = run_stream(text, usize::MAX);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        events[1]["candidates"][0]["content"]["parts"],
        json!([{"text": ""}])
    );
    // Nothing at all: one OTHER event.
    let events = run_stream("", 1);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["candidates"][0]["finishReason"], "OTHER");
    // The finish without a usage chunk closes at [DONE], usage absent.
    let text = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n";
    let events = run_stream(text, usize::MAX);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert!(events[1].get("usageMetadata").is_none());
}

/// Arbitrary request bodies never panic; a converted body is always an object with messages.
#[test]
fn arbitrary_bodies_never_panic() {
    let samples = [
        json!(null),
        json!({"contents": "x"}),
        json!({"contents": [null]}),
        json!({"contents": [{"parts": "x"}]}),
        json!({"contents": [{"parts": [null]}]}),
        json!({"contents": [{"role": 1, "parts": []}]}),
        json!({"contents": [{"parts": []}], "tools": "x", "generationConfig": []}),
        json!({"contents": [{"parts": [{"text": 1}]}]}),
        json!({"contents": [{"role": "model", "parts": [{"functionCall": null}]}]}),
        json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"thinkingConfig": {"thinkingBudget": -1}}}),
    ];
    for s in samples {
        if let Ok(c) = request(&s, call(true)) {
            assert!(c.body["messages"].is_array(), "{s}");
        }
    }
    let mut conv = Stream::new(true);
    let mut out = Vec::new();
    for d in [
        "",
        "{",
        "[]",
        "null",
        "{\"choices\":5}",
        "{\"choices\":[{\"delta\":{\"tool_calls\":[5]}}]}",
    ] {
        conv.event("message", d, &mut out);
    }
    conv.finish(&mut out);
    assert_eq!(out.len(), 1);
}

/// Any upstream chunk sequence, cut anywhere: the events are Gemini responses, the text comes
/// through in order and whole, exactly one event carries `finishReason` and it is the last,
/// every tool call arrives once with its arguments whole.
#[test]
fn property_any_openai_sequence_gives_a_valid_gemini_stream() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..500 {
        let mut s = String::new();
        let mut text = String::new();
        let tools = rng.next(3);
        let steps = 1 + rng.next(12);
        let mut args: Vec<String> = vec![String::new(); tools as usize];
        for _ in 0..steps {
            let d = match rng.next(3) {
                0 if tools > 0 => {
                    let i = rng.next(tools);
                    let first = args[i as usize].is_empty();
                    let frag = if first { "{\"k\":" } else { "1" };
                    args[i as usize].push_str(frag);
                    if first {
                        json!({"tool_calls": [{"index": i, "id": format!("call_{i}"), "function": {"name": format!("f{i}"), "arguments": frag}}]})
                    } else {
                        json!({"tool_calls": [{"index": i, "function": {"arguments": frag}}]})
                    }
                }
                _ => {
                    let t = format!("w{} ", rng.next(100));
                    text.push_str(&t);
                    json!({"content": t})
                }
            };
            s.push_str(&format!(
                "data: {}\n\n",
                json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": d}]})
            ));
        }
        if rng.next(2) == 0 {
            s.push_str(&format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            ));
        }
        if rng.next(2) == 0 {
            s.push_str(&format!("data: {}\n\n", json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})));
        }
        if rng.next(2) == 0 {
            s.push_str("data: [DONE]\n\n");
        }
        let split = 1 + rng.next(s.len() as u64) as usize;
        let events = run_stream(&s, split);
        let finishes: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e["candidates"][0].get("finishReason").is_some())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(finishes, vec![events.len() - 1], "{s}\n{events:?}");
        let got: String = events
            .iter()
            .flat_map(|e| {
                e["candidates"][0]["content"]["parts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|p| p["text"].as_str().map(String::from))
            .collect();
        assert_eq!(got, text);
        let calls: Vec<Value> = events
            .iter()
            .flat_map(|e| {
                e["candidates"][0]["content"]["parts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|p| p.get("functionCall").cloned())
            .collect();
        let expected = args.iter().filter(|a| !a.is_empty()).count();
        assert_eq!(calls.len(), expected, "{events:?}");
        for c in calls {
            let i: usize = c["name"].as_str().unwrap()[1..].parse().unwrap();
            let want = serde_json::from_str::<Value>(&args[i])
                .ok()
                .filter(Value::is_object)
                .unwrap_or(json!({}));
            assert_eq!(c["args"], want);
        }
    }
}

/// Text-only chunks take the direct path; its bytes are the general path's.
#[test]
fn text_chunks_written_directly_match_the_general_encoding() {
    let mut conv = Stream::new(false);
    let mut out = Vec::new();
    conv.event(
        "message",
        r#"{"id":"s\"1","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hé \"x\"\n"},"finish_reason":null}]}"#,
        &mut out,
    );
    let expected = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hé \"x\"\n"}]}, "index": 0}],
        "modelVersion": "gpt-4o", "responseId": "s\"1"})
    .to_string();
    assert_eq!(out[0].data, expected);
    // An empty delta: no event; a usage chunk: the general path.
    conv.event(
        "message",
        r#"{"choices":[{"index":0,"delta":{"content":""}}]}"#,
        &mut out,
    );
    assert_eq!(out.len(), 1);
}

/// Scanned text chunks (text copied as escaped) and the same chunks through the typed view
/// (one field the scanner does not know) give the same events.
#[test]
fn scanned_text_chunks_match_the_typed_view() {
    let run = |extra: bool| {
        let mut conv = Stream::new(false);
        let mut out = Vec::new();
        for t in ["a \"q\" \\ \n", "é\u{1} ✓", ""] {
            let mut c = json!({"id": "r1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]});
            if extra {
                c["x_unknown"] = json!(1);
            }
            let data = c.to_string();
            assert_eq!(crate::text_chunk::text_chunk(&data).is_some(), !extra);
            conv.event("message", &data, &mut out);
        }
        out.into_iter()
            .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
            .collect::<Vec<_>>()
    };
    let scanned = run(false);
    assert_eq!(scanned.len(), 2);
    assert_eq!(scanned, run(true));
    assert_eq!(
        scanned[1]["candidates"][0]["content"]["parts"][0]["text"],
        "é\u{1} ✓"
    );
}
