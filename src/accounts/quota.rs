//! Quota windows of an account, read from what the upstream says: the `x-codex-*` headers on every
//! reply (PROTOCOL.md §3.1), the `codex.rate_limits` stream event (§3.2) and the `/wham/usage`
//! payload (§4). Pure parsing; who merges the readings and when is the control thread's business.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::name_eq;

/// Minutes in the weekly window; a lone primary window of this length is the weekly one.
const WEEK_MINUTES: u32 = 10_080;

/// One rate-limit window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub used_percent: f64,
    pub window_minutes: Option<u32>,
    /// Unix seconds.
    pub reset_at: Option<u64>,
}

/// Both windows of an account as one reading.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuotaReading {
    /// The short (5 h) window.
    pub primary: Option<Window>,
    /// The weekly window.
    pub secondary: Option<Window>,
    pub plan_type: Option<String>,
    /// When the reading was taken (unix milliseconds): readings can arrive out of order (a slow
    /// reply's headers after a newer poll), and the newest wins.
    #[serde(default)]
    pub observed_ms: u64,
}

/// Now, in unix milliseconds, for `QuotaReading::observed_ms`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl QuotaReading {
    pub fn is_empty(&self) -> bool {
        self.primary.is_none() && self.secondary.is_none()
    }

    /// The binding window's used percent (the larger of the two).
    pub fn max_used(&self) -> Option<f64> {
        [self.primary, self.secondary]
            .iter()
            .flatten()
            .map(|w| w.used_percent)
            .reduce(f64::max)
    }

    /// Weekly-only plans report their one window as primary; keep it where it belongs.
    fn normalized(mut self) -> Self {
        if self.secondary.is_none()
            && self
                .primary
                .is_some_and(|w| w.window_minutes == Some(WEEK_MINUTES))
        {
            self.secondary = self.primary.take();
        }
        self
    }
}

fn window(
    used: Option<f64>,
    minutes: Option<u32>,
    reset_at: Option<u64>,
    reset_after: Option<u64>,
    now: u64,
) -> Option<Window> {
    // A window exists only when its used percent is a finite number; an all-zero window with no
    // length and no reset is how a plan without that window is reported.
    let used = used.filter(|u| u.is_finite())?;
    if used == 0.0 && minutes.unwrap_or(0) == 0 && reset_at.is_none() && reset_after.is_none() {
        return None;
    }
    Some(Window {
        used_percent: used.clamp(0.0, 100.0),
        window_minutes: minutes.filter(|m| *m > 0),
        reset_at: reset_at
            .filter(|t| *t > 0)
            .or_else(|| reset_after.map(|s| now + s)),
    })
}

fn num(v: &[u8]) -> Option<f64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// Reads the default (`codex`) family of `x-codex-*` headers.
pub fn from_headers<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    now: u64,
) -> Option<QuotaReading> {
    #[derive(Default)]
    struct Raw {
        used: Option<f64>,
        minutes: Option<u32>,
        reset_at: Option<u64>,
        reset_after: Option<u64>,
    }
    let (mut p, mut s) = (Raw::default(), Raw::default());
    let mut plan = None;
    for (name, value) in headers {
        let Some(rest) = name
            .get(..8)
            .filter(|pre| pre.eq_ignore_ascii_case("x-codex-"))
            .and(name.get(8..))
        else {
            continue;
        };
        let (raw, field) = if let Some(f) = rest
            .get(..8)
            .filter(|x| x.eq_ignore_ascii_case("primary-"))
            .and(rest.get(8..))
        {
            (&mut p, f)
        } else if let Some(f) = rest
            .get(..10)
            .filter(|x| x.eq_ignore_ascii_case("secondary-"))
            .and(rest.get(10..))
        {
            (&mut s, f)
        } else {
            if name_eq(rest, "plan-type") {
                plan = std::str::from_utf8(value)
                    .ok()
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty());
            }
            continue;
        };
        if name_eq(field, "used-percent") {
            raw.used = num(value);
        } else if name_eq(field, "window-minutes") {
            raw.minutes = num(value).map(|v| v as u32);
        } else if name_eq(field, "reset-at") {
            raw.reset_at = num(value).map(|v| v as u64);
        } else if name_eq(field, "reset-after-seconds") {
            raw.reset_after = num(value).map(|v| v as u64);
        }
    }
    let reading = QuotaReading {
        primary: window(p.used, p.minutes, p.reset_at, p.reset_after, now),
        secondary: window(s.used, s.minutes, s.reset_at, s.reset_after, now),
        observed_ms: now_ms(),
        plan_type: plan,
    }
    .normalized();
    (!reading.is_empty()).then_some(reading)
}

fn json_window(v: &Value, now: u64, seconds: bool) -> Option<Window> {
    let used = v.get("used_percent").and_then(Value::as_f64);
    let minutes = if seconds {
        v.get("limit_window_seconds")
            .and_then(Value::as_f64)
            .map(|s| (s / 60.0).ceil() as u32)
    } else {
        v.get("window_minutes")
            .and_then(Value::as_f64)
            .map(|m| m as u32)
    };
    let reset_at = v
        .get("reset_at")
        .or_else(|| v.get("resets_at"))
        .and_then(Value::as_f64)
        .map(|t| t as u64);
    let reset_after = v
        .get("reset_after_seconds")
        .and_then(Value::as_f64)
        .map(|t| t as u64);
    window(used, minutes, reset_at, reset_after, now)
}

