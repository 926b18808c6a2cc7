//! Error bodies in the protocol the client spoke: OpenAI's `{"error": {...}}`, Anthropic's
//! `{"type": "error", "error": {...}}`, Google's `{"error": {"code", "message", "status"}}`,
//! and APISIX's `{"error_msg": "..."}` for every other
//! client. Each body ends with a newline, as APISIX's do.

use crate::Protocol;
use serde_json::json;

/// The error `type` both OpenAI and Anthropic use for an HTTP status.
pub fn error_kind(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// The body of an error with `status` and `msg` for a client speaking `proto` (`None`: a
/// client whose protocol is not known, answered as APISIX answers).
pub fn error_body(proto: Option<Protocol>, status: u16, msg: &str) -> Vec<u8> {
    let kind = error_kind(status);
    let v = match proto {
        Some(Protocol::AnthropicMessages) => {
            json!({"type": "error", "error": {"type": kind, "message": msg}})
        }
        None | Some(Protocol::Passthrough) => json!({"error_msg": msg}),
        Some(Protocol::Gemini) => crate::convert::gemini_to_openai::error_body(status, msg),
        Some(_) => json!({"error": {"message": msg, "type": kind, "param": null, "code": null}}),
    };
    let mut out = v.to_string().into_bytes();
    out.push(b'\n');
    out
}

/// The event that tells a streaming client its answer broke off, in its protocol: Anthropic's
/// `event: error` (`api_error`), the Responses API's `event: error` (`server_error`), or an
/// OpenAI chat `data: {"error": ...}` chunk (`server_error`; what the official SDKs raise on).
/// Never a closing event that would claim a normal end.
pub fn stream_error_event(proto: Protocol, msg: &str) -> String {
    match proto {
        Protocol::AnthropicMessages => format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "error": {"type": "api_error", "message": msg}})
        ),
        Protocol::Gemini => format!(
            "data: {}\n\n",
            crate::convert::gemini_to_openai::error_body(502, msg)
        ),
        Protocol::OpenAiResponses => format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "code": "server_error", "message": msg, "param": null})
        ),
        _ => format!(
            "data: {}\n\n",
            json!({"error": {"message": msg, "type": "server_error", "param": null, "code": null}})
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_per_protocol() {
        let v =
            |p, s| -> serde_json::Value { serde_json::from_slice(&error_body(p, s, "m")).unwrap() };
        assert_eq!(v(None, 404), json!({"error_msg": "m"}));
        assert_eq!(
            v(Some(Protocol::Passthrough), 502),
            json!({"error_msg": "m"})
        );
        assert_eq!(
            v(Some(Protocol::AnthropicMessages), 429),
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "m"}})
        );
        assert_eq!(
            v(Some(Protocol::OpenAiChat), 504)["error"]["type"],
            "timeout_error"
        );
        assert_eq!(
            v(Some(Protocol::OpenAiChat), 400)["error"]["param"],
            serde_json::Value::Null
        );
        assert!(error_body(None, 500, "x").ends_with(b"}\n"));
        let a = stream_error_event(Protocol::AnthropicMessages, "cut");
        assert!(
            a.starts_with("event: error\ndata: {") && a.ends_with("}\n\n"),
            "{a}"
        );
        let o = stream_error_event(Protocol::OpenAiChat, "cut");
        let v: serde_json::Value =
            serde_json::from_str(o.trim().trim_start_matches("data: ")).unwrap();
        assert_eq!(v["error"]["message"], "cut");
        assert_eq!(v["error"]["type"], "server_error");
        let r = stream_error_event(Protocol::OpenAiResponses, "cut");
        assert!(
            r.starts_with("event: error\ndata: {\"code\":\"server_error\""),
            "{r}"
        );
    }
}
