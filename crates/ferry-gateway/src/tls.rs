//! Data-plane TLS: certificates from the `ssls` resources, chosen by the client's SNI as APISIX
//! does (exact names first, then `*.example.com` for exactly one more label, then `*`), taken
//! from the published snapshot at each handshake so a write applies without a restart; ALPN
//! offers HTTP/2 and HTTP/1.1.

use crate::server::Shared;
use ferry_config::store::Record;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The server certificates by name, compiled from the `ssls` resources.
#[derive(Default)]
pub struct SniTable {
    exact: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// `*.example.com` under `example.com`.
    wildcard: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// `*`: any name.
    any: Vec<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for SniTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniTable")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &self.wildcard.keys().collect::<Vec<_>>())
            .field("any", &self.any.len())
            .finish()
    }
}

/// A name as matched: lower-case, without a trailing dot.
fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl SniTable {
    /// Compiles the server certificates of `records` (the `ssls` ones with `status` 1);
    /// returns what could not be used, by resource.
    pub fn build<'a>(records: impl Iterator<Item = &'a Record>) -> (SniTable, Vec<String>) {
        let mut t = SniTable::default();
        let mut errors = Vec::new();
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let mut ids: Vec<&Record> = records.collect();
        ids.sort_by(|a, b| a.id.cmp(&b.id));
        for r in ids {
            let v = &r.value;
            if v.get("status").and_then(Value::as_i64) == Some(0)
                || v.get("type").and_then(Value::as_str) == Some("client")
            {
                continue;
            }
            let keys = match certified_keys(v, &provider) {
                Ok(k) => k,
                Err(e) => {
                    errors.push(format!("ssl {}: {e}", r.id));
                    continue;
                }
            };
            let names: Vec<String> = match (v.get("sni"), v.get("snis")) {
                (Some(Value::String(s)), _) => vec![s.clone()],
                (_, Some(Value::Array(a))) => a
                    .iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            };
            for n in names {
                let n = normal(&n);
                let slot = if n == "*" {
                    &mut t.any
                } else if let Some(parent) = n.strip_prefix("*.") {
                    t.wildcard.entry(parent.to_string()).or_default()
                } else {
                    t.exact.entry(n).or_default()
                };
                // The first resource (by id) that names it wins, as one name has one certificate.
                if slot.is_empty() {
                    slot.extend(keys.iter().cloned());
                }
            }
        }
        (t, errors)
    }

    /// True when no certificate is configured.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.is_empty()
    }

    /// The certificates for `name`: exact, then one-label wildcard, then `*`.
    pub fn find(&self, name: &str) -> Option<&[Arc<CertifiedKey>]> {
        let name = normal(name);
        if let Some(k) = self.exact.get(&name) {
            return Some(k);
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(k) = self.wildcard.get(parent)
        {
            return Some(k);
        }
        (!self.any.is_empty()).then_some(&self.any[..])
    }
}

/// `cert`/`key` and the extra `certs[]`/`keys[]` pairs of one resource.
fn certified_keys(v: &Value, provider: &CryptoProvider) -> Result<Vec<Arc<CertifiedKey>>, String> {
    let text = |x: &Value| x.as_str().map(String::from);
    let mut pairs = vec![(
        v.get("cert").and_then(text).ok_or("no cert")?,
        v.get("key").and_then(text).ok_or("no key")?,
    )];
    if let (Some(Value::Array(cs)), Some(Value::Array(ks))) = (v.get("certs"), v.get("keys")) {
        for (c, k) in cs.iter().zip(ks) {
            if let (Some(c), Some(k)) = (text(c), text(k)) {
                pairs.push((c, k));
            }
        }
    }
    pairs
        .iter()
        .enumerate()
        .map(|(i, (c, k))| {
            let chain = CertificateDer::pem_slice_iter(c.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("certificate {i}: {e}"))?;
            if chain.is_empty() {
                return Err(format!("certificate {i}: no PEM certificate"));
            }
            let key =
                PrivateKeyDer::from_pem_slice(k.as_bytes()).map_err(|e| format!("key {i}: {e}"))?;
            let ck = CertifiedKey::from_der(chain, key, provider)
                .map_err(|e| format!("certificate {i} and its key: {e}"))?;
            Ok(Arc::new(ck))
        })
        .collect()
}

