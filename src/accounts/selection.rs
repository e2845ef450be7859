//! Per-worker account choice: least in-flight among the accounts that are active, not blocked for
//! the whole pool and not cooling down on this worker, rotating among ties.
//!
//! All state here is the worker's own (no atomics, no locks): in-flight counts and short local
//! cool-downs after transient upstream failures. Pool-wide blocks (usage limit, auth failure)
//! arrive in the snapshot from the control thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::{AccountStatus, AccountView, AccountsSnapshot, BlockReason};

#[derive(Debug, Default)]
struct Slot {
    in_flight: u32,
    cooldown_until: Option<Instant>,
    /// Set when the cool-down is a usage limit: the window reset, unix seconds. Lets this worker
    /// answer "pool exhausted" before the control thread's snapshot arrives.
    usage_reset: Option<u64>,
}

#[derive(Debug)]
pub enum Pick {
    Account(Arc<AccountView>),
    /// No active account is configured at all.
    NoAccounts,
    /// Every active account is past its usage limit; the earliest reset, unix seconds.
    AllUsageLimited {
        resets_at: u64,
    },
    /// Accounts exist but none can take this request now (tried already, cooling down, auth).
    NoneAvailable,
}

#[derive(Debug, Default)]
pub struct CoreAccounts {
    slots: HashMap<Arc<str>, Slot>,
    rotation: usize,
    seen_version: u64,
}

impl CoreAccounts {
    pub fn pick(
        &mut self,
        snap: &AccountsSnapshot,
        excluded: &[Arc<str>],
        now: Instant,
        now_unix: u64,
    ) -> Pick {
        if snap.version != self.seen_version {
            self.slots.retain(|id, _| snap.find(id).is_some());
            self.seen_version = snap.version;
        }
        let active: Vec<&Arc<AccountView>> = snap
            .accounts
            .iter()
            .filter(|a| a.status == AccountStatus::Active)
            .collect();
        if active.is_empty() {
            return Pick::NoAccounts;
        }
        let n = active.len();
        self.rotation = self.rotation.wrapping_add(1);
        let mut best: Option<(&Arc<AccountView>, u32)> = None;
        for k in 0..n {
            let Some(acct) = active.get((self.rotation + k) % n) else {
                continue;
            };
            if excluded.contains(&acct.id) || acct.blocked_at(now_unix).is_some() {
                continue;
            }
            let slot = self.slots.get(&acct.id);
            if slot.and_then(|s| s.cooldown_until).is_some_and(|t| t > now) {
                continue;
            }
            let load = slot.map_or(0, |s| s.in_flight);
            if best.is_none_or(|(_, b)| load < b) {
                best = Some((acct, load));
            }
        }
        if let Some((acct, _)) = best {
            return Pick::Account(Arc::clone(acct));
        }
        let limited: Vec<u64> = active
            .iter()
            .filter_map(|a| {
                let pool = a
                    .blocked_at(now_unix)
                    .filter(|b| b.reason == BlockReason::UsageLimit)
                    .map(|b| b.until_unix);
                let local = self
                    .slots
                    .get(&a.id)
                    .filter(|s| s.cooldown_until.is_some_and(|t| t > now))
                    .and_then(|s| s.usage_reset);
                pool.or(local)
            })
            .collect();
        if limited.len() == n {
            return Pick::AllUsageLimited {
                resets_at: limited.into_iter().min().unwrap_or(now_unix),
            };
        }
        Pick::NoneAvailable
    }

    pub fn begin(&mut self, id: &Arc<str>) {
        self.slots.entry(Arc::clone(id)).or_default().in_flight += 1;
    }

    pub fn end(&mut self, id: &Arc<str>) {
        if let Some(s) = self.slots.get_mut(id) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }

    /// Keeps this worker off an account until `until`; `usage_reset` marks a usage limit.
    pub fn cool_down(&mut self, id: &Arc<str>, until: Instant, usage_reset: Option<u64>) {
        let slot = self.slots.entry(Arc::clone(id)).or_default();
        slot.cooldown_until = Some(until);
        slot.usage_reset = usage_reset;
    }

    pub fn in_flight(&self, id: &str) -> u32 {
        self.slots.get(id).map_or(0, |s| s.in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Block;
    use bytes::Bytes;
    use std::time::Duration;

    fn view(id: &str, block: Option<Block>) -> Arc<AccountView> {
        Arc::new(AccountView {
            id: Arc::from(id),
            email: None,
            plan: None,
            status: AccountStatus::Active,
            authorization: Bytes::from_static(b"Bearer x"),
            account_header: None,
            block,
        })
    }

    fn snap(accounts: Vec<Arc<AccountView>>) -> AccountsSnapshot {
        AccountsSnapshot {
            version: 1,
            accounts,
        }
    }

    fn picked(p: Pick) -> String {
        match p {
            Pick::Account(a) => a.id.to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn spreads_by_in_flight_and_respects_exclusions() {
        let s = snap(vec![view("a", None), view("b", None)]);
        let mut c = CoreAccounts::default();
        let now = Instant::now();
        let first = picked(c.pick(&s, &[], now, 100));
        c.begin(&Arc::from(first.as_str()));
        let second = picked(c.pick(&s, &[], now, 100));
        assert_ne!(first, second);
        let excluded = [Arc::<str>::from(second.as_str())];
        assert_eq!(picked(c.pick(&s, &excluded, now, 100)), first);
        let both = [Arc::<str>::from("a"), Arc::<str>::from("b")];
        assert!(matches!(c.pick(&s, &both, now, 100), Pick::NoneAvailable));
    }

    #[test]
    fn pool_wide_limits_and_cooldowns() {
        let limited = |until| {
            Some(Block {
                until_unix: until,
                reason: BlockReason::UsageLimit,
            })
        };
        let s = snap(vec![view("a", limited(500)), view("b", limited(300))]);
        let mut c = CoreAccounts::default();
        let now = Instant::now();
        assert!(matches!(
            c.pick(&s, &[], now, 100),
            Pick::AllUsageLimited { resets_at: 300 }
        ));
        // Past the reset the account is usable again.
        assert_eq!(picked(c.pick(&s, &[], now, 400)), "b");
        c.cool_down(&Arc::from("b"), now + Duration::from_secs(5), None);
        assert!(matches!(c.pick(&s, &[], now, 400), Pick::NoneAvailable));
        // A local usage-limit cool-down counts as exhausted before the snapshot says so.
        c.cool_down(&Arc::from("b"), now + Duration::from_secs(5), Some(700));
        assert!(matches!(
            c.pick(&s, &[], now, 400),
            Pick::AllUsageLimited { resets_at: 500 }
        ));
        assert_eq!(
            picked(c.pick(&s, &[], now + Duration::from_secs(6), 400)),
            "b"
        );
        assert!(matches!(
            c.pick(&snap(vec![]), &[], now, 1),
            Pick::NoAccounts
        ));
    }
}
