//! Routing strategies: how a worker ranks the accounts that could take a request.
//!
//! Pure functions over the snapshot's view of an account; the per-worker state (in-flight counts,
//! cool-downs) and the choice itself live in `selection`.

use serde::{Deserialize, Serialize};

use super::AccountView;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum Strategy {
    /// Prefer the account with the most quota left: its plan's capacity times the headroom in
    /// its tighter window, in proportion, so equal accounts share load, a Pro seat draws several
    /// times a Plus seat's traffic, and a nearly full one is rarely chosen.
    #[default]
    CapacityWeighted,
    /// Spread requests evenly.
    RoundRobin,
    /// Drain accounts one after the other, in the order they were added.
    FillFirst,
    /// Prefer the account whose window resets soonest (use quota before it expires).
    ResetFirst,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Strategy as clap::ValueEnum>::from_str(s, true).map_err(|_| {
            format!(
                "unknown strategy {s:?} (capacity_weighted, round_robin, fill_first, reset_first)"
            )
        })
    }
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::CapacityWeighted => "capacity_weighted",
            Strategy::RoundRobin => "round_robin",
            Strategy::FillFirst => "fill_first",
            Strategy::ResetFirst => "reset_first",
        }
    }

    /// How much traffic an account should draw relative to others (> 0). Headroom is rounded to
    /// steps of 10 % so that a conversation pinned by rendezvous hashing does not move with every
    /// percent of usage.
    pub fn weight(self, a: &AccountView) -> f64 {
        match self {
            Strategy::CapacityWeighted => {
                plan_capacity(a.plan.as_deref()) * (a.headroom() / 10.0).round().max(0.5)
            }
            _ => 1.0,
        }
    }

    /// Strategies that always choose the same account given the same state (no spreading).
    pub fn is_ordered(self) -> bool {
        matches!(self, Strategy::FillFirst | Strategy::ResetFirst)
    }

    /// For ordered strategies: the sort key, smallest first. `index` is the account's place in
    /// the snapshot (the order accounts were added).
    pub fn order_key(self, a: &AccountView, index: usize) -> (u64, usize) {
        match self {
            Strategy::ResetFirst => {
                let reset = [a.quota.primary, a.quota.secondary]
                    .iter()
                    .flatten()
                    .filter_map(|w| w.reset_at)
                    .min();
                (reset.unwrap_or(u64::MAX), index)
            }
            _ => (0, index),
        }
    }
}

/// A plan's usage allowance relative to Plus, from the weekly credits the Python codex-lb assigns
/// each plan (free 1134, plus/team/business/edu 7560, prolite 37800, pro/enterprise 50400). A plan
/// we do not know counts as Plus.
pub fn plan_capacity(plan: Option<&str>) -> f64 {
    const PLUS: f64 = 7560.0;
    let credits = match plan.map(str::to_ascii_lowercase).as_deref() {
        Some("free") => 1134.0,
        Some("prolite" | "pro_lite") => 37800.0,
        Some("pro" | "enterprise") => 50400.0,
        _ => PLUS,
    };
    credits / PLUS
}

/// Rendezvous (highest random weight) score of `key` on an account: the account with the highest
/// score wins. With weights, an account with twice the weight wins twice as many keys, and a key
/// only moves when its winner leaves or the weights change enough to overtake it.
pub fn rendezvous_score(key: u64, account_hash: u64, weight: f64) -> f64 {
    let h = mix(key ^ account_hash);
    // Map to (0, 1): 53 significant bits, never 0 or 1.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight / u.ln()
}

/// A 64-bit mixer (the splitmix64 finalizer): spreads nearby inputs over the whole range.
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A stable 64-bit hash of a string (FNV-1a, then mixed): sticky keys and account ids.
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_rendezvous_follows_the_weights() {
        let accounts = [hash_str("a"), hash_str("b"), hash_str("c")];
        let weights = [9.0, 5.0, 1.0];
        let mut wins = [0u32; 3];
        for key in 0..30_000u64 {
            let best = (0..3)
                .max_by(|&i, &j| {
                    rendezvous_score(mix(key), accounts[i], weights[i])
                        .total_cmp(&rendezvous_score(mix(key), accounts[j], weights[j]))
                })
                .unwrap();
            wins[best] += 1;
        }
        let share = |i: usize| f64::from(wins[i]) / 30_000.0;
        assert!((share(0) - 0.6).abs() < 0.03, "{wins:?}");
        assert!((share(1) - 0.333).abs() < 0.03, "{wins:?}");
        assert!((share(2) - 0.067).abs() < 0.02, "{wins:?}");
    }

    #[test]
    fn plans_weigh_by_their_allowance() {
        assert_eq!(plan_capacity(Some("plus")), 1.0);
        assert_eq!(plan_capacity(Some("Team")), 1.0);
        assert_eq!(plan_capacity(None), 1.0);
        assert!((plan_capacity(Some("pro")) - 6.667).abs() < 0.01);
        assert_eq!(plan_capacity(Some("prolite")), 5.0);
        assert!(plan_capacity(Some("free")) < 0.2);
    }

    #[test]
    fn names_round_trip() {
        for s in [
            "capacity_weighted",
            "round_robin",
            "fill_first",
            "reset_first",
        ] {
            assert_eq!(s.parse::<Strategy>().unwrap().as_str(), s);
        }
        assert!("nope".parse::<Strategy>().is_err());
    }
}
