//! Who holds which token: each account's current access, id and refresh tokens, the ones a
//! rotation retired or a new sign-in superseded, and the auth server's failure knobs
//! (PROTOCOL.md 5.2, 5.4, 9 items 2 and 3).
//!
//! An account has one session at a time. A sign-in (authorization-code exchange) replaces it as
//! a rotation does, except that the replaced refresh token answers `refresh_token_invalidated`
//! rather than `refresh_token_reused`: it was not spent, its session was ended.
//!
//! `Shared` keeps one `RwLock` around all of it. Every backend request takes the read side once
//! to map its bearer token to an account; only refreshes and control calls write. Keeping the
//! token maps and the per-account state under one lock makes a rotation atomic: no request can
//! find a new token indexed while its account still calls it unknown, and two refreshes racing
//! with the same refresh token are ordered, so exactly one of them wins and the other sees reuse.
//! Pure bookkeeping: no I/O, and the caller passes `now`.

use std::collections::{HashMap, VecDeque};

use super::jwt::{auth_json, mint_rotated, Minted, SeedAccount};

/// Rotated-out refresh tokens remembered per account, so a reuse is told apart from garbage.
/// Bounded because a load run may refresh an account thousands of times; older ones fall back
/// to unknown (`invalid_grant`), which is still a permanent failure for a gateway.
pub const RETIRED_REFRESH_KEPT: usize = 64;

/// Why an access token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessDenied {
    /// Never issued, or retired more than one rotation ago.
    Unknown,
    /// Past `exp`, expired through the control API, or replaced by the last rotation.
    Expired(usize),
}

/// Why a refresh was refused; each maps to one upstream error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshRefusal {
    /// An armed `fail_refresh`: the auth server answers 500 and the token stays usable.
    Injected,
    /// A refresh token that an earlier refresh already consumed.
    Reused,
    /// The current refresh token, expired through the control API.
    Expired,
    /// The current refresh token, revoked through the control API, or one whose session a
    /// later sign-in replaced.
    Invalidated,
}

/// A refresh with a token the mock knows: the new tokens and their lifetime in seconds, or the
/// refusal.
pub type Refreshed = Result<(SeedAccount, u64), RefreshRefusal>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RefreshState {
    Active,
    Expired,
    Revoked,
}

/// One account's tokens and auth-server knobs.
struct Held {
    index: usize,
    tokens: SeedAccount,
    exp: u64,
    last_refresh: u64,
    /// The access token the last rotation replaced. It answers `token_expired` rather than
    /// `invalid_api_key`: a stale but genuine token is what a gateway racing its own refresh
    /// sends, and the code tells it to refresh rather than give up on the account.
    previous_access: Option<String>,
    retired_refresh: VecDeque<String>,
    /// Current refresh tokens that a sign-in replaced (bounded like `retired_refresh`).
    superseded_refresh: VecDeque<String>,
    refresh_state: RefreshState,
    /// Set by `expire_token`; a rotation clears it, since the new token is good.
    access_expired: bool,
    refresh_failures: u32,
    refresh_latency_ms: u64,
}

impl Held {
    fn new(index: usize, minted: Minted, issued_at: u64) -> Held {
        Held {
            index,
            tokens: minted.seed,
            exp: minted.exp,
            last_refresh: issued_at,
            previous_access: None,
            retired_refresh: VecDeque::new(),
            superseded_refresh: VecDeque::new(),
            refresh_state: RefreshState::Active,
            access_expired: false,
            refresh_failures: 0,
            refresh_latency_ms: 0,
        }
    }
}

/// Why a session's tokens were replaced, which decides what the old refresh token answers.
#[derive(Clone, Copy)]
enum Replaced {
    Rotated,
    SignedIn,
}

pub struct Credentials {
    /// The seeded tokens, restored by `reset`.
    seeds: Vec<Minted>,
    issued_at: u64,
    ttl_secs: u64,
    held: Vec<Held>,
    by_access: HashMap<String, usize>,
    by_refresh: HashMap<String, usize>,
    /// Numbers rotations; never reset, so a token minted before a `reset` is never re-minted.
    serial: u64,
}

