//! The control thread's keeper of proxy API keys: creates, updates, pauses, regenerates and
//! revokes records, and publishes the snapshot workers authenticate with. A change is published
//! at once, so a revocation, a pause or a replaced secret reaches every worker with its next
//! request.

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use crate::accounts::now_unix;
use crate::keys::{
    self, registry, KeyLive, KeyPolicy, KeyRecord, KeyView, KeysSnapshot, LimitKind, LimitRule,
    LimitWindow, WindowCounter,
};
use crate::ledger::key_windows::{row_key, WindowUsage};
use crate::shared::Shared;
use crate::store::Store;

const AUTH_KEY: &[u8] = b"api_key_auth";
const HIDE_QUOTA_KEY: &[u8] = b"hide_quota_headers";

type Reply<T> = Sender<Result<T, String>>;

pub enum KeyCmd {
    Create {
        spec: KeySpec,
        /// The secret (shown once) and the key as listed.
        reply: Reply<(String, KeyInfo)>,
    },
    List {
        reply: Sender<Vec<KeyInfo>>,
    },
    Update {
        id: String,
        patch: KeyPatch,
        reply: Reply<KeyInfo>,
    },
    Revoke {
        id: String,
        reply: Reply<KeyInfo>,
    },
    /// A new secret for a key (same id, policy and usage); the old one stops working at once.
    Regenerate {
        id: String,
        /// The new secret (shown once) and the key as listed.
        reply: Reply<(String, KeyInfo)>,
    },
}

/// A new key as asked for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    pub name: String,
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(flatten)]
    pub policy: KeyPolicy,
}

/// A change to a key; absent fields stay as they are, `null` clears an optional one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "some")]
    pub expires_at: Option<Option<u64>>,
    #[serde(default)]
    pub limits: Option<Vec<LimitRule>>,
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default)]
    pub allowed_efforts: Option<Vec<String>>,
    #[serde(default)]
    pub allowed_accounts: Option<Vec<String>>,
    #[serde(default, deserialize_with = "some")]
    pub max_streams: Option<Option<u32>>,
    #[serde(default, deserialize_with = "some")]
    pub requests_per_minute: Option<Option<u32>>,
    /// `true` pauses the key (refused until resumed), `false` resumes it.
    #[serde(default)]
    pub paused: Option<bool>,
}

fn some<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// One limit rule with where its window stands.
#[derive(Debug, Clone, Serialize)]
pub struct RuleUsage {
    #[serde(flatten)]
    pub rule: LimitRule,
    /// Tokens, or dollars for `cost_usd`, used in the current window.
    pub used: f64,
    pub resets_at: u64,
}

/// A key as listed: its record (no hash), live use and each limit's window.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
    pub paused_at: Option<u64>,
    pub status: &'static str,
    pub allowed_models: Vec<String>,
    pub allowed_efforts: Vec<String>,
    pub allowed_accounts: Vec<String>,
    /// The ids of `allowed_accounts` the pool does not have (they match nothing).
    pub unknown_accounts: Vec<String>,
    pub max_streams: Option<u32>,
    pub requests_per_minute: Option<u32>,
    pub streams_open: u32,
    pub requests_this_minute: u64,
    pub limits: Vec<RuleUsage>,
}

/// The pool-wide key settings, switchable at run time.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct KeySettings {
    pub api_key_auth: bool,
    pub hide_quota_headers: bool,
}

pub struct KeysControl {
    store: Store,
    shared: Arc<Shared>,
    records: Vec<KeyRecord>,
    live: HashMap<String, Arc<KeyLive>>,
    counters: HashMap<(String, LimitKind, LimitWindow, Option<String>), Arc<WindowCounter>>,
    settings: KeySettings,
}

fn flag(store: &Store, key: &[u8]) -> Option<bool> {
    store
        .settings
        .get(key)
        .ok()
        .flatten()
        .map(|v| v.as_ref() == b"1")
}

