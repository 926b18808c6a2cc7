//! Validation of the resources beyond routing: consumers and their credentials, consumer
//! groups, SSL certificates, global rules and plugin metadata, with APISIX's messages.

use crate::resource::{
    Kind, PLUGIN_SET_FIELDS, PluginChecker, Ref, check_host, check_plugin_map, common,
    nonempty_array, only, opt_plugins, opt_ref, opt_str, type_err,
};
use serde_json::{Map, Value};

const STAMPS: [&str; 2] = ["create_time", "update_time"];

pub(crate) fn validate(
    kind: Kind,
    obj: &Map<String, Value>,
    plugins: &dyn PluginChecker,
) -> Result<Vec<Ref>, String> {
    let mut refs = Vec::new();
    match kind {
        Kind::Consumers => {
            only(
                obj,
                &["username", "desc", "labels", "plugins", "group_id"]
                    .iter()
                    .chain(&STAMPS)
                    .copied()
                    .collect::<Vec<_>>(),
            )?;
            check_username(obj.get("username"))?;
            common(obj)?;
            consumer_plugins(obj, plugins)?;
            opt_ref(obj, "group_id", Kind::ConsumerGroups, &mut refs)?;
        }
        Kind::Credentials => {
            only(obj, PLUGIN_SET_FIELDS)?;
            common(obj)?;
            if let Some(p) = obj.get("plugins") {
                let m = p
                    .as_object()
                    .ok_or_else(|| type_err("plugins", "object", p))?;
                if m.len() > 1 {
                    return Err("invalid configuration: property \"plugins\" validation failed: expect object to have at most 1 properties".into());
                }
                if let Some(name) = m.keys().next() {
                    if !plugins.has(name) {
                        return Err(format!("unknown plugin {name}"));
                    }
                    if !plugins.is_auth(name) {
                        return Err("only supports auth type plugins in consumer credential".into());
                    }
                }
                consumer_plugins(obj, plugins)?;
            }
        }
        Kind::ConsumerGroups => {
            only(obj, PLUGIN_SET_FIELDS)?;
            common(obj)?;
            opt_plugins(obj, plugins, true)?;
        }
        Kind::GlobalRules => {
            only(obj, &["id", "plugins", "create_time", "update_time"])?;
            common(obj)?;
            opt_plugins(obj, plugins, true)?;
        }
        Kind::Ssls => validate_ssl(obj)?,
        Kind::PluginMetadata => {
            if let Some(f) = obj.get("log_format")
                && !f.is_object()
            {
                return Err(type_err("log_format", "object", f));
            }
        }
        Kind::Routes | Kind::Services | Kind::PluginConfigs | Kind::Upstreams => {
            return Err(format!(
                "{} are validated by resource::validate",
                kind.as_str()
            ));
        }
    }
    Ok(refs)
}

/// A consumer's or credential's `plugins`: auth plugins by their consumer-side schema.
fn consumer_plugins(obj: &Map<String, Value>, plugins: &dyn PluginChecker) -> Result<(), String> {
    match obj.get("plugins") {
        Some(Value::Object(p)) => check_plugin_map(p, plugins, true),
        Some(other) => Err(type_err("plugins", "object", other)),
        None => Ok(()),
    }
}

