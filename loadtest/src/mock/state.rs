//! State shared by every connection of one mock: accounts, their tokens, sign-ins, the global
//! scenario, caches, recordings and counters. Each piece has its own short-held lock; nothing here awaits,
//! and no code path holds two of these locks at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use super::accounts::Account;
use super::clock::Clock;
use super::credentials::Credentials;
use super::jwt::mint_account;
use super::logins::Logins;
use super::render::TemplateCache;
use super::scenario::Scenario;
use super::stats::{lock, Stats};
use super::MockConfig;

/// Recordings kept at most; a load run that leaves `record` on must not grow without bound.
const MAX_RECORDINGS: usize = 4096;
/// `prompt_cache_key`s remembered for the cached-token model.
const MAX_CACHE_KEYS: usize = 100_000;

pub struct Shared {
    pub clock: Clock,
    pub accounts: Vec<Account>,
    pub stats: Stats,
    pub templates: TemplateCache,
    pub primary_capacity: u64,
    pub secondary_capacity: u64,
    /// The OAuth issuer clients are told about (`MockUpstream::issuer_url`).
    pub issuer: String,
    credentials: RwLock<Credentials>,
    logins: Mutex<Logins>,
    by_id: HashMap<String, usize>,
    initial_scenario: Scenario,
    scenario: RwLock<Arc<Scenario>>,
    /// prompt_cache_key -> input tokens of the previous request with that key.
    prompt_cache: Mutex<HashMap<String, u64>>,
    recordings: Mutex<HashMap<String, Vec<u8>>>,
    next_id: AtomicU64,
    /// Whether `/responses` accepts WebSocket upgrades (else `426`).
    websockets: AtomicBool,
    /// Age after which a socket's next `response.create` gets the connection-limit error.
    ws_max_age_ms: AtomicU64,
    initial_websockets: bool,
    initial_ws_max_age: Duration,
}

impl Shared {
    pub fn new(cfg: &MockConfig, issuer: String) -> Shared {
        let clock = Clock::default();
        let now = clock.now();
        let ttl = cfg.token_ttl.as_secs();
        let seeds: Vec<_> = (0..cfg.accounts)
            .map(|i| mint_account(i, cfg.plan_of(i), now, ttl))
            .collect();
        let accounts: Vec<Account> = seeds
            .iter()
            .map(|m| {
                Account::new(
                    m.seed.chatgpt_account_id.clone(),
                    m.seed.plan_type.clone(),
                    now,
                )
            })
            .collect();
        let by_id = accounts
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id().to_string(), i))
            .collect();
        Shared {
            clock,
            accounts,
            stats: Stats::default(),
            templates: TemplateCache::default(),
            primary_capacity: cfg.primary_capacity_tokens,
            secondary_capacity: cfg.secondary_capacity_tokens,
            issuer,
            credentials: RwLock::new(Credentials::new(seeds, now, ttl)),
            logins: Mutex::new(Logins::new(cfg.accounts)),
            by_id,
            initial_scenario: cfg.scenario.clone(),
            scenario: RwLock::new(Arc::new(cfg.scenario.clone())),
            prompt_cache: Mutex::new(HashMap::new()),
            recordings: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            websockets: AtomicBool::new(cfg.websockets),
            ws_max_age_ms: AtomicU64::new(millis(cfg.ws_max_age)),
            initial_websockets: cfg.websockets,
            initial_ws_max_age: cfg.ws_max_age,
        }
    }

    pub fn websockets(&self) -> bool {
        self.websockets.load(Ordering::Relaxed)
    }

    pub fn set_websockets(&self, on: bool) {
        self.websockets.store(on, Ordering::Relaxed);
    }

    pub fn ws_max_age(&self) -> Duration {
        Duration::from_millis(self.ws_max_age_ms.load(Ordering::Relaxed))
    }

    /// Applies to open sockets too: each checks its age against the value of the moment.
    pub fn set_ws_max_age(&self, age: Duration) {
        self.ws_max_age_ms.store(millis(age), Ordering::Relaxed);
    }

    /// Tokens, read side: what every backend request takes once to authenticate.
    pub fn credentials(&self) -> RwLockReadGuard<'_, Credentials> {
        self.credentials.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Tokens, write side: refreshes and control calls.
    pub fn credentials_mut(&self) -> RwLockWriteGuard<'_, Credentials> {
        self.credentials.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Sign-in state: codes, device logins, login knobs and their counters.
    pub fn logins(&self) -> MutexGuard<'_, Logins> {
        lock(&self.logins)
    }

    /// Where the device flow's codes must be redeemed (PROTOCOL.md 5.3 step 4).
    pub fn device_redirect_uri(&self) -> String {
        format!("{}/deviceauth/callback", self.issuer)
    }

    pub fn account_by_id(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    pub fn account_id(&self, index: usize) -> &str {
        self.accounts.get(index).map_or("", |a| a.id())
    }

    pub fn scenario(&self) -> Arc<Scenario> {
        self.scenario
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_scenario(&self, s: Scenario) {
        *self.scenario.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
    }

    /// A fresh number for minted ids.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Deterministic prefix-cache model: a request reuses as much of the previous request with
    /// the same `prompt_cache_key` as it can, i.e. that request's input size capped at its own.
    pub fn cached_tokens(&self, key: Option<&str>, input_tokens: u64) -> u64 {
        let Some(key) = key else { return 0 };
        let mut map = lock(&self.prompt_cache);
        if map.len() >= MAX_CACHE_KEYS && !map.contains_key(key) {
            map.clear();
        }
        map.insert(key.to_string(), input_tokens)
            .map_or(0, |prev| prev.min(input_tokens))
    }

    pub fn stream_completed(&self, account: usize, total_tokens: u64) {
        self.stats.completed();
        if let Some(a) = self.accounts.get(account) {
            a.charge(
                total_tokens,
                self.primary_capacity,
                self.secondary_capacity,
                self.clock.now(),
            );
        }
    }

    pub fn store_recording(&self, request_id: &str, bytes: Vec<u8>) {
        let mut map = lock(&self.recordings);
        if map.len() >= MAX_RECORDINGS && !map.contains_key(request_id) {
            map.clear();
        }
        map.insert(request_id.to_string(), bytes);
    }

    pub fn recorded(&self, request_id: &str) -> Option<Vec<u8>> {
        lock(&self.recordings).get(request_id).cloned()
    }

    /// Back to the state right after start: clock, seeded tokens, sign-ins, usage, failures,
    /// expiries, recordings, counters, caches, the global scenario and the WebSocket switches.
    pub fn reset(&self) {
        self.clock.reset();
        self.credentials_mut().reset();
        self.logins().reset();
        let now = self.clock.now();
        for a in &self.accounts {
            a.reset(now);
        }
        self.set_scenario(self.initial_scenario.clone());
        lock(&self.prompt_cache).clear();
        lock(&self.recordings).clear();
        self.templates.clear();
        self.stats.reset();
        self.set_websockets(self.initial_websockets);
        self.set_ws_max_age(self.initial_ws_max_age);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
