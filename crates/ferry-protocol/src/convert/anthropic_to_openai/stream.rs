//! The OpenAI-chunks → Anthropic-events state machine. Chunks are read through typed views that
//! borrow from the input (no `Value` tree), and each event's JSON is written straight into its
//! text (Anthropic's own key order).

use super::stop_reason;
use crate::convert::{OutEvent, StreamConverter, ToolNames};
use crate::json_out::{push_str, push_u64};
use crate::text_chunk::ChunkShape;
use crate::wire::{Index, List, Obj, Text};
use serde::Deserialize;
use serde_json::value::RawValue;

/// An OpenAI chat chunk: the fields the converter reads.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Chunk<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    choices: List<Obj<Choice<'a>>>,
    usage: Obj<Usage>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Choice<'a> {
    #[serde(borrow)]
    delta: Obj<Delta<'a>>,
    #[serde(borrow)]
    finish_reason: Text<'a>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Text<'a>,
    #[serde(borrow)]
    reasoning_content: Text<'a>,
    #[serde(borrow)]
    reasoning: Text<'a>,
    #[serde(borrow)]
    tool_calls: List<Obj<ToolCall<'a>>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ToolCall<'a> {
    index: Index,
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    function: Obj<Function<'a>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Function<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    arguments: Text<'a>,
}

/// OpenAI `usage`, as the Anthropic usage needs it (absent counts kept apart from zeros).
#[derive(Default, Deserialize)]
#[serde(default)]
struct Usage {
    prompt_tokens: Index,
    completion_tokens: Index,
    prompt_tokens_details: Obj<Details>,
    prompt_cache_hit_tokens: Index,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Details {
    cached_tokens: Index,
    cache_creation_input_tokens: Index,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ErrorBody<'a> {
    #[serde(borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow)]
    code: Text<'a>,
    #[serde(borrow)]
    message: Text<'a>,
}

/// The Anthropic usage object for an OpenAI usage: cached prompt tokens are reported apart.
fn usage_json(u: &Usage) -> String {
    let details = u.prompt_tokens_details.0.as_ref();
    let cached = details
        .and_then(|d| d.cached_tokens.0)
        .or(u.prompt_cache_hit_tokens.0)
        .unwrap_or(0);
    let mut s = String::with_capacity(96);
    s.push_str("{\"input_tokens\":");
    push_u64(
        &mut s,
        u.prompt_tokens.0.unwrap_or(0).saturating_sub(cached),
    );
    s.push_str(",\"output_tokens\":");
    push_u64(&mut s, u.completion_tokens.0.unwrap_or(0));
    if details.is_some() || cached > 0 {
        s.push_str(",\"cache_read_input_tokens\":");
        push_u64(&mut s, cached);
    }
    if let Some(c) = details.and_then(|d| d.cache_creation_input_tokens.0) {
        s.push_str(",\"cache_creation_input_tokens\":");
        push_u64(&mut s, c);
    }
    s.push('}');
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Thinking,
    Text,
    Tool(u64),
}

#[derive(Debug, Default)]
struct PendingTool {
    upstream: u64,
    id: String,
    name: String,
    args: String,
}

/// The OpenAI-chunks → Anthropic-events state machine.
pub struct Stream {
    names: ToolNames,
    model: Option<String>,
    started: bool,
    next_index: u64,
    /// The open block and its index.
    open: Option<(Block, u64)>,
    /// The tool streamed live (its upstream index); later tools wait in `held`.
    live_tool: Option<u64>,
    held: Vec<PendingTool>,
    /// Text that arrived after tool calls, emitted after them.
    held_text: String,
    stop: Option<&'static str>,
    /// The Anthropic usage object, as JSON text.
    usage: Option<String>,
    done: bool,
    /// The shape of the upstream's text chunks.
    shape: ChunkShape,
}

const TEXT_BLOCK: &str = "{\"type\":\"text\",\"text\":\"\"}";

/// An event's JSON text, begun with its `type`.
fn event(kind: &'static str, capacity: usize) -> String {
    let mut s = String::with_capacity(capacity + 48);
    s.push_str("{\"type\":\"");
    s.push_str(kind);
    s.push('"');
    s
}

/// `,"index":N`.
fn push_index(s: &mut String, idx: u64) {
    s.push_str(",\"index\":");
    push_u64(s, idx);
}

impl Stream {
    /// `model`: the model to report when the upstream chunks carry none.
    pub fn new(names: ToolNames, model: Option<String>) -> Stream {
        Stream {
            names,
            model,
            started: false,
            next_index: 0,
            open: None,
            live_tool: None,
            held: Vec::new(),
            held_text: String::new(),
            stop: None,
            usage: None,
            done: false,
            shape: ChunkShape::default(),
        }
    }

    fn close(&mut self, out: &mut Vec<OutEvent>) {
        if let Some((_, idx)) = self.open.take() {
            out.push(block_stop(idx));
        }
    }

