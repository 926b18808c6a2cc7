//! Protocol converters, one module per (client, provider) pair, each with a request converter,
//! a response converter and a stream state machine fed one SSE event at a time. Converters
//! never invent data: ids and models come from the upstream, and state still held at the end
//! of a stream is flushed by `finish`.

pub mod anthropic_to_openai;
pub mod gemini_to_openai;
pub mod openai_to_anthropic;
mod tool_names;

/// A deterministic generator for the converters' property tests (xorshift).
#[cfg(test)]
mod test_rng {
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }
}
pub mod vertex_predict;

pub use tool_names::ToolNames;

use crate::Protocol;

/// A supported conversion: the client speaks one protocol, the provider another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    /// Anthropic Messages client, OpenAI Chat provider.
    AnthropicToOpenAi,
    /// OpenAI Chat client, Anthropic Messages provider.
    OpenAiToAnthropic,
    /// OpenAI embeddings client, Vertex AI `:predict` provider.
    EmbeddingsToVertex,
    /// Gemini API client, OpenAI Chat provider.
    GeminiToOpenAi,
}

/// Every converter: (client protocol, provider protocol, pair). A new pair is one row here and
/// one module.
const PAIRS: &[(Protocol, Protocol, Pair)] = &[
    (
        Protocol::AnthropicMessages,
        Protocol::OpenAiChat,
        Pair::AnthropicToOpenAi,
    ),
    (
        Protocol::OpenAiChat,
        Protocol::AnthropicMessages,
        Pair::OpenAiToAnthropic,
    ),
    (
        Protocol::OpenAiEmbeddings,
        Protocol::VertexPredict,
        Pair::EmbeddingsToVertex,
    ),
    (Protocol::Gemini, Protocol::OpenAiChat, Pair::GeminiToOpenAi),
];

/// The converter from `client` to one of the provider's protocols, if any.
pub fn find(
    client: Protocol,
    provider_speaks: impl Fn(Protocol) -> bool,
) -> Option<(Pair, Protocol)> {
    PAIRS
        .iter()
        .find(|(c, t, _)| *c == client && provider_speaks(*t))
        .map(|(_, t, p)| (*p, *t))
}

impl Pair {
    /// Converts the client's request body (`path`: the request's path, where a Gemini client
    /// names its model and method).
    pub fn request(self, body: &serde_json::Value, path: &str) -> Result<Converted, String> {
        match self {
            Pair::GeminiToOpenAi => {
                let (model, stream) =
                    crate::detect::gemini_call(path).ok_or("not a Gemini generateContent path")?;
                gemini_to_openai::request(
                    body,
                    gemini_to_openai::Call {
                        model: &model,
                        stream,
                    },
                )
            }
            Pair::AnthropicToOpenAi => anthropic_to_openai::request(body),
            Pair::OpenAiToAnthropic => openai_to_anthropic::request(body),
            Pair::EmbeddingsToVertex => Ok(Converted {
                body: vertex_predict::request(body)?,
                tool_names: ToolNames::default(),
                stream: false,
                include_usage: false,
                include_thoughts: false,
            }),
        }
    }

    /// Converts a complete provider response back; `model` is the configured model, if any.
    pub fn response(
        self,
        res: &serde_json::Value,
        conv: &Converted,
        model: Option<&str>,
    ) -> Result<serde_json::Value, String> {
        match self {
            Pair::AnthropicToOpenAi => anthropic_to_openai::response(res, &conv.tool_names, model),
            Pair::OpenAiToAnthropic => openai_to_anthropic::response(res),
            Pair::EmbeddingsToVertex => vertex_predict::response(res, model.unwrap_or("")),
            Pair::GeminiToOpenAi => gemini_to_openai::response(res, conv.include_thoughts),
        }
    }

    /// A stream converter for this request. OpenAI streams always end with the usage chunk
    /// (the gateway removes it when the client did not ask for it).
    pub fn stream(self, conv: &Converted, model: Option<String>) -> Box<dyn StreamConverter> {
        match self {
            Pair::AnthropicToOpenAi => Box::new(anthropic_to_openai::Stream::new(
                conv.tool_names.clone(),
                model,
            )),
            Pair::OpenAiToAnthropic => Box::new(openai_to_anthropic::Stream::new(true)),
            Pair::EmbeddingsToVertex => Box::new(Unstreamed),
            Pair::GeminiToOpenAi => Box::new(gemini_to_openai::Stream::new(conv.include_thoughts)),
        }
    }
}

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

/// The stream side of a pair whose provider never streams (`:predict`): nothing comes out.
struct Unstreamed;

impl StreamConverter for Unstreamed {
    fn event(&mut self, _kind: &str, _data: &str, _out: &mut Vec<OutEvent>) {}
    fn finish(&mut self, _out: &mut Vec<OutEvent>) {}
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
    /// The client wants reasoning back as thought parts (Gemini `includeThoughts`).
    pub include_thoughts: bool,
}
