//! The usage view the Codex CLI asks its base URL for (`/status`): `/backend-api/wham/usage` or
//! `/api/codex/usage`, answered from the pool's state in the upstream's shape (PROTOCOL.md §4).
//! The pool is one big account to the CLI: a window's use is the mean over the active accounts
//! that have a reading, its reset the soonest, and the limit reached only when no account can
//! serve.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::accounts::quota::Window;
use crate::accounts::{now_unix, AccountStatus, AccountsSnapshot};
use crate::http::response::full_response;
use crate::proxy::client::ClientConn;
use crate::worker::Worker;

fn window(ws: &[Window], default_minutes: u32, now: u64) -> Value {
    if ws.is_empty() {
        return Value::Null;
    }
    let used = ws.iter().map(|w| w.used_percent).sum::<f64>() / ws.len() as f64;
    let minutes = ws
        .iter()
        .find_map(|w| w.window_minutes)
        .unwrap_or(default_minutes);
    let reset_at = ws
        .iter()
        .filter_map(|w| w.reset_at)
        .filter(|t| *t > now)
        .min();
    json!({
        "used_percent": (used * 10.0).round() / 10.0,
        "limit_window_seconds": u64::from(minutes) * 60,
        "reset_after_seconds": reset_at.map(|t| t - now),
        "reset_at": reset_at,
    })
}

/// The pool as one `/wham/usage` payload.
pub fn payload(snap: &AccountsSnapshot, now: u64) -> Value {
    let active: Vec<_> = snap
        .accounts
        .iter()
        .filter(|a| a.status == AccountStatus::Active)
        .collect();
    let primary: Vec<Window> = active.iter().filter_map(|a| a.quota.primary).collect();
    let secondary: Vec<Window> = active.iter().filter_map(|a| a.quota.secondary).collect();
    let can_serve = active
        .iter()
        .filter(|a| a.blocked_at(now).is_none() && !a.over_cap())
        .count();
    // The plan most accounts have names the pool.
    let mut plans: Vec<&str> = active.iter().filter_map(|a| a.plan.as_deref()).collect();
    plans.sort_unstable();
    let plan = plans
        .chunk_by(|a, b| a == b)
        .max_by_key(|run| run.len())
        .and_then(|run| run.first().copied());
    json!({
        "plan_type": plan,
        "rate_limit": {
            "allowed": can_serve > 0,
            "limit_reached": can_serve == 0,
            "primary_window": window(&primary, 300, now),
            "secondary_window": window(&secondary, 10_080, now),
        },
        "credits": null,
        "additional_rate_limits": [],
        "code_review_rate_limit": null,
        "workspace_id": null,
        "workspace_label": "codex-lb pool",
        "seat_type": null,
        "pool": {"accounts": snap.accounts.len(), "active": active.len(), "can_serve": can_serve},
    })
}

pub async fn handle(w: &Worker, client: &mut ClientConn, keep_alive: bool) -> bool {
    let body = payload(&w.shared.accounts.load(), now_unix());
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let reply = full_response(
        200,
        "application/json",
        &[("cache-control", b"no-store")],
        &bytes,
        keep_alive,
    );
    super::send(w, client, Bytes::from(reply), keep_alive).await
}
