//! File writes that an interruption cannot leave half done, and the names of backups.
//!
//! A changed file is written whole to a temp file in its own directory, flushed to disk, then
//! renamed over the original (rename within a directory is atomic on POSIX file systems), and the
//! directory is flushed so the rename itself survives a crash. A reader sees the old bytes or the
//! new ones, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// Temp files carry this marker, so a leftover one is recognisable.
pub const TEMP_MARKER: &str = ".codex-lb-tmp";

/// Replaces `path` with `bytes` atomically, keeping the file's permission bits (new files get
/// `mode`).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mode = match fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => mode,
        Err(e) => return Err(e),
    };
    let tmp = dir.join(format!(
        ".{}.{}-{}{TEMP_MARKER}",
        name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&dir)
}

/// Copies `from` to `to` (creating `to`'s directories) and flushes the copy to disk.
pub fn copy_durable(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to)?;
    File::open(to)?.sync_all()
}

/// Writes a new file and flushes it (for backups and manifests in a fresh directory).
pub fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Flushes a directory's entries (renames, new files) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Now in UTC: a sortable stamp for file names (`20260521T101502.123Z`) and unix milliseconds.
pub fn timestamp() -> (String, u128) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ms = now.as_millis();
    let t = time::OffsetDateTime::from_unix_timestamp(now.as_secs() as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        ms % 1000
    );
    (stamp, ms)
}

/// Creates a new directory `base/<stamp>` (with `-2`, `-3`, … if that name is taken).
pub fn fresh_dir(base: &Path, stamp: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(base)?;
    for n in 1..1000 {
        let name = if n == 1 {
            stamp.to_string()
        } else {
            format!("{stamp}-{n}")
        };
        let dir = base.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("too many backups named {stamp} in {}", base.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&p, b"new", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file left behind");
    }

    #[test]
    fn fresh_dirs_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let a = fresh_dir(dir.path(), "20260101T000000.000Z").unwrap();
        let b = fresh_dir(dir.path(), "20260101T000000.000Z").unwrap();
        assert_ne!(a, b);
        assert!(b.ends_with("20260101T000000.000Z-2"));
    }

    #[test]
    fn stamps_sort_like_time() {
        let (s, ms) = timestamp();
        assert_eq!(s.len(), "20260521T101502.123Z".len(), "{s}");
        assert!(ms > 1_700_000_000_000);
    }
}
