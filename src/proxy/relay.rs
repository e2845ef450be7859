//! Relaying an upstream response body to the client as it arrives.
//!
//! When both sides speak chunked HTTP/1.1 (the normal case) the upstream's bytes are forwarded in
//! the buffers they arrived in, framing included: no re-encoding, no copy. The chunked decoder
//! and the SSE scanner run over the same bytes only to find the end of the body and read the
//! terminal event. Every other combination (an HTTP/1.0 client, a length-delimited upstream) is
//! re-framed with one copy.
//!
//! While waiting for the upstream, a ticker checks three things: the client went away (the
//! upstream request is then dropped at once, closing its connection), the upstream went silent
//! past the idle timeout, and the shutdown grace deadline. An upstream failure after bytes were
//! sent ends the stream with a well-formed `response.failed` event instead of a torn body.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::client::ClientConn;
use super::events::StreamFacts;
use crate::http::chunked::{chunk_header, ChunkedDecoder, Completion, LAST_CHUNK};
use crate::http::error_body::response_failed_event;
use crate::http::name_eq;
use crate::http::response::{write_head, OutFraming, UpstreamFraming};
use crate::http::sse::SseScanner;
use crate::ledger::Outcome;
use crate::metrics::{dec, inc};
use crate::upstream::exchange::Exchange;
use crate::worker::Worker;

/// How often a waiting relay checks the client, the idle timeout and the shutdown deadline.
const TICK: Duration = Duration::from_millis(200);
/// Largest remainder of a torn upstream chunk that is padded (with blank SSE lines) so the client
/// still gets a clean `response.failed`; past it the client connection is just closed.
const MAX_COMPLETION_PAD: u64 = 1024 * 1024;

pub struct RelayResult {
    pub facts: StreamFacts,
    pub outcome: Outcome,
    pub error_code: Option<String>,
    pub response_bytes: u64,
    pub ttfb: Option<Duration>,
    /// The client connection may serve another request (once `tail` is written).
    pub client_reusable: bool,
    /// The end of the body still to write: padding of a torn chunk, a failure event, the last
    /// chunk. Left to the caller so that the request is recorded before the client can see its
    /// response end (a client reading its usage right after gets it counted).
    pub tail: Option<Bytes>,
}

enum End {
    Complete,
    UpstreamFailed(&'static str, String),
    ClientGone,
    ShuttingDown,
}

enum Wait {
    Data(std::io::Result<Bytes>),
    ClientGone,
    Idle,
    Shutdown,
}

/// Headers of the upstream reply that are not forwarded: hop-by-hop, framing (ours differs), and
/// cookies that belong to the pooled account's session.
pub fn forward_response_header(name: &str) -> bool {
    const DROP: &[&str] = &[
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "set-cookie",
        "alt-svc",
    ];
    !DROP.iter().any(|d| name_eq(name, d))
}

/// The upstream's quota headers: the pool's state, which a key holder may be kept from seeing.
pub fn is_quota_header(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "x-codex-primary-",
        "x-codex-secondary-",
        "x-codex-credits-",
        "x-codex-active-limit",
        "x-codex-plan-type",
    ];
    PREFIXES.iter().any(|p| {
        name.len() >= p.len()
            && name
                .get(..p.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(p))
    })
}

