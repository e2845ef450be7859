//! The Codex WebSocket transport on the client side (PROTOCOL.md §6): `GET
//! /backend-api/codex/responses` with `Upgrade: websocket`, then one `response.create` message
//! per turn on the same socket.
//!
//! Each turn is the HTTP turn (`responses::serve_turn`): the key is checked again, the account
//! chosen with the same stickiness (`prompt_cache_key` or the session header; a
//! `previous_response_id` always goes to its owner), failover happens before the first event
//! reaches the client, and usage is recorded per turn. Only the delivery differs: every upstream
//! event's `data` goes out as one text message, and errors as wrapped error frames (`frames`).
//! The upstream side of a turn is HTTP/SSE.
//!
//! Bounded: one turn at a time per socket, a message-size cap, an idle limit between turns, an
//! age limit after which the next turn is told to reconnect, and a 1012 close at shutdown once
//! the turn in flight (if any) has ended.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::client::ClientConn;
use super::events::StreamFacts;
use super::events_in::{EventReader, Read};
use super::responses::{serve_turn, settle_cancelled, settle_turn, Delivery};
use super::{auth, record, Record};
use crate::config::UpstreamTransport;
use crate::http::error_body::ApiError;
use crate::http::request::RequestHead;
use crate::http::sse::{EventKind, ScannedEvent};
use crate::http::ws::{
    handshake::accept_upgrade, CloseCode, CloseFrame, DeflatePolicy, Message, MessageReader,
    MessageWriter, Role, WsLimits,
};
use crate::keys::KeyView;
use crate::ledger::Outcome;
use crate::metrics::inc;
use crate::upstream::exchange::Exchange;
use crate::worker::Worker;

pub mod frames;
pub mod sse;
pub mod upstream;

/// How often a waiting socket looks at the shutdown flag and its idle time.
const POLL: Duration = Duration::from_secs(1);

/// The writing half of one client socket, shared by its session loop and the turn in flight,
/// and the session's upstream socket between turns.
pub struct WsOut {
    writer: RefCell<MessageWriter>,
    upstream: RefCell<Option<Box<upstream::UpstreamSocket>>>,
    /// The upstream refused a WebSocket (426): this session's turns go over HTTP/SSE.
    http_upstream: Cell<bool>,
}

impl WsOut {
    /// For one HTTP client's turn over an upstream WebSocket: nothing is framed toward the
    /// client, and the upstream socket is not kept.
    pub fn for_http_turn() -> WsOut {
        Self::new(MessageWriter::new(Role::Server, None))
    }

    fn new(writer: MessageWriter) -> WsOut {
        WsOut {
            writer: RefCell::new(writer),
            upstream: RefCell::new(None),
            http_upstream: Cell::new(false),
        }
    }

    /// Whether this session's next turn tries the upstream over WebSocket.
    pub fn upstream_ws(&self, w: &Worker) -> bool {
        !self.http_upstream.get() && w.shared.settings.upstream_transport != UpstreamTransport::Http
    }

    /// The upstream does not offer WebSocket: HTTP/SSE from now on (unless the owner asked for
    /// WebSocket only, in which case the refusal is the client's answer).
    pub fn use_http_upstream(&self) {
        self.http_upstream.set(true);
        self.upstream.borrow_mut().take();
    }

    pub fn take_upstream(&self) -> Option<Box<upstream::UpstreamSocket>> {
        self.upstream.borrow_mut().take()
    }

    pub fn put_upstream(&self, s: Box<upstream::UpstreamSocket>) {
        *self.upstream.borrow_mut() = Some(s);
    }

    /// One text message as frame bytes; `None` when it cannot be framed (compression failed).
    fn text(&self, text: String) -> Option<Bytes> {
        let f = self.writer.borrow_mut().text(text).ok()?;
        Some(Bytes::from(f.to_vec()))
    }

    fn pong(&self, payload: &[u8]) -> Option<Bytes> {
        let f = self.writer.borrow_mut().pong(payload).ok()?;
        Some(Bytes::from(f.to_vec()))
    }

    fn close(&self, code: CloseCode, reason: &str) -> Bytes {
        let frame = CloseFrame::new(code, reason);
        let f = self.writer.borrow_mut().close(Some(&frame));
        Bytes::from(f.map(|f| f.to_vec()).unwrap_or_default())
    }
}

async fn send(w: &Worker, client: &mut ClientConn, bytes: Option<Bytes>) -> bool {
    match bytes {
        Some(b) => client
            .write(b, w.shared.settings.client_write_timeout)
            .await
            .is_ok(),
        None => false,
    }
}

