//! Response body types every plugin and the server share.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type every response of the data plane uses.
pub type GwBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
pub type Response = http::Response<GwBody>;

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> GwBody {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> GwBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}
