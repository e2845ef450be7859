//! Sign-ins (PROTOCOL.md 5.2, 5.3, 9 item 4): authorization codes waiting for their exchange,
//! device logins waiting for their polls, which account signs in, and the counters tests read.
//!
//! Pure bookkeeping like `credentials`: the caller passes `now`, and mints the tokens itself
//! once [`Logins::exchange`] has named the account. `now` is the mock's clock, so
//! `advance_clock` ages codes and device logins exactly as it ages tokens. `Shared` keeps this
//! behind its own mutex, never held together with the credentials lock.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};

use super::jwt::CLIENT_ID;

/// An authorization code must be exchanged within this many seconds of being issued.
pub const CODE_TTL_SECS: u64 = 60;
/// Seconds between device polls the mock asks for, unless `set_device_flow` says otherwise.
pub const DEFAULT_DEVICE_INTERVAL_SECS: u64 = 5;
/// Lifetime of a device login, unless `set_device_flow` says otherwise (PROTOCOL.md 5.3: 15 min).
pub const DEFAULT_DEVICE_EXPIRES_IN_SECS: u64 = 900;
/// Unexchanged codes, and device logins, kept at most each: a client that starts logins in a
/// loop must not grow the mock without bound. Expired ones go first, then the oldest.
pub const MAX_PENDING: usize = 10_000;
/// Spent codes remembered, so a second exchange is told apart from a made-up code.
pub const USED_CODES_KEPT: usize = 1024;
/// RFC 7636 section 4.1: a code verifier (and so an S256 challenge) is 43 to 128 characters.
pub const PKCE_MIN_LEN: usize = 43;
pub const PKCE_MAX_LEN: usize = 128;
/// Random bytes in a code (`ac_` + 43 characters) and a device verifier (86 characters, as the
/// CLI makes them).
const CODE_BYTES: usize = 32;
const VERIFIER_BYTES: usize = 64;
const DEVICE_ID_BYTES: usize = 12;

/// Sign-in counters (`MockUpstream::oauth_stats`). Attempts are counted whether or not they
/// succeed; `reset` zeroes them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthStats {
    /// `GET /oauth/authorize` calls, rejected ones included.
    pub authorize_calls: u64,
    /// Authorize calls answered 400 (bad client, PKCE or redirect parameters).
    pub authorize_rejected: u64,
    /// Authorize calls redirected with the error armed by `deny_next_login`.
    pub logins_denied: u64,
    /// Authorization codes issued, by authorize redirects and device approvals.
    pub codes_issued: u64,
    /// `authorization_code` grants at `POST /oauth/token`, failed ones included.
    pub code_exchanges: u64,
    /// Of those, the ones that issued tokens.
    pub code_exchanges_ok: u64,
    /// Device logins started (`POST /api/accounts/deviceauth/usercode` answered 200).
    pub device_codes: u64,
    /// `POST /api/accounts/deviceauth/token` polls, every outcome.
    pub device_polls: u64,
    /// Polls answered 403 `deviceauth_authorization_pending`.
    pub device_pending: u64,
    /// Polls answered 200 with the code triple (a repeated poll after approval included).
    pub device_approvals: u64,
    /// Polls answered 400 `deviceauth_expired`.
    pub device_expired: u64,
}

/// How the next device logins behave (`MockUpstream::set_device_flow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceFlow {
    /// The `interval` the usercode reply asks for (not enforced).
    pub interval_secs: u64,
    /// Seconds from the usercode reply until every poll answers `deviceauth_expired`.
    pub expires_in_secs: u64,
    /// Polls answered `deviceauth_authorization_pending` before the user "approves".
    pub pending_polls: u32,
}

impl Default for DeviceFlow {
    /// The real server's interval and lifetime; the user approves before the first poll.
    fn default() -> Self {
        DeviceFlow {
            interval_secs: DEFAULT_DEVICE_INTERVAL_SECS,
            expires_in_secs: DEFAULT_DEVICE_EXPIRES_IN_SECS,
            pending_polls: 0,
        }
    }
}

