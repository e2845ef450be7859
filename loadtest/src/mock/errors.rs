//! JSON error bodies shaped like the ChatGPT backend's (PROTOCOL.md 3.3, 3.4, 4, 5.4, 8).

use serde_json::{json, Value};

use super::accounts::{Usage, UsageMode};
use super::credentials::RefreshRefusal;

/// What upstream says about a body that is not a JSON object.
pub const UNPARSABLE_JSON: &str = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)";

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
        500 => server_error(),
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

pub fn server_error() -> Value {
    envelope(
        "An error occurred while processing your request. You can retry your request.",
        "server_error",
        None,
        Some("server_error"),
    )
}

/// The RFC 6749 section 5.2 shape (`{"error": code, "error_description": ...}`), which the
/// token endpoint uses for grant-level errors; PROTOCOL.md 5.4 lists it beside the nested one.
pub fn oauth(code: &str, description: &str) -> Value {
    json!({"error": code, "error_description": description})
}

/// The device-login endpoints' error shape (PROTOCOL.md 5.3): `{"error":{"code","message"}}`.
pub fn device(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

/// A refused refresh (PROTOCOL.md 5.4): the nested `error.code` shape upstream sends for the
/// codes the CLI and codex-lb treat as "sign in again".
pub fn refresh_refused(why: RefreshRefusal) -> Value {
    let (code, message) = match why {
        RefreshRefusal::Injected => return server_error(),
        RefreshRefusal::Reused => (
            "refresh_token_reused",
            "Your refresh token has already been used to generate a new access token. Please try signing in again.",
        ),
        RefreshRefusal::Expired => (
            "refresh_token_expired",
            "Your refresh token has expired. Please try signing in again.",
        ),
        RefreshRefusal::Invalidated => (
            "refresh_token_invalidated",
            "Your refresh token has been invalidated. Please try signing in again.",
        ),
    };
    invalid_request(message, None, Some(code))
}

/// What `/wham/usage` answers in an injected error mode. Only `Deactivated` carries a code
/// from the permanent set (PROTOCOL.md 3.5): the others must be classified by status alone.
pub fn usage_mode(mode: UsageMode) -> Value {
    match mode {
        UsageMode::Unauthorized => invalid_api_key(),
        UsageMode::PaymentRequired => envelope(
            "Payment required: this workspace has no active subscription.",
            "invalid_request_error",
            None,
            None,
        ),
        UsageMode::Forbidden => envelope(
            "You do not have access to this resource.",
            "invalid_request_error",
            None,
            None,
        ),
        UsageMode::NotFound => envelope(
            "Not found: no usage for this account.",
            "invalid_request_error",
            None,
            None,
        ),
        UsageMode::Deactivated => envelope(
            "Your OpenAI account has been deactivated, please check your email for more information.",
            "invalid_request_error",
            None,
            Some("account_deactivated"),
        ),
        UsageMode::ServerError => server_error(),
    }
}

pub fn not_found(method: &str, path: &str) -> Value {
    invalid_request(
        &format!("Unknown route: {method} {path}"),
        None,
        Some("not_found"),
    )
}
