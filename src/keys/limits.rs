//! Per-key budgets: a rule is a kind (tokens or cost), a window and an optional model. Windows are
//! calendar windows in UTC: the current 5-hour block of the day (00–05, 05–10, … measured from
//! the Unix epoch), the UTC day, the ISO week (from Monday 00:00), the calendar month. A window
//! ends at a fixed instant everyone can name, which is what the 429 tells the key holder.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, Time};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    TotalTokens,
    InputTokens,
    OutputTokens,
    CostUsd,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::TotalTokens => "total_tokens",
            LimitKind::InputTokens => "input_tokens",
            LimitKind::OutputTokens => "output_tokens",
            LimitKind::CostUsd => "cost_usd",
        }
    }

    /// Counters hold integers: tokens, or micro-dollars for cost.
    pub fn units(self, value: f64) -> u64 {
        match self {
            LimitKind::CostUsd => (value * 1e6).round().max(0.0) as u64,
            _ => value.round().max(0.0) as u64,
        }
    }
}

impl std::str::FromStr for LimitKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            LimitKind::TotalTokens,
            LimitKind::InputTokens,
            LimitKind::OutputTokens,
            LimitKind::CostUsd,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("{s:?}: one of total_tokens, input_tokens, output_tokens, cost_usd"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LimitWindow {
    #[serde(rename = "5h")]
    FiveHours,
    #[serde(rename = "daily")]
    Daily,
    #[serde(rename = "weekly")]
    Weekly,
    #[serde(rename = "monthly")]
    Monthly,
}

impl LimitWindow {
    pub const ALL: [LimitWindow; 4] = [
        LimitWindow::FiveHours,
        LimitWindow::Daily,
        LimitWindow::Weekly,
        LimitWindow::Monthly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitWindow::FiveHours => "5h",
            LimitWindow::Daily => "daily",
            LimitWindow::Weekly => "weekly",
            LimitWindow::Monthly => "monthly",
        }
    }

    /// `[start, end)` of the window holding `now` (unix seconds).
    pub fn bounds(self, now: u64) -> (u64, u64) {
        const DAY: u64 = 86_400;
        match self {
            LimitWindow::FiveHours => {
                let start = now - now % (5 * 3600);
                (start, start + 5 * 3600)
            }
            LimitWindow::Daily => {
                let start = now - now % DAY;
                (start, start + DAY)
            }
            LimitWindow::Weekly => {
                let day = now / DAY;
                // 1970-01-01 was a Thursday: Monday-based weekday = (day + 3) % 7.
                let start = (day - (day + 3) % 7) * DAY;
                (start, start + 7 * DAY)
            }
            LimitWindow::Monthly => {
                let date = OffsetDateTime::from_unix_timestamp(now as i64)
                    .map(|t| t.date())
                    .unwrap_or(Date::MIN);
                let first = |y: i32, m: Month| {
                    Date::from_calendar_date(y, m, 1)
                        .map(|d| d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp() as u64)
                        .unwrap_or(0)
                };
                let start = first(date.year(), date.month());
                let (ny, nm) = match date.month() {
                    Month::December => (date.year() + 1, Month::January),
                    m => (date.year(), m.next()),
                };
                (start, first(ny, nm))
            }
        }
    }
}

impl std::str::FromStr for LimitWindow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            LimitWindow::FiveHours,
            LimitWindow::Daily,
            LimitWindow::Weekly,
            LimitWindow::Monthly,
        ]
        .into_iter()
        .find(|w| w.as_str() == s)
        .ok_or_else(|| format!("{s:?}: one of 5h, daily, weekly, monthly"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitRule {
    pub kind: LimitKind,
    pub window: LimitWindow,
    /// Tokens, or US dollars for `cost_usd`.
    pub limit: f64,
    /// Counts and checks only requests for this model; `None`: every model.
    #[serde(default)]
    pub model: Option<String>,
}

impl LimitRule {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.limit.is_finite() && self.limit > 0.0) {
            return Err(format!(
                "a {} limit must be a positive number",
                self.kind.as_str()
            ));
        }
        Ok(())
    }

    pub fn applies_to(&self, model: Option<&str>) -> bool {
        match (&self.model, model) {
            (None, _) => true,
            (Some(want), Some(m)) => want.eq_ignore_ascii_case(m),
            (Some(_), None) => false,
        }
    }

    /// `total_tokens:daily:1000[:model]`, the form the CLI takes.
    pub fn parse(s: &str) -> Result<LimitRule, String> {
        let mut parts = s.splitn(4, ':');
        let (Some(kind), Some(window), Some(limit)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "{s:?}: expected KIND:WINDOW:LIMIT[:MODEL], e.g. total_tokens:daily:100000"
            ));
        };
        let rule = LimitRule {
            kind: kind.parse()?,
            window: window.parse()?,
            limit: limit
                .parse()
                .map_err(|_| format!("{limit:?} is not a number"))?,
            model: parts.next().filter(|m| !m.is_empty()).map(str::to_string),
        };
        rule.validate()?;
        Ok(rule)
    }

    /// What this rule adds for one finished request, in counter units.
    pub fn amount(&self, usage: &Spent) -> u64 {
        match self.kind {
            LimitKind::TotalTokens => usage.input_tokens + usage.output_tokens,
            LimitKind::InputTokens => usage.input_tokens,
            LimitKind::OutputTokens => usage.output_tokens,
            LimitKind::CostUsd => usage.cost_micro_usd.unwrap_or(0),
        }
    }
}

