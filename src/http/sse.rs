//! SSE event scanner for the relay: finds event boundaries across any chunking and keeps the data
//! of the few events the gateway reads (terminal events, errors, `codex.rate_limits`).
//!
//! It never produces bytes for the client: the relay forwards the upstream bytes untouched and
//! feeds the same slices here. Uninteresting events (deltas, the bulk of a stream) are skipped with
//! `memchr` without copying. Framing follows the SSE spec: lines end in LF, CRLF or CR; a blank line
//! dispatches; `data:` lines join with LF; `:` starts a comment; one optional space after the colon.
//!
//! An interesting event whose data outgrows the cap is not handed out, but it is not forgotten
//! either: its kind and the last [`OVERFLOW_TAIL_BYTES`] of its data come out of
//! [`SseScanner::take_overflowed`], so a huge terminal event still ends the stream (and its usage,
//! which the upstream writes near the end, can still be read).

use memchr::{memchr2, memmem};

/// Default cap on one captured event (a `response.completed` carries the whole output).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;
/// How much of an unnamed event's data is read to find its `"type"`.
const TYPE_SNIFF_BYTES: usize = 512;
const MAX_FIELD_NAME: usize = 16;
const MAX_EVENT_NAME: usize = 128;
/// How much of the end of an oversized interesting event is kept.
pub const OVERFLOW_TAIL_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Completed,
    Failed,
    Incomplete,
    /// A top-level `error` event.
    Error,
    RateLimits,
    Other,
}

impl EventKind {
    pub fn from_type(t: &[u8]) -> EventKind {
        match t {
            b"response.completed" => EventKind::Completed,
            b"response.failed" => EventKind::Failed,
            b"response.incomplete" => EventKind::Incomplete,
            b"error" => EventKind::Error,
            b"codex.rate_limits" => EventKind::RateLimits,
            _ => EventKind::Other,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EventKind::Completed | EventKind::Failed | EventKind::Incomplete
        )
    }
}

/// A dispatched event the gateway cares about, with its data lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedEvent {
    pub kind: EventKind,
    pub data: Vec<u8>,
}

/// A dispatched interesting event whose data exceeded the cap: its kind and the last bytes of
/// its data (at most [`OVERFLOW_TAIL_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverflowedEvent {
    pub kind: EventKind,
    pub tail: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Start,
    Name,
    /// Just after the colon: one optional space is dropped.
    ValueStart(Field),
    Value(Field),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Event,
    Data,
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// No decision yet: capture up to TYPE_SNIFF_BYTES to find the type.
    Undecided,
    Keep(EventKind),
    Skip,
    /// An interesting event past the cap: only the end of its data is kept, in `tail`.
    Overflow(EventKind),
}

#[derive(Debug)]
pub struct SseScanner {
    line: Line,
    pending_cr: bool,
    name: Vec<u8>,
    event_name: Vec<u8>,
    capture: Capture,
    data: Vec<u8>,
    data_lines: u32,
    in_event: bool,
    max_event_bytes: usize,
    events: u64,
    oversized: u64,
    ready: Vec<ScannedEvent>,
    /// The last bytes of the current event's data once it overflowed.
    tail: Vec<u8>,
    overflowed: Vec<OverflowedEvent>,
    /// Keep every event, not only those the relay reads (for translating a whole stream).
    all: bool,
}

impl Default for SseScanner {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseScanner {
    pub fn new(max_event_bytes: usize) -> Self {
        SseScanner {
            line: Line::Start,
            pending_cr: false,
            name: Vec::new(),
            event_name: Vec::new(),
            capture: Capture::Undecided,
            data: Vec::new(),
            data_lines: 0,
            in_event: false,
            max_event_bytes,
            events: 0,
            oversized: 0,
            ready: Vec::new(),
            tail: Vec::new(),
            overflowed: Vec::new(),
            all: false,
        }
    }

    /// A scanner that hands out every event (kind `Other` included), for the routes that
    /// translate or collect a stream rather than splice it.
    pub fn keeping_all(max_event_bytes: usize) -> Self {
        SseScanner {
            all: true,
            ..Self::new(max_event_bytes)
        }
    }

