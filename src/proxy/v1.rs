//! The OpenAI-compatible routes (`/v1/...`) for any OpenAI client: request bodies reshaped into
//! what the ChatGPT backend accepts (PROTOCOL.md §7.2), then served by the same turn as the Codex
//! route, delivered as the client asked: SSE as it comes, one final JSON object, or Chat
//! Completions.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::client::ClientConn;
use super::deliver::ChatDelivery;
use super::responses::{turn_with, Delivery};
use super::Record;
use crate::http::error_body::ApiError;
use crate::http::request::RequestHead;
use crate::keys::KeyView;
use crate::openai::chat;
use crate::worker::Worker;

/// Fields a `/v1/responses` caller may send that this gateway cannot honour (rather than drop).
fn refuse(field: &str, why: &str) -> ApiError {
    ApiError::invalid_request("unsupported_parameter", format!("{field}: {why}")).with_param(field)
}

/// The text of a message's `content`: a string, or the text of its parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A `/v1/responses` body reshaped for the upstream. Returns the body and whether the client
/// asked for a stream (the upstream always streams).
pub fn normalize_responses(body: &[u8]) -> Result<(Bytes, bool), ApiError> {
    let mut obj: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid_request(
            "invalid_json",
            format!("request body is not a valid JSON object: {e}"),
        )
    })?;
    let stream = obj.get("stream").and_then(Value::as_bool) == Some(true);
    if obj.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(refuse(
            "background",
            "background responses are not available through a ChatGPT account",
        ));
    }
    if obj.contains_key("conversation") && obj.contains_key("previous_response_id") {
        return Err(ApiError::invalid_request(
            "invalid_request_error",
            "conversation and previous_response_id cannot be used together",
        )
        .with_param("conversation"));
    }
    let mut instructions: Vec<String> = obj
        .get("instructions")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| vec![s.to_string()])
        .unwrap_or_default();
    let input = match obj.remove("input") {
        Some(Value::String(text)) => vec![json!({
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}]
        })],
        Some(Value::Array(items)) => {
            let mut kept = Vec::with_capacity(items.len());
            for item in items {
                let role = item.get("role").and_then(Value::as_str);
                let is_message = item
                    .get("type")
                    .and_then(Value::as_str)
                    .is_none_or(|t| t == "message");
                if is_message && matches!(role, Some("system" | "developer")) {
                    instructions.push(content_text(item.get("content").unwrap_or(&Value::Null)));
                } else {
                    kept.push(item);
                }
            }
            kept
        }
        None => Vec::new(),
        Some(_) => {
            return Err(ApiError::invalid_request(
                "invalid_type",
                "input must be a string or an array of items",
            )
            .with_param("input"))
        }
    };
    obj.insert("input".into(), Value::Array(input));
    if !instructions.is_empty() {
        obj.insert(
            "instructions".into(),
            Value::String(instructions.join("\n\n")),
        );
    }
    let out = serde_json::to_vec(&obj)
        .map_err(|e| ApiError::invalid_request("invalid_json", e.to_string()))?;
    Ok((Bytes::from(out), stream))
}

/// `POST /v1/responses`: streamed as SSE when the client asks, else one final JSON object.
pub async fn responses(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    head: RequestHead,
    key: Option<Arc<KeyView>>,
    rec: Record,
) -> bool {
    turn_with(w, client, head, key, rec, |body| {
        let (body, stream) = normalize_responses(&body)?;
        Ok((
            body,
            if stream {
                Delivery::Sse
            } else {
                Delivery::Json
            },
        ))
    })
    .await
}

/// A chat body as a Responses turn, delivered as chat.
fn chat_turn(body: Bytes) -> Result<(Bytes, Delivery), ApiError> {
    let parsed: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid_request(
            "invalid_json",
            format!("request body is not a valid JSON object: {e}"),
        )
    })?;
    let req = chat::to_responses_request(&parsed).map_err(|e| e.to_api_error())?;
    let upstream_body = Bytes::from(serde_json::to_vec(&req.body).unwrap_or_default());
    let delivery = Delivery::Chat(ChatDelivery {
        stream: req.stream,
        include_usage: req.include_usage,
        model: req.model,
    });
    Ok((upstream_body, delivery))
}

/// `POST /v1/chat/completions`: translated to a Responses turn and back.
pub async fn chat_completions(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    head: RequestHead,
    key: Option<Arc<KeyView>>,
    rec: Record,
) -> bool {
    turn_with(w, client, head, key, rec, chat_turn).await
}

/// Remote compaction (`/backend-api/codex/responses/compact`, `/v1/responses/compact`): the
/// client's body forwarded to the upstream's compact endpoint with the same account choice, key
/// rules, failover and recording as a turn; the JSON reply relayed.
pub async fn compact(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    head: RequestHead,
    key: Option<Arc<KeyView>>,
    rec: Record,
) -> bool {
    turn_with(w, client, head, key, rec, |body| {
        Ok((body, Delivery::Compact))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(v: Value) -> (Value, bool) {
        let (b, s) = normalize_responses(v.to_string().as_bytes()).unwrap();
        (serde_json::from_slice(&b).unwrap(), s)
    }

    #[test]
    fn string_input_and_system_messages() {
        let (v, stream) = norm(json!({"model": "gpt-5.5", "input": "hi"}));
        assert!(!stream);
        assert_eq!(v["input"][0]["role"], "user");
        assert_eq!(v["input"][0]["content"][0]["text"], "hi");
        let (v, stream) = norm(json!({
            "model": "m", "stream": true, "instructions": "Be brief.",
            "input": [
                {"role": "system", "content": "Speak French."},
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "No emoji."}]},
                {"role": "user", "content": "Bonjour"}
            ]
        }));
        assert!(stream);
        assert_eq!(v["instructions"], "Be brief.\n\nSpeak French.\n\nNo emoji.");
        assert_eq!(v["input"].as_array().unwrap().len(), 1);
        assert_eq!(v["input"][0]["role"], "user");
    }

    #[test]
    fn refusals() {
        let e = normalize_responses(br#"{"model":"m","input":"x","background":true}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("background"));
        let e = normalize_responses(
            br#"{"model":"m","input":"x","conversation":"c","previous_response_id":"r"}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        let e = normalize_responses(br#"{"model":"m","input":5}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
        assert!(normalize_responses(b"[]").is_err());
    }
}
