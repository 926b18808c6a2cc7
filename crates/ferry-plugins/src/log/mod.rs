//! Log entries in APISIX's shape and the logger plugins that ship them: a shared batch
//! processor, `http-logger` and `file-logger`.

pub mod batch;
pub mod entry;
mod json;
