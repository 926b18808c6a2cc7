//! Gemini `generateContent` / `streamGenerateContent` clients on an OpenAI Chat provider:
//! the request (contents, systemInstruction, generationConfig, function declarations with
//! Gemini `Schema`s) to a Chat body, the answer back to a `GenerateContentResponse` (text,
//! thoughts, function calls, finish reasons, `usageMetadata`), a stream state machine that
//! sends text as it arrives and function calls whole with the one final event, and Google's
//! error envelope. Field names are accepted in lowerCamelCase and snake_case; the output is
//! camelCase. Pure: no I/O.

use super::{Converted, ToolNames};
use serde_json::{Map, Value, json};

/// Request options that come from the URL, not the body.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The model named in the path (`…/models/<model>:generateContent`).
    pub model: &'a str,
    /// `:streamGenerateContent`.
    pub stream: bool,
}

/// A member by its lowerCamelCase name, or its snake_case spelling.
fn field<'a>(v: &'a Value, camel: &str) -> Option<&'a Value> {
    let o = v.as_object()?;
    if let Some(x) = o.get(camel) {
        return Some(x);
    }
    if !camel.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut snake = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    o.get(&snake)
}

fn str_field<'a>(v: &'a Value, camel: &str) -> Option<&'a str> {
    field(v, camel).and_then(Value::as_str)
}

