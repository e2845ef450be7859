//! The ledger thread: the only writer of the request log and the usage totals in sled.
//!
//! Workers `try_send` one boxed `UsageEvent` per request on a bounded channel (boxed so the
//! channel's preallocated slots stay small; never blocking a core; a
//! full channel is counted by the worker). This thread batches events into one sled transaction,
//! keeps the totals in memory for instant answers, and fsyncs at least every flush interval, so a
//! crash loses at most that interval and never leaves a row without its totals.

pub mod audit;
pub mod key_windows;
pub mod retention;
pub mod rollups;
pub mod search;
mod totals;

use std::collections::{BTreeMap, BTreeSet};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

pub use totals::Totals;

use crate::store::Store;

/// Events written per transaction at most; more wait for the next one.
const MAX_BATCH: usize = 1024;
/// How often the thread looks for new events (the longest an event waits to be counted).
const EVENT_POLL: Duration = Duration::from_millis(5);
/// How often pending events are written to sled (fsync follows the flush interval).
const WRITE_INTERVAL: Duration = Duration::from_millis(100);
const TOTAL_ALL: &str = "all";
/// How often a retention step runs (more often while there is a backlog).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const KEY_SWEEP_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The terminal event was `response.completed` (or a unary reply succeeded).
    #[default]
    Completed,
    /// `response.failed` or an upstream error status relayed to the client.
    Failed,
    Incomplete,
    /// The client went away before the response ended.
    Cancelled,
    /// The upstream broke, timed out or could not be reached.
    UpstreamError,
    /// The gateway refused the request (bad input, no account, limits).
    Rejected,
}

/// One request, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub ts_ms: u64,
    pub request_id: String,
    pub route: String,
    /// `http` or `websocket`.
    #[serde(default)]
    pub transport: Option<String>,
    #[serde(default)]
    pub client_ip: Option<String>,
    /// The client's product (`codex_cli_rs`, `openai/python`, …), never the full header.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// `prompt_cache_key` or session id of the conversation.
    #[serde(default)]
    pub conversation: Option<String>,
    /// `reasoning.effort` the client asked for.
    #[serde(default)]
    pub effort: Option<String>,
    /// The service tier the turn ran at (`priority` is Codex's "Fast"), as the upstream
    /// reported it, else as asked; `None`: the standard tier.
    #[serde(default)]
    pub service_tier: Option<String>,
    /// The proxy API key that made the request.
    #[serde(default)]
    pub key_id: Option<String>,
    pub account_id: Option<String>,
    pub model: Option<String>,
    pub status: u16,
    pub outcome: Outcome,
    pub error_code: Option<String>,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
    /// Cost by the pricing table, micro-USD; `None` when the model has no price.
    #[serde(default)]
    pub cost_micro_usd: Option<u64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub latency_ms: u64,
    pub ttfb_ms: Option<u64>,
    pub attempts: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UsageSummary {
    pub totals: Totals,
    pub by_account: BTreeMap<String, Totals>,
    pub by_model: BTreeMap<String, Totals>,
    /// Per proxy API key.
    #[serde(default)]
    pub by_key: BTreeMap<String, Totals>,
}

pub enum LedgerQuery {
    Summary(Sender<UsageSummary>),
    /// Log rows matching a filter, a page at a time.
    Search {
        filter: Box<search::RequestFilter>,
        reply: Sender<Result<search::Page, String>>,
    },
    /// Rollups of one dimension over a range of buckets.
    Usage {
        granularity: rollups::Granularity,
        dim: rollups::Dim,
        since: u64,
        until: u64,
        reply: Sender<Result<Vec<rollups::UsageRow>, String>>,
    },
    /// One admin-API change, for the audit log.
    Audit(Box<audit::AuditEntry>),
    /// The newest audit rows.
    AuditList {
        limit: usize,
        reply: Sender<Result<Vec<audit::AuditEntry>, String>>,
    },
    /// Write everything received so far, fsync, and stop.
    Shutdown,
}

pub struct Ledger {
    store: Store,
    summary: UsageSummary,
    pending: Vec<UsageEvent>,
    seq: u64,
    last_fsync: Instant,
    dirty_since_fsync: bool,
    flush_interval: Duration,
    key_windows: key_windows::KeyWindows,
    retention: retention::Retention,
    last_sweep: Instant,
    last_key_sweep: Instant,
    /// Orders audit rows written in the same millisecond.
    audit_seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
}

