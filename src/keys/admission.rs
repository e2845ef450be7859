//! The per-request key checks, before any account is chosen: model and effort rules, the
//! requests-per-minute budget and every token or cost budget; and, once the response has ended,
//! settling what it spent into the key's counters.
//!
//! Counters are shared atomics, so every worker sees every other's settled usage at once. What a
//! budget can overshoot by is what was already in flight when it filled: requests are admitted
//! while the window is under its limit, and their tokens are only known at their terminal event.

use super::limits::{iso, LimitKind, Spent};
use super::KeyView;

/// Why a key may not make this request.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    ModelNotAllowed(String),
    EffortNotAllowed(String),
    /// A budget is used up until `resets_at`; the text names it.
    Exhausted {
        what: String,
        resets_at: u64,
    },
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::ModelNotAllowed(m) => {
                format!("This API key does not have access to model '{m}'")
            }
            Refusal::EffortNotAllowed(e) => {
                format!("This API key may not use reasoning effort '{e}'")
            }
            Refusal::Exhausted { what, resets_at } => format!(
                "API key {what} limit exceeded. Usage resets at {}.",
                iso(*resets_at)
            ),
        }
    }
}

/// Checks a request against its key and counts it against the per-minute budget.
pub fn admit(
    key: &KeyView,
    model: Option<&str>,
    effort: Option<&str>,
    now: u64,
) -> Result<(), Refusal> {
    let p = &key.policy;
    if !p.allowed_models.is_empty() {
        let m = model.unwrap_or_default();
        if !p.allowed_models.iter().any(|a| a.eq_ignore_ascii_case(m)) {
            return Err(Refusal::ModelNotAllowed(m.to_string()));
        }
    }
    if let Some(e) = effort.filter(|_| !p.allowed_efforts.is_empty()) {
        if !p.allowed_efforts.iter().any(|a| a.eq_ignore_ascii_case(e)) {
            return Err(Refusal::EffortNotAllowed(e.to_string()));
        }
    }
    check_budgets(key, model, now)?;
    pace(key, now, Pace::Count)
}

/// A request that runs no model turn of its own (Codex's control routes): refused while one of
/// the key's model-wide budgets or its per-minute pace is used up, but not counted against the
/// pace, so the events a turn sends beside it do not eat the key's turns.
pub fn admit_unmetered(key: &KeyView, now: u64) -> Result<(), Refusal> {
    check_budgets(key, None, now)?;
    pace(key, now, Pace::Check)
}

/// A request that runs a model upstream but has no turn body to read a model from
/// (transcription): the model-wide budgets, and it counts in the per-minute pace.
pub fn admit_metered(key: &KeyView, now: u64) -> Result<(), Refusal> {
    check_budgets(key, None, now)?;
    pace(key, now, Pace::Count)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// Take one of the minute's requests.
    Count,
    /// Only look: refused when the minute's requests are all taken.
    Check,
}

/// The key's per-minute pace (the UTC minute holding `now`).
fn pace(key: &KeyView, now: u64, how: Pace) -> Result<(), Refusal> {
    let Some(rpm) = key.policy.requests_per_minute else {
        return Ok(());
    };
    let minute = now - now % 60;
    let room = match how {
        Pace::Count => key.live.minute.take_within(minute, u64::from(rpm)),
        Pace::Check => key.live.minute.get(minute) < u64::from(rpm),
    };
    if room {
        Ok(())
    } else {
        Err(Refusal::Exhausted {
            what: "requests per minute".into(),
            resets_at: minute + 60,
        })
    }
}

