//! Proxy API keys: who may use the pool, and within which limits.
//!
//! A key is `sk-clb-` + 32 random bytes (URL-safe base64); only its SHA-256 is stored. Records
//! change on the control thread (or in the offline CLI); workers read `KeysSnapshot` through an
//! `ArcSwap`, looking a presented key up by its hash. Each key's live counters (streams in flight,
//! requests this minute, usage per limit window) are shared atomics that survive republishing, so
//! every worker enforces the same numbers without asking anyone.

pub mod admission;
pub mod limits;
pub mod registry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use limits::{LimitKind, LimitRule, LimitWindow, WindowCounter};

pub const KEY_PREFIX: &str = "sk-clb-";
/// Characters of a key shown in lists (`sk-clb-` and 8 more).
const SHOWN_PREFIX: usize = 15;
/// The longest account id `allowed_accounts` takes (gateway ids are `acc_` and 12 hex digits).
const MAX_ACCOUNT_ID_LEN: usize = 100;

/// A stored key (never the key itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to recognise it in lists.
    pub prefix: String,
    /// SHA-256 of the key, hex.
    pub hash: String,
    pub created_at: u64,
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub revoked_at: Option<u64>,
    /// Set while the key is paused: refused like a revoked key, but it can be resumed.
    #[serde(default)]
    pub paused_at: Option<u64>,
    #[serde(flatten)]
    pub policy: KeyPolicy,
}

/// What a key may do; set at creation and changed by `keys update`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyPolicy {
    /// Token and cost budgets, all of which must hold.
    #[serde(default)]
    pub limits: Vec<LimitRule>,
    /// Models the key may use; empty: all.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// `reasoning.effort` values the key may ask for; empty: all. A request without an effort
    /// passes (the upstream's default applies).
    #[serde(default)]
    pub allowed_efforts: Vec<String>,
    /// Gateway account ids (`acc_…`) the key's requests may be served by; empty: the whole pool.
    /// An id the pool does not have matches nothing.
    #[serde(default)]
    pub allowed_accounts: Vec<String>,
    /// Streams the key may have open at once, over all workers.
    #[serde(default)]
    pub max_streams: Option<u32>,
    /// Requests the key may start per minute (UTC minute), over all workers.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
}

