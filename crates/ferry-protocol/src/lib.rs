//! Ferry's protocol layer: pure functions over bytes and JSON, no I/O. Protocol detection,
//! SSE decoding and encoding, request-body shaping, and what is observed in responses.

pub mod convert;
pub mod detect;
pub mod error;
pub mod json_out;
pub mod observe;
pub mod observe_stream;
pub mod shape;
pub mod sse;
pub mod text_chunk;
pub mod wire;

pub use detect::Protocol;
pub use observe::{Observed, Usage};