/// A consumer's `username`: `^[a-zA-Z0-9_\-]+$`, at most 256 characters.
pub fn valid_username(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_username(v: Option<&Value>) -> Result<(), String> {
    match v {
        None => Err("invalid configuration: property \"username\" is required".into()),
        Some(Value::String(s)) if valid_username(s) => Ok(()),
        Some(Value::String(s)) => Err(format!(
            "invalid configuration: property \"username\" validation failed: failed to match pattern \"^[a-zA-Z0-9_\\\\-]+$\" with \"{s}\""
        )),
        Some(other) => Err(type_err("username", "string", other)),
    }
}

fn validate_ssl(obj: &Map<String, Value>) -> Result<(), String> {
    only(
        obj,
        &[
            "id",
            "name",
            "desc",
            "labels",
            "type",
            "cert",
            "key",
            "sni",
            "snis",
            "certs",
            "keys",
            "client",
            "status",
            "ssl_protocols",
            "create_time",
            "update_time",
        ],
    )?;
    common(obj)?;
    let server = match obj.get("type").map(|t| t.as_str()) {
        None | Some(Some("server")) => true,
        Some(Some("client")) => false,
        Some(_) => {
            return Err("invalid configuration: property \"type\" validation failed: matches none of the enum values".into());
        }
    };
    let then = || "invalid configuration: then clause did not match".to_string();
    let (Some(cert), Some(key)) = (obj.get("cert"), obj.get("key")) else {
        return Err(then());
    };
    if server {
        match (obj.get("sni"), obj.get("snis")) {
            (Some(s), None) => check_host(s, "sni")?,
            (None, Some(s)) => {
                for (i, h) in nonempty_array(s, "snis")?.iter().enumerate() {
                    check_host(h, &format!("snis[{i}]"))?;
                }
            }
            _ => return Err(then()),
        }
    }
    check_pair(cert, key, "cert", "key")?;
    match (obj.get("certs"), obj.get("keys")) {
        (None, None) => {}
        (Some(Value::Array(cs)), Some(Value::Array(ks))) if cs.len() == ks.len() => {
            for (i, (c, k)) in cs.iter().zip(ks).enumerate() {
                check_pair(c, k, &format!("certs[{i}]"), &format!("keys[{i}]"))?;
            }
        }
        _ => {
            return Err(
                "invalid configuration: \"certs\" and \"keys\" must be arrays of the same length"
                    .into(),
            );
        }
    }
    if let Some(c) = obj.get("client") {
        let m = c
            .as_object()
            .ok_or_else(|| type_err("client", "object", c))?;
        only(m, &["ca", "depth", "skip_mtls_uri_regex"])
            .map_err(|e| e.replace("configuration: ", "configuration: property \"client\": "))?;
        let ca = m
            .get("ca")
            .ok_or("invalid configuration: property \"client.ca\" is required")?;
        let pem = ca
            .as_str()
            .ok_or_else(|| type_err("client.ca", "string", ca))?;
        certs(pem, "client.ca")?;
    }
    if let Some(s) = obj.get("status")
        && !matches!(s.as_i64(), Some(0 | 1))
    {
        return Err("invalid configuration: property \"status\" validation failed: matches none of the enum values".into());
    }
    if let Some(p) = obj.get("ssl_protocols") {
        let arr = p
            .as_array()
            .ok_or_else(|| type_err("ssl_protocols", "array", p))?;
        if !arr
            .iter()
            .all(|x| matches!(x.as_str(), Some("TLSv1.1" | "TLSv1.2" | "TLSv1.3")))
        {
            return Err("invalid configuration: property \"ssl_protocols\" validation failed: matches none of the enum values".into());
        }
    }
    Ok(())
}

fn certs(pem: &str, field: &str) -> Result<usize, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let n = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("failed to parse {field}: {e}"))?
        .len();
    if n == 0 {
        return Err(format!("failed to parse {field}: no PEM certificate found"));
    }
    Ok(n)
}

/// A certificate and its private key, both parseable PEM.
fn check_pair(cert: &Value, key: &Value, cf: &str, kf: &str) -> Result<(), String> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let c = cert.as_str().ok_or_else(|| type_err(cf, "string", cert))?;
    let k = key.as_str().ok_or_else(|| type_err(kf, "string", key))?;
    let mut obj = Map::new();
    obj.insert(cf.into(), Value::String(c.into()));
    opt_str(&obj, cf, 128, 64 * 1024)?;
    obj.insert(kf.into(), Value::String(k.into()));
    opt_str(&obj, kf, 64, 64 * 1024)?;
    certs(c, cf)?;
    PrivateKeyDer::from_pem_slice(k.as_bytes())
        .map_err(|e| format!("failed to parse {kf}: {e}"))?;
    Ok(())
}
