//! OpenAI Chat client → Anthropic Messages provider: the request, the JSON response back to a
//! chat completion, and the stream state machine from Anthropic events to OpenAI chunks.

use super::{Converted, OutEvent, StreamConverter, ToolNames};
use serde_json::{Map, Value, json};

/// `max_tokens` when neither the request nor the route's options give one (Anthropic requires
/// it).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// Text of OpenAI message content (string, or the text parts of an array).
fn text_of(c: Option<&Value>) -> String {
    match c {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| s(p, "type") == Some("text"))
            .filter_map(|p| s(p, "text"))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// An `image_url` part → an Anthropic image block (data URLs become base64 sources).
fn image_block(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
    {
        let media = meta.strip_suffix(";base64").unwrap_or(meta);
        let kind = if media == "application/pdf" {
            "document"
        } else {
            "image"
        };
        return json!({"type": kind, "source": {"type": "base64", "media_type": media, "data": data}});
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

/// User content → Anthropic blocks (or a plain string).
fn user_content(c: Option<&Value>) -> Vec<Value> {
    match c {
        Some(Value::String(t)) => vec![json!({"type": "text", "text": t})],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match s(p, "type") {
                Some("text") => s(p, "text").map(|t| json!({"type": "text", "text": t})),
                Some("image_url") => p
                    .get("image_url")
                    .and_then(|i| s(i, "url").or_else(|| i.as_str()))
                    .map(image_block),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Appends blocks to the last turn when it has the same role (Anthropic wants alternation).
fn push_turn(msgs: &mut Vec<Value>, role: &str, mut blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = msgs.last_mut()
        && s(last, "role") == Some(role)
        && let Some(Value::Array(c)) = last.get_mut("content")
    {
        // Tool results must lead a user turn.
        if role == "user" && blocks.iter().any(|b| s(b, "type") == Some("tool_result")) {
            let mut results: Vec<Value> = blocks
                .iter()
                .filter(|b| s(b, "type") == Some("tool_result"))
                .cloned()
                .collect();
            blocks.retain(|b| s(b, "type") != Some("tool_result"));
            let lead = c
                .iter()
                .take_while(|b| s(b, "type") == Some("tool_result"))
                .count();
            for (i, r) in results.drain(..).enumerate() {
                c.insert(lead + i, r);
            }
        }
        c.extend(blocks);
        return;
    }
    msgs.push(json!({"role": role, "content": blocks}));
}

/// Converts an OpenAI chat request into an Anthropic Messages request.
pub fn request(body: &Value) -> Result<Converted, String> {
    let obj = body
        .as_object()
        .ok_or("request body must be a JSON object")?;
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("missing messages")?;
    let mut out = Map::new();
    if let Some(m) = obj.get("model").filter(|m| m.is_string()) {
        out.insert("model".into(), m.clone());
    }
    let max = obj
        .get("max_completion_tokens")
        .or_else(|| obj.get("max_tokens"))
        .and_then(Value::as_u64);
    let stream = obj.get("stream") == Some(&Value::Bool(true));
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        == Some(&Value::Bool(true));
    if let Some(t) = obj.get("temperature").and_then(Value::as_f64) {
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(v) = obj.get("top_p").filter(|v| v.is_number()) {
        out.insert("top_p".into(), v.clone());
    }
    match obj.get("stop") {
        Some(Value::String(st)) => {
            out.insert("stop_sequences".into(), json!([st]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(u) = obj.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    let mut budget = 0;
    if let Some(e) = obj.get("reasoning_effort").and_then(Value::as_str) {
        budget = match e {
            "low" => 1024,
            "medium" => 2048,
            "high" | "xhigh" | "max" => 4096,
            _ => 0,
        };
        if budget > 0 {
            out.insert(
                "thinking".into(),
                json!({"type": "enabled", "budget_tokens": budget}),
            );
        }
    }
    let max = max.unwrap_or(DEFAULT_MAX_TOKENS).max(budget + 1);
    out.insert("max_tokens".into(), json!(max));
    if let Some(rf) = obj.get("response_format")
        && s(rf, "type") == Some("json_schema")
        && let Some(schema) = rf.get("json_schema").and_then(|j| j.get("schema"))
    {
        out.insert(
            "output_format".into(),
            json!({"type": "json_schema", "schema": schema}),
        );
    }
    let tools: Vec<Value> = obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let f = t.get("function")?;
            let name = s(f, "name")?;
            let mut tool = json!({"name": name,
                "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}))});
            if let Some(d) = f.get("description").filter(|d| d.is_string()) {
                tool["description"] = d.clone();
            }
            Some(tool)
        })
        .collect();
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        let mut choice = match obj.get("tool_choice") {
            Some(Value::String(c)) if c == "required" => Some(json!({"type": "any"})),
            Some(Value::String(c)) if c == "none" => Some(json!({"type": "none"})),
            Some(Value::String(c)) if c == "auto" => Some(json!({"type": "auto"})),
            Some(Value::Object(c)) => c
                .get("function")
                .and_then(|f| s(f, "name"))
                .map(|n| json!({"type": "tool", "name": n})),
            _ => None,
        };
        if obj.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if s(c, "type") != Some("none") {
                c["disable_parallel_tool_use"] = Value::Bool(true);
            }
        }
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
    }
    let mut system = Vec::new();
    let mut msgs: Vec<Value> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role =
            s(m, "role").ok_or_else(|| format!("invalid message at index {i}: missing role"))?;
        match role {
            "system" | "developer" => {
                let t = text_of(m.get("content"));
                if !t.is_empty() {
                    system.push(json!({"type": "text", "text": t}));
                }
            }
            "user" => push_turn(&mut msgs, "user", user_content(m.get("content"))),
            "assistant" => {
                let mut blocks = Vec::new();
                let t = text_of(m.get("content"));
                if !t.is_empty() {
                    blocks.push(json!({"type": "text", "text": t}));
                }
                for tc in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let f = tc.get("function").cloned().unwrap_or(Value::Null);
                    let input = s(&f, "arguments")
                        .and_then(|a| serde_json::from_str::<Value>(a).ok())
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    blocks.push(json!({"type": "tool_use", "id": s(tc, "id").unwrap_or(""), "name": s(&f, "name").unwrap_or(""), "input": input}));
                }
                push_turn(&mut msgs, "assistant", blocks);
            }
            "tool" | "function" => {
                let id = s(m, "tool_call_id").unwrap_or("");
                let content = match m.get("content") {
                    Some(Value::Array(_)) => Value::Array(user_content(m.get("content"))),
                    other => Value::String(text_of(other)),
                };
                push_turn(
                    &mut msgs,
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": content})],
                );
            }
            other => {
                return Err(format!(
                    "invalid message at index {i}: unknown role \"{other}\""
                ));
            }
        }
    }
    if msgs.is_empty() {
        return Err("missing messages: only system messages were given".into());
    }
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(msgs));
    Ok(Converted {
        body: Value::Object(out),
        tool_names: ToolNames::default(),
        stream,
        include_usage,
        include_thoughts: false,
    })
}

fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Anthropic usage → OpenAI usage (prompt counts every input token, cached ones included).
fn usage(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cache_read = n("cache_read_input_tokens");
    let cache_write = n("cache_creation_input_tokens");
    let prompt = n("input_tokens")
        .saturating_add(cache_read)
        .saturating_add(cache_write);
    let completion = n("output_tokens");
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt.saturating_add(completion),
           "prompt_tokens_details": {"cached_tokens": cache_read}})
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Converts an Anthropic message (or error) into an OpenAI chat completion (or error).
pub fn response(res: &Value) -> Result<Value, String> {
    if s(res, "type") == Some("error") || res.get("error").is_some() {
        let e = res.get("error").cloned().unwrap_or(Value::Null);
        return Ok(
            json!({"error": {"message": s(&e, "message").unwrap_or(""), "type": s(&e, "type").unwrap_or("api_error"), "param": null, "code": null}}),
        );
    }
    let content = res
        .get("content")
        .and_then(Value::as_array)
        .ok_or("no content in response")?;
    let mut text = String::new();
    let mut thinking = String::new();
    let mut calls = Vec::new();
    for b in content {
        match s(b, "type") {
            Some("text") => text.push_str(s(b, "text").unwrap_or("")),
            Some("thinking") => thinking.push_str(s(b, "thinking").unwrap_or("")),
            Some("tool_use") => calls.push(json!({"id": s(b, "id").unwrap_or(""), "type": "function",
                "function": {"name": s(b, "name").unwrap_or(""), "arguments": b.get("input").cloned().unwrap_or_else(|| json!({})).to_string()}})),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }, "refusal": null});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if !thinking.is_empty() {
        message["reasoning_content"] = Value::String(thinking);
    }
    Ok(json!({
        "id": s(res, "id").unwrap_or(""),
        "object": "chat.completion",
        "created": now(),
        "model": s(res, "model").unwrap_or(""),
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": finish_reason(s(res, "stop_reason").unwrap_or("end_turn"))}],
        "usage": res.get("usage").map_or_else(|| usage(&json!({})), usage),
    }))
}

/// The Anthropic-events → OpenAI-chunks state machine.
pub struct Stream {
    include_usage: bool,
    id: String,
    model: String,
    created: u64,
    started: bool,
    /// Anthropic block index → OpenAI tool-call index.
    tools: Vec<(u64, u64)>,
    input: Value,
    output: u64,
    finish: Option<&'static str>,
    done: bool,
}

impl Stream {
    /// `include_usage`: the client asked for the final usage chunk.
    pub fn new(include_usage: bool) -> Stream {
        Stream::created_at(include_usage, now())
    }

    /// As [`Stream::new`], with a fixed `created` timestamp.
    pub fn created_at(include_usage: bool, created: u64) -> Stream {
        Stream {
            include_usage,
            id: String::new(),
            model: String::new(),
            created,
            started: false,
            tools: Vec::new(),
            input: json!({}),
            output: 0,
            finish: None,
            done: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> OutEvent {
        let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        OutEvent::new("message", c.to_string())
    }

    fn end(&mut self, out: &mut Vec<OutEvent>) {
        if self.done || !self.started {
            return;
        }
        out.push(self.chunk(json!({}), Some(self.finish.unwrap_or("stop"))));
        if self.include_usage {
            let mut u = self.input.clone();
            u["output_tokens"] = json!(self.output);
            let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": usage(&u)});
            out.push(OutEvent::new("message", c.to_string()));
        }
        out.push(OutEvent::new("message", "[DONE]".into()));
        self.done = true;
    }
}

impl StreamConverter for Stream {
    fn event(&mut self, kind: &str, data: &str, out: &mut Vec<OutEvent>) {
        if self.done || data.trim().is_empty() {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let ty = s(&v, "type").unwrap_or(kind);
        match ty {
            "message_start" => {
                let m = v.get("message").cloned().unwrap_or(Value::Null);
                self.id = s(&m, "id").unwrap_or("").to_string();
                self.model = s(&m, "model").unwrap_or("").to_string();
                if let Some(u) = m.get("usage").filter(|u| u.is_object()) {
                    self.input = u.clone();
                    self.output = u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
                }
                self.started = true;
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            "content_block_start" => {
                let b = v.get("content_block").cloned().unwrap_or(Value::Null);
                if s(&b, "type") == Some("tool_use") {
                    let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let n = self.tools.len() as u64;
                    self.tools.push((idx, n));
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": n, "id": s(&b, "id").unwrap_or(""), "type": "function",
                            "function": {"name": s(&b, "name").unwrap_or(""), "arguments": ""}}]}),
                        None,
                    ));
                }
            }
            "content_block_delta" => {
                let d = v.get("delta").cloned().unwrap_or(Value::Null);
                match s(&d, "type") {
                    Some("text_delta") => {
                        out.push(self.chunk(json!({"content": s(&d, "text").unwrap_or("")}), None))
                    }
                    Some("thinking_delta") => out.push(self.chunk(
                        json!({"reasoning_content": s(&d, "thinking").unwrap_or("")}),
                        None,
                    )),
                    Some("input_json_delta") => {
                        let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if let Some(&(_, n)) = self.tools.iter().find(|(b, _)| *b == idx) {
                            out.push(self.chunk(
                                json!({"tool_calls": [{"index": n, "function": {"arguments": s(&d, "partial_json").unwrap_or("")}}]}),
                                None,
                            ));
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v.get("delta").and_then(|d| s(d, "stop_reason")) {
                    self.finish = Some(finish_reason(r));
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    if let Some(o) = u.get("output_tokens").and_then(Value::as_u64) {
                        self.output = o;
                    }
                    for k in [
                        "input_tokens",
                        "cache_read_input_tokens",
                        "cache_creation_input_tokens",
                    ] {
                        if let Some(x) = u.get(k).filter(|x| x.as_u64().is_some_and(|n| n > 0)) {
                            self.input[k] = x.clone();
                        }
                    }
                }
            }
            "message_stop" => self.end(out),
            "error" => {
                let e = v.get("error").cloned().unwrap_or(Value::Null);
                let err = json!({"error": {"message": s(&e, "message").unwrap_or(""), "type": s(&e, "type").unwrap_or("api_error"), "param": null, "code": null}});
                out.push(OutEvent::new("message", err.to_string()));
                self.done = true;
            }
            _ => {}
        }
    }

    fn finish(&mut self, out: &mut Vec<OutEvent>) {
        self.end(out);
    }
}

#[cfg(test)]
#[path = "openai_to_anthropic_tests.rs"]
mod tests;