/// What a valid authorize request leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorized {
    /// Redirect with this code.
    Code(String),
    /// Redirect with this error (armed by `deny_next_login`).
    Denied { error: String, description: String },
}

/// Why an authorization-code exchange was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExchangeRefusal {
    MissingCode,
    UnknownCode,
    CodeUsed,
    CodeExpired,
    ClientMismatch,
    RedirectMismatch,
    MissingVerifier,
    MalformedVerifier,
    VerifierMismatch,
}

impl ExchangeRefusal {
    /// RFC 6749 section 5.2: a missing parameter is `invalid_request`; a code, client binding
    /// or PKCE proof that does not check out is `invalid_grant`.
    pub fn error(&self) -> &'static str {
        match self {
            ExchangeRefusal::MissingCode | ExchangeRefusal::MissingVerifier => "invalid_request",
            _ => "invalid_grant",
        }
    }

    pub fn description(&self) -> &'static str {
        match self {
            ExchangeRefusal::MissingCode => "Missing code.",
            ExchangeRefusal::UnknownCode => "The authorization code is invalid.",
            ExchangeRefusal::CodeUsed => "The authorization code has already been used.",
            ExchangeRefusal::CodeExpired => "The authorization code has expired.",
            ExchangeRefusal::ClientMismatch => {
                "The client_id does not match the one the code was issued to."
            }
            ExchangeRefusal::RedirectMismatch => {
                "The redirect_uri does not match the one the code was issued for."
            }
            ExchangeRefusal::MissingVerifier => "Missing code_verifier.",
            ExchangeRefusal::MalformedVerifier => {
                "The code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636)."
            }
            ExchangeRefusal::VerifierMismatch => {
                "The code_verifier does not match the code_challenge."
            }
        }
    }
}

/// A device login as the usercode reply describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStart {
    pub device_auth_id: String,
    pub user_code: String,
    pub interval_secs: u64,
    pub expires_in_secs: u64,
}

/// The code triple an approved device login hands out (PROTOCOL.md 5.3 step 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceGrant {
    pub authorization_code: String,
    pub code_challenge: String,
    pub code_verifier: String,
}

/// What a device poll gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevicePoll {
    /// No such device login, or the user code does not belong to it.
    Unknown,
    Expired,
    Pending,
    Approved(DeviceGrant),
}

struct AuthCode {
    account: usize,
    redirect_uri: String,
    challenge: String,
    expires_at: u64,
}

struct DeviceLogin {
    user_code: String,
    account: usize,
    expires_at: u64,
    /// Set by `expire_devices`.
    expired: bool,
    pending_polls: u32,
    polls_answered: u32,
    grant: Option<DeviceGrant>,
}

impl DeviceLogin {
    fn expired(&self, now: u64) -> bool {
        self.expired || now >= self.expires_at
    }
}

pub struct Logins {
    accounts: usize,
    login_account: usize,
    deny_next: Option<(String, String)>,
    device_flow: DeviceFlow,
    codes: HashMap<String, AuthCode>,
    used_codes: VecDeque<String>,
    devices: HashMap<String, DeviceLogin>,
    stats: OAuthStats,
}

impl Logins {
    /// Sign-in state for a mock with `accounts` seeded accounts; account 0 signs in.
    pub fn new(accounts: usize) -> Logins {
        Logins {
            accounts,
            login_account: 0,
            deny_next: None,
            device_flow: DeviceFlow::default(),
            codes: HashMap::new(),
            used_codes: VecDeque::new(),
            devices: HashMap::new(),
            stats: OAuthStats::default(),
        }
    }

    /// Back to the start: no codes or device logins, default knobs, zero counters.
    pub fn reset(&mut self) {
        *self = Logins::new(self.accounts);
    }

    pub fn stats(&self) -> OAuthStats {
        self.stats.clone()
    }

    /// The account that signs in when the request names none; `false` if there is no such
    /// account (nothing changes).
    pub fn set_login_account(&mut self, index: usize) -> bool {
        let known = index < self.accounts;
        if known {
            self.login_account = index;
        }
        known
    }

