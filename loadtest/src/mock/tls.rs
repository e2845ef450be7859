//! HTTPS for the mock: the certificate material ([`MockTls`]), a throwaway CA plus `localhost`
//! leaf generator ([`self_signed_localhost`]), and the rustls server config (ring provider only,
//! ALPN `http/1.1`) the accept loop wraps every connection in.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The only protocol the mock speaks; offered in ALPN so a client that insists on it gets it.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Certificate and key the mock serves HTTPS with.
#[derive(Clone, PartialEq, Eq)]
pub struct MockTls {
    /// PEM certificates, leaf first (intermediates or the CA may follow).
    pub cert_chain_pem: String,
    /// PEM private key of the leaf (PKCS#8, SEC1 or PKCS#1).
    pub key_pem: String,
}

impl fmt::Debug for MockTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockTls")
            .field("cert_chain_pem", &self.cert_chain_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl MockTls {
    /// The rustls server config: ring provider, safe default protocol versions, no client auth,
    /// ALPN `http/1.1`.
    pub(crate) fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let chain = CertificateDer::pem_slice_iter(self.cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("parsing the mock's certificate chain PEM: {e}"))?;
        if chain.is_empty() {
            anyhow::bail!("the mock's certificate chain PEM holds no certificate");
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| anyhow!("parsing the mock's private key PEM: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("rustls protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("the mock's certificate and key do not form a usable pair")?;
        cfg.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// A fresh CA and a leaf for DNS `localhost` and IP `127.0.0.1` signed by it.
///
/// Returns the leaf material for [`MockConfig::tls`](super::MockConfig::tls) (chain = leaf then
/// CA) and the CA certificate PEM a client must trust. Every call makes new keys.
pub fn self_signed_localhost() -> (MockTls, String) {
    try_self_signed_localhost().expect("rcgen generates a localhost certificate")
}

/// Process id, wall-clock nanoseconds and a per-process counter: unique enough for test CAs.
fn ca_tag() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}-{nanos}-{n}", std::process::id())
}

fn try_self_signed_localhost() -> Result<(MockTls, String), rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A distinct name per CA: a verifier then reports another mock's CA as an unknown issuer
    // instead of matching it by name and failing on the signature.
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("codex-lb mock-upstream test CA {}", ca_tag()),
    );
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = Issuer::new(ca_params, ca_key);

    let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()])?;
    leaf_params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &ca)?;

    let ca_pem = ca_cert.pem();
    let tls = MockTls {
        cert_chain_pem: format!("{}{}", leaf_cert.pem(), ca_pem),
        key_pem: leaf_key.serialize_pem(),
    };
    Ok((tls, ca_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_builds_a_server_config_with_http1_alpn() {
        let (tls, ca_pem) = self_signed_localhost();
        let cfg = tls.server_config().expect("server config");
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let chain: Vec<_> = CertificateDer::pem_slice_iter(tls.cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chain.len(), 2, "leaf then CA");
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
        assert_eq!(chain[1], ca);
        assert_ne!(chain[0], ca);
        assert!(!format!("{tls:?}").contains(&tls.key_pem));
    }

    #[test]
    fn garbage_pem_is_an_error() {
        let bad = MockTls {
            cert_chain_pem: "not a pem".into(),
            key_pem: "nope".into(),
        };
        assert!(bad.server_config().is_err());
        let (good, _) = self_signed_localhost();
        let (other, _) = self_signed_localhost();
        let mismatched = MockTls {
            cert_chain_pem: good.cert_chain_pem,
            key_pem: other.key_pem,
        };
        assert!(mismatched.server_config().is_err());
    }
}