impl KeyPolicy {
    pub fn validate(&self) -> Result<(), String> {
        for r in &self.limits {
            r.validate()?;
        }
        let mut seen = std::collections::HashSet::new();
        for r in &self.limits {
            if !seen.insert((r.kind, r.window, r.model.clone())) {
                return Err(format!(
                    "two {} {} limits{}: keep one",
                    r.kind.as_str(),
                    r.window.as_str(),
                    r.model
                        .as_deref()
                        .map(|m| format!(" for {m}"))
                        .unwrap_or_default()
                ));
            }
        }
        if self.max_streams == Some(0) || self.requests_per_minute == Some(0) {
            return Err(
                "max_streams and requests_per_minute are at least 1 (omit for none)".into(),
            );
        }
        const EFFORTS: &[&str] = &["none", "minimal", "low", "medium", "high", "xhigh"];
        if let Some(e) = self
            .allowed_efforts
            .iter()
            .find(|e| !EFFORTS.contains(&e.as_str()))
        {
            return Err(format!(
                "unknown reasoning effort {e:?} (one of {})",
                EFFORTS.join(", ")
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for id in &self.allowed_accounts {
            if id.trim().is_empty() || id.trim() != id || id.len() > MAX_ACCOUNT_ID_LEN {
                return Err(format!(
                    "allowed_accounts holds account ids (acc_…, as `codex-lb accounts list` \
                     shows them) of 1 to {MAX_ACCOUNT_ID_LEN} characters, without spaces \
                     around them; got {id:?}"
                ));
            }
            if !ids.insert(id.as_str()) {
                return Err(format!("account {id} is listed twice in allowed_accounts"));
            }
        }
        Ok(())
    }
}

impl KeyRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    pub fn is_paused(&self) -> bool {
        self.paused_at.is_some()
    }

    /// `active`, `paused`, `expired` or `revoked`, as lists show it (the most final state wins).
    pub fn status(&self, now: u64) -> &'static str {
        if self.is_revoked() {
            "revoked"
        } else if self.is_expired(now) {
            "expired"
        } else if self.is_paused() {
            "paused"
        } else {
            "active"
        }
    }

    /// Gives the record a new secret, returned (shown once): a new hash and prefix, the same id,
    /// policy and usage. The old secret matches nothing from the next published snapshot on.
    pub fn rotate_secret(&mut self) -> String {
        let (key, hash, prefix) = new_secret();
        self.hash = hash;
        self.prefix = prefix;
        key
    }
}

/// A fresh secret: the key, its SHA-256 (hex) and the prefix lists show.
fn new_secret() -> (String, String, String) {
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    let key = format!("{KEY_PREFIX}{}", B64URL.encode(raw));
    let hash = hash_hex(&key);
    let prefix = key.chars().take(SHOWN_PREFIX).collect();
    (key, hash, prefix)
}

/// A new key: the secret (shown once) and its record.
pub fn generate(name: &str, now: u64) -> (String, KeyRecord) {
    let (key, hash, prefix) = new_secret();
    let record = KeyRecord {
        id: format!("key_{}", &hash[..12]),
        name: name.to_string(),
        prefix,
        hash,
        created_at: now,
        expires_at: None,
        revoked_at: None,
        paused_at: None,
        policy: KeyPolicy::default(),
    };
    (key, record)
}

pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub fn hash_hex(key: &str) -> String {
    hex::encode(hash(key))
}

/// A key as the workers see it, with its live counters.
#[derive(Debug)]
pub struct KeyView {
    pub id: Arc<str>,
    pub name: String,
    pub expires_at: Option<u64>,
    pub revoked: bool,
    /// Refused until resumed (`KeyRecord::paused_at`).
    pub paused: bool,
    pub policy: KeyPolicy,
    pub live: Arc<KeyLive>,
    /// One counter per rule of `policy.limits`, in that order; a rule that survives an update
    /// keeps its counter.
    pub counters: Vec<Arc<WindowCounter>>,
}

/// Counters every worker updates for one key; kept across snapshots by the control thread.
#[derive(Debug, Default)]
pub struct KeyLive {
    pub streams: AtomicU32,
    /// Requests started in the current UTC minute.
    pub minute: WindowCounter,
}

/// Holds one of a key's stream slots; released on drop.
pub struct StreamSlot(Arc<KeyLive>);

impl KeyLive {
    /// Takes a stream slot unless `cap` are taken.
    pub fn try_stream(self: &Arc<Self>, cap: Option<u32>) -> Option<StreamSlot> {
        let prev = self.streams.fetch_add(1, Ordering::AcqRel);
        if cap.is_some_and(|c| prev >= c) {
            self.streams.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(StreamSlot(Arc::clone(self)))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The published key set.
#[derive(Debug, Default)]
pub struct KeysSnapshot {
    pub by_hash: HashMap<[u8; 32], Arc<KeyView>>,
    /// Every proxy route needs a key.
    pub auth_required: bool,
    /// Key holders do not see the pool's `x-codex-*` quota headers.
    pub hide_quota_headers: bool,
}

impl KeysSnapshot {
    pub fn find(&self, key: &str) -> Option<&Arc<KeyView>> {
        self.by_hash.get(&hash(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_only_their_hash_is_kept() {
        let (k1, r1) = generate("alice", 10);
        let (k2, r2) = generate("alice", 10);
        assert_ne!(k1, k2);
        assert!(k1.starts_with(KEY_PREFIX) && k1.len() == 7 + 43, "{k1}");
        assert_eq!(r1.hash, hash_hex(&k1));
        assert!(!serde_json::to_string(&r1).unwrap().contains(&k1[7..]));
        assert_eq!(r1.prefix.len(), SHOWN_PREFIX);
        assert_ne!(r1.id, r2.id);
    }

    #[test]
    fn stream_slots_are_capped_and_released() {
        let live = Arc::new(KeyLive::default());
        let a = live.try_stream(Some(2)).unwrap();
        let _b = live.try_stream(Some(2)).unwrap();
        assert!(live.try_stream(Some(2)).is_none());
        drop(a);
        assert!(live.try_stream(Some(2)).is_some());
        assert!(live.try_stream(None).is_some());
    }

    #[test]
    fn policy_validation() {
        let mut p = KeyPolicy {
            allowed_efforts: vec!["low".into()],
            ..Default::default()
        };
        assert!(p.validate().is_ok());
        p.allowed_efforts.push("turbo".into());
        assert!(p.validate().unwrap_err().contains("turbo"));
        p.allowed_efforts.pop();
        let rule = LimitRule {
            kind: LimitKind::TotalTokens,
            window: LimitWindow::Daily,
            limit: 1000.0,
            model: None,
        };
        p.limits = vec![rule.clone(), rule];
        assert!(p.validate().unwrap_err().contains("keep one"));
        p.limits.pop();
        p.max_streams = Some(0);
        assert!(p.validate().is_err());
        p.max_streams = None;
        p.allowed_accounts = vec!["acc_0123456789ab".into(), "acc_ba9876543210".into()];
        assert!(p.validate().is_ok());
        for bad in ["", "  ", " acc_1", &"a".repeat(MAX_ACCOUNT_ID_LEN + 1)] {
            p.allowed_accounts = vec!["acc_1".into(), bad.into()];
            assert!(
                p.validate().unwrap_err().contains("account ids"),
                "{bad:?} passed"
            );
        }
        p.allowed_accounts = vec!["acc_1".into(), "a".repeat(MAX_ACCOUNT_ID_LEN)];
        assert!(p.validate().is_ok());
        p.allowed_accounts = vec!["acc_1".into(), "acc_1".into()];
        assert!(p.validate().unwrap_err().contains("twice"));
    }

    #[test]
    fn status_order_and_a_new_secret_keeps_the_key() {
        let (old, mut r) = generate("bob", 10);
        assert_eq!(r.status(20), "active");
        r.paused_at = Some(15);
        assert_eq!(r.status(20), "paused");
        r.expires_at = Some(18);
        assert_eq!(r.status(20), "expired", "expiry is more final than a pause");
        r.revoked_at = Some(19);
        assert_eq!(r.status(20), "revoked");

        let before = r.clone();
        let new = r.rotate_secret();
        assert!(new.starts_with(KEY_PREFIX) && new != old);
        assert_eq!(r.hash, hash_hex(&new));
        assert_ne!(r.hash, before.hash);
        assert!(new.starts_with(&r.prefix) && r.prefix != before.prefix);
        assert_eq!(
            KeyRecord {
                hash: before.hash.clone(),
                prefix: before.prefix.clone(),
                ..r
            },
            before,
            "only the secret changes"
        );
    }
}
