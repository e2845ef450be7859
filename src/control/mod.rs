//! The control thread: owns the account records and their pool-wide state (quota windows, blocks,
//! token lifecycle), turns worker observations into that state, publishes the snapshots workers
//! route with, schedules token refreshes and usage polls on the jobs thread, re-resolves the
//! upstream host, and runs the admin commands that change accounts or settings.
//!
//! It may block (sled, DNS); it never runs on a worker. Workers reach it with `try_send` and wait
//! for replies by polling, so a slow control thread delays an admin call, never a proxied stream.

pub mod http;
pub mod jobs;
pub mod keys;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};

use self::jobs::{Job, JobResult, RefreshOutcome, UsageOutcome};
use crate::accounts::auth_file::jwt_claims;
use crate::accounts::quota::QuotaReading;
use crate::accounts::registry::{self, RegistryError};
use crate::accounts::strategy::Strategy;
use crate::accounts::{
    is_synthetic_account_id, now_unix, AccountRecord, AccountStatus, AccountView, AccountsSnapshot,
    Block, BlockReason, Priority, Tokens,
};
use crate::config::UpstreamUrl;
use crate::shared::Shared;
use crate::store::Store;

const DNS_REFRESH: Duration = Duration::from_secs(60);
/// How often the loop wakes to publish coalesced quota changes and schedule jobs.
const TICK: Duration = Duration::from_millis(200);
/// Refresh an access token this long before its `exp`.
const REFRESH_MARGIN_SECS: u64 = 300;
/// Refresh tokens older than this even when the access token looks fine (the CLI's rule).
const REFRESH_MAX_AGE_SECS: u64 = 8 * 24 * 3600;
/// After a failed (transient) refresh, wait this long before the next attempt.
const REFRESH_RETRY: Duration = Duration::from_secs(30);
/// A 401 within this long after a successful refresh means the new token is refused too.
const REFRESH_GRACE: Duration = Duration::from_secs(30);
/// How long an account whose token is refused even after a refresh stays out of rotation.
const AUTH_BLOCK_SECS: u64 = 300;
/// Quota readings are written to sled at most this often (they are re-learned quickly anyway).
const QUOTA_PERSIST_EVERY: Duration = Duration::from_secs(60);
const STRATEGY_KEY: &[u8] = b"strategy";
const QUOTA_PREFIX: &str = "quota/";

/// An account as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AccountInfo {
    #[serde(flatten)]
    pub record: AccountRecord,
    pub blocked_until: Option<u64>,
    pub block_reason: Option<BlockReason>,
    pub quota: QuotaReading,
}

/// What workers learned that every worker must know.
#[derive(Debug, Clone)]
pub enum Observation {
    Blocked {
        id: Arc<str>,
        block: Block,
    },
    /// Rate-limit headers or a `codex.rate_limits` event of a reply.
    Quota {
        id: Arc<str>,
        reading: QuotaReading,
    },
    /// The upstream refused the account's token (401). `token` is `token_hash` of the
    /// `Authorization` value that was refused, so a refusal of a token already replaced is
    /// recognised as stale.
    AuthFailed {
        id: Arc<str>,
        token: u64,
    },
}

/// Owner-set routing preferences of one account; `None` fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AccountPatch {
    pub priority: Option<Priority>,
    /// A number sets the cap, `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    pub cap_primary_percent: Option<Option<f64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub cap_secondary_percent: Option<Option<f64>>,
    /// A number sets the pace, `null` clears it.
    #[serde(default, deserialize_with = "double_option_u32")]
    pub requests_per_minute: Option<Option<u32>>,
}

impl AccountPatch {
    pub fn validate(&self) -> Result<(), String> {
        let valid = |c: Option<Option<f64>>| c.flatten().is_none_or(|v| (0.0..=100.0).contains(&v));
        if !(valid(self.cap_primary_percent) && valid(self.cap_secondary_percent)) {
            return Err("caps are percentages between 0 and 100".into());
        }
        if self.requests_per_minute == Some(Some(0)) {
            return Err("requests_per_minute is at least 1 (null for no pace)".into());
        }
        Ok(())
    }
}

fn double_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

fn double_option_u32<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

/// Run-time settings the admin API shows.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeSettings {
    pub strategy: Strategy,
    #[serde(flatten)]
    pub keys: keys::KeySettings,
}

/// A change to the run-time settings; absent fields stay.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub api_key_auth: Option<bool>,
    #[serde(default)]
    pub hide_quota_headers: Option<bool>,
}

