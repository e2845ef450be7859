//! `SseScanner` (`new` and `keeping_all`) on an arbitrary stream, fed whole and fed in pieces.
//!
//! Input layout: byte 0 picks the event cap (high bit set: the default 16 MiB; otherwise
//! `(b & 0x7f) * 16` bytes, so the oversize path is reached), the rest is split as described in
//! `common::split_input`.
//!
//! Invariants checked (beyond "never panics"):
//! - one piece vs pieces, for both constructors: identical events (kind and data, in order), and
//!   the same `events_seen` and `at_boundary` at the end; `has_ready` agrees with `take_ready`;
//! - `oversized_events`: the same whole and in pieces for `keeping_all`; for `new` a split may
//!   count fewer (an uninteresting event whose type is read before it reaches the cap is skipped
//!   uncounted; fed whole, the cap is checked first), never more; the count is advisory, as such
//!   an event is handed out by neither;
//! - `new` never hands out `Other`; no event's data exceeds the cap; no more events than
//!   `events_seen`;
//! - `new`'s events are a subsequence of `keeping_all`'s (which, skipping nothing for its type,
//!   also keeps events `new` dropped before a later `event:` line named them interesting);
//! - both agree with `reference`, a plain line-by-line reading of the framing the module documents
//!   (LF / CRLF / CR line ends, blank line dispatches, `data` lines joined with LF, one optional
//!   space after the colon, the kind from the last `event` name, else from the data's `"type"`,
//!   except that `new` does not buffer data it already skipped as uninteresting, so a later
//!   `event:` line cannot bring such an event back): the same events handed out (an event whose
//!   joined data exceeds the cap is dropped by `new` and handed out by `keeping_all` as `Other`
//!   with no data), the same number dispatched, the same `at_boundary`;
//! - the relay's failure injection works after any prefix: a blank line when not `at_boundary`,
//!   then a `response.failed` event, is scanned as exactly that event;
//! - events over the cap handed out by `take_overflowed` (an oversized terminal still ends the
//!   relay's stream): the same whole and in pieces, never `Other`, a tail within
//!   `OVERFLOW_TAIL_BYTES`, no more of them than `oversized_events`.

#![no_main]

mod common;

use codex_lb::http::sse::{
    sniff_type, EventKind, OverflowedEvent, ScannedEvent, SseScanner, DEFAULT_MAX_EVENT_BYTES,
    OVERFLOW_TAIL_BYTES,
};
use libfuzzer_sys::fuzz_target;

const INJECTED_DATA: &[u8] = br#"{"type":"response.failed","response":{"error":{"code":"x"}}}"#;

struct Run {
    events: Vec<ScannedEvent>,
    overflowed: Vec<OverflowedEvent>,
    seen: u64,
    oversized: u64,
    boundary: bool,
}

