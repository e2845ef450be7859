//! The Chat Completions translation (`codex_lb::openai::chat`) on arbitrary input.
//!
//! The input is read three ways:
//! - as JSON: `to_responses_request` on it (non-JSON is skipped for this part);
//! - as events for the stream translators: a JSON array whose elements are `{"type", "data"}`
//!   objects (an element without `data` is itself the data, with an empty event name, as the route
//!   passes it); any other JSON value is one event; non-JSON input is scanned as an SSE stream
//!   with `SseScanner::keeping_all` and each event's data parsed the way the route does
//!   (`src/proxy/deliver.rs`: `Null` when it is not JSON, the name taken from `"type"`);
//! - the events go to `ChunkStream` (with and without `include_usage`) and `ResponseCollector`.
//!
//! Invariants checked (beyond "never panics"):
//! - request: on success the body is an object with `model` (= `ChatRequest::model`),
//!   string `instructions`, array `input`, `store:false`, `stream:true`, `include:[]`;
//!   `include_usage` implies `stream`; the body serializes to JSON that parses back. On failure the
//!   error names a field (except `NotAnObject`), has a code and a message, and its API envelope
//!   serializes to JSON;
//! - stream: every frame from `on_event` and `finish` is `data: <payload>\n\n` with no other line
//!   break inside, the payload is `[DONE]` or a JSON object holding `choices` or `error`; `[DONE]`
//!   is the last frame of `finish` and appears nowhere else; nothing comes after a terminal event
//!   or after `finish`; `finish` twice gives nothing the second time; `started()` once any frame
//!   went out; `ChunkStream` and `ResponseCollector` agree on when the stream is terminal;
//! - collector: a collected response yields a `chat.completion` object, a failure a status of 400,
//!   429 or 502 with an `error.message` string, a truncation 502.

#![no_main]

use codex_lb::http::sse::SseScanner;
use codex_lb::openai::chat::{
    completion_from_response, error_from_failed, to_responses_request, truncated_error, ChatError,
    ChunkStream, Collected, ResponseCollector, DONE_FRAME,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const ID: &str = "chatcmpl-fuzz";

fuzz_target!(|data: &[u8]| {
    let json: Option<Value> = serde_json::from_slice(data).ok();
    let mut model = "gpt-5".to_string();
    if let Some(v) = &json {
        if let Some(m) = check_request(v) {
            model = m;
        }
    }
    let events = match &json {
        Some(v) => events_from_json(v),
        None => events_from_sse(data),
    };
    for include_usage in [false, true] {
        check_stream(&events, &model, include_usage);
    }
});

/// `to_responses_request` and its result; the model on success.
fn check_request(v: &Value) -> Option<String> {
    match to_responses_request(v) {
        Ok(req) => {
            let body = req.body.as_object().expect("body is not an object");
            assert_eq!(
                body.get("model").and_then(Value::as_str),
                Some(req.model.as_str())
            );
            assert!(body.get("instructions").is_some_and(Value::is_string));
            assert!(body.get("input").is_some_and(Value::is_array));
            assert_eq!(body.get("store"), Some(&Value::Bool(false)));
            assert_eq!(body.get("stream"), Some(&Value::Bool(true)));
            assert_eq!(body.get("include"), Some(&Value::Array(Vec::new())));
            assert!(
                !req.include_usage || req.stream,
                "include_usage without stream"
            );
            let text = req.body.to_string();
            serde_json::from_str::<Value>(&text).expect("request body does not reparse");
            Some(req.model)
        }
        Err(e) => {
            assert_eq!(e.param().is_none(), e == ChatError::NotAnObject);
            assert!(!e.code().is_empty());
            assert!(!e.to_string().is_empty());
            let env = e.to_api_error().to_json();
            serde_json::from_slice::<Value>(&env).expect("error envelope is not JSON");
            None
        }
    }
}

fn events_from_json(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|item| match item.get("data") {
                Some(data) if item.is_object() => (
                    item.get("type")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    data.clone(),
                ),
                _ => (String::new(), item.clone()),
            })
            .collect(),
        other => vec![(String::new(), other.clone())],
    }
}