impl KeysControl {
    pub fn load(store: Store, shared: Arc<Shared>) -> Result<KeysControl, sled::Error> {
        let records = registry::load_all(&store)?;
        // An explicit flag wins over what was chosen at run time before.
        let settings = KeySettings {
            api_key_auth: shared
                .settings
                .api_key_auth
                .or_else(|| flag(&store, AUTH_KEY))
                .unwrap_or(false),
            hide_quota_headers: flag(&store, HIDE_QUOTA_KEY).unwrap_or(false),
        };
        let mut k = KeysControl {
            store,
            shared,
            records,
            live: HashMap::new(),
            counters: HashMap::new(),
            settings,
        };
        k.publish();
        Ok(k)
    }

    pub fn settings(&self) -> KeySettings {
        self.settings
    }

    pub fn set(&mut self, api_key_auth: Option<bool>, hide_quota_headers: Option<bool>) {
        let save = |key: &[u8], on: bool| {
            if let Err(e) = self.store.settings.insert(key, if on { "1" } else { "0" }) {
                tracing::warn!(error = %e, "cannot store a key setting; it applies until restart");
            }
        };
        if let Some(on) = api_key_auth {
            self.settings.api_key_auth = on;
            save(AUTH_KEY, on);
        }
        if let Some(on) = hide_quota_headers {
            self.settings.hide_quota_headers = on;
            save(HIDE_QUOTA_KEY, on);
        }
        self.publish();
    }

    /// The counter of one rule of a key, kept across updates of the key. A new one starts from
    /// what the ledger has recorded for the key in the current window (after a restart, or for a
    /// rule added later).
    fn counter(&mut self, id: &str, r: &LimitRule) -> Arc<WindowCounter> {
        let ident = (id.to_string(), r.kind, r.window, r.model.clone());
        let store = &self.store;
        Arc::clone(self.counters.entry(ident).or_insert_with(|| {
            let (start, _) = r.window.bounds(now_unix());
            let row = row_key(id, r.window, start, r.model.as_deref());
            let used = store
                .key_usage
                .get(row)
                .ok()
                .flatten()
                .and_then(|v| serde_json::from_slice::<WindowUsage>(&v).ok())
                .map_or(0, |u| u.units(r.kind));
            Arc::new(WindowCounter::new(start, used))
        }))
    }

    fn publish(&mut self) {
        let mut by_hash = HashMap::new();
        for r in self.records.clone() {
            let Ok(raw) = hex::decode(&r.hash) else {
                continue;
            };
            let Ok(hash) = <[u8; 32]>::try_from(raw.as_slice()) else {
                continue;
            };
            let live = Arc::clone(self.live.entry(r.id.clone()).or_default());
            let counters = r
                .policy
                .limits
                .iter()
                .map(|rule| self.counter(&r.id, rule))
                .collect();
            by_hash.insert(
                hash,
                Arc::new(KeyView {
                    id: Arc::from(r.id.as_str()),
                    name: r.name.clone(),
                    expires_at: r.expires_at,
                    revoked: r.is_revoked(),
                    paused: r.is_paused(),
                    policy: r.policy.clone(),
                    live,
                    counters,
                }),
            );
        }
        self.shared.keys.store(Arc::new(KeysSnapshot {
            by_hash,
            auth_required: self.settings.api_key_auth,
            hide_quota_headers: self.settings.hide_quota_headers,
        }));
    }

