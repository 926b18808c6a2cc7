//! What Ferry records about an exchange, read from response bodies and stream events per
//! protocol: token usage (merged across events), response text, tool calls, end of stream; and
//! from request bodies: the end user and the number of tools.

use crate::detect::Protocol;
use crate::wire;
use serde_json::Value;

/// Token counts. `prompt` is always the full prompt count; cached tokens are also reported
/// on their own.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
    pub reasoning: u64,
}

impl Usage {
    /// Merges a later report: fields with a positive value overwrite; `total` is raised to
    /// `prompt + completion` when that is larger.
    pub fn merge(&mut self, o: &Usage) {
        let upd = |a: &mut u64, b: u64| {
            if b > 0 {
                *a = b;
            }
        };
        upd(&mut self.prompt, o.prompt);
        upd(&mut self.completion, o.completion);
        upd(&mut self.total, o.total);
        upd(&mut self.cache_read, o.cache_read);
        upd(&mut self.cache_creation, o.cache_creation);
        upd(&mut self.reasoning, o.reasoning);
        self.total = self.total.max(self.prompt.saturating_add(self.completion));
    }
}

fn n(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return 0,
        }
    }
    cur.as_u64()
        .or_else(|| cur.as_f64().map(|f| f.max(0.0) as u64))
        .unwrap_or(0)
}

/// OpenAI chat / embeddings `usage` (with DeepSeek's cache field).
pub fn openai_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let cache_read = match n(u, &["prompt_tokens_details", "cached_tokens"]) {
        0 => n(u, &["prompt_cache_hit_tokens"]),
        x => x,
    };
    let mut usage = Usage {
        prompt: n(u, &["prompt_tokens"]),
        completion: n(u, &["completion_tokens"]),
        total: n(u, &["total_tokens"]),
        cache_read,
        cache_creation: n(u, &["prompt_tokens_details", "cache_creation_input_tokens"]),
        reasoning: n(u, &["completion_tokens_details", "reasoning_tokens"]),
    };
    usage.total = usage
        .total
        .max(usage.prompt.saturating_add(usage.completion));
    Some(usage)
}

/// OpenAI Responses `usage`.
pub fn responses_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let mut usage = Usage {
        prompt: n(u, &["input_tokens"]),
        completion: n(u, &["output_tokens"]),
        total: n(u, &["total_tokens"]),
        cache_read: n(u, &["input_tokens_details", "cached_tokens"]),
        cache_creation: 0,
        reasoning: n(u, &["output_tokens_details", "reasoning_tokens"]),
    };
    usage.total = usage
        .total
        .max(usage.prompt.saturating_add(usage.completion));
    Some(usage)
}

/// Anthropic `usage`: `prompt` counts every input token (plain, cache read, cache write).
pub fn anthropic_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let cache_read = n(u, &["cache_read_input_tokens"]);
    let cache_creation = n(u, &["cache_creation_input_tokens"]);
    let prompt = n(u, &["input_tokens"])
        .saturating_add(cache_read)
        .saturating_add(cache_creation);
    let completion = n(u, &["output_tokens"]);
    Some(Usage {
        prompt,
        completion,
        total: prompt.saturating_add(completion),
        cache_read,
        cache_creation,
        reasoning: 0,
    })
}

/// What was seen of a response so far.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Observed {
    pub usage: Option<Usage>,
    pub text: String,
    pub tool_calls: bool,
    pub done: bool,
    /// Stream events: the response text is not needed (no payload logging), so OpenAI chat
    /// chunks that carry neither usage nor tool calls need not be parsed at all.
    pub skip_text: bool,
}

/// Whether an OpenAI chat chunk can carry what is observed besides text. A key spelled with
/// `\u` escapes would be missed; no provider writes JSON that way.
fn chat_chunk_has_more_than_text(data: &str) -> bool {
    let (f, b) = (finders(), data.as_bytes());
    f.usage.find(b).is_some() || f.tool_calls.find(b).is_some()
}

/// Whether a Gemini event may carry usage or a function call (else only text).
fn gemini_event_has_more_than_text(data: &str) -> bool {
    let (f, b) = (finders(), data.as_bytes());
    f.usage_metadata.find(b).is_some() || f.function_call.find(b).is_some()
}

