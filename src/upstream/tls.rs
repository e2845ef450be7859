//! rustls client configuration for the upstream: webpki roots, TLS 1.2/1.3, ALPN http/1.1
//! (the relay speaks HTTP/1.1 and splices its chunked bodies).

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

pub fn client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