    /// Opens block `b` unless it is the open one; `start` is its `content_block` JSON.
    fn open_block(&mut self, b: Block, start: &str, out: &mut Vec<OutEvent>) -> u64 {
        if let Some((cur, idx)) = self.open
            && cur == b
        {
            return idx;
        }
        self.close(out);
        let idx = self.next_index;
        self.next_index += 1;
        out.push(block_start(idx, start));
        self.open = Some((b, idx));
        idx
    }

    fn text(&mut self, t: &str, out: &mut Vec<OutEvent>) {
        let idx = self.open_block(Block::Text, TEXT_BLOCK, out);
        out.push(delta(idx, "text_delta", "text", t));
    }

    fn tool_delta(&mut self, tc: &ToolCall<'_>, out: &mut Vec<OutEvent>) {
        let Some(up) = tc.index.0 else {
            return;
        };
        let f = tc.function.0.as_ref();
        let args = f.and_then(|f| f.arguments.as_str()).unwrap_or("");
        if self.live_tool.is_none() && !self.held.iter().any(|h| h.upstream == up) {
            self.live_tool = Some(up);
            let name = self
                .names
                .restore(f.and_then(|f| f.name.as_str()).unwrap_or(""));
            let start = tool_use(tc.id.as_str().unwrap_or(""), name);
            self.open_block(Block::Tool(up), &start, out);
        }
        if self.live_tool == Some(up) {
            if let (Some((Block::Tool(_), idx)), false) = (self.open, args.is_empty()) {
                out.push(delta(idx, "input_json_delta", "partial_json", args));
            }
            return;
        }
        // Another tool while one streams: keep it whole and emit it after.
        let pos = match self.held.iter().position(|h| h.upstream == up) {
            Some(p) => p,
            None => {
                self.held.push(PendingTool {
                    upstream: up,
                    ..PendingTool::default()
                });
                self.held.len() - 1
            }
        };
        let h = &mut self.held[pos];
        if let Some(id) = tc.id.as_str().filter(|i| !i.is_empty()) {
            h.id = id.to_string();
        }
        if let Some(n) = f.and_then(|f| f.name.as_str()).filter(|n| !n.is_empty()) {
            h.name = n.to_string();
        }
        h.args.push_str(args);
    }

    /// Closes the open block and emits held tools and text.
    fn flush_blocks(&mut self, out: &mut Vec<OutEvent>) {
        self.close(out);
        for h in std::mem::take(&mut self.held) {
            let idx = self.next_index;
            self.next_index += 1;
            let name = self.names.restore(&h.name);
            out.push(block_start(idx, &tool_use(&h.id, name)));
            if !h.args.is_empty() {
                out.push(delta(idx, "input_json_delta", "partial_json", &h.args));
            }
            out.push(block_stop(idx));
        }
        if !self.held_text.is_empty() {
            let t = std::mem::take(&mut self.held_text);
            self.live_tool = None;
            self.text(&t, out);
            self.close(out);
        }
    }

    fn end(&mut self, out: &mut Vec<OutEvent>) {
        if self.done || !self.started {
            return;
        }
        self.flush_blocks(out);
        let mut e = event("message_delta", 128);
        e.push_str(",\"delta\":{\"stop_reason\":\"");
        e.push_str(self.stop.unwrap_or("end_turn"));
        e.push_str("\",\"stop_sequence\":null},\"usage\":");
        match self.usage.take() {
            Some(u) => e.push_str(&u),
            None => e.push_str("{\"input_tokens\":0,\"output_tokens\":0}"),
        }
        e.push('}');
        out.push(OutEvent::new("message_delta", e));
        out.push(OutEvent::new(
            "message_stop",
            "{\"type\":\"message_stop\"}".to_string(),
        ));
        self.done = true;
    }

