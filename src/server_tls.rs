//! TLS termination for clients (rustls): the certificate chain and key from PEM files
//! (`--tls-cert`, `--tls-key`; ECDSA, Ed25519 or RSA keys), TLS 1.2 and 1.3, ALPN `http/1.1`.
//!
//! The files are watched: a change on disk, or SIGHUP, loads them again and new connections get
//! the new certificate while open ones keep theirs. A pair that fails to load is logged and the
//! old one stays. Workers only `load` the current configuration at each accept.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// How often the files are checked for a change.
const WATCH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, SEC1 or PKCS#1)")]
    NoKey { path: PathBuf },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

pub struct ServerTls {
    current: ArcSwap<ServerConfig>,
    cert: PathBuf,
    key: PathBuf,
    stamps: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
    hangup: Arc<AtomicBool>,
}

fn read(path: &Path) -> Result<Vec<u8>, ServerTlsError> {
    std::fs::read(path).map_err(|source| ServerTlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds a server configuration from a PEM chain (leaf first) and its key.
pub fn load_config(cert: &Path, key: &Path) -> Result<ServerConfig, ServerTlsError> {
    let chain_pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(ServerTlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| ServerTlsError::NoKey {
        path: key.to_path_buf(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ServerTlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| ServerTlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn stamp(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ServerTls {
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, ServerTlsError> {
        let cfg = load_config(cert, key)?;
        let hangup = Arc::new(AtomicBool::new(false));
        // SIGHUP asks for a reload; failing to register only loses that trigger.
        let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hangup));
        Ok(ServerTls {
            current: ArcSwap::from_pointee(cfg),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            stamps: std::sync::Mutex::new((stamp(cert), stamp(key))),
            hangup,
        })
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Loads the files again when they changed or SIGHUP came; true when a new pair is in use.
    pub fn reload_if_changed(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        let hup = self.hangup.swap(false, Ordering::AcqRel);
        let Ok(mut stamps) = self.stamps.lock() else {
            return false;
        };
        if !hup && *stamps == now {
            return false;
        }
        *stamps = now;
        match load_config(&self.cert, &self.key) {
            Ok(cfg) => {
                self.current.store(Arc::new(cfg));
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // A half-written pair is common while files are replaced: the next change retries.
                tracing::warn!(error = %e, "TLS certificate not reloaded; the previous one stays");
                false
            }
        }
    }

    /// Watches the files until `stop` says so (a thread of its own; blocking file reads).
    pub fn spawn_watcher(
        self: &Arc<Self>,
        stop: impl Fn() -> bool + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("codex-lb-tls".into())
            .spawn(move || {
                while !stop() {
                    std::thread::sleep(WATCH);
                    me.reload_if_changed();
                }
            })
    }
}
