//! Scenario knobs: how one `/responses` stream is shaped, paced and broken.
//!
//! Knobs come in layers, later wins: the global default (`set_scenario`, `POST /__mock/scenario`)
//! < the `x-mock-scenario: {json}` request header < a `[[mock {json}]]` directive in the text of
//! the last user message. Layers are partial JSON objects laid over the serialized base, so a
//! layer only changes the fields it names and unknown fields are rejected.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Upper bound on the generated answer plus padding of one stream, so a typo in a scenario
/// cannot make the mock allocate the machine away.
pub const MAX_RENDERED_BYTES: u64 = 256 * 1024 * 1024;

/// What goes wrong after `fail_after_events` events were sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Abort the TCP connection (RST) without a terminating chunk.
    #[default]
    Reset,
    /// End the chunked body cleanly, but without a terminal event.
    Eof,
    /// A `response.failed` event with code `server_error`.
    FailedEvent,
    /// A top-level `error` event.
    ErrorEvent,
    /// `response.incomplete` with reason `max_output_tokens`.
    Incomplete,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Number of text (or argument) delta events.
    pub deltas: u32,
    /// Bytes per delta of the filler answer (ignored when `text` is set).
    pub delta_bytes: u32,
    /// Exact answer text, split into `deltas` pieces.
    pub text: Option<String>,
    /// Pause before each delta event.
    pub delay_ms: u64,
    /// Extra pause, uniformly 0..=jitter_ms, added to each delta pause.
    pub jitter_ms: u64,
    /// Pause before the response head is sent.
    pub head_delay_ms: u64,
    /// Pause after the head, before the first event.
    pub ttfb_ms: u64,
    /// Pause after the last event, before the body ends (the chunked terminator): a client that
    /// stops reading at `response.completed` hangs up in between.
    pub tail_delay_ms: u64,
    /// Emit a reasoning item before the answer.
    pub reasoning: bool,
    /// Reasoning tokens reported in usage (only when `reasoning`).
    pub reasoning_tokens: u64,
    /// Answer with a `function_call` item named "shell" instead of a message.
    pub tool_call: bool,
    /// Answer with a refusal content part instead of output_text.
    pub refusal: bool,
    /// Frame lines with CRLF instead of LF.
    pub crlf: bool,
    /// A `: keepalive` comment block after every non-terminal event.
    pub keepalive_comments: bool,
    /// Pad the answer item's `output_item.done` with this many bytes of text.
    pub big_event_bytes: usize,
    /// Re-slice the whole SSE byte stream into writes of exactly this many bytes.
    pub chunk_bytes: Option<usize>,
    /// Send the whole stream in one write.
    pub coalesce: bool,
    /// Send this many events, then fail as `fail_mode` says.
    pub fail_after_events: Option<u32>,
    pub fail_mode: FailMode,
    /// Read the request and never answer.
    pub hang: bool,
    /// Keep the exact body bytes for `recorded_response`.
    pub record: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            deltas: 8,
            delta_bytes: 16,
            text: None,
            delay_ms: 0,
            jitter_ms: 0,
            head_delay_ms: 0,
            ttfb_ms: 0,
            tail_delay_ms: 0,
            reasoning: true,
            reasoning_tokens: 16,
            tool_call: false,
            refusal: false,
            crlf: false,
            keepalive_comments: false,
            big_event_bytes: 0,
            chunk_bytes: None,
            coalesce: false,
            fail_after_events: None,
            fail_mode: FailMode::Reset,
            hang: false,
            record: false,
        }
    }
}

impl Scenario {
    /// Parses a full scenario (missing fields take defaults).
    pub fn from_json(raw: &str) -> Result<Scenario, String> {
        let s: Scenario =
            serde_json::from_str(raw).map_err(|e| format!("invalid scenario: {e}"))?;
        s.validate()?;
        Ok(s)
    }

    /// `self` with the fields named in `patch` replaced.
    pub fn overlay(&self, patch: &Map<String, Value>) -> Result<Scenario, String> {
        let mut base = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => return Err("scenario does not serialize to an object".into()),
        };
        for (k, v) in patch {
            base.insert(k.clone(), v.clone());
        }
        let s: Scenario = serde_json::from_value(Value::Object(base))
            .map_err(|e| format!("invalid scenario: {e}"))?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        if self.chunk_bytes == Some(0) {
            return Err("invalid scenario: chunk_bytes must be at least 1".into());
        }
        let answer = u64::from(self.deltas) * u64::from(self.delta_bytes);
        let size =
            answer + self.big_event_bytes as u64 + self.text.as_ref().map_or(0, |t| t.len() as u64);
        if size > MAX_RENDERED_BYTES {
            return Err(format!(
                "invalid scenario: deltas*delta_bytes + big_event_bytes exceeds {MAX_RENDERED_BYTES} bytes"
            ));
        }
        Ok(())
    }
}