type Reply<T> = Sender<Result<T, String>>;

pub enum ControlMsg {
    Import {
        body: Vec<u8>,
        reply: Reply<(AccountInfo, bool)>,
    },
    List {
        reply: Sender<Vec<AccountInfo>>,
    },
    Remove {
        id: String,
        reply: Reply<bool>,
    },
    /// The account as a Codex `auth.json`, with its current tokens.
    Export {
        id: String,
        reply: Reply<serde_json::Value>,
    },
    SetStatus {
        id: String,
        paused: bool,
        reply: Reply<AccountInfo>,
    },
    Patch {
        id: String,
        patch: AccountPatch,
        reply: Reply<AccountInfo>,
    },
    GetSettings {
        reply: Sender<RuntimeSettings>,
    },
    SetSettings {
        patch: SettingsPatch,
        reply: Sender<RuntimeSettings>,
    },
    Keys(keys::KeyCmd),
    Observe(Observation),
    JobDone(JobResult),
    Shutdown,
}

struct Entry {
    record: AccountRecord,
    tokens: Tokens,
    block: Option<Block>,
    /// When `block` was last set from a refused request (unix ms): only a quota reading taken
    /// after it may lift a usage-limit block — a poll that was already on its way says nothing
    /// about the refusal.
    blocked_at_ms: u64,
    quota: QuotaReading,
    refreshing: bool,
    refresh_wanted: bool,
    /// Requests started this minute (the owner's pace), shared with the workers' views.
    minute: Arc<crate::keys::WindowCounter>,
    /// A refresh went out and its answer was lost: the stored refresh token may be spent.
    refresh_uncertain: bool,
    last_refresh_ok: Option<Instant>,
    next_refresh_try: Option<Instant>,
    polling: bool,
    last_poll: Option<Instant>,
}

impl Entry {
    fn new(record: AccountRecord, tokens: Tokens) -> Entry {
        Entry {
            record,
            tokens,
            block: None,
            blocked_at_ms: 0,
            quota: QuotaReading::default(),
            refreshing: false,
            refresh_wanted: false,
            minute: Arc::default(),
            refresh_uncertain: false,
            last_refresh_ok: None,
            next_refresh_try: None,
            polling: false,
            last_poll: None,
        }
    }

    fn needs_refresh(&self, now: u64, at: Instant) -> bool {
        if self.refreshing
            || self.refresh_uncertain
            || self.record.status != AccountStatus::Active
            || self.tokens.refresh_token.is_empty()
        {
            return false;
        }
        if self.next_refresh_try.is_some_and(|t| t > at) {
            return false;
        }
        let expiring = self
            .record
            .access_expires_at
            .is_some_and(|e| e <= now + REFRESH_MARGIN_SECS);
        let old = self
            .record
            .last_refresh_at
            .is_some_and(|t| t + REFRESH_MAX_AGE_SECS <= now);
        self.refresh_wanted || expiring || old
    }
}

pub struct Control {
    store: Store,
    shared: Arc<Shared>,
    entries: BTreeMap<String, Entry>,
    version: u64,
    strategy: Strategy,
    dirty: bool,
    jobs: Option<Sender<Job>>,
    quota_dirty: bool,
    last_quota_persist: Instant,
    keys: keys::KeysControl,
}