impl Credentials {
    pub fn new(seeds: Vec<Minted>, issued_at: u64, ttl_secs: u64) -> Credentials {
        let mut c = Credentials {
            seeds,
            issued_at,
            ttl_secs,
            held: Vec::new(),
            by_access: HashMap::new(),
            by_refresh: HashMap::new(),
            serial: 0,
        };
        c.reset();
        c
    }

    /// Back to the seeded tokens; every rotated token becomes unknown.
    pub fn reset(&mut self) {
        self.held = self
            .seeds
            .iter()
            .enumerate()
            .map(|(i, m)| Held::new(i, m.clone(), self.issued_at))
            .collect();
        self.by_access = self
            .held
            .iter()
            .map(|h| (h.tokens.access_token.clone(), h.index))
            .collect();
        self.by_refresh = self
            .held
            .iter()
            .map(|h| (h.tokens.refresh_token.clone(), h.index))
            .collect();
    }

    /// The account a bearer token may act for.
    pub fn check_access(&self, token: &str, now: u64) -> Result<usize, AccessDenied> {
        let i = *self.by_access.get(token).ok_or(AccessDenied::Unknown)?;
        let h = &self.held[i];
        if h.tokens.access_token != token || h.access_expired || now >= h.exp {
            return Err(AccessDenied::Expired(i));
        }
        Ok(i)
    }

    /// The account a refresh token (current or retired) belongs to, and how long the token
    /// endpoint waits before answering it.
    pub fn lookup_refresh(&self, token: &str) -> Option<(usize, u64)> {
        let i = *self.by_refresh.get(token)?;
        Some((i, self.held[i].refresh_latency_ms))
    }

    /// The refresh-token grant; `None` when the token was never issued (or is long retired).
    /// Only a success changes tokens: a refused or failed attempt leaves the current refresh
    /// token usable, as upstream does for a 500.
    pub fn refresh(&mut self, token: &str, now: u64) -> Option<Refreshed> {
        let (i, _) = self.lookup_refresh(token)?;
        Some(self.try_rotate(i, token, now))
    }

    fn try_rotate(&mut self, i: usize, token: &str, now: u64) -> Refreshed {
        let h = &mut self.held[i];
        if h.refresh_failures > 0 {
            h.refresh_failures -= 1;
            return Err(RefreshRefusal::Injected);
        }
        if h.tokens.refresh_token != token {
            if h.superseded_refresh.iter().any(|t| t == token) {
                return Err(RefreshRefusal::Invalidated);
            }
            return Err(RefreshRefusal::Reused);
        }
        match h.refresh_state {
            RefreshState::Expired => return Err(RefreshRefusal::Expired),
            RefreshState::Revoked => return Err(RefreshRefusal::Invalidated),
            RefreshState::Active => {}
        }
        Ok(self.replace_session(i, now, Replaced::Rotated))
    }

    /// A completed sign-in (authorization-code exchange) for account `i`: fresh tokens replace
    /// the account's session. The previous access token answers `token_expired` as after a
    /// rotation, the previous refresh token `refresh_token_invalidated`; expiry and revocation
    /// set through the control API end with the session they were set on, while the refresh
    /// knobs (`fail_refresh`, latency) belong to the account and stay. Returns the new tokens
    /// and their lifetime in seconds.
    pub fn sign_in(&mut self, i: usize, now: u64) -> (SeedAccount, u64) {
        self.replace_session(i, now, Replaced::SignedIn)
    }

    fn replace_session(&mut self, i: usize, now: u64, why: Replaced) -> (SeedAccount, u64) {
        self.serial += 1;
        let h = &mut self.held[i];
        let minted = mint_rotated(
            h.index,
            &h.tokens.plan_type,
            now,
            self.ttl_secs,
            self.serial,
        );
        let old = std::mem::replace(&mut h.tokens, minted.seed);
        h.exp = minted.exp;
        h.last_refresh = now;
        h.access_expired = false;
        h.refresh_state = RefreshState::Active;
        if let Some(gone) = h.previous_access.replace(old.access_token.clone()) {
            self.by_access.remove(&gone);
        }
        let kept = match why {
            Replaced::Rotated => &mut h.retired_refresh,
            Replaced::SignedIn => &mut h.superseded_refresh,
        };
        kept.push_back(old.refresh_token);
        if kept.len() > RETIRED_REFRESH_KEPT {
            if let Some(gone) = kept.pop_front() {
                self.by_refresh.remove(&gone);
            }
        }
        self.by_access.insert(h.tokens.access_token.clone(), i);
        self.by_refresh.insert(h.tokens.refresh_token.clone(), i);
        (h.tokens.clone(), self.ttl_secs)
    }