    fn info(&mut self, r: &KeyRecord) -> KeyInfo {
        let now = now_unix();
        let live = Arc::clone(self.live.entry(r.id.clone()).or_default());
        let limits = r
            .policy
            .limits
            .iter()
            .map(|rule| {
                let (start, end) = rule.window.bounds(now);
                let used = self.counter(&r.id, rule).get(start);
                RuleUsage {
                    rule: rule.clone(),
                    used: match rule.kind {
                        LimitKind::CostUsd => used as f64 / 1e6,
                        _ => used as f64,
                    },
                    resets_at: end,
                }
            })
            .collect();
        let status = r.status(now);
        let pool = self.shared.accounts.load();
        let unknown_accounts = r
            .policy
            .allowed_accounts
            .iter()
            .filter(|id| pool.find(id).is_none())
            .cloned()
            .collect();
        KeyInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            prefix: r.prefix.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            paused_at: r.paused_at,
            status,
            allowed_models: r.policy.allowed_models.clone(),
            allowed_efforts: r.policy.allowed_efforts.clone(),
            allowed_accounts: r.policy.allowed_accounts.clone(),
            unknown_accounts,
            max_streams: r.policy.max_streams,
            requests_per_minute: r.policy.requests_per_minute,
            streams_open: live.streams.load(std::sync::atomic::Ordering::Acquire),
            requests_this_minute: live.minute.get(now - now % 60),
            limits,
        }
    }

    fn save(&mut self, record: KeyRecord) -> Result<KeyInfo, String> {
        registry::put(&self.store, &record).map_err(|e| format!("cannot store the key: {e}"))?;
        match self.records.iter_mut().find(|r| r.id == record.id) {
            Some(r) => *r = record.clone(),
            None => self.records.push(record.clone()),
        }
        self.publish();
        Ok(self.info(&record))
    }

    fn find(&self, id: &str) -> Result<KeyRecord, String> {
        self.records
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .ok_or_else(|| format!("no key {id}"))
    }

    pub fn handle(&mut self, cmd: KeyCmd) {
        match cmd {
            KeyCmd::Create { spec, reply } => {
                let res = create(spec).and_then(|(secret, record)| {
                    tracing::info!(key = %record.id, name = %record.name, "API key created");
                    self.save(record).map(|info| (secret, info))
                });
                let _ = reply.send(res);
            }
            KeyCmd::List { reply } => {
                let records = self.records.clone();
                let _ = reply.send(records.iter().map(|r| self.info(r)).collect());
            }
            KeyCmd::Update { id, patch, reply } => {
                let res = self
                    .find(&id)
                    .and_then(|r| {
                        let was_paused = r.is_paused();
                        let r = apply(r, patch)?;
                        if r.is_paused() != was_paused {
                            let state = if r.is_paused() { "paused" } else { "resumed" };
                            tracing::info!(key = %r.id, "API key {state}");
                        }
                        Ok(r)
                    })
                    .and_then(|r| self.save(r));
                let _ = reply.send(res);
            }
            KeyCmd::Regenerate { id, reply } => {
                let res = self.find(&id).and_then(regenerate).and_then(|(secret, r)| {
                    tracing::info!(key = %r.id, "API key secret regenerated");
                    self.save(r).map(|info| (secret, info))
                });
                let _ = reply.send(res);
            }
            KeyCmd::Revoke { id, reply } => {
                let res = self.find(&id).and_then(|mut r| {
                    r.revoked_at.get_or_insert(now_unix());
                    tracing::info!(key = %r.id, "API key revoked");
                    self.save(r)
                });
                let _ = reply.send(res);
            }
        }
    }
}

/// A new key from a spec, validated.
pub fn create(spec: KeySpec) -> Result<(String, KeyRecord), String> {
    let name = spec.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err("a key needs a name of 1 to 100 characters".into());
    }
    spec.policy.validate()?;
    let (secret, mut record) = keys::generate(name, now_unix());
    record.expires_at = spec.expires_at;
    record.policy = spec.policy;
    Ok((secret, record))
}