/// What one request spent, as the limits count it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spent {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `None` when the model has no known price.
    pub cost_micro_usd: Option<u64>,
}

/// A counter for the current window; it starts over when a new window begins.
///
/// The window start and the count change together under one small lock: with two atomics, two
/// workers opening a new window at once could each reset and add, and a burst on a fresh key then
/// got one request more than its pace. The lock is held for a compare and an add, never across I/O.
#[derive(Debug, Default)]
pub struct WindowCounter {
    state: Mutex<(u64, u64)>,
}

impl WindowCounter {
    pub fn new(start: u64, value: u64) -> Self {
        WindowCounter {
            state: Mutex::new((start, value)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, u64)> {
        // Nothing that can panic runs under the lock, so a poisoned one still holds a good pair.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The count in the window starting at `start` (0 if the counter holds an older window).
    pub fn get(&self, start: u64) -> u64 {
        let s = self.lock();
        if s.0 == start {
            s.1
        } else {
            0
        }
    }

    /// Adds `n` in the window starting at `start`; returns the new count. A late writer for a
    /// window older than the one held adds nothing and gets 0.
    pub fn add(&self, start: u64, n: u64) -> u64 {
        let mut s = self.lock();
        if s.0 < start {
            *s = (start, 0);
        } else if s.0 > start {
            return 0;
        }
        s.1 += n;
        s.1
    }

    /// Adds one in the window starting at `start` if that keeps the count at or under `limit`;
    /// `false` (and nothing added) when the window is full.
    pub fn take_within(&self, start: u64, limit: u64) -> bool {
        let mut s = self.lock();
        // A start older than the one held (a clock that stepped back) counts against the newer
        // window rather than reopening an old one.
        if s.0 < start {
            *s = (start, 0);
        }
        if s.1 >= limit {
            return false;
        }
        s.1 += 1;
        true
    }
}

/// Formats a unix time as `2026-11-26T05:00:00Z` for people.
pub fn iso(t: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-26T13:45:00Z, a Thursday.
    const NOW: u64 = 1_795_700_700;

    #[test]
    fn windows_are_utc_calendar_windows() {
        assert_eq!(iso(NOW), "2026-11-26T13:45:00Z");
        let (s, e) = LimitWindow::Daily.bounds(NOW);
        assert_eq!(
            (iso(s), iso(e)),
            ("2026-11-26T00:00:00Z".into(), "2026-11-27T00:00:00Z".into())
        );
        let (s, e) = LimitWindow::Weekly.bounds(NOW);
        assert_eq!(
            (iso(s), iso(e)),
            ("2026-11-23T00:00:00Z".into(), "2026-11-30T00:00:00Z".into())
        );
        let (s, e) = LimitWindow::Monthly.bounds(NOW);
        assert_eq!(
            (iso(s), iso(e)),
            ("2026-11-01T00:00:00Z".into(), "2026-12-01T00:00:00Z".into())
        );
        let (s, e) = LimitWindow::Monthly.bounds(NOW + 40 * 86_400);
        assert_eq!(
            (iso(s), iso(e)),
            ("2027-01-01T00:00:00Z".into(), "2027-02-01T00:00:00Z".into())
        );
        let (s, e) = LimitWindow::FiveHours.bounds(NOW);
        assert_eq!(e - s, 5 * 3600);
        assert!(s <= NOW && NOW < e);
    }

    #[test]
    fn counters_start_over_in_a_new_window() {
        let c = WindowCounter::default();
        assert_eq!(c.add(100, 5), 5);
        assert_eq!(c.add(100, 5), 10);
        assert_eq!(c.get(100), 10);
        assert_eq!(c.get(200), 0);
        assert_eq!(c.add(200, 1), 1);
        assert_eq!(c.get(100), 0);
        // A late writer for an older window does not disturb the new one.
        assert_eq!(c.add(100, 7), 0);
        assert_eq!(c.get(200), 1);
    }

    #[test]
    fn take_within_stops_exactly_at_the_limit_under_contention() {
        let c = std::sync::Arc::new(WindowCounter::default());
        let taken: usize = (0..8)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || (0..100).filter(|_| c.take_within(60, 50)).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(taken, 50);
        assert_eq!(c.get(60), 50);
        // A new window starts empty.
        assert!(c.take_within(120, 1));
        assert!(!c.take_within(120, 1));
    }

    #[test]
    fn rules_parse_and_apply() {
        let r = LimitRule::parse("total_tokens:daily:1000").unwrap();
        assert_eq!(r.kind, LimitKind::TotalTokens);
        assert!(r.applies_to(Some("gpt-5.5")));
        let r = LimitRule::parse("cost_usd:monthly:2.5:gpt-5.5").unwrap();
        assert_eq!(r.kind.units(r.limit), 2_500_000);
        assert!(r.applies_to(Some("GPT-5.5")) && !r.applies_to(Some("gpt-5.4")));
        assert!(LimitRule::parse("tokens:daily:1").is_err());
        assert!(LimitRule::parse("total_tokens:hourly:1").is_err());
        assert!(LimitRule::parse("total_tokens:daily:-1").is_err());
        let spent = Spent {
            input_tokens: 10,
            output_tokens: 5,
            cost_micro_usd: None,
        };
        assert_eq!(
            LimitRule::parse("total_tokens:5h:9")
                .unwrap()
                .amount(&spent),
            15
        );
        assert_eq!(LimitRule::parse("cost_usd:5h:9").unwrap().amount(&spent), 0);
    }
}
