//! APISIX's `request-id` plugin: keeps the client's `X-Request-Id` or generates one (uuid,
//! nanoid, range_id, ksuid), forwards it upstream, returns it to the client, and makes it
//! `$apisix_request_id`.

use ferry_core::ctx::{Ctx, RouteInfo};
use ferry_core::plugin::{Flow, Plugin, PluginFactory, parse_conf};
use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

const DEFAULT_CHARSET: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIjkmnpqrstuvwxyz0123456789";

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default = "default_header")]
    header_name: String,
    #[serde(default = "yes")]
    include_in_response: bool,
    #[serde(default)]
    algorithm: Algorithm,
    #[serde(default)]
    range_id: RangeId,
}

#[derive(Debug, Deserialize, Serialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Algorithm {
    #[default]
    Uuid,
    Nanoid,
    RangeId,
    Ksuid,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RangeId {
    #[serde(default = "default_len")]
    length: u32,
    #[serde(default = "default_charset")]
    char_set: String,
}

impl Default for RangeId {
    fn default() -> Self {
        RangeId {
            length: default_len(),
            char_set: default_charset(),
        }
    }
}

fn default_header() -> String {
    "X-Request-Id".into()
}
fn yes() -> bool {
    true
}
fn default_len() -> u32 {
    16
}
fn default_charset() -> String {
    DEFAULT_CHARSET.into()
}

impl Conf {
    fn validate(&self) -> Result<(), String> {
        if HeaderName::from_bytes(self.header_name.as_bytes()).is_err() {
            return Err(format!(
                "property \"header_name\" validation failed: \"{}\" is not a valid header name",
                self.header_name
            ));
        }
        if self.range_id.length < 6 {
            return Err(
                "property \"range_id.length\" validation failed: expected 6 or more".into(),
            );
        }
        if self.range_id.char_set.chars().count() < 6 {
            return Err(
                "property \"range_id.char_set\" validation failed: string too short, expected at least 6 characters"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Builds `request-id` instances.
pub struct Factory;

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "request-id"
    }

    fn priority(&self) -> i32 {
        12015
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "header_name": {"type": "string", "default": "X-Request-Id"},
                "include_in_response": {"type": "boolean", "default": true},
                "algorithm": {"type": "string", "enum": ["uuid", "nanoid", "range_id", "ksuid"], "default": "uuid"},
                "range_id": {"type": "object", "properties": {
                    "length": {"type": "integer", "minimum": 6, "default": 16},
                    "char_set": {"type": "string", "minLength": 6, "default": DEFAULT_CHARSET}
                }}
            }
        })
    }

    fn check(&self, conf: &Value) -> Result<Value, String> {
        let c: Conf = parse_conf(conf)?;
        c.validate()?;
        serde_json::to_value(&c).map_err(|e| e.to_string())
    }

    fn build(&self, conf: &Value, _route: &Arc<RouteInfo>) -> Result<Arc<dyn Plugin>, String> {
        let c: Conf = parse_conf(conf)?;
        c.validate()?;
        let header = HeaderName::from_bytes(c.header_name.as_bytes()).map_err(|e| e.to_string())?;
        Ok(Arc::new(RequestId {
            header,
            include_in_response: c.include_in_response,
            algorithm: c.algorithm,
            length: c.range_id.length as usize,
            charset: c.range_id.char_set.chars().collect(),
        }))
    }
}

struct RequestId {
    header: HeaderName,
    include_in_response: bool,
    algorithm: Algorithm,
    length: usize,
    charset: Vec<char>,
}

impl RequestId {
    fn generate(&self) -> String {
        match self.algorithm {
            Algorithm::Uuid => uuid::Uuid::new_v4().to_string(),
            Algorithm::Nanoid => {
                const ALPHABET: &[u8] =
                    b"_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
                let mut bytes = [0u8; 21];
                rand::fill(&mut bytes);
                bytes
                    .iter()
                    .map(|b| ALPHABET[(b & 63) as usize] as char)
                    .collect()
            }
            Algorithm::RangeId => (0..self.length)
                .map(|_| self.charset[rand::random_range(0..self.charset.len())])
                .collect(),
            Algorithm::Ksuid => ksuid(),
        }
    }
}

/// A KSUID: 4 bytes of seconds since 2014-05-13 and 16 random bytes, base62, 27 characters.
fn ksuid() -> String {
    const EPOCH: u64 = 1_400_000_000;
    const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut raw = [0u8; 20];
    raw[..4].copy_from_slice(&((secs.saturating_sub(EPOCH)) as u32).to_be_bytes());
    rand::fill(&mut raw[4..]);
    // Base62 of a 160-bit big-endian number, by repeated division.
    let mut digits = raw.to_vec();
    let mut out = Vec::with_capacity(27);
    while digits.iter().any(|&d| d != 0) {
        let mut rem = 0u32;
        for d in digits.iter_mut() {
            let acc = (rem << 8) | *d as u32;
            *d = (acc / 62) as u8;
            rem = acc % 62;
        }
        out.push(B62[rem as usize]);
    }
    while out.len() < 27 {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

impl Plugin for RequestId {
    fn rewrite(&self, ctx: &mut Ctx) -> Flow {
        let id = match ctx.headers.get(&self.header).and_then(|v| v.to_str().ok()) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => {
                let id = self.generate();
                if let Ok(v) = HeaderValue::from_str(&id) {
                    ctx.headers.insert(self.header.clone(), v);
                }
                id
            }
        };
        ctx.request_id = id;
        Flow::Continue
    }

    fn header_filter(&self, ctx: &mut Ctx, head: &mut http::response::Parts) {
        if self.include_in_response
            && !head.headers.contains_key(&self.header)
            && let Ok(v) = HeaderValue::from_str(&ctx.request_id)
        {
            head.headers.insert(self.header.clone(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(conf: Value) -> RequestId {
        let c: Conf = parse_conf(&conf).unwrap();
        RequestId {
            header: HeaderName::from_bytes(c.header_name.as_bytes()).unwrap(),
            include_in_response: c.include_in_response,
            algorithm: c.algorithm,
            length: c.range_id.length as usize,
            charset: c.range_id.char_set.chars().collect(),
        }
    }

    #[test]
    fn defaults_and_errors() {
        let v = Factory.check(&json!({})).unwrap();
        assert_eq!(v["header_name"], "X-Request-Id");
        assert_eq!(v["include_in_response"], true);
        assert_eq!(v["algorithm"], "uuid");
        let e = Factory
            .check(&json!({"algorithm": "snowflake"}))
            .unwrap_err();
        assert!(
            e.contains("property \"algorithm\" validation failed"),
            "{e}"
        );
        let e = Factory
            .check(&json!({"range_id": {"length": 2}}))
            .unwrap_err();
        assert!(e.contains("range_id.length"), "{e}");
        let e = Factory.check(&json!({"bogus": 1})).unwrap_err();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = Factory
            .check(&json!({"header_name": "bad header"}))
            .unwrap_err();
        assert!(e.contains("not a valid header name"), "{e}");
    }

    #[test]
    fn algorithms() {
        let u = build(json!({})).generate();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert_eq!(build(json!({"algorithm": "nanoid"})).generate().len(), 21);
        let r = build(
            json!({"algorithm": "range_id", "range_id": {"length": 10, "char_set": "abcdef"}}),
        )
        .generate();
        assert_eq!(r.len(), 10);
        assert!(r.bytes().all(|b| (b'a'..=b'f').contains(&b)));
        let k = build(json!({"algorithm": "ksuid"})).generate();
        assert_eq!(k.len(), 27);
        assert!(k.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
