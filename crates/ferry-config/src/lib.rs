//! Ferry's configuration layer: config.yaml, admin resources and their validation, route `vars`
//! expressions, and the stores that hold resources. Everything here except the stores is pure.

pub mod app;
pub mod cluster;
pub mod document;
pub mod expr;
pub mod limits;
pub mod resource;
mod resource_misc;
pub mod store;
pub mod template;
pub mod upstream;
pub mod var;

pub use app::AppConfig;
pub use expr::{Expr, VarSource};
pub use resource::{Kind, PluginCheckError, PluginChecker};
pub use var::{Builtin, LlmVar, Val, Var};
