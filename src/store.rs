//! The data dir: one sled database and the secret key beside it.
//!
//! Opened once per process, before any worker starts. The trees are handed to their owners: the
//! control thread gets `accounts`, the ledger thread gets `requests` and `usage_totals`. Workers
//! never hold a tree (a sled call may block on IO).

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::accounts::sealing::{SealError, Sealer};

/// Bumped when a stored shape changes; `open` migrates older stores forward.
pub const SCHEMA_VERSION: u64 = 1;
const SCHEMA_KEY: &[u8] = b"schema_version";
/// sled's page cache. Its default (1 GiB) lets a long request log grow the process to that size;
/// the gateway reads mostly the newest rows, so a small cache serves it.
const SLED_CACHE_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("data dir {0} is in use by another codex-lb process")]
    Locked(PathBuf),
    #[error("cannot create data dir {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error(
        "data dir {path} has schema version {found}, newer than this build ({SCHEMA_VERSION})"
    )]
    NewerSchema { path: PathBuf, found: u64 },
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(
        "{path} is open to other users (mode {mode:o}) but holds account tokens and their key: \
         run `chmod go-rwx {path}`, or pass --allow-open-data-dir if that is on purpose"
    )]
    LoosePermissions { path: PathBuf, mode: u32 },
}

#[derive(Clone)]
pub struct Store {
    pub db: sled::Db,
    pub accounts: sled::Tree,
    pub requests: sled::Tree,
    pub usage_totals: sled::Tree,
    /// Run-time settings the owner changed (strategy), and the last known quota per account.
    pub settings: sled::Tree,
    /// Proxy API keys by id (hashes only).
    pub api_keys: sled::Tree,
    /// Per-key usage per limit window, written by the ledger.
    pub key_usage: sled::Tree,
    /// Hourly and daily sums of the request log (see `ledger::rollups`).
    pub rollups: sled::Tree,
    /// Admin-API changes (see `ledger::audit`).
    pub audit: sled::Tree,
    pub sealer: Sealer,
    pub dir: PathBuf,
}

impl Store {
    /// Opens the data dir, waiting up to `wait` for a previous holder to let go (sled releases
    /// its lock from a background thread shortly after the last handle is dropped, so a restart
    /// right after a stop can find it still held).
    pub fn open_waiting(
        dir: &Path,
        wait: std::time::Duration,
        allow_open: bool,
    ) -> Result<Store, StoreError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Self::open_with(dir, allow_open) {
                Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// Opens the data dir; `Locked` at once when another handle holds it.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(dir, false)
    }

    /// Opens the data dir; a dir or key file that other users can read is refused unless
    /// `allow_open` (the data dir holds sealed tokens and the key that opens them).
    pub fn open_with(dir: &Path, allow_open: bool) -> Result<Store, StoreError> {
        if !allow_open {
            for path in [dir.to_path_buf(), dir.join("secret.key")] {
                check_private(&path)?;
            }
        }
        let existed = dir.exists();
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        if !existed {
            restrict_dir(dir);
        }
        let db = match sled::Config::new()
            .path(dir.join("db"))
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(SLED_CACHE_BYTES)
            .open()
        {
            Ok(db) => db,
            Err(sled::Error::Io(e)) if is_lock_error(&e) => {
                return Err(StoreError::Locked(dir.to_path_buf()))
            }
            Err(e) => return Err(e.into()),
        };
        let meta = db.open_tree("meta")?;
        let found = meta
            .get(SCHEMA_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes);
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    path: dir.to_path_buf(),
                    found: v,
                });
            }
            // Version 1 is the first shape: nothing to migrate yet. Later versions add steps here.
            _ => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            }
        }
        let sealer = Sealer::load_or_create(&dir.join("secret.key"))?;
        let accounts = db.open_tree("accounts")?;
        if sealer.created && !accounts.is_empty() {
            tracing::error!(
                dir = %dir.display(),
                accounts = accounts.len(),
                "secret.key was missing and a new one was made: the stored accounts' tokens cannot \
                 be decrypted. They are marked reauth_required; sign them in again or re-import \
                 their auth.json (or stop, and put the old secret.key back)"
            );
        }
        Ok(Store {
            accounts,
            requests: db.open_tree("requests")?,
            usage_totals: db.open_tree("usage_totals")?,
            settings: db.open_tree("settings")?,
            api_keys: db.open_tree("api_keys")?,
            key_usage: db.open_tree("key_usage")?,
            rollups: db.open_tree("rollups")?,
            audit: db.open_tree("audit")?,
            sealer,
            db,
            dir: dir.to_path_buf(),
        })
    }
}

fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
        || e.raw_os_error() == Some(libc::EWOULDBLOCK)
        || e.to_string().contains("lock")
}

/// Refuses an existing file or dir whose mode lets group or others in.
fn check_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => Err(StoreError::LoosePermissions {
            path: path.to_path_buf(),
            mode: m.permissions().mode() & 0o777,
        }),
        _ => Ok(()),
    }
}

fn restrict_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // The dir holds tokens (sealed) and the key that opens them: owner only.
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}
