//! Test certificates: a fresh CA and a leaf certificate for given host names, made at run time
//! so no key material lives in the repository.
#![allow(clippy::expect_used)]

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TestCa {
    /// The CA certificate, PEM, for clients to trust.
    pub ca_pem: String,
    /// The leaf certificate and its key, for the server.
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    /// The same leaf certificate and key as PEM (for APISIX `ssls` resources).
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(hosts: &[&str]) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Ferry test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key"))
            .expect("ca cert");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let leaf = CertificateParams::new(names)
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf cert");
        TestCa {
            ca_pem: ca.pem(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
            cert: leaf.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        }
    }

    /// A server configuration presenting the leaf certificate (HTTP/2 and HTTP/1.1 by ALPN).
    pub fn server_config(&self) -> std::sync::Arc<rustls::ServerConfig> {
        let mut sc = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_no_client_auth()
        .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
        .expect("tls cert");
        sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        std::sync::Arc::new(sc)
    }
}
