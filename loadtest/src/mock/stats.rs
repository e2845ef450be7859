//! Counters the tests and the load harness read back: requests, rejections, streams, bytes,
//! token refreshes, usage polls and the WebSocket transport (upgrades, refusals, turns, sockets).
//!
//! Hot counters are atomics; the keyed maps sit behind one mutex taken once per request. Control
//! API calls (`/__mock/...`) are never counted, so reading stats does not move them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A snapshot of the mock's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MockStats {
    pub requests_total: u64,
    pub requests_by_account: BTreeMap<String, u64>,
    /// Keyed `"METHOD /path"` for known routes, `"not_found"` for the rest.
    pub requests_by_route: BTreeMap<String, u64>,
    pub responses_completed: u64,
    pub streams_active: u64,
    pub streams_max_concurrent: u64,
    /// Streams whose body the peer dropped before the mock finished writing.
    pub streams_cancelled: u64,
    /// Every non-2xx reply on a backend route, by status.
    pub rejected_by_status: BTreeMap<u16, u64>,
    pub bytes_sent: u64,
    /// `POST /oauth/token` refresh attempts per account, failed ones included. Attempts whose
    /// refresh token names no account cannot be attributed and show only in `requests_by_route`.
    #[serde(default)]
    pub refresh_calls: BTreeMap<String, u64>,
    /// `GET /backend-api/wham/usage` calls per account (by token, else by `ChatGPT-Account-ID`),
    /// rejected ones included.
    #[serde(default)]
    pub usage_calls: BTreeMap<String, u64>,
    /// WebSocket upgrades of `/backend-api/codex/responses` answered `101`, per account.
    #[serde(default)]
    pub ws_upgrades: BTreeMap<String, u64>,
    /// Authenticated upgrade attempts answered `426` (no `OpenAI-Beta: responses_websockets=`,
    /// not an upgrade, or WebSocket switched off), per account.
    #[serde(default)]
    pub ws_refused: BTreeMap<String, u64>,
    /// `response.create` / `response.append` messages received, per account (refused ones
    /// included, as every POST turn counts in `requests_by_route`).
    #[serde(default)]
    pub ws_turns: BTreeMap<String, u64>,
    /// WebSocket connections open now.
    #[serde(default)]
    pub ws_active: u64,
}

#[derive(Default)]
struct Keyed {
    by_account: BTreeMap<String, u64>,
    by_route: BTreeMap<String, u64>,
    rejected: BTreeMap<u16, u64>,
    refresh_calls: BTreeMap<String, u64>,
    usage_calls: BTreeMap<String, u64>,
    ws_upgrades: BTreeMap<String, u64>,
    ws_refused: BTreeMap<String, u64>,
    ws_turns: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct Stats {
    ws_active: AtomicU64,
    requests_total: AtomicU64,
    responses_completed: AtomicU64,
    streams_active: AtomicU64,
    streams_max: AtomicU64,
    streams_cancelled: AtomicU64,
    bytes_sent: AtomicU64,
    keyed: Mutex<Keyed>,
    cancelled: Mutex<Vec<(String, Instant)>>,
}

impl Stats {
    pub fn request(&self, route: &str) {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        let mut k = lock(&self.keyed);
        *k.by_route.entry(route.to_string()).or_default() += 1;
    }

    pub fn account(&self, account_id: &str) {
        let mut k = lock(&self.keyed);
        *k.by_account.entry(account_id.to_string()).or_default() += 1;
    }

    pub fn refresh_call(&self, account_id: &str) {
        let mut k = lock(&self.keyed);
        *k.refresh_calls.entry(account_id.to_string()).or_default() += 1;
    }

    /// An answered usage poll: a request of the account and a poll, counted together so a
    /// snapshot never sees one without the other (tests subtract polls from requests).
    pub fn usage_poll(&self, account_id: &str) {
        let mut k = lock(&self.keyed);
        *k.by_account.entry(account_id.to_string()).or_default() += 1;
        *k.usage_calls.entry(account_id.to_string()).or_default() += 1;
    }

    pub fn usage_call(&self, account_id: &str) {
        let mut k = lock(&self.keyed);
        *k.usage_calls.entry(account_id.to_string()).or_default() += 1;
    }

    pub fn ws_upgrade(&self, account_id: &str) {
        let mut k = lock(&self.keyed);
        *k.ws_upgrades.entry(account_id.to_string()).or_default() += 1;
    }

    pub fn ws_refused(&self, account_id: &str) {
        let mut k = lock(&self.keyed);
        *k.ws_refused.entry(account_id.to_string()).or_default() += 1;
    }

    pub fn ws_turn(&self, account_id: &str) {
        let mut k = lock(&self.keyed);
        *k.ws_turns.entry(account_id.to_string()).or_default() += 1;
    }

    pub fn ws_opened(&self) {
        self.ws_active.fetch_add(1, Ordering::Relaxed);
    }

    pub fn ws_closed(&self) {
        self.ws_active.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, status: u16) {
        let mut k = lock(&self.keyed);
        *k.rejected.entry(status).or_default() += 1;
    }

    pub fn bytes(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn completed(&self) {
        self.responses_completed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stream_opened(&self) {
        let now = self.streams_active.fetch_add(1, Ordering::Relaxed) + 1;
        self.streams_max.fetch_max(now, Ordering::Relaxed);
    }

    pub fn stream_closed(&self) {
        self.streams_active.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn stream_cancelled(&self, account_id: &str, at: Instant) {
        self.streams_cancelled.fetch_add(1, Ordering::Relaxed);
        lock(&self.cancelled).push((account_id.to_string(), at));
    }

    pub fn cancelled_streams(&self) -> Vec<(String, Instant)> {
        lock(&self.cancelled).clone()
    }

    pub fn snapshot(&self) -> MockStats {
        let k = lock(&self.keyed);
        MockStats {
            requests_total: self.requests_total.load(Ordering::Relaxed),
            requests_by_account: k.by_account.clone(),
            requests_by_route: k.by_route.clone(),
            responses_completed: self.responses_completed.load(Ordering::Relaxed),
            streams_active: self.streams_active.load(Ordering::Relaxed),
            streams_max_concurrent: self.streams_max.load(Ordering::Relaxed),
            streams_cancelled: self.streams_cancelled.load(Ordering::Relaxed),
            rejected_by_status: k.rejected.clone(),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            refresh_calls: k.refresh_calls.clone(),
            usage_calls: k.usage_calls.clone(),
            ws_upgrades: k.ws_upgrades.clone(),
            ws_refused: k.ws_refused.clone(),
            ws_turns: k.ws_turns.clone(),
            ws_active: self.ws_active.load(Ordering::Relaxed),
        }
    }

    /// Zeroes everything except `streams_active` and `ws_active`, which still describe open
    /// streams and sockets; the concurrency high-water mark restarts from `streams_active`.
    pub fn reset(&self) {
        self.requests_total.store(0, Ordering::Relaxed);
        self.responses_completed.store(0, Ordering::Relaxed);
        self.streams_cancelled.store(0, Ordering::Relaxed);
        self.bytes_sent.store(0, Ordering::Relaxed);
        self.streams_max.store(
            self.streams_active.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        *lock(&self.keyed) = Keyed::default();
        lock(&self.cancelled).clear();
    }
}

/// Locks ignoring poison: a panicking test thread must not wedge the mock for the others.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
