//! Where a consistent-hash key comes from (APISIX's `hash_on` + `key`), compiled once, and
//! the key of one request; shared by upstreams and `ai-proxy-multi`. A request without the
//! key hashes on the client address, as APISIX does.

use crate::ctx::Ctx;
use ferry_config::app::LogEscape;
use ferry_config::template::Template;
use ferry_config::upstream::HashOn;
use ferry_config::{Var, VarSource};

/// A compiled `hash_on` / `key`.
pub enum KeySource {
    Var(Var),
    Header(String),
    Cookie(String),
    /// The authenticated consumer's name.
    Consumer,
    Template(Template),
}

impl KeySource {
    pub fn compile(on: &HashOn) -> Result<KeySource, String> {
        Ok(match on {
            HashOn::Vars(v) => KeySource::Var(Var::parse(v)?),
            HashOn::Header(h) => KeySource::Header(h.to_ascii_lowercase()),
            HashOn::Cookie(c) => KeySource::Cookie(c.clone()),
            HashOn::Consumer => KeySource::Consumer,
            HashOn::VarsCombinations(t) => {
                KeySource::Template(Template::compile(t, LogEscape::None)?)
            }
        })
    }

    /// This request's key; the client address when the source has none.
    pub fn key(&self, ctx: &Ctx) -> Vec<u8> {
        let k = match self {
            KeySource::Var(v) => ctx.get(v).to_text().map(|t| t.into_owned()),
            KeySource::Header(h) => ctx.header_str(h).map(String::from),
            KeySource::Cookie(c) => ctx.cookie(c).map(String::from),
            KeySource::Consumer => ctx.consumer.as_ref().map(|c| c.consumer.username.clone()),
            KeySource::Template(t) => {
                let mut out = String::new();
                t.render(ctx, &mut out);
                Some(out).filter(|s| !s.is_empty())
            }
        };
        k.unwrap_or_else(|| ctx.remote_ip.to_string()).into_bytes()
    }
}
