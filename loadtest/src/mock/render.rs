//! SSE bytes for `/responses`: event templates rendered once per distinct scenario, plus the
//! few per-request events (created, in_progress, the terminal one) that carry ids and usage.
//!
//! The hot path never JSON-encodes a delta: a [`Template`] holds every middle event as shared
//! [`Bytes`], and a request only formats three short events around them.
//!
//! Both transports of `/responses` send these events: each [`Event`] is the canonical SSE block
//! and, as a slice of the same bytes, its JSON payload, which the WebSocket route sends as one
//! text message (PROTOCOL.md 6.3). One generator, two framings: the two cannot drift apart.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{json, Value};

use super::scenario::{FailMode, Scenario};
use super::stats::lock;

const REASONING_ID: &str = "rs_mock0001";
const MESSAGE_ID: &str = "msg_mock0001";
const CALL_ITEM_ID: &str = "fc_mock0001";
const CALL_ID: &str = "call_mock0001";
const ENCRYPTED_REASONING: &str = "gAAAAABmockmockmockmockmockmockmock";
const FILLER: &[u8] =
    b"The quick brown fox jumps over the lazy dog while codex-lb streams tokens. ";
/// Distinct scenarios kept; past this the cache starts over (per-request `text` directives can
/// make every request distinct, and they must not grow memory without bound).
const MAX_TEMPLATES: usize = 256;

/// The scenario fields that change the pre-rendered bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RenderKey {
    model: String,
    deltas: u32,
    delta_bytes: u32,
    text: Option<String>,
    reasoning: bool,
    tool_call: bool,
    refusal: bool,
    crlf: bool,
    keepalive: bool,
    big_event_bytes: usize,
}

/// One rendered event.
#[derive(Clone, Debug)]
pub struct Event {
    /// `event: …` + `data: …` + blank line, plus the keep-alive trailer when enabled.
    pub sse: Bytes,
    /// The `data:` payload alone (a slice of `sse`): the event's compact JSON object.
    pub json: Bytes,
}

/// Pre-rendered middle of a stream.
pub struct Template {
    nl: &'static str,
    keepalive: bool,
    model_json: String,
    /// Events with sequence numbers 2...
    body: Vec<Event>,
    is_delta: Vec<bool>,
    /// JSON array for `response.completed.response.output`.
    output_json: String,
    /// Bytes of streamed answer content (text, refusal or call arguments).
    pub answer_bytes: u64,
}

#[derive(Default)]
pub struct TemplateCache {
    map: Mutex<HashMap<RenderKey, Arc<Template>>>,
}

impl TemplateCache {
    pub fn get(&self, sc: &Scenario, model: &str) -> Arc<Template> {
        let key = RenderKey {
            model: model.to_string(),
            deltas: sc.deltas,
            delta_bytes: sc.delta_bytes,
            text: sc.text.clone(),
            reasoning: sc.reasoning,
            tool_call: sc.tool_call,
            refusal: sc.refusal,
            crlf: sc.crlf,
            keepalive: sc.keepalive_comments,
            big_event_bytes: sc.big_event_bytes,
        };
        if let Some(t) = lock(&self.map).get(&key) {
            return t.clone();
        }
        // Rendered outside the lock: a multi-MB big event must not stall other requests.
        let t = Arc::new(build(&key));
        let mut map = lock(&self.map);
        if map.len() >= MAX_TEMPLATES {
            map.clear();
        }
        map.entry(key).or_insert(t).clone()
    }

    pub fn clear(&self) {
        lock(&self.map).clear();
    }
}

/// Token counts reported in the terminal event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub cached: u64,
    pub output: u64,
    pub reasoning: u64,
}

impl TokenUsage {
    pub fn total(&self) -> u64 {
        self.input + self.output
    }

    fn json(&self) -> String {
        format!(
            r#"{{"input_tokens":{},"input_tokens_details":{{"cached_tokens":{}}},"output_tokens":{},"output_tokens_details":{{"reasoning_tokens":{}}},"total_tokens":{}}}"#,
            self.input,
            self.cached,
            self.output,
            self.reasoning,
            self.total()
        )
    }
}

/// How the body ends after its last event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Terminating chunk.
    Clean,
    /// Abort the connection.
    Reset,
}

