//! Account records in the store: import (upsert), list, remove. Called by the control thread while
//! a gateway runs, and directly by the `accounts` CLI when no gateway holds the data dir.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::auth_file::{parse_auth_json, AuthFileError};
use super::{now_unix, AccountRecord, AccountStatus, Tokens};
use crate::store::Store;

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("invalid auth.json: {0}")]
    AuthFile(#[from] AuthFileError),
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored account {0} is unreadable: {1}")]
    Corrupt(String, String),
}

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    record: AccountRecord,
    /// `Tokens` as JSON, sealed.
    sealed_tokens: String,
}

/// Stable id of an account seat: the same workspace and user always map to the same id, so
/// re-importing a refreshed auth.json updates the account instead of adding a twin.
pub fn account_id(chatgpt_account_id: &str, user_id: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(chatgpt_account_id.as_bytes());
    h.update(b"\n");
    h.update(user_id.unwrap_or_default().as_bytes());
    format!("acc_{}", &hex::encode(h.finalize())[..12])
}

/// Imports (or updates) an account from an auth.json body. Returns the record and whether it is new.
pub fn import(store: &Store, body: &[u8]) -> Result<(AccountRecord, Tokens, bool), RegistryError> {
    let auth = parse_auth_json(body)?;
    let id = account_id(&auth.chatgpt_account_id, auth.user_id.as_deref());
    let now = now_unix();
    // Only the record is carried over, so an account whose old tokens are unreadable (key file
    // lost) is repaired by importing it again.
    let existing = get(store, &id)?;
    let record = AccountRecord {
        id: id.clone(),
        chatgpt_account_id: auth.chatgpt_account_id,
        user_id: auth.user_id,
        email: auth.email,
        plan: auth.plan,
        status: AccountStatus::Active,
        added_at: existing.as_ref().map_or(now, |(r, _)| r.added_at),
        updated_at: now,
        access_expires_at: auth.access_expires_at,
        last_refresh: auth.last_refresh,
        // A fresh file is a fresh sign-in; the owner's routing choices survive a re-import.
        last_refresh_at: Some(now),
        priority: existing
            .as_ref()
            .map(|(r, _)| r.priority)
            .unwrap_or_default(),
        cap_primary_percent: existing.as_ref().and_then(|(r, _)| r.cap_primary_percent),
        cap_secondary_percent: existing.as_ref().and_then(|(r, _)| r.cap_secondary_percent),
        requests_per_minute: existing.as_ref().and_then(|(r, _)| r.requests_per_minute),
        status_reason: None,
    };
    let tokens = Tokens {
        access_token: auth.access_token,
        refresh_token: auth.refresh_token,
        id_token: auth.id_token,
    };
    put(store, &record, &tokens)?;
    store.accounts.flush()?;
    Ok((record, tokens, existing.is_none()))
}

pub fn put(store: &Store, record: &AccountRecord, tokens: &Tokens) -> Result<(), RegistryError> {
    let sealed_tokens = store
        .sealer
        .seal(&serde_json::to_vec(tokens).unwrap_or_default());
    let stored = StoredAccount {
        record: record.clone(),
        sealed_tokens,
    };
    store.accounts.insert(
        record.id.as_bytes(),
        serde_json::to_vec(&stored).unwrap_or_default(),
    )?;
    Ok(())
}

pub fn get(store: &Store, id: &str) -> Result<Option<(AccountRecord, Tokens)>, RegistryError> {
    store
        .accounts
        .get(id.as_bytes())?
        .map(|v| decode(store, id, &v))
        .transpose()
}

pub fn load_all(store: &Store) -> Result<Vec<(AccountRecord, Tokens)>, RegistryError> {
    let mut out = Vec::new();
    for kv in store.accounts.iter() {
        let (k, v) = kv?;
        out.push(decode(store, &String::from_utf8_lossy(&k), &v)?);
    }
    Ok(out)
}

/// The ids of the stored accounts, without opening their tokens.
pub fn ids(store: &Store) -> Result<Vec<String>, RegistryError> {
    store
        .accounts
        .iter()
        .keys()
        .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
        .collect()
}

pub fn remove(store: &Store, id: &str) -> Result<bool, RegistryError> {
    let existed = store.accounts.remove(id.as_bytes())?.is_some();
    store.accounts.flush()?;
    Ok(existed)
}

/// Why an account whose sealed tokens cannot be opened is out of rotation.
pub const UNREADABLE_TOKENS: &str = "its tokens cannot be decrypted with this data dir's \
secret.key (was the key file lost or replaced?): sign in again (`codex-lb accounts login`) or \
re-import its auth.json";

/// Decodes a stored account. Tokens that do not open (another key) leave the record readable,
/// marked `reauth_required` with empty tokens, so the owner sees which accounts to sign in again.
fn decode(store: &Store, id: &str, v: &[u8]) -> Result<(AccountRecord, Tokens), RegistryError> {
    let corrupt = |e: String| RegistryError::Corrupt(id.to_string(), e);
    let stored: StoredAccount = serde_json::from_slice(v).map_err(|e| corrupt(e.to_string()))?;
    let Ok(plain) = store.sealer.open(&stored.sealed_tokens) else {
        let mut record = stored.record;
        record.status = AccountStatus::ReauthRequired;
        record.status_reason = Some(UNREADABLE_TOKENS.into());
        let none = Tokens {
            access_token: String::new(),
            refresh_token: String::new(),
            id_token: String::new(),
        };
        return Ok((record, none));
    };
    let tokens: Tokens = serde_json::from_slice(&plain).map_err(|e| corrupt(e.to_string()))?;
    Ok((stored.record, tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_seat() {
        assert_eq!(account_id("a", Some("u")), account_id("a", Some("u")));
        assert_ne!(account_id("a", Some("u")), account_id("a", Some("v")));
        assert!(account_id("a", None).starts_with("acc_"));
        assert_eq!(account_id("a", None).len(), 16);
    }
}
