//! Delivering a turn in another shape than the upstream's SSE bytes: one final JSON `response`
//! (`/v1/responses` without `stream`) or Chat Completions (`/v1/chat/completions`, streamed as
//! `chat.completion.chunk` frames or as one `chat.completion`). The turn itself (account, key,
//! failover) is the same as the Codex route's; only the last step differs.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use super::client::ClientConn;
use super::events::StreamFacts;
use super::events_in::{EventReader, Read};
use super::responses::{settle_cancelled, settle_turn, Delivery};
use super::{record, Record};
use crate::http::chunked::{chunk_header, LAST_CHUNK};
use crate::http::response::{full_response, write_head, OutFraming};
use crate::http::sse::ScannedEvent;
use crate::keys::KeyView;
use crate::ledger::Outcome;
use crate::openai::chat::{
    completion_from_response, error_from_failed, truncated_error, ChunkStream, Collected,
    ResponseCollector,
};
use crate::upstream::exchange::Exchange;
use crate::worker::Worker;

/// What a Chat Completions client asked for.
pub struct ChatDelivery {
    pub stream: bool,
    pub include_usage: bool,
    /// The model the client named, echoed in every chunk.
    pub model: String,
}

/// The event's type and JSON data (`type` inside the data names it; the `event:` line is not
/// kept by the scanner).
fn parse(ev: &ScannedEvent) -> (String, Value) {
    let data: Value = serde_json::from_slice(&ev.data).unwrap_or(Value::Null);
    let t = data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    (t, data)
}

fn outcome_of(facts: &StreamFacts) -> Outcome {
    facts.terminal.unwrap_or(Outcome::UpstreamError)
}

