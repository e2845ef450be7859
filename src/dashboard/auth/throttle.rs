//! Login throttling per client address: a few free tries, then a lockout that doubles with each
//! further failure, up to a ceiling. A success clears the address. Bounded in memory: the oldest
//! entries go first when the table is full.

use std::collections::HashMap;
use std::net::IpAddr;

/// Failures allowed before the first lockout.
const FREE_FAILURES: u32 = 5;
const FIRST_LOCKOUT_SECS: u64 = 30;
const MAX_LOCKOUT_SECS: u64 = 15 * 60;
/// An address quiet for this long starts afresh.
const FORGET_AFTER_SECS: u64 = 60 * 60;
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    locked_until: u64,
    last_failure: u64,
}

#[derive(Debug, Default)]
pub struct Throttle {
    by_addr: HashMap<IpAddr, Entry>,
}

impl Throttle {
    /// `Some(seconds)` to wait when `addr` may not try now.
    pub fn blocked_for(&self, addr: IpAddr, now: u64) -> Option<u64> {
        let e = self.by_addr.get(&addr)?;
        (e.locked_until > now).then(|| e.locked_until - now)
    }

    pub fn failed(&mut self, addr: IpAddr, now: u64) {
        if self.by_addr.len() >= MAX_ENTRIES && !self.by_addr.contains_key(&addr) {
            self.by_addr
                .retain(|_, e| now.saturating_sub(e.last_failure) < FORGET_AFTER_SECS);
            if self.by_addr.len() >= MAX_ENTRIES {
                if let Some(oldest) = self
                    .by_addr
                    .iter()
                    .min_by_key(|(_, e)| e.last_failure)
                    .map(|(a, _)| *a)
                {
                    self.by_addr.remove(&oldest);
                }
            }
        }
        let e = self.by_addr.entry(addr).or_insert(Entry {
            failures: 0,
            locked_until: 0,
            last_failure: now,
        });
        if now.saturating_sub(e.last_failure) >= FORGET_AFTER_SECS {
            e.failures = 0;
        }
        e.failures += 1;
        e.last_failure = now;
        if e.failures >= FREE_FAILURES {
            let doublings = (e.failures - FREE_FAILURES).min(16);
            let lock = (FIRST_LOCKOUT_SECS << doublings).min(MAX_LOCKOUT_SECS);
            e.locked_until = now + lock;
        }
    }

    pub fn succeeded(&mut self, addr: IpAddr) {
        self.by_addr.remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_free_failures_and_doubles() {
        let mut t = Throttle::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..FREE_FAILURES - 1 {
            t.failed(a, 100);
            assert_eq!(t.blocked_for(a, 100), None);
        }
        t.failed(a, 100);
        assert_eq!(t.blocked_for(a, 100), Some(30));
        assert_eq!(t.blocked_for(a, 130), None);
        t.failed(a, 130);
        assert_eq!(t.blocked_for(a, 130), Some(60));
        // Another address is not affected, and a success clears.
        assert_eq!(t.blocked_for([10, 0, 0, 2].into(), 130), None);
        t.succeeded(a);
        assert_eq!(t.blocked_for(a, 130), None);
    }

    #[test]
    fn lockout_has_a_ceiling_and_table_is_bounded() {
        let mut t = Throttle::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..40 {
            t.failed(a, 1000);
        }
        assert_eq!(t.blocked_for(a, 1000), Some(MAX_LOCKOUT_SECS));
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            t.failed(IpAddr::from(i.to_be_bytes()), 2000);
        }
        assert!(t.by_addr.len() <= MAX_ENTRIES);
    }
}
