//! The upstream leg of a WebSocket client's turns over a WebSocket of its own (PROTOCOL.md §6):
//! one upstream socket per client socket, opened on the account a turn goes to and kept for the
//! next turns while they go to the same account with the same token.
//!
//! A turn is refused "before any event" when the upgrade is answered with an HTTP error, or the
//! first message is a wrapped error frame: both come back as an HTTP-shaped reply so the turn
//! logic classifies and fails over exactly as for HTTP. A 426 means the upstream does not offer
//! WebSocket: the session goes on over HTTP/SSE. Compression is not offered upstream, so the
//! upstream's text frames are relayed without inflating them.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::WsOut;
use crate::accounts::AccountView;
use crate::config::UpstreamTransport;
use crate::control::token_hash;
use crate::http::request::RequestHead;
use crate::http::response::{parse_upstream_head, UpstreamHead};
use crate::http::ws::{ClientHandshake, Message, MessageReader, MessageWriter, Role, WsLimits};
use crate::metrics::inc;
use crate::proxy::client::ClientConn;
use crate::proxy::events_in::{watched, Stop};
use crate::upstream::exchange;
use crate::upstream::io::UpstreamConn;
use crate::upstream::UpstreamError;
use crate::worker::Worker;

/// The beta token the upstream wants on the upgrade (added when the client did not send it).
const BETA: &str = "responses_websockets=2026-02-06";
/// Largest error body read from a refused upgrade.
const MAX_REFUSAL_BODY: usize = 1 << 20;

