//! The data plane's one error type: who failed, the status it maps to, and its message,
//! rendered in one place in the protocol the client spoke (see `ferry_protocol::error`).

use crate::body::{Response, full};
use ferry_protocol::Protocol;
use ferry_protocol::error::error_body;
use http::{HeaderValue, StatusCode, header};

/// Which side of the exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culprit {
    Client,
    Upstream,
    Gateway,
}

/// A data-plane failure with its status.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub status: StatusCode,
    pub culprit: Culprit,
    pub message: String,
}

impl GatewayError {
    pub fn new(status: StatusCode, culprit: Culprit, message: impl Into<String>) -> Self {
        GatewayError {
            status,
            culprit,
            message: message.into(),
        }
    }

    pub fn client(status: StatusCode, message: impl Into<String>) -> Self {
        GatewayError::new(status, Culprit::Client, message)
    }

    pub fn upstream(status: StatusCode, message: impl Into<String>) -> Self {
        GatewayError::new(status, Culprit::Upstream, message)
    }

    pub fn gateway(status: StatusCode, message: impl Into<String>) -> Self {
        GatewayError::new(status, Culprit::Gateway, message)
    }

    /// The error as a response in the client's protocol (`None`: APISIX's `error_msg`).
    pub fn render(&self, proto: Option<Protocol>) -> Response {
        let mut r =
            http::Response::new(full(error_body(proto, self.status.as_u16(), &self.message)));
        *r.status_mut() = self.status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }

    /// APISIX's shape: `{"error_msg":"..."}`.
    pub fn into_response(self) -> Response {
        self.render(None)
    }
}
