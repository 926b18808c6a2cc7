//! Typed LLM statistics of one request: what `ai-proxy` recorded (provider, models, tokens,
//! timings, tool use), read as they are by the access log (`$llm_*`), log entries and metrics.

use ferry_protocol::{Observed, Usage};

/// `$request_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RequestType {
    #[default]
    TraditionalHttp,
    AiChat,
    AiStream,
}

impl RequestType {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestType::TraditionalHttp => "traditional_http",
            RequestType::AiChat => "ai_chat",
            RequestType::AiStream => "ai_stream",
        }
    }
}

/// What one request spent and how the provider answered.
#[derive(Debug, Clone, Default)]
pub struct LlmStats {
    pub request_type: RequestType,
    /// The provider's name (`openai`, `anthropic`, …).
    pub provider: Option<&'static str>,
    /// The `ai-proxy-multi` instance that served, or the last one tried (`$balancer_ip`).
    pub instance: Option<std::sync::Arc<str>>,
    /// The model the client asked for (`$request_llm_model`).
    pub request_model: Option<String>,
    /// The model sent upstream: `options.model`, else the client's (`$llm_model`).
    pub model: Option<String>,
    pub stream: bool,
    pub usage: Option<Usage>,
    /// Milliseconds from sending upstream to the first byte (streams) or the whole answer.
    pub ttft_ms: Option<u64>,
    /// Milliseconds from sending upstream to the end of the answer.
    pub upstream_response_ms: Option<u64>,
    pub tool_count: u64,
    pub has_tool_calls: bool,
    pub end_user: Option<String>,
    /// The answer's text; set once the answer was observed.
    pub response_text: Option<String>,
}

impl LlmStats {
    /// True once `ai-proxy` took the request.
    pub fn is_ai(&self) -> bool {
        self.request_type != RequestType::TraditionalHttp
    }

    /// Takes what was observed in the answer (usage, tool calls, text).
    pub fn record(&mut self, o: Observed) {
        if o.usage.is_some() {
            self.usage = o.usage;
        }
        self.has_tool_calls = o.tool_calls;
        self.response_text = Some(o.text);
    }

    fn usage_field(&self, f: impl Fn(&Usage) -> u64) -> u64 {
        self.usage.as_ref().map_or(0, f)
    }

    pub fn prompt_tokens(&self) -> u64 {
        self.usage_field(|u| u.prompt)
    }

    pub fn completion_tokens(&self) -> u64 {
        self.usage_field(|u| u.completion)
    }

    pub fn total_tokens(&self) -> u64 {
        self.usage_field(|u| u.total)
    }

    pub fn cache_read_tokens(&self) -> u64 {
        self.usage_field(|u| u.cache_read)
    }

    pub fn cache_creation_tokens(&self) -> u64 {
        self.usage_field(|u| u.cache_creation)
    }

    pub fn reasoning_tokens(&self) -> u64 {
        self.usage_field(|u| u.reasoning)
    }
}
