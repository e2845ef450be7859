//! The audit log: who changed what through the admin API — key and account changes, settings,
//! sign-ins and their failures, password and TOTP changes. One row per change request with its
//! outcome, written by the ledger thread into its own sled tree and kept as long as the request
//! log. Bodies are never stored (they carry passwords, keys and auth.json files): the method, the
//! path (which names the key or account) and the status say what happened.

use serde::{Deserialize, Serialize};

/// Rows one listing returns at most.
pub const MAX_LIST: usize = 500;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub ts_ms: u64,
    /// `admin` / `viewer` (a dashboard session, with its short id), `cli` (the admin token),
    /// `local` (loopback with no password set) or `anonymous`.
    pub actor: String,
    pub client_ip: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The error code of a refused change.
    #[serde(default)]
    pub error_code: Option<String>,
}

/// Row key: time, then a sequence number, so rows sort by time and never collide.
pub fn row_key(ts_ms: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&ts_ms.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The newest `limit` rows, newest first.
pub fn list(tree: &sled::Tree, limit: usize) -> Result<Vec<AuditEntry>, sled::Error> {
    let mut out = Vec::new();
    for kv in tree.iter().rev() {
        let (_, v) = kv?;
        if let Ok(e) = serde_json::from_slice::<AuditEntry>(&v) {
            out.push(e);
        }
        if out.len() >= limit.clamp(1, MAX_LIST) {
            break;
        }
    }
    Ok(out)
}

/// Deletes up to `max` rows older than `cutoff_ms`; returns how many went.
pub fn prune(tree: &sled::Tree, cutoff_ms: u64, max: usize) -> Result<usize, sled::Error> {
    let old: Vec<sled::IVec> = tree
        .range(..row_key(cutoff_ms, 0))
        .keys()
        .take(max)
        .collect::<Result<_, _>>()?;
    for k in &old {
        tree.remove(k)?;
    }
    Ok(old.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_list_newest_first_and_old_ones_are_pruned() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let t = db.open_tree("audit").unwrap();
        for (i, ts) in [10u64, 20, 30].iter().enumerate() {
            let e = AuditEntry {
                ts_ms: *ts,
                path: format!("/api/keys/{i}"),
                ..Default::default()
            };
            t.insert(row_key(*ts, i as u64), serde_json::to_vec(&e).unwrap())
                .unwrap();
        }
        let l = list(&t, 2).unwrap();
        assert_eq!(l.iter().map(|e| e.ts_ms).collect::<Vec<_>>(), vec![30, 20]);
        assert_eq!(prune(&t, 25, 100).unwrap(), 2);
        assert_eq!(list(&t, 10).unwrap().len(), 1);
    }
}