async fn close(w: &Worker, client: &mut ClientConn, out: &WsOut, code: CloseCode, why: &str) {
    let _ = send(w, client, Some(out.close(code, why))).await;
}

/// Answers a refused turn with a wrapped error frame and records it. Returns whether the socket
/// is still usable.
pub async fn refuse_turn(
    w: &Worker,
    client: &mut ClientConn,
    out: &WsOut,
    err: ApiError,
    mut rec: Record,
) -> bool {
    let text = frames::gateway_error(&err);
    rec.status = err.status;
    rec.outcome = if err.status == 429 {
        Outcome::Failed
    } else if err.status >= 500 {
        Outcome::UpstreamError
    } else {
        inc(&w.metrics.client_errors);
        Outcome::Rejected
    };
    rec.error_code = err.code.clone();
    rec.response_bytes = text.len() as u64;
    record(w, rec);
    send(w, client, out.text(text)).await
}

/// Relays an upstream error reply as a wrapped error frame and records it.
pub async fn relay_error(
    w: &Worker,
    client: &mut ClientConn,
    out: &WsOut,
    head: &crate::http::response::UpstreamHead,
    body: &[u8],
    hide_quota: bool,
    mut rec: Record,
) -> bool {
    let text = frames::upstream_error(head, body, hide_quota);
    rec.status = head.status;
    rec.outcome = Outcome::Failed;
    rec.response_bytes = text.len() as u64;
    record(w, rec);
    send(w, client, out.text(text)).await
}

