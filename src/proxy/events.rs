//! Reading the few upstream events the gateway needs: usage and status from the terminal event,
//! the code of an `error` event, and error bodies of non-200 replies.

use serde::Deserialize;

use crate::accounts::now_unix;
use crate::accounts::quota::{self, QuotaReading};
use crate::http::sse::{EventKind, OverflowedEvent, ScannedEvent};
use crate::ledger::Outcome;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    #[serde(default)]
    pub input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    pub output_tokens_details: Option<OutputDetails>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct InputDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct OutputDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn cached(&self) -> u64 {
        self.input_tokens_details.map_or(0, |d| d.cached_tokens)
    }
    pub fn reasoning(&self) -> u64 {
        self.output_tokens_details.map_or(0, |d| d.reasoning_tokens)
    }
}

#[derive(Debug, Deserialize)]
struct EventData {
    #[serde(default)]
    response: Option<ResponseObject>,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResponseObject {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    service_tier: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<ErrorObject>,
    #[serde(default)]
    incomplete_details: Option<IncompleteDetails>,
}

#[derive(Debug, Deserialize)]
struct ErrorObject {
    #[serde(default)]
    code: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IncompleteDetails {
    #[serde(default)]
    reason: Option<String>,
}

/// What the stream told us by its end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamFacts {
    pub terminal: Option<Outcome>,
    pub usage: Option<Usage>,
    pub model: Option<String>,
    /// The tier the upstream says the response ran at.
    pub service_tier: Option<String>,
    pub error_code: Option<String>,
    /// The last `codex.rate_limits` event of the stream.
    pub rate_limits: Option<QuotaReading>,
    /// The id of a completed response: a later turn may continue it.
    pub response_id: Option<String>,
    /// A terminal event arrived whose data is not JSON: it ends nothing, and the stream is
    /// answered as an upstream protocol error.
    pub torn_terminal: bool,
}

impl StreamFacts {
    pub fn absorb(&mut self, ev: &ScannedEvent) {
        let parsed: Option<EventData> = serde_json::from_slice(&ev.data).ok();
        match ev.kind {
            EventKind::Completed | EventKind::Failed | EventKind::Incomplete => {
                // A terminal event cut inside its JSON is not the end of the response: the
                // client could not read it either.
                let Some(parsed) = parsed else {
                    self.torn_terminal = true;
                    return;
                };
                self.terminal = Some(terminal_outcome(ev.kind));
                if let Some(r) = parsed.response {
                    if ev.kind == EventKind::Completed {
                        self.response_id = r.id;
                    }
                    self.usage = r.usage.or(self.usage);
                    self.model = r.model.or(self.model.take());
                    self.service_tier = r.service_tier.or(self.service_tier.take());
                    if let Some(e) = r.error {
                        self.error_code = e.code.or(e.kind);
                    }
                    if let Some(reason) = r.incomplete_details.and_then(|d| d.reason) {
                        self.error_code = Some(reason);
                    }
                }
            }
            EventKind::Error => {
                self.error_code = parsed.and_then(|p| p.code).or(Some("error".into()));
            }
            EventKind::RateLimits => {
                if let Some(r) = quota::from_rate_limits_event(&ev.data, now_unix()) {
                    self.rate_limits = Some(r);
                }
            }
            EventKind::Other => {}
        }
    }

    /// An interesting event over the scanner's cap: a terminal one still ends the stream (its
    /// name says how), with the usage read from the end of its data when it is there (the
    /// upstream writes `usage` after the long `output`).
    pub fn absorb_overflowed(&mut self, ev: &OverflowedEvent) {
        if !ev.kind.is_terminal() {
            return;
        }
        self.terminal = Some(terminal_outcome(ev.kind));
        if let Some(u) = usage_in_tail(&ev.tail) {
            self.usage = Some(u);
        }
    }
}

fn terminal_outcome(kind: EventKind) -> Outcome {
    match kind {
        EventKind::Completed => Outcome::Completed,
        EventKind::Failed => Outcome::Failed,
        _ => Outcome::Incomplete,
    }
}

/// The object after the last `"usage":` key in the end of a JSON text. Inside JSON strings a
/// quote is escaped, so an unescaped `"usage":` is a key.
fn usage_in_tail(tail: &[u8]) -> Option<Usage> {
    let at = memchr::memmem::rfind(tail, b"\"usage\":")?;
    let rest = tail.get(at + b"\"usage\":".len()..)?;
    serde_json::Deserializer::from_slice(rest)
        .into_iter::<Usage>()
        .next()?
        .ok()
}

/// The parts of an upstream error body that decide failover (PROTOCOL.md §3.3, §3.5).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamErrorInfo {
    /// `error.code`, else `error.type`.
    pub code: Option<String>,
    pub message: Option<String>,
    pub resets_at: Option<u64>,
    pub resets_in_seconds: Option<u64>,
    pub plan_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    resets_at: Option<f64>,
    #[serde(default)]
    resets_in_seconds: Option<f64>,
    #[serde(default)]
    plan_type: Option<String>,
}