/// Picks the certificate for each handshake from what the published snapshot holds now.
pub struct Resolver {
    shared: Arc<Shared>,
    /// The name used when the client sends none (`apisix.ssl.fallback_sni`).
    fallback_sni: Option<String>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("fallback_sni", &self.fallback_sni)
            .finish()
    }
}

impl Resolver {
    pub fn new(shared: Arc<Shared>, fallback_sni: Option<String>) -> Resolver {
        Resolver {
            shared,
            fallback_sni,
        }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()
            .map(String::from)
            .or_else(|| self.fallback_sni.clone());
        let Some(name) = name else {
            tracing::debug!("TLS handshake without SNI and no apisix.ssl.fallback_sni");
            return None;
        };
        let snap = self.shared.snapshot.load();
        let Some(keys) = snap.sni.find(&name) else {
            tracing::debug!("failed to match any SSL certificate by SNI: {name}");
            return None;
        };
        // Among one name's certificates (e.g. RSA and ECDSA), the first the client can verify.
        keys.iter()
            .find(|k| k.key.choose_scheme(hello.signature_schemes()).is_some())
            .or_else(|| keys.first())
            .cloned()
    }
}

/// TLS versions by APISIX's names (`TLSv1.2`, `TLSv1.3`); older ones are refused.
pub fn versions(
    names: &[String],
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let mut out = Vec::new();
    for n in names {
        match n.as_str() {
            "TLSv1.2" => out.push(&rustls::version::TLS12),
            "TLSv1.3" => out.push(&rustls::version::TLS13),
            "TLSv1" | "TLSv1.1" => {
                return Err(format!(
                    "apisix.ssl.ssl_protocols: {n} is not supported by Ferry (TLSv1.2 and TLSv1.3 are)"
                ));
            }
            other => {
                return Err(format!(
                    "apisix.ssl.ssl_protocols: unknown protocol {other}"
                ));
            }
        }
    }
    if out.is_empty() {
        return Err("apisix.ssl.ssl_protocols: no protocol".into());
    }
    Ok(out)
}

/// The server configuration: certificates by SNI from `resolver`, ALPN `h2` then `http/1.1`.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(id: &str, v: Value) -> Record {
        Record {
            kind: ferry_config::Kind::Ssls,
            id: id.into(),
            value: v,
            create_rev: 1,
            mod_rev: 1,
        }
    }

    fn pem(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn names_match_as_apisix_matches_them() {
        let (c1, k1) = pem(&["a.test"]);
        let (c2, k2) = pem(&["*.example.com"]);
        let records = [
            record("1", json!({"cert": c1, "key": k1, "snis": ["A.test."]})),
            record("2", json!({"cert": c2, "key": k2, "sni": "*.example.com"})),
            record(
                "3",
                json!({"cert": c1, "key": k1, "sni": "off.test", "status": 0}),
            ),
            record(
                "4",
                json!({"cert": "junk", "key": "junk", "sni": "bad.test"}),
            ),
        ];
        let (t, errors) = SniTable::build(records.iter());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("ssl 4:"), "{errors:?}");
        assert!(t.find("a.test").is_some());
        assert!(t.find("A.TEST.").is_some());
        assert!(t.find("www.example.com").is_some());
        assert!(
            t.find("example.com").is_none(),
            "a wildcard needs one more label"
        );
        assert!(
            t.find("b.www.example.com").is_none(),
            "exactly one more label"
        );
        assert!(t.find("off.test").is_none(), "status 0 is ignored");
        assert!(t.find("other.test").is_none());
        let (c3, k3) = pem(&["x"]);
        let (t, _) =
            SniTable::build([record("9", json!({"cert": c3, "key": k3, "sni": "*"}))].iter());
        assert!(t.find("anything.at.all").is_some());
    }

    #[test]
    fn protocol_names() {
        assert_eq!(
            versions(&["TLSv1.2".into(), "TLSv1.3".into()])
                .unwrap()
                .len(),
            2
        );
        assert!(
            versions(&["TLSv1.1".into()])
                .unwrap_err()
                .contains("not supported")
        );
        assert!(versions(&["SSLv3".into()]).is_err());
    }
}
