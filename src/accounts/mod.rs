//! Pooled ChatGPT accounts: the stored record, the immutable snapshot the workers route with, and
//! (in submodules) import parsing, sealing, the store operations and per-worker selection.
//!
//! Records change only on the control thread (or the offline CLI); workers read `AccountsSnapshot`
//! through an `ArcSwap` and keep their own in-flight counts and cool-downs in `selection`.

pub mod auth_file;
pub mod quota;
pub mod registry;
pub mod sealing;
pub mod selection;

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Paused,
    ReauthRequired,
}

/// An account as stored and as the admin API shows it. Tokens are kept apart, sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The upstream refused the token (401/403); token refresh lands in a later release.
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
}

impl AccountView {
    pub fn blocked_at(&self, now_unix: u64) -> Option<Block> {
        self.block.filter(|b| b.until_unix > now_unix)
    }
}

/// Everything the workers route with, replaced whole by the control thread.
#[derive(Debug, Default)]
pub struct AccountsSnapshot {
    pub version: u64,
    pub accounts: Vec<Arc<AccountView>>,
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
