//! Building replies: the headers every backend reply carries (PROTOCOL.md 3.1 rate limits,
//! request id, turn state) and JSON bodies.

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{HeaderMap, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::accounts::Usage;
use super::body::MockBody;
use super::state::Shared;

/// Catalog version the mock advertises (`ETag` on /models, `x-models-etag` on /responses).
pub const MODELS_ETAG: &str = "\"mock-models-v1\"";

/// What the reply headers need to know about the request.
pub struct ReplyCtx {
    pub request_id: String,
    pub turn_state: String,
    pub account: Option<usize>,
    /// Overrides the account's live windows (429 replies show the saturated state).
    pub usage: Option<Usage>,
    pub model: Option<String>,
    pub reasoning_included: Option<bool>,
}

impl ReplyCtx {
    /// Echoes `x-request-id` and `x-codex-turn-state` when the request has them, else mints.
    pub fn from_request(shared: &Shared, headers: &HeaderMap) -> ReplyCtx {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let request_id = get("x-request-id")
            .unwrap_or_else(|| format!("req_mock{:016x}", mix(shared.next_id())));
        let turn_state = get("x-codex-turn-state")
            .unwrap_or_else(|| format!("ts_mock{:016x}", mix(shared.next_id())));
        ReplyCtx {
            request_id,
            turn_state,
            account: None,
            usage: None,
            model: None,
            reasoning_included: None,
        }
    }

    pub fn json(&self, shared: &Shared, status: StatusCode, v: &Value) -> Response<MockBody> {
        let mut r = Response::new(MockBody::full(Bytes::from(v.to_string())));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.apply(shared, r.headers_mut());
        r
    }

    pub fn apply(&self, shared: &Shared, h: &mut HeaderMap) {
        put(h, "x-request-id", &self.request_id);
        put(h, "x-codex-turn-state", &self.turn_state);
        if let Some(model) = &self.model {
            put(h, "openai-model", model);
            put(h, "x-models-etag", MODELS_ETAG);
        }
        if let Some(r) = self.reasoning_included {
            put(h, "x-reasoning-included", if r { "true" } else { "false" });
        }
        if let Some(i) = self.account {
            if let Some(a) = shared.accounts.get(i) {
                let usage = self.usage.unwrap_or_else(|| a.usage(shared.clock.now()));
                rate_limit_headers(h, &a.plan_type, &usage);
            }
        }
    }
}

/// A JSON reply with no backend headers: the token endpoint and the control API, which are not
/// ChatGPT backend routes and so carry no rate-limit or request-id headers.
pub fn plain_json(status: StatusCode, v: &Value) -> Response<MockBody> {
    let mut r = Response::new(MockBody::full(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// [`plain_json`] marked `Cache-Control: no-store`, as token and sign-in replies must be
/// (RFC 6749 section 5.1).
pub fn no_store_json(status: StatusCode, v: &Value) -> Response<MockBody> {
    let mut r = plain_json(status, v);
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The PROTOCOL.md 3.1 header set for the `codex` limit family.
pub fn rate_limit_headers(h: &mut HeaderMap, plan: &str, u: &Usage) {
    for (slot, w) in [("primary", &u.primary), ("secondary", &u.secondary)] {
        put(
            h,
            &format!("x-codex-{slot}-used-percent"),
            &percent(w.used_percent),
        );
        put(
            h,
            &format!("x-codex-{slot}-window-minutes"),
            &w.window_minutes.to_string(),
        );
        put(
            h,
            &format!("x-codex-{slot}-reset-at"),
            &w.reset_at.to_string(),
        );
        put(
            h,
            &format!("x-codex-{slot}-reset-after-seconds"),
            &w.reset_after(u.now).to_string(),
        );
    }
    put(h, "x-codex-credits-has-credits", "False");
    put(h, "x-codex-credits-unlimited", "False");
    put(h, "x-codex-credits-balance", "0");
    put(h, "x-codex-plan-type", plan);
    put(h, "x-codex-active-limit", "codex");
}

/// The `codex.rate_limits` event (PROTOCOL.md 3.2): the same snapshot as
/// [`rate_limit_headers`], for WebSocket turns, which have no response head of their own.
pub fn rate_limits_event(plan: &str, u: &Usage) -> Value {
    let window = |w: &super::accounts::Window| json!({"used_percent": w.used_percent, "window_minutes": w.window_minutes, "reset_at": w.reset_at});
    json!({
        "type": "codex.rate_limits",
        "plan_type": plan,
        "metered_limit_name": "codex",
        "rate_limits": {
            "allowed": !u.exhausted(),
            "limit_reached": u.exhausted(),
            "primary": window(&u.primary),
            "secondary": window(&u.secondary),
        },
        "credits": {"has_credits": false, "unlimited": false, "balance": "0"},
    })
}

/// Headers as the JSON object an error frame carries (PROTOCOL.md 6.4): name -> value text.
pub fn headers_object(h: &HeaderMap) -> Map<String, Value> {
    h.iter()
        .filter_map(|(k, v)| {
            let v = v.to_str().ok()?;
            Some((k.as_str().to_string(), Value::from(v)))
        })
        .collect()
}

/// `37.0`, `12.5`, `0.0125`: at most four decimals, at least one.
pub fn percent(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_string()
    }
}

fn put(h: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
        h.insert(n, v);
    }
}

/// Spreads sequential counters over the id space so minted ids do not look sequential.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a, for ids derived from a client-supplied string.
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_format() {
        assert_eq!(percent(37.0), "37.0");
        assert_eq!(percent(12.5), "12.5");
        assert_eq!(percent(0.0125), "0.0125");
        assert_eq!(percent(0.1 + 0.2), "0.3");
        assert_eq!(percent(100.0), "100.0");
    }
}