    /// Events dispatched so far (all kinds).
    pub fn events_seen(&self) -> u64 {
        self.events
    }

    /// Interesting events whose data exceeded the cap and were dropped.
    pub fn oversized_events(&self) -> u64 {
        self.oversized
    }

    /// True when the bytes fed so far end exactly between events.
    pub fn at_boundary(&self) -> bool {
        !self.in_event && self.line == Line::Start
    }

    /// Takes the interesting events dispatched since the last call.
    pub fn take_ready(&mut self) -> Vec<ScannedEvent> {
        std::mem::take(&mut self.ready)
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Takes the interesting events dispatched since the last call whose data was over the cap
    /// (they are not among `take_ready`'s).
    pub fn take_overflowed(&mut self) -> Vec<OverflowedEvent> {
        std::mem::take(&mut self.overflowed)
    }

    pub fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            if self.pending_cr {
                self.pending_cr = false;
                if input.first() == Some(&b'\n') {
                    input = input.get(1..).unwrap_or_default();
                    continue;
                }
            }
            match self.line {
                Line::Start | Line::Name => {
                    let Some((&b, rest)) = input.split_first() else {
                        break;
                    };
                    input = rest;
                    match b {
                        b'\r' | b'\n' => {
                            self.pending_cr = b == b'\r';
                            if self.line == Line::Start {
                                self.dispatch();
                            } else {
                                // A line with no colon is a field with an empty value.
                                let f = self.field_for_name();
                                self.begin_value(f);
                                self.end_line(f);
                            }
                        }
                        b':' => {
                            let f = if self.line == Line::Start {
                                Field::Ignored
                            } else {
                                self.field_for_name()
                            };
                            self.begin_value(f);
                            self.line = Line::ValueStart(f);
                            self.in_event = true;
                        }
                        _ => {
                            if self.line == Line::Start {
                                self.name.clear();
                                self.line = Line::Name;
                                self.in_event = true;
                            }
                            if self.name.len() < MAX_FIELD_NAME {
                                self.name.push(b);
                            }
                        }
                    }
                }
                Line::ValueStart(f) => {
                    if input.first() == Some(&b' ') {
                        input = input.get(1..).unwrap_or_default();
                    }
                    self.line = Line::Value(f);
                }
                Line::Value(f) => {
                    let (value, terminator) = match memchr2(b'\n', b'\r', input) {
                        Some(p) => (input.get(..p).unwrap_or_default(), input.get(p).copied()),
                        None => (input, None),
                    };
                    self.append_value(f, value);
                    input = input.get(value.len()..).unwrap_or_default();
                    if let Some(t) = terminator {
                        input = input.get(1..).unwrap_or_default();
                        self.pending_cr = t == b'\r';
                        self.end_line(f);
                    }
                }
            }
        }
    }

    fn field_for_name(&self) -> Field {
        match self.name.as_slice() {
            b"event" => Field::Event,
            b"data" => Field::Data,
            _ => Field::Ignored,
        }
    }

    fn begin_value(&mut self, f: Field) {
        match f {
            Field::Event => self.event_name.clear(),
            Field::Data => {
                if self.data_lines > 0 {
                    // The joiner counts against the cap like any data byte (a run of bare
                    // `data` lines must not grow an event without bound).
                    self.append_value(Field::Data, b"\n");
                }
                self.data_lines += 1;
            }
            Field::Ignored => {}
        }
    }

    fn capturing(&self) -> bool {
        matches!(self.capture, Capture::Undecided | Capture::Keep(_))
    }

    /// Appends to the kept end of an overflowed event, trimming it back to its bound now and then.
    fn keep_tail(&mut self, value: &[u8]) {
        self.tail.extend_from_slice(value);
        if self.tail.len() > 2 * OVERFLOW_TAIL_BYTES {
            let cut = self.tail.len() - OVERFLOW_TAIL_BYTES;
            self.tail.drain(..cut);
        }
    }

