//! The data plane's one error type: who failed, and how it maps to a status and a JSON body.

use crate::body::{Response, full};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

/// Which side of the exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culprit {
    Client,
    Upstream,
    Gateway,
}

/// A data-plane failure rendered as `{"error_msg": "..."}` with its status.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub status: StatusCode,
    pub culprit: Culprit,
    pub message: String,
}

impl GatewayError {
    pub fn client(status: StatusCode, message: impl Into<String>) -> Self {
        GatewayError {
            status,
            culprit: Culprit::Client,
            message: message.into(),
        }
    }

    pub fn gateway(status: StatusCode, message: impl Into<String>) -> Self {
        GatewayError {
            status,
            culprit: Culprit::Gateway,
            message: message.into(),
        }
    }

    /// Renders APISIX's error shape: `{"error_msg":"..."}` and a newline.
    pub fn into_response(self) -> Response {
        json_response(
            self.status,
            &serde_json::json!({ "error_msg": self.message }),
        )
    }
}

/// A JSON body with its content type; bodies end with a newline as APISIX's do.
pub fn json_response(status: StatusCode, v: &serde_json::Value) -> Response {
    let mut text = v.to_string();
    text.push('\n');
    let mut r = http::Response::new(full(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
