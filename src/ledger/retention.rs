//! Forgetting old rows in small steps, between batches, so ingestion never waits on a big
//! delete: request log rows past the log retention, rollups past theirs, and per-key window rows
//! whose windows ended long ago.

use std::time::Duration;

use super::rollups::{bucket_prefix, Granularity};

/// Rows deleted per step at most.
pub const STEP: usize = 2000;
/// Per-key window rows are kept this long after their window starts (the longest window is a
/// month; the rest is slack for reports).
const KEY_WINDOW_KEEP: u64 = 62 * 86_400;

#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    /// Request log rows older than this go; `None` keeps them.
    pub log: Option<Duration>,
    pub rollups: Option<Duration>,
}

/// Deletes up to `STEP` rows past retention; returns how many went.
pub fn step(store: &crate::store::Store, r: Retention, now: u64) -> Result<usize, sled::Error> {
    let mut deleted = 0;
    if let Some(keep) = r.log {
        let cutoff_ms = now.saturating_sub(keep.as_secs()) * 1000;
        let mut high = [0u8; 16];
        high[..8].copy_from_slice(&cutoff_ms.to_be_bytes());
        let old: Vec<sled::IVec> = store
            .requests
            .range(..high)
            .keys()
            .take(STEP)
            .collect::<Result<_, _>>()?;
        for k in &old {
            store.requests.remove(k)?;
        }
        deleted += old.len();
    }
    if let Some(keep) = r.rollups {
        let cutoff = now.saturating_sub(keep.as_secs());
        for g in [Granularity::Hour, Granularity::Day] {
            let from = bucket_prefix(g, 0);
            let to = bucket_prefix(g, cutoff - cutoff % g.secs());
            let old: Vec<sled::IVec> = store
                .rollups
                .range(from.as_bytes()..to.as_bytes())
                .keys()
                .take(STEP)
                .collect::<Result<_, _>>()?;
            for k in &old {
                store.rollups.remove(k)?;
            }
            deleted += old.len();
        }
    }
    Ok(deleted)
}

/// Deletes per-key window rows of windows that started over two months ago (a full scan of a
/// small tree; run rarely).
pub fn key_windows(store: &crate::store::Store, now: u64) -> Result<usize, sled::Error> {
    let mut old = Vec::new();
    for k in store.key_usage.iter().keys() {
        let k = k?;
        let start = String::from_utf8_lossy(&k)
            .split('/')
            .nth(2)
            .and_then(|s| s.parse::<u64>().ok());
        if start.is_some_and(|s| s + KEY_WINDOW_KEEP < now) {
            old.push(k);
        }
    }
    for k in &old {
        store.key_usage.remove(k)?;
    }
    Ok(old.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::rollups::{row_key, Dim};

    #[test]
    fn only_rows_past_their_age_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("data")).unwrap();
        let now = 400 * 86_400;
        let day_ms = 86_400_000u64;
        // Log rows at 100, 10 and 1 days old; retention 30 days.
        for (i, age) in [100u64, 10, 1].iter().enumerate() {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&(now * 1000 - age * day_ms).to_be_bytes());
            k[8..].copy_from_slice(&(i as u64).to_be_bytes());
            store.requests.insert(k, b"{}".as_slice()).unwrap();
        }
        // Rollups at 500 (before the epoch cut: saturates to 0), 200 and 5 days old.
        for age in [399u64, 200, 5] {
            let start = now - age * 86_400;
            for g in [Granularity::Hour, Granularity::Day] {
                store
                    .rollups
                    .insert(row_key(g, start, Dim::All, "*"), b"{}".as_slice())
                    .unwrap();
            }
        }
        store
            .key_usage
            .insert(
                format!("key_1/daily/{:010}/*", now - 70 * 86_400),
                b"{}".as_slice(),
            )
            .unwrap();
        store
            .key_usage
            .insert(
                format!("key_1/daily/{:010}/*", now - 86_400),
                b"{}".as_slice(),
            )
            .unwrap();
        let r = Retention {
            log: Some(Duration::from_secs(30 * 86_400)),
            rollups: Some(Duration::from_secs(100 * 86_400)),
        };
        assert_eq!(step(&store, r, now).unwrap(), 1 + 2 * 2);
        assert_eq!(store.requests.len(), 2);
        assert_eq!(store.rollups.len(), 2);
        assert_eq!(step(&store, r, now).unwrap(), 0, "nothing left to delete");
        assert_eq!(key_windows(&store, now).unwrap(), 1);
        assert_eq!(store.key_usage.len(), 1);
        // No retention keeps everything.
        assert_eq!(
            step(&store, Retention::default(), now + 1000 * 86_400).unwrap(),
            0
        );
    }
}
