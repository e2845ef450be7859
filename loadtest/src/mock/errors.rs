//! JSON error bodies shaped like the ChatGPT backend's (PROTOCOL.md 3.3, 3.4, 8).

use serde_json::{json, Value};

use super::accounts::Usage;

pub fn envelope(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

pub fn invalid_request(message: &str, param: Option<&str>, code: Option<&str>) -> Value {
    envelope(message, "invalid_request_error", param, code)
}

pub fn invalid_api_key() -> Value {
    invalid_request(
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        None,
        Some("invalid_api_key"),
    )
}

pub fn token_expired() -> Value {
    invalid_request(
        "Provided authentication token is expired. Please try signing in again.",
        None,
        Some("token_expired"),
    )
}

pub fn account_mismatch() -> Value {
    envelope(
        "The ChatGPT-Account-ID header does not match an account this token can access.",
        "invalid_request_error",
        None,
        Some("account_mismatch"),
    )
}

pub fn usage_limit_reached(plan: &str, usage: &Usage) -> Value {
    let resets_at = usage.resets_at();
    json!({"error": {
        "type": "usage_limit_reached",
        "message": "The usage limit has been reached",
        "plan_type": plan,
        "resets_at": resets_at,
        "resets_in_seconds": resets_at.saturating_sub(usage.now),
        "eligible_promo": null,
    }})
}

/// Body for a failure armed with `fail_next`: what upstream sends for that status.
pub fn injected(status: u16, plan: &str, usage: &Usage) -> Value {
    match status {
        401 => token_expired(),
        403 => account_mismatch(),
        429 => usage_limit_reached(plan, usage),
        400 => invalid_request("Invalid request (injected by the mock).", None, None),
        500 => envelope(
            "An error occurred while processing your request. You can retry your request.",
            "server_error",
            None,
            Some("server_error"),
        ),
        502 => envelope("Bad gateway.", "server_error", None, Some("upstream_error")),
        503 => envelope(
            "The server is overloaded. Please try again later.",
            "server_error",
            None,
            Some("server_is_overloaded"),
        ),
        504 => envelope(
            "Gateway timeout.",
            "server_error",
            None,
            Some("upstream_timeout"),
        ),
        _ => envelope(
            "Injected failure.",
            "server_error",
            None,
            Some("mock_injected"),
        ),
    }
}

pub fn not_found(method: &str, path: &str) -> Value {
    invalid_request(
        &format!("Unknown route: {method} {path}"),
        None,
        Some("not_found"),
    )
}
