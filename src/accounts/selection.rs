//! Per-worker account choice. Among the accounts that can take the request now (allowed to the
//! caller's API key, active, not blocked pool-wide, not cooling down on this worker, under the
//! owner's caps, with a free in-flight slot), take the best priority tier, then let the strategy decide: ordered strategies
//! take the first account in their order; a request with a sticky key (its conversation) goes to
//! the rendezvous winner for that key, so every worker sends a conversation to the same account
//! without talking to the others; anything else is spread by weight.
//!
//! All state here is the worker's own (no atomics, no locks). Slots are kept in snapshot order,
//! so a pick is one pass over a vector.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::strategy::{hash_str, mix, rendezvous_score, Strategy};
use super::{AccountStatus, AccountView, AccountsSnapshot, BlockReason};

/// Conversations remembered per worker to count moves.
const RECENT_CONVERSATIONS: usize = 8192;

#[derive(Debug)]
struct Slot {
    id: Arc<str>,
    hash: u64,
    in_flight: u32,
    cooldown_until: Option<Instant>,
    /// Set when the cool-down is a usage limit: the window reset, unix seconds. Lets this worker
    /// answer "pool exhausted" before the control thread's snapshot arrives.
    usage_reset: Option<u64>,
}

impl Slot {
    fn new(id: &Arc<str>) -> Slot {
        Slot {
            id: Arc::clone(id),
            hash: hash_str(id),
            in_flight: 0,
            cooldown_until: None,
            usage_reset: None,
        }
    }

    fn cooling(&self, now: Instant) -> bool {
        self.cooldown_until.is_some_and(|t| t > now)
    }
}

/// What the request asks of the choice.
#[derive(Debug, Default, Clone, Copy)]
pub struct PickRequest<'a> {
    /// Accounts this request already tried.
    pub excluded: &'a [Arc<str>],
    /// Hash of the conversation key (`prompt_cache_key`, else the session id header).
    pub sticky_key: Option<u64>,
    /// The account that must serve the request (it issued the turn state or the response being
    /// continued).
    pub pinned: Option<&'a str>,
    /// The plans that offer the requested model; `None` when any plan may serve it.
    pub plans: Option<&'a [String]>,
    /// The accounts the caller's API key may draw from; `None` for the whole pool. The others are
    /// out of sight for this request: never chosen, not even when pinned, and not counted when
    /// saying why none can serve.
    pub allowed: Option<&'a [String]>,
}

#[derive(Debug)]
pub enum Pick {
    Account(Arc<AccountView>),
    /// No account is active: none configured, or all paused, waiting for a sign-in or
    /// deactivated (the counts say which).
    NoAccounts {
        paused: usize,
        reauth: usize,
        deactivated: usize,
    },
    /// Every active account is past its usage limit; the earliest reset, unix seconds.
    AllUsageLimited {
        resets_at: u64,
    },
    /// Every usable account is at one of the owner's usage caps.
    AllCapped,
    /// Every usable account has all of this worker's in-flight slots taken.
    AllBusy,
    /// Every usable account has started as many requests this minute as its owner allows.
    AllPaced {
        resets_at: u64,
    },
    /// The account a replayed turn belongs to cannot serve it now.
    PinnedUnavailable,
    /// Active accounts exist, but none is on a plan that offers the model (their plans listed).
    ModelNotOnPlan {
        pool_plans: Vec<String>,
    },
    /// Accounts exist but none can take this request now (tried already, cooling down, auth).
    NoneAvailable,
    /// None of the accounts the caller's key may use is in the pool.
    NoAllowedAccounts,
}

#[derive(Debug)]
pub struct CoreAccounts {
    slots: Vec<Slot>,
    /// The last pick sent a conversation to another account than its previous turn.
    last_pick_moved: bool,
    /// Conversation key → the account its last turn went to (bounded; cleared when full).
    recent: HashMap<u64, Arc<str>>,
    seen_version: u64,
    rotation: usize,
    rng: u64,
}

impl Default for CoreAccounts {
    fn default() -> Self {
        Self::new(0)
    }
}