fn events_from_sse(data: &[u8]) -> Vec<(String, Value)> {
    let mut scanner = SseScanner::keeping_all(1 << 20);
    scanner.feed(data);
    scanner.feed(b"\n\n");
    scanner
        .take_ready()
        .iter()
        .map(|ev| {
            let data: Value = serde_json::from_slice(&ev.data).unwrap_or(Value::Null);
            let t = data
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            (t, data)
        })
        .collect()
}

fn check_frame(frame: &str) {
    let payload = frame
        .strip_prefix("data: ")
        .and_then(|f| f.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("malformed frame {frame:?}"));
    assert!(
        !payload.contains(['\n', '\r']),
        "line break inside a frame: {frame:?}"
    );
    if payload == "[DONE]" {
        return;
    }
    let v: Value = serde_json::from_str(payload)
        .unwrap_or_else(|e| panic!("frame payload is not JSON ({e}): {payload:?}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("frame payload is not an object: {payload:?}"));
    if obj.contains_key("error") {
        assert!(obj.get("error").is_some_and(Value::is_object));
    } else {
        assert_eq!(
            obj.get("object").and_then(Value::as_str),
            Some("chat.completion.chunk")
        );
        assert_eq!(obj.get("id").and_then(Value::as_str), Some(ID));
        assert!(obj.get("choices").is_some_and(Value::is_array));
    }
}

fn check_stream(events: &[(String, Value)], model: &str, include_usage: bool) {
    let mut chunks = ChunkStream::new(
        ID.to_string(),
        1_700_000_000,
        model.to_string(),
        include_usage,
    );
    let mut collector = ResponseCollector::new();
    let mut any = false;
    for (t, data) in events {
        let was_terminal = chunks.is_terminal();
        let frames = chunks.on_event(t, data);
        collector.on_event(t, data);
        if was_terminal {
            assert!(frames.is_empty(), "frames after a terminal event");
        }
        for f in &frames {
            check_frame(f);
            assert_ne!(f, DONE_FRAME, "[DONE] from on_event");
        }
        any |= !frames.is_empty();
        assert_eq!(
            chunks.started(),
            any,
            "started() disagrees with the frames sent"
        );
        assert_eq!(
            chunks.is_terminal(),
            collector.is_terminal(),
            "stream and collector disagree on the terminal event ({t:?})"
        );
    }
    let terminal = chunks.is_terminal();
    let frames = chunks.finish();
    assert!(!frames.is_empty());
    for f in &frames {
        check_frame(f);
    }
    assert_eq!(
        frames.last().map(String::as_str),
        Some(DONE_FRAME),
        "finish does not end in [DONE]"
    );
    assert_eq!(frames.iter().filter(|f| *f == DONE_FRAME).count(), 1);
    if !terminal {
        // The truncation error, then [DONE].
        assert_eq!(frames.len(), 2);
        assert!(frames[0].contains("\"error\""));
    }
    assert!(chunks.started() && chunks.is_terminal());
    assert!(chunks.finish().is_empty(), "finish twice produced frames");
    if let Some((t, data)) = events.first() {
        assert!(chunks.on_event(t, data).is_empty(), "frames after finish");
    }

    match collector.finish() {
        Collected::Response(response) => {
            assert!(response.is_object());
            let c = completion_from_response(ID, 1_700_000_000, model, &response);
            assert_eq!(
                c.get("object").and_then(Value::as_str),
                Some("chat.completion")
            );
            serde_json::from_str::<Value>(&c.to_string()).expect("completion does not reparse");
        }
        Collected::Failed(event) => {
            let (status, env) = error_from_failed(&event);
            assert!(matches!(status, 400 | 429 | 502), "status {status}");
            assert!(env.pointer("/error/message").is_some_and(Value::is_string));
            serde_json::from_str::<Value>(&env.to_string()).expect("envelope does not reparse");
        }
        Collected::Truncated => {
            assert!(!terminal);
            assert_eq!(truncated_error().0, 502);
        }
    }
}
