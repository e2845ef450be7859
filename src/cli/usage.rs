//! `codex-lb usage`: tokens, cost and cache hits per key and per account for today, the last 7
//! and the last 30 days (UTC days), from the daily rollups: through the running gateway, or
//! straight from the data dir.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{backend, call, Backend};
use crate::accounts::now_unix;
use crate::config::TargetArgs;
use crate::ledger::rollups::{self, Dim, Granularity, DAY};

/// One group's sums over the three spans.
#[derive(Default, Clone, Copy)]
struct Spans {
    today: Sum,
    week: Sum,
    month: Sum,
}

#[derive(Default, Clone, Copy)]
struct Sum {
    requests: u64,
    tokens: u64,
    input: u64,
    cached: u64,
    cost_usd: f64,
}

impl Sum {
    fn add(&mut self, row: &Value) {
        let n = |k: &str| row[k].as_u64().unwrap_or(0);
        self.requests += n("requests");
        self.tokens += n("total_tokens");
        self.input += n("input_tokens");
        self.cached += n("cached_tokens");
        self.cost_usd += row["cost_usd"].as_f64().unwrap_or(0.0);
    }

    fn text(&self) -> String {
        if self.requests == 0 {
            return "-".into();
        }
        let hit = if self.input > 0 {
            format!(
                " {:.0}% cached",
                100.0 * self.cached as f64 / self.input as f64
            )
        } else {
            String::new()
        };
        format!(
            "{} req {} tok ${:.2}{hit}",
            self.requests,
            compact(self.tokens),
            self.cost_usd
        )
    }
}

fn compact(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=9_999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// Daily rows of one dimension for the last 30 days, as JSON rows.
fn daily_rows(backend: &Backend, dim: Dim, since: u64, until: u64) -> Result<Vec<Value>, String> {
    match backend {
        Backend::Direct(store) => {
            rollups::read(&store.rollups, Granularity::Day, dim, since, until)
                .map_err(|e| e.to_string())
                .map(|rows| {
                    rows.iter()
                        .map(|r| serde_json::to_value(r).unwrap_or_default())
                        .collect()
                })
        }
        Backend::Gateway(base) => {
            let url = format!(
                "{base}/api/usage?granularity=day&group_by={}&since={since}&until={until}",
                dim.as_str()
            );
            Ok(call("GET", &url, None)?["rows"]
                .as_array()
                .cloned()
                .unwrap_or_default())
        }
    }
}

pub fn run(target: TargetArgs, json: bool) -> Result<(), String> {
    let backend = backend(&target)?;
    let now = now_unix();
    let today = now - now % DAY;
    let since = today - 29 * DAY;
    let mut out = serde_json::Map::new();
    for (dim, title) in [(Dim::Key, "KEY"), (Dim::Account, "ACCOUNT")] {
        let rows = daily_rows(&backend, dim, since, now + 1)?;
        let mut groups: BTreeMap<String, Spans> = BTreeMap::new();
        for r in &rows {
            let start = r["bucket_start"].as_u64().unwrap_or(0);
            let g = groups
                .entry(r["group"].as_str().unwrap_or("?").to_string())
                .or_default();
            g.month.add(r);
            if start + 7 * DAY > today {
                g.week.add(r);
            }
            if start == today {
                g.today.add(r);
            }
        }
        if json {
            out.insert(
                dim.as_str().into(),
                serde_json::json!(groups
                    .iter()
                    .map(|(k, s)| (k.clone(), serde_json::json!({
                        "today": {"requests": s.today.requests, "total_tokens": s.today.tokens, "cost_usd": s.today.cost_usd},
                        "7d": {"requests": s.week.requests, "total_tokens": s.week.tokens, "cost_usd": s.week.cost_usd},
                        "30d": {"requests": s.month.requests, "total_tokens": s.month.tokens, "cost_usd": s.month.cost_usd},
                    })))
                    .collect::<serde_json::Map<_, _>>()),
            );
            continue;
        }
        println!("{title:<18} {:<36} {:<36} 30 DAYS", "TODAY (UTC)", "7 DAYS");
        if groups.is_empty() {
            println!("(no traffic in the last 30 days)");
        }
        for (g, s) in &groups {
            println!(
                "{:<18} {:<36} {:<36} {}",
                g,
                s.today.text(),
                s.week.text(),
                s.month.text()
            );
        }
        println!();
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Object(out)).unwrap_or_default()
        );
    }
    Ok(())
}
