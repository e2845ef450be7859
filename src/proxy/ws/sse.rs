//! The other direction of the translation: an HTTP client's Codex turn whose upstream leg is a
//! WebSocket (`--upstream-transport websocket`). Each upstream message becomes one SSE event
//! (`event: <type>`, `data: <the message>`), those of one upstream read in one write, so an HTTP
//! client cannot tell which transport the upstream spoke.

use std::sync::Arc;

use bytes::Bytes;

use super::event_type;
use super::upstream::{self, ReadEnd, UpstreamSocket};
use crate::http::chunked::{chunk_header, LAST_CHUNK};
use crate::http::error_body::response_failed_event;
use crate::http::response::{write_head, OutFraming};
use crate::http::sse::{EventKind, ScannedEvent};
use crate::keys::KeyView;
use crate::ledger::Outcome;
use crate::proxy::client::ClientConn;
use crate::proxy::events::StreamFacts;
use crate::proxy::responses::{settle_cancelled, settle_turn};
use crate::proxy::{record, Record};
use crate::worker::Worker;

/// One message as an SSE block.
fn block(text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event_type(text).as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Frames `body` for the client: a chunk on HTTP/1.1, as it is on 1.0 (the body ends at close).
fn framed(body: Vec<u8>, chunked: bool) -> Bytes {
    if !chunked || body.is_empty() {
        return Bytes::from(body);
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    chunk_header(body.len(), &mut out);
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

#[allow(clippy::too_many_arguments)]
pub async fn deliver(
    w: &Worker,
    client: &mut ClientConn,
    mut sock: Box<UpstreamSocket>,
    first: Vec<String>,
    account: &Arc<str>,
    key: Option<&KeyView>,
    http11: bool,
    keep_alive: bool,
    mut rec: Record,
) -> bool {
    let timeout = w.shared.settings.client_write_timeout;
    rec.status = 200;
    let framing = if http11 {
        OutFraming::Chunked
    } else {
        OutFraming::Close
    };
    let mut head = Vec::with_capacity(256);
    write_head(
        &mut head,
        200,
        &[
            ("content-type", b"text/event-stream"),
            ("cache-control", b"no-cache"),
        ],
        framing,
        keep_alive,
    );
    if client.write(Bytes::from(head), timeout).await.is_err() {
        rec.outcome = Outcome::Cancelled;
        record(w, rec);
        return false;
    }
    let mut facts = StreamFacts::default();
    let mut next = Some(first);
    let end = loop {
        let texts = match next.take() {
            Some(t) => t,
            None => match upstream::next_texts(w, &mut sock, client).await {
                Ok(t) => t,
                Err(e) => break Some(e),
            },
        };
        let mut body = Vec::new();
        for text in &texts {
            let kind = EventKind::from_type(event_type(text).as_bytes());
            if kind != EventKind::Other {
                facts.absorb(&ScannedEvent {
                    kind,
                    data: text.as_bytes().to_vec(),
                });
            }
            block(text, &mut body);
        }
        let bytes = framed(body, http11);
        rec.response_bytes += bytes.len() as u64;
        rec.ttfb.get_or_insert_with(|| rec.started.elapsed());
        if client.write(bytes, timeout).await.is_err() {
            break Some(ReadEnd::ClientGone);
        }
        if facts.terminal.is_some() {
            break None;
        }
    };
    let mut tail = Vec::new();
    match end {
        None => {}
        Some(ReadEnd::ClientGone) => {
            return settle_cancelled(w, account, key, rec, facts);
        }
        Some(e) => {
            let (code, message) = e.failure();
            rec.error_code = Some(code.to_string());
            tail = response_failed_event(facts.response_id.as_deref(), code, &message);
        }
    }
    rec.outcome = facts.terminal.unwrap_or(Outcome::UpstreamError);
    settle_turn(w, account, key, &mut rec, facts);
    let mut last = framed(tail, http11).to_vec();
    if http11 {
        last.extend_from_slice(LAST_CHUNK);
    }
    rec.response_bytes += last.len() as u64;
    record(w, rec);
    client.write(Bytes::from(last), timeout).await.is_ok() && keep_alive && http11
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_becomes_one_event_named_by_its_type() {
        let mut out = Vec::new();
        block(r#"{"type":"response.created","response":{}}"#, &mut out);
        assert_eq!(
            out,
            b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{}}\n\n"
        );
        assert_eq!(&framed(b"abc".to_vec(), true)[..], b"3\r\nabc\r\n");
        assert_eq!(&framed(b"abc".to_vec(), false)[..], b"abc");
    }
}
