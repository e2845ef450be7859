//! Per-worker counters. Each worker writes only its own cells (plain load+store, no contended
//! atomics on the hot path); readers such as `/health` and `/metrics` sum them off the hot path.
//!
//! Besides the plain counters, each worker keeps what `proxy::record` saw about finished requests
//! ([`RequestMetrics`]): latency histograms in fixed atomic cells, and counters by route, status,
//! account, model and error code in maps that only the owning worker writes. Their label sets
//! are bounded ([`MAX_SERIES`], [`MAX_LABEL_BYTES`]). This module never formats output; the
//! Prometheus text lives in `dashboard::prometheus`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

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
    /// Client WebSocket upgrades accepted.
    pub websocket_upgrades: AtomicU64,
    /// Conversations sent away from their home account (it could not serve them).
    pub sticky_moves: AtomicU64,
    pub driver: OnceLock<&'static str>,
    /// Finished requests by label, as `proxy::record` reports them.
    pub recorded: RequestMetrics,
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
    pub websocket_upgrades: u64,
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
        t.websocket_upgrades += c.websocket_upgrades.load(Relaxed);
        t.sticky_moves += c.sticky_moves.load(Relaxed);
    }
    t
}

// === Recorded requests, by label ===

/// Upper bounds of the latency histograms' buckets: the `le` label and the bound in
/// microseconds. They run from a quick refusal (5 ms) to a long reasoning stream (5 min).
pub const DURATION_BUCKETS: [(&str, u64); 15] = [
    ("0.005", 5_000),
    ("0.01", 10_000),
    ("0.025", 25_000),
    ("0.05", 50_000),
    ("0.1", 100_000),
    ("0.25", 250_000),
    ("0.5", 500_000),
    ("1", 1_000_000),
    ("2.5", 2_500_000),
    ("5", 5_000_000),
    ("10", 10_000_000),
    ("30", 30_000_000),
    ("60", 60_000_000),
    ("120", 120_000_000),
    ("300", 300_000_000),
];
/// Cells per histogram: one per bound and the `+Inf` overflow.
const BUCKETS: usize = DURATION_BUCKETS.len() + 1;

/// The `route` label of recorded requests (the names `proxy::ProxyRoute::name` gives; a test
/// there keeps the two lists together); any other route is counted as `other`.
pub const ROUTES: [&str; 8] = [
    "responses",
    "models",
    "v1/responses",
    "v1/chat/completions",
    "compact",
    "control",
    "transcribe",
    OTHER,
];

/// Distinct label combinations one worker keeps per family (`requests`, `usage`, `errors`).
/// Past it a new account or model is folded into `other`, so a client inventing model names
/// cannot grow the map.
pub const MAX_SERIES: usize = 1000;
/// Longest label value kept (bytes); longer ones are cut at a character boundary.
pub const MAX_LABEL_BYTES: usize = 128;
/// The label value that stands for folded accounts, models, error codes and routes.
pub const OTHER: &str = "other";
/// The label value for a request without an account or model.
pub const NONE: &str = "none";
/// The error code of a request that did not complete and named no code.
pub const UNKNOWN_CODE: &str = "unknown";

/// What `proxy::record` tells the metrics about one finished request.
#[derive(Debug, Clone, Copy)]
pub struct RequestSample<'a> {
    pub route: &'a str,
    pub status: u16,
    pub account: Option<&'a str>,
    pub model: Option<&'a str>,
    /// The request ended as completed; otherwise it counts under `errors` by its code.
    pub completed: bool,
    pub error_code: Option<&'a str>,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    /// `None`: the model has no price.
    pub cost_micro_usd: Option<u64>,
    pub duration: Duration,
    pub ttfb: Option<Duration>,
}

/// Token and cost sums of one (account, model).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UsageCounts {
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_micro_usd: u64,
    /// Requests that had a price; `cost_micro_usd` is meaningful only when this is non-zero.
    pub priced_requests: u64,
}

