//! Codex's control routes — thread goals, analytics events, memory summaries, the safety check,
//! search and the agent-identity keys (PROTOCOL.md §1.2) — and audio transcription (Codex's voice
//! input, `POST /backend-api/transcribe`, and OpenAI's `POST /v1/audio/transcriptions`), forwarded
//! as they are upstream with a pooled account, the reply relayed as it came. They carry no model
//! turn and no token usage, so there is no body to reshape: only the account choice (the
//! conversation's own account when the request names one, always one the caller's key may use),
//! failover on a dead account and the key checks apply.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::client::ClientConn;
use super::responses::{
    account_head, begin_attempt, control_routing, forward_request_header, key_refusal,
    no_account_error, pick_account, session_header,
};
use super::{body_error, respond, respond_error, Record};
use crate::accounts::now_unix;
use crate::accounts::selection::Pick;
use crate::http::error_body::ApiError;
use crate::http::request::RequestHead;
use crate::http::response::full_response;
use crate::keys::KeyView;
use crate::ledger::Outcome;
use crate::upstream::exchange;
use crate::worker::Worker;

/// The control paths, as the client sends them; upstream, the same path under its base.
const CONTROL_PATHS: &[&str] = &[
    "/backend-api/codex/thread/goal/get",
    "/backend-api/codex/thread/goal/set",
    "/backend-api/codex/thread/goal/clear",
    "/backend-api/codex/analytics-events/events",
    "/backend-api/codex/memories/trace_summarize",
    "/backend-api/codex/safety/arc",
    "/backend-api/codex/alpha/search",
    "/backend-api/codex/agent-identities/jwks",
    "/backend-api/wham/agent-identities/jwks",
];

/// A control reply larger than this is not relayed (they are small JSON documents).
const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// Transcription paths; both go to the upstream's `/transcribe` (multipart `file`, optional
/// `prompt`; PROTOCOL.md §1.2).
const TRANSCRIBE_PATHS: &[&str] = &["/backend-api/transcribe", "/v1/audio/transcriptions"];

pub fn is_control_path(path: &str) -> bool {
    CONTROL_PATHS.contains(&path)
}

pub fn is_transcribe_path(path: &str) -> bool {
    TRANSCRIBE_PATHS.contains(&path)
}

/// What is relayed, and how the key's pace treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// A control route: checked against the key's pace, not counted in it.
    Control,
    /// A transcription runs a model upstream: counted in the key's pace like a turn.
    Transcribe,
}

/// The path under the upstream's base for a relayed request.
fn upstream_suffix(relay: Relay, path: &str) -> &str {
    match relay {
        Relay::Transcribe => "/transcribe",
        Relay::Control => path.strip_prefix("/backend-api").unwrap_or(path),
    }
}

/// The upstream request head up to the account's credentials.
fn head_prefix(w: &Worker, head: &RequestHead, relay: Relay, body_len: usize) -> BytesMut {
    let up = &w.shared.settings.upstream;
    let suffix = upstream_suffix(relay, head.path());
    let mut b = BytesMut::with_capacity(512 + head.head_len());
    b.put_slice(head.method().as_bytes());
    b.put_slice(b" ");
    b.put_slice(up.base_path.as_bytes());
    b.put_slice(suffix.as_bytes());
    if let Some(q) = head.query() {
        b.put_slice(b"?");
        b.put_slice(q.as_bytes());
    }
    b.put_slice(b" HTTP/1.1\r\nhost: ");
    b.put_slice(up.authority.as_bytes());
    b.put_slice(b"\r\naccept: application/json\r\n");
    if body_len > 0 || head.method() == "POST" {
        b.put_slice(b"content-type: ");
        b.put_slice(
            head.header("content-type")
                .unwrap_or(b"application/json".as_slice()),
        );
        b.put_slice(b"\r\ncontent-length: ");
        b.put_slice(body_len.to_string().as_bytes());
        b.put_slice(b"\r\n");
    }
    for (n, v) in head.headers() {
        if forward_request_header(n) && !n.eq_ignore_ascii_case("x-codex-turn-state") {
            b.put_slice(n.as_bytes());
            b.put_slice(b": ");
            b.put_slice(v);
            b.put_slice(b"\r\n");
        }
    }
    b
}

/// Whether another account may do better than this reply: its token was refused, or a gateway in
/// front of the upstream could not reach it. A 500 is relayed: the request may have been acted
/// on (a goal set, events stored), and these routes are not all idempotent.
fn worth_another_account(status: u16) -> bool {
    matches!(status, 401 | 502 | 503 | 504)
}