/// Everything one response body will send, in order.
pub struct Plan {
    pub events: Vec<Event>,
    pub is_delta: Vec<bool>,
    pub end: End,
    /// Whether the events include `response.completed` (then usage is charged at the end).
    pub completes: bool,
}

/// A response that generates nothing (`generate: false`, the WebSocket pre-warm of PROTOCOL.md
/// 6.2): `response.created`, then `response.completed` with an empty `output` and `usage`.
pub fn plan_empty(tpl: &Template, ids: &RequestIds<'_>, usage: &TokenUsage) -> Plan {
    let data = format!(
        r#"{{"type":"response.completed","sequence_number":1,"response":{}}}"#,
        tpl.response_json(ids, "completed", "[]", &usage.json(), "")
    );
    Plan {
        events: vec![
            tpl.head("response.created", 0, ids),
            tpl.event("response.completed", &data, false),
        ],
        is_delta: vec![false, false],
        end: End::Clean,
        completes: true,
    }
}

/// Per-request values inside the rendered events.
pub struct RequestIds<'a> {
    pub response_id: &'a str,
    pub created_at: u64,
    /// The tier the response reports it ran at: the request's `service_tier`, else `default`.
    pub service_tier: &'a str,
}

pub fn plan(tpl: &Template, sc: &Scenario, ids: &RequestIds<'_>, usage: &TokenUsage) -> Plan {
    let mut events = Vec::with_capacity(tpl.body.len() + 3);
    let mut is_delta = Vec::with_capacity(tpl.body.len() + 3);
    events.push(tpl.head("response.created", 0, ids));
    events.push(tpl.head("response.in_progress", 1, ids));
    is_delta.extend([false, false]);
    events.extend(tpl.body.iter().cloned());
    is_delta.extend(tpl.is_delta.iter().copied());

    let Some(fail_after) = sc.fail_after_events else {
        let seq = events.len();
        let data = format!(
            r#"{{"type":"response.completed","sequence_number":{seq},"response":{}}}"#,
            tpl.response_json(ids, "completed", &tpl.output_json, &usage.json(), "")
        );
        events.push(tpl.event("response.completed", &data, false));
        is_delta.push(false);
        return Plan {
            events,
            is_delta,
            end: End::Clean,
            completes: true,
        };
    };

    let sent = (fail_after as usize).min(events.len());
    events.truncate(sent);
    is_delta.truncate(sent);
    let terminal = match sc.fail_mode {
        FailMode::Reset => {
            return Plan {
                events,
                is_delta,
                end: End::Reset,
                completes: false,
            }
        }
        FailMode::Eof => {
            return Plan {
                events,
                is_delta,
                end: End::Clean,
                completes: false,
            }
        }
        FailMode::FailedEvent => {
            let err = r#","error":{"code":"server_error","message":"The server had an error while processing your request. Sorry about that!"}"#;
            let data = format!(
                r#"{{"type":"response.failed","sequence_number":{sent},"response":{}}}"#,
                tpl.response_json(ids, "failed", "[]", "null", err)
            );
            tpl.event("response.failed", &data, false)
        }
        FailMode::ErrorEvent => {
            let data = format!(
                r#"{{"type":"error","sequence_number":{sent},"code":"server_error","message":"The server had an error while processing your request. Sorry about that!","param":null}}"#
            );
            tpl.event("error", &data, false)
        }
        FailMode::Incomplete => {
            let extra = r#","incomplete_details":{"reason":"max_output_tokens"}"#;
            let data = format!(
                r#"{{"type":"response.incomplete","sequence_number":{sent},"response":{}}}"#,
                tpl.response_json(ids, "incomplete", "[]", &usage.json(), extra)
            );
            tpl.event("response.incomplete", &data, false)
        }
    };
    events.push(terminal);
    is_delta.push(false);
    Plan {
        events,
        is_delta,
        end: End::Clean,
        completes: false,
    }
}

impl Template {
    /// One canonical SSE block: `event:` line, one `data:` line, blank line (PROTOCOL.md 2.1).
    fn event(&self, kind: &str, data: &str, keepalive: bool) -> Event {
        let nl = self.nl;
        let mut s = String::with_capacity(kind.len() + data.len() + 32);
        let _ = write!(s, "event: {kind}{nl}data: ");
        let start = s.len();
        s.push_str(data);
        let end = s.len();
        let _ = write!(s, "{nl}{nl}");
        if keepalive && self.keepalive {
            let _ = write!(s, ": keepalive{nl}{nl}");
        }
        let sse = Bytes::from(s);
        Event {
            json: sse.slice(start..end),
            sse,
        }
    }

