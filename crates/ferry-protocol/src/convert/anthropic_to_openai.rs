//! Anthropic Messages client → OpenAI Chat provider: the request (a whitelist of mapped
//! fields), the JSON response back to an Anthropic message, and the stream state machine from
//! OpenAI chunks to Anthropic events.

use super::{Converted, ToolNames};
use serde_json::{Map, Value, json};

mod stream;
pub use stream::Stream;

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// Anthropic `thinking` → OpenAI `reasoning_effort`.
fn effort(thinking: &Value, body: &Value) -> Option<String> {
    match s(thinking, "type") {
        Some("adaptive") => Some(
            body.get("output_config")
                .and_then(|o| s(o, "effort"))
                .filter(|e| !e.is_empty())
                .unwrap_or("medium")
                .to_string(),
        ),
        Some("enabled") => {
            let budget = thinking
                .get("budget_tokens")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            Some(
                if budget >= 4096.0 {
                    "high"
                } else if budget >= 2048.0 {
                    "medium"
                } else if budget >= 1024.0 {
                    "low"
                } else {
                    "minimal"
                }
                .to_string(),
            )
        }
        _ => None,
    }
}

/// Strict-mode schema: every object with `properties` closes and requires all of them.
fn normalise_schema(v: &mut Value) {
    let Some(o) = v.as_object_mut() else { return };
    if let Some(Value::Object(props)) = o.get("properties") {
        let mut names: Vec<String> = props.keys().cloned().collect();
        names.sort();
        o.insert("additionalProperties".into(), Value::Bool(false));
        o.insert("required".into(), json!(names));
    }
    if let Some(Value::Object(props)) = o.get_mut("properties") {
        props.values_mut().for_each(normalise_schema);
    }
    if let Some(items) = o.get_mut("items") {
        normalise_schema(items);
    }
    for k in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(a)) = o.get_mut(k) {
            a.iter_mut().for_each(normalise_schema);
        }
    }
    for k in ["$defs", "definitions"] {
        if let Some(Value::Object(d)) = o.get_mut(k) {
            d.values_mut().for_each(normalise_schema);
        }
    }
}

