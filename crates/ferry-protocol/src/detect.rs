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
    /// Google's Gemini API (`…/models/<model>:generateContent`; a client-side protocol).
    Gemini,
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
            Protocol::Gemini => "gemini",
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

    /// Whether `stream: true` in the body asks for a stream (embeddings never stream; a
    /// Gemini client asks by its path).
    pub fn can_stream(self) -> bool {
        !matches!(
            self,
            Protocol::OpenAiEmbeddings | Protocol::VertexPredict | Protocol::Gemini
        )
    }
}

/// A Gemini API call named by its path: the model and whether it streams
/// (`…/models/<model>:generateContent` or `:streamGenerateContent`, any prefix).
pub fn gemini_call(path: &str) -> Option<(String, bool)> {
    let (head, last) = path.rsplit_once('/')?;
    let (model, method) = last.rsplit_once(':')?;
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return None,
    };
    if !head.ends_with("/models") || model.is_empty() {
        return None;
    }
    let model = percent_decode(model);
    Some((model, stream))
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detects the client protocol: `/v1/messages` → Anthropic; `/v1/responses` with `input` →
/// Responses; `messages` array or object → chat; `input` → embeddings; any other non-empty
/// object or array → passthrough; else none.
pub fn detect(path: &str, body: &Value) -> Option<Protocol> {
    let obj = body.as_object();
    if path.ends_with("/v1/messages") && (obj.is_some() || body.is_array()) {
        return Some(Protocol::AnthropicMessages);
    }
    if gemini_call(path).is_some() {
        return Some(Protocol::Gemini);
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
    if gemini_call(path).is_some() {
        return Some(Protocol::Gemini);
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
    fn gemini_paths() {
        assert_eq!(
            gemini_call("/gemini/v1beta/models/gemini-2.5-flash:generateContent"),
            Some(("gemini-2.5-flash".into(), false))
        );
        assert_eq!(
            gemini_call(
                "/v1/projects/p/locations/l/publishers/google/models/g%2Dx:streamGenerateContent"
            ),
            Some(("g-x".into(), true))
        );
        assert_eq!(gemini_call("/v1/models/m:countTokens"), None);
        assert_eq!(gemini_call("/v1/chat/completions"), None);
        assert_eq!(gemini_call("/v1/models/:generateContent"), None);
        assert_eq!(
            detect("/v1/models/m:generateContent", &json!({"messages": []})),
            Some(Protocol::Gemini)
        );
        assert_eq!(Protocol::from_name("gemini"), None);
    }

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