impl Ledger {
    pub fn open(store: Store, flush_interval: Duration) -> Result<Ledger, LedgerError> {
        let mut summary = UsageSummary::default();
        for kv in store.usage_totals.iter() {
            let (k, v) = kv?;
            let Ok(t) = serde_json::from_slice::<Totals>(&v) else {
                continue;
            };
            let key = String::from_utf8_lossy(&k).into_owned();
            if key == TOTAL_ALL {
                summary.totals = t;
            } else if let Some(a) = key.strip_prefix("account/") {
                summary.by_account.insert(a.to_string(), t);
            } else if let Some(m) = key.strip_prefix("model/") {
                summary.by_model.insert(m.to_string(), t);
            } else if let Some(k) = key.strip_prefix("key/") {
                summary.by_key.insert(k.to_string(), t);
            }
        }
        // A data dir from before rollups existed gets them from its log once.
        if store.rollups.is_empty() && !store.requests.is_empty() {
            let n = rollups::rebuild(&store.requests, &store.rollups)?;
            tracing::info!(rows = n, "usage rollups rebuilt from the request log");
        }
        let seq = store
            .requests
            .last()?
            .and_then(|(k, _)| k.get(8..16).and_then(|b| <[u8; 8]>::try_from(b).ok()))
            .map_or(0, |b| u64::from_be_bytes(b) + 1);
        Ok(Ledger {
            audit_seq: 0,
            store,
            summary,
            pending: Vec::new(),
            seq,
            last_fsync: Instant::now(),
            dirty_since_fsync: false,
            flush_interval,
            key_windows: Default::default(),
            retention: Default::default(),
            last_sweep: Instant::now(),
            last_key_sweep: Instant::now(),
        })
    }

    pub fn with_retention(mut self, r: retention::Retention) -> Ledger {
        self.retention = r;
        self
    }

    /// A retention step when one is due: small deletes between batches, never a long one.
    fn sweep(&mut self) -> Result<(), LedgerError> {
        if self.last_sweep.elapsed() < SWEEP_EVERY {
            return Ok(());
        }
        self.last_sweep = Instant::now();
        let now = crate::accounts::now_unix();
        let mut n = retention::step(&self.store, self.retention, now)?;
        if let Some(keep) = self.retention.log {
            let cutoff_ms = now.saturating_sub(keep.as_secs()) * 1000;
            n += audit::prune(&self.store.audit, cutoff_ms, retention::STEP)?;
        }
        if self.last_key_sweep.elapsed() >= KEY_SWEEP_EVERY {
            self.last_key_sweep = Instant::now();
            retention::key_windows(&self.store, now)?;
        }
        if n > 0 {
            self.dirty_since_fsync = true;
            // More to delete: come back soon rather than in a second.
            if n >= retention::STEP {
                self.last_sweep -= SWEEP_EVERY;
            }
        }
        Ok(())
    }

    pub fn summary(&self) -> &UsageSummary {
        &self.summary
    }

    /// Queues an event; it is visible in the summary at once and durable after the next write.
    pub fn record(&mut self, ev: UsageEvent) {
        self.summary.totals.add(&ev);
        if let Some(a) = &ev.account_id {
            self.summary
                .by_account
                .entry(a.clone())
                .or_default()
                .add(&ev);
        }
        if let Some(m) = &ev.model {
            self.summary.by_model.entry(m.clone()).or_default().add(&ev);
        }
        if let Some(k) = &ev.key_id {
            self.summary.by_key.entry(k.clone()).or_default().add(&ev);
            let tree = &self.store.key_usage;
            self.key_windows.add(&ev, |row| {
                tree.get(row)
                    .ok()
                    .flatten()
                    .and_then(|v| serde_json::from_slice(&v).ok())
                    .unwrap_or_default()
            });
        }
        self.pending.push(ev);
    }

