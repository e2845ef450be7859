//! Pooled ChatGPT accounts: the stored record, the immutable snapshot the workers route with, and
//! (in submodules) import parsing, sealing, the store operations and per-worker selection.
//!
//! Records change only on the control thread (or the offline CLI); workers read `AccountsSnapshot`
//! through an `ArcSwap` and keep their own in-flight counts and cool-downs in `selection`.

pub mod auth_file;
pub mod continuity;
pub mod quota;
pub mod registry;
pub mod sealing;
pub mod selection;
pub mod strategy;

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    /// Taken out of rotation by the owner.
    Paused,
    /// The refresh token was refused for good: someone must sign in again.
    ReauthRequired,
    /// The upstream says the account is gone or has no Codex access.
    Deactivated,
}

/// The owner's say in which accounts take traffic first. Strategies work within one tier:
/// `burn_first` accounts are used before `normal` ones, `preserve` ones only when no other can.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    BurnFirst,
    #[default]
    Normal,
    Preserve,
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "burn_first" => Ok(Priority::BurnFirst),
            "normal" => Ok(Priority::Normal),
            "preserve" => Ok(Priority::Preserve),
            other => Err(format!(
                "unknown priority {other:?} (burn_first, normal, preserve)"
            )),
        }
    }
}

/// An account as stored and as the admin API shows it. Tokens are kept apart, sealed. Fields
/// added after the first release carry `serde(default)` so older records still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub id: String,
    pub chatgpt_account_id: String,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub plan: Option<String>,
    pub status: AccountStatus,
    pub added_at: u64,
    pub updated_at: u64,
    pub access_expires_at: Option<u64>,
    pub last_refresh: Option<String>,
    /// Unix seconds of the last import or successful token refresh.
    #[serde(default)]
    pub last_refresh_at: Option<u64>,
    #[serde(default)]
    pub priority: Priority,
    /// Stop routing here once the 5 h window is this full (percent).
    #[serde(default)]
    pub cap_primary_percent: Option<f64>,
    /// Stop routing here once the weekly window is this full (percent).
    #[serde(default)]
    pub cap_secondary_percent: Option<f64>,
    /// Requests this account may start per minute (UTC minute), over all workers.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Why the account is not active, when it is not.
    #[serde(default)]
    pub status_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub id_token: String,
}

/// Why an account is temporarily out of rotation for every worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    /// The upstream answered 429 usage_limit_reached; usable again at the window reset.
    UsageLimit,
    /// The upstream refused the token (401/403) and a refresh did not help yet.
    AuthFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub until_unix: u64,
    pub reason: BlockReason,
}

/// One account as the workers see it: ready-made header values, no parsing on the hot path.
#[derive(Debug)]
pub struct AccountView {
    pub id: Arc<str>,
    pub email: Option<String>,
    pub plan: Option<String>,
    pub status: AccountStatus,
    /// `Bearer <access token>`.
    pub authorization: Bytes,
    /// `ChatGPT-Account-ID` value; `None` for synthetic ids the upstream would reject.
    pub account_header: Option<Bytes>,
    pub block: Option<Block>,
    pub priority: Priority,
    pub quota: quota::QuotaReading,
    pub cap_primary_percent: Option<f64>,
    pub cap_secondary_percent: Option<f64>,
    pub requests_per_minute: Option<u32>,
    /// Requests started this minute, shared by every worker (kept across snapshots).
    pub minute: Arc<crate::keys::WindowCounter>,
}

impl AccountView {
    /// At the owner's per-minute pace for the minute holding `now_unix`.
    pub fn paced(&self, now_unix: u64) -> bool {
        self.requests_per_minute
            .is_some_and(|r| self.minute.get(now_unix - now_unix % 60) >= u64::from(r))
    }

    /// Counts a request started on this account (always, so a pace set mid-minute applies to
    /// the minute's requests so far).
    pub fn count_request(&self, now_unix: u64) {
        self.minute.add(now_unix - now_unix % 60, 1);
    }

    pub fn blocked_at(&self, now_unix: u64) -> Option<Block> {
        self.block.filter(|b| b.until_unix > now_unix)
    }

    /// At or past one of the owner's caps on window usage.
    pub fn over_cap(&self) -> bool {
        let over = |w: Option<quota::Window>, cap: Option<f64>| match (w, cap) {
            (Some(w), Some(cap)) => w.used_percent >= cap,
            _ => false,
        };
        over(self.quota.primary, self.cap_primary_percent)
            || over(self.quota.secondary, self.cap_secondary_percent)
    }

    /// Percent left in the tighter window (100 when nothing is known yet).
    pub fn headroom(&self) -> f64 {
        100.0 - self.quota.max_used().unwrap_or(0.0)
    }
}

/// Everything the workers route with, replaced whole by the control thread.
#[derive(Debug, Default)]
pub struct AccountsSnapshot {
    pub version: u64,
    pub accounts: Vec<Arc<AccountView>>,
    pub strategy: strategy::Strategy,
    /// In-flight requests one worker may have on one account (0: no cap).
    pub slots_per_worker: u32,
}

impl AccountsSnapshot {
    pub fn find(&self, id: &str) -> Option<&Arc<AccountView>> {
        self.accounts.iter().find(|a| &*a.id == id)
    }
}

/// Synthetic ids (`email_…`, `local_…`) are not real workspaces: never send them upstream.
pub fn is_synthetic_account_id(id: &str) -> bool {
    id.starts_with("email_") || id.starts_with("local_")
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
