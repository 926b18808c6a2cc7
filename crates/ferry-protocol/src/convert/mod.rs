//! Protocol converters, one module per (client, provider) pair, each with a request converter,
//! a response converter and a stream state machine fed one SSE event at a time. Converters
//! never invent data: ids and models come from the upstream, and state still held at the end
//! of a stream is flushed by `finish`.

pub mod anthropic_to_openai;
pub mod openai_to_anthropic;
mod tool_names;

pub use tool_names::ToolNames;

/// One outgoing SSE event: its `event:` name (or `message`) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutEvent {
    pub kind: &'static str,
    pub data: String,
}

impl OutEvent {
    pub fn new(kind: &'static str, data: String) -> OutEvent {
        OutEvent { kind, data }
    }

    /// Appends this event in SSE framing.
    pub fn encode(&self, out: &mut String) {
        crate::sse::encode(self.kind, &self.data, out);
    }
}

/// A stream converter: upstream events in, client events out.
pub trait StreamConverter: Send {
    /// Converts one upstream event (`kind` is its `event:` field, `message` when absent).
    fn event(&mut self, kind: &str, data: &str, out: &mut Vec<OutEvent>);
    /// The upstream ended (with or without its terminator): emit whatever is still owed.
    fn finish(&mut self, out: &mut Vec<OutEvent>);
}

/// A converted request: the body for the provider and what the response side needs.
#[derive(Debug, Clone)]
pub struct Converted {
    pub body: serde_json::Value,
    pub tool_names: ToolNames,
    /// The client asked for a stream.
    pub stream: bool,
    /// The client asked for usage in the stream (OpenAI `stream_options.include_usage`).
    pub include_usage: bool,
}
