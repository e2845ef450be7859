//! `GET /v1/usage`: a key holder's own view — the key's limits with what each current window has
//! used and when it resets, its pace and stream cap, what it may ask for, and (unless the owner
//! hides upstream quota from key holders) the pool's windows as `/wham/usage` reports them. Read
//! from the worker's key snapshot and its shared counters; nothing is recorded.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::accounts::now_unix;
use crate::http::error_body::ApiError;
use crate::http::response::full_response;
use crate::keys::limits::LimitKind;
use crate::keys::KeyView;
use crate::proxy::client::ClientConn;
use crate::worker::Worker;

/// The key's usage document at `now`.
pub fn payload(key: &KeyView, pool: Option<Value>, now: u64) -> Value {
    let limits: Vec<Value> = key
        .policy
        .limits
        .iter()
        .zip(&key.counters)
        .map(|(rule, counter)| {
            let (start, end) = rule.window.bounds(now);
            let used_units = counter.get(start);
            let limit_units = rule.kind.units(rule.limit);
            let in_unit = |u: u64| match rule.kind {
                LimitKind::CostUsd => json!(u as f64 / 1e6),
                _ => json!(u),
            };
            json!({
                "kind": rule.kind.as_str(),
                "window": rule.window.as_str(),
                "model": rule.model,
                "limit": rule.limit,
                "used": in_unit(used_units),
                "remaining": in_unit(limit_units.saturating_sub(used_units)),
                "resets_at": end,
            })
        })
        .collect();
    let minute = now - now % 60;
    let p = &key.policy;
    json!({
        "object": "api_key.usage",
        "key": {"id": &*key.id, "name": key.name, "expires_at": key.expires_at},
        "limits": limits,
        "requests_per_minute": p.requests_per_minute.map(|limit| json!({
            "limit": limit,
            "used": key.live.minute.get(minute),
            "resets_at": minute + 60,
        })),
        "streams": {
            "limit": p.max_streams,
            "open": key.live.streams.load(std::sync::atomic::Ordering::Acquire),
        },
        "allowed_models": p.allowed_models,
        "allowed_efforts": p.allowed_efforts,
        "allowed_accounts": p.allowed_accounts,
        "upstream": pool,
    })
}

pub async fn handle(
    w: &Worker,
    client: &mut ClientConn,
    key: Option<&KeyView>,
    keep_alive: bool,
) -> bool {
    let Some(key) = key else {
        let err = ApiError::new(
            401,
            "authentication_error",
            "api_key_required",
            "/v1/usage reports on an API key: send it as `Authorization: Bearer sk-clb-…`",
        );
        return super::reply_error(w, client, &err, keep_alive).await;
    };
    let now = now_unix();
    let pool = (!w.shared.keys.load().hide_quota_headers)
        .then(|| super::pool_usage::payload(&w.shared.accounts.load(), now));
    let body = serde_json::to_vec(&payload(key, pool, now)).unwrap_or_default();
    let reply = full_response(
        200,
        "application/json",
        &[("cache-control", b"no-store")],
        &body,
        keep_alive,
    );
    super::send(w, client, Bytes::from(reply), keep_alive).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::keys::limits::{LimitRule, LimitWindow, WindowCounter};
    use crate::keys::{KeyLive, KeyPolicy};

    #[test]
    fn limits_show_use_and_remaining_in_their_own_units() {
        const NOW: u64 = 1_795_700_700;
        let rules = vec![
            LimitRule::parse("total_tokens:daily:1000").unwrap(),
            LimitRule::parse("cost_usd:monthly:2.5").unwrap(),
        ];
        let (day, _) = LimitWindow::Daily.bounds(NOW);
        let (month, _) = LimitWindow::Monthly.bounds(NOW);
        let key = KeyView {
            id: Arc::from("key_1"),
            name: "k".into(),
            expires_at: None,
            revoked: false,
            paused: false,
            policy: KeyPolicy {
                limits: rules,
                requests_per_minute: Some(10),
                ..Default::default()
            },
            live: Arc::new(KeyLive::default()),
            counters: vec![
                Arc::new(WindowCounter::new(day, 1200)),
                Arc::new(WindowCounter::new(month, 500_000)),
            ],
        };
        key.live.minute.add(NOW - NOW % 60, 3);
        let v = payload(&key, None, NOW);
        assert_eq!(v["limits"][0]["used"], 1200);
        assert_eq!(
            v["limits"][0]["remaining"], 0,
            "over the limit is none left"
        );
        assert_eq!(v["limits"][1]["used"], 0.5);
        assert_eq!(v["limits"][1]["remaining"], 2.0);
        assert_eq!(v["requests_per_minute"]["used"], 3);
        assert_eq!(v["upstream"], Value::Null);
    }
}