    /// `response.created` / `response.in_progress`: the in-progress response object.
    fn head(&self, kind: &str, seq: usize, ids: &RequestIds<'_>) -> Event {
        let data = format!(
            r#"{{"type":"{kind}","sequence_number":{seq},"response":{}}}"#,
            self.response_json(ids, "in_progress", "[]", "null", "")
        );
        self.event(kind, &data, true)
    }

    fn response_json(
        &self,
        ids: &RequestIds<'_>,
        status: &str,
        output: &str,
        usage: &str,
        extra: &str,
    ) -> String {
        format!(
            r#"{{"id":"{}","object":"response","created_at":{},"status":"{status}","model":{},"service_tier":{},"output":{output},"usage":{usage}{extra}}}"#,
            ids.response_id,
            ids.created_at,
            self.model_json,
            Value::from(ids.service_tier)
        )
    }
}

/// Splits `text` into `n` pieces of near-equal character count (fewer if it is shorter).
fn split_pieces(text: &str, n: usize) -> Vec<&str> {
    let chars = text.chars().count();
    let n = n.min(chars).max(1);
    let mut out = Vec::with_capacity(n);
    let mut bounds = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()));
    let mut start = bounds.next().unwrap_or(0);
    let mut taken = 0;
    for k in 1..=n {
        let target = chars * k / n;
        let mut end = start;
        while taken < target {
            end = bounds.next().unwrap_or(text.len());
            taken += 1;
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}

fn filler(len: usize) -> String {
    FILLER
        .iter()
        .cycle()
        .take(len)
        .map(|&b| b as char)
        .collect()
}

fn build(key: &RenderKey) -> Template {
    let mut t = Template {
        nl: if key.crlf { "\r\n" } else { "\n" },
        keepalive: key.keepalive,
        model_json: Value::from(key.model.as_str()).to_string(),
        body: Vec::new(),
        is_delta: Vec::new(),
        output_json: String::new(),
        answer_bytes: 0,
    };
    let mut seq = 2usize;
    let mut output: Vec<Value> = Vec::new();
    let mut push = |t: &mut Template, v: Value, delta: bool| {
        let kind = v["type"].as_str().unwrap_or_default().to_string();
        let mut v = v;
        v["sequence_number"] = json!(seq);
        seq += 1;
        let b = t.event(&kind, &v.to_string(), true);
        t.body.push(b);
        t.is_delta.push(delta);
    };

    let mut index = 0usize;
    if key.reasoning {
        push(
            &mut t,
            json!({"type":"response.output_item.added","output_index":index,
            "item":{"id":REASONING_ID,"type":"reasoning","summary":[]}}),
            false,
        );
        let item = json!({"id":REASONING_ID,"type":"reasoning","summary":[],"encrypted_content":ENCRYPTED_REASONING});
        push(
            &mut t,
            json!({"type":"response.output_item.done","output_index":index,"item":item}),
            false,
        );
        output.push(item);
        index += 1;
    }

    let answer = match &key.text {
        Some(text) => text.clone(),
        None => filler(key.deltas as usize * key.delta_bytes as usize),
    };
    let padding = filler(key.big_event_bytes);
    let pieces_wanted = if key.text.is_some() {
        key.deltas.max(1)
    } else {
        key.deltas
    } as usize;

    if key.tool_call {
        let args = json!({"command": ["echo", answer]}).to_string();
        let padded_args = json!({"command": ["echo", format!("{answer}{padding}")]}).to_string();
        t.answer_bytes = args.len() as u64;
        push(
            &mut t,
            json!({"type":"response.output_item.added","output_index":index,
            "item":{"id":CALL_ITEM_ID,"type":"function_call","status":"in_progress","call_id":CALL_ID,"name":"shell","arguments":""}}),
            false,
        );
        for piece in split_pieces(&args, pieces_wanted.max(1)) {
            push(
                &mut t,
                json!({"type":"response.function_call_arguments.delta","item_id":CALL_ITEM_ID,
                "output_index":index,"delta":piece}),
                true,
            );
        }
        push(
            &mut t,
            json!({"type":"response.function_call_arguments.done","item_id":CALL_ITEM_ID,
            "output_index":index,"arguments":args}),
            false,
        );
        let item = |a: &str| json!({"id":CALL_ITEM_ID,"type":"function_call","status":"completed","call_id":CALL_ID,"name":"shell","arguments":a});
        push(
            &mut t,
            json!({"type":"response.output_item.done","output_index":index,"item":item(&padded_args)}),
            false,
        );
        output.push(item(&args));
    } else {
        // A refusal is a message whose content part is `refusal` instead of `output_text`.
        let (part_type, field, delta_event, done_event) = if key.refusal {
            (
                "refusal",
                "refusal",
                "response.refusal.delta",
                "response.refusal.done",
            )
        } else {
            (
                "output_text",
                "text",
                "response.output_text.delta",
                "response.output_text.done",
            )
        };
        let part = |s: &str| {
            let mut p = json!({"type": part_type});
            p[field] = json!(s);
            if !key.refusal {
                p["annotations"] = json!([]);
            }
            p
        };
        t.answer_bytes = answer.len() as u64;
        push(
            &mut t,
            json!({"type":"response.output_item.added","output_index":index,
            "item":{"id":MESSAGE_ID,"type":"message","role":"assistant","status":"in_progress","content":[]}}),
            false,
        );
        push(
            &mut t,
            json!({"type":"response.content_part.added","item_id":MESSAGE_ID,"output_index":index,
            "content_index":0,"part":part("")}),
            false,
        );
        if pieces_wanted > 0 {
            for piece in split_pieces(&answer, pieces_wanted) {
                let mut d = json!({"type":delta_event,"item_id":MESSAGE_ID,"output_index":index,"content_index":0,"delta":piece});
                if !key.refusal {
                    d["logprobs"] = json!([]);
                }
                push(&mut t, d, true);
            }
        }
        let mut done =
            json!({"type":done_event,"item_id":MESSAGE_ID,"output_index":index,"content_index":0});
        done[field] = json!(answer);
        if !key.refusal {
            done["logprobs"] = json!([]);
        }
        push(&mut t, done, false);
        push(
            &mut t,
            json!({"type":"response.content_part.done","item_id":MESSAGE_ID,"output_index":index,
            "content_index":0,"part":part(&answer)}),
            false,
        );
        let item = |s: &str| {
            json!({"id":MESSAGE_ID,"type":"message","role":"assistant","status":"completed",
            "content":[part(s)],"phase":"final_answer"})
        };
        push(
            &mut t,
            json!({"type":"response.output_item.done","output_index":index,
            "item":item(&format!("{answer}{padding}"))}),
            false,
        );
        output.push(item(&answer));
    }
    t.output_json = Value::Array(output).to_string();
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(events: &[Event]) -> Vec<(String, Value)> {
        events
            .iter()
            .map(|e| {
                let s = std::str::from_utf8(&e.sse).unwrap();
                let mut lines = s.lines();
                let kind = lines
                    .next()
                    .unwrap()
                    .strip_prefix("event: ")
                    .unwrap()
                    .to_string();
                let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
                (kind, serde_json::from_str(data).unwrap())
            })
            .collect()
    }

    fn ids() -> RequestIds<'static> {
        RequestIds {
            response_id: "resp_1",
            created_at: 7,
            service_tier: "default",
        }
    }

    #[test]
    fn pieces_cover_the_text() {
        assert_eq!(split_pieces("abcdefg", 3), vec!["ab", "cd", "efg"]);
        assert_eq!(split_pieces("héllo", 9).concat(), "héllo");
        assert_eq!(split_pieces("", 4), vec![""]);
    }

    #[test]
    fn default_stream_has_protocol_sequence() {
        let cache = TemplateCache::default();
        let sc = Scenario {
            text: Some("Hi there, friend!".into()),
            deltas: 3,
            ..Scenario::default()
        };
        let tpl = cache.get(&sc, "gpt-5.5");
        let usage = TokenUsage {
            input: 10,
            cached: 4,
            output: 20,
            reasoning: 16,
        };
        let p = plan(&tpl, &sc, &ids(), &usage);
        assert!(p.completes);
        let ev = parse(&p.events);
        let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (k, v)) in ev.iter().enumerate() {
            assert_eq!(v["type"], k.as_str());
            assert_eq!(v["sequence_number"], i);
        }
        let deltas: String = ev.iter().filter_map(|(_, v)| v["delta"].as_str()).collect();
        assert_eq!(deltas, "Hi there, friend!");
        let u = &ev[12].1["response"]["usage"];
        assert_eq!(u["total_tokens"], 30);
        assert_eq!(u["input_tokens_details"]["cached_tokens"], 4);
        assert_eq!(
            ev[12].1["response"]["output"][1]["content"][0]["text"],
            "Hi there, friend!"
        );
        assert!(Arc::ptr_eq(&tpl, &cache.get(&sc, "gpt-5.5")));
    }

    #[test]
    fn json_payload_is_the_data_line() {
        let sc = Scenario {
            crlf: true,
            keepalive_comments: true,
            ..Scenario::default()
        };
        let tpl = TemplateCache::default().get(&sc, "gpt-5.5");
        let p = plan(&tpl, &sc, &ids(), &TokenUsage::default());
        let parsed = parse(&p.events);
        for (e, (kind, data)) in p.events.iter().zip(&parsed) {
            let v: Value = serde_json::from_slice(&e.json).unwrap();
            assert_eq!(&v, data);
            assert_eq!(v["type"], kind.as_str());
            assert!(!e.json.ends_with(b"\n"));
        }
    }

    #[test]
    fn empty_plan_is_created_then_completed() {
        let sc = Scenario::default();
        let tpl = TemplateCache::default().get(&sc, "gpt-5.5");
        let usage = TokenUsage {
            input: 12,
            ..TokenUsage::default()
        };
        let p = plan_empty(&tpl, &ids(), &usage);
        assert!(p.completes);
        let ev = parse(&p.events);
        assert_eq!(ev[0].0, "response.created");
        assert_eq!(ev[1].0, "response.completed");
        assert_eq!(ev[1].1["sequence_number"], 1);
        assert_eq!(ev[1].1["response"]["output"], serde_json::json!([]));
        assert_eq!(ev[1].1["response"]["usage"]["total_tokens"], 12);
    }

    #[test]
    fn failures_truncate_and_replace_terminal() {
        let tpl = TemplateCache::default().get(&Scenario::default(), "gpt-5.5");
        let usage = TokenUsage::default();
        let sc = Scenario {
            fail_after_events: Some(4),
            fail_mode: FailMode::FailedEvent,
            ..Scenario::default()
        };
        let ev = parse(&plan(&tpl, &sc, &ids(), &usage).events);
        assert_eq!(ev.len(), 5);
        assert_eq!(ev[4].0, "response.failed");
        assert_eq!(ev[4].1["sequence_number"], 4);
        assert_eq!(ev[4].1["response"]["error"]["code"], "server_error");
        let sc = Scenario {
            fail_after_events: Some(3),
            fail_mode: FailMode::Reset,
            ..Scenario::default()
        };
        let p = plan(&tpl, &sc, &ids(), &usage);
        assert_eq!((p.events.len(), p.end, p.completes), (3, End::Reset, false));
    }

    #[test]
    fn tool_call_and_crlf_keepalive() {
        let sc = Scenario {
            tool_call: true,
            crlf: true,
            keepalive_comments: true,
            reasoning: false,
            ..Scenario::default()
        };
        let tpl = TemplateCache::default().get(&sc, "gpt-5.5");
        let p = plan(&tpl, &sc, &ids(), &TokenUsage::default());
        let first = std::str::from_utf8(&p.events[0].sse).unwrap();
        assert!(first.ends_with("\r\n\r\n: keepalive\r\n\r\n"), "{first:?}");
        let last = std::str::from_utf8(&p.events.last().unwrap().sse).unwrap();
        assert!(!last.contains("keepalive"));
        let all: String = p
            .events
            .iter()
            .map(|e| std::str::from_utf8(&e.sse).unwrap())
            .collect();
        assert!(all.contains("response.function_call_arguments.delta"));
        assert!(all.contains(r#""name":"shell""#));
    }
}
