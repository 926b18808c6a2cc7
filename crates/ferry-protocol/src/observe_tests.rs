//! Tests for usage, text and tool-call observation, including stream transcripts split at
//! every byte offset.

use super::*;
use crate::sse::Decoder;
use serde_json::json;

const CHAT_STREAM: &str = concat!(
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\r\n\r\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":15,\"total_tokens\":45,",
    "\"prompt_tokens_details\":{\"cached_tokens\":10},\"completion_tokens_details\":{\"reasoning_tokens\":7}}}\n\n",
    "data: [DONE]\n\n",
);

fn run(proto: Protocol, stream: &str, split: usize) -> (Observed, usize) {
    let mut d = Decoder::new();
    let mut evs = Vec::new();
    d.feed(&stream.as_bytes()[..split], &mut evs);
    d.feed(&stream.as_bytes()[split..], &mut evs);
    d.finish(&mut evs);
    let mut o = Observed::default();
    let mut usage_only = 0;
    for e in evs {
        if o.event(proto, &e.kind, &e.data) {
            usage_only += 1;
        }
    }
    (o, usage_only)
}

#[test]
fn openai_chat_stream_at_every_split() {
    for i in 0..=CHAT_STREAM.len() {
        let (o, usage_only) = run(Protocol::OpenAiChat, CHAT_STREAM, i);
        assert_eq!(o.text, "Hello", "split {i}");
        assert!(o.done);
        assert!(!o.tool_calls);
        assert_eq!(usage_only, 1);
        assert_eq!(
            o.usage,
            Some(Usage {
                prompt: 30,
                completion: 15,
                total: 45,
                cache_read: 10,
                cache_creation: 0,
                reasoning: 7
            })
        );
    }
}

#[test]
fn tool_call_deltas_and_deepseek_cache() {
    let s = concat!(
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":15,\"completion_tokens\":10,\"prompt_cache_hit_tokens\":4}}\n\n",
        "data: \n\n",
        "data: not json\n\n",
    );
    let (o, usage_only) = run(Protocol::OpenAiChat, s, 0);
    assert!(o.tool_calls);
    assert_eq!(
        usage_only, 0,
        "usage on a chunk with choices is not usage-only"
    );
    let u = o.usage.unwrap();
    assert_eq!(
        (u.prompt, u.completion, u.total, u.cache_read),
        (15, 10, 25, 4)
    );
    assert!(!o.done, "no [DONE]");
}

#[test]
fn anthropic_stream() {
    let s = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1,\"cache_read_input_tokens\":200,\"cache_creation_input_tokens\":100}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":8}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    for i in 0..=s.len() {
        let (o, _) = run(Protocol::AnthropicMessages, s, i);
        assert_eq!(o.text, "Hi");
        assert!(o.tool_calls && o.done);
        let u = o.usage.unwrap();
        assert_eq!(
            (
                u.prompt,
                u.completion,
                u.total,
                u.cache_read,
                u.cache_creation
            ),
            (310, 8, 318, 200, 100)
        );
    }
}

#[test]
fn responses_stream() {
    let s = concat!(
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"type\":\"function_call\"}],",
        "\"usage\":{\"input_tokens\":20,\"output_tokens\":5,\"total_tokens\":25,\"input_tokens_details\":{\"cached_tokens\":10},\"output_tokens_details\":{\"reasoning_tokens\":3}}}}\n\n",
    );
    let (o, _) = run(Protocol::OpenAiResponses, s, 17);
    assert_eq!(o.text, "Hi");
    assert!(o.tool_calls && o.done);
    let u = o.usage.unwrap();
    assert_eq!(
        (u.prompt, u.completion, u.total, u.cache_read, u.reasoning),
        (20, 5, 25, 10, 3)
    );
}