/// Substring searchers built once (building one costs more than searching a chunk with it).
struct Finders {
    usage: memchr::memmem::Finder<'static>,
    tool_calls: memchr::memmem::Finder<'static>,
    usage_metadata: memchr::memmem::Finder<'static>,
    function_call: memchr::memmem::Finder<'static>,
    tool_use: memchr::memmem::Finder<'static>,
}

fn finders() -> &'static Finders {
    static F: std::sync::LazyLock<Finders> = std::sync::LazyLock::new(|| Finders {
        usage: memchr::memmem::Finder::new(b"\"usage\""),
        tool_calls: memchr::memmem::Finder::new(b"\"tool_calls\""),
        usage_metadata: memchr::memmem::Finder::new(b"\"usageMetadata\""),
        function_call: memchr::memmem::Finder::new(b"\"functionCall\""),
        tool_use: memchr::memmem::Finder::new(b"\"tool_use\""),
    });
    &F
}

impl Observed {
    fn add_usage(&mut self, u: Option<Usage>) {
        if let Some(u) = u {
            match &mut self.usage {
                Some(cur) => cur.merge(&u),
                None => self.usage = Some(u),
            }
        }
    }

    fn add_text(&mut self, sep: &str, t: &str) {
        if !self.text.is_empty() && !sep.is_empty() {
            self.text.push_str(sep);
        }
        self.text.push_str(t);
    }

    /// Adds what a chat completion (`message`s, texts joined by a space) or a chunk (`delta`s,
    /// texts concatenated) carries.
    fn add_chat(&mut self, b: &wire::ChatBody<'_>, chunk: bool) {
        for c in b.choices.items.iter().filter_map(|c| c.0.as_ref()) {
            let m = if chunk { &c.delta } else { &c.message };
            let Some(m) = m.0.as_ref() else {
                continue;
            };
            if let Some(t) = m.content.as_str() {
                self.add_text(if chunk { "" } else { " " }, t);
            }
            if !m.tool_calls.items.is_empty() {
                self.tool_calls = true;
            }
        }
        self.add_usage(b.usage.0.as_ref().map(wire::OpenAiUsage::usage));
    }

    /// Reads a complete (non-stream) response body; `None` when it is not JSON. OpenAI chat
    /// bodies are read through the typed view (no `Value` tree).
    pub fn from_slice(proto: Protocol, body: &[u8]) -> Option<Observed> {
        if proto == Protocol::OpenAiChat
            && let Ok(b) = serde_json::from_slice::<wire::ChatBody>(body)
        {
            let mut o = Observed {
                done: true,
                ..Observed::default()
            };
            o.add_chat(&b, false);
            return Some(o);
        }
        let v = serde_json::from_slice::<Value>(body).ok()?;
        Some(Observed::from_json(proto, &v))
    }

