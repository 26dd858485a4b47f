//! A throwaway PKI for tests: one CA, server and client certificates issued by it, and rustls
//! configs that trust it. Everything uses the ring provider explicitly so a second provider in
//! the dependency tree can never make `ClientConfig::builder()` ambiguous.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority that lives for one test.
pub struct TestPki {
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate issued by a [`TestPki`], with its private key, in PEM and DER.
#[derive(Clone)]
pub struct IssuedCert {
    /// The leaf certificate followed by nothing else (the CA is the trust anchor).
    pub cert_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

impl IssuedCert {
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Writes `<dir>/<stem>.pem` and `<dir>/<stem>.key`, the shape `tls = { cert, key }` wants.
    pub fn write_to(&self, dir: &Path, stem: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert pem");
        std::fs::write(&key, &self.key_pem).expect("write key pem");
        (cert, key)
    }
}

pub fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params
            .distinguished_name
            .push(DnType::CommonName, "jitgate test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = params.self_signed(&ca_key).expect("self-sign ca");
        Self { ca_cert, ca_key }
    }

    pub fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_cert.der().clone()
    }

    /// A server certificate for `names` (DNS names or IP literals, e.g. "localhost", "127.0.0.1").
    pub fn issue_server(&self, names: &[&str]) -> IssuedCert {
        self.issue(
            names,
            names.first().copied().unwrap_or("server"),
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose subject common name is `common_name`.
    pub fn issue_client(&self, common_name: &str) -> IssuedCert {
        self.issue(&[], common_name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, names: &[&str], cn: &str, eku: ExtendedKeyUsagePurpose) -> IssuedCert {
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("sign leaf");
        IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).expect("add test CA");
        roots
    }

    /// A server config presenting `cert`, offering `alpn` (e.g. `[b"h2", b"http/1.1"]`).
    pub fn server_config(&self, cert: &IssuedCert, alpn: &[&[u8]]) -> ServerConfig {
        let mut config = ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert_der.clone()], cert.private_key())
            .expect("server cert");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A client config trusting only this CA. ALPN is left empty: hyper-rustls sets it.
    pub fn client_config(&self) -> ClientConfig {
        client_config_from_pem(&self.ca_pem(), None)
    }
}

/// A client config trusting the CA certificates in `ca_pem`, optionally presenting a client
/// certificate.
pub fn client_config_from_pem(ca_pem: &str, client_cert: Option<&IssuedCert>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM parses")).expect("add CA");
    }
    let builder = ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    match client_cert {
        None => builder.with_no_client_auth(),
        Some(c) => builder
            .with_client_auth_cert(vec![c.cert_der.clone()], c.private_key())
            .expect("client cert"),
    }
}
