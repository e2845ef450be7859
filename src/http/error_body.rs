//! OpenAI error bodies: the JSON envelope `{"error":{"message","type","code",...}}` for replies
//! before any byte was streamed, and the `response.failed` SSE event for failures after
//! (PROTOCOL.md §8). Built with serde_json so messages are always escaped correctly.

use serde_json::{json, Map, Value};

/// An error the gateway itself answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub code: Option<String>,
    pub param: Option<String>,
    /// Extra members of the error object (`resets_at`, `plan_type`, ...).
    pub extra: Box<Map<String, Value>>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            code: Some(code.to_string()),
            param: None,
            extra: Box::default(),
            retry_after: None,
        }
    }

    pub fn invalid_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", code, message)
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("No route for {path}"),
        )
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub fn with_extra(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut err = Map::new();
        err.insert("message".into(), Value::String(self.message.clone()));
        err.insert("type".into(), Value::String(self.kind.to_string()));
        err.insert(
            "code".into(),
            self.code.clone().map_or(Value::Null, Value::String),
        );
        err.insert(
            "param".into(),
            self.param.clone().map_or(Value::Null, Value::String),
        );
        for (k, v) in self.extra.iter() {
            err.insert(k.clone(), v.clone());
        }
        serde_json::to_vec(&json!({ "error": Value::Object(err) })).unwrap_or_default()
    }
}

/// The `response.failed` event announcing that a response failed after streaming began.
pub fn response_failed_json(response_id: Option<&str>, code: &str, message: &str) -> Value {
    json!({
        "type": "response.failed",
        "response": {
            "id": response_id,
            "object": "response",
            "status": "failed",
            "error": { "code": code, "message": message, "type": "server_error" },
        }
    })
}

/// The same event as a canonical SSE block.
pub fn response_failed_event(response_id: Option<&str>, code: &str, message: &str) -> Vec<u8> {
    let event = response_failed_json(response_id, code, message);
    let mut out = b"event: response.failed\ndata: ".to_vec();
    out.extend_from_slice(&serde_json::to_vec(&event).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape_and_escaping() {
        let e = ApiError::invalid_request("invalid_json", "bad \"quote\"").with_param("body");
        let v: Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["message"], "bad \"quote\"");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_json");
        assert_eq!(v["error"]["param"], "body");
    }

    #[test]
    fn failed_event_is_one_canonical_block() {
        let b = response_failed_event(Some("resp_1"), "upstream_error", "boom");
        let text = String::from_utf8(b).unwrap();
        assert!(text.starts_with("event: response.failed\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        let data = text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["response"]["error"]["code"], "upstream_error");
        assert_eq!(v["response"]["status"], "failed");
    }
}