/// An open upstream socket and the account it speaks for.
pub struct UpstreamSocket {
    account: Arc<str>,
    /// `token_hash` of the `Authorization` it was opened with: a refreshed token needs a new one.
    auth: u64,
    conn: UpstreamConn,
    pending: BytesMut,
    /// How the stream ended, when that came in the same read as messages still to deliver.
    deferred: Option<(&'static str, String)>,
    reader: MessageReader,
    writer: MessageWriter,
}

/// How an attempt to start a turn over the upstream socket went.
pub enum Attempt {
    /// The upstream took the turn; its first messages are to be delivered with the rest.
    Started(Box<UpstreamSocket>, Vec<String>),
    /// Refused before any event, as an HTTP-shaped reply to classify (the upgrade's own status,
    /// or an error frame's `status` and `headers`).
    Refused { head: UpstreamHead, body: Bytes },
    /// The upstream does not offer WebSocket (426): use HTTP/SSE.
    NotOffered,
}

/// Why reading the upstream socket stopped.
pub enum ReadEnd {
    ClientGone,
    ShuttingDown,
    /// A code for the log and the client, and what happened.
    Failed(&'static str, String),
}

impl ReadEnd {
    /// The code and words of the `response.failed` a broken turn ends with (the client being
    /// gone has no such event; it is named anyway for the record).
    pub fn failure(self) -> (&'static str, String) {
        match self {
            ReadEnd::Failed(code, msg) => (code, msg),
            ReadEnd::ShuttingDown => (
                "server_shutting_down",
                "the gateway is restarting".to_string(),
            ),
            ReadEnd::ClientGone => ("client_disconnected", "the client went away".to_string()),
        }
    }
}

/// The upgrade request for `account`, carrying the client's forwarded headers.
fn upgrade_request(
    w: &Worker,
    client_head: &RequestHead,
    account: &AccountView,
) -> (ClientHandshake, Bytes) {
    let up = &w.shared.settings.upstream;
    let hs = ClientHandshake::new(false);
    let mut beta: Vec<&[u8]> = Vec::new();
    let mut extra: Vec<(&str, &[u8])> = Vec::new();
    for (n, v) in client_head.headers() {
        if crate::http::name_eq(n, "openai-beta") {
            beta.push(v);
        } else if super::super::responses::forward_request_header(n) {
            extra.push((n, v));
        }
    }
    let mut beta_value = beta.join(&b", "[..]);
    if !beta_value
        .windows(b"responses_websockets=".len())
        .any(|w| w == b"responses_websockets=")
    {
        if !beta_value.is_empty() {
            beta_value.extend_from_slice(b", ");
        }
        beta_value.extend_from_slice(BETA.as_bytes());
    }
    extra.push(("openai-beta", &beta_value));
    extra.push(("authorization", &account.authorization));
    if let Some(h) = &account.account_header {
        extra.push(("chatgpt-account-id", h));
    }
    let path = format!("{}/codex/responses", up.base_path);
    let mut out = Vec::with_capacity(1024);
    hs.write_request(&up.authority, &path, &extra, &mut out);
    (hs, Bytes::from(out))
}

enum Opened {
    Socket(Box<UpstreamSocket>),
    Refused(UpstreamHead, Bytes),
}

async fn open(
    w: &Worker,
    client_head: &RequestHead,
    account: &AccountView,
) -> Result<Opened, UpstreamError> {
    let s = &w.shared.settings;
    inc(&w.metrics.upstream_connects);
    let mut conn = UpstreamConn::connect(&w.shared, s.upstream_connect_timeout).await?;
    let (hs, request) = upgrade_request(w, client_head, account);
    conn.write_all(request).await.map_err(UpstreamError::Io)?;
    let head = exchange::read_head(&mut conn, s.upstream_idle_timeout).await?;
    if head.status != 101 {
        let (body, _) =
            exchange::read_body(&mut conn, &head, MAX_REFUSAL_BODY, s.upstream_idle_timeout)
                .await
                .unwrap_or_default();
        return Ok(Opened::Refused(head, body));
    }
    let deflate = hs
        .verify_response(head.status, head.headers())
        .map_err(|e| UpstreamError::WebSocket(format!("bad upgrade answer: {e}")))?;
    let limits = WsLimits {
        max_frame_bytes: s.max_body_bytes.max(16 << 20),
        max_message_bytes: s.max_body_bytes.max(16 << 20),
    };
    let pending = BytesMut::from(&conn.buf[..]);
    conn.buf.clear();
    Ok(Opened::Socket(Box::new(UpstreamSocket {
        account: Arc::clone(&account.id),
        auth: token_hash(&account.authorization),
        conn,
        pending,
        deferred: None,
        reader: MessageReader::new(Role::Client, deflate, limits),
        writer: MessageWriter::new(Role::Client, deflate),
    })))
}

/// The turn's body as a `response.create` message: the prepared body with the type in front.
fn create_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.trim_start().strip_prefix('{') {
        Some(rest) if rest.trim_start().starts_with('}') => r#"{"type":"response.create"}"#.into(),
        Some(rest) => format!(r#"{{"type":"response.create",{rest}"#),
        None => text.into_owned(),
    }
}

/// A wrapped error frame (`{"type":"error","status":…}`) as the HTTP reply it stands for.
fn refusal_of(text: &str) -> Option<(UpstreamHead, Bytes, Option<String>)> {
    let v: Value = serde_json::from_str(text).ok()?;
    if v.get("type").and_then(Value::as_str) != Some("error") {
        return None;
    }
    let status = v
        .get("status")
        .or_else(|| v.get("status_code"))
        .and_then(Value::as_u64)?;
    let code = v
        .pointer("/error/code")
        .and_then(Value::as_str)
        .map(str::to_string);
    let body = serde_json::to_vec(&serde_json::json!({ "error": v.get("error") })).ok()?;
    let mut head = format!("HTTP/1.1 {status} Refused\r\ncontent-type: application/json\r\n");
    if let Some(h) = v.get("headers").and_then(Value::as_object) {
        for (name, value) in h {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !value.contains(['\r', '\n'])
            {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let (parsed, _) = parse_upstream_head(head.as_bytes(), false).ok()??;
    Some((parsed, Bytes::from(body), code))
}

/// Starts a turn on `account`'s upstream socket (the session's, or a new one).
pub async fn attempt(
    w: &Worker,
    client: &ClientConn,
    out: &WsOut,
    client_head: &RequestHead,
    account: &AccountView,
    body: &Bytes,
) -> Result<Attempt, UpstreamError> {
    let auth = token_hash(&account.authorization);
    let mut sock = out
        .take_upstream()
        .filter(|s| s.account == account.id && s.auth == auth);
    let message = create_message(body);
    for first_try in [true, false] {
        let reused = sock.is_some();
        let mut s = match sock.take() {
            Some(s) => {
                inc(&w.metrics.upstream_reused);
                s
            }
            None => match open(w, client_head, account).await? {
                Opened::Socket(s) => s,
                Opened::Refused(head, _)
                    if head.status == 426
                        && w.shared.settings.upstream_transport != UpstreamTransport::Websocket =>
                {
                    return Ok(Attempt::NotOffered)
                }
                Opened::Refused(head, body) => return Ok(Attempt::Refused { head, body }),
            },
        };
        let frame = s
            .writer
            .text(message.clone())
            .map_err(|e| UpstreamError::WebSocket(e.to_string()))?;
        if let Err(e) = s.conn.write_all(Bytes::from(frame.to_vec())).await {
            if reused && first_try {
                continue;
            }
            return Err(UpstreamError::Io(e));
        }
        match next_texts(w, &mut s, client).await {
            Ok(texts) => {
                if let Some((head, body, code)) = texts.first().and_then(|t| refusal_of(t)) {
                    // The upstream's own age limit: a fresh socket, once.
                    if code.as_deref() == Some("websocket_connection_limit_reached") && first_try {
                        continue;
                    }
                    out.put_upstream(s);
                    return Ok(Attempt::Refused { head, body });
                }
                return Ok(Attempt::Started(s, texts));
            }
            // An idle socket the upstream closed meanwhile: a fresh one, once.
            Err(ReadEnd::Failed(..)) if reused && first_try => continue,
            Err(ReadEnd::Failed(code, msg)) => {
                return Err(UpstreamError::WebSocket(format!("{code}: {msg}")));
            }
            Err(ReadEnd::ClientGone) | Err(ReadEnd::ShuttingDown) => {
                return Err(UpstreamError::Closed);
            }
        }
    }
    Err(UpstreamError::Closed)
}

/// The text messages the upstream has sent: every one already received, or else the next read's
/// worth (relayed to the client in one write). Pings are answered on the way; a close or a
/// protocol error after some messages is reported on the next call, after those are delivered.
pub async fn next_texts(
    w: &Worker,
    s: &mut UpstreamSocket,
    client: &ClientConn,
) -> Result<Vec<String>, ReadEnd> {
    if let Some((code, msg)) = s.deferred.take() {
        return Err(ReadEnd::Failed(code, msg));
    }
    let mut last_byte = Instant::now();
    let mut texts = Vec::new();
    loop {
        loop {
            let end = match s.reader.feed(&s.pending) {
                Err(e) => Some((
                    "upstream_protocol_error",
                    format!("bad upstream frame: {e}"),
                )),
                Ok(r) => {
                    let _ = s.pending.split_to(r.consumed);
                    match r.message {
                        Some(Message::Text(t)) => {
                            texts.push(t);
                            None
                        }
                        Some(Message::Ping(p)) => {
                            if let Ok(f) = s.writer.pong(&p) {
                                let _ = s.conn.write_all(Bytes::from(f.to_vec())).await;
                            }
                            None
                        }
                        Some(Message::Pong(_)) => None,
                        Some(Message::Binary(_)) => Some((
                            "upstream_protocol_error",
                            "the upstream sent a binary message".to_string(),
                        )),
                        Some(Message::Close(f)) => Some((
                            "upstream_closed",
                            format!(
                                "websocket closed by the upstream ({}) before response.completed",
                                f.map_or(1005, |f| f.code.0)
                            ),
                        )),
                        None if r.consumed == 0 => break,
                        None => None,
                    }
                }
            };
            if let Some((code, msg)) = end {
                if texts.is_empty() {
                    return Err(ReadEnd::Failed(code, msg));
                }
                s.deferred = Some((code, msg));
                return Ok(texts);
            }
        }
        if !texts.is_empty() {
            return Ok(texts);
        }
        let got = watched(w, client, last_byte, s.conn.next_bytes())
            .await
            .map_err(|stop| match stop {
                Stop::ClientGone => ReadEnd::ClientGone,
                Stop::ShuttingDown => ReadEnd::ShuttingDown,
                Stop::IdleTimeout => ReadEnd::Failed(
                    "upstream_timeout",
                    "upstream sent nothing within the idle timeout".into(),
                ),
            });
        match got? {
            Ok(b) if b.is_empty() => {
                return Err(ReadEnd::Failed(
                    "upstream_connection_error",
                    "the upstream dropped the websocket before response.completed".into(),
                ))
            }
            Ok(b) => {
                last_byte = Instant::now();
                s.pending.extend_from_slice(&b);
            }
            Err(e) => {
                return Err(ReadEnd::Failed(
                    "upstream_connection_error",
                    format!("upstream read failed: {e}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_message_puts_the_type_first() {
        assert_eq!(
            create_message(br#"{"model":"m","stream":true}"#),
            r#"{"type":"response.create","model":"m","stream":true}"#
        );
        assert_eq!(create_message(b"{}"), r#"{"type":"response.create"}"#);
        let v: Value = serde_json::from_str(&create_message(br#" { "a" : 1 }"#)).unwrap();
        assert_eq!(v["type"], "response.create");
        assert_eq!(v["a"], 1);
    }

    #[test]
    fn error_frames_become_replies_with_their_status_and_headers() {
        let (head, body, code) = refusal_of(
            r#"{"type":"error","status":429,"error":{"type":"usage_limit_reached","code":"usage_limit_reached","resets_at":9},"headers":{"x-codex-primary-used-percent":"100.0","x-evil\r\n":"no"}}"#,
        )
        .unwrap();
        assert_eq!(head.status, 429);
        assert_eq!(code.as_deref(), Some("usage_limit_reached"));
        assert_eq!(
            head.header_str("x-codex-primary-used-percent"),
            Some("100.0")
        );
        assert!(head.headers().all(|(n, _)| !n.contains("evil")));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["resets_at"], 9);
        // Not an error frame, or one without a status: not a refusal.
        assert!(refusal_of(r#"{"type":"response.created"}"#).is_none());
        assert!(refusal_of(r#"{"type":"error","error":{}}"#).is_none());
    }
}
