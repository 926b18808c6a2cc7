//! Client protocol detection from the request path and parsed body, in APISIX's order.

use serde_json::Value;

/// The wire protocols Ferry speaks with clients and providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    OpenAiChat,
    OpenAiResponses,
    OpenAiEmbeddings,
    AnthropicMessages,
    /// Vertex AI's `:predict` (a provider-side protocol: embeddings are converted to it).
    VertexPredict,
    /// Any other JSON body: forwarded to the client's path, method and query.
    Passthrough,
}

impl Protocol {
    /// APISIX's protocol names (also the keys of `override.request_body`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::OpenAiChat => "openai-chat",
            Protocol::OpenAiResponses => "openai-responses",
            Protocol::OpenAiEmbeddings => "openai-embeddings",
            Protocol::AnthropicMessages => "anthropic-messages",
            Protocol::VertexPredict => "vertex-predict",
            Protocol::Passthrough => "passthrough",
        }
    }

    pub fn from_name(s: &str) -> Option<Protocol> {
        [
            Protocol::OpenAiChat,
            Protocol::OpenAiResponses,
            Protocol::OpenAiEmbeddings,
            Protocol::AnthropicMessages,
            Protocol::VertexPredict,
            Protocol::Passthrough,
        ]
        .into_iter()
        .find(|p| p.name() == s)
    }

    /// Whether `stream: true` in the body asks for a stream (embeddings never stream).
    pub fn can_stream(self) -> bool {
        !matches!(self, Protocol::OpenAiEmbeddings | Protocol::VertexPredict)
    }
}

/// Detects the client protocol: `/v1/messages` → Anthropic; `/v1/responses` with `input` →
/// Responses; `messages` array or object → chat; `input` → embeddings; any other non-empty
/// object or array → passthrough; else none.
pub fn detect(path: &str, body: &Value) -> Option<Protocol> {
    let obj = body.as_object();
    if path.ends_with("/v1/messages") && (obj.is_some() || body.is_array()) {
        return Some(Protocol::AnthropicMessages);
    }
    let has = |k: &str| obj.and_then(|o| o.get(k)).is_some_and(|v| !v.is_null());
    if path.ends_with("/v1/responses") && has("input") {
        return Some(Protocol::OpenAiResponses);
    }
    if obj
        .and_then(|o| o.get("messages"))
        .is_some_and(|m| m.is_array() || m.is_object())
    {
        return Some(Protocol::OpenAiChat);
    }
    if has("input") {
        return Some(Protocol::OpenAiEmbeddings);
    }
    match body {
        Value::Object(o) if !o.is_empty() => Some(Protocol::Passthrough),
        Value::Array(a) if !a.is_empty() => Some(Protocol::Passthrough),
        _ => None,
    }
}

/// [`detect`] for a body read through [`crate::wire::RequestPeek`] (a JSON object).
pub fn detect_peek(path: &str, p: &crate::wire::RequestPeek<'_>) -> Option<Protocol> {
    use crate::wire::Shape;
    if path.ends_with("/v1/messages") {
        return Some(Protocol::AnthropicMessages);
    }
    if path.ends_with("/v1/responses") && p.input.is_present() {
        return Some(Protocol::OpenAiResponses);
    }
    if matches!(p.messages, Shape::Array | Shape::Object) {
        return Some(Protocol::OpenAiChat);
    }
    if p.input.is_present() {
        return Some(Protocol::OpenAiEmbeddings);
    }
    (p.fields > 0).then_some(Protocol::Passthrough)
}

/// `stream: true` (the JSON boolean only).
pub fn wants_stream(proto: Protocol, body: &Value) -> bool {
    proto.can_stream() && body.get("stream") == Some(&Value::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn detection_order() {
        use Protocol::*;
        let cases = [
            (
                "/v1/messages",
                json!({"messages": []}),
                Some(AnthropicMessages),
            ),
            ("/x/v1/messages", json!({}), Some(AnthropicMessages)),
            (
                "/v1/responses",
                json!({"input": "hi"}),
                Some(OpenAiResponses),
            ),
            ("/v1/responses", json!({"messages": []}), Some(OpenAiChat)),
            (
                "/anything",
                json!({"messages": [{"role": "user"}]}),
                Some(OpenAiChat),
            ),
            ("/anything", json!({"messages": "hi"}), Some(Passthrough)),
            (
                "/v1/embeddings",
                json!({"input": ["a"]}),
                Some(OpenAiEmbeddings),
            ),
            (
                "/anything",
                json!({"input": null, "x": 1}),
                Some(Passthrough),
            ),
            (
                "/v1/images/generations",
                json!({"prompt": "a cat", "model": "m"}),
                Some(Passthrough),
            ),
            ("/anything", json!([1]), Some(Passthrough)),
            ("/anything", json!({}), None),
            ("/anything", json!([]), None),
            ("/anything", json!("text"), None),
        ];
        for (path, body, want) in cases {
            assert_eq!(detect(path, &body), want, "{path} {body}");
        }
    }

    #[test]
    fn stream_flag() {
        assert!(wants_stream(Protocol::OpenAiChat, &json!({"stream": true})));
        assert!(!wants_stream(
            Protocol::OpenAiChat,
            &json!({"stream": "true"})
        ));
        assert!(!wants_stream(
            Protocol::OpenAiEmbeddings,
            &json!({"stream": true})
        ));
    }
}