    fn start(&mut self, chunk: &Chunk<'_>, out: &mut Vec<OutEvent>) {
        self.started = true;
        let model = chunk.model.as_str().or(self.model.as_deref()).unwrap_or("");
        let mut e = event("message_start", 256);
        e.push_str(",\"message\":{\"id\":");
        push_str(&mut e, chunk.id.as_str().unwrap_or(""));
        e.push_str(",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
        push_str(&mut e, model);
        e.push_str(",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}");
        out.push(OutEvent::new("message_start", e));
    }

    fn error(&mut self, raw: &RawValue, out: &mut Vec<OutEvent>) {
        let e: Obj<ErrorBody<'_>> = serde_json::from_str(raw.get()).unwrap_or_default();
        let e = e.0.unwrap_or_default();
        let ty = e.kind.as_str().or(e.code.as_str()).unwrap_or("api_error");
        let mut s = event("error", 64);
        s.push_str(",\"error\":{\"type\":");
        push_str(&mut s, ty);
        s.push_str(",\"message\":");
        push_str(&mut s, e.message.as_str().unwrap_or(""));
        s.push_str("}}");
        out.push(OutEvent::new("error", s));
        self.done = true;
    }
}

/// `content_block_start` for block `idx` (`start`: the `content_block` JSON).
fn block_start(idx: u64, start: &str) -> OutEvent {
    let mut e = event("content_block_start", start.len() + 32);
    push_index(&mut e, idx);
    e.push_str(",\"content_block\":");
    e.push_str(start);
    e.push('}');
    OutEvent::new("content_block_start", e)
}

/// `content_block_stop` for block `idx`.
fn block_stop(idx: u64) -> OutEvent {
    let mut e = event("content_block_stop", 16);
    push_index(&mut e, idx);
    e.push('}');
    OutEvent::new("content_block_stop", e)
}

/// A `tool_use` content block.
fn tool_use(id: &str, name: &str) -> String {
    let mut s = String::with_capacity(id.len() + name.len() + 48);
    s.push_str("{\"type\":\"tool_use\",\"id\":");
    push_str(&mut s, id);
    s.push_str(",\"name\":");
    push_str(&mut s, name);
    s.push_str(",\"input\":{}}");
    s
}

/// `content_block_delta` of type `ty` carrying `text` in `field`.
fn delta(idx: u64, ty: &str, field: &str, text: &str) -> OutEvent {
    delta_with(idx, ty, field, text.len(), |e| push_str(e, text))
}

/// A text delta whose text is already JSON-escaped (copied from the upstream chunk).
fn delta_escaped(idx: u64, escaped: &str) -> OutEvent {
    delta_with(idx, "text_delta", "text", escaped.len(), |e| {
        e.push('"');
        e.push_str(escaped);
        e.push('"');
    })
}

fn delta_with(
    idx: u64,
    ty: &str,
    field: &str,
    len: usize,
    value: impl FnOnce(&mut String),
) -> OutEvent {
    let mut e = event("content_block_delta", len + 64);
    push_index(&mut e, idx);
    e.push_str(",\"delta\":{\"type\":\"");
    e.push_str(ty);
    e.push_str("\",\"");
    e.push_str(field);
    e.push_str("\":");
    value(&mut e);
    e.push_str("}}");
    OutEvent::new("content_block_delta", e)
}

impl StreamConverter for Stream {
    fn event(&mut self, kind: &str, data: &str, out: &mut Vec<OutEvent>) {
        let data = data.trim();
        if self.done || kind != "message" || data.is_empty() {
            return;
        }
        if data == "[DONE]" {
            self.end(out);
            return;
        }
        // The usual chunk, text only, once the message has started: its text is copied as it
        // is escaped (same event as the general path writes).
        if self.started
            && self.stop.is_none()
            && self.live_tool.is_none()
            && let Some(c) = self.shape.text_chunk(data)
        {
            if let Some(t) = c.text.filter(|t| !t.is_empty()) {
                let idx = self.open_block(Block::Text, TEXT_BLOCK, out);
                out.push(delta_escaped(idx, t));
            }
            return;
        }
        let Ok(Obj(Some(chunk))) = serde_json::from_str::<Obj<Chunk<'_>>>(data) else {
            return;
        };
        if let Some(e) = chunk.error {
            self.error(e, out);
            return;
        }
        if !self.started {
            self.start(&chunk, out);
        }
        if let Some(u) = &chunk.usage.0 {
            self.usage = Some(usage_json(u));
        }
        if self.stop.is_some() {
            // Finished: wait only for the usage that may follow the finish chunk.
            if self.usage.is_some() {
                self.end(out);
            }
            return;
        }
        let Some(Obj(Some(choice))) = chunk.choices.items.first() else {
            return;
        };
        if let Some(d) = &choice.delta.0 {
            if let Some(t) = d
                .reasoning_content
                .as_str()
                .or(d.reasoning.as_str())
                .filter(|t| !t.is_empty())
            {
                let idx = self.open_block(
                    Block::Thinking,
                    "{\"type\":\"thinking\",\"thinking\":\"\"}",
                    out,
                );
                out.push(delta(idx, "thinking_delta", "thinking", t));
            }
            if let Some(t) = d.content.as_str().filter(|t| !t.is_empty()) {
                if self.live_tool.is_some() {
                    self.held_text.push_str(t);
                } else {
                    self.text(t, out);
                }
            }
            for tc in d.tool_calls.items.iter().filter_map(|t| t.0.as_ref()) {
                self.tool_delta(tc, out);
            }
        }
        let finish = choice
            .finish_reason
            .as_str()
            .map(str::trim)
            .filter(|f| !f.is_empty() && *f != "null");
        if let Some(f) = finish {
            self.stop = Some(stop_reason(f));
            self.flush_blocks(out);
            if self.usage.is_some() {
                self.end(out);
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<OutEvent>) {
        self.end(out);
    }
}
