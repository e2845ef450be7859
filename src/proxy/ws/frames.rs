//! The one place where HTTP-shaped answers become WebSocket messages (PROTOCOL.md §6.3–6.4):
//! an upstream SSE event's `data` becomes one text message, unchanged; a gateway error or an
//! upstream error reply becomes a wrapped error frame whose `status` (and `headers`) the Codex
//! CLI maps back to an HTTP-style error, so a usage limit still shows its banner.

use serde_json::{json, Map, Value};

use crate::http::error_body::ApiError;
use crate::http::response::UpstreamHead;
use crate::proxy::relay::is_quota_header;

/// Headers an error frame carries back to the client: the quota ones the CLI reads, and when to
/// retry.
fn frame_header(name: &str) -> bool {
    is_quota_header(name) || name.eq_ignore_ascii_case("retry-after")
}

/// `{"type":"error","status":…,"error":{…},"headers":{…}}` for a gateway refusal.
pub fn gateway_error(err: &ApiError) -> String {
    let body: Value = serde_json::from_slice(&err.to_json()).unwrap_or(Value::Null);
    let mut headers = Map::new();
    if let Some(s) = err.retry_after {
        headers.insert("retry-after".into(), Value::String(s.to_string()));
    }
    wrapped(err.status, body.get("error").cloned(), headers)
}

/// The same for an upstream error reply relayed as it is (its body's `error`, its quota headers
/// unless they are hidden from key holders).
pub fn upstream_error(head: &UpstreamHead, body: &[u8], hide_quota: bool) -> String {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = match parsed.get("error") {
        Some(e) if e.is_object() => Some(e.clone()),
        // `{"detail": "..."}` and plain-text bodies: keep the words.
        _ => Some(json!({
            "type": "upstream_error",
            "message": parsed
                .get("detail")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(512).collect()),
        })),
    };
    let mut headers = Map::new();
    for (n, v) in head.headers() {
        if frame_header(n) && !(hide_quota && is_quota_header(n)) {
            if let Ok(v) = std::str::from_utf8(v) {
                headers.insert(n.to_ascii_lowercase(), Value::String(v.to_string()));
            }
        }
    }
    wrapped(head.status, error, headers)
}

fn wrapped(status: u16, error: Option<Value>, headers: Map<String, Value>) -> String {
    let mut frame = json!({
        "type": "error",
        "status": status,
        "error": error.unwrap_or(Value::Null),
    });
    if !headers.is_empty() {
        frame["headers"] = Value::Object(headers);
    }
    frame.to_string()
}

/// The terminal event for a turn the upstream broke off after its first event: the same
/// `response.failed` the SSE route appends, as a message.
pub fn stream_failed(response_id: Option<&str>, code: &str, message: &str) -> String {
    crate::http::error_body::response_failed_json(response_id, code, message).to_string()
}

/// The error frame for a socket older than its age limit; the CLI opens a new one and goes on
/// (PROTOCOL.md §6.4).
pub fn connection_limit(minutes: u64) -> String {
    json!({
        "type": "error",
        "status": 400,
        "error": {
            "type": "invalid_request_error",
            "code": "websocket_connection_limit_reached",
            "message": format!(
                "Responses websocket connection limit reached ({minutes} minutes). Create a new \
                 websocket connection to continue."
            ),
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_errors_carry_status_code_and_retry() {
        let err = ApiError::new(429, "usage_limit_reached", "usage_limit_reached", "limit")
            .with_extra("resets_at", json!(123))
            .with_retry_after(7);
        let v: Value = serde_json::from_str(&gateway_error(&err)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["status"], 429);
        assert_eq!(v["error"]["code"], "usage_limit_reached");
        assert_eq!(v["error"]["resets_at"], 123);
        assert_eq!(v["headers"]["retry-after"], "7");
    }

    #[test]
    fn connection_limit_names_the_code_the_cli_retries() {
        let v: Value = serde_json::from_str(&connection_limit(60)).unwrap();
        assert_eq!(v["error"]["code"], "websocket_connection_limit_reached");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("60 minutes"));
    }
}
