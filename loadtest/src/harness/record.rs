//! What one request produced ([`Outcome`]) and the per-run tally of them ([`Recorder`]):
//! latency histograms, byte and event counts, errors by kind.
//!
//! Latencies are recorded for successful requests only; a fast 503 would otherwise pull the
//! percentiles down exactly when the target is failing.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::hist::Hist;

/// Why a request did not end with `response.completed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// TCP connect failed.
    Connect,
    /// The request did not finish within `--timeout` (or the drain deadline).
    Timeout,
    /// The response status was not 200 (for a WebSocket upgrade: not 101).
    Status(u16),
    /// The connection ended (EOF or reset) before the body's end or before a terminal event
    /// (WebSocket: the socket closed mid-turn).
    Truncated,
    /// The stream ended with `response.failed`, `response.incomplete` or `error`.
    FailedEvent,
    /// Unparseable response head or chunked framing (WebSocket: a failed handshake, a binary
    /// message).
    Protocol,
    /// A socket error while writing the request or reading the response.
    Io,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Connect => f.write_str("connect"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Status(s) => write!(f, "status_{s}"),
            ErrorKind::Truncated => f.write_str("truncated"),
            ErrorKind::FailedEvent => f.write_str("failed_event"),
            ErrorKind::Protocol => f.write_str("protocol"),
            ErrorKind::Io => f.write_str("io"),
        }
    }
}

/// One request's measurements; durations are from the request's start (or its scheduled start
/// in open-loop mode).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub ttfb: Option<Duration>,
    pub ttfd: Option<Duration>,
    pub total: Duration,
    /// Microseconds between consecutive delta events.
    pub gaps_us: Vec<u64>,
    /// Response bytes received (head and body, as on the wire).
    pub bytes: u64,
    /// Request bytes written (head and body).
    pub sent: u64,
    pub events: u64,
    pub error: Option<ErrorKind>,
}

/// Tally of a run (or of several, merged).
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    pub ok: u64,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub ttfb: Hist,
    pub ttfd: Hist,
    pub total: Hist,
    pub gap: Hist,
    /// WebSocket upgrades that succeeded (`ws` scenario): TCP connect to the 101, timed apart
    /// from the turns.
    pub upgrade: Hist,
    pub bytes: u64,
    pub sent: u64,
    pub events: u64,
}

impl Recorder {
    pub fn record(&mut self, o: &Outcome) {
        self.bytes += o.bytes;
        self.sent += o.sent;
        self.events += o.events;
        if let Some(kind) = o.error {
            *self.errors.entry(kind).or_default() += 1;
            return;
        }
        self.ok += 1;
        if let Some(t) = o.ttfb {
            self.ttfb.record(t);
        }
        if let Some(t) = o.ttfd {
            self.ttfd.record(t);
        }
        self.total.record(o.total);
        for &g in &o.gaps_us {
            self.gap.record_us(g);
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.ok += other.ok;
        for (k, n) in &other.errors {
            *self.errors.entry(*k).or_default() += n;
        }
        self.ttfb.merge(&other.ttfb);
        self.ttfd.merge(&other.ttfd);
        self.total.merge(&other.total);
        self.gap.merge(&other.gap);
        self.upgrade.merge(&other.upgrade);
        self.bytes += other.bytes;
        self.sent += other.sent;
        self.events += other.events;
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Errors keyed by their label (`status_503`, `truncated`, ...).
    pub fn errors_by_label(&self) -> BTreeMap<String, u64> {
        self.errors
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ms: u64) -> Outcome {
        Outcome {
            ttfb: Some(Duration::from_millis(ms)),
            ttfd: Some(Duration::from_millis(ms + 1)),
            total: Duration::from_millis(ms + 2),
            gaps_us: vec![100, 200],
            bytes: 1000,
            sent: 700,
            events: 10,
            error: None,
        }
    }

    #[test]
    fn errors_count_bytes_but_not_latency() {
        let mut r = Recorder::default();
        r.record(&ok(5));
        r.record(&Outcome {
            bytes: 300,
            error: Some(ErrorKind::Status(503)),
            ..Outcome::default()
        });
        assert_eq!((r.ok, r.error_total(), r.bytes, r.events), (1, 1, 1300, 10));
        assert_eq!((r.ttfb.count(), r.gap.count()), (1, 2));
        assert_eq!(r.errors_by_label()["status_503"], 1);
    }

    #[test]
    fn merge_adds_everything() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        a.record(&ok(1));
        b.record(&ok(3));
        b.record(&Outcome {
            error: Some(ErrorKind::Truncated),
            ..Outcome::default()
        });
        a.merge(&b);
        assert_eq!((a.ok, a.error_total(), a.bytes, a.sent), (2, 1, 2000, 1400));
        assert_eq!((a.ttfd.count(), a.gap.count()), (2, 4));
        assert_eq!(a.errors[&ErrorKind::Truncated], 1);
        assert_eq!(ErrorKind::FailedEvent.to_string(), "failed_event");
    }
}