fn scan(mut s: SseScanner, pieces: &[&[u8]]) -> (Run, SseScanner) {
    let mut events = Vec::new();
    let mut overflowed = Vec::new();
    for piece in pieces {
        s.feed(piece);
        overflowed.extend(s.take_overflowed());
        let ready = s.has_ready();
        let got = s.take_ready();
        assert_eq!(
            ready,
            !got.is_empty(),
            "has_ready disagrees with take_ready"
        );
        assert!(!s.has_ready());
        events.extend(got);
    }
    let run = Run {
        events,
        overflowed,
        seen: s.events_seen(),
        oversized: s.oversized_events(),
        boundary: s.at_boundary(),
    };
    (run, s)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cap_byte, rest)) = data.split_first() else {
        return;
    };
    let max = if cap_byte & 0x80 != 0 {
        DEFAULT_MAX_EVENT_BYTES
    } else {
        usize::from(cap_byte & 0x7f) * 16
    };
    let (body, pieces) = common::split_input(rest);

    let mut events_by_mode = Vec::new();
    for keep_all in [false, true] {
        let make = || {
            if keep_all {
                SseScanner::keeping_all(max)
            } else {
                SseScanner::new(max)
            }
        };
        let (whole, scanner) = scan(make(), &[body]);
        let (split, _) = scan(make(), &pieces);
        assert_eq!(
            whole.events, split.events,
            "keep_all={keep_all}: split changed the events"
        );
        assert_eq!(
            whole.seen, split.seen,
            "keep_all={keep_all}: events_seen differs"
        );
        // `oversized_events` counts interesting and uninteresting events alike. `keeping_all`
        // captures every event until it reaches the cap, so its count does not depend on the
        // split. `new` stops capturing an event once its type is known to be uninteresting; fed
        // whole, a line that crosses the cap is counted before its type is read, fed in pieces
        // the type is read at 512 bytes and the event is skipped uncounted (regression
        // `oversized-count-depends-on-split`). Such an event is handed out by neither, so the
        // count is advisory: for `new`, a split may only count fewer, never more, and the
        // oversized events that matter (the interesting ones) are compared exactly below, as
        // `overflowed`.
        if keep_all {
            assert_eq!(
                whole.oversized, split.oversized,
                "keep_all={keep_all}: oversized differs"
            );
        } else {
            assert!(
                split.oversized <= whole.oversized,
                "keep_all={keep_all}: a split counted more oversized events ({} > {})",
                split.oversized,
                whole.oversized
            );
        }
        assert_eq!(
            whole.boundary, split.boundary,
            "keep_all={keep_all}: at_boundary differs"
        );

        assert!(
            whole.events.len() as u64 <= whole.seen,
            "more events than dispatched"
        );
        assert!(
            whole.overflowed == split.overflowed,
            "keep_all={keep_all}: split changed the overflowed events"
        );
        assert!(
            whole.overflowed.len() as u64 <= split.oversized,
            "more overflowed events than oversized ones"
        );
        for ev in &whole.overflowed {
            assert_ne!(
                ev.kind,
                EventKind::Other,
                "an uninteresting event overflowed"
            );
            assert!(
                ev.tail.len() <= OVERFLOW_TAIL_BYTES,
                "overflow tail over its bound"
            );
        }

        for ev in &whole.events {
            assert!(ev.data.len() <= max, "event data over the cap");
            if !keep_all {
                assert_ne!(ev.kind, EventKind::Other, "new() handed out an Other event");
            }
        }
        let (expected, dispatched, boundary) = reference(body, max, keep_all);
        assert!(
            whole.events == expected,
            "keep_all={keep_all}: events differ from the reference reading\n scanner:   {:?}\n reference: {:?}",
            show(&whole.events),
            show(&expected)
        );
        assert_eq!(whole.seen, dispatched, "keep_all={keep_all}: events_seen");
        assert_eq!(whole.boundary, boundary, "keep_all={keep_all}: at_boundary");
        events_by_mode.push(whole.events);

        check_injection(scanner, max);
    }
    // `keeping_all` never skips an event for its type, so it hands out every event `new` does,
    // identical, and more: besides `Other` ones, an event `new` dropped for an uninteresting
    // `"type"` in its data that a later `event:` line names interesting (the dropped data is gone
    // for `new`, kept by `keeping_all`). So `new`'s events are a subsequence of `keeping_all`'s.
    let mut all = events_by_mode[1].iter();
    for ev in &events_by_mode[0] {
        assert!(
            all.any(|e| e == ev),
            "new handed out an event keeping_all did not: {:?}\n new:          {:?}\n keeping_all: {:?}",
            show(std::slice::from_ref(ev)),
            show(&events_by_mode[0]),
            show(&events_by_mode[1])
        );
    }
});