    /// Reads a complete (non-stream) JSON response.
    pub fn from_json(proto: Protocol, v: &Value) -> Observed {
        let mut o = Observed {
            done: true,
            ..Observed::default()
        };
        let arr = |k: &str| {
            v.get(k)
                .and_then(Value::as_array)
                .map_or(&[][..], |a| &a[..])
        };
        match proto {
            Protocol::OpenAiChat => {
                o.add_usage(v.get("usage").and_then(openai_usage));
                for c in arr("choices") {
                    let msg = c.get("message");
                    if let Some(t) = msg.and_then(|m| m.get("content")).and_then(Value::as_str) {
                        o.add_text(" ", t);
                    }
                    if msg
                        .and_then(|m| m.get("tool_calls"))
                        .and_then(Value::as_array)
                        .is_some_and(|a| !a.is_empty())
                    {
                        o.tool_calls = true;
                    }
                }
            }
            Protocol::OpenAiEmbeddings => o.add_usage(v.get("usage").and_then(openai_usage)),
            Protocol::OpenAiResponses => {
                o.add_usage(v.get("usage").and_then(responses_usage));
                for item in arr("output") {
                    if item.get("type").and_then(Value::as_str) == Some("function_call") {
                        o.tool_calls = true;
                    }
                    for c in item
                        .get("content")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if c.get("type").and_then(Value::as_str) == Some("output_text")
                            && let Some(t) = c.get("text").and_then(Value::as_str)
                        {
                            o.add_text(" ", t);
                        }
                    }
                }
            }
            Protocol::VertexPredict => {
                let tokens: u64 = arr("predictions")
                    .iter()
                    .filter_map(|p| p["embeddings"]["statistics"]["token_count"].as_u64())
                    .sum();
                o.add_usage(Some(Usage {
                    prompt: tokens,
                    total: tokens,
                    ..Usage::default()
                }));
            }
            Protocol::AnthropicMessages => {
                o.add_usage(v.get("usage").and_then(anthropic_usage));
                for c in arr("content") {
                    match c.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            if let Some(t) = c.get("text").and_then(Value::as_str) {
                                o.add_text(" ", t);
                            }
                        }
                        Some("tool_use") => o.tool_calls = true,
                        _ => {}
                    }
                }
            }
            Protocol::Gemini => o.add_gemini(v, " "),
            Protocol::Passthrough => {}
        }
        o
    }

    /// A Gemini `GenerateContentResponse` (whole, or one stream event).
    fn add_gemini(&mut self, v: &Value, sep: &str) {
        let m = &v["usageMetadata"];
        if m.is_object() {
            let n = |k: &str| m[k].as_u64().unwrap_or(0);
            self.add_usage(Some(Usage {
                prompt: n("promptTokenCount"),
                completion: n("candidatesTokenCount") + n("thoughtsTokenCount"),
                total: n("totalTokenCount"),
                cache_read: n("cachedContentTokenCount"),
                cache_creation: 0,
                reasoning: n("thoughtsTokenCount"),
            }));
        }
        for c in v["candidates"].as_array().into_iter().flatten() {
            for p in c["content"]["parts"].as_array().into_iter().flatten() {
                if p.get("functionCall").is_some() {
                    self.tool_calls = true;
                } else if p["thought"] != Value::Bool(true)
                    && let Some(t) = p["text"].as_str()
                {
                    self.add_text(sep, t);
                }
            }
        }
    }

    /// Reads one stream event. Returns true when the event is an OpenAI chat chunk that only
    /// carries usage (no choices), the chunk `include_usage` adds.
    pub fn event(&mut self, proto: Protocol, kind: &str, data: &str) -> bool {
        let data = data.trim();
        if data.is_empty() {
            return false;
        }
        match proto {
            Protocol::OpenAiChat => {
                if kind != "message" {
                    return false;
                }
                if data == "[DONE]" {
                    self.done = true;
                    return false;
                }
                if self.skip_text && !chat_chunk_has_more_than_text(data) {
                    return false;
                }
                if let Ok(b) = serde_json::from_str::<wire::ChatBody>(data) {
                    self.add_chat(&b, true);
                    return b.usage.0.is_some() && b.choices.items.is_empty();
                }
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    return false;
                };
                let choices = v.get("choices").and_then(Value::as_array);
                for c in choices.into_iter().flatten() {
                    let delta = c.get("delta");
                    if let Some(t) = delta.and_then(|d| d.get("content")).and_then(Value::as_str) {
                        self.add_text("", t);
                    }
                    if delta
                        .and_then(|d| d.get("tool_calls"))
                        .and_then(Value::as_array)
                        .is_some_and(|a| !a.is_empty())
                    {
                        self.tool_calls = true;
                    }
                }
                let usage = v.get("usage").and_then(openai_usage);
                let usage_only = usage.is_some() && choices.is_none_or(|c| c.is_empty());
                self.add_usage(usage);
                usage_only
            }
            Protocol::Gemini => {
                // Text the log does not need: only usage and calls are looked for.
                if self.skip_text && !gemini_event_has_more_than_text(data) {
                    return false;
                }
                if let Ok(v) = serde_json::from_str::<Value>(data) {
                    self.add_gemini(&v, "");
                }
                false
            }
            Protocol::AnthropicMessages => {
                // Events that carry neither usage nor the start of a tool call: a text delta
                // the log does not need, a block's end, a ping (named by the `event:` field).
                if matches!(kind, "content_block_stop" | "ping")
                    || (self.skip_text && kind == "content_block_delta")
                    || (kind == "content_block_start"
                        && finders().tool_use.find(data.as_bytes()).is_none())
                {
                    return false;
                }
                if kind == "message_stop" {
                    self.done = true;
                    return false;
                }
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    return false;
                };
                let ty = v.get("type").and_then(Value::as_str).unwrap_or(kind);
                match ty {
                    "message_start" => self.add_usage(
                        v.get("message")
                            .and_then(|m| m.get("usage"))
                            .and_then(anthropic_usage),
                    ),
                    "content_block_start"
                        if v.get("content_block")
                            .and_then(|b| b.get("type"))
                            .and_then(Value::as_str)
                            == Some("tool_use") =>
                    {
                        self.tool_calls = true;
                    }
                    "content_block_delta" => {
                        let d = v.get("delta");
                        if d.and_then(|d| d.get("type")).and_then(Value::as_str)
                            == Some("text_delta")
                            && let Some(t) = d.and_then(|d| d.get("text")).and_then(Value::as_str)
                        {
                            self.add_text("", t);
                        }
                    }
                    "message_delta" => {
                        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                            // Output tokens (and sometimes input/cache) arrive here; keep
                            // what message_start reported for the rest.
                            let mut cur = self.usage.unwrap_or_default();
                            let out = n(u, &["output_tokens"]);
                            if out > 0 {
                                cur.completion = out;
                            }
                            if u.get("input_tokens").is_some()
                                && let Some(full) = anthropic_usage(u)
                                && full.prompt > 0
                            {
                                cur.prompt = full.prompt;
                                cur.cache_read = full.cache_read.max(cur.cache_read);
                                cur.cache_creation = full.cache_creation.max(cur.cache_creation);
                            }
                            cur.total = cur.prompt.saturating_add(cur.completion);
                            self.usage = Some(cur);
                        }
                    }
                    "message_stop" | "error" => self.done = true,
                    _ => {}
                }
                false
            }
            Protocol::OpenAiResponses => {
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    return false;
                };
                let ty = v.get("type").and_then(Value::as_str).unwrap_or(kind);
                match ty {
                    "response.output_text.delta" => {
                        if let Some(t) = v.get("delta").and_then(Value::as_str) {
                            self.add_text("", t);
                        }
                    }
                    "response.completed" => {
                        let r = v.get("response");
                        self.add_usage(r.and_then(|r| r.get("usage")).and_then(responses_usage));
                        if r.and_then(|r| r.get("output"))
                            .and_then(Value::as_array)
                            .is_some_and(|a| {
                                a.iter().any(|i| {
                                    i.get("type").and_then(Value::as_str) == Some("function_call")
                                })
                            })
                        {
                            self.tool_calls = true;
                        }
                        self.done = true;
                    }
                    "response.failed" | "response.incomplete" | "error" => self.done = true,
                    _ => {}
                }
                false
            }
            Protocol::OpenAiEmbeddings | Protocol::VertexPredict | Protocol::Passthrough => false,
        }
    }
}