/// Every budget of the key that counts `model` (`None`: only the model-wide ones) has room.
fn check_budgets(key: &KeyView, model: Option<&str>, now: u64) -> Result<(), Refusal> {
    for (rule, counter) in key.policy.limits.iter().zip(&key.counters) {
        if !rule.applies_to(model) {
            continue;
        }
        let (start, end) = rule.window.bounds(now);
        if counter.get(start) >= rule.kind.units(rule.limit) {
            let model = rule
                .model
                .as_deref()
                .map(|m| format!(" for model {m}"))
                .unwrap_or_default();
            return Err(Refusal::Exhausted {
                what: format!("{} {}{model}", rule.kind.as_str(), rule.window.as_str()),
                resets_at: end,
            });
        }
    }
    Ok(())
}

/// Adds what a finished request spent to every budget of its key that counts it.
pub fn settle(key: &KeyView, model: Option<&str>, spent: &Spent, now: u64) {
    for (rule, counter) in key.policy.limits.iter().zip(&key.counters) {
        if !rule.applies_to(model) {
            continue;
        }
        if rule.kind == LimitKind::CostUsd && spent.cost_micro_usd.is_none() {
            continue;
        }
        let amount = rule.amount(spent);
        if amount > 0 {
            counter.add(rule.window.bounds(now).0, amount);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::keys::{KeyLive, KeyPolicy, LimitRule, LimitWindow, WindowCounter};

    fn key(policy: KeyPolicy) -> KeyView {
        let counters = policy
            .limits
            .iter()
            .map(|_| Arc::new(WindowCounter::default()))
            .collect();
        KeyView {
            id: Arc::from("key_1"),
            name: "t".into(),
            expires_at: None,
            revoked: false,
            paused: false,
            policy,
            live: Arc::new(KeyLive::default()),
            counters,
        }
    }

    const NOW: u64 = 1_795_700_700;

    #[test]
    fn models_and_efforts() {
        let k = key(KeyPolicy {
            allowed_models: vec!["gpt-5.5".into()],
            allowed_efforts: vec!["low".into(), "medium".into()],
            ..Default::default()
        });
        assert!(admit(&k, Some("gpt-5.5"), None, NOW).is_ok());
        assert!(admit(&k, Some("GPT-5.5"), Some("low"), NOW).is_ok());
        assert_eq!(
            admit(&k, Some("gpt-5.4"), None, NOW),
            Err(Refusal::ModelNotAllowed("gpt-5.4".into()))
        );
        assert_eq!(
            admit(&k, Some("gpt-5.5"), Some("high"), NOW),
            Err(Refusal::EffortNotAllowed("high".into()))
        );
    }

    #[test]
    fn token_budget_cuts_off_after_the_request_that_crosses_it() {
        let k = key(KeyPolicy {
            limits: vec![LimitRule {
                kind: LimitKind::TotalTokens,
                window: LimitWindow::Daily,
                limit: 1000.0,
                model: None,
            }],
            ..Default::default()
        });
        let spent = Spent {
            input_tokens: 400,
            output_tokens: 200,
            cost_micro_usd: None,
        };
        assert!(admit(&k, Some("m"), None, NOW).is_ok());
        settle(&k, Some("m"), &spent, NOW);
        assert!(admit(&k, Some("m"), None, NOW).is_ok(), "600 of 1000 used");
        settle(&k, Some("m"), &spent, NOW);
        let refused = admit(&k, Some("m"), None, NOW).unwrap_err();
        let Refusal::Exhausted { resets_at, .. } = &refused else {
            panic!("{refused:?}");
        };
        assert_eq!(iso(*resets_at), "2026-11-27T00:00:00Z");
        assert!(
            refused.message().contains("total_tokens daily"),
            "{}",
            refused.message()
        );
        // The next day starts over.
        assert!(admit(&k, Some("m"), None, NOW + 86_400).is_ok());
    }

    #[test]
    fn requests_per_minute() {
        let k = key(KeyPolicy {
            requests_per_minute: Some(3),
            ..Default::default()
        });
        for _ in 0..3 {
            assert!(admit(&k, None, None, NOW).is_ok());
        }
        assert!(admit(&k, None, None, NOW).is_err());
        assert!(admit(&k, None, None, NOW + 60).is_ok());
    }
}