    pub fn login_account(&self) -> Option<usize> {
        (self.login_account < self.accounts).then_some(self.login_account)
    }

    /// The next valid authorize request redirects with this error instead of a code.
    pub fn deny_next(&mut self, error: &str, description: &str) {
        self.deny_next = Some((error.to_string(), description.to_string()));
    }

    /// Applies to device logins started from now on.
    pub fn set_device_flow(&mut self, flow: DeviceFlow) {
        self.device_flow = flow;
    }

    /// Every device login started so far answers `deviceauth_expired` from now on.
    pub fn expire_devices(&mut self) {
        for d in self.devices.values_mut() {
            d.expired = true;
        }
    }

    /// Counts an authorize request answered 400.
    pub fn authorize_rejected(&mut self) {
        self.stats.authorize_calls += 1;
        self.stats.authorize_rejected += 1;
    }

    /// A valid authorize request: the armed denial, if any, else a code bound to the redirect
    /// URI and the S256 challenge that signs in `hinted` (the account `login_hint` named) or
    /// else the login account. A mock without accounts denies (`access_denied`).
    pub fn authorize(
        &mut self,
        hinted: Option<usize>,
        redirect_uri: &str,
        challenge: &str,
        now: u64,
    ) -> Authorized {
        self.stats.authorize_calls += 1;
        let account = hinted.or(self.login_account());
        match (self.deny_next.take(), account) {
            (None, Some(account)) => {
                Authorized::Code(self.issue_code(account, redirect_uri, challenge, now))
            }
            (armed, _) => {
                self.stats.logins_denied += 1;
                let (error, description) = armed.unwrap_or_else(|| {
                    let why = "The mock has no seeded account to sign in.";
                    ("access_denied".to_string(), why.to_string())
                });
                Authorized::Denied { error, description }
            }
        }
    }

    fn issue_code(
        &mut self,
        account: usize,
        redirect_uri: &str,
        challenge: &str,
        now: u64,
    ) -> String {
        if self.codes.len() >= MAX_PENDING {
            self.codes.retain(|_, c| now < c.expires_at);
            evict_oldest(&mut self.codes, |c| c.expires_at);
        }
        let code = format!("ac_{}", random_b64(CODE_BYTES));
        self.codes.insert(
            code.clone(),
            AuthCode {
                account,
                redirect_uri: redirect_uri.to_string(),
                challenge: challenge.to_string(),
                expires_at: now + CODE_TTL_SECS,
            },
        );
        self.stats.codes_issued += 1;
        code
    }

    /// The `authorization_code` grant: the account the code signs in. A code is spent by the
    /// first exchange that presents it, even one refused for a bad client, redirect URI or
    /// verifier: a second try with the same code is `CodeUsed`, as RFC 6749 section 4.1.2
    /// wants ("used more than once").
    pub fn exchange(
        &mut self,
        code: Option<&str>,
        client_id: Option<&str>,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        now: u64,
    ) -> Result<usize, ExchangeRefusal> {
        self.stats.code_exchanges += 1;
        let account = self.check_exchange(code, client_id, redirect_uri, verifier, now)?;
        self.stats.code_exchanges_ok += 1;
        Ok(account)
    }

