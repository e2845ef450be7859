//! Key records in the store (`api_keys` tree, by key id). Called by the control thread while a
//! gateway runs, and by the `keys` CLI when no gateway holds the data dir.

use super::KeyRecord;
use crate::store::Store;

pub fn put(store: &Store, record: &KeyRecord) -> Result<(), sled::Error> {
    store.api_keys.insert(
        record.id.as_bytes(),
        serde_json::to_vec(record).unwrap_or_default(),
    )?;
    store.api_keys.flush()?;
    Ok(())
}

pub fn get(store: &Store, id: &str) -> Result<Option<KeyRecord>, sled::Error> {
    Ok(store
        .api_keys
        .get(id.as_bytes())?
        .and_then(|v| serde_json::from_slice(&v).ok()))
}

/// Every readable record, oldest first. An unreadable row is skipped and logged, so one bad row
/// cannot lock every key holder out.
pub fn load_all(store: &Store) -> Result<Vec<KeyRecord>, sled::Error> {
    let mut out = Vec::new();
    for kv in store.api_keys.iter() {
        let (k, v) = kv?;
        match serde_json::from_slice::<KeyRecord>(&v) {
            Ok(r) => out.push(r),
            Err(e) => {
                tracing::error!(key = %String::from_utf8_lossy(&k), error = %e, "unreadable API key record skipped")
            }
        }
    }
    out.sort_by_key(|r| r.created_at);
    Ok(out)
}
