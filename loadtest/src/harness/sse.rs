//! Watches a response's SSE bytes (already de-chunked) for the events the figures need: deltas
//! (time to first delta, gaps between deltas) and the terminal event (completed or failed).
//!
//! It keeps at most [`PREFIX`] bytes of any line: an event is named by its `event:` line, or,
//! failing that, by the `"type"` at the start of its `data:` JSON, and both sit at the start of
//! their lines. Multi-megabyte data lines therefore cost no memory. Comment lines (`:`) and
//! blocks without fields dispatch nothing (WHATWG HTML, "server-sent events", 9.2.6).

/// What an event means to the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A `response.*.delta` carrying answer text or call arguments (not reasoning).
    Delta,
    /// `response.completed`: the turn ended well.
    Completed,
    /// `response.failed`, `response.incomplete` or a top-level `error`.
    Failed,
    Other,
}

/// Bytes kept from the start of each line.
const PREFIX: usize = 96;

/// One SSE stream in progress.
#[derive(Debug, Default)]
pub struct SseWatcher {
    line: Vec<u8>,
    /// The current block had a field line (so its blank line dispatches an event).
    has_fields: bool,
    /// Name from the block's `event:` line, or from its data's `"type"`.
    name: Option<Event>,
}

impl SseWatcher {
    /// Feeds body bytes; `on_event` gets each event whose block ended inside them.
    pub fn feed(&mut self, mut data: &[u8], mut on_event: impl FnMut(Event)) {
        while !data.is_empty() {
            let (part, rest, ended) = match memchr::memchr(b'\n', data) {
                Some(at) => (&data[..at], &data[at + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            let room = PREFIX.saturating_sub(self.line.len());
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            if ended {
                self.end_line(&mut on_event);
            }
            data = rest;
        }
    }

    fn end_line(&mut self, on_event: &mut impl FnMut(Event)) {
        let mut line: &[u8] = &self.line;
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        if line.is_empty() {
            if self.has_fields {
                on_event(self.name.unwrap_or(Event::Other));
            }
            self.has_fields = false;
            self.name = None;
        } else if line[0] != b':' {
            self.has_fields = true;
            if let Some(name) = line.strip_prefix(b"event:") {
                self.name = Some(classify(trim(name)));
            } else if let Some(data) = line.strip_prefix(b"data:") {
                if self.name.is_none() {
                    self.name = json_type(trim(data)).map(classify);
                }
            }
        }
        self.line.clear();
    }
}

/// The event meaning of an SSE event name / Responses API `type`.
pub fn classify(name: &[u8]) -> Event {
    match name {
        b"response.completed" => Event::Completed,
        b"response.failed" | b"response.incomplete" | b"error" => Event::Failed,
        n if n.starts_with(b"response.")
            && n.ends_with(b".delta")
            && !n.starts_with(b"response.reasoning") =>
        {
            Event::Delta
        }
        _ => Event::Other,
    }
}

/// `"type":"X"` as the first member of a JSON object, as every Responses event is written.
pub fn json_type(data: &[u8]) -> Option<&[u8]> {
    let rest = data.strip_prefix(b"{\"type\":\"")?;
    let end = memchr::memchr(b'"', rest)?;
    Some(&rest[..end])
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(wire: &[u8], step: usize) -> Vec<Event> {
        let mut w = SseWatcher::default();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            w.feed(piece, |e| out.push(e));
        }
        out
    }

    #[test]
    fn names_events_at_every_split() {
        let long = "x".repeat(10_000);
        let wire = format!(
            "event: response.created\ndata: {{\"type\":\"response.created\"}}\n\n\
             : keepalive\n\n\
             event: response.output_text.delta\r\ndata: {{\"delta\":\"{long}\"}}\r\n\r\n\
             data: {{\"type\":\"response.reasoning_summary_text.delta\"}}\n\n\
             data: {{\"type\":\"response.function_call_arguments.delta\"}}\n\n\
             event:response.completed\ndata: {{}}\n\n"
        );
        let want = vec![
            Event::Other,
            Event::Delta,
            Event::Other,
            Event::Delta,
            Event::Completed,
        ];
        for step in [1, 2, 3, 7, 64, 4096, wire.len()] {
            assert_eq!(events(wire.as_bytes(), step), want, "step {step}");
        }
    }

    #[test]
    fn failures_and_unterminated_blocks() {
        let wire = b"event: response.failed\ndata: {}\n\ndata: {\"type\":\"error\"}\n\nevent: response.completed\ndata: {}\n";
        assert_eq!(events(wire, 5), vec![Event::Failed, Event::Failed]);
        assert_eq!(classify(b"response.incomplete"), Event::Failed);
        assert_eq!(classify(b"response.refusal.delta"), Event::Delta);
    }
}