    fn check_exchange(
        &mut self,
        code: Option<&str>,
        client_id: Option<&str>,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        now: u64,
    ) -> Result<usize, ExchangeRefusal> {
        let code = code
            .filter(|c| !c.is_empty())
            .ok_or(ExchangeRefusal::MissingCode)?;
        let Some(issued) = self.codes.remove(code) else {
            return Err(if self.used_codes.iter().any(|c| c == code) {
                ExchangeRefusal::CodeUsed
            } else {
                ExchangeRefusal::UnknownCode
            });
        };
        if now >= issued.expires_at {
            return Err(ExchangeRefusal::CodeExpired);
        }
        self.used_codes.push_back(code.to_string());
        if self.used_codes.len() > USED_CODES_KEPT {
            self.used_codes.pop_front();
        }
        if client_id != Some(CLIENT_ID) {
            return Err(ExchangeRefusal::ClientMismatch);
        }
        if redirect_uri != Some(issued.redirect_uri.as_str()) {
            return Err(ExchangeRefusal::RedirectMismatch);
        }
        let verifier = verifier
            .filter(|v| !v.is_empty())
            .ok_or(ExchangeRefusal::MissingVerifier)?;
        if !is_pkce_value(verifier) {
            return Err(ExchangeRefusal::MalformedVerifier);
        }
        if s256_challenge(verifier) != issued.challenge {
            return Err(ExchangeRefusal::VerifierMismatch);
        }
        Ok(issued.account)
    }

    /// A usercode request: a new device login for the login account, on the current
    /// [`DeviceFlow`]. `None` when the mock has no account to sign in.
    pub fn start_device(&mut self, now: u64) -> Option<DeviceStart> {
        let account = self.login_account()?;
        if self.devices.len() >= MAX_PENDING {
            self.devices.retain(|_, d| !d.expired(now));
            evict_oldest(&mut self.devices, |d| d.expires_at);
        }
        let flow = self.device_flow;
        let device_auth_id = format!("dauth_{}", hex(&random_bytes::<DEVICE_ID_BYTES>()));
        let user_code = user_code();
        self.devices.insert(
            device_auth_id.clone(),
            DeviceLogin {
                user_code: user_code.clone(),
                account,
                expires_at: now.saturating_add(flow.expires_in_secs),
                expired: false,
                pending_polls: flow.pending_polls,
                polls_answered: 0,
                grant: None,
            },
        );
        self.stats.device_codes += 1;
        Some(DeviceStart {
            device_auth_id,
            user_code,
            interval_secs: flow.interval_secs,
            expires_in_secs: flow.expires_in_secs,
        })
    }

    /// A device poll. Once the login's pending polls are used up the user has "approved": the
    /// first approved poll issues a code bound to `redirect_uri` (the issuer's
    /// `/deviceauth/callback`) and a verifier the mock made, and later polls repeat that triple
    /// until the login expires. User codes compare case-insensitively.
    pub fn poll_device(
        &mut self,
        device_auth_id: &str,
        user_code: &str,
        redirect_uri: &str,
        now: u64,
    ) -> DevicePoll {
        self.stats.device_polls += 1;
        let Some(d) = self
            .devices
            .get_mut(device_auth_id)
            .filter(|d| d.user_code.eq_ignore_ascii_case(user_code.trim()))
        else {
            return DevicePoll::Unknown;
        };
        if d.expired(now) {
            self.stats.device_expired += 1;
            return DevicePoll::Expired;
        }
        if d.polls_answered < d.pending_polls {
            d.polls_answered += 1;
            self.stats.device_pending += 1;
            return DevicePoll::Pending;
        }
        self.stats.device_approvals += 1;
        if let Some(g) = &d.grant {
            return DevicePoll::Approved(g.clone());
        }
        let account = d.account;
        let code_verifier = random_b64(VERIFIER_BYTES);
        let code_challenge = s256_challenge(&code_verifier);
        let authorization_code = self.issue_code(account, redirect_uri, &code_challenge, now);
        let grant = DeviceGrant {
            authorization_code,
            code_challenge,
            code_verifier,
        };
        if let Some(d) = self.devices.get_mut(device_auth_id) {
            d.grant = Some(grant.clone());
        }
        DevicePoll::Approved(grant)
    }
}

/// Drops the entry with the smallest `key` once a map is still full after pruning.
fn evict_oldest<V>(map: &mut HashMap<String, V>, key: impl Fn(&V) -> u64) {
    if map.len() < MAX_PENDING {
        return;
    }
    let oldest = map
        .iter()
        .min_by_key(|(_, v)| key(v))
        .map(|(k, _)| k.clone());
    if let Some(k) = oldest {
        map.remove(&k);
    }
}

