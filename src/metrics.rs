//! Per-worker counters. Each worker writes only its own cells (plain load+store, no contended
//! atomics on the hot path); readers such as `/health` sum them off the hot path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;
use serde::Serialize;

#[derive(Debug, Default)]
pub struct CoreMetrics {
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicU64,
    /// Refused because the worker was at its connection cap.
    pub connections_refused: AtomicU64,
    pub requests: AtomicU64,
    pub requests_in_flight: AtomicU64,
    pub streams_open: AtomicU64,
    /// Requests answered with a 4xx the gateway produced (bad input, limits).
    pub client_errors: AtomicU64,
    pub timeouts: AtomicU64,
    /// Connection tasks that panicked; the guard kept the worker alive.
    pub panics: AtomicU64,
    /// Usage events dropped because the ledger channel was full.
    pub ledger_dropped: AtomicU64,
    pub upstream_connects: AtomicU64,
    pub upstream_reused: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub failovers: AtomicU64,
    /// Conversations sent away from their home account (it could not serve them).
    pub sticky_moves: AtomicU64,
    pub driver: OnceLock<&'static str>,
}

/// Adds one to a cell only its owning worker writes.
#[inline]
pub fn inc(c: &AtomicU64) {
    c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
}

#[inline]
pub fn dec(c: &AtomicU64) {
    c.store(c.load(Relaxed).saturating_sub(1), Relaxed);
}

/// The sum over workers, as `/health` reports it.
#[derive(Debug, Default, Clone, Serialize)]
pub struct MetricsTotals {
    pub connections_accepted: u64,
    pub connections_open: u64,
    pub connections_refused: u64,
    pub requests: u64,
    pub requests_in_flight: u64,
    pub streams_open: u64,
    pub client_errors: u64,
    pub timeouts: u64,
    pub panics: u64,
    pub ledger_dropped: u64,
    pub upstream_connects: u64,
    pub upstream_reused: u64,
    pub upstream_errors: u64,
    pub failovers: u64,
    pub sticky_moves: u64,
}

pub fn sum(cores: &[std::sync::Arc<CachePadded<CoreMetrics>>]) -> MetricsTotals {
    let mut t = MetricsTotals::default();
    for c in cores {
        t.connections_accepted += c.connections_accepted.load(Relaxed);
        t.connections_open += c.connections_open.load(Relaxed);
        t.connections_refused += c.connections_refused.load(Relaxed);
        t.requests += c.requests.load(Relaxed);
        t.requests_in_flight += c.requests_in_flight.load(Relaxed);
        t.streams_open += c.streams_open.load(Relaxed);
        t.client_errors += c.client_errors.load(Relaxed);
        t.timeouts += c.timeouts.load(Relaxed);
        t.panics += c.panics.load(Relaxed);
        t.ledger_dropped += c.ledger_dropped.load(Relaxed);
        t.upstream_connects += c.upstream_connects.load(Relaxed);
        t.upstream_reused += c.upstream_reused.load(Relaxed);
        t.upstream_errors += c.upstream_errors.load(Relaxed);
        t.failovers += c.failovers.load(Relaxed);
        t.sticky_moves += c.sticky_moves.load(Relaxed);
    }
    t
}
