//! `GET /backend-api/wham/usage`: the account's rate-limit status as JSON (PROTOCOL.md 4), from
//! the same live windows the `/responses` headers report, or the account's injected error mode
//! (PROTOCOL.md 9 item 13).
//!
//! Steps: authenticate exactly like `/responses` -> count -> error mode -> render.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::auth::authenticate;
use crate::mock::accounts::{Usage, Window};
use crate::mock::body::MockBody;
use crate::mock::errors;
use crate::mock::reply::ReplyCtx;
use crate::mock::state::Shared;

pub const USAGE_PATH: &str = "/backend-api/wham/usage";

pub fn handle(shared: &Shared, req: Request<Incoming>) -> Response<MockBody> {
    let mut ctx = ReplyCtx::from_request(shared, req.headers());
    let account = match authenticate(shared, req.headers()) {
        Ok(a) => a,
        Err(rej) => {
            // A poll with a stale token is still a poll of that account.
            if let Some(a) = rej.account {
                shared.stats.usage_call(shared.account_id(a));
            }
            ctx.account = rej.account;
            return ctx.json(shared, rej.status, &rej.body);
        }
    };
    ctx.account = Some(account);
    let id = shared.account_id(account);
    shared.stats.usage_poll(id);
    let acct = &shared.accounts[account];
    if let Some(mode) = acct.usage_mode() {
        let status = StatusCode::from_u16(mode.status()).unwrap_or(StatusCode::FORBIDDEN);
        return ctx.json(shared, status, &errors::usage_mode(mode));
    }
    // One snapshot for body and headers, so they cannot disagree across a window reset.
    let usage = acct.usage(shared.clock.now());
    ctx.usage = Some(usage);
    ctx.json(shared, StatusCode::OK, &payload(&acct.plan_type, &usage))
}

/// The PROTOCOL.md 4 body. Optional parts upstream may send (`additional_rate_limits`, code
/// review limits, workspace) are present but empty, so a parser sees every key.
pub fn payload(plan: &str, u: &Usage) -> Value {
    let limited = u.exhausted();
    json!({
        "plan_type": plan,
        "rate_limit": {
            "allowed": !limited,
            "limit_reached": limited,
            "primary_window": window(&u.primary, u.now),
            "secondary_window": window(&u.secondary, u.now),
        },
        "credits": {
            "has_credits": false,
            "unlimited": false,
            "balance": "0",
            "approx_local_messages": [0, 0],
            "approx_cloud_messages": [0, 0],
        },
        "additional_rate_limits": [],
        "code_review_rate_limit": null,
        "rate_limit_reset_credits": {"available_count": 0},
        "workspace_id": null,
        "workspace_label": null,
        "seat_type": null,
    })
}

fn window(w: &Window, now: u64) -> Value {
    json!({
        "used_percent": percent(w.used_percent),
        "limit_window_seconds": w.window_minutes * 60,
        "reset_after_seconds": w.reset_after(now),
        "reset_at": w.reset_at,
    })
}

/// Upstream's model types `used_percent` as an integer (PROTOCOL.md 4): whole values go out as
/// integers so a strict parser sees upstream's shape; fractional ones stay floats so that the
/// small charges of mock turns remain visible (codex-lb accepts floats).
fn percent(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::accounts::{PRIMARY_WINDOW_MINUTES, SECONDARY_WINDOW_MINUTES};

    fn usage(primary: f64, secondary: f64) -> Usage {
        let w = |used_percent, minutes| Window {
            used_percent,
            window_minutes: minutes,
            reset_at: 1_000 + minutes * 60,
        };
        Usage {
            now: 1_100,
            primary: w(primary, PRIMARY_WINDOW_MINUTES),
            secondary: w(secondary, SECONDARY_WINDOW_MINUTES),
        }
    }

    #[test]
    fn shape_and_limit_flags() {
        let v = payload("pro", &usage(37.0, 12.5));
        assert_eq!(v["plan_type"], "pro");
        let p = &v["rate_limit"]["primary_window"];
        assert_eq!(
            p["used_percent"].as_u64(),
            Some(37),
            "whole percent is an integer"
        );
        assert_eq!(p["limit_window_seconds"], 18_000);
        assert_eq!(p["reset_at"], 19_000);
        assert_eq!(p["reset_after_seconds"], 17_900);
        let s = &v["rate_limit"]["secondary_window"];
        assert_eq!(s["used_percent"].as_f64(), Some(12.5));
        assert_eq!(s["limit_window_seconds"], 604_800);
        assert_eq!(v["rate_limit"]["allowed"], true);
        assert_eq!(v["rate_limit"]["limit_reached"], false);
        assert_eq!(v["credits"]["balance"], "0");

        let full = payload("plus", &usage(10.0, 100.0));
        assert_eq!(full["rate_limit"]["allowed"], false);
        assert_eq!(full["rate_limit"]["limit_reached"], true);
    }
}
