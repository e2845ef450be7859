//! Running totals for one scope (all traffic, one account, one model).

use serde::{Deserialize, Serialize};

use super::{Outcome, UsageEvent};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub requests: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
    pub response_bytes: u64,
    /// Cost of the priced requests, micro-USD.
    pub cost_micro_usd: u64,
    /// Requests with tokens whose model has no price: their cost is unknown, not zero.
    pub unpriced_requests: u64,
}

impl Totals {
    /// Adds another scope's totals (rollup deltas into stored rows).
    pub fn merge(&mut self, o: &Totals) {
        self.requests += o.requests;
        self.completed += o.completed;
        self.failed += o.failed;
        self.cancelled += o.cancelled;
        self.errors += o.errors;
        self.input_tokens += o.input_tokens;
        self.cached_tokens += o.cached_tokens;
        self.output_tokens += o.output_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.total_tokens += o.total_tokens;
        self.response_bytes += o.response_bytes;
        self.cost_micro_usd += o.cost_micro_usd;
        self.unpriced_requests += o.unpriced_requests;
    }

    pub fn add(&mut self, ev: &UsageEvent) {
        self.requests += 1;
        match ev.outcome {
            Outcome::Completed => self.completed += 1,
            Outcome::Failed | Outcome::Incomplete => self.failed += 1,
            Outcome::Cancelled => self.cancelled += 1,
            Outcome::UpstreamError | Outcome::Rejected => self.errors += 1,
        }
        self.input_tokens += ev.input_tokens;
        self.cached_tokens += ev.cached_tokens;
        self.output_tokens += ev.output_tokens;
        self.reasoning_tokens += ev.reasoning_tokens;
        self.total_tokens += ev.total_tokens;
        self.response_bytes += ev.response_bytes;
        match ev.cost_micro_usd {
            Some(c) => self.cost_micro_usd += c,
            None if ev.total_tokens > 0 => self.unpriced_requests += 1,
            None => {}
        }
    }
}