impl UsageCounts {
    fn add(&mut self, o: &UsageCounts) {
        self.input_tokens += o.input_tokens;
        self.cached_tokens += o.cached_tokens;
        self.output_tokens += o.output_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.cost_micro_usd += o.cost_micro_usd;
        self.priced_requests += o.priced_requests;
    }
}

/// One worker's latency histogram: a cell per bucket (not cumulative) and the sum, written only
/// by the owning worker. The count is the sum of the cells, so a reader never sees a count that
/// disagrees with the buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Owner only (plain load+store, like [`inc`]).
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        // `le` is inclusive: a value equal to a bound belongs to that bound's bucket.
        let i = DURATION_BUCKETS.partition_point(|&(_, bound)| bound < us);
        if let Some(c) = self.buckets.get(i) {
            inc(c);
        }
        let s = &self.sum_micros;
        s.store(s.load(Relaxed).saturating_add(us), Relaxed);
    }

    pub fn read(&self) -> HistogramTotals {
        HistogramTotals {
            buckets: std::array::from_fn(|i| self.buckets.get(i).map_or(0, |c| c.load(Relaxed))),
            sum_micros: self.sum_micros.load(Relaxed),
        }
    }
}

/// A histogram summed over workers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HistogramTotals {
    /// Observations per bucket, not cumulative; the last cell is above every bound.
    pub buckets: [u64; BUCKETS],
    pub sum_micros: u64,
}

impl HistogramTotals {
    pub fn merge(&mut self, o: &HistogramTotals) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.sum_micros += o.sum_micros;
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// `(le, cumulative count)` for every bound, then `("+Inf", count)`.
    pub fn cumulative(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let les = DURATION_BUCKETS.iter().map(|&(le, _)| le).chain(["+Inf"]);
        les.zip(self.buckets.iter().scan(0u64, |acc, n| {
            *acc += n;
            Some(*acc)
        }))
    }
}

/// What `proxy::record` saw on one worker: latency histograms in fixed atomic cells, and the
/// labelled counters in maps behind a mutex. Only the owning worker records, so its lock is
/// uncontended except while `/metrics` copies the maps out (a few microseconds, off the hot path).
#[derive(Debug, Default)]
pub struct RequestMetrics {
    duration: [Histogram; ROUTES.len()],
    ttfb: [Histogram; ROUTES.len()],
    series: Mutex<Series>,
}

/// The labelled counters of one worker. Keys are `Box<str>` so a lookup borrows the request's
/// strings and allocates only for a new label value.
#[derive(Debug, Default)]
struct Series {
    by_account: HashMap<Box<str>, AccountSeries>,
    errors: HashMap<Box<str>, u64>,
    /// Distinct (route, status, account) held, bounded by [`MAX_SERIES`] plus the folded ones.
    request_series: usize,
    /// Distinct (account, model) held, bounded the same way.
    usage_series: usize,
}

#[derive(Debug, Default)]
struct AccountSeries {
    /// (index in [`ROUTES`], status) → requests.
    requests: HashMap<(usize, u16), u64>,
    by_model: HashMap<Box<str>, UsageCounts>,
}

impl RequestMetrics {
    /// Counts one finished request. Called by the owning worker only.
    pub fn record(&self, s: &RequestSample<'_>) {
        let route = route_index(s.route);
        if let Some(h) = self.duration.get(route) {
            h.observe(s.duration);
        }
        if let (Some(t), Some(h)) = (s.ttfb, self.ttfb.get(route)) {
            h.observe(t);
        }
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        series.record(route, s);
    }