    fn append_value(&mut self, f: Field, value: &[u8]) {
        match f {
            Field::Event => {
                let room = MAX_EVENT_NAME.saturating_sub(self.event_name.len());
                self.event_name
                    .extend_from_slice(value.get(..room.min(value.len())).unwrap_or_default());
            }
            Field::Data => {
                if let Capture::Overflow(_) = self.capture {
                    self.keep_tail(value);
                    return;
                }
                if !self.capturing() {
                    return;
                }
                if self.data.len() + value.len() > self.max_event_bytes {
                    self.oversized += 1;
                    let mut data = std::mem::take(&mut self.data);
                    let kind = match self.capture {
                        Capture::Keep(k) => Some(k),
                        // Typed from exactly the first `max_event_bytes` of the data, so the
                        // answer does not depend on how the reads split it.
                        _ => {
                            let had = data.len();
                            let room = self.max_event_bytes.saturating_sub(had);
                            data.extend_from_slice(value.get(..room).unwrap_or(value));
                            let kind = sniff_type(&data).map(EventKind::from_type);
                            data.truncate(had);
                            kind
                        }
                    };
                    match kind {
                        Some(k) if k != EventKind::Other => {
                            self.capture = Capture::Overflow(k);
                            self.tail.clear();
                            let from = data.len().saturating_sub(OVERFLOW_TAIL_BYTES);
                            self.keep_tail(data.get(from..).unwrap_or_default());
                            self.keep_tail(value);
                        }
                        _ => self.capture = Capture::Skip,
                    }
                    return;
                }
                self.data.extend_from_slice(value);
                if self.capture == Capture::Undecided && self.data.len() >= TYPE_SNIFF_BYTES {
                    self.decide_from_data();
                }
            }
            Field::Ignored => {}
        }
    }

    fn end_line(&mut self, f: Field) {
        self.line = Line::Start;
        match f {
            // Data already dropped (skipped as uninteresting, or over the cap) cannot be brought
            // back by a later `event:` line: the event stays skipped.
            Field::Event if !self.capturing() && self.data_lines > 0 => {}
            Field::Event => {
                let kind = EventKind::from_type(&self.event_name);
                self.capture = if kind == EventKind::Other && !self.all {
                    Capture::Skip
                } else {
                    Capture::Keep(kind)
                };
                if !self.capturing() {
                    self.data.clear();
                }
            }
            Field::Data if self.capture == Capture::Undecided => self.decide_from_data(),
            _ => {}
        }
    }

    fn decide_from_data(&mut self) {
        match sniff_type(&self.data) {
            Some(t) => {
                let kind = EventKind::from_type(t);
                if kind == EventKind::Other && !self.all {
                    self.capture = Capture::Skip;
                    self.data.clear();
                } else {
                    self.capture = Capture::Keep(kind);
                }
            }
            // No type in the first bytes of a long line: keep capturing, decide at dispatch.
            None if self.data.len() >= TYPE_SNIFF_BYTES => {}
            None => {}
        }
    }

    fn dispatch(&mut self) {
        if self.in_event {
            self.events += 1;
            if let Capture::Overflow(kind) = self.capture {
                let from = self.tail.len().saturating_sub(OVERFLOW_TAIL_BYTES);
                let mut tail = std::mem::take(&mut self.tail);
                tail.drain(..from);
                self.overflowed.push(OverflowedEvent { kind, tail });
            }
            let kind = match self.capture {
                Capture::Keep(k) => Some(k),
                Capture::Skip | Capture::Overflow(_) => None,
                Capture::Undecided => sniff_type(&self.data).map(EventKind::from_type),
            };
            let kind = match (kind, self.all) {
                (None, true) => Some(EventKind::Other),
                (k, _) => k,
            };
            if let Some(kind) = kind.filter(|k| *k != EventKind::Other || self.all) {
                if self.data_lines > 0 {
                    self.ready.push(ScannedEvent {
                        kind,
                        data: std::mem::take(&mut self.data),
                    });
                }
            }
        }
        self.in_event = false;
        self.capture = Capture::Undecided;
        self.data.clear();
        self.data_lines = 0;
        self.event_name.clear();
    }
}