/// `llm_end_user_id` from a request body: `safety_identifier` or `user` (OpenAI),
/// `metadata.user_id` (Anthropic).
pub fn end_user(proto: Protocol, body: &Value) -> Option<&str> {
    match proto {
        Protocol::OpenAiChat | Protocol::OpenAiResponses => body
            .get("safety_identifier")
            .and_then(Value::as_str)
            .or_else(|| body.get("user").and_then(Value::as_str)),
        Protocol::AnthropicMessages => body
            .get("metadata")
            .and_then(|m| m.get("user_id"))
            .and_then(Value::as_str),
        _ => None,
    }
}

/// [`end_user`] for a body read through [`wire::RequestPeek`].
pub fn end_user_peek<'a>(proto: Protocol, p: &'a wire::RequestPeek<'_>) -> Option<&'a str> {
    match proto {
        Protocol::OpenAiChat | Protocol::OpenAiResponses => {
            p.safety_identifier.as_str().or_else(|| p.user.as_str())
        }
        Protocol::AnthropicMessages => p.metadata.0.as_ref().and_then(|m| m.user_id.as_str()),
        _ => None,
    }
}

/// `llm_tool_count`: the number of tools the request offers.
pub fn tool_count(body: &Value) -> usize {
    body.get("tools")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

#[cfg(test)]
#[path = "observe_tests.rs"]
mod tests;