#[allow(clippy::too_many_arguments)]
pub async fn relay(
    w: &Worker,
    client: &mut ClientConn,
    mut ex: Exchange,
    account: &str,
    client_http11: bool,
    keep_alive: bool,
    hide_quota: bool,
    started: Instant,
) -> RelayResult {
    let settings = &w.shared.settings;
    let is_sse = ex
        .head
        .header("content-type")
        .is_some_and(|v| v.starts_with(b"text/event-stream"));
    let chunked_out = client_http11;
    let splice = chunked_out && ex.head.framing == UpstreamFraming::Chunked;
    let mut result = RelayResult {
        facts: StreamFacts::default(),
        outcome: Outcome::Completed,
        error_code: None,
        response_bytes: 0,
        ttfb: None,
        client_reusable: false,
        tail: None,
    };

    let mut head = Vec::with_capacity(512);
    let mut headers: Vec<(&str, &[u8])> = ex
        .head
        .headers()
        .filter(|(n, _)| {
            forward_response_header(n)
                && !name_eq(n, "x-codex-turn-state")
                && !(hide_quota && is_quota_header(n))
        })
        .collect();
    // The turn state carries the account it belongs to, so a replay can be routed back to it.
    let turn_state = ex.head.header("x-codex-turn-state").map(|v| {
        let mut t = Vec::with_capacity(account.len() + 1 + v.len());
        t.extend_from_slice(account.as_bytes());
        t.push(b'~');
        t.extend_from_slice(v);
        t
    });
    if let Some(t) = &turn_state {
        headers.push(("x-codex-turn-state", t.as_slice()));
    }
    let framing = if chunked_out {
        OutFraming::Chunked
    } else {
        OutFraming::Close
    };
    write_head(&mut head, ex.head.status, &headers, framing, keep_alive);
    if client
        .write(Bytes::from(head), settings.client_write_timeout)
        .await
        .is_err()
    {
        result.outcome = Outcome::Cancelled;
        return result;
    }
    inc(&w.metrics.streams_open);
    let _open = StreamOpen(w);

    let mut dec = ChunkedDecoder::new();
    let mut scanner = SseScanner::default();
    let mut held = BytesMut::new();
    let mut remaining = match ex.head.framing {
        UpstreamFraming::Length(n) => Some(n),
        UpstreamFraming::Empty => Some(0),
        _ => None,
    };
    let mut upstream_clean = !ex.head.close;
    let mut client_completion = Completion {
        pad: 0,
        suffix: b"",
    };
    let mut ticker = monoio::time::interval(TICK);
    let mut last_byte = Instant::now();
    let mut delivered = false;

    let end = loop {
        if remaining == Some(0) {
            break End::Complete;
        }
        let wait = {
            let read = ex.conn.next_bytes();
            let mut read = std::pin::pin!(read);
            loop {
                monoio::select! {
                    r = &mut read => break Wait::Data(r),
                    _ = ticker.tick() => {
                        if client.peer_closed() {
                            break Wait::ClientGone;
                        }
                        if last_byte.elapsed() >= settings.upstream_idle_timeout {
                            break Wait::Idle;
                        }
                        if w.shared.shutdown.deadline().is_some_and(|d| Instant::now() >= d) {
                            break Wait::Shutdown;
                        }
                    }
                }
            }
        };
        let bytes = match wait {
            Wait::Data(Ok(b)) if b.is_empty() => {
                if ex.head.framing == UpstreamFraming::UntilClose {
                    upstream_clean = false;
                    break End::Complete;
                }
                break End::UpstreamFailed(
                    "upstream_stream_truncated",
                    "upstream closed the stream before it ended".into(),
                );
            }
            Wait::Data(Ok(b)) => b,
            Wait::Data(Err(e)) => {
                break End::UpstreamFailed(
                    "upstream_connection_error",
                    format!("upstream read failed: {e}"),
                )
            }
            Wait::ClientGone => break End::ClientGone,
            Wait::Idle => {
                inc(&w.metrics.timeouts);
                break End::UpstreamFailed(
                    "upstream_timeout",
                    "upstream sent nothing within the idle timeout".into(),
                );
            }
            Wait::Shutdown => break End::ShuttingDown,
        };
        last_byte = Instant::now();

        let mut out: [Option<Bytes>; 2] = [None, None];
        let mut done = false;
        if splice {
            client_completion = dec.completion();
            let feed = match dec.feed(&bytes, |d| scanner.feed(d)) {
                Ok(f) => f,
                Err(e) => {
                    break End::UpstreamFailed(
                        "upstream_protocol_error",
                        format!("bad upstream chunking: {e}"),
                    )
                }
            };
            if feed.safe_end > 0 {
                if !held.is_empty() {
                    out[0] = Some(held.split().freeze());
                }
                out[1] = Some(bytes.slice(..feed.safe_end));
            }
            held.extend_from_slice(bytes.get(feed.safe_end..feed.consumed).unwrap_or_default());
            upstream_clean &= feed.consumed == bytes.len();
            done = feed.done;
        } else {
            let data = if ex.head.framing == UpstreamFraming::Chunked {
                let mut data = BytesMut::new();
                let feed = match dec.feed(&bytes, |d| {
                    scanner.feed(d);
                    data.extend_from_slice(d);
                }) {
                    Ok(f) => f,
                    Err(e) => {
                        break End::UpstreamFailed(
                            "upstream_protocol_error",
                            format!("bad upstream chunking: {e}"),
                        )
                    }
                };
                upstream_clean &= feed.consumed == bytes.len();
                done = feed.done;
                data.freeze()
            } else {
                let take = remaining.map_or(bytes.len(), |r| {
                    usize::try_from(r).unwrap_or(usize::MAX).min(bytes.len())
                });
                if let Some(r) = remaining.as_mut() {
                    *r -= take as u64;
                }
                upstream_clean &= take == bytes.len();
                let data = bytes.slice(..take);
                scanner.feed(&data);
                data
            };
            if !data.is_empty() {
                if chunked_out {
                    let mut framed = Vec::with_capacity(data.len() + 12);
                    chunk_header(data.len(), &mut framed);
                    framed.extend_from_slice(&data);
                    framed.extend_from_slice(b"\r\n");
                    out[1] = Some(Bytes::from(framed));
                } else {
                    out[1] = Some(data);
                }
            }
        }
        for ev in scanner.take_ready() {
            result.facts.absorb(&ev);
        }
        for ev in scanner.take_overflowed() {
            tracing::warn!(kind = ?ev.kind, "upstream event over the capture cap; only its end was read");
            result.facts.absorb_overflowed(&ev);
        }
        let mut gone = false;
        for b in out.into_iter().flatten() {
            result.response_bytes += b.len() as u64;
            if client
                .write(b, settings.client_write_timeout)
                .await
                .is_err()
            {
                gone = true;
                break;
            }
            result.ttfb.get_or_insert_with(|| started.elapsed());
        }
        if !gone && result.facts.terminal.is_some() {
            // The client has the terminal event: whatever happens next, its response is whole.
            delivered = true;
        }
        if gone {
            break End::ClientGone;
        }
        if splice {
            client_completion = dec.completion();
        }
        if done {
            break End::Complete;
        }
    };

    let terminal_seen = result.facts.terminal.is_some();
    let shutting_down = matches!(end, End::ShuttingDown);
    let failure = match end {
        End::Complete if is_sse && !terminal_seen && result.facts.torn_terminal => Some((
            "upstream_protocol_error",
            "upstream sent a terminal event that is not valid JSON".to_string(),
        )),
        End::Complete if is_sse && !terminal_seen => Some((
            "upstream_stream_truncated",
            "upstream ended the stream without a terminal event".to_string(),
        )),
        End::Complete => None,
        End::UpstreamFailed(code, msg) => {
            inc(&w.metrics.upstream_errors);
            upstream_clean = false;
            Some((code, msg))
        }
        End::ShuttingDown => {
            upstream_clean = false;
            Some((
                "server_shutting_down",
                "the gateway is shutting down; retry the request".to_string(),
            ))
        }
        // Clients may hang up as soon as they have the terminal event (the Codex CLI does),
        // before the body's last chunk: that response was delivered, not cancelled.
        End::ClientGone if delivered => {
            result.outcome = result.facts.terminal.unwrap_or(Outcome::Completed);
            result.error_code = result.facts.error_code.clone();
            return result;
        }
        End::ClientGone => {
            result.outcome = Outcome::Cancelled;
            result.error_code = Some("client_disconnected".into());
            tracing::debug!(peer = %client.peer, "client went away mid-stream; upstream request dropped");
            return result;
        }
    };
    // An upstream that said why in an `error` event (with a code) before it stopped: its code is
    // the one passed on (the Codex CLI decides on a retry by it), not a generic one of ours.
    let failure = failure.map(|(code, msg)| match result.facts.error_code.clone() {
        Some(upstream) if upstream != "error" && !terminal_seen && !shutting_down => (
            Cow::Owned(upstream),
            format!("{msg} (after an upstream error event)"),
        ),
        _ => (Cow::Borrowed(code), msg),
    });
    if let Some((code, msg)) = &failure {
        tracing::warn!(%code, msg, "upstream stream failed after bytes were sent");
        result.error_code = Some(code.to_string());
        result.outcome = result
            .facts
            .terminal
            .unwrap_or(if code == "server_shutting_down" {
                Outcome::Failed
            } else {
                Outcome::UpstreamError
            });
    } else {
        result.outcome = result.facts.terminal.unwrap_or(Outcome::Completed);
        result.error_code = result.facts.error_code.clone();
    }

    // Close the body: pad a torn chunk, add the failure event where one is owed, end the framing.
    let mut tail = Vec::new();
    let inject = failure.as_ref().filter(|_| is_sse && !terminal_seen);
    if splice && failure.is_some() {
        if client_completion.pad > MAX_COMPLETION_PAD {
            return result;
        }
        tail.resize(client_completion.pad as usize, b'\n');
        tail.extend_from_slice(client_completion.suffix);
    }
    if let Some((code, msg)) = inject {
        let mut ev = Vec::new();
        if !scanner.at_boundary() {
            ev.extend_from_slice(b"\n\n");
        }
        ev.extend_from_slice(&response_failed_event(None, code, msg));
        if chunked_out {
            chunk_header(ev.len(), &mut tail);
            tail.extend_from_slice(&ev);
            tail.extend_from_slice(b"\r\n");
        } else {
            tail.extend_from_slice(&ev);
        }
    }
    if chunked_out {
        tail.extend_from_slice(LAST_CHUNK);
    }
    result.tail = (!tail.is_empty()).then(|| Bytes::from(tail));
    result.client_reusable = chunked_out && keep_alive && !shutting_down;
    if upstream_clean && failure.is_none() && remaining.is_none_or(|r| r == 0) {
        w.pool.borrow_mut().put(ex.conn, Instant::now());
    }
    result
}

struct StreamOpen<'a>(&'a Worker);

impl Drop for StreamOpen<'_> {
    fn drop(&mut self) {
        dec(&self.0.metrics.streams_open);
    }
}
