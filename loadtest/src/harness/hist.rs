//! Latency histograms: hdrhistogram in microseconds, merged across tasks, rounds and runs, and
//! the percentile summary that reports and JSON carry.
//!
//! Values above the bound are clamped to it instead of dropped, so a pathological stall still
//! shows up in p99.9 and max.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest recordable value: one hour, in microseconds.
const MAX_US: u64 = 3_600_000_000;
/// Three significant figures: 0.1 % resolution at every magnitude.
const SIGFIGS: u8 = 3;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

impl Hist {
    pub fn new() -> Hist {
        // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low,
        // sigfig <= 5), so this cannot fail.
        #[allow(clippy::expect_used)]
        let h = Histogram::new_with_bounds(1, MAX_US, SIGFIGS).expect("valid histogram bounds");
        Hist(h)
    }

    pub fn record(&mut self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(MAX_US));
    }

    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.min(MAX_US));
    }

    pub fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides, so `add` cannot fail; saturate counts if it ever did.
        if self.0.add(&other.0).is_err() {
            for v in other.0.iter_recorded() {
                self.0
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Value at `q` (0..=1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn summary(&self) -> Summary {
        if self.0.is_empty() {
            return Summary::default();
        }
        Summary {
            count: self.0.len(),
            mean_ms: self.0.mean() / 1000.0,
            p50_ms: self.quantile_ms(0.50),
            p90_ms: self.quantile_ms(0.90),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: self.0.max() as f64 / 1000.0,
        }
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut a = Hist::new();
        let mut b = Hist::new();
        let mut all = Hist::new();
        for us in 1..=1000u64 {
            let target = if us % 3 == 0 { &mut a } else { &mut b };
            target.record_us(us * 10);
            all.record_us(us * 10);
        }
        a.merge(&b);
        assert_eq!(a.count(), 1000);
        assert_eq!(a.summary(), all.summary());
        let s = a.summary();
        assert!((s.p50_ms - 5.0).abs() < 0.01, "{s:?}");
        assert!((s.p99_ms - 9.9).abs() < 0.01, "{s:?}");
        assert!((s.max_ms - 10.0).abs() < 0.01, "{s:?}");
    }

    #[test]
    fn empty_and_out_of_range() {
        assert_eq!(Hist::new().summary(), Summary::default());
        let mut h = Hist::new();
        h.record(Duration::from_secs(7200));
        h.record_us(0);
        assert_eq!(h.count(), 2);
        assert!((h.summary().max_ms - 3_600_000.0).abs() / 3_600_000.0 < 0.001);
    }
}