/// Finds the value of the first `"type":"..."` member in a JSON text.
pub fn sniff_type(json: &[u8]) -> Option<&[u8]> {
    let at = memmem::find(json, b"\"type\"")?;
    let mut rest = json.get(at + 6..)?;
    rest = skip_ws(rest);
    rest = rest.strip_prefix(b":")?;
    rest = skip_ws(rest);
    rest = rest.strip_prefix(b"\"")?;
    let end = memchr::memchr(b'"', rest)?;
    rest.get(..end)
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .count();
    s.get(n..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(sep: &str) -> Vec<u8> {
        let events = [
            (
                "response.created",
                r#"{"type":"response.created","sequence_number":0}"#,
            ),
            (
                "response.output_text.delta",
                r#"{"type":"response.output_text.delta","delta":"Hi"}"#,
            ),
            (
                "codex.rate_limits",
                r#"{"type":"codex.rate_limits","plan_type":"plus"}"#,
            ),
            (
                "response.completed",
                r#"{"type":"response.completed","response":{"usage":{"input_tokens":3}}}"#,
            ),
        ];
        let mut out = String::new();
        out.push_str(&format!(": keepalive{sep}{sep}"));
        for (name, data) in events {
            out.push_str(&format!("event: {name}{sep}data: {data}{sep}{sep}"));
        }
        out.into_bytes()
    }

    fn scan_in_steps(input: &[u8], step: usize) -> (Vec<ScannedEvent>, SseScanner) {
        let mut s = SseScanner::default();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            s.feed(piece);
            out.extend(s.take_ready());
        }
        (out, s)
    }

    #[test]
    fn finds_interesting_events_at_every_split_and_separator() {
        for sep in ["\n", "\r\n", "\r"] {
            let input = stream(sep);
            for step in 1..=input.len() {
                let (events, s) = scan_in_steps(&input, step);
                let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
                assert_eq!(
                    kinds,
                    vec![EventKind::RateLimits, EventKind::Completed],
                    "sep {sep:?} step {step}"
                );
                assert_eq!(
                    events[1].data,
                    br#"{"type":"response.completed","response":{"usage":{"input_tokens":3}}}"#
                        .to_vec()
                );
                assert_eq!(
                    s.events_seen(),
                    5,
                    "comment block counts as a dispatched block"
                );
                assert!(s.at_boundary());
            }
        }
    }

    #[test]
    fn data_only_events_are_typed_from_json_and_multiline_joined() {
        let input = b"data: {\"type\":\"response.output_text.delta\"}\n\ndata: {\"type\":\ndata: \"response.failed\"}\n\n";
        for step in 1..=input.len() {
            let (events, _) = scan_in_steps(input, step);
            assert_eq!(events.len(), 1, "step {step}");
            assert_eq!(events[0].kind, EventKind::Failed);
            assert_eq!(events[0].data, b"{\"type\":\n\"response.failed\"}");
        }
    }

    #[test]
    fn keeping_all_hands_out_every_event_in_order() {
        let input = b"event: response.created\ndata: {\"type\":\"response.created\"}\n\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n: comment\n\nevent: response.completed\ndata: {\"type\":\"response.completed\"}\n\n";
        for step in 1..=input.len() {
            let mut s = SseScanner::keeping_all(1 << 20);
            let mut events = Vec::new();
            for part in input.chunks(step) {
                s.feed(part);
                events.extend(s.take_ready());
            }
            let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
            assert_eq!(
                kinds,
                vec![EventKind::Other, EventKind::Other, EventKind::Completed],
                "step {step}"
            );
            assert_eq!(
                events[1].data,
                b"{\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}"
            );
        }
    }

    #[test]
    fn fuzz_findings_stay_fixed() {
        // An `event:` line after dropped data does not revive the event with half its data.
        let mut s = SseScanner::new(1 << 20);
        s.feed(b"data: {\"type\":\"x\"}\nevent: codex.rate_limits\ndata: {}\n\n");
        assert!(s.take_ready().is_empty());
        let mut s = SseScanner::new(16);
        s.feed(b"event: response.completed\ndata: 0123456789abcdefXYZ\nevent: response.completed\ndata: {}\n\n");
        assert!(
            s.take_ready().is_empty(),
            "an oversized event stays dropped"
        );
        assert_eq!(s.oversized_events(), 1);
        // Bare `data` lines add their joiners under the cap.
        let mut s = SseScanner::new(16);
        let mut input = b"event: error\n".to_vec();
        for _ in 0..40 {
            input.extend_from_slice(b"data\n");
        }
        input.push(b'\n');
        s.feed(&input);
        assert!(s.take_ready().is_empty(), "over the cap: dropped");
        assert_eq!(s.oversized_events(), 1);
    }

    #[test]
    fn boundary_tracking_and_oversize() {
        let mut s = SseScanner::new(10);
        s.feed(b"event: response.completed\ndata: 0123");
        assert!(!s.at_boundary());
        s.feed(b"456789abc\n\n");
        assert!(s.at_boundary());
        assert!(s.take_ready().is_empty());
        assert_eq!(s.oversized_events(), 1);
    }

    #[test]
    fn an_oversized_terminal_event_comes_out_with_its_kind_and_tail() {
        let mut input = b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":\"".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * OVERFLOW_TAIL_BYTES));
        input.extend_from_slice(b"\",\"usage\":{\"input_tokens\":3}}}\n\n");
        for step in [1, 7, 4096, input.len()] {
            let mut s = SseScanner::new(1024);
            let mut overflowed = Vec::new();
            for part in input.chunks(step) {
                s.feed(part);
                assert!(s.take_ready().is_empty(), "step {step}: handed out whole");
                overflowed.extend(s.take_overflowed());
            }
            assert_eq!(overflowed.len(), 1, "step {step}");
            assert_eq!(overflowed[0].kind, EventKind::Completed);
            assert_eq!(overflowed[0].tail.len(), OVERFLOW_TAIL_BYTES);
            assert!(overflowed[0]
                .tail
                .ends_with(b"\",\"usage\":{\"input_tokens\":3}}}"));
            assert_eq!(s.oversized_events(), 1);
            assert!(s.at_boundary());
        }
        // A data-only event is typed from its first bytes, however they arrive.
        let mut input = b"data: {\"type\":\"response.failed\",\"pad\":\"".to_vec();
        input.extend(std::iter::repeat_n(b'y', 700));
        input.extend_from_slice(b"\"}\n\n");
        for step in 1..=input.len() {
            let mut s = SseScanner::new(600);
            let mut overflowed = Vec::new();
            for part in input.chunks(step) {
                s.feed(part);
                overflowed.extend(s.take_overflowed());
            }
            let kinds: Vec<EventKind> = overflowed.iter().map(|e| e.kind).collect();
            assert_eq!(kinds, vec![EventKind::Failed], "step {step}");
            assert_eq!(overflowed[0].tail.len(), input.len() - 6 - 2);
        }
        // Uninteresting events are skipped as before; `keeping_all` still hands out `Other`.
        let mut s = SseScanner::new(8);
        s.feed(b"event: response.output_text.delta\ndata: 0123456789\n\n");
        assert!(s.take_overflowed().is_empty());
        let mut s = SseScanner::keeping_all(8);
        s.feed(b"event: response.completed\ndata: 0123456789\n\n");
        assert_eq!(
            s.take_ready(),
            vec![ScannedEvent {
                kind: EventKind::Other,
                data: Vec::new()
            }]
        );
        assert_eq!(s.take_overflowed()[0].kind, EventKind::Completed);
    }

    #[test]
    fn sniff_type_tolerates_spacing() {
        assert_eq!(
            sniff_type(br#"{ "type" : "error", "code":1}"#),
            Some(&b"error"[..])
        );
        assert_eq!(sniff_type(br#"{"code":1}"#), None);
    }
}
