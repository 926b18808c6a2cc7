//! APISIX's encryption at rest (`apisix.data_encryption`): AES-CBC with each keyring entry as
//! both key and IV, PKCS#7 padding, standard base64. Applied to the plugin fields APISIX lists
//! as secrets (`encrypt_fields`) and to SSL private keys, so Ferry and APISIX nodes can share
//! one etcd.

use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ferry_config::Kind;
use ferry_config::cluster::DataEncryption;
use serde_json::Value;

/// The keys, and whether plugin fields are encrypted (SSL keys always are, with a keyring).
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<Vec<u8>>,
    fields: bool,
}

/// The secret fields of a plugin's configuration, as APISIX's schemas list them;
/// `consumer`: the configuration sits on a consumer or credential.
fn encrypt_fields(plugin: &str, consumer: bool) -> &'static [&'static str] {
    const REDIS: &[&str] = &["redis_password", "sentinel_password"];
    match plugin {
        "ai-proxy" => &[
            "auth.header",
            "auth.query",
            "auth.gcp.service_account_json",
            "auth.aws.secret_access_key",
            "auth.aws.session_token",
        ],
        "ai-proxy-multi" => &[
            "instances.auth.header",
            "instances.auth.query",
            "instances.auth.gcp.service_account_json",
            "instances.auth.aws.secret_access_key",
            "instances.auth.aws.session_token",
            "semantic_opts.embeddings.auth.header",
            "semantic_opts.embeddings.auth.query",
        ],
        "key-auth" if consumer => &["key"],
        "kafka-logger" => &["brokers.sasl_config.password"],
        "http-logger" => &["auth_header"],
        "limit-count" | "ai-rate-limiting" => REDIS,
        "limit-conn" | "limit-req" => &["redis_password"],
        _ => &[],
    }
}

enum Op {
    Encrypt,
    Decrypt,
}

impl Keyring {
    pub fn new(conf: &DataEncryption) -> Keyring {
        Keyring {
            keys: conf
                .keyring
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .filter(|k| k.len() == 16 || k.len() == 32)
                .collect(),
            fields: conf.fields,
        }
    }

    /// `value` encrypted with the first key (`None` without a keyring).
    pub fn encrypt(&self, value: &str) -> Option<String> {
        let k = self.keys.first()?;
        let ct = match k.len() {
            16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(k, k)
                .ok()?
                .encrypt_padded_vec::<Pkcs7>(value.as_bytes()),
            _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(k, k)
                .ok()?
                .encrypt_padded_vec::<Pkcs7>(value.as_bytes()),
        };
        Some(STANDARD.encode(ct))
    }

    /// `value` decrypted by the first key that fits; `None` when none does (plaintext).
    pub fn decrypt(&self, value: &str) -> Option<String> {
        let ct = STANDARD.decode(value).ok()?;
        self.keys.iter().find_map(|k| {
            let pt = match k.len() {
                16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(k, k)
                    .ok()?
                    .decrypt_padded_vec::<Pkcs7>(&ct)
                    .ok()?,
                _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(k, k)
                    .ok()?
                    .decrypt_padded_vec::<Pkcs7>(&ct)
                    .ok()?,
            };
            String::from_utf8(pt).ok()
        })
    }

    /// Encrypts the secrets of a resource value about to be stored.
    pub fn seal(&self, kind: Kind, value: &mut Value) {
        self.walk(kind, value, Op::Encrypt);
    }

    /// Decrypts the secrets of a resource value read from etcd. A field that does not decrypt
    /// (written in plaintext by someone else) is kept as it is, as APISIX does.
    pub fn open(&self, kind: Kind, value: &mut Value) {
        self.walk(kind, value, Op::Decrypt);
    }

    fn walk(&self, kind: Kind, value: &mut Value, op: Op) {
        if self.keys.is_empty() {
            return;
        }
        if kind == Kind::Ssls {
            self.ssl_keys(value, &op);
            return;
        }
        if !self.fields {
            return;
        }
        let consumer = matches!(kind, Kind::Consumers | Kind::Credentials);
        let Some(plugins) = value.get_mut("plugins").and_then(Value::as_object_mut) else {
            return;
        };
        for (name, conf) in plugins.iter_mut() {
            for path in encrypt_fields(name, consumer) {
                self.field(conf, path, &op);
            }
        }
    }

    /// SSL private keys: only PEM text is encrypted; only non-PEM text is decrypted.
    fn ssl_keys(&self, value: &mut Value, op: &Op) {
        let one = |s: &mut Value| {
            let Some(text) = s.as_str() else { return };
            let pem = text.starts_with("---");
            let out = match op {
                Op::Encrypt if pem => self.encrypt(text),
                Op::Decrypt if !pem => self.decrypt(text),
                _ => None,
            };
            if let Some(o) = out {
                *s = Value::String(o);
            }
        };
        if let Some(k) = value.get_mut("key") {
            one(k);
        }
        if let Some(ks) = value.get_mut("keys").and_then(Value::as_array_mut) {
            ks.iter_mut().for_each(one);
        }
    }