fn image_part(block: &Value, default_type: &str) -> Result<Option<Value>, String> {
    let Some(src) = block.get("source") else {
        return Ok(None);
    };
    if !src.is_object() {
        return Err("invalid image source: expected an object".into());
    }
    let url = match s(src, "type") {
        Some("base64") => match s(src, "data").filter(|d| !d.is_empty()) {
            Some(d) => format!(
                "data:{};base64,{d}",
                s(src, "media_type").unwrap_or(default_type)
            ),
            None => return Ok(None),
        },
        Some("url") => match s(src, "url").filter(|u| !u.is_empty()) {
            Some(u) => u.to_string(),
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    Ok(Some(
        json!({"type": "image_url", "image_url": {"url": url}}),
    ))
}

/// `tool_result` content → OpenAI tool message content.
fn tool_result_content(c: Option<&Value>) -> Result<Value, String> {
    match c {
        Some(Value::String(t)) => Ok(Value::String(t.clone())),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            let mut parts = Vec::new();
            let mut has_media = false;
            for b in blocks {
                match s(b, "type") {
                    Some("text") => {
                        let t = s(b, "text").unwrap_or("");
                        text.push_str(t);
                        parts.push(json!({"type": "text", "text": t}));
                    }
                    Some("image") => {
                        if let Some(p) = image_part(b, "image/png")? {
                            has_media = true;
                            parts.push(p);
                        }
                    }
                    Some("document") => {
                        if let Some(p) = image_part(b, "application/pdf")? {
                            has_media = true;
                            parts.push(p);
                        }
                    }
                    _ => {}
                }
            }
            Ok(if has_media {
                Value::Array(parts)
            } else {
                Value::String(text)
            })
        }
        _ => Ok(Value::String(String::new())),
    }
}

const BUILTIN_TOOL_PREFIXES: [&str; 5] = [
    "computer_",
    "bash_",
    "text_editor_",
    "web_search",
    "code_execution_",
];

/// Converts an Anthropic Messages request into an OpenAI chat request.
pub fn request(body: &Value) -> Result<Converted, String> {
    let obj = body.as_object().ok_or("request body must be a table")?;
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("missing messages")?;
    let mut names = ToolNames::default();
    let mut out = Map::new();
    if let Some(m) = obj.get("model").filter(|m| m.is_string()) {
        out.insert("model".into(), m.clone());
    }
    let stream = obj.get("stream") == Some(&Value::Bool(true));
    if let Some(st) = obj.get("stream").filter(|v| !v.is_null()) {
        out.insert("stream".into(), st.clone());
        if stream {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    if let Some(m) = obj.get("max_tokens").filter(|v| v.is_number()) {
        out.insert("max_completion_tokens".into(), m.clone());
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = obj.get(k).filter(|v| v.is_number()) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(stop) = obj.get("stop_sequences").filter(|v| v.is_array()) {
        out.insert("stop".into(), stop.clone());
    }
    if let Some(u) = obj.get("metadata").and_then(|m| s(m, "user_id")) {
        out.insert("user".into(), Value::String(u.to_string()));
    }
    if let Some(t) = obj.get("service_tier").filter(|v| v.is_string()) {
        out.insert("service_tier".into(), t.clone());
    }
    if let Some(e) = obj.get("thinking").and_then(|t| effort(t, body)) {
        out.insert("reasoning_effort".into(), Value::String(e));
    }
    let format = obj
        .get("output_format")
        .filter(|f| f.as_object().is_some_and(|o| !o.is_empty()))
        .or_else(|| obj.get("output_config").and_then(|o| o.get("format")));
    if let Some(f) = format
        && s(f, "type") == Some("json_schema")
        && let Some(schema) = f
            .get("schema")
            .filter(|x| x.as_object().is_some_and(|o| !o.is_empty()))
    {
        let mut schema = schema.clone();
        normalise_schema(&mut schema);
        out.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {"name": "structured_output", "schema": schema, "strict": true}}),
                );
    }
    // Tools (built-in server tools are dropped) and the choice among them.
    let mut tools = Vec::new();
    for t in obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !t.is_object() {
            continue;
        }
        if s(t, "type").is_some_and(|ty| BUILTIN_TOOL_PREFIXES.iter().any(|p| ty.starts_with(p))) {
            continue;
        }
        let Some(name) = s(t, "name").filter(|n| !n.is_empty()) else {
            continue;
        };
        let mut f = Map::new();
        f.insert("name".into(), Value::String(names.sanitise(name)));
        if let Some(d) = t.get("description").filter(|d| d.is_string()) {
            f.insert("description".into(), d.clone());
        }
        f.insert(
            "parameters".into(),
            t.get("input_schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        );
        tools.push(json!({"type": "function", "function": f}));
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = obj.get("tool_choice") {
            let choice = match s(tc, "type") {
                Some("auto") => Some(json!("auto")),
                Some("any") => Some(json!("required")),
                Some("none") => Some(json!("none")),
                Some("tool") => s(tc, "name")
                    .map(|n| json!({"type": "function", "function": {"name": names.sanitise(n)}})),
                _ => None,
            };
            if let Some(c) = choice {
                out.insert("tool_choice".into(), c);
            }
            if tc.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
                out.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
        }
    }
    // Messages: the system prompt first, then each turn.
    let mut msgs = Vec::new();
    let system = match obj.get("system") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| s(b, "type") == Some("text"))
            .filter_map(|b| s(b, "text"))
            .filter_map(strip_billing_header)
            .collect::<String>(),
        _ => String::new(),
    };
    if !system.is_empty() {
        msgs.push(json!({"role": "system", "content": system}));
    }
    for (i, m) in messages.iter().enumerate() {
        let role = s(m, "role").ok_or_else(|| format!("invalid message at index {}", i + 1))?;
        match m.get("content") {
            Some(Value::String(t)) => msgs.push(json!({"role": role, "content": t})),
            Some(Value::Array(blocks)) => convert_turn(role, blocks, &mut names, &mut msgs)?,
            _ => return Err(format!("invalid message content at index {}", i + 1)),
        }
    }
    out.insert("messages".into(), Value::Array(msgs));
    Ok(Converted {
        body: Value::Object(out),
        tool_names: names,
        stream,
        include_usage: true,
        include_thoughts: false,
    })
}

/// Drops `cch=` entries from Claude Code's billing header block (and the block if empty).
fn strip_billing_header(text: &str) -> Option<String> {
    const PREFIX: &str = "x-anthropic-billing-header:";
    if !text.to_ascii_lowercase().starts_with(PREFIX) {
        return Some(text.to_string());
    }
    let kept: Vec<&str> = text[PREFIX.len()..]
        .split(';')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.starts_with("cch="))
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(format!("{PREFIX} {}", kept.join("; ")))
    }
}