/// One WebSocket session, from the upgrade request to the close.
pub async fn serve(w: &Rc<Worker>, client: &mut ClientConn, head: RequestHead, mut rec: Record) {
    let s = &w.shared.settings;
    rec.transport = "websocket";
    // Compression when the client offers it; our compressor restarts each message, so an idle
    // socket keeps no compression window.
    let policy = DeflatePolicy {
        enabled: true,
        server_no_context_takeover: true,
        client_no_context_takeover: false,
    };
    let hs = match accept_upgrade(head.method(), head.headers(), &policy) {
        Ok(hs) => hs,
        Err(e) => {
            let err = ApiError::new(
                e.status(),
                "invalid_request_error",
                "websocket_upgrade_invalid",
                e.to_string(),
            );
            super::respond_error(w, client, err, false, rec).await;
            return;
        }
    };
    // The key was checked before the upgrade (a bad one is an HTTP status the CLI shows at
    // once); each turn checks it again.
    drop(rec);
    let mut response = Vec::with_capacity(256);
    hs.write_response(&[], &mut response);
    if client
        .write(Bytes::from(response), s.client_write_timeout)
        .await
        .is_err()
    {
        return;
    }
    inc(&w.metrics.websocket_upgrades);
    let limits = WsLimits {
        max_frame_bytes: s.max_body_bytes,
        max_message_bytes: s.max_body_bytes,
    };
    let mut reader = MessageReader::new(Role::Server, hs.deflate(), limits);
    let out = Rc::new(WsOut::new(MessageWriter::new(Role::Server, hs.deflate())));
    let opened = Instant::now();
    let mut last_seen = Instant::now();
    loop {
        // Everything already received first: a turn's frames may arrive with the upgrade.
        match reader.feed(client.buffered()) {
            Ok(r) => {
                client.consume(r.consumed);
                if let Some(msg) = r.message {
                    last_seen = Instant::now();
                    if !on_message(w, client, &head, &out, msg, opened).await {
                        return;
                    }
                    continue;
                }
            }
            Err(e) => {
                inc(&w.metrics.client_errors);
                tracing::debug!(peer = %client.peer, error = %e, "websocket protocol error");
                close(w, client, &out, e.close_code(), &e.to_string()).await;
                return;
            }
        }
        if w.shared.shutdown.is_requested() {
            // Codex reconnects to the restarted gateway on 1012.
            close(
                w,
                client,
                &out,
                CloseCode::SERVICE_RESTART,
                "server restarting",
            )
            .await;
            return;
        }
        // One read until the idle deadline, watched for shutdown meanwhile. The read is never
        // cut short while the session goes on: a cancelled read would lose what it received.
        let got = {
            let read = client.read_more(last_seen + s.websocket_idle_timeout);
            let mut read = std::pin::pin!(read);
            let mut ticker = monoio::time::interval(POLL);
            loop {
                monoio::select! {
                    r = &mut read => break Some(r),
                    _ = ticker.tick() => {
                        if w.shared.shutdown.is_requested() {
                            break None;
                        }
                    }
                }
            }
        };
        match got {
            // Shutdown: the loop's next round sends the 1012.
            None => {}
            Some(Ok(0) | Err(false)) => return,
            Some(Err(true)) => {
                close(w, client, &out, CloseCode::NORMAL, "idle").await;
                return;
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Handles one client message; false when the session is over.
async fn on_message(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    head: &RequestHead,
    out: &Rc<WsOut>,
    msg: Message,
    opened: Instant,
) -> bool {
    match msg {
        Message::Text(text) => on_text(w, client, head, out, text, opened).await,
        Message::Ping(p) => send(w, client, out.pong(&p)).await,
        Message::Pong(_) => true,
        Message::Binary(_) => {
            close(
                w,
                client,
                out,
                CloseCode::UNSUPPORTED_DATA,
                "binary messages are not part of this protocol",
            )
            .await;
            false
        }
        Message::Close(frame) => {
            // Echo the peer's code (RFC 6455 §5.5.1), then the socket is done.
            let code = frame
                .as_ref()
                .map(|f| f.code)
                .filter(|c| c.is_valid_on_wire())
                .unwrap_or(CloseCode::NORMAL);
            close(w, client, out, code, "").await;
            false
        }
    }
}

async fn on_text(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    head: &RequestHead,
    out: &Rc<WsOut>,
    text: String,
    opened: Instant,
) -> bool {
    let s = &w.shared.settings;
    let mut rec = Record::new(w, head, "responses", client.origin.ip);
    rec.transport = "websocket";
    rec.request_bytes = text.len() as u64;
    let mut v: Value = match serde_json::from_str(&text) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            let err = ApiError::invalid_request(
                "invalid_json",
                "each message must be one JSON object with a \"type\"",
            );
            return refuse_turn(w, client, out, err, rec).await;
        }
    };
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match kind.as_str() {
        "response.create" => {}
        // The client's acknowledgement of a completed response: nothing to answer.
        "response.processed" => return true,
        other => {
            let err = ApiError::invalid_request(
                "unsupported_message_type",
                format!(
                    "{other:?} is not supported here: send response.create (older Codex \
                     versions' response.append needs an update)"
                ),
            );
            return refuse_turn(w, client, out, err, rec).await;
        }
    }
    if opened.elapsed() >= s.websocket_max_age {
        let minutes = s.websocket_max_age.as_secs() / 60;
        let _ = send(w, client, out.text(frames::connection_limit(minutes))).await;
        close(w, client, out, CloseCode::NORMAL, "connection age limit").await;
        return false;
    }
    // Every turn is authenticated again: a key revoked mid-session stops at its next turn.
    let key = match auth::authenticate(w, head, client.peer) {
        Ok(k) => k,
        Err(r) => {
            rec.key_id = r.key_id.map(|k| k.to_string());
            return refuse_turn(w, client, out, r.err, rec).await;
        }
    };
    rec.key_id = key.as_ref().map(|k| k.id.to_string());
    if let Some(obj) = v.as_object_mut() {
        obj.remove("type");
    }
    let body = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
    serve_turn(
        w,
        client,
        head.clone(),
        key,
        rec,
        body,
        Delivery::WebSocket(Rc::clone(out)),
    )
    .await
}

/// Delivers a turn the upstream accepted: each event's `data` as one text message, untouched.
pub async fn deliver(
    w: &Worker,
    client: &mut ClientConn,
    mut ex: Exchange,
    account: &Arc<str>,
    key: Option<&KeyView>,
    out: &WsOut,
    mut rec: Record,
) -> bool {
    rec.status = ex.head.status;
    let mut reader = EventReader::new(&ex.head);
    let mut facts = StreamFacts::default();
    let mut gone = false;
    let end = loop {
        match reader.next(w, &mut ex.conn, client).await {
            Read::Events(evs) => {
                // The events of one upstream read go out in one write.
                let mut batch = Vec::new();
                for ev in &evs {
                    facts.absorb(ev);
                    let Ok(text) = std::str::from_utf8(&ev.data) else {
                        continue;
                    };
                    let Some(frame) = out.text(text.to_string()) else {
                        gone = true;
                        break;
                    };
                    batch.extend_from_slice(&frame);
                }
                if !batch.is_empty() {
                    rec.response_bytes += batch.len() as u64;
                    rec.ttfb.get_or_insert_with(|| rec.started.elapsed());
                    gone |= client
                        .write(Bytes::from(batch), w.shared.settings.client_write_timeout)
                        .await
                        .is_err();
                }
                if gone {
                    break None;
                }
                if facts.terminal.is_some() {
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
    if end.is_none() && reader.clean && facts.terminal.is_some() {
        w.pool.borrow_mut().put(ex.conn, Instant::now());
    }
    let mut alive = true;
    if facts.terminal.is_none() {
        // The upstream stopped before a terminal event: the client gets one, as over SSE.
        let (code, message) = match &end {
            Some(Read::Failed(code, msg)) => (*code, msg.clone()),
            Some(Read::ShuttingDown) => (
                "server_shutting_down",
                "the gateway is restarting".to_string(),
            ),
            _ => (
                "upstream_stream_truncated",
                "the upstream ended the stream before the response completed".to_string(),
            ),
        };
        rec.error_code = Some(code.to_string());
        let failed = frames::stream_failed(facts.response_id.as_deref(), code, &message);
        alive = send(w, client, out.text(failed)).await;
    }
    rec.outcome = facts.terminal.unwrap_or(Outcome::UpstreamError);
    settle_turn(w, account, key, &mut rec, facts);
    record(w, rec);
    alive
}

/// Delivers a turn the upstream WebSocket took: its messages, from `first` to the terminal
/// event, go to the client as they came, those of one upstream read in one write. The upstream
/// socket is kept for the next turn when the turn ended cleanly.
#[allow(clippy::too_many_arguments)]
pub async fn deliver_upstream(
    w: &Worker,
    client: &mut ClientConn,
    out: &WsOut,
    mut sock: Box<upstream::UpstreamSocket>,
    first: Vec<String>,
    account: &Arc<str>,
    key: Option<&KeyView>,
    mut rec: Record,
) -> bool {
    rec.status = 200;
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
        let mut batch = Vec::new();
        let mut unframed = false;
        for text in texts {
            let kind = EventKind::from_type(event_type(&text).as_bytes());
            if matches!(
                kind,
                EventKind::Completed
                    | EventKind::Failed
                    | EventKind::Incomplete
                    | EventKind::RateLimits
            ) {
                // Only these carry what the record needs; the deltas are not parsed twice.
                facts.absorb(&ScannedEvent {
                    kind,
                    data: text.as_bytes().to_vec(),
                });
            }
            let Some(frame) = out.text(text) else {
                unframed = true;
                break;
            };
            batch.extend_from_slice(&frame);
        }
        rec.response_bytes += batch.len() as u64;
        rec.ttfb.get_or_insert_with(|| rec.started.elapsed());
        if unframed
            || client
                .write(Bytes::from(batch), w.shared.settings.client_write_timeout)
                .await
                .is_err()
        {
            break Some(upstream::ReadEnd::ClientGone);
        }
        if facts.terminal.is_some() {
            break None;
        }
    };
    let alive = match end {
        None => {
            out.put_upstream(sock);
            true
        }
        Some(upstream::ReadEnd::ClientGone) => {
            return settle_cancelled(w, account, key, rec, facts);
        }
        Some(e) => {
            let (code, message) = e.failure();
            rec.error_code = Some(code.to_string());
            let failed = frames::stream_failed(facts.response_id.as_deref(), code, &message);
            send(w, client, out.text(failed)).await
        }
    };
    rec.outcome = facts.terminal.unwrap_or(Outcome::UpstreamError);
    settle_turn(w, account, key, &mut rec, facts);
    record(w, rec);
    alive
}

/// The `type` of an event message (`{"type":"…",…}`), read without parsing the rest.
pub(crate) fn event_type(text: &str) -> &str {
    let Some(i) = text.find("\"type\"") else {
        return "";
    };
    let rest = text[i + 6..].trim_start();
    let Some(rest) = rest.strip_prefix(':') else {
        return "";
    };
    let rest = rest.trim_start();
    let Some(rest) = rest.strip_prefix('"') else {
        return "";
    };
    rest.split('"').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::event_type;

    #[test]
    fn event_type_reads_the_first_type_key() {
        assert_eq!(
            event_type(r#"{"type":"response.completed","response":{"type":"x"}}"#),
            "response.completed"
        );
        assert_eq!(
            event_type(r#"{ "type" : "codex.rate_limits" }"#),
            "codex.rate_limits"
        );
        assert_eq!(event_type(r#"{"a":1}"#), "");
    }
}