#[test]
fn json_bodies() {
    let chat = json!({"choices": [
        {"message": {"content": "a", "tool_calls": [{"id": "x"}]}},
        {"message": {"content": "b"}}],
        "usage": {"prompt_tokens": 23, "completion_tokens": 8, "total_tokens": 31}});
    let o = Observed::from_json(Protocol::OpenAiChat, &chat);
    assert_eq!(o.text, "a b");
    assert!(o.tool_calls);
    assert_eq!(o.usage.unwrap().total, 31);
    // null usage, null message, null content: no crash, no usage
    let o = Observed::from_json(
        Protocol::OpenAiChat,
        &json!({"choices": [{"message": null}], "usage": null}),
    );
    assert_eq!(o.usage, None);
    let o = Observed::from_json(
        Protocol::AnthropicMessages,
        &json!({"content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}], "usage": {"input_tokens": 50, "output_tokens": 30}}),
    );
    assert_eq!(o.text, "x y");
    assert_eq!(o.usage.unwrap().total, 80);
    let o = Observed::from_json(
        Protocol::OpenAiResponses,
        &json!({"output": [{"type": "message", "content": [{"type": "output_text", "text": "r"}]}], "usage": {"input_tokens": 40, "output_tokens": 20, "input_tokens_details": {"cached_tokens": 12}}}),
    );
    assert_eq!(o.text, "r");
    assert_eq!(o.usage.unwrap().total, 60);
    let o = Observed::from_json(
        Protocol::OpenAiEmbeddings,
        &json!({"usage": {"prompt_tokens": 5, "total_tokens": 5}}),
    );
    assert_eq!(o.usage.unwrap().prompt, 5);
}

#[test]
fn request_fields() {
    assert_eq!(
        end_user(Protocol::OpenAiChat, &json!({"user": "alice"})),
        Some("alice")
    );
    assert_eq!(
        end_user(
            Protocol::OpenAiChat,
            &json!({"user": "a", "safety_identifier": "s"})
        ),
        Some("s")
    );
    assert_eq!(
        end_user(
            Protocol::AnthropicMessages,
            &json!({"metadata": {"user_id": "u"}})
        ),
        Some("u")
    );
    assert_eq!(tool_count(&json!({"tools": [{}, {}]})), 2);
    assert_eq!(tool_count(&json!({})), 0);
}

#[test]
fn merge_rules() {
    let mut u = Usage {
        prompt: 10,
        completion: 0,
        total: 10,
        ..Usage::default()
    };
    u.merge(&Usage {
        completion: 8,
        ..Usage::default()
    });
    assert_eq!((u.prompt, u.completion, u.total), (10, 8, 18));
}

/// The typed view (wire.rs) reads OpenAI chat bodies exactly as the `Value` reader does,
/// including fields of unexpected types, escapes and duplicate keys.
#[test]
fn typed_chat_view_agrees_with_value_reader() {
    let docs = [
        r#"{"choices":[{"message":{"content":"hi","tool_calls":[]}}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        r#"{"choices":[{"message":{"content":"a\"b\u00e9","tool_calls":[{"id":"x"}]}},{"message":{"content":"second"}}]}"#,
        r#"{"choices":"nope","usage":"nope"}"#,
        r#"{"choices":[1,null,{"message":null},{"message":{"content":5}}],"usage":null}"#,
        r#"{"usage":{"prompt_tokens":-4,"completion_tokens":2.9,"total_tokens":"7","prompt_tokens_details":{"cached_tokens":1}}}"#,
        r#"{"usage":{"prompt_tokens":4,"prompt_cache_hit_tokens":3,"prompt_tokens_details":[],"completion_tokens_details":{"reasoning_tokens":9}}}"#,
        r#"{"usage":{"prompt_tokens":4,"prompt_tokens":6}}"#,
        r#"{"choices":[{"message":{"content":"x","content":"y"}}]}"#,
        r#"{"usage":{"prompt_tokens":1e3,"completion_tokens":18446744073709551615}}"#,
        r#"[]"#,
        r#"{}"#,
    ];
    for d in docs {
        let v: Value = serde_json::from_str(d).unwrap();
        assert_eq!(
            Observed::from_slice(Protocol::OpenAiChat, d.as_bytes()),
            Some(Observed::from_json(Protocol::OpenAiChat, &v)),
            "{d}"
        );
        // Stream chunks: the same body as a `delta`.
        let chunk = d.replace("\"message\"", "\"delta\"");
        let v: Value = serde_json::from_str(&chunk).unwrap();
        let mut typed = Observed::default();
        let typed_only = typed.event(Protocol::OpenAiChat, "message", &chunk);
        let mut reference = Observed::default();
        let usage = v.get("usage").and_then(openai_usage);
        let choices = v.get("choices").and_then(Value::as_array);
        for c in choices.into_iter().flatten() {
            let delta = c.get("delta");
            if let Some(t) = delta.and_then(|d| d.get("content")).and_then(Value::as_str) {
                reference.text.push_str(t);
            }
            if delta
                .and_then(|d| d.get("tool_calls"))
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                reference.tool_calls = true;
            }
        }
        reference.usage = usage;
        assert_eq!(typed, reference, "{chunk}");
        assert_eq!(
            typed_only,
            usage.is_some() && choices.is_none_or(|c| c.is_empty()),
            "{chunk}"
        );
    }
    assert_eq!(
        Observed::from_slice(Protocol::OpenAiChat, b"not json"),
        None
    );
}

/// Without payload logging, chunks with only text are skipped; usage and tool calls are not.
#[test]
fn skip_text_still_sees_usage_and_tool_calls() {
    let mut o = Observed {
        skip_text: true,
        ..Observed::default()
    };
    let text = r#"{"choices":[{"delta":{"content":"say \"usage\" here"}}]}"#;
    let tool =
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#;
    let usage = r#"{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3}}"#;
    assert!(!o.event(Protocol::OpenAiChat, "message", text));
    assert!(!o.event(Protocol::OpenAiChat, "message", tool));
    assert!(o.event(Protocol::OpenAiChat, "message", usage));
    assert!(!o.event(Protocol::OpenAiChat, "message", "[DONE]"));
    assert_eq!(o.usage.map(|u| u.total), Some(5));
    assert!(o.tool_calls && o.done);
    assert_eq!(o.text, "");
}

/// The request peek (wire.rs) reads what the `Value` readers read, for every path.
#[test]
fn request_peek_agrees_with_value_readers() {
    use crate::detect::{detect, detect_peek};
    use crate::wire::{RequestPeek, Shape, StreamOptions};
    let bodies = [
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"user":"u","tools":[{},{}]}"#,
        r#"{"messages":{"a":1},"safety_identifier":"s","user":"u"}"#,
        r#"{"messages":"text","input":"x","metadata":{"user_id":"au"}}"#,
        r#"{"input":null,"model":5,"stream":"yes","tools":"no"}"#,
        r#"{"input":["a"],"stream_options":{"include_usage":true}}"#,
        r#"{"x":1,"stream_options":null,"max_tokens":3}"#,
        r#"{"safety_identifier":7,"user":"u2","metadata":"m"}"#,
        r#"{"model":"a\"b\u00e9"}"#,
        r#"{}"#,
    ];
    for b in bodies {
        let v: Value = serde_json::from_str(b).unwrap();
        let p: RequestPeek = serde_json::from_str(b).unwrap();
        for path in [
            "/v1/messages",
            "/v1/responses",
            "/v1/chat/completions",
            "/x",
        ] {
            let proto = detect(path, &v);
            assert_eq!(detect_peek(path, &p), proto, "{path} {b}");
            if let Some(proto) = proto {
                assert_eq!(end_user_peek(proto, &p), end_user(proto, &v), "{path} {b}");
            }
        }
        assert_eq!(p.tools.items.len(), tool_count(&v), "{b}");
        assert_eq!(
            p.stream == Shape::Bool(true),
            v.get("stream") == Some(&Value::Bool(true))
        );
        assert_eq!(
            p.model.as_str(),
            v.get("model").and_then(Value::as_str),
            "{b}"
        );
        assert_eq!(p.has_max_tokens, v.get("max_tokens").is_some());
        let so = match v.get("stream_options") {
            None => StreamOptions::Absent,
            Some(o) if o.get("include_usage") == Some(&Value::Bool(true)) => {
                StreamOptions::WantsUsage
            }
            Some(_) => StreamOptions::Other,
        };
        assert_eq!(p.stream_options, so, "{b}");
    }
    // A duplicated field it reads is refused (the caller falls back to a full parse).
    assert!(serde_json::from_str::<RequestPeek>(r#"{"model":"a","model":"b"}"#).is_err());
    assert!(serde_json::from_str::<RequestPeek>(r#"{"a":1,"a":2}"#).is_ok());
    assert!(serde_json::from_str::<RequestPeek>(r#"{"a":1} x"#).is_err());
    assert!(serde_json::from_str::<RequestPeek>("[1]").is_err());
}