    /// Adds this worker's counters to `into`.
    pub fn read_into(&self, into: &mut RequestTotals) {
        for (i, h) in self.duration.iter().enumerate() {
            if let Some(t) = into.duration.get_mut(i) {
                t.merge(&h.read());
            }
        }
        for (i, h) in self.ttfb.iter().enumerate() {
            if let Some(t) = into.ttfb.get_mut(i) {
                t.merge(&h.read());
            }
        }
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        for (account, a) in &series.by_account {
            for (&(route, status), n) in &a.requests {
                let route = ROUTES.get(route).copied().unwrap_or(OTHER);
                *into
                    .requests
                    .entry((route, status, account.to_string()))
                    .or_default() += n;
            }
            for (model, u) in &a.by_model {
                into.usage
                    .entry((account.to_string(), model.to_string()))
                    .or_default()
                    .add(u);
            }
        }
        for (code, n) in &series.errors {
            *into.errors.entry(code.to_string()).or_default() += n;
        }
    }
}

impl Series {
    fn record(&mut self, route: usize, s: &RequestSample<'_>) {
        let account = label(s.account, NONE);
        let status = s.status;

        let known = self
            .by_account
            .get(account)
            .is_some_and(|a| a.requests.contains_key(&(route, status)));
        let key = if known || self.request_series < MAX_SERIES {
            account
        } else {
            OTHER
        };
        let added = with_slot(&mut self.by_account, key, |a| {
            let mut added = false;
            *a.requests.entry((route, status)).or_insert_with(|| {
                added = true;
                0
            }) += 1;
            added
        });
        self.request_series += usize::from(added);

        let tokens = s.input_tokens | s.cached_tokens | s.output_tokens | s.reasoning_tokens;
        if tokens > 0 || s.cost_micro_usd.is_some() {
            let model = label(s.model, NONE);
            let known = self
                .by_account
                .get(account)
                .is_some_and(|a| a.by_model.contains_key(model));
            let (account, model) = if known || self.usage_series < MAX_SERIES {
                (account, model)
            } else {
                (OTHER, OTHER)
            };
            let add = UsageCounts {
                input_tokens: s.input_tokens,
                cached_tokens: s.cached_tokens,
                output_tokens: s.output_tokens,
                reasoning_tokens: s.reasoning_tokens,
                cost_micro_usd: s.cost_micro_usd.unwrap_or(0),
                priced_requests: u64::from(s.cost_micro_usd.is_some()),
            };
            let added = with_slot(&mut self.by_account, account, |a| {
                let added = !a.by_model.contains_key(model);
                with_slot(&mut a.by_model, model, |u| u.add(&add));
                added
            });
            self.usage_series += usize::from(added);
        }

        if !s.completed {
            let code = label(s.error_code, UNKNOWN_CODE);
            let code = if self.errors.contains_key(code) || self.errors.len() < MAX_SERIES {
                code
            } else {
                OTHER
            };
            with_slot(&mut self.errors, code, |n| *n += 1);
        }
    }
}

/// Runs `f` on the value under `key`, inserting a default first; allocates only for a new key.
fn with_slot<V: Default, R>(
    map: &mut HashMap<Box<str>, V>,
    key: &str,
    f: impl FnOnce(&mut V) -> R,
) -> R {
    match map.get_mut(key) {
        Some(v) => f(v),
        None => f(map.entry(Box::from(key)).or_default()),
    }
}

fn route_index(route: &str) -> usize {
    ROUTES
        .iter()
        .position(|r| *r == route)
        .unwrap_or(ROUTES.len() - 1)
}

/// A label value: `fallback` when absent or empty, at most [`MAX_LABEL_BYTES`] long.
fn label<'a>(v: Option<&'a str>, fallback: &'a str) -> &'a str {
    let v = v.filter(|v| !v.is_empty()).unwrap_or(fallback);
    let mut end = v.len().min(MAX_LABEL_BYTES);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v.get(..end).unwrap_or(fallback)
}