/// Parses an `x-mock-scenario` header or directive body into a patch object.
pub fn parse_patch(raw: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("invalid scenario: expected a JSON object".into()),
        Err(e) => Err(format!("invalid scenario: {e}")),
    }
}

const DIRECTIVE_OPEN: &str = "[[mock";
const DIRECTIVE_CLOSE: &str = "]]";

/// Finds `[[mock {json}]]` directives in the `input_text` parts of the last user message of a
/// request's `input` and merges them (later directives win). `Ok(None)` when there is none.
pub fn directive_patch(input: Option<&Value>) -> Result<Option<Map<String, Value>>, String> {
    let Some(items) = input.and_then(Value::as_array) else {
        return Ok(None);
    };
    let Some(last_user) = items.iter().rev().find(|item| {
        item.get("role").and_then(Value::as_str) == Some("user")
            && item
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("message")
                == "message"
    }) else {
        return Ok(None);
    };
    let Some(parts) = last_user.get("content").and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut merged: Option<Map<String, Value>> = None;
    for part in parts {
        if part.get("type").and_then(Value::as_str) != Some("input_text") {
            continue;
        }
        let Some(text) = part.get("text").and_then(Value::as_str) else {
            continue;
        };
        let mut rest = text;
        while let Some(at) = rest.find(DIRECTIVE_OPEN) {
            let after = &rest[at + DIRECTIVE_OPEN.len()..];
            let mut stream = serde_json::Deserializer::from_str(after).into_iter::<Value>();
            let patch = match stream.next() {
                Some(Ok(Value::Object(m))) => m,
                Some(Ok(_)) => {
                    return Err("invalid [[mock]] directive: expected a JSON object".into())
                }
                Some(Err(e)) => return Err(format!("invalid [[mock]] directive: {e}")),
                None => return Err("invalid [[mock]] directive: empty".into()),
            };
            let tail = &after[stream.byte_offset()..];
            let Some(close) = tail.trim_start().strip_prefix(DIRECTIVE_CLOSE) else {
                return Err("invalid [[mock]] directive: missing ]]".into());
            };
            merged.get_or_insert_with(Map::new).extend(patch);
            rest = close;
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_field_is_optional() {
        assert_eq!(Scenario::from_json("{}").unwrap(), Scenario::default());
        let s = Scenario::from_json(r#"{"deltas":3,"fail_mode":"failed_event"}"#).unwrap();
        assert_eq!(s.deltas, 3);
        assert_eq!(s.fail_mode, FailMode::FailedEvent);
        assert!(Scenario::from_json(r#"{"nope":1}"#).is_err());
        assert!(Scenario::from_json(r#"{"chunk_bytes":0}"#).is_err());
        assert!(Scenario::from_json(r#"{"deltas":100000,"delta_bytes":100000}"#).is_err());
        assert!(Scenario::from_json(r#"{"big_event_bytes":268435456,"deltas":0}"#).is_ok());
        assert!(Scenario::from_json(r#"{"big_event_bytes":268435457,"deltas":0}"#).is_err());
    }

    #[test]
    fn overlay_changes_only_named_fields() {
        let base = Scenario {
            deltas: 2,
            record: true,
            ..Scenario::default()
        };
        let s = base
            .overlay(&parse_patch(r#"{"delay_ms":5}"#).unwrap())
            .unwrap();
        assert_eq!((s.deltas, s.delay_ms, s.record), (2, 5, true));
        assert!(base
            .overlay(&parse_patch(r#"{"bogus":true}"#).unwrap())
            .is_err());
        assert!(parse_patch("[1]").is_err());
    }

    #[test]
    fn directive_is_read_from_last_user_message_only() {
        let body = json!({"input": [
            {"type":"message","role":"user","content":[{"type":"input_text","text":"[[mock {\"deltas\":1}]]"}]},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"[[mock {\"deltas\":9}]]"}]},
            {"type":"message","role":"user","content":[
                {"type":"input_text","text":"hi [[mock {\"deltas\":4, \"text\":\"a]]b\"} ]] and [[mock {\"delay_ms\":7}]]"}]}
        ]});
        let p = directive_patch(body.get("input")).unwrap().unwrap();
        assert_eq!(p["deltas"], 4);
        assert_eq!(p["text"], "a]]b");
        assert_eq!(p["delay_ms"], 7);
        assert!(directive_patch(Some(&json!("plain"))).unwrap().is_none());
        let bad = json!({"input": [{"type":"message","role":"user","content":[{"type":"input_text","text":"[[mock {oops}]]"}]}]});
        assert!(directive_patch(bad.get("input")).is_err());
    }
}