/// Reads a `codex.rate_limits` event; events for another limit family are ignored.
pub fn from_rate_limits_event(data: &[u8], now: u64) -> Option<QuotaReading> {
    let v: Value = serde_json::from_slice(data).ok()?;
    for key in ["metered_limit_name", "limit_name", "limit_id"] {
        if let Some(name) = v.get(key).and_then(Value::as_str) {
            if name != "codex" {
                return None;
            }
        }
    }
    let limits = v.get("rate_limits")?;
    let reading = QuotaReading {
        primary: limits
            .get("primary")
            .and_then(|w| json_window(w, now, false)),
        secondary: limits
            .get("secondary")
            .and_then(|w| json_window(w, now, false)),
        observed_ms: now_ms(),
        plan_type: v
            .get("plan_type")
            .and_then(Value::as_str)
            .map(str::to_string),
    }
    .normalized();
    (!reading.is_empty()).then_some(reading)
}

/// Reads a `GET /wham/usage` payload.
pub fn from_usage_payload(data: &[u8], now: u64) -> Option<QuotaReading> {
    let v: Value = serde_json::from_slice(data).ok()?;
    let limits = v.get("rate_limit")?;
    let reading = QuotaReading {
        primary: limits
            .get("primary_window")
            .and_then(|w| json_window(w, now, true)),
        secondary: limits
            .get("secondary_window")
            .and_then(|w| json_window(w, now, true)),
        observed_ms: now_ms(),
        plan_type: v
            .get("plan_type")
            .and_then(Value::as_str)
            .map(str::to_string),
    }
    .normalized();
    (!reading.is_empty()).then_some(reading)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_a_reply() {
        let h: Vec<(&str, &[u8])> = vec![
            ("x-codex-plan-type", b"plus"),
            ("X-Codex-Primary-Used-Percent", b"37.5"),
            ("x-codex-primary-window-minutes", b"300"),
            ("x-codex-primary-reset-at", b"1764112345"),
            ("x-codex-secondary-used-percent", b"12"),
            ("x-codex-secondary-window-minutes", b"10080"),
            ("x-codex-secondary-reset-after-seconds", b"500"),
            ("x-codex-bengalfox-primary-used-percent", b"99"),
            ("content-type", b"text/event-stream"),
        ];
        let r = from_headers(h.into_iter(), 1000).unwrap();
        assert_eq!(r.plan_type.as_deref(), Some("plus"));
        assert_eq!(
            r.primary,
            Some(Window {
                used_percent: 37.5,
                window_minutes: Some(300),
                reset_at: Some(1_764_112_345)
            })
        );
        assert_eq!(
            r.secondary,
            Some(Window {
                used_percent: 12.0,
                window_minutes: Some(10_080),
                reset_at: Some(1500)
            })
        );
        assert_eq!(r.max_used(), Some(37.5));
        assert!(from_headers(std::iter::once(("content-type", &b"x"[..])), 0).is_none());
    }

    #[test]
    fn weekly_only_plans_and_empty_windows() {
        let h: Vec<(&str, &[u8])> = vec![
            ("x-codex-primary-used-percent", b"40"),
            ("x-codex-primary-window-minutes", b"10080"),
            ("x-codex-secondary-used-percent", b"0"),
        ];
        let r = from_headers(h.into_iter(), 0).unwrap();
        assert!(r.primary.is_none());
        assert_eq!(r.secondary.unwrap().used_percent, 40.0);
    }

    #[test]
    fn rate_limits_event_and_usage_payload() {
        let ev = br#"{"type":"codex.rate_limits","plan_type":"pro","metered_limit_name":"codex","rate_limits":{"allowed":true,"primary":{"used_percent":37.0,"window_minutes":300,"reset_at":1764112345},"secondary":{"used_percent":12.0,"window_minutes":10080,"resets_at":1764600000}}}"#;
        let r = from_rate_limits_event(ev, 0).unwrap();
        assert_eq!(r.primary.unwrap().reset_at, Some(1_764_112_345));
        assert_eq!(r.secondary.unwrap().reset_at, Some(1_764_600_000));
        let other = br#"{"type":"codex.rate_limits","metered_limit_name":"codex_bengalfox","rate_limits":{"primary":{"used_percent":1}}}"#;
        assert!(from_rate_limits_event(other, 0).is_none());
        let usage = br#"{"plan_type":"plus","rate_limit":{"primary_window":{"used_percent":37,"limit_window_seconds":18000,"reset_after_seconds":10},"secondary_window":null}}"#;
        let r = from_usage_payload(usage, 100).unwrap();
        assert_eq!(
            r.primary,
            Some(Window {
                used_percent: 37.0,
                window_minutes: Some(300),
                reset_at: Some(110)
            })
        );
        assert!(r.secondary.is_none());
    }
}