/// The recorded requests summed over workers, sorted for stable output.
#[derive(Debug, Default, Clone)]
pub struct RequestTotals {
    /// (route, status, account) → requests.
    pub requests: BTreeMap<(&'static str, u16, String), u64>,
    /// (account, model) → tokens and cost.
    pub usage: BTreeMap<(String, String), UsageCounts>,
    /// Error code → requests that did not complete.
    pub errors: BTreeMap<String, u64>,
    /// Per route, in [`ROUTES`] order.
    pub duration: [HistogramTotals; ROUTES.len()],
    pub ttfb: [HistogramTotals; ROUTES.len()],
}

/// Every worker's recorded requests, summed.
pub fn request_totals(cores: &[std::sync::Arc<CachePadded<CoreMetrics>>]) -> RequestTotals {
    let mut t = RequestTotals::default();
    for c in cores {
        c.recorded.read_into(&mut t);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(account: &'a str, model: &'a str) -> RequestSample<'a> {
        RequestSample {
            route: "responses",
            status: 200,
            account: Some(account),
            model: Some(model),
            completed: true,
            error_code: None,
            input_tokens: 3,
            cached_tokens: 1,
            output_tokens: 2,
            reasoning_tokens: 0,
            cost_micro_usd: None,
            duration: Duration::from_millis(1),
            ttfb: None,
        }
    }

    fn totals(m: &RequestMetrics) -> RequestTotals {
        let mut t = RequestTotals::default();
        m.read_into(&mut t);
        t
    }

    #[test]
    fn a_value_on_a_bound_falls_in_that_bucket_and_one_past_in_the_next() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(5_000));
        h.observe(Duration::from_micros(5_001));
        h.observe(Duration::from_secs(301));
        let t = h.read();
        let cumulative: Vec<(&str, u64)> = t.cumulative().collect();
        assert_eq!(cumulative.first(), Some(&("0.005", 1)));
        assert_eq!(cumulative.get(1), Some(&("0.01", 2)));
        assert_eq!(cumulative.get(14), Some(&("300", 2)));
        assert_eq!(cumulative.last(), Some(&("+Inf", 3)));
        assert_eq!(cumulative.len(), DURATION_BUCKETS.len() + 1);
        assert_eq!(t.count(), 3);
        assert_eq!(t.sum_micros, 5_000 + 5_001 + 301_000_000);
    }

    #[test]
    fn bucket_bounds_rise_and_match_their_labels() {
        for pair in DURATION_BUCKETS.windows(2) {
            assert!(pair[0].1 < pair[1].1, "{pair:?}");
        }
        for (le, us) in DURATION_BUCKETS {
            let secs: f64 = le.parse().unwrap();
            assert_eq!((secs * 1e6).round() as u64, us, "{le}");
        }
    }

    #[test]
    fn counts_requests_tokens_cost_and_errors_by_label() {
        let m = RequestMetrics::default();
        m.record(&sample("a", "gpt"));
        m.record(&RequestSample {
            cost_micro_usd: Some(20),
            ..sample("a", "gpt")
        });
        m.record(&RequestSample {
            route: "ws",
            status: 0,
            account: None,
            model: Some(""),
            completed: false,
            input_tokens: 0,
            cached_tokens: 0,
            output_tokens: 0,
            reasoning_tokens: 0,
            ttfb: Some(Duration::from_millis(2)),
            ..sample("a", "gpt")
        });
        let t = totals(&m);
        assert_eq!(t.requests.get(&("responses", 200, "a".into())), Some(&2));
        assert_eq!(t.requests.get(&(OTHER, 0, NONE.into())), Some(&1));
        let u = t.usage.get(&("a".into(), "gpt".into())).copied();
        assert_eq!(
            u,
            Some(UsageCounts {
                input_tokens: 6,
                cached_tokens: 2,
                output_tokens: 4,
                reasoning_tokens: 0,
                cost_micro_usd: 20,
                priced_requests: 1,
            })
        );
        // No tokens and no price: no usage series.
        assert_eq!(t.usage.len(), 1);
        assert_eq!(t.errors.get(UNKNOWN_CODE), Some(&1));
        let other = ROUTES.len() - 1;
        assert_eq!(t.duration[0].count(), 2);
        assert_eq!(t.duration[other].count(), 1);
        assert_eq!(t.ttfb[other].count(), 1);
        assert_eq!(t.ttfb[0].count(), 0);
    }

    #[test]
    fn label_sets_are_capped_per_worker() {
        let m = RequestMetrics::default();
        let names: Vec<String> = (0..=MAX_SERIES).map(|i| format!("acc{i}")).collect();
        // Exactly at the cap: every account keeps its own series.
        for n in names.iter().take(MAX_SERIES) {
            m.record(&sample(n, n));
        }
        let t = totals(&m);
        assert_eq!(t.requests.len(), MAX_SERIES);
        assert_eq!(t.usage.len(), MAX_SERIES);
        assert!(!t.requests.keys().any(|k| k.2 == OTHER));
        // One past it: folded into `other`, while known ones still count as themselves.
        let last = names.last().unwrap();
        m.record(&sample(last, last));
        m.record(&sample("acc0", "acc0"));
        m.record(&RequestSample {
            status: 500,
            ..sample("acc0", "acc0")
        });
        let t = totals(&m);
        assert_eq!(t.requests.get(&("responses", 200, OTHER.into())), Some(&1));
        assert_eq!(t.requests.get(&("responses", 500, OTHER.into())), Some(&1));
        assert_eq!(t.requests.get(&("responses", 200, "acc0".into())), Some(&2));
        assert_eq!(
            t.usage
                .get(&(OTHER.into(), OTHER.into()))
                .map(|u| u.input_tokens),
            Some(3)
        );
        assert_eq!(
            t.usage
                .get(&("acc0".into(), "acc0".into()))
                .map(|u| u.input_tokens),
            Some(9)
        );
        assert_eq!(t.requests.len(), MAX_SERIES + 2);
        assert_eq!(t.usage.len(), MAX_SERIES + 1);
        let total: u64 = t.requests.values().sum();
        assert_eq!(total, MAX_SERIES as u64 + 3);
    }

    #[test]
    fn error_codes_are_capped_too() {
        let m = RequestMetrics::default();
        let codes: Vec<String> = (0..=MAX_SERIES).map(|i| format!("code{i}")).collect();
        for c in &codes {
            m.record(&RequestSample {
                completed: false,
                error_code: Some(c),
                ..sample("a", "m")
            });
        }
        let t = totals(&m);
        assert_eq!(t.errors.len(), MAX_SERIES + 1);
        assert_eq!(t.errors.get(OTHER), Some(&1));
        assert_eq!(t.errors.get("code0"), Some(&1));
    }

    #[test]
    fn long_label_values_are_cut_at_a_char_boundary() {
        let exact = "a".repeat(MAX_LABEL_BYTES);
        assert_eq!(label(Some(&exact), NONE), exact);
        let past = format!("{exact}b");
        assert_eq!(label(Some(&past), NONE), exact);
        // A two-byte character straddling the limit is dropped whole.
        let straddle = format!("{}é", "a".repeat(MAX_LABEL_BYTES - 1));
        assert_eq!(label(Some(&straddle), NONE).len(), MAX_LABEL_BYTES - 1);
        assert_eq!(label(Some(""), NONE), NONE);
        assert_eq!(label(None, NONE), NONE);
    }

    #[test]
    fn workers_sum() {
        let a = std::sync::Arc::new(CachePadded::new(CoreMetrics::default()));
        let b = std::sync::Arc::new(CachePadded::new(CoreMetrics::default()));
        a.recorded.record(&sample("x", "m"));
        b.recorded.record(&sample("x", "m"));
        b.recorded.record(&sample("y", "m"));
        let t = request_totals(&[a, b]);
        assert_eq!(t.requests.get(&("responses", 200, "x".into())), Some(&2));
        assert_eq!(t.requests.get(&("responses", 200, "y".into())), Some(&1));
        assert_eq!(t.duration[0].count(), 3);
    }
}