    /// The account's current tokens.
    pub fn tokens(&self, i: usize) -> SeedAccount {
        self.held[i].tokens.clone()
    }

    /// The Codex auth.json for the account's current tokens.
    pub fn auth_json(&self, i: usize) -> String {
        let h = &self.held[i];
        auth_json(&h.tokens, h.last_refresh)
    }

    /// The current access token answers `token_expired` until the next rotation or reset.
    pub fn expire_access(&mut self, i: usize) {
        self.held[i].access_expired = true;
    }

    /// The current refresh token answers `refresh_token_expired` from now on.
    pub fn expire_refresh(&mut self, i: usize) {
        self.held[i].refresh_state = RefreshState::Expired;
    }

    /// The current refresh token answers `refresh_token_invalidated` from now on.
    pub fn revoke_refresh(&mut self, i: usize) {
        self.held[i].refresh_state = RefreshState::Revoked;
    }

    /// The next `count` refreshes of the account get a 500 (added to any still armed).
    pub fn fail_refresh(&mut self, i: usize, count: u32) {
        let h = &mut self.held[i];
        h.refresh_failures = h.refresh_failures.saturating_add(count);
    }

    pub fn set_refresh_latency(&mut self, i: usize, ms: u64) {
        self.held[i].refresh_latency_ms = ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::jwt::mint_account;

    const NOW: u64 = 1_000;

    fn creds() -> Credentials {
        let seeds = (0..2).map(|i| mint_account(i, "plus", NOW, 3600)).collect();
        Credentials::new(seeds, NOW, 3600)
    }

    fn ok(r: Refreshed) -> SeedAccount {
        r.expect("refresh succeeds").0
    }

    #[test]
    fn expiry_by_exp_or_flag_until_rotation() {
        let mut c = creds();
        let t = c.tokens(0);
        assert_eq!(c.check_access(&t.access_token, NOW), Ok(0));
        assert_eq!(
            c.check_access(&t.access_token, NOW + 3600),
            Err(AccessDenied::Expired(0))
        );
        c.expire_access(0);
        assert_eq!(
            c.check_access(&t.access_token, NOW),
            Err(AccessDenied::Expired(0))
        );
        let new = ok(c.refresh(&t.refresh_token, NOW + 10).unwrap());
        assert_eq!(c.check_access(&new.access_token, NOW + 10), Ok(0));
        assert_eq!(c.check_access(&new.access_token, NOW + 3609), Ok(0));
        assert_eq!(
            c.check_access(&new.access_token, NOW + 3610),
            Err(AccessDenied::Expired(0))
        );
        c.reset();
        assert_eq!(c.check_access(&t.access_token, NOW), Ok(0));
        assert_eq!(
            c.check_access(&new.access_token, NOW),
            Err(AccessDenied::Unknown)
        );
    }

    #[test]
    fn rotation_retires_the_old_tokens() {
        let mut c = creds();
        let t0 = c.tokens(1);
        let t1 = ok(c.refresh(&t0.refresh_token, NOW).unwrap());
        assert_ne!(t1.refresh_token, t0.refresh_token);
        assert_eq!(c.tokens(1), t1);
        assert_eq!(
            c.check_access(&t0.access_token, NOW),
            Err(AccessDenied::Expired(1))
        );
        let again = c.refresh(&t0.refresh_token, NOW).unwrap();
        assert_eq!(again.unwrap_err(), RefreshRefusal::Reused);
        let t2 = ok(c.refresh(&t1.refresh_token, NOW).unwrap());
        // two rotations back: no longer indexed at all
        assert_eq!(
            c.check_access(&t0.access_token, NOW),
            Err(AccessDenied::Unknown)
        );
        assert_eq!(c.check_access(&t2.access_token, NOW), Ok(1));
        assert_eq!(c.check_access(&c.tokens(0).access_token, NOW), Ok(0));
        assert!(c.refresh("rt_garbage", NOW).is_none());
    }

    #[test]
    fn retired_refresh_tokens_are_bounded() {
        let mut c = creds();
        let first = c.tokens(0).refresh_token;
        let mut rt = first.clone();
        for _ in 0..RETIRED_REFRESH_KEPT {
            rt = ok(c.refresh(&rt, NOW).unwrap()).refresh_token;
        }
        assert_eq!(
            c.refresh(&first, NOW).unwrap().unwrap_err(),
            RefreshRefusal::Reused
        );
        ok(c.refresh(&rt, NOW).unwrap());
        assert!(c.refresh(&first, NOW).is_none(), "forgotten past the bound");
        // account 0: current + kept retired; account 1: its seed
        assert_eq!(c.by_refresh.len(), 1 + RETIRED_REFRESH_KEPT + 1);
        // account 0: current + previous; account 1: its seed
        assert_eq!(c.by_access.len(), 3);
    }

    #[test]
    fn knobs_refuse_without_consuming() {
        let mut c = creds();
        let t = c.tokens(0);
        c.fail_refresh(0, 2);
        c.set_refresh_latency(0, 250);
        assert_eq!(c.lookup_refresh(&t.refresh_token), Some((0, 250)));
        for _ in 0..2 {
            let r = c.refresh(&t.refresh_token, NOW).unwrap();
            assert_eq!(r.unwrap_err(), RefreshRefusal::Injected);
        }
        c.expire_refresh(0);
        assert_eq!(
            c.refresh(&t.refresh_token, NOW).unwrap().unwrap_err(),
            RefreshRefusal::Expired
        );
        c.revoke_refresh(0);
        assert_eq!(
            c.refresh(&t.refresh_token, NOW).unwrap().unwrap_err(),
            RefreshRefusal::Invalidated
        );
        c.reset();
        assert_eq!(c.lookup_refresh(&t.refresh_token), Some((0, 0)));
        ok(c.refresh(&t.refresh_token, NOW).unwrap());
    }

    #[test]
    fn sign_in_replaces_the_session() {
        let mut c = creds();
        let seed = c.tokens(0);
        let rotated = ok(c.refresh(&seed.refresh_token, NOW).unwrap());
        c.expire_access(0);
        c.revoke_refresh(0);
        c.set_refresh_latency(0, 50);
        let (new, ttl) = c.sign_in(0, NOW + 5);
        assert_eq!(ttl, 3600);
        assert_eq!(c.tokens(0), new);
        assert_eq!(new.chatgpt_account_id, seed.chatgpt_account_id);
        assert_eq!(new.plan_type, "plus");
        for t in [&seed, &rotated] {
            assert_ne!(new.access_token, t.access_token);
            assert_ne!(new.refresh_token, t.refresh_token);
        }
        assert_eq!(c.check_access(&new.access_token, NOW + 5), Ok(0));
        assert_eq!(
            c.check_access(&rotated.access_token, NOW + 5),
            Err(AccessDenied::Expired(0)),
            "the replaced access token is stale, not unknown"
        );
        // the session's refresh token was ended, not spent; older ones stay "reused"
        assert_eq!(
            c.refresh(&rotated.refresh_token, NOW).unwrap().unwrap_err(),
            RefreshRefusal::Invalidated
        );
        assert_eq!(
            c.refresh(&seed.refresh_token, NOW).unwrap().unwrap_err(),
            RefreshRefusal::Reused
        );
        // the revocation ended with the old session; the latency knob stays with the account
        assert_eq!(c.lookup_refresh(&new.refresh_token), Some((0, 50)));
        let next = ok(c.refresh(&new.refresh_token, NOW + 6).unwrap());
        assert_eq!(c.check_access(&next.access_token, NOW + 6), Ok(0));
        // the other account is untouched
        assert_eq!(c.check_access(&c.tokens(1).access_token, NOW), Ok(1));
    }
}