impl Control {
    /// Loads the accounts and publishes the first snapshot (before any worker starts).
    pub fn load(store: Store, shared: Arc<Shared>) -> Result<Control, RegistryError> {
        let mut entries: BTreeMap<String, Entry> = registry::load_all(&store)?
            .into_iter()
            .map(|(record, tokens)| (record.id.clone(), Entry::new(record, tokens)))
            .collect();
        for (id, e) in entries.iter_mut() {
            if let Ok(Some(v)) = store.settings.get(format!("{QUOTA_PREFIX}{id}")) {
                e.quota = serde_json::from_slice(&v).unwrap_or_default();
            }
        }
        let stored_strategy = store.settings.get(STRATEGY_KEY)?.and_then(|v| {
            std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<Strategy>().ok())
        });
        // An explicit flag or environment setting wins over what was chosen at run time before.
        let strategy = shared
            .settings
            .strategy
            .or(stored_strategy)
            .unwrap_or_default();
        let keys = keys::KeysControl::load(store.clone(), Arc::clone(&shared))?;
        let mut c = Control {
            keys,
            store,
            shared,
            entries,
            version: 0,
            strategy,
            dirty: false,
            jobs: None,
            quota_dirty: false,
            last_quota_persist: Instant::now(),
        };
        c.publish();
        Ok(c)
    }

    /// Connects the jobs thread (refresh, polling); without it those never run.
    pub fn with_jobs(mut self, jobs: Sender<Job>) -> Control {
        self.jobs = Some(jobs);
        self
    }

    fn slots_per_worker(&self) -> u32 {
        let cap = self.shared.settings.account_max_streams;
        if cap == 0 {
            return 0;
        }
        cap.div_ceil(self.shared.settings.workers.max(1)) as u32
    }

    fn publish(&mut self) {
        self.version += 1;
        self.dirty = false;
        let accounts = self
            .entries
            .values()
            .map(|e| {
                let r = &e.record;
                Arc::new(AccountView {
                    id: Arc::from(r.id.as_str()),
                    email: r.email.clone(),
                    plan: r.plan.clone(),
                    status: r.status,
                    authorization: Bytes::from(format!("Bearer {}", e.tokens.access_token)),
                    account_header: (!is_synthetic_account_id(&r.chatgpt_account_id))
                        .then(|| Bytes::from(r.chatgpt_account_id.clone())),
                    block: e.block,
                    priority: r.priority,
                    quota: e.quota.clone(),
                    cap_primary_percent: r.cap_primary_percent,
                    cap_secondary_percent: r.cap_secondary_percent,
                    requests_per_minute: r.requests_per_minute,
                    minute: Arc::clone(&e.minute),
                })
            })
            .collect();
        self.shared.accounts.store(Arc::new(AccountsSnapshot {
            version: self.version,
            accounts,
            strategy: self.strategy,
            slots_per_worker: self.slots_per_worker(),
        }));
    }

    fn info(e: &Entry) -> AccountInfo {
        let live = e.block.filter(|b| b.until_unix > now_unix());
        AccountInfo {
            record: e.record.clone(),
            blocked_until: live.map(|b| b.until_unix),
            block_reason: live.map(|b| b.reason),
            quota: e.quota.clone(),
        }
    }

    fn persist(&self, id: &str) -> Result<(), String> {
        let e = self
            .entries
            .get(id)
            .ok_or_else(|| format!("no account {id}"))?;
        registry::put(&self.store, &e.record, &e.tokens).map_err(|err| err.to_string())?;
        self.store.accounts.flush().map_err(|err| err.to_string())?;
        Ok(())
    }

    fn handle(&mut self, msg: ControlMsg) -> bool {
        match msg {
            ControlMsg::Import { body, reply } => {
                let res = registry::import(&self.store, &body).map_err(|e| e.to_string()).map(|(record, tokens, created)| {
                    let id = record.id.clone();
                    tracing::info!(account = %id, email = ?record.email, created, "account imported");
                    let mut entry = Entry::new(record, tokens);
                    if let Some(old) = self.entries.remove(&id) {
                        entry.quota = old.quota;
                    }
                    let info = Self::info(&entry);
                    self.entries.insert(id, entry);
                    self.publish();
                    (info, created)
                });
                let _ = reply.send(res);
            }
            ControlMsg::List { reply } => {
                let _ = reply.send(self.entries.values().map(Self::info).collect());
            }
            ControlMsg::Export { id, reply } => {
                let res = match self.entries.get(&id) {
                    None => Err(format!("no account {id}")),
                    Some(e)
                        if e.tokens.refresh_token.is_empty()
                            && e.tokens.access_token.is_empty() =>
                    {
                        Err(format!(
                            "account {id} has no readable tokens; sign in again"
                        ))
                    }
                    Some(e) => Ok(crate::accounts::auth_file::to_auth_json(
                        &e.tokens,
                        Some(&e.record.chatgpt_account_id),
                        e.record.last_refresh_at,
                    )),
                };
                let _ = reply.send(res);
            }
            ControlMsg::Remove { id, reply } => {
                let res = registry::remove(&self.store, &id).map_err(|e| e.to_string());
                if matches!(res, Ok(true)) {
                    self.entries.remove(&id);
                    let _ = self.store.settings.remove(format!("{QUOTA_PREFIX}{id}"));
                    self.publish();
                    tracing::info!(account = %id, "account removed");
                }
                let _ = reply.send(res);
            }
            ControlMsg::SetStatus { id, paused, reply } => {
                let res = self.set_status(&id, paused);
                let _ = reply.send(res);
            }
            ControlMsg::Patch { id, patch, reply } => {
                let res = self.patch(&id, patch);
                let _ = reply.send(res);
            }
            ControlMsg::GetSettings { reply } => {
                let _ = reply.send(self.runtime_settings());
            }
            ControlMsg::SetSettings { patch, reply } => {
                if let Some(strategy) = patch.strategy {
                    self.strategy = strategy;
                    if let Err(e) = self
                        .store
                        .settings
                        .insert(STRATEGY_KEY, strategy.as_str().as_bytes())
                    {
                        tracing::warn!(error = %e, "cannot store the strategy; it applies until restart");
                    }
                    tracing::info!(strategy = strategy.as_str(), "routing strategy changed");
                    self.publish();
                }
                if patch.api_key_auth.is_some() || patch.hide_quota_headers.is_some() {
                    self.keys.set(patch.api_key_auth, patch.hide_quota_headers);
                    tracing::info!(settings = ?self.keys.settings(), "key settings changed");
                }
                let _ = reply.send(self.runtime_settings());
            }
            ControlMsg::Keys(cmd) => self.keys.handle(cmd),
            ControlMsg::Observe(obs) => self.observe(obs),
            ControlMsg::JobDone(result) => self.job_done(result),
            ControlMsg::Shutdown => return false,
        }
        true
    }

    fn runtime_settings(&self) -> RuntimeSettings {
        RuntimeSettings {
            strategy: self.strategy,
            keys: self.keys.settings(),
        }
    }

    fn set_status(&mut self, id: &str, paused: bool) -> Result<AccountInfo, String> {
        let e = self
            .entries
            .get_mut(id)
            .ok_or_else(|| format!("no account {id}"))?;
        match (paused, e.record.status) {
            (true, _) => {
                e.record.status = AccountStatus::Paused;
                e.record.status_reason = Some("paused by the owner".into());
            }
            (false, AccountStatus::Paused | AccountStatus::Deactivated) => {
                e.record.status = AccountStatus::Active;
                e.record.status_reason = None;
            }
            (false, AccountStatus::ReauthRequired) => {
                return Err(format!(
                    "account {id} needs a new sign-in: import a fresh auth.json"
                ));
            }
            (false, AccountStatus::Active) => {}
        }
        e.record.updated_at = now_unix();
        self.persist(id)?;
        self.publish();
        self.entries
            .get(id)
            .map(Self::info)
            .ok_or_else(|| format!("no account {id}"))
    }

    fn patch(&mut self, id: &str, patch: AccountPatch) -> Result<AccountInfo, String> {
        let e = self
            .entries
            .get_mut(id)
            .ok_or_else(|| format!("no account {id}"))?;
        patch.validate()?;
        if let Some(p) = patch.priority {
            e.record.priority = p;
        }
        if let Some(c) = patch.cap_primary_percent {
            e.record.cap_primary_percent = c;
        }
        if let Some(c) = patch.cap_secondary_percent {
            e.record.cap_secondary_percent = c;
        }
        if let Some(r) = patch.requests_per_minute {
            e.record.requests_per_minute = r;
        }
        e.record.updated_at = now_unix();
        self.persist(id)?;
        self.publish();
        self.entries
            .get(id)
            .map(Self::info)
            .ok_or_else(|| format!("no account {id}"))
    }

    fn observe(&mut self, obs: Observation) {
        match obs {
            Observation::Blocked { id, block } => {
                if let Some(e) = self.entries.get_mut(&*id) {
                    // Every refusal dates the block, even one that does not extend it: a poll
                    // asked before it must not lift it.
                    e.blocked_at_ms = crate::accounts::quota::now_ms();
                    // Keep the later of two blocks: a second worker's report must not shorten it.
                    if e.block
                        .is_none_or(|b| b.until_unix < block.until_unix || b.reason != block.reason)
                    {
                        tracing::warn!(account = %id, reason = ?block.reason, until = block.until_unix, "account blocked");
                        e.block = Some(block);
                        self.publish();
                    }
                }
            }
            Observation::Quota { id, reading } => self.merge_quota(&id, reading),
            Observation::AuthFailed { id, token } => {
                if let Some(e) = self.entries.get_mut(&*id) {
                    if token != token_hash(format!("Bearer {}", e.tokens.access_token).as_bytes()) {
                        // Refused with a token that has been replaced since: nothing to do.
                        return;
                    }
                    if e.refresh_uncertain {
                        e.record.status = AccountStatus::ReauthRequired;
                        e.record.status_reason = Some(
                            "token refused and its last refresh went unanswered; sign in again"
                                .into(),
                        );
                        tracing::warn!(account = %id, "token refused after an unanswered refresh; account needs a new sign-in");
                        let _ = self.persist(&id);
                        self.publish();
                        return;
                    }
                    if e.last_refresh_ok
                        .is_some_and(|t| t.elapsed() < REFRESH_GRACE)
                    {
                        // A fresh token is refused too: keep the account out for a while.
                        e.block = Some(Block {
                            until_unix: now_unix() + AUTH_BLOCK_SECS,
                            reason: BlockReason::AuthFailed,
                        });
                        tracing::warn!(account = %id, "token refused right after a refresh; account blocked");
                        self.publish();
                    } else if !e.refreshing {
                        e.refresh_wanted = true;
                        e.next_refresh_try = None;
                        self.schedule_jobs();
                    }
                }
            }
        }
    }

    /// Takes a new quota reading; a full window blocks the account until it resets, and a window
    /// with room again lifts a usage-limit block.
    fn merge_quota(&mut self, id: &str, reading: QuotaReading) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        if reading.observed_ms < e.quota.observed_ms {
            // Older than what is known (a slow reply's headers after a newer poll).
            return;
        }
        let mut merged = reading;
        merged.primary = merged.primary.or(e.quota.primary);
        merged.secondary = merged.secondary.or(e.quota.secondary);
        merged.plan_type = merged.plan_type.or(e.quota.plan_type.take());
        let now = now_unix();
        let full = [merged.primary, merged.secondary]
            .into_iter()
            .flatten()
            .filter(|w| w.used_percent >= 100.0);
        let full_until = full.filter_map(|w| w.reset_at).max();
        let mut changed = false;
        match (full_until, e.block) {
            (Some(until), b) if b.is_none_or(|b| b.until_unix < until) && until > now => {
                e.block = Some(Block {
                    until_unix: until,
                    reason: BlockReason::UsageLimit,
                });
                changed = true;
            }
            (None, Some(b))
                if b.reason == BlockReason::UsageLimit && merged.observed_ms > e.blocked_at_ms =>
            {
                tracing::info!(account = %id, "usage window has room again; account back in rotation");
                e.block = None;
                changed = true;
            }
            _ => {}
        }
        if e.quota != merged {
            // Workers route on this (caps, weights): a real move goes out at once, drift
            // (fractions of a percent) with the next tick.
            let moved =
                (e.quota.max_used().unwrap_or(0.0) - merged.max_used().unwrap_or(0.0)).abs() >= 0.5;
            changed |= moved;
            e.quota = merged;
            self.quota_dirty = true;
            self.dirty = true;
        }
        if changed {
            self.publish();
        }
    }

    fn job_done(&mut self, result: JobResult) {
        match result {
            JobResult::Refresh { id, outcome } => {
                let Some(e) = self.entries.get_mut(&id) else {
                    return;
                };
                e.refreshing = false;
                match outcome {
                    RefreshOutcome::Refreshed(tokens) => {
                        e.record.access_expires_at = jwt_claims(&tokens.access_token)
                            .and_then(|c| c.get("exp").and_then(|v| v.as_u64()));
                        e.record.last_refresh_at = Some(now_unix());
                        e.record.updated_at = now_unix();
                        e.tokens = tokens;
                        e.refresh_wanted = false;
                        e.last_refresh_ok = Some(Instant::now());
                        if e.block.is_some_and(|b| b.reason == BlockReason::AuthFailed) {
                            e.block = None;
                        }
                        // The rotated refresh token is durable before any worker uses the new access token.
                        if let Err(err) = self.persist(&id) {
                            tracing::error!(account = %id, error = %err, "refreshed tokens could not be stored");
                        }
                        tracing::info!(account = %id, "access token refreshed");
                        self.publish();
                    }
                    RefreshOutcome::Permanent(code) => {
                        e.record.status = AccountStatus::ReauthRequired;
                        e.record.status_reason = Some(format!("token refresh refused: {code}"));
                        e.refresh_wanted = false;
                        tracing::warn!(account = %id, code, "refresh token refused for good; account needs a new sign-in");
                        let _ = self.persist(&id);
                        self.publish();
                    }
                    RefreshOutcome::Uncertain(reason) => {
                        // Keep serving with the current access token while it lasts; a 401 then
                        // means the account needs a new sign-in.
                        e.refresh_uncertain = true;
                        e.refresh_wanted = false;
                        tracing::warn!(account = %id, reason, "token refresh sent but unanswered; not replaying it");
                    }
                    RefreshOutcome::Transient(reason) => {
                        e.next_refresh_try = Some(Instant::now() + REFRESH_RETRY);
                        tracing::warn!(account = %id, reason, "token refresh failed; will retry");
                    }
                }
            }
            JobResult::Usage { id, token, outcome } => {
                if let Some(e) = self.entries.get_mut(&id) {
                    e.polling = false;
                }
                match outcome {
                    UsageOutcome::Reading(r) => self.merge_quota(&id, r),
                    UsageOutcome::Unauthorized => self.observe(Observation::AuthFailed {
                        id: Arc::from(id.as_str()),
                        token,
                    }),
                    UsageOutcome::Deactivated(reason) => {
                        if let Some(e) = self.entries.get_mut(&id) {
                            e.record.status = AccountStatus::Deactivated;
                            e.record.status_reason = Some(reason.clone());
                            tracing::warn!(account = %id, reason, "account deactivated upstream");
                            let _ = self.persist(&id);
                            self.publish();
                        }
                    }
                    UsageOutcome::Transient(reason) => {
                        tracing::debug!(account = %id, reason, "usage poll failed")
                    }
                }
            }
        }
    }

    /// Queues the refreshes and usage polls that are due, one in flight per account.
    fn schedule_jobs(&mut self) {
        let Some(jobs) = self.jobs.clone() else {
            return;
        };
        let now = now_unix();
        let at = Instant::now();
        let poll_every = self.shared.settings.usage_poll_interval;
        for (id, e) in self.entries.iter_mut() {
            if e.needs_refresh(now, at) {
                let job = Job::Refresh {
                    id: id.clone(),
                    refresh_token: e.tokens.refresh_token.clone(),
                };
                if jobs.try_send(job).is_ok() {
                    e.refreshing = true;
                }
            }
            let poll_due = !poll_every.is_zero()
                && !e.polling
                && e.record.status == AccountStatus::Active
                && e.last_poll.is_none_or(|t| t.elapsed() >= poll_every);
            if poll_due {
                let job = Job::PollUsage {
                    id: id.clone(),
                    authorization: Bytes::from(format!("Bearer {}", e.tokens.access_token)),
                    account_header: (!is_synthetic_account_id(&e.record.chatgpt_account_id))
                        .then(|| Bytes::from(e.record.chatgpt_account_id.clone())),
                };
                if jobs.try_send(job).is_ok() {
                    e.polling = true;
                    e.last_poll = Some(at);
                }
            }
        }
    }

    fn persist_quota(&mut self, force: bool) {
        if !self.quota_dirty || (!force && self.last_quota_persist.elapsed() < QUOTA_PERSIST_EVERY)
        {
            return;
        }
        for (id, e) in &self.entries {
            let _ = self.store.settings.insert(
                format!("{QUOTA_PREFIX}{id}"),
                serde_json::to_vec(&e.quota).unwrap_or_default(),
            );
        }
        self.quota_dirty = false;
        self.last_quota_persist = Instant::now();
    }

    pub fn run(mut self, rx: Receiver<ControlMsg>) {
        let upstream = self.shared.settings.upstream.clone();
        let mut last_dns = Instant::now();
        let mut last_tick = Instant::now();
        loop {
            match rx.recv_timeout(TICK) {
                Ok(msg) => {
                    if !self.handle(msg) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                if self.dirty {
                    self.publish();
                }
                self.schedule_jobs();
                self.persist_quota(false);
            }
            // Through an egress proxy the proxy resolves the upstream.
            if last_dns.elapsed() >= DNS_REFRESH && self.shared.egress.is_none() {
                last_dns = Instant::now();
                if let Ok(addrs) = resolve(&upstream) {
                    if **self.shared.upstream_addrs.load() != addrs {
                        self.shared.upstream_addrs.store(Arc::new(addrs));
                    }
                }
            }
        }
        self.persist_quota(true);
    }
}

/// Identifies an `Authorization` value without keeping the token itself.
pub fn token_hash(authorization: &[u8]) -> u64 {
    crate::accounts::strategy::hash_str(&String::from_utf8_lossy(authorization))
}

/// Resolves a host (blocking; control and jobs threads and start-up only).
pub fn resolve(u: &UpstreamUrl) -> std::io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (u.host.as_str(), u.port).to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "host has no addresses",
        ));
    }
    Ok(addrs)
}

pub fn spawn(control: Control, rx: Receiver<ControlMsg>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("codex-lb-control".into())
        .spawn(move || control.run(rx))
}