/// What the relay does when the upstream breaks after these bytes (src/proxy/relay.rs).
fn check_injection(mut s: SseScanner, max: usize) {
    if !s.at_boundary() {
        s.feed(b"\n\n");
    }
    assert!(s.at_boundary(), "a blank line did not end the event");
    let _ = s.take_ready();
    let mut ev = b"event: response.failed\ndata: ".to_vec();
    ev.extend_from_slice(INJECTED_DATA);
    ev.extend_from_slice(b"\n\n");
    s.feed(&ev);
    assert!(s.at_boundary());
    let got = s.take_ready();
    if INJECTED_DATA.len() <= max {
        assert_eq!(
            got,
            vec![ScannedEvent {
                kind: EventKind::Failed,
                data: INJECTED_DATA.to_vec()
            }],
            "the injected failure event was not scanned as sent"
        );
    }
}

/// Events with their data as text, for failure messages.
fn show(events: &[ScannedEvent]) -> Vec<(EventKind, String)> {
    events
        .iter()
        .map(|e| (e.kind, String::from_utf8_lossy(&e.data).into_owned()))
        .collect()
}

/// The events a plain reading of `body` hands out: (events, blocks dispatched, ends at a boundary).
///
/// The kind of an event is decided by its lines in order: an `event:` line names it; a `data:`
/// line, while no kind is decided, types it from the `"type"` of the data so far (if it has one);
/// otherwise the data is typed at the blank line. `new` drops an event as soon as its kind is
/// uninteresting, and does not buffer the data of a dropped event: once the event has data lines,
/// a later `event:` line cannot bring it back (it stays dropped rather than come out with part of
/// its data). Before any data line, a later `event:` line still decides. `keeping_all` keeps
/// every kind, so for it the last `event:` name (else the data's type) is the kind.
fn reference(body: &[u8], max: usize, keep_all: bool) -> (Vec<ScannedEvent>, u64, bool) {
    const MAX_EVENT_NAME: usize = 128;
    let mut out = Vec::new();
    let mut dispatched = 0u64;
    let mut in_event = false;
    let mut data: Vec<u8> = Vec::new();
    let mut data_lines = 0u32;
    // The kind decided so far (by an `event:` line or the data's type), and whether `new` dropped
    // the event (an uninteresting kind; never set for `keeping_all`).
    let mut kind: Option<EventKind> = None;
    let mut dropped = false;
    let decide = |k: EventKind, kind: &mut Option<EventKind>, dropped: &mut bool| {
        *dropped = k == EventKind::Other && !keep_all;
        *kind = (!*dropped).then_some(k);
    };
    let mut rest = body;
    while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
        let line = &rest[..end];
        let mut next = end + 1;
        if rest[end] == b'\r' && rest.get(next) == Some(&b'\n') {
            next += 1;
        }
        rest = &rest[next..];
        if line.is_empty() {
            if in_event {
                dispatched += 1;
                if data_lines > 0 {
                    let ev = if data.len() > max {
                        keep_all.then(|| ScannedEvent {
                            kind: EventKind::Other,
                            data: Vec::new(),
                        })
                    } else if dropped {
                        None
                    } else {
                        let kind = kind
                            .or_else(|| sniff_type(&data).map(EventKind::from_type))
                            .unwrap_or(EventKind::Other);
                        (keep_all || kind != EventKind::Other).then(|| ScannedEvent {
                            kind,
                            data: data.clone(),
                        })
                    };
                    out.extend(ev);
                }
            }
            in_event = false;
            data.clear();
            data_lines = 0;
            kind = None;
            dropped = false;
            continue;
        }
        in_event = true;
        if line[0] == b':' {
            continue;
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            // Dropped data is gone: the event stays dropped.
            b"event" if dropped && data_lines > 0 => {}
            b"event" => decide(
                EventKind::from_type(&value[..value.len().min(MAX_EVENT_NAME)]),
                &mut kind,
                &mut dropped,
            ),
            b"data" => {
                if data_lines > 0 {
                    data.push(b'\n');
                }
                data.extend_from_slice(value);
                data_lines += 1;
                if kind.is_none() && !dropped {
                    if let Some(t) = sniff_type(&data) {
                        decide(EventKind::from_type(t), &mut kind, &mut dropped);
                    }
                }
            }
            _ => {}
        }
    }
    (out, dispatched, !in_event && rest.is_empty())
}
