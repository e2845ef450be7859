//! Per-account backend state: the two rate-limit windows, injected failures (HTTP statuses and
//! WebSocket closes), the usage endpoint's error mode and the last request seen. Tokens live in `credentials`. Pure
//! bookkeeping over the injectable clock; no I/O.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::request::RecordedRequest;
use super::stats::lock;

pub const PRIMARY_WINDOW_MINUTES: u64 = 300;
pub const SECONDARY_WINDOW_MINUTES: u64 = 10_080;

/// One rate-limit window (PROTOCOL.md 3.1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub used_percent: f64,
    pub window_minutes: u64,
    pub reset_at: u64,
}

impl Window {
    fn new(window_minutes: u64, now: u64) -> Window {
        Window {
            used_percent: 0.0,
            window_minutes,
            reset_at: now + window_minutes * 60,
        }
    }

    /// Rolls the window over once its reset time has passed.
    fn refresh(&mut self, now: u64) {
        if now >= self.reset_at {
            self.used_percent = 0.0;
            self.reset_at = now + self.window_minutes * 60;
        }
    }

    pub fn reset_after(&self, now: u64) -> u64 {
        self.reset_at.saturating_sub(now)
    }

    pub fn exhausted(&self) -> bool {
        self.used_percent >= 100.0
    }
}

/// Both windows as of one instant, for headers and 429 bodies.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub now: u64,
    pub primary: Window,
    pub secondary: Window,
}

impl Usage {
    pub fn exhausted(&self) -> bool {
        self.primary.exhausted() || self.secondary.exhausted()
    }

    /// When the binding window frees up: the latest reset among exhausted windows.
    pub fn resets_at(&self) -> u64 {
        [self.primary, self.secondary]
            .iter()
            .filter(|w| w.exhausted())
            .map(|w| w.reset_at)
            .max()
            .unwrap_or(self.primary.reset_at)
    }
}

/// How `GET /wham/usage` fails for an account (PROTOCOL.md 4, 9 item 13); `None` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageMode {
    /// 401.
    Unauthorized,
    /// 402.
    PaymentRequired,
    /// 403 with a plain body.
    Forbidden,
    /// 404.
    NotFound,
    /// 403 whose message contains "account has been deactivated".
    Deactivated,
    /// 500.
    ServerError,
}

impl UsageMode {
    pub fn status(self) -> u16 {
        match self {
            UsageMode::Unauthorized => 401,
            UsageMode::PaymentRequired => 402,
            UsageMode::Forbidden | UsageMode::Deactivated => 403,
            UsageMode::NotFound => 404,
            UsageMode::ServerError => 500,
        }
    }
}

impl std::str::FromStr for UsageMode {
    type Err = String;

    /// `"401"`, `"402"`, `"403"`, `"404"`, `"500"` or `"deactivated"`.
    fn from_str(s: &str) -> Result<UsageMode, String> {
        Ok(match s.trim() {
            "401" => UsageMode::Unauthorized,
            "402" => UsageMode::PaymentRequired,
            "403" => UsageMode::Forbidden,
            "404" => UsageMode::NotFound,
            "500" => UsageMode::ServerError,
            "deactivated" => UsageMode::Deactivated,
            other => {
                return Err(format!(
                    "unknown usage mode {other:?}: expected 401, 402, 403, 404, 500 or deactivated"
                ))
            }
        })
    }
}

/// How the mock ends the next WebSocket turn of an account (PROTOCOL.md 6.4, 9 item 15), armed
/// with `MockUpstream::close_next_ws` or `POST /__mock/accounts/{id}/ws-close`
/// (`{"close":"error_mid_stream","after_events":3}`). `after_events` counts the turn's messages
/// already sent, `codex.rate_limits` included; a turn with fewer messages closes after its last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "close", rename_all = "snake_case")]
pub enum WsClose {
    /// A close frame with code 1000 instead of `response.created`.
    NormalBeforeCreated,
    /// A close frame with code 1011 (internal error) after `after_events` messages.
    ErrorMidStream {
        #[serde(default = "mid_stream")]
        after_events: u32,
    },
    /// The TCP connection reset (RST, no close frame) after `after_events` messages.
    DropMidStream {
        #[serde(default = "mid_stream")]
        after_events: u32,
    },
}

/// Default `after_events`: `response.created`, `codex.rate_limits`, `response.in_progress`.
fn mid_stream() -> u32 {
    3
}

struct Mutable {
    primary: Window,
    secondary: Window,
    /// (status, remaining) in arming order.
    failures: VecDeque<(u16, u32)>,
    ws_closes: VecDeque<WsClose>,
    usage_mode: Option<UsageMode>,
    last_request: Option<RecordedRequest>,
}

pub struct Account {
    /// `chatgpt_account_id`; fixed for the mock's life, unlike the tokens.
    id: String,
    pub plan_type: String,
    state: Mutex<Mutable>,
}