/// A record with a patch applied, validated.
pub fn apply(mut r: KeyRecord, p: KeyPatch) -> Result<KeyRecord, String> {
    if let Some(n) = p.name {
        let n = n.trim();
        if n.is_empty() || n.len() > 100 {
            return Err("a key needs a name of 1 to 100 characters".into());
        }
        r.name = n.to_string();
    }
    if let Some(e) = p.expires_at {
        r.expires_at = e;
    }
    if let Some(l) = p.limits {
        r.policy.limits = l;
    }
    if let Some(m) = p.allowed_models {
        r.policy.allowed_models = m;
    }
    if let Some(e) = p.allowed_efforts {
        r.policy.allowed_efforts = e;
    }
    if let Some(a) = p.allowed_accounts {
        r.policy.allowed_accounts = a;
    }
    match p.paused {
        Some(true) => {
            r.paused_at.get_or_insert(now_unix());
        }
        Some(false) => r.paused_at = None,
        None => {}
    }
    if let Some(s) = p.max_streams {
        r.policy.max_streams = s;
    }
    if let Some(q) = p.requests_per_minute {
        r.policy.requests_per_minute = q;
    }
    r.policy.validate()?;
    Ok(r)
}

/// A record with a new secret, and the secret (shown once). A revoked key stays revoked: it gets
/// no new secret.
pub fn regenerate(mut r: KeyRecord) -> Result<(String, KeyRecord), String> {
    if r.is_revoked() {
        return Err(format!(
            "key {} is revoked; create a new one instead of regenerating it",
            r.id
        ));
    }
    let secret = r.rotate_secret();
    Ok((secret, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> KeyRecord {
        create(KeySpec {
            name: "alice".into(),
            ..Default::default()
        })
        .unwrap()
        .1
    }

    #[test]
    fn patches_pause_resume_and_bound_accounts() {
        let r = record();
        let patch: KeyPatch =
            serde_json::from_str(r#"{"paused": true, "allowed_accounts": ["acc_a", "acc_b"]}"#)
                .unwrap();
        let paused = apply(r.clone(), patch).unwrap();
        assert!(paused.paused_at.is_some());
        assert_eq!(paused.status(now_unix()), "paused");
        assert_eq!(paused.policy.allowed_accounts, ["acc_a", "acc_b"]);
        // Pausing again keeps the first time; other fields stay as they are.
        let again = apply(
            paused.clone(),
            serde_json::from_str(r#"{"paused": true}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(again, paused);
        let resumed = apply(
            paused,
            serde_json::from_str(r#"{"paused": false, "allowed_accounts": []}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(resumed.paused_at, None);
        assert_eq!(resumed.status(now_unix()), "active");
        assert!(resumed.policy.allowed_accounts.is_empty());
        // Validated like the rest of the policy.
        let bad: KeyPatch = serde_json::from_str(r#"{"allowed_accounts": [""]}"#).unwrap();
        assert!(apply(r.clone(), bad).unwrap_err().contains("account ids"));
        assert!(serde_json::from_str::<KeyPatch>(r#"{"paused": "yes"}"#).is_err());
        // And taken at creation.
        let spec: KeySpec =
            serde_json::from_str(r#"{"name": "b", "allowed_accounts": ["acc_a"]}"#).unwrap();
        assert_eq!(create(spec).unwrap().1.policy.allowed_accounts, ["acc_a"]);
        let spec: KeySpec =
            serde_json::from_str(r#"{"name": "b", "allowed_accounts": ["acc_a", "acc_a"]}"#)
                .unwrap();
        assert!(create(spec).is_err());
    }

    #[test]
    fn regenerating_keeps_the_key_but_not_a_revoked_one() {
        let mut r = record();
        r.policy.requests_per_minute = Some(7);
        let (secret, new) = regenerate(r.clone()).unwrap();
        assert_eq!(
            (&new.id, &new.name, &new.policy),
            (&r.id, &r.name, &r.policy)
        );
        assert_eq!(new.hash, keys::hash_hex(&secret));
        assert_ne!(new.hash, r.hash);
        r.revoked_at = Some(1);
        assert!(regenerate(r).unwrap_err().contains("revoked"));
    }
}