/// RFC 7636 section 4.2: `BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`, no padding.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()))
}

/// RFC 7636 section 4.1 (verifier) and 4.2 (challenge): 43 to 128 unreserved characters.
pub fn is_pkce_value(s: &str) -> bool {
    (PKCE_MIN_LEN..=PKCE_MAX_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// `ABCD-1234`: four letters, a dash, four digits, like the codes upstream shows.
fn user_code() -> String {
    let r = random_bytes::<8>();
    let (letters, digits) = r.split_at(4);
    let letters: String = letters.iter().map(|b| char::from(b'A' + b % 26)).collect();
    let digits: String = digits.iter().map(|b| char::from(b'0' + b % 10)).collect();
    format!("{letters}-{digits}")
}

fn random_b64(n: usize) -> String {
    let mut buf = vec![0u8; n];
    fill_random(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    fill_random(&mut buf);
    buf
}

/// The system CSPRNG; should it ever fail, SipHash under a per-process random key over a
/// counter, which still never repeats within the process and is not guessable from outside.
fn fill_random(buf: &mut [u8]) {
    if SystemRandom::new().fill(buf).is_ok() {
        return;
    }
    static FALLBACK_COUNTER: AtomicU64 = AtomicU64::new(0);
    let keys = RandomState::new();
    for chunk in buf.chunks_mut(8) {
        let n = FALLBACK_COUNTER.fetch_add(1, Ordering::Relaxed);
        let word = keys.hash_one(n).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000;
    const REDIRECT: &str = "http://localhost:1455/auth/callback";

    /// RFC 7636 appendix B's example pair.
    const RFC_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn code(a: Authorized) -> String {
        match a {
            Authorized::Code(c) => c,
            other => panic!("expected a code, got {other:?}"),
        }
    }

    fn exchange(
        l: &mut Logins,
        code: &str,
        verifier: &str,
        now: u64,
    ) -> Result<usize, ExchangeRefusal> {
        l.exchange(
            Some(code),
            Some(CLIENT_ID),
            Some(REDIRECT),
            Some(verifier),
            now,
        )
    }

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(s256_challenge(RFC_VERIFIER), RFC_CHALLENGE);
        assert!(is_pkce_value(RFC_VERIFIER));
        assert!(is_pkce_value(&"a".repeat(PKCE_MAX_LEN)));
        assert!(!is_pkce_value(&"a".repeat(PKCE_MAX_LEN + 1)));
        assert!(!is_pkce_value(&"a".repeat(PKCE_MIN_LEN - 1)));
        assert!(!is_pkce_value(&format!("{}+", "a".repeat(PKCE_MIN_LEN))));
    }

    #[test]
    fn codes_are_single_use_and_bound_to_redirect_and_verifier() {
        let mut l = Logins::new(2);
        assert!(l.set_login_account(1));
        assert!(!l.set_login_account(2));
        assert_eq!(l.login_account(), Some(1));
        let c = code(l.authorize(Some(1), REDIRECT, RFC_CHALLENGE, NOW));
        assert!(c.starts_with("ac_") && c.len() > 40, "{c}");
        assert_eq!(exchange(&mut l, &c, RFC_VERIFIER, NOW + 1), Ok(1));
        assert_eq!(
            exchange(&mut l, &c, RFC_VERIFIER, NOW + 1),
            Err(ExchangeRefusal::CodeUsed)
        );
        assert_eq!(
            exchange(&mut l, "ac_made_up", RFC_VERIFIER, NOW),
            Err(ExchangeRefusal::UnknownCode)
        );

        let c = code(l.authorize(None, REDIRECT, RFC_CHALLENGE, NOW));
        let wrong = "x".repeat(43);
        assert_eq!(
            exchange(&mut l, &c, &wrong, NOW),
            Err(ExchangeRefusal::VerifierMismatch)
        );
        assert_eq!(
            exchange(&mut l, &c, RFC_VERIFIER, NOW),
            Err(ExchangeRefusal::CodeUsed),
            "a refused exchange spends the code too"
        );

        let c = code(l.authorize(None, REDIRECT, RFC_CHALLENGE, NOW));
        let other_redirect = l.exchange(
            Some(&c),
            Some(CLIENT_ID),
            Some("http://localhost:1457/auth/callback"),
            Some(RFC_VERIFIER),
            NOW,
        );
        assert_eq!(other_redirect, Err(ExchangeRefusal::RedirectMismatch));
        let c = code(l.authorize(None, REDIRECT, RFC_CHALLENGE, NOW));
        let other_client = l.exchange(
            Some(&c),
            Some("app_other"),
            Some(REDIRECT),
            Some(RFC_VERIFIER),
            NOW,
        );
        assert_eq!(other_client, Err(ExchangeRefusal::ClientMismatch));
        let c = code(l.authorize(None, REDIRECT, RFC_CHALLENGE, NOW));
        assert_eq!(
            exchange(&mut l, &c, "short", NOW),
            Err(ExchangeRefusal::MalformedVerifier)
        );
        let c = code(l.authorize(None, REDIRECT, RFC_CHALLENGE, NOW));
        let missing = l.exchange(Some(&c), Some(CLIENT_ID), Some(REDIRECT), None, NOW);
        assert_eq!(missing, Err(ExchangeRefusal::MissingVerifier));
        assert_eq!(missing.unwrap_err().error(), "invalid_request");
        assert_eq!(
            l.exchange(
                None,
                Some(CLIENT_ID),
                Some(REDIRECT),
                Some(RFC_VERIFIER),
                NOW
            ),
            Err(ExchangeRefusal::MissingCode)
        );

        let s = l.stats();
        assert_eq!(s.authorize_calls, 6);
        assert_eq!(s.codes_issued, 6);
        assert_eq!(s.code_exchanges, 10);
        assert_eq!(s.code_exchanges_ok, 1);
    }

    #[test]
    fn codes_expire_after_their_ttl() {
        let mut l = Logins::new(1);
        let c = code(l.authorize(None, REDIRECT, RFC_CHALLENGE, NOW));
        assert_eq!(
            exchange(&mut l, &c, RFC_VERIFIER, NOW + CODE_TTL_SECS),
            Err(ExchangeRefusal::CodeExpired)
        );
        let c = code(l.authorize(None, REDIRECT, RFC_CHALLENGE, NOW));
        assert_eq!(
            exchange(&mut l, &c, RFC_VERIFIER, NOW + CODE_TTL_SECS - 1),
            Ok(0)
        );
    }

    #[test]
    fn nobody_signs_in_without_accounts() {
        let mut l = Logins::new(0);
        let got = l.authorize(None, REDIRECT, RFC_CHALLENGE, NOW);
        assert!(matches!(got, Authorized::Denied { ref error, .. } if error == "access_denied"));
        assert_eq!(l.stats().logins_denied, 1);
    }

    #[test]
    fn denial_applies_once() {
        let mut l = Logins::new(1);
        l.deny_next("access_denied", "missing_codex_entitlement");
        assert_eq!(
            l.authorize(None, REDIRECT, RFC_CHALLENGE, NOW),
            Authorized::Denied {
                error: "access_denied".into(),
                description: "missing_codex_entitlement".into()
            }
        );
        code(l.authorize(None, REDIRECT, RFC_CHALLENGE, NOW));
        assert_eq!(l.stats().logins_denied, 1);
        assert_eq!(l.stats().codes_issued, 1);
    }

    #[test]
    fn device_login_pends_then_hands_out_an_exchangeable_code() {
        let mut l = Logins::new(2);
        l.set_login_account(1);
        l.set_device_flow(DeviceFlow {
            interval_secs: 1,
            expires_in_secs: 30,
            pending_polls: 2,
        });
        let d = l.start_device(NOW).unwrap();
        assert!(d.device_auth_id.starts_with("dauth_"));
        let shape: Vec<bool> = d
            .user_code
            .bytes()
            .map(|b| b.is_ascii_uppercase())
            .collect();
        assert_eq!(d.user_code.len(), 9);
        assert_eq!(&shape[..4], [true; 4]);
        assert_eq!(d.user_code.as_bytes()[4], b'-');
        assert!(d.user_code[5..].bytes().all(|b| b.is_ascii_digit()));
        assert_eq!((d.interval_secs, d.expires_in_secs), (1, 30));

        let cb = "http://127.0.0.1:9/deviceauth/callback";
        let id = d.device_auth_id.as_str();
        assert_eq!(l.poll_device(id, "ZZZZ-0000", cb, NOW), DevicePoll::Unknown);
        assert_eq!(
            l.poll_device("dauth_x", &d.user_code, cb, NOW),
            DevicePoll::Unknown
        );
        assert_eq!(
            l.poll_device(id, &d.user_code, cb, NOW),
            DevicePoll::Pending
        );
        let lower = d.user_code.to_ascii_lowercase();
        assert_eq!(l.poll_device(id, &lower, cb, NOW), DevicePoll::Pending);
        let DevicePoll::Approved(g) = l.poll_device(id, &d.user_code, cb, NOW + 1) else {
            panic!("approved after two pending polls");
        };
        assert_eq!(s256_challenge(&g.code_verifier), g.code_challenge);
        assert_eq!(g.code_verifier.len(), 86);
        assert_eq!(
            l.poll_device(id, &d.user_code, cb, NOW + 2),
            DevicePoll::Approved(g.clone()),
            "a repeated poll gets the same triple"
        );
        let got = l.exchange(
            Some(&g.authorization_code),
            Some(CLIENT_ID),
            Some(cb),
            Some(&g.code_verifier),
            NOW + 2,
        );
        assert_eq!(got, Ok(1));

        let s = l.stats();
        assert_eq!(
            (
                s.device_codes,
                s.device_polls,
                s.device_pending,
                s.device_approvals
            ),
            (1, 6, 2, 2)
        );
    }

    #[test]
    fn device_logins_expire_by_time_or_on_demand() {
        let mut l = Logins::new(1);
        l.set_device_flow(DeviceFlow {
            interval_secs: 1,
            expires_in_secs: 30,
            pending_polls: 5,
        });
        let a = l.start_device(NOW).unwrap();
        let b = l.start_device(NOW).unwrap();
        let cb = "http://127.0.0.1:9/deviceauth/callback";
        assert_eq!(
            l.poll_device(&a.device_auth_id, &a.user_code, cb, NOW + 29),
            DevicePoll::Pending
        );
        assert_eq!(
            l.poll_device(&a.device_auth_id, &a.user_code, cb, NOW + 30),
            DevicePoll::Expired
        );
        assert_eq!(
            l.poll_device(&b.device_auth_id, &b.user_code, cb, NOW),
            DevicePoll::Pending
        );
        l.expire_devices();
        assert_eq!(
            l.poll_device(&b.device_auth_id, &b.user_code, cb, NOW),
            DevicePoll::Expired
        );
        // a login started afterwards is not affected
        let c = l.start_device(NOW).unwrap();
        assert_eq!(
            l.poll_device(&c.device_auth_id, &c.user_code, cb, NOW),
            DevicePoll::Pending
        );
        assert_eq!(l.stats().device_expired, 2);
        l.reset();
        assert_eq!(l.stats(), OAuthStats::default());
        assert_eq!(
            l.poll_device(&c.device_auth_id, &c.user_code, cb, NOW),
            DevicePoll::Unknown
        );
        assert!(Logins::new(0).start_device(NOW).is_none());
    }

    #[test]
    fn pending_maps_are_bounded() {
        let mut l = Logins::new(1);
        for _ in 0..MAX_PENDING + 5 {
            l.authorize(None, REDIRECT, RFC_CHALLENGE, NOW);
            l.start_device(NOW);
        }
        assert_eq!(l.codes.len(), MAX_PENDING);
        assert_eq!(l.devices.len(), MAX_PENDING);
    }
}