pub async fn handle(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    head: RequestHead,
    relay: Relay,
    key: Option<Arc<KeyView>>,
    mut rec: Record,
) -> bool {
    let s = &w.shared.settings;
    let keep_alive = head.keep_alive && !w.shared.shutdown.is_requested();
    let body = match client
        .read_body(
            &head,
            s.max_body_bytes,
            s.client_body_timeout,
            s.client_body_deadline,
        )
        .await
    {
        Ok(b) => b,
        Err(e) => {
            return match body_error(w, &e) {
                Some(err) => respond_error(w, client, err, false, rec).await,
                None => false,
            }
        }
    };
    rec.request_bytes = body.len() as u64;
    rec.conversation = session_header(&head).map(|c| c.chars().take(128).collect());
    // The key's budgets and pace hold here too (see `admit_unmetered` for why it is not counted).
    if let Some(k) = &key {
        let now = now_unix();
        let admitted = match relay {
            Relay::Control => crate::keys::admission::admit_unmetered(k, now),
            Relay::Transcribe => crate::keys::admission::admit_metered(k, now),
        };
        if let Err(r) = admitted {
            return respond_error(w, client, key_refusal(r, now), keep_alive, rec).await;
        }
    }
    let route = control_routing(&head, key.as_ref());
    let prefix = head_prefix(w, &head, relay, body.len());
    let mut excluded: Vec<Arc<str>> = Vec::new();
    let mut last: Option<(u16, Bytes, Bytes)> = None;
    while rec.attempts as usize <= s.failover_attempts {
        let account = match pick_account(w, &route, &excluded).await {
            Pick::Account(a) => a,
            other => {
                if last.is_some() {
                    break;
                }
                let err = no_account_error(&other, &route);
                return respond_error(w, client, err, keep_alive, rec).await;
            }
        };
        let _slot = begin_attempt(w, &account, &mut rec);
        let req_head = account_head(&prefix, &account);
        let sent = Instant::now();
        let mut ex = match exchange::send(w, &req_head, &body).await {
            Ok(ex) => ex,
            Err(e) => {
                tracing::debug!(account = %account.id, error = %e, path = head.path(), "control request failed before a reply");
                rec.error_code = Some(e.code().into());
                excluded.push(Arc::clone(&account.id));
                continue;
            }
        };
        rec.ttfb.get_or_insert(sent.elapsed());
        let Ok((reply, reusable)) = exchange::read_body(
            &mut ex.conn,
            &ex.head,
            MAX_REPLY_BYTES,
            s.upstream_idle_timeout,
        )
        .await
        else {
            rec.error_code = Some("upstream_read_failed".into());
            excluded.push(Arc::clone(&account.id));
            continue;
        };
        if reusable {
            w.pool.borrow_mut().put(ex.conn, Instant::now());
        }
        let status = ex.head.status;
        let content_type = Bytes::copy_from_slice(
            ex.head
                .header("content-type")
                .unwrap_or(b"application/json".as_slice()),
        );
        last = Some((status, content_type, reply));
        if worth_another_account(status) {
            excluded.push(Arc::clone(&account.id));
            continue;
        }
        break;
    }
    let Some((status, content_type, reply)) = last else {
        let err = ApiError::new(
            502,
            "server_error",
            "upstream_unavailable",
            "the upstream could not be reached for this request",
        );
        return respond_error(w, client, err, keep_alive, rec).await;
    };
    rec.status = status;
    rec.outcome = if status < 400 {
        rec.error_code = None;
        Outcome::Completed
    } else {
        rec.error_code
            .get_or_insert_with(|| format!("upstream_{status}"));
        Outcome::UpstreamError
    };
    rec.response_bytes = reply.len() as u64;
    let content_type = std::str::from_utf8(&content_type).unwrap_or("application/json");
    let bytes = if matches!(status, 204 | 304) {
        // No body and no body headers (RFC 9110 §15.3.5, §15.4.5).
        let mut out = Vec::with_capacity(64);
        crate::http::response::write_head(
            &mut out,
            status,
            &[],
            crate::http::response::OutFraming::NoBody,
            keep_alive,
        );
        out
    } else {
        full_response(status, content_type, &[], &reply, keep_alive)
    };
    respond(w, client, Bytes::from(bytes), keep_alive, rec).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_paths_are_control_paths() {
        assert!(is_control_path("/backend-api/codex/thread/goal/get"));
        assert!(is_control_path("/backend-api/wham/agent-identities/jwks"));
        assert!(!is_control_path("/backend-api/codex/thread/goal"));
        assert!(!is_control_path("/backend-api/codex/responses"));
        assert!(!is_control_path(
            "/backend-api/codex/analytics-events/events/../x"
        ));
        assert!(worth_another_account(401) && worth_another_account(503));
        assert!(!worth_another_account(400) && !worth_another_account(429));
        assert!(!worth_another_account(500), "a 500 may have been acted on");
        assert_eq!(
            upstream_suffix(Relay::Transcribe, "/v1/audio/transcriptions"),
            "/transcribe"
        );
        assert_eq!(
            upstream_suffix(Relay::Control, "/backend-api/codex/safety/arc"),
            "/codex/safety/arc"
        );
        assert!(is_transcribe_path("/backend-api/transcribe"));
    }
}