fn convert_turn(
    role: &str,
    blocks: &[Value],
    names: &mut ToolNames,
    msgs: &mut Vec<Value>,
) -> Result<(), String> {
    let mut parts = Vec::new();
    let mut tool_calls = Vec::new();
    let mut tool_msgs = Vec::new();
    for b in blocks {
        if !b.is_object() {
            continue;
        }
        match s(b, "type") {
            Some("text") => {
                if let Some(t) = s(b, "text") {
                    parts.push(json!({"type": "text", "text": t}));
                }
            }
            Some("image") => parts.extend(image_part(b, "image/png")?),
            Some("document") => parts.extend(image_part(b, "application/pdf")?),
            Some("tool_use") => {
                if let (Some(id), Some(name)) = (s(b, "id"), s(b, "name")) {
                    let input = b
                        .get("input")
                        .filter(|i| !i.is_null())
                        .cloned()
                        .unwrap_or_else(|| json!({}));
                    tool_calls.push(json!({"id": id, "type": "function",
                        "function": {"name": names.sanitise(name), "arguments": input.to_string()}}));
                }
            }
            Some("tool_result") => {
                if let Some(id) = s(b, "tool_use_id") {
                    tool_msgs.push(json!({"role": "tool", "tool_call_id": id, "content": tool_result_content(b.get("content"))?}));
                }
            }
            _ => {}
        }
    }
    let text = || -> String { parts.iter().filter_map(|p| s(p, "text")).collect() };
    if !tool_msgs.is_empty() {
        // Tool results answer the previous assistant turn, so they come first.
        msgs.extend(tool_msgs);
        if !parts.is_empty() {
            msgs.push(json!({"role": role, "content": parts}));
        }
    } else if !tool_calls.is_empty() {
        let mut m = json!({"role": role, "tool_calls": tool_calls});
        let t = text();
        if !t.is_empty() {
            m["content"] = Value::String(t);
        }
        msgs.push(m);
    } else if parts.is_empty() {
        msgs.push(json!({"role": role, "content": ""}));
    } else if role == "assistant" {
        msgs.push(json!({"role": role, "content": text()}));
    } else {
        msgs.push(json!({"role": role, "content": parts}));
    }
    Ok(())
}

fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        _ => "end_turn",
    }
}

fn usage(u: &Value) -> Value {
    let prompt = u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
    let completion = u
        .get("completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let details = u.get("prompt_tokens_details").filter(|d| d.is_object());
    let cached = details
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64)
        .or_else(|| u.get("prompt_cache_hit_tokens").and_then(Value::as_u64))
        .unwrap_or(0);
    let mut out =
        json!({"input_tokens": prompt.saturating_sub(cached), "output_tokens": completion});
    if details.is_some() || cached > 0 {
        out["cache_read_input_tokens"] = json!(cached);
    }
    if let Some(c) = details
        .and_then(|d| d.get("cache_creation_input_tokens"))
        .and_then(Value::as_u64)
    {
        out["cache_creation_input_tokens"] = json!(c);
    }
    out
}

/// Parses tool-call arguments; anything but a JSON object becomes `{}`.
fn arguments(a: Option<&Value>) -> Value {
    match a {
        Some(Value::String(t)) => serde_json::from_str::<Value>(t)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({})),
        Some(o @ Value::Object(_)) => o.clone(),
        _ => json!({}),
    }
}

/// Converts an OpenAI chat completion (or error) into an Anthropic message (or error).
pub fn response(res: &Value, names: &ToolNames, model: Option<&str>) -> Result<Value, String> {
    if let Some(e) = res.get("error") {
        let (ty, msg) = match e {
            Value::String(m) => ("api_error".to_string(), m.clone()),
            _ => (
                s(e, "type")
                    .or_else(|| s(e, "code"))
                    .unwrap_or("api_error")
                    .to_string(),
                s(e, "message").unwrap_or("").to_string(),
            ),
        };
        return Ok(json!({"type": "error", "error": {"type": ty, "message": msg}}));
    }
    let choice = res
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or("no choices in response")?;
    let msg = choice.get("message").cloned().unwrap_or(Value::Null);
    let mut content = Vec::new();
    if let Some(t) = s(&msg, "reasoning_content")
        .or_else(|| s(&msg, "reasoning"))
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "thinking", "thinking": t, "signature": ""}));
    }
    if let Some(t) = s(&msg, "content").filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for tc in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = tc.get("function").cloned().unwrap_or(Value::Null);
        content.push(json!({"type": "tool_use", "id": s(tc, "id").unwrap_or(""),
            "name": names.restore(s(&f, "name").unwrap_or("")), "input": arguments(f.get("arguments"))}));
    }
    if content.is_empty() {
        content.push(json!({"type": "text", "text": ""}));
    }
    Ok(json!({
        "id": s(res, "id").unwrap_or(""),
        "type": "message",
        "role": "assistant",
        "model": model.or_else(|| s(res, "model")).unwrap_or(""),
        "content": content,
        "stop_reason": stop_reason(s(choice, "finish_reason").unwrap_or("stop")),
        "stop_sequence": null,
        "usage": res.get("usage").filter(|u| u.is_object()).map_or_else(|| json!({"input_tokens": 0, "output_tokens": 0}), usage),
    }))
}

#[cfg(test)]
#[path = "anthropic_to_openai_tests.rs"]
mod tests;