pub fn parse_error_body(body: &[u8]) -> UpstreamErrorInfo {
    let Ok(env) = serde_json::from_slice::<ErrorEnvelope>(body) else {
        return UpstreamErrorInfo::default();
    };
    let e = env.error;
    let code = e
        .code
        .and_then(|c| c.as_str().map(str::to_string))
        .or(e.kind);
    UpstreamErrorInfo {
        code,
        message: e.message,
        resets_at: e
            .resets_at
            .filter(|v| v.is_finite() && *v > 0.0)
            .map(|v| v as u64),
        resets_in_seconds: e
            .resets_in_seconds
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| v as u64),
        plan_type: e.plan_type,
    }
}

/// Seconds from a "try again in 1.5s" / "in 250ms" hint, rounded up.
pub fn retry_hint_secs(message: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("try again in ")? + "try again in ".len();
    let rest = lower.get(at..)?;
    let num_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let value: f64 = rest.get(..num_len)?.parse().ok()?;
    let unit = rest.get(num_len..).unwrap_or_default();
    let secs = if unit.starts_with("ms") {
        value / 1000.0
    } else if unit.starts_with('m') {
        value * 60.0
    } else if unit.starts_with('h') {
        value * 3600.0
    } else {
        value
    };
    Some(secs.ceil().max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_usage_and_model() {
        let mut f = StreamFacts::default();
        f.absorb(&ScannedEvent {
            kind: EventKind::Completed,
            data: br#"{"type":"response.completed","response":{"id":"resp_9","model":"gpt-5.5","output":[{"x":1}],"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":4},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":15}}}"#.to_vec(),
        });
        assert_eq!(f.terminal, Some(Outcome::Completed));
        let u = f.usage.unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.cached(),
                u.output_tokens,
                u.reasoning(),
                u.total_tokens
            ),
            (10, 4, 5, 2, 15)
        );
        assert_eq!(f.model.as_deref(), Some("gpt-5.5"));
        assert_eq!(f.response_id.as_deref(), Some("resp_9"));
    }

    #[test]
    fn failed_and_error_codes() {
        let mut f = StreamFacts::default();
        f.absorb(&ScannedEvent {
            kind: EventKind::Error,
            data: br#"{"type":"error","code":"server_is_overloaded"}"#.to_vec(),
        });
        assert_eq!(f.error_code.as_deref(), Some("server_is_overloaded"));
        f.absorb(&ScannedEvent {
            kind: EventKind::Failed,
            data: br#"{"type":"response.failed","response":{"error":{"code":"context_length_exceeded"}}}"#.to_vec(),
        });
        assert_eq!(f.terminal, Some(Outcome::Failed));
        assert_eq!(f.error_code.as_deref(), Some("context_length_exceeded"));
    }

    #[test]
    fn a_torn_terminal_ends_nothing() {
        let mut f = StreamFacts::default();
        f.absorb(&ScannedEvent {
            kind: EventKind::Completed,
            data: br#"{"type":"response.completed","response":{"usage":{"input_tok"#.to_vec(),
        });
        assert_eq!(f.terminal, None);
        assert!(f.torn_terminal);
        // A whole one after it still counts.
        f.absorb(&ScannedEvent {
            kind: EventKind::Completed,
            data: br#"{"type":"response.completed"}"#.to_vec(),
        });
        assert_eq!(f.terminal, Some(Outcome::Completed));
    }

    #[test]
    fn an_overflowed_terminal_ends_the_stream_with_the_usage_of_its_tail() {
        let mut f = StreamFacts::default();
        f.absorb_overflowed(&OverflowedEvent {
            kind: EventKind::Completed,
            tail: br#"xxx \"usage\": not this","usage":{"input_tokens":10,"output_tokens":5,"total_tokens":15},"user":null}}"#.to_vec(),
        });
        assert_eq!(f.terminal, Some(Outcome::Completed));
        assert_eq!(f.usage.map(|u| u.total_tokens), Some(15));
        let mut f = StreamFacts::default();
        f.absorb_overflowed(&OverflowedEvent {
            kind: EventKind::Failed,
            tail: b"no usage here".to_vec(),
        });
        assert_eq!((f.terminal, f.usage), (Some(Outcome::Failed), None));
        let mut f = StreamFacts::default();
        f.absorb_overflowed(&OverflowedEvent {
            kind: EventKind::RateLimits,
            tail: Vec::new(),
        });
        assert_eq!(f, StreamFacts::default());
    }

    #[test]
    fn error_bodies_and_hints() {
        let i = parse_error_body(br#"{"error":{"type":"usage_limit_reached","message":"m","plan_type":"plus","resets_at":1764112345,"resets_in_seconds":12}}"#);
        assert_eq!(i.code.as_deref(), Some("usage_limit_reached"));
        assert_eq!(i.resets_at, Some(1_764_112_345));
        assert_eq!(i.plan_type.as_deref(), Some("plus"));
        assert_eq!(parse_error_body(b"<html>"), UpstreamErrorInfo::default());
        assert_eq!(retry_hint_secs("Please try again in 1.5s."), Some(2));
        assert_eq!(retry_hint_secs("try again in 250ms"), Some(1));
        assert_eq!(retry_hint_secs("try again in 2m"), Some(120));
        assert_eq!(retry_hint_secs("nothing"), None);
    }
}