/// Converts a Gemini request body to an OpenAI Chat body.
pub fn request(body: &Value, call: Call<'_>) -> Result<Converted, String> {
    if !body.is_object() {
        return Err("request body must be a JSON object".into());
    }
    if field(body, "cachedContent").is_some() {
        return Err("cachedContent is not supported through this gateway".into());
    }
    let mut messages = Vec::new();
    if let Some(sys) = field(body, "systemInstruction") {
        let text = system_text(sys);
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let contents = field(body, "contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or("contents is required")?;
    contents_to_messages(contents, &mut messages)?;
    let mut out = Map::new();
    out.insert("model".into(), Value::String(call.model.to_string()));
    out.insert("messages".into(), Value::Array(messages));
    let mut include_thoughts = false;
    if let Some(g) = field(body, "generationConfig") {
        include_thoughts = generation_config(g, &mut out);
    }
    let tools = function_tools(body);
    if !tools.is_empty() {
        let (tools, choice) = tool_choice(body, tools);
        out.insert("tools".into(), Value::Array(tools));
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
    }
    if call.stream {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Converted {
        body: Value::Object(out),
        tool_names: ToolNames::default(),
        stream: call.stream,
        include_usage: false,
        include_thoughts,
    })
}

/// The text of `systemInstruction`: a Content, a Part, or a bare string.
fn system_text(sys: &Value) -> String {
    match sys {
        Value::String(s) => s.clone(),
        _ => {
            let parts: Vec<&Value> = match field(sys, "parts").and_then(Value::as_array) {
                Some(p) => p.iter().collect(),
                None => vec![sys],
            };
            parts
                .iter()
                .filter_map(|p| str_field(p, "text"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

fn contents_to_messages(contents: &[Value], messages: &mut Vec<Value>) -> Result<(), String> {
    // Calls not answered yet, by name, for function responses without an id.
    let mut open: Vec<(String, String)> = Vec::new();
    for (i, c) in contents.iter().enumerate() {
        let role = str_field(c, "role").unwrap_or("user");
        let empty = Vec::new();
        let parts = field(c, "parts")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        match role {
            "user" | "function" => {
                let mut tool_msgs = Vec::new();
                let mut content: Vec<Value> = Vec::new();
                for (j, p) in parts.iter().enumerate() {
                    let at = || format!("contents[{i}].parts[{j}]");
                    if let Some(fr) = field(p, "functionResponse") {
                        let name = str_field(fr, "name").unwrap_or_default().to_string();
                        let id = match str_field(fr, "id") {
                            Some(id) => {
                                open.retain(|(_, o)| o != id);
                                id.to_string()
                            }
                            None => match open.iter().position(|(n, _)| *n == name) {
                                Some(k) => open.remove(k).1,
                                None => format!("call_{i}_{j}"),
                            },
                        };
                        let response = field(fr, "response").cloned().unwrap_or(json!({}));
                        tool_msgs.push(json!({"role": "tool", "tool_call_id": id, "content": response.to_string()}));
                    } else if let Some(t) = str_field(p, "text") {
                        content.push(json!({"type": "text", "text": t}));
                    } else if let Some(d) = field(p, "inlineData") {
                        let mime = str_field(d, "mimeType").unwrap_or("application/octet-stream");
                        let data = str_field(d, "data").unwrap_or_default();
                        content.push(inline_part(mime, data));
                    } else if let Some(f) = field(p, "fileData") {
                        let mime = str_field(f, "mimeType").unwrap_or_default();
                        let uri = str_field(f, "fileUri").unwrap_or_default();
                        if !mime.starts_with("image/") {
                            return Err(format!(
                                "{}: fileData of type {mime:?} is not supported through this gateway (only images)",
                                at()
                            ));
                        }
                        content.push(json!({"type": "image_url", "image_url": {"url": uri}}));
                    } else if field(p, "functionCall").is_some() {
                        return Err(format!(
                            "{}: functionCall parts belong to role \"model\"",
                            at()
                        ));
                    } else {
                        return Err(format!("{} has no supported data", at()));
                    }
                }
                messages.extend(tool_msgs);
                if !content.is_empty() || parts.is_empty() {
                    messages.push(json!({"role": "user", "content": user_content(content)}));
                }
            }
            "model" => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for (j, p) in parts.iter().enumerate() {
                    if let Some(fc) = field(p, "functionCall") {
                        let name = str_field(fc, "name").unwrap_or_default().to_string();
                        let id = str_field(fc, "id")
                            .map(String::from)
                            .unwrap_or_else(|| format!("call_{i}_{j}"));
                        open.push((name.clone(), id.clone()));
                        let args = field(fc, "args").cloned().unwrap_or(json!({}));
                        calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}}));
                    } else if let Some(t) = str_field(p, "text") {
                        if !field(p, "thought")
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                        {
                            text.push_str(t);
                        }
                    } else if ["thoughtSignature", "executableCode", "codeExecutionResult"]
                        .iter()
                        .any(|k| field(p, k).is_some())
                    {
                    } else {
                        return Err(format!("contents[{i}].parts[{j}] has no supported data"));
                    }
                }
                let mut m = json!({"role": "assistant"});
                m["content"] = if text.is_empty() && !calls.is_empty() {
                    Value::Null
                } else {
                    Value::String(text)
                };
                if !calls.is_empty() {
                    m["tool_calls"] = Value::Array(calls);
                }
                messages.push(m);
            }
            _ => return Err(format!("contents[{i}].role must be \"user\" or \"model\"")),
        }
    }
    Ok(())
}

/// Only text parts: their texts joined as a string; else the parts.
fn user_content(parts: Vec<Value>) -> Value {
    if parts.iter().all(|p| p["type"] == "text") {
        let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        Value::String(text)
    } else {
        Value::Array(parts)
    }
}

fn inline_part(mime: &str, data: &str) -> Value {
    if mime.starts_with("image/") {
        json!({"type": "image_url", "image_url": {"url": format!("data:{mime};base64,{data}")}})
    } else if mime == "audio/wav" || mime == "audio/mpeg" || mime == "audio/mp3" {
        let format = if mime == "audio/wav" { "wav" } else { "mp3" };
        json!({"type": "input_audio", "input_audio": {"data": data, "format": format}})
    } else {
        json!({"type": "file", "file": {"file_data": format!("data:{mime};base64,{data}")}})
    }
}

/// `generationConfig` into the Chat body; true when thoughts should come back.
fn generation_config(g: &Value, out: &mut Map<String, Value>) -> bool {
    for (from, to) in [
        ("temperature", "temperature"),
        ("topP", "top_p"),
        ("maxOutputTokens", "max_completion_tokens"),
        ("seed", "seed"),
        ("presencePenalty", "presence_penalty"),
        ("frequencyPenalty", "frequency_penalty"),
    ] {
        if let Some(v) = field(g, from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    }
    if let Some(s) = field(g, "stopSequences").filter(|v| v.is_array()) {
        out.insert("stop".into(), s.clone());
    }
    if let Some(n) = field(g, "candidateCount")
        .and_then(Value::as_u64)
        .filter(|n| *n > 1)
    {
        out.insert("n".into(), json!(n));
    }
    if field(g, "responseLogprobs").and_then(Value::as_bool) == Some(true) {
        out.insert("logprobs".into(), Value::Bool(true));
        if let Some(n) = field(g, "logprobs").filter(|v| v.is_number()) {
            out.insert("top_logprobs".into(), n.clone());
        }
    }
    if str_field(g, "responseMimeType") == Some("application/json") {
        let schema = field(g, "responseJsonSchema")
            .cloned()
            .or_else(|| field(g, "responseSchema").map(schema_to_json));
        let rf = match schema {
            Some(schema) => {
                json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}})
            }
            None => json!({"type": "json_object"}),
        };
        out.insert("response_format".into(), rf);
    }
    let Some(t) = field(g, "thinkingConfig") else {
        return false;
    };
    if let Some(level) = str_field(t, "thinkingLevel") {
        let l = level.to_ascii_lowercase();
        if ["low", "medium", "high", "minimal"].contains(&l.as_str()) {
            out.insert("reasoning_effort".into(), Value::String(l));
        }
    } else if let Some(b) = field(t, "thinkingBudget").and_then(Value::as_i64) {
        let effort = match b {
            0 => Some("minimal"),
            b if b >= 4096 => Some("high"),
            b if b >= 2048 => Some("medium"),
            b if b >= 1024 => Some("low"),
            b if b > 0 => Some("minimal"),
            _ => None,
        };
        if let Some(e) = effort {
            out.insert("reasoning_effort".into(), Value::String(e.into()));
        }
    }
    field(t, "includeThoughts").and_then(Value::as_bool) == Some(true)
}