    /// One dotted path: arrays met on the way are walked element by element; the leaf is a
    /// string, an array of strings or a map of strings.
    fn field(&self, conf: &mut Value, path: &str, op: &Op) {
        let (head, rest) = match path.split_once('.') {
            Some((h, r)) => (h, Some(r)),
            None => (path, None),
        };
        let Some(v) = conf.get_mut(head) else { return };
        match rest {
            Some(rest) => match v {
                Value::Array(items) => items.iter_mut().for_each(|i| self.field(i, rest, op)),
                Value::Object(_) => self.field(v, rest, op),
                _ => {}
            },
            None => match v {
                Value::String(_) => self.leaf(v, op),
                Value::Array(items) => items.iter_mut().for_each(|i| self.leaf(i, op)),
                Value::Object(m) => m.values_mut().for_each(|i| self.leaf(i, op)),
                _ => {}
            },
        }
    }

    fn leaf(&self, v: &mut Value, op: &Op) {
        let Some(text) = v.as_str() else { return };
        let out = match op {
            Op::Encrypt => self.encrypt(text),
            Op::Decrypt => self.decrypt(text),
        };
        if let Some(o) = out {
            *v = Value::String(o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ring() -> Keyring {
        Keyring::new(&DataEncryption::default())
    }

    #[test]
    fn matches_apisix_ciphertext() {
        // What APISIX stores for "Bearer sk-1" with its default keyring (openssl enc
        // -aes-128-cbc -K/-iv = hex of "qeddd145sfvddff3").
        let r = ring();
        let ct = r.encrypt("Bearer sk-1").unwrap();
        assert_eq!(ct, "+rqSD20LXXFOPT5InCZc7g==");
        assert_eq!(r.decrypt(&ct).as_deref(), Some("Bearer sk-1"));
        let second = Keyring::new(&DataEncryption {
            fields: true,
            keyring: vec!["edd1c9f0985e76a2".into()],
        });
        let old = second.encrypt("x").unwrap();
        assert_eq!(r.decrypt(&old).as_deref(), Some("x"), "later keys decrypt");
        assert_eq!(r.decrypt("plain text"), None);
    }

    #[test]
    fn seals_and_opens_the_secret_fields_only() {
        let r = ring();
        let plain = json!({"uri": "/x", "plugins": {
            "ai-proxy": {"provider": "openai", "auth": {"header": {"Authorization": "Bearer k"}, "query": {"key": "q"}}},
            "key-auth": {"header": "apikey"}
        }});
        let mut v = plain.clone();
        r.seal(Kind::Routes, &mut v);
        let h = v["plugins"]["ai-proxy"]["auth"]["header"]["Authorization"]
            .as_str()
            .unwrap();
        assert_ne!(h, "Bearer k");
        assert_eq!(v["plugins"]["ai-proxy"]["provider"], "openai");
        assert_eq!(v["plugins"]["key-auth"]["header"], "apikey");
        r.open(Kind::Routes, &mut v);
        assert_eq!(v, plain);
        let mut c = json!({"username": "u", "plugins": {"key-auth": {"key": "secret"}}});
        r.seal(Kind::Consumers, &mut c);
        assert_ne!(c["plugins"]["key-auth"]["key"], "secret");
        r.open(Kind::Consumers, &mut c);
        assert_eq!(c["plugins"]["key-auth"]["key"], "secret");
        let mut m = json!({"plugins": {"ai-proxy-multi": {"instances": [
            {"auth": {"header": {"a": "1"}}}, {"auth": {"header": {"a": "2"}}}]}}});
        r.seal(Kind::Routes, &mut m);
        assert_ne!(
            m["plugins"]["ai-proxy-multi"]["instances"][1]["auth"]["header"]["a"],
            "2"
        );
        r.open(Kind::Routes, &mut m);
        assert_eq!(
            m["plugins"]["ai-proxy-multi"]["instances"][1]["auth"]["header"]["a"],
            "2"
        );
    }

    #[test]
    fn ssl_keys_and_switches() {
        let r = ring();
        let mut s = json!({"cert": "---c", "key": "-----BEGIN PRIVATE KEY-----\nx", "keys": ["-----BEGIN k"]});
        r.seal(Kind::Ssls, &mut s);
        assert!(!s["key"].as_str().unwrap().starts_with("---"));
        r.open(Kind::Ssls, &mut s);
        assert_eq!(s["key"], "-----BEGIN PRIVATE KEY-----\nx");
        assert_eq!(s["keys"][0], "-----BEGIN k");
        let off = Keyring::new(&DataEncryption {
            fields: false,
            keyring: vec!["qeddd145sfvddff3".into()],
        });
        let mut v = json!({"plugins": {"http-logger": {"auth_header": "t"}}});
        off.seal(Kind::Routes, &mut v);
        assert_eq!(v["plugins"]["http-logger"]["auth_header"], "t");
    }
}