    /// Writes pending events and their totals in one transaction.
    pub fn write_pending(&mut self) -> Result<(), LedgerError> {
        while !self.pending.is_empty() {
            let take = self.pending.len().min(MAX_BATCH);
            let batch: Vec<UsageEvent> = self.pending.drain(..take).collect();
            let mut rows = Vec::with_capacity(batch.len());
            let mut accounts: BTreeSet<&str> = BTreeSet::new();
            let mut models: BTreeSet<&str> = BTreeSet::new();
            let mut keys: BTreeSet<&str> = BTreeSet::new();
            for ev in &batch {
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&ev.ts_ms.to_be_bytes());
                key[8..].copy_from_slice(&self.seq.to_be_bytes());
                self.seq += 1;
                rows.push((key, serde_json::to_vec(ev).unwrap_or_default()));
                accounts.extend(ev.account_id.as_deref());
                models.extend(ev.model.as_deref());
                keys.extend(ev.key_id.as_deref());
            }
            // Totals are serialized once per batch, for the scopes the batch touched.
            let json = |t: Option<&Totals>| {
                serde_json::to_vec(t.unwrap_or(&Totals::default())).unwrap_or_default()
            };
            let mut touched: Vec<(String, Vec<u8>)> =
                Vec::with_capacity(1 + accounts.len() + models.len());
            touched.push((TOTAL_ALL.into(), json(Some(&self.summary.totals))));
            touched.extend(accounts.iter().map(|a| {
                (
                    format!("account/{a}"),
                    json(self.summary.by_account.get(*a)),
                )
            }));
            touched.extend(
                models
                    .iter()
                    .map(|m| (format!("model/{m}"), json(self.summary.by_model.get(*m)))),
            );
            touched.extend(
                keys.iter()
                    .map(|k| (format!("key/{k}"), json(self.summary.by_key.get(*k)))),
            );
            let now_secs = batch.last().map_or(0, |e| e.ts_ms / 1000);
            let key_rows = self.key_windows.take_dirty(now_secs);
            let rollup_deltas = rollups::deltas(&batch);
            let res: Result<(), TransactionError<()>> = (
                &self.store.requests,
                &self.store.usage_totals,
                &self.store.key_usage,
                &self.store.rollups,
            )
                .transaction(|(req, tot, kw, roll)| {
                    for (k, v) in &rows {
                        req.insert(&k[..], v.as_slice())?;
                    }
                    for (k, v) in &touched {
                        tot.insert(k.as_bytes(), v.as_slice())?;
                    }
                    for (k, v) in &key_rows {
                        kw.insert(k.as_bytes(), v.as_slice())?;
                    }
                    // Read and written in the transaction: a rollup moves with its rows.
                    for (k, d) in &rollup_deltas {
                        let mut t: Totals = roll
                            .get(k.as_bytes())?
                            .and_then(|v| serde_json::from_slice(&v).ok())
                            .unwrap_or_default();
                        t.merge(d);
                        roll.insert(k.as_bytes(), serde_json::to_vec(&t).unwrap_or_default())?;
                    }
                    Ok::<(), ConflictableTransactionError<()>>(())
                });
            match res {
                Ok(()) => {}
                Err(TransactionError::Storage(e)) => return Err(e.into()),
                Err(TransactionError::Abort(())) => {}
            }
            self.dirty_since_fsync = true;
        }
        Ok(())
    }

    /// Fsyncs when the flush interval has passed (or `force`).
    pub fn maybe_fsync(&mut self, force: bool) -> Result<(), LedgerError> {
        if self.dirty_since_fsync && (force || self.last_fsync.elapsed() >= self.flush_interval) {
            self.store.db.flush()?;
            self.dirty_since_fsync = false;
            self.last_fsync = Instant::now();
        }
        Ok(())
    }

    pub fn recent(&mut self, limit: usize) -> Result<Vec<UsageEvent>, LedgerError> {
        self.write_pending()?;
        let mut out = Vec::with_capacity(limit.min(1000));
        for kv in self.store.requests.iter().rev().take(limit) {
            let (_, v) = kv?;
            if let Ok(ev) = serde_json::from_slice(&v) {
                out.push(ev);
            }
        }
        Ok(out)
    }

    /// The thread body: runs until `Shutdown` or until every sender is gone.
    pub fn run(
        mut self,
        events: Receiver<Box<UsageEvent>>,
        queries: Receiver<LedgerQuery>,
    ) -> Result<(), LedgerError> {
        // The events channel is polled, never blocked on: a sender only makes a syscall to wake a
        // receiver that sleeps in `recv`, so polling keeps every worker's `try_send` free of
        // syscalls. Queries (rare, from the admin API) may wake this thread at once.
        let write_every = self.flush_interval.min(WRITE_INTERVAL);
        let mut last_write = Instant::now();
        loop {
            loop {
                match events.try_recv() {
                    Ok(ev) => {
                        self.record(*ev);
                        if self.pending.len() >= MAX_BATCH {
                            self.write_pending()?;
                            last_write = Instant::now();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return self.finish(&events),
                }
            }
            if last_write.elapsed() >= write_every {
                self.write_pending()?;
                self.maybe_fsync(false)?;
                last_write = Instant::now();
            }
            let query = queries.recv_timeout(EVENT_POLL);
            if query.is_ok() {
                // Answer with every event sent before the question, not just those seen so far.
                while let Ok(ev) = events.try_recv() {
                    self.record(*ev);
                }
            }
            match query {
                Ok(LedgerQuery::Summary(reply)) => {
                    let _ = reply.send(self.summary.clone());
                }
                Ok(LedgerQuery::Search { filter, reply }) => {
                    self.write_pending()?;
                    let _ = reply.send(
                        search::search(&self.store.requests, &filter).map_err(|e| e.to_string()),
                    );
                }
                Ok(LedgerQuery::Usage {
                    granularity,
                    dim,
                    since,
                    until,
                    reply,
                }) => {
                    self.write_pending()?;
                    let rows = rollups::read(&self.store.rollups, granularity, dim, since, until);
                    let _ = reply.send(rows.map_err(|e| e.to_string()));
                }
                Ok(LedgerQuery::Audit(entry)) => {
                    self.audit_seq += 1;
                    let key = audit::row_key(entry.ts_ms, self.audit_seq);
                    if let Ok(v) = serde_json::to_vec(&*entry) {
                        self.store.audit.insert(key, v)?;
                        self.dirty_since_fsync = true;
                    }
                }
                Ok(LedgerQuery::AuditList { limit, reply }) => {
                    let _ = reply
                        .send(audit::list(&self.store.audit, limit).map_err(|e| e.to_string()));
                }
                Ok(LedgerQuery::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                    return self.finish(&events)
                }
                Err(RecvTimeoutError::Timeout) => self.sweep()?,
            }
        }
    }

    fn finish(mut self, events: &Receiver<Box<UsageEvent>>) -> Result<(), LedgerError> {
        while let Ok(ev) = events.try_recv() {
            self.record(*ev);
        }
        self.write_pending()?;
        self.maybe_fsync(true)?;
        tracing::info!(requests = self.summary.totals.requests, "ledger flushed");
        Ok(())
    }
}

/// Starts the ledger thread.
pub fn spawn(
    ledger: Ledger,
    events: Receiver<Box<UsageEvent>>,
    queries: Receiver<LedgerQuery>,
) -> std::io::Result<JoinHandle<Result<(), LedgerError>>> {
    std::thread::Builder::new()
        .name("codex-lb-ledger".into())
        .spawn(move || ledger.run(events, queries))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn event(account: &str, model: &str, input: u64) -> UsageEvent {
        UsageEvent {
            ts_ms: 1,
            request_id: "r".into(),
            route: "responses".into(),
            account_id: Some(account.into()),
            model: Some(model.into()),
            status: 200,
            outcome: Outcome::Completed,
            error_code: None,
            input_tokens: input,
            cached_tokens: 1,
            output_tokens: 2,
            reasoning_tokens: 1,
            total_tokens: input + 2,
            request_bytes: 10,
            response_bytes: 20,
            latency_ms: 5,
            ttfb_ms: Some(1),
            attempts: 1,
            ..Default::default()
        }
    }

    #[test]
    fn totals_survive_reopen_and_recent_is_newest_first() {
        let dir = std::env::temp_dir().join(format!("codex-lb-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Store::open(&dir).unwrap();
            let mut l = Ledger::open(store, Duration::from_secs(1)).unwrap();
            l.record(event("a", "m1", 10));
            l.record(event("b", "m1", 5));
            l.record(UsageEvent {
                request_id: "last".into(),
                ..event("a", "m2", 1)
            });
            l.write_pending().unwrap();
            l.maybe_fsync(true).unwrap();
            let recent = l.recent(2).unwrap();
            assert_eq!(recent.len(), 2);
            assert_eq!(recent[0].request_id, "last");
        }
        let store = Store::open_waiting(&dir, Duration::from_secs(5), false).unwrap();
        let l = Ledger::open(store, Duration::from_secs(1)).unwrap();
        let s = l.summary();
        assert_eq!(s.totals.requests, 3);
        assert_eq!(s.totals.input_tokens, 16);
        assert_eq!(s.by_account["a"].input_tokens, 11);
        assert_eq!(s.by_model["m1"].requests, 2);
        assert_eq!(l.seq, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