/// Gemini's `Schema` (upper-case types, `nullable`) as JSON Schema.
pub fn schema_to_json(s: &Value) -> Value {
    let Some(o) = s.as_object() else {
        return s.clone();
    };
    let mut out = Map::new();
    let ty = str_field(s, "type")
        .map(str::to_ascii_lowercase)
        .filter(|t| t != "type_unspecified");
    let nullable = field(s, "nullable").and_then(Value::as_bool) == Some(true);
    if let Some(t) = ty {
        out.insert(
            "type".into(),
            if nullable {
                json!([t, "null"])
            } else {
                Value::String(t)
            },
        );
    }
    for (k, v) in o {
        let key = camel(k);
        match key.as_str() {
            "type" | "nullable" | "propertyOrdering" => {}
            "properties" => {
                if let Some(p) = v.as_object() {
                    let props: Map<String, Value> = p
                        .iter()
                        .map(|(n, s)| (n.clone(), schema_to_json(s)))
                        .collect();
                    out.insert("properties".into(), Value::Object(props));
                }
            }
            "items" => {
                out.insert("items".into(), schema_to_json(v));
            }
            "anyOf" => {
                let list = v.as_array().map(|a| a.iter().map(schema_to_json).collect());
                out.insert("anyOf".into(), Value::Array(list.unwrap_or_default()));
            }
            "example" => {
                out.insert("examples".into(), json!([v]));
            }
            "description" | "enum" | "format" | "required" | "title" | "minItems" | "maxItems"
            | "minLength" | "maxLength" | "minimum" | "maximum" | "pattern" | "default" => {
                out.insert(key, v.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

/// A snake_case name in lowerCamelCase.
fn camel(k: &str) -> String {
    let mut out = String::with_capacity(k.len());
    let mut up = false;
    for c in k.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The function declarations of every tool, as Chat tools.
fn function_tools(body: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for t in field(body, "tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for d in field(t, "functionDeclarations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = str_field(d, "name") else {
                continue;
            };
            let parameters = field(d, "parametersJsonSchema")
                .cloned()
                .or_else(|| field(d, "parameters").map(schema_to_json))
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            let mut f = json!({"name": name, "parameters": parameters});
            if let Some(desc) = str_field(d, "description") {
                f["description"] = Value::String(desc.into());
            }
            out.push(json!({"type": "function", "function": f}));
        }
    }
    out
}

/// `toolConfig.functionCallingConfig` as `tool_choice` (tools not allowed are removed).
fn tool_choice(body: &Value, mut tools: Vec<Value>) -> (Vec<Value>, Option<Value>) {
    let Some(cfg) = field(body, "toolConfig").and_then(|t| field(t, "functionCallingConfig"))
    else {
        return (tools, None);
    };
    let allowed: Vec<&str> = field(cfg, "allowedFunctionNames")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let choice = match str_field(cfg, "mode")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("NONE") => Some(json!("none")),
        Some("ANY") => {
            if allowed.len() > 1 {
                tools.retain(|t| {
                    t["function"]["name"]
                        .as_str()
                        .is_some_and(|n| allowed.contains(&n))
                });
            }
            match allowed.as_slice() {
                [one] => Some(json!({"type": "function", "function": {"name": one}})),
                _ => Some(json!("required")),
            }
        }
        Some("AUTO" | "VALIDATED") => Some(json!("auto")),
        _ => None,
    };
    (tools, choice)
}

/// OpenAI `finish_reason` as Gemini's `finishReason`.
pub fn finish_reason(r: Option<&str>) -> &'static str {
    match r {
        Some("stop" | "tool_calls" | "function_call") => "STOP",
        Some("length") => "MAX_TOKENS",
        Some("content_filter") => "SAFETY",
        _ => "OTHER",
    }
}

/// OpenAI `usage` as `usageMetadata`.
pub fn usage_metadata(u: &Value) -> Option<Value> {
    let n = |v: &Value| v.as_u64();
    let prompt = n(&u["prompt_tokens"])?;
    let completion = n(&u["completion_tokens"]).unwrap_or(0);
    let reasoning = n(&u["completion_tokens_details"]["reasoning_tokens"]).unwrap_or(0);
    let cached = n(&u["prompt_tokens_details"]["cached_tokens"])
        .or_else(|| n(&u["prompt_cache_hit_tokens"]))
        .unwrap_or(0);
    let total = n(&u["total_tokens"]).unwrap_or(prompt + completion);
    let mut m = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion.saturating_sub(reasoning),
        "totalTokenCount": total,
    });
    if reasoning > 0 {
        m["thoughtsTokenCount"] = json!(reasoning);
    }
    if cached > 0 {
        m["cachedContentTokenCount"] = json!(cached);
    }
    Some(m)
}

/// A tool call's `arguments` (a JSON string) as `args` (an object; else `{}`).
fn args(arguments: Option<&str>) -> Value {
    arguments
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// Converts a complete OpenAI Chat response into a `GenerateContentResponse`.
pub fn response(res: &Value, include_thoughts: bool) -> Result<Value, String> {
    let choices = res["choices"]
        .as_array()
        .ok_or("the provider's answer has no choices")?;
    let mut candidates = Vec::new();
    for (k, c) in choices.iter().enumerate() {
        let m = &c["message"];
        let mut parts = Vec::new();
        if include_thoughts
            && let Some(r) = m["reasoning_content"].as_str().or(m["reasoning"].as_str())
            && !r.is_empty()
        {
            parts.push(json!({"text": r, "thought": true}));
        }
        if let Some(t) = m["content"].as_str().filter(|t| !t.is_empty()) {
            parts.push(json!({"text": t}));
        }
        let mut reason = finish_reason(c["finish_reason"].as_str());
        if let Some(r) = m["refusal"].as_str().filter(|r| !r.is_empty()) {
            parts.push(json!({"text": r}));
            reason = "SAFETY";
        }
        for tc in m["tool_calls"].as_array().into_iter().flatten() {
            let mut fc = json!({"name": tc["function"]["name"], "args": args(tc["function"]["arguments"].as_str())});
            if let Some(id) = tc["id"].as_str() {
                fc["id"] = Value::String(id.into());
            }
            parts.push(json!({"functionCall": fc}));
        }
        if parts.is_empty() {
            parts.push(json!({"text": ""}));
        }
        let index = c["index"].as_u64().unwrap_or(k as u64);
        candidates.push(json!({"content": {"role": "model", "parts": parts}, "finishReason": reason, "index": index}));
    }
    let mut out = json!({"candidates": candidates});
    if let Some(u) = usage_metadata(&res["usage"]) {
        out["usageMetadata"] = u;
    }
    if let Some(m) = res["model"].as_str() {
        out["modelVersion"] = Value::String(m.into());
    }
    if let Some(id) = res["id"].as_str() {
        out["responseId"] = Value::String(id.into());
    }
    Ok(out)
}

/// Google's error envelope for an HTTP status.
pub fn error_body(status: u16, message: &str) -> Value {
    let name = match status {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    };
    json!({"error": {"code": status, "message": message, "status": name}})
}

mod stream;
pub use stream::Stream;

#[cfg(test)]
#[path = "gemini_to_openai_tests.rs"]
mod tests;
