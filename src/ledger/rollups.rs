//! Hourly and daily rollups of the request log, per account, key and model, written in the same
//! transaction as the log rows they sum, so a rollup always equals its rows (and can be rebuilt
//! from them).
//!
//! Rows of the `rollups` tree: `{h|d}/{bucket start, 10 digits}/{dim}/{value}` → `Totals`, where
//! dim is `all` (value `*`), `account`, `key` or `model`. Keys sort by granularity, then time,
//! so a range of buckets is one range scan and retention deletes a prefix.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::totals::Totals;
use super::UsageEvent;

pub const HOUR: u64 = 3600;
pub const DAY: u64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn prefix(self) -> &'static str {
        match self {
            Granularity::Hour => "h",
            Granularity::Day => "d",
        }
    }

    pub fn secs(self) -> u64 {
        match self {
            Granularity::Hour => HOUR,
            Granularity::Day => DAY,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dim {
    All,
    Account,
    Key,
    Model,
}

impl Dim {
    pub fn as_str(self) -> &'static str {
        match self {
            Dim::All => "all",
            Dim::Account => "account",
            Dim::Key => "key",
            Dim::Model => "model",
        }
    }

    pub fn parse(s: &str) -> Option<Dim> {
        [Dim::All, Dim::Account, Dim::Key, Dim::Model]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

pub fn row_key(g: Granularity, bucket: u64, dim: Dim, value: &str) -> String {
    format!("{}/{bucket:010}/{}/{value}", g.prefix(), dim.as_str())
}

/// The first key of bucket `start` at granularity `g` (for range scans).
pub fn bucket_prefix(g: Granularity, start: u64) -> String {
    format!("{}/{start:010}/", g.prefix())
}

/// What a batch of events adds to each rollup row.
pub fn deltas(batch: &[UsageEvent]) -> HashMap<String, Totals> {
    let mut out: HashMap<String, Totals> = HashMap::new();
    for ev in batch {
        let t = ev.ts_ms / 1000;
        for g in [Granularity::Hour, Granularity::Day] {
            let bucket = t - t % g.secs();
            let dims = [
                (Dim::All, Some("*")),
                (Dim::Account, ev.account_id.as_deref()),
                (Dim::Key, ev.key_id.as_deref()),
                (Dim::Model, ev.model.as_deref()),
            ];
            for (dim, value) in dims {
                if let Some(v) = value {
                    out.entry(row_key(g, bucket, dim, v)).or_default().add(ev);
                }
            }
        }
    }
    out
}

/// One bucket of one group in a usage report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRow {
    pub bucket_start: u64,
    /// The account, key or model id; `*` for all traffic.
    pub group: String,
    #[serde(flatten)]
    pub totals: Totals,
    /// cached / input tokens; `None` without input.
    pub cache_hit_rate: Option<f64>,
    pub cost_usd: f64,
}

/// Reads the rollups of `dim` for buckets in `[since, until)`, oldest first.
pub fn read(
    tree: &sled::Tree,
    g: Granularity,
    dim: Dim,
    since: u64,
    until: u64,
) -> Result<Vec<UsageRow>, sled::Error> {
    let from = bucket_prefix(g, since - since % g.secs());
    let to = bucket_prefix(g, until);
    let mut rows = Vec::new();
    let want = format!("/{}/", dim.as_str());
    for kv in tree.range(from.as_bytes()..to.as_bytes()) {
        let (k, v) = kv?;
        let key = String::from_utf8_lossy(&k);
        // `{g}/{bucket}/{dim}/{value}`; values may contain '/', so split only the first three.
        let mut parts = key.splitn(4, '/');
        let (Some(_), Some(bucket), Some(d), Some(value)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if format!("/{d}/") != want {
            continue;
        }
        let Ok(totals) = serde_json::from_slice::<Totals>(&v) else {
            continue;
        };
        rows.push(UsageRow {
            bucket_start: bucket.parse().unwrap_or(0),
            group: value.to_string(),
            cache_hit_rate: (totals.input_tokens > 0)
                .then(|| totals.cached_tokens as f64 / totals.input_tokens as f64),
            cost_usd: totals.cost_micro_usd as f64 / 1e6,
            totals,
        });
    }
    Ok(rows)
}

/// Recomputes every rollup from the log rows (a data dir from before rollups existed, or a
/// repair). Returns the number of log rows read.
pub fn rebuild(requests: &sled::Tree, rollups: &sled::Tree) -> Result<u64, sled::Error> {
    rollups.clear()?;
    let mut acc: BTreeMap<String, Totals> = BTreeMap::new();
    let mut n = 0;
    let mut batch = Vec::with_capacity(1024);
    let flush = |batch: &mut Vec<UsageEvent>, acc: &mut BTreeMap<String, Totals>| {
        for (k, d) in deltas(batch) {
            acc.entry(k).or_default().merge(&d);
        }
        batch.clear();
    };
    for kv in requests.iter() {
        let (_, v) = kv?;
        if let Ok(ev) = serde_json::from_slice::<UsageEvent>(&v) {
            batch.push(ev);
            n += 1;
        }
        if batch.len() == 1024 {
            flush(&mut batch, &mut acc);
        }
    }
    flush(&mut batch, &mut acc);
    for (k, t) in acc {
        rollups.insert(k.as_bytes(), serde_json::to_vec(&t).unwrap_or_default())?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_lands_in_its_hour_and_day_per_dimension() {
        let mut a = super::super::tests::event("acc", "gpt-5.5", 100);
        a.ts_ms = (10 * DAY + 2 * HOUR + 5) * 1000;
        a.key_id = Some("key_1".into());
        let mut b = a.clone();
        b.ts_ms += 3600 * 1000;
        b.key_id = None;
        let d = deltas(&[a, b]);
        let day = row_key(Granularity::Day, 10 * DAY, Dim::All, "*");
        assert_eq!(d[&day].requests, 2);
        let h1 = row_key(Granularity::Hour, 10 * DAY + 2 * HOUR, Dim::Key, "key_1");
        assert_eq!(d[&h1].input_tokens, 100);
        assert!(!d.contains_key(&row_key(
            Granularity::Hour,
            10 * DAY + 3 * HOUR,
            Dim::Key,
            "key_1"
        )));
        // Hours: 4 rows for the keyed event, 3 for the other; the shared day: 4.
        assert_eq!(d.len(), 4 + 3 + 4);
    }
}