impl Account {
    pub fn new(id: String, plan_type: String, now: u64) -> Account {
        Account {
            id,
            plan_type,
            state: Mutex::new(fresh(now)),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn usage(&self, now: u64) -> Usage {
        let mut s = lock(&self.state);
        s.primary.refresh(now);
        s.secondary.refresh(now);
        Usage {
            now,
            primary: s.primary,
            secondary: s.secondary,
        }
    }

    /// Charges one completed response to both windows.
    pub fn charge(
        &self,
        total_tokens: u64,
        primary_capacity: u64,
        secondary_capacity: u64,
        now: u64,
    ) {
        let mut s = lock(&self.state);
        s.primary.refresh(now);
        s.secondary.refresh(now);
        s.primary.used_percent =
            add_percent(s.primary.used_percent, total_tokens, primary_capacity);
        s.secondary.used_percent =
            add_percent(s.secondary.used_percent, total_tokens, secondary_capacity);
    }

    pub fn set_used_percent(&self, primary: f64, secondary: f64, now: u64) {
        let mut s = lock(&self.state);
        s.primary.refresh(now);
        s.secondary.refresh(now);
        s.primary.used_percent = primary.max(0.0);
        s.secondary.used_percent = secondary.max(0.0);
    }

    pub fn arm_failure(&self, status: u16, count: u32) {
        if count > 0 {
            lock(&self.state).failures.push_back((status, count));
        }
    }

    /// Consumes one armed failure, if any.
    pub fn take_failure(&self) -> Option<u16> {
        let mut s = lock(&self.state);
        let (status, remaining) = s.failures.front_mut()?;
        let status = *status;
        *remaining -= 1;
        if *remaining == 0 {
            s.failures.pop_front();
        }
        Some(status)
    }

    /// Queues a close for the account's next WebSocket turn (behind any still armed).
    pub fn arm_ws_close(&self, close: WsClose) {
        lock(&self.state).ws_closes.push_back(close);
    }

    /// Consumes the next armed WebSocket close, if any.
    pub fn take_ws_close(&self) -> Option<WsClose> {
        lock(&self.state).ws_closes.pop_front()
    }

    pub fn set_usage_mode(&self, mode: Option<UsageMode>) {
        lock(&self.state).usage_mode = mode;
    }

    pub fn usage_mode(&self) -> Option<UsageMode> {
        lock(&self.state).usage_mode
    }

    pub fn record_request(&self, r: RecordedRequest) {
        lock(&self.state).last_request = Some(r);
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.state).last_request.clone()
    }

    pub fn reset(&self, now: u64) {
        *lock(&self.state) = fresh(now);
    }
}

fn fresh(now: u64) -> Mutable {
    Mutable {
        primary: Window::new(PRIMARY_WINDOW_MINUTES, now),
        secondary: Window::new(SECONDARY_WINDOW_MINUTES, now),
        failures: VecDeque::new(),
        ws_closes: VecDeque::new(),
        usage_mode: None,
        last_request: None,
    }
}

/// Usage accrues up to 100 % and stays there until the window resets, as upstream reports it.
fn add_percent(used: f64, tokens: u64, capacity: u64) -> f64 {
    let add = tokens as f64 * 100.0 / capacity.max(1) as f64;
    (used + add).min(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account::new("acct".into(), "plus".into(), 1_000)
    }

    #[test]
    fn charge_accrues_and_windows_reset_on_time() {
        let a = account();
        a.charge(1_000, 10_000, 100_000, 1_000);
        let u = a.usage(1_000);
        assert_eq!(u.primary.used_percent, 10.0);
        assert_eq!(u.secondary.used_percent, 1.0);
        assert_eq!(u.primary.reset_at, 1_000 + 300 * 60);
        let later = a.usage(1_000 + 300 * 60);
        assert_eq!(later.primary.used_percent, 0.0);
        assert_eq!(later.secondary.used_percent, 1.0);
    }

    #[test]
    fn exhaustion_and_resets_at() {
        let a = account();
        a.set_used_percent(10.0, 100.0, 1_000);
        let u = a.usage(1_000);
        assert!(u.exhausted());
        assert_eq!(u.resets_at(), u.secondary.reset_at);
    }

    #[test]
    fn failures_are_consumed_in_order() {
        let a = account();
        a.arm_failure(500, 2);
        a.arm_failure(429, 1);
        assert_eq!(a.take_failure(), Some(500));
        assert_eq!(a.take_failure(), Some(500));
        assert_eq!(a.take_failure(), Some(429));
        assert_eq!(a.take_failure(), None);
    }

    #[test]
    fn ws_closes_queue_and_parse() {
        let a = account();
        a.arm_ws_close(WsClose::NormalBeforeCreated);
        a.arm_ws_close(WsClose::DropMidStream { after_events: 5 });
        assert_eq!(a.take_ws_close(), Some(WsClose::NormalBeforeCreated));
        assert_eq!(
            a.take_ws_close(),
            Some(WsClose::DropMidStream { after_events: 5 })
        );
        assert_eq!(a.take_ws_close(), None);
        let parsed: WsClose = serde_json::from_str(r#"{"close":"error_mid_stream"}"#).unwrap();
        assert_eq!(parsed, WsClose::ErrorMidStream { after_events: 3 });
        a.arm_ws_close(parsed);
        a.reset(1_000);
        assert_eq!(a.take_ws_close(), None);
    }

    #[test]
    fn usage_modes_parse_and_reset() {
        let a = account();
        for (text, status) in [
            ("401", 401),
            ("402", 402),
            ("403", 403),
            ("404", 404),
            ("500", 500),
            ("deactivated", 403),
        ] {
            let mode: UsageMode = text.parse().unwrap();
            assert_eq!(mode.status(), status);
        }
        assert!("418".parse::<UsageMode>().is_err());
        a.set_usage_mode(Some(UsageMode::Deactivated));
        assert_eq!(a.usage_mode(), Some(UsageMode::Deactivated));
        a.reset(1_000);
        assert_eq!(a.usage_mode(), None);
    }
}