impl CoreAccounts {
    pub fn new(seed: u64) -> Self {
        CoreAccounts {
            slots: Vec::new(),
            last_pick_moved: false,
            recent: HashMap::new(),
            seen_version: u64::MAX,
            rotation: 0,
            rng: mix(seed ^ 0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    /// Realigns the slots with a new snapshot, keeping each account's counters.
    fn sync(&mut self, snap: &AccountsSnapshot) {
        if snap.version == self.seen_version && self.slots.len() == snap.accounts.len() {
            return;
        }
        let mut old: HashMap<Arc<str>, Slot> = self
            .slots
            .drain(..)
            .map(|s| (Arc::clone(&s.id), s))
            .collect();
        self.slots = snap
            .accounts
            .iter()
            .map(|a| old.remove(&a.id).unwrap_or_else(|| Slot::new(&a.id)))
            .collect();
        self.seen_version = snap.version;
    }

    fn next_random(&mut self) -> f64 {
        // xorshift64: fast and good enough to spread load.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        ((self.rng >> 11) as f64) / (1u64 << 53) as f64
    }

    pub fn pick(
        &mut self,
        snap: &AccountsSnapshot,
        req: PickRequest<'_>,
        now: Instant,
        now_unix: u64,
    ) -> Pick {
        self.sync(snap);
        let cap = snap.slots_per_worker;
        // An account whose plan is unknown is tried: the upstream has the last word.
        let on_plan = |a: &AccountView| match (req.plans, a.plan.as_deref()) {
            (Some(plans), Some(plan)) => plans.iter().any(|p| p.eq_ignore_ascii_case(plan)),
            _ => true,
        };
        let allowed = |a: &AccountView| {
            req.allowed
                .is_none_or(|ids| ids.iter().any(|id| **id == *a.id))
        };
        let usable = |a: &AccountView, s: &Slot| {
            allowed(a)
                && a.status == AccountStatus::Active
                && on_plan(a)
                && !req.excluded.contains(&a.id)
                && a.blocked_at(now_unix).is_none()
                && !s.cooling(now)
        };
        // The owner's per-minute pace binds new conversations, not a pinned turn.
        let eligible_unpaced = |a: &AccountView, s: &Slot| {
            usable(a, s) && !a.over_cap() && (cap == 0 || s.in_flight < cap)
        };
        let eligible = |a: &AccountView, s: &Slot| eligible_unpaced(a, s) && !a.paced(now_unix);
        // Set aside by this worker only after a transient failure (5xx, short 429): a last resort
        // rather than a refusal.
        let set_aside = |a: &AccountView, s: &Slot| {
            allowed(a)
                && s.usage_reset.is_none()
                && s.cooling(now)
                && a.status == AccountStatus::Active
                && on_plan(a)
                && !req.excluded.contains(&a.id)
                && a.blocked_at(now_unix).is_none()
                && !a.over_cap()
                && (cap == 0 || s.in_flight < cap)
        };

        if let Some(pinned) = req.pinned {
            return match snap
                .accounts
                .iter()
                .zip(&self.slots)
                .find(|(a, _)| &*a.id == pinned)
            {
                Some((a, s)) if eligible_unpaced(a, s) || set_aside(a, s) => {
                    Pick::Account(Arc::clone(a))
                }
                _ => Pick::PinnedUnavailable,
            };
        }

        let tier = snap
            .accounts
            .iter()
            .zip(&self.slots)
            .filter(|(a, s)| eligible(a, s))
            .map(|(a, _)| a.priority)
            .min();
        if let Some(tier) = tier {
            let in_tier = |i: &usize| snap.accounts.get(*i).is_some_and(|a| a.priority == tier);
            let candidates: Vec<usize> = (0..snap.accounts.len())
                .filter(|i| {
                    in_tier(i)
                        && matches!((snap.accounts.get(*i), self.slots.get(*i)), (Some(a), Some(s)) if eligible(a, s))
                })
                .collect();
            let chosen = self.choose(snap, &candidates, req.sticky_key);
            if let Some(a) = chosen.and_then(|i| snap.accounts.get(i)) {
                return Pick::Account(Arc::clone(a));
            }
        }

        // Every account this worker could use is set aside: try the one that recovers first
        // (excluded ones, already tried by this request, stay out).
        if let Some((a, _)) = snap
            .accounts
            .iter()
            .zip(&self.slots)
            .filter(|(a, s)| set_aside(a, s) && !a.paced(now_unix))
            .min_by_key(|(_, s)| s.cooldown_until)
        {
            return Pick::Account(Arc::clone(a));
        }

        // Nobody can take it: say why, most specific first, of the accounts the caller may use.
        if req.allowed.is_some() && !snap.accounts.iter().any(|a| allowed(a)) {
            return Pick::NoAllowedAccounts;
        }
        let active: Vec<(&Arc<AccountView>, &Slot)> = snap
            .accounts
            .iter()
            .zip(&self.slots)
            .filter(|(a, _)| allowed(a) && a.status == AccountStatus::Active)
            .collect();
        if active.is_empty() {
            let count = |st: AccountStatus| {
                snap.accounts
                    .iter()
                    .filter(|a| allowed(a) && a.status == st)
                    .count()
            };
            return Pick::NoAccounts {
                paused: count(AccountStatus::Paused),
                reauth: count(AccountStatus::ReauthRequired),
                deactivated: count(AccountStatus::Deactivated),
            };
        }
        if !active.iter().any(|(a, _)| on_plan(a)) {
            let mut pool_plans: Vec<String> =
                active.iter().filter_map(|(a, _)| a.plan.clone()).collect();
            pool_plans.sort();
            pool_plans.dedup();
            return Pick::ModelNotOnPlan { pool_plans };
        }
        let active: Vec<(&Arc<AccountView>, &Slot)> =
            active.into_iter().filter(|(a, _)| on_plan(a)).collect();
        let limited: Vec<u64> = active
            .iter()
            .filter_map(|(a, s)| {
                let pool = a
                    .blocked_at(now_unix)
                    .filter(|b| b.reason == BlockReason::UsageLimit)
                    .map(|b| b.until_unix);
                let local = s.usage_reset.filter(|_| s.cooling(now));
                pool.or(local)
            })
            .collect();
        if limited.len() == active.len() {
            return Pick::AllUsageLimited {
                resets_at: limited.into_iter().min().unwrap_or(now_unix),
            };
        }
        let usable_now: Vec<&(&Arc<AccountView>, &Slot)> =
            active.iter().filter(|(a, s)| usable(a, s)).collect();
        if !usable_now.is_empty() && usable_now.iter().all(|(a, _)| a.over_cap()) {
            return Pick::AllCapped;
        }
        if usable_now.iter().any(|(a, _)| a.paced(now_unix))
            && usable_now
                .iter()
                .all(|(a, _)| a.over_cap() || a.paced(now_unix))
        {
            return Pick::AllPaced {
                resets_at: now_unix - now_unix % 60 + 60,
            };
        }
        if !usable_now.is_empty() {
            return Pick::AllBusy;
        }
        Pick::NoneAvailable
    }

    fn choose(
        &mut self,
        snap: &AccountsSnapshot,
        candidates: &[usize],
        sticky_key: Option<u64>,
    ) -> Option<usize> {
        let strategy = snap.strategy;
        let account = |i: usize| snap.accounts.get(i);
        if strategy.is_ordered() {
            return candidates
                .iter()
                .copied()
                .min_by_key(|&i| account(i).map(|a| strategy.order_key(a, i)));
        }
        if let Some(key) = sticky_key {
            let score = |k: usize| {
                let w = account(k).map_or(1.0, |a| strategy.weight(a));
                rendezvous_score(key, self.slots.get(k).map_or(0, |s| s.hash), w)
            };
            let best = |it: &mut dyn Iterator<Item = usize>| {
                it.max_by(|&i, &j| score(i).total_cmp(&score(j)))
            };
            let chosen = best(&mut candidates.iter().copied());
            // A conversation that lands on another account than its last one on this worker has
            // moved (its prompt cache stays behind).
            if let Some(id) = chosen
                .and_then(|i| self.slots.get(i))
                .map(|sl| Arc::clone(&sl.id))
            {
                if self.recent.len() >= RECENT_CONVERSATIONS {
                    self.recent.clear();
                }
                if let Some(prev) = self.recent.insert(key, Arc::clone(&id)) {
                    self.last_pick_moved = prev != id;
                }
            }
            return chosen;
        }
        match strategy {
            Strategy::RoundRobin => {
                self.rotation = self.rotation.wrapping_add(1);
                candidates
                    .get(self.rotation % candidates.len().max(1))
                    .copied()
            }
            _ => {
                // Weighted by headroom, discounted by what this worker already has in flight there.
                let weights: Vec<f64> = candidates
                    .iter()
                    .map(|&i| {
                        let w = account(i).map_or(1.0, |a| strategy.weight(a));
                        w / (1.0 + f64::from(self.slots.get(i).map_or(0, |s| s.in_flight)))
                    })
                    .collect();
                let total: f64 = weights.iter().sum();
                let mut r = self.next_random() * total;
                for (k, w) in weights.iter().enumerate() {
                    if r < *w {
                        return candidates.get(k).copied();
                    }
                    r -= w;
                }
                candidates.last().copied()
            }
        }
    }

    fn slot_mut(&mut self, id: &str) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| &*s.id == id)
    }

    /// Whether the last pick moved a conversation off its home account (and clears it).
    pub fn take_moved(&mut self) -> bool {
        std::mem::take(&mut self.last_pick_moved)
    }

    pub fn begin(&mut self, id: &Arc<str>) {
        if let Some(s) = self.slot_mut(id) {
            s.in_flight += 1;
        }
    }

    pub fn end(&mut self, id: &Arc<str>) {
        if let Some(s) = self.slot_mut(id) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }

    /// Keeps this worker off an account until `until`; `usage_reset` marks a usage limit.
    pub fn cool_down(&mut self, id: &Arc<str>, until: Instant, usage_reset: Option<u64>) {
        if let Some(s) = self.slot_mut(id) {
            s.cooldown_until = Some(until);
            s.usage_reset = usage_reset;
        }
    }

    pub fn in_flight(&self, id: &str) -> u32 {
        self.slots
            .iter()
            .find(|s| &*s.id == id)
            .map_or(0, |s| s.in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::quota::{QuotaReading, Window};
    use crate::accounts::{Block, Priority};
    use bytes::Bytes;
    use std::time::Duration;

    fn view(id: &str, used: f64, block: Option<Block>) -> AccountView {
        AccountView {
            id: Arc::from(id),
            email: None,
            plan: None,
            status: AccountStatus::Active,
            authorization: Bytes::from_static(b"Bearer x"),
            account_header: None,
            block,
            priority: Priority::Normal,
            quota: QuotaReading {
                primary: Some(Window {
                    used_percent: used,
                    window_minutes: Some(300),
                    reset_at: None,
                }),
                secondary: None,
                plan_type: None,
                observed_ms: 0,
            },
            cap_primary_percent: None,
            cap_secondary_percent: None,
            requests_per_minute: None,
            minute: Default::default(),
        }
    }

    fn snap(strategy: Strategy, accounts: Vec<AccountView>) -> AccountsSnapshot {
        AccountsSnapshot {
            version: 1,
            accounts: accounts.into_iter().map(Arc::new).collect(),
            strategy,
            slots_per_worker: 0,
        }
    }

    fn picked(p: Pick) -> String {
        match p {
            Pick::Account(a) => a.id.to_string(),
            other => format!("{other:?}"),
        }
    }

    fn counts(
        c: &mut CoreAccounts,
        s: &AccountsSnapshot,
        n: usize,
        keyed: bool,
    ) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        let now = Instant::now();
        for k in 0..n {
            let req = PickRequest {
                sticky_key: keyed.then(|| mix(k as u64)),
                ..Default::default()
            };
            *out.entry(picked(c.pick(s, req, now, 100))).or_default() += 1;
        }
        out
    }

    #[test]
    fn capacity_weighted_prefers_headroom_and_respects_caps() {
        let mut capped = view("c", 95.0, None);
        capped.cap_primary_percent = Some(90.0);
        let s = snap(
            Strategy::CapacityWeighted,
            vec![view("a", 10.0, None), view("b", 50.0, None), capped],
        );
        let mut c = CoreAccounts::new(7);
        for keyed in [false, true] {
            let n = counts(&mut c, &s, 3000, keyed);
            assert_eq!(n.get("c"), None, "capped account chosen: {n:?}");
            assert!(n["a"] > n["b"] && n["b"] > 500, "{n:?}");
        }
    }

    #[test]
    fn round_robin_is_even_and_fill_first_drains_in_order() {
        let s = snap(
            Strategy::RoundRobin,
            vec![
                view("a", 10.0, None),
                view("b", 50.0, None),
                view("c", 0.0, None),
            ],
        );
        let n = counts(&mut CoreAccounts::new(1), &s, 300, false);
        assert!(n.values().all(|v| *v == 100), "{n:?}");
        let s = snap(
            Strategy::FillFirst,
            vec![view("a", 10.0, None), view("b", 0.0, None)],
        );
        assert_eq!(counts(&mut CoreAccounts::new(1), &s, 50, true)["a"], 50);
        let s = snap(Strategy::ResetFirst, {
            let mut a = view("a", 10.0, None);
            let mut b = view("b", 10.0, None);
            a.quota.primary = Some(Window {
                used_percent: 10.0,
                window_minutes: Some(300),
                reset_at: Some(900),
            });
            b.quota.primary = Some(Window {
                used_percent: 10.0,
                window_minutes: Some(300),
                reset_at: Some(500),
            });
            vec![a, b]
        });
        assert_eq!(counts(&mut CoreAccounts::new(1), &s, 10, false)["b"], 10);
    }

    #[test]
    fn a_conversation_stays_put_and_moves_once_when_its_account_is_excluded() {
        let s = snap(
            Strategy::CapacityWeighted,
            vec![
                view("a", 10.0, None),
                view("b", 12.0, None),
                view("c", 14.0, None),
            ],
        );
        let mut c = CoreAccounts::new(3);
        let key = Some(hash_str("conversation-1"));
        let now = Instant::now();
        let first = picked(c.pick(
            &s,
            PickRequest {
                sticky_key: key,
                ..Default::default()
            },
            now,
            100,
        ));
        for _ in 0..20 {
            assert_eq!(
                picked(c.pick(
                    &s,
                    PickRequest {
                        sticky_key: key,
                        ..Default::default()
                    },
                    now,
                    100
                )),
                first
            );
        }
        // Another worker (fresh state) agrees.
        assert_eq!(
            picked(CoreAccounts::new(99).pick(
                &s,
                PickRequest {
                    sticky_key: key,
                    ..Default::default()
                },
                now,
                100
            )),
            first
        );
        let gone = [Arc::<str>::from(first.as_str())];
        let second = picked(c.pick(
            &s,
            PickRequest {
                sticky_key: key,
                excluded: &gone,
                ..Default::default()
            },
            now,
            100,
        ));
        assert_ne!(second, first);
        for _ in 0..10 {
            assert_eq!(
                picked(c.pick(
                    &s,
                    PickRequest {
                        sticky_key: key,
                        excluded: &gone,
                        ..Default::default()
                    },
                    now,
                    100
                )),
                second
            );
        }
    }

    #[test]
    fn tiers_pins_slots_and_reasons() {
        let mut burn = view("burn", 80.0, None);
        burn.priority = Priority::BurnFirst;
        let mut keep = view("keep", 0.0, None);
        keep.priority = Priority::Preserve;
        let mut s = snap(
            Strategy::CapacityWeighted,
            vec![keep, view("n", 0.0, None), burn],
        );
        let mut c = CoreAccounts::new(5);
        let now = Instant::now();
        assert_eq!(picked(c.pick(&s, PickRequest::default(), now, 100)), "burn");
        let burn_gone = [Arc::<str>::from("burn")];
        assert_eq!(
            picked(c.pick(
                &s,
                PickRequest {
                    excluded: &burn_gone,
                    ..Default::default()
                },
                now,
                100
            )),
            "n"
        );
        let pinned = PickRequest {
            pinned: Some("keep"),
            ..Default::default()
        };
        assert_eq!(picked(c.pick(&s, pinned, now, 100)), "keep");
        assert!(matches!(
            c.pick(
                &s,
                PickRequest {
                    pinned: Some("nope"),
                    ..Default::default()
                },
                now,
                100
            ),
            Pick::PinnedUnavailable
        ));
        // One slot per worker per account: three in flight fill them all.
        s.slots_per_worker = 1;
        for id in ["burn", "n", "keep"] {
            c.begin(&Arc::from(id));
        }
        assert!(matches!(
            c.pick(&s, PickRequest::default(), now, 100),
            Pick::AllBusy
        ));
        c.end(&Arc::from("n"));
        assert_eq!(picked(c.pick(&s, PickRequest::default(), now, 100)), "n");
    }

    #[test]
    fn pool_wide_limits_and_cooldowns() {
        let limited = |until| {
            Some(Block {
                until_unix: until,
                reason: BlockReason::UsageLimit,
            })
        };
        let s = snap(
            Strategy::CapacityWeighted,
            vec![view("a", 0.0, limited(500)), view("b", 0.0, limited(300))],
        );
        let mut c = CoreAccounts::new(1);
        let now = Instant::now();
        assert!(matches!(
            c.pick(&s, PickRequest::default(), now, 100),
            Pick::AllUsageLimited { resets_at: 300 }
        ));
        assert_eq!(picked(c.pick(&s, PickRequest::default(), now, 400)), "b");
        // Set aside after a transient failure, b is still the last resort, unless this request
        // already tried it.
        c.cool_down(&Arc::from("b"), now + Duration::from_secs(5), None);
        assert_eq!(picked(c.pick(&s, PickRequest::default(), now, 400)), "b");
        let tried = [Arc::<str>::from("b")];
        assert!(matches!(
            c.pick(
                &s,
                PickRequest {
                    excluded: &tried,
                    ..Default::default()
                },
                now,
                400
            ),
            Pick::NoneAvailable
        ));
        // A healthy account is always preferred to one set aside.
        let two = snap(
            Strategy::RoundRobin,
            vec![view("x", 0.0, None), view("y", 0.0, None)],
        );
        let mut c2 = CoreAccounts::new(1);
        c2.pick(&two, PickRequest::default(), now, 400);
        c2.cool_down(&Arc::from("x"), now + Duration::from_secs(5), None);
        for _ in 0..6 {
            assert_eq!(picked(c2.pick(&two, PickRequest::default(), now, 400)), "y");
        }
        c.cool_down(&Arc::from("b"), now + Duration::from_secs(5), Some(700));
        assert!(matches!(
            c.pick(&s, PickRequest::default(), now, 400),
            Pick::AllUsageLimited { resets_at: 500 }
        ));
        assert_eq!(
            picked(c.pick(
                &s,
                PickRequest::default(),
                now + Duration::from_secs(6),
                400
            )),
            "b"
        );
        let empty = snap(Strategy::CapacityWeighted, vec![]);
        assert!(matches!(
            c.pick(&empty, PickRequest::default(), now, 1),
            Pick::NoAccounts { paused: 0, .. }
        ));
        let mut capped = view("x", 95.0, None);
        capped.cap_primary_percent = Some(90.0);
        assert!(matches!(
            CoreAccounts::new(1).pick(
                &snap(Strategy::RoundRobin, vec![capped]),
                PickRequest::default(),
                now,
                1
            ),
            Pick::AllCapped
        ));
    }

    #[test]
    fn owner_pace_per_minute() {
        let mut paced = view("paced", 0.0, None);
        paced.requests_per_minute = Some(2);
        let s = snap(Strategy::RoundRobin, vec![paced, view("free", 50.0, None)]);
        let mut c = CoreAccounts::new(4);
        let now = Instant::now();
        const T: u64 = 1_795_700_700;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..10 {
            if let Pick::Account(a) = c.pick(&s, PickRequest::default(), now, T) {
                a.count_request(T);
                *counts.entry(a.id.to_string()).or_default() += 1;
            }
        }
        assert_eq!(counts["paced"], 2, "{counts:?}");
        assert_eq!(counts["free"], 8);
        // Alone and at its pace: a clear answer with the next minute.
        let mut alone = view("alone", 0.0, None);
        alone.requests_per_minute = Some(1);
        let s = snap(Strategy::RoundRobin, vec![alone]);
        let Pick::Account(a) = c.pick(&s, PickRequest::default(), now, T) else {
            panic!("first request of the minute");
        };
        a.count_request(T);
        assert!(matches!(
            c.pick(&s, PickRequest::default(), now, T),
            Pick::AllPaced { resets_at } if resets_at == T - T % 60 + 60
        ));
        // A pinned turn still reaches it; the next minute starts over.
        let pinned = PickRequest {
            pinned: Some("alone"),
            ..Default::default()
        };
        assert_eq!(picked(c.pick(&s, pinned, now, T)), "alone");
        assert_eq!(
            picked(c.pick(&s, PickRequest::default(), now, T + 60)),
            "alone"
        );
    }

    #[test]
    fn models_go_to_accounts_whose_plan_offers_them() {
        let on = |id: &str, plan: &str, used: f64| {
            let mut v = view(id, used, None);
            v.plan = Some(plan.into());
            v
        };
        let s = snap(
            Strategy::CapacityWeighted,
            vec![on("plus", "plus", 0.0), on("pro", "pro", 50.0)],
        );
        let mut c = CoreAccounts::new(3);
        let now = Instant::now();
        let pro_only = vec!["pro".to_string()];
        let req = PickRequest {
            plans: Some(&pro_only),
            ..Default::default()
        };
        for _ in 0..20 {
            assert_eq!(picked(c.pick(&s, req, now, 100)), "pro");
        }
        let only_plus = snap(Strategy::CapacityWeighted, vec![on("plus", "plus", 0.0)]);
        match c.pick(&only_plus, req, now, 100) {
            Pick::ModelNotOnPlan { pool_plans } => assert_eq!(pool_plans, vec!["plus"]),
            other => panic!("{other:?}"),
        }
        // Unknown plans are tried rather than refused.
        let unknown = snap(Strategy::CapacityWeighted, vec![view("u", 0.0, None)]);
        assert_eq!(picked(c.pick(&unknown, req, now, 100)), "u");
    }

    #[test]
    fn a_key_bound_to_some_accounts_only_ever_gets_those() {
        let limited = |id: &str| {
            view(
                id,
                0.0,
                Some(Block {
                    until_unix: 900,
                    reason: BlockReason::UsageLimit,
                }),
            )
        };
        let mut paused = view("p", 0.0, None);
        paused.status = AccountStatus::Paused;
        // The key's accounts have the least headroom: the pool alone would never pick them.
        let s = snap(
            Strategy::CapacityWeighted,
            vec![
                view("a", 0.0, None),
                view("b", 90.0, None),
                view("c", 95.0, None),
                limited("lim"),
                paused,
            ],
        );
        let mut c = CoreAccounts::new(11);
        let now = Instant::now();
        let bc = vec!["b".to_string(), "c".to_string(), "nope".to_string()];
        let mut seen: HashMap<String, usize> = HashMap::new();
        for k in 0..200u64 {
            let req = PickRequest {
                sticky_key: (k % 2 == 0).then(|| mix(k)),
                allowed: Some(&bc),
                ..Default::default()
            };
            *seen.entry(picked(c.pick(&s, req, now, 100))).or_default() += 1;
        }
        assert_eq!(seen.keys().count(), 2, "{seen:?}");
        assert!(seen.contains_key("b") && seen.contains_key("c"), "{seen:?}");
        // Excluding both leaves nothing for this key, though the pool has "a".
        let tried = [Arc::<str>::from("b"), Arc::<str>::from("c")];
        let req = PickRequest {
            excluded: &tried,
            allowed: Some(&bc),
            ..Default::default()
        };
        assert!(matches!(c.pick(&s, req, now, 100), Pick::NoneAvailable));
        // Set aside after a transient failure, the key's account is its last resort; "a" is not.
        let only_b = vec!["b".to_string()];
        c.cool_down(&Arc::from("b"), now + Duration::from_secs(5), None);
        let req = PickRequest {
            allowed: Some(&only_b),
            ..Default::default()
        };
        assert_eq!(picked(c.pick(&s, req, now, 100)), "b");
        // A pinned turn on an account outside the key's list is not served there.
        let req = PickRequest {
            pinned: Some("a"),
            allowed: Some(&bc),
            ..Default::default()
        };
        assert!(matches!(c.pick(&s, req, now, 100), Pick::PinnedUnavailable));
        let req = PickRequest {
            pinned: Some("c"),
            allowed: Some(&bc),
            ..Default::default()
        };
        assert_eq!(picked(c.pick(&s, req, now, 100)), "c");
        // The pool's reasons, counted over the key's accounts only.
        let lim = vec!["lim".to_string()];
        let req = PickRequest {
            allowed: Some(&lim),
            ..Default::default()
        };
        assert!(matches!(
            c.pick(&s, req, now, 100),
            Pick::AllUsageLimited { resets_at: 900 }
        ));
        let p = vec!["p".to_string()];
        let req = PickRequest {
            allowed: Some(&p),
            ..Default::default()
        };
        assert!(matches!(
            c.pick(&s, req, now, 100),
            Pick::NoAccounts {
                paused: 1,
                reauth: 0,
                deactivated: 0
            }
        ));
        // None of its accounts exists: its own answer.
        let gone = vec!["gone".to_string()];
        let req = PickRequest {
            allowed: Some(&gone),
            ..Default::default()
        };
        assert!(matches!(c.pick(&s, req, now, 100), Pick::NoAllowedAccounts));
        // No list: the whole pool, and "a" wins on headroom.
        let n = counts(&mut c, &s, 300, false);
        assert!(n["a"] > 150, "{n:?}");
    }
}