#[allow(clippy::too_many_arguments)]
pub async fn deliver(
    w: &Worker,
    client: &mut ClientConn,
    mut ex: Exchange,
    account: &Arc<str>,
    key: Option<&KeyView>,
    keep_alive: bool,
    mut rec: Record,
    delivery: Delivery,
) -> bool {
    if matches!(delivery, Delivery::Compact) {
        return compact_reply(w, client, ex, account, key, keep_alive, rec).await;
    }
    let mut reader = EventReader::new(&ex.head);
    let mut facts = StreamFacts::default();
    let chat = match delivery {
        Delivery::Chat(c) if c.stream => {
            return stream_chat(w, client, ex, account, key, keep_alive, rec, c).await
        }
        Delivery::Chat(c) => Some(c),
        _ => None,
    };
    // Collect the whole stream, then answer once.
    let mut collector = ResponseCollector::new();
    let end = loop {
        match reader.next(w, &mut ex.conn, client).await {
            Read::Events(evs) => {
                for ev in &evs {
                    facts.absorb(ev);
                    let (t, data) = parse(ev);
                    collector.on_event(&t, &data);
                }
                rec.ttfb.get_or_insert_with(|| rec.started.elapsed());
            }
            Read::End => break None,
            other => break Some(other),
        }
    };
    if end.is_none() && reader.clean {
        w.pool.borrow_mut().put(ex.conn, Instant::now());
    }
    if matches!(end, Some(Read::ClientGone)) {
        return settle_cancelled(w, account, key, rec, facts);
    }
    let (status, body) = match collector.finish() {
        Collected::Response(response) => match &chat {
            Some(c) => {
                let id = format!("chatcmpl-{}", rec.request_id);
                (
                    200,
                    completion_from_response(&id, crate::accounts::now_unix(), &c.model, &response),
                )
            }
            None => (200, response),
        },
        Collected::Failed(ev) => error_from_failed(&ev),
        Collected::Truncated => {
            if let Some(Read::Failed(code, _)) = &end {
                rec.error_code = Some((*code).to_string());
            }
            truncated_error()
        }
    };
    rec.status = status;
    rec.outcome = if status == 200 {
        outcome_of(&facts)
    } else {
        Outcome::Failed
    };
    if status != 200 {
        rec.error_code = rec.error_code.take().or_else(|| {
            body.pointer("/error/code")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    }
    settle_turn(w, account, key, &mut rec, facts);
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    rec.response_bytes = bytes.len() as u64;
    let reply = full_response(status, "application/json", &[], &bytes, keep_alive);
    record(w, rec);
    super::send(w, client, Bytes::from(reply), keep_alive).await
}

/// Chat Completions as they come: each upstream event becomes zero or more chunk frames.
#[allow(clippy::too_many_arguments)]
async fn stream_chat(
    w: &Worker,
    client: &mut ClientConn,
    mut ex: Exchange,
    account: &Arc<str>,
    key: Option<&KeyView>,
    keep_alive: bool,
    mut rec: Record,
    c: ChatDelivery,
) -> bool {
    let timeout = w.shared.settings.client_write_timeout;
    let mut head = Vec::with_capacity(256);
    write_head(
        &mut head,
        200,
        &[
            ("content-type", b"text/event-stream"),
            ("cache-control", b"no-cache"),
        ],
        OutFraming::Chunked,
        keep_alive,
    );
    rec.status = 200;
    if client.write(Bytes::from(head), timeout).await.is_err() {
        rec.outcome = Outcome::Cancelled;
        record(w, rec);
        return false;
    }
    let frame = |frames: Vec<String>| -> Option<Bytes> {
        let body: String = frames.concat();
        if body.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        chunk_header(body.len(), &mut out);
        out.extend_from_slice(body.as_bytes());
        out.extend_from_slice(b"\r\n");
        Some(Bytes::from(out))
    };
    let id = format!("chatcmpl-{}", rec.request_id);
    let mut chunks = ChunkStream::new(id, crate::accounts::now_unix(), c.model, c.include_usage);
    let mut reader = EventReader::new(&ex.head);
    let mut facts = StreamFacts::default();
    let mut gone = false;
    let end = loop {
        match reader.next(w, &mut ex.conn, client).await {
            Read::Events(evs) => {
                let mut frames = Vec::new();
                for ev in &evs {
                    facts.absorb(ev);
                    let (t, data) = parse(ev);
                    frames.extend(chunks.on_event(&t, &data));
                }
                if let Some(b) = frame(frames) {
                    rec.response_bytes += b.len() as u64;
                    rec.ttfb.get_or_insert_with(|| rec.started.elapsed());
                    if client.write(b, timeout).await.is_err() {
                        gone = true;
                        break None;
                    }
                }
                if chunks.is_terminal() {
                    break None;
                }
            }
            Read::End => break None,
            other => break Some(other),
        }
    };
    if gone || matches!(end, Some(Read::ClientGone)) {
        return settle_cancelled(w, account, key, rec, facts);
    }
    if let Some(Read::Failed(code, _)) = &end {
        rec.error_code = Some((*code).to_string());
    }
    rec.outcome = outcome_of(&facts);
    if facts.terminal.is_none() {
        rec.error_code
            .get_or_insert_with(|| "upstream_stream_truncated".into());
    }
    settle_turn(w, account, key, &mut rec, facts);
    let mut tail = frame(chunks.finish())
        .map(|b| b.to_vec())
        .unwrap_or_default();
    tail.extend_from_slice(LAST_CHUNK);
    rec.response_bytes += tail.len() as u64;
    // Recorded before the end reaches the client, like the Codex route.
    record(w, rec);
    let ok = client.write(Bytes::from(tail), timeout).await.is_ok();
    drop(ex);
    ok && keep_alive && end.is_none()
}

/// Largest compaction reply read (the replacement history, encrypted).
const MAX_COMPACT_BYTES: usize = 64 * 1024 * 1024;

/// Remote compaction: one JSON object from the upstream, relayed as it is, its usage recorded.
async fn compact_reply(
    w: &Worker,
    client: &mut ClientConn,
    mut ex: Exchange,
    account: &Arc<str>,
    key: Option<&KeyView>,
    keep_alive: bool,
    mut rec: Record,
) -> bool {
    let read = crate::upstream::exchange::read_body(
        &mut ex.conn,
        &ex.head,
        MAX_COMPACT_BYTES,
        w.shared.settings.upstream_idle_timeout,
    )
    .await;
    let (status, body) = match read {
        Ok((body, reusable)) => {
            if reusable {
                w.pool.borrow_mut().put(ex.conn, Instant::now());
            }
            (ex.head.status, body)
        }
        Err(e) => {
            let err = crate::http::error_body::ApiError::new(
                502,
                "server_error",
                e.code(),
                format!("upstream compaction reply failed: {e}"),
            );
            rec.error_code = err.code.clone();
            (502, Bytes::from(err.to_json()))
        }
    };
    rec.ttfb = Some(rec.started.elapsed());
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let facts = StreamFacts {
        usage: parsed
            .get("usage")
            .and_then(|u| serde_json::from_value(u.clone()).ok()),
        model: parsed
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string),
        ..Default::default()
    };
    rec.status = status;
    rec.outcome = if status == 200 && parsed.get("output").is_some() {
        Outcome::Completed
    } else {
        Outcome::Failed
    };
    rec.response_bytes = body.len() as u64;
    settle_turn(w, account, key, &mut rec, facts);
    let reply = full_response(status, "application/json", &[], &body, keep_alive);
    record(w, rec);
    super::send(w, client, Bytes::from(reply), keep_alive).await
}
