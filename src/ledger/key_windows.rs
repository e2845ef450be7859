//! Per-key usage in each limit window, kept by the ledger in the `key_usage` tree so a restart
//! (or a rule added later) starts from what the key already spent in the current window.
//!
//! Rows: `{key id}/{window}/{window start}/{model or *}` → `WindowUsage`. Each finished request
//! of a key adds to 4 windows × (all models, its model) = 8 rows, aggregated per batch.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::UsageEvent;
use crate::keys::{LimitKind, LimitWindow};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WindowUsage {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub cost_micro_usd: u64,
}

impl WindowUsage {
    /// The amount a rule of `kind` counts, in counter units.
    pub fn units(&self, kind: LimitKind) -> u64 {
        match kind {
            LimitKind::TotalTokens => self.input_tokens + self.output_tokens,
            LimitKind::InputTokens => self.input_tokens,
            LimitKind::OutputTokens => self.output_tokens,
            LimitKind::CostUsd => self.cost_micro_usd,
        }
    }
}

pub fn row_key(key_id: &str, window: LimitWindow, start: u64, model: Option<&str>) -> String {
    format!(
        "{key_id}/{}/{start:010}/{}",
        window.as_str(),
        model.map_or("*".to_string(), str::to_ascii_lowercase)
    )
}

/// The rows of current windows this process has touched, and which changed since the last write.
#[derive(Default)]
pub struct KeyWindows {
    rows: HashMap<String, (u64, WindowUsage)>,
    dirty: BTreeSet<String>,
}

impl KeyWindows {
    /// Adds one event; `load` reads a row not seen yet in this process.
    pub fn add(&mut self, ev: &UsageEvent, mut load: impl FnMut(&str) -> WindowUsage) {
        let Some(key) = ev.key_id.as_deref() else {
            return;
        };
        let now = ev.ts_ms / 1000;
        for window in LimitWindow::ALL {
            let (start, end) = window.bounds(now);
            for model in [None, ev.model.as_deref()] {
                if model.is_some() && ev.model.is_none() {
                    continue;
                }
                let k = row_key(key, window, start, model);
                let (_, u) = self
                    .rows
                    .entry(k.clone())
                    .or_insert_with(|| (end, load(&k)));
                u.requests += 1;
                u.input_tokens += ev.input_tokens;
                u.output_tokens += ev.output_tokens;
                u.total_tokens += ev.total_tokens;
                u.cost_micro_usd += ev.cost_micro_usd.unwrap_or(0);
                self.dirty.insert(k);
            }
        }
    }

    /// The changed rows to write, serialized; forgets rows of windows that have ended.
    pub fn take_dirty(&mut self, now: u64) -> Vec<(String, Vec<u8>)> {
        let out = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|k| {
                let (_, u) = self.rows.get(&k)?;
                Some((k, serde_json::to_vec(u).unwrap_or_default()))
            })
            .collect();
        self.rows.retain(|_, (end, _)| *end > now);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_counts_in_every_window_for_all_models_and_its_own() {
        let mut kw = KeyWindows::default();
        let ev = UsageEvent {
            key_id: Some("key_1".into()),
            cost_micro_usd: Some(7),
            ts_ms: 1_795_700_700_000,
            ..super::super::tests::event("a", "gpt-5.5", 100)
        };
        kw.add(&ev, |_| WindowUsage {
            input_tokens: 1,
            ..Default::default()
        });
        kw.add(&ev, |_| unreachable!("loaded once"));
        let rows = kw.take_dirty(1_795_700_700);
        assert_eq!(rows.len(), 8);
        let daily = row_key("key_1", LimitWindow::Daily, 1_795_651_200, None);
        let (_, v) = rows.iter().find(|(k, _)| *k == daily).unwrap();
        let u: WindowUsage = serde_json::from_slice(v).unwrap();
        assert_eq!((u.requests, u.input_tokens, u.cost_micro_usd), (2, 201, 14));
        assert!(kw.take_dirty(1_795_700_700).is_empty());
        // A month later every window has ended: nothing is kept.
        kw.take_dirty(1_795_700_700 + 40 * 86_400);
        assert!(kw.rows.is_empty());
    }
}
