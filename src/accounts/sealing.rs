//! Secrets at rest: account tokens are sealed with ChaCha20-Poly1305 under a key file in the data
//! dir (mode 0600), so a copied database alone does not leak tokens.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use thiserror::Error;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

#[derive(Debug, Error)]
pub enum SealError {
    #[error("cannot read or create key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {0} is not {KEY_LEN} bytes")]
    BadKey(PathBuf),
    #[error("sealed value is corrupt or was sealed with another key")]
    Open,
}

#[derive(Clone)]
pub struct Sealer {
    cipher: Arc<ChaCha20Poly1305>,
    /// The key file did not exist and was made by this process.
    pub created: bool,
}

impl Sealer {
    pub fn load_or_create(path: &Path) -> Result<Sealer, SealError> {
        let io_err = |source| SealError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        let mut created = false;
        let key_bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = ChaCha20Poly1305::generate_key(&mut OsRng);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io_err)?;
                f.write_all(key.as_slice()).map_err(io_err)?;
                f.sync_all().map_err(io_err)?;
                created = true;
                key.to_vec()
            }
            Err(e) => return Err(io_err(e)),
        };
        if key_bytes.len() != KEY_LEN {
            return Err(SealError::BadKey(path.to_path_buf()));
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key_bytes));
        Ok(Sealer {
            cipher: Arc::new(cipher),
            created,
        })
    }

    /// Seals `plain` into base64 text: nonce followed by ciphertext and tag.
    pub fn seal(&self, plain: &[u8]) -> String {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption with a fresh nonce and an in-memory buffer cannot fail.
        let ct = self.cipher.encrypt(&nonce, plain).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        B64.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError> {
        let raw = B64.decode(sealed).map_err(|_| SealError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_key_persistence() {
        let dir = std::env::temp_dir().join(format!("codex-lb-seal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret.key");
        let a = Sealer::load_or_create(&path).unwrap();
        let sealed = a.seal(b"rt_secret");
        assert!(!sealed.contains("rt_secret"));
        let b = Sealer::load_or_create(&path).unwrap();
        assert_eq!(b.open(&sealed).unwrap(), b"rt_secret");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut tampered = sealed.clone().into_bytes();
        tampered[20] = if tampered[20] == b'A' { b'B' } else { b'A' };
        assert!(b.open(std::str::from_utf8(&tampered).unwrap()).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
