//! Reading an upstream SSE body as events, for the routes that answer in another shape than the
//! upstream's bytes (`/v1/responses` without streaming, `/v1/chat/completions`). The Codex route
//! splices bytes instead (`relay`); this reader decodes the framing and hands out every event.
//!
//! While it waits it watches, as the relay does, for the client going away, upstream silence past
//! the idle timeout, and the shutdown deadline.

use std::time::{Duration, Instant};

use super::client::ClientConn;
use crate::http::chunked::ChunkedDecoder;
use crate::http::response::{UpstreamFraming, UpstreamHead};
use crate::http::sse::{ScannedEvent, SseScanner};
use crate::metrics::inc;
use crate::upstream::io::UpstreamConn;
use crate::worker::Worker;

const TICK: Duration = Duration::from_millis(200);
/// Largest single event kept (a final `response` object with a long answer).
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// What one wait for the upstream brought.
#[derive(Debug)]
pub enum Read {
    /// Events completed by the bytes that arrived (possibly none yet).
    Events(Vec<ScannedEvent>),
    /// The body ended where its framing says.
    End,
    /// The upstream broke: a code for the log and the client, and what happened.
    Failed(&'static str, String),
    ClientGone,
    ShuttingDown,
}

/// Why a watched wait for the upstream stopped before its bytes came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    ClientGone,
    /// Nothing from the upstream for the idle timeout since `last_byte`.
    IdleTimeout,
    /// The shutdown grace period is over.
    ShuttingDown,
}

/// Waits for `read` (the upstream's next bytes) while watching, every tick, for the client going
/// away, upstream silence past the idle timeout, and the end of the shutdown grace period. The
/// read is never cut short by a tick; it is dropped only when the wait gives up.
pub async fn watched<F: std::future::Future>(
    w: &Worker,
    client: &ClientConn,
    last_byte: Instant,
    read: F,
) -> Result<F::Output, Stop> {
    let settings = &w.shared.settings;
    let mut ticker = monoio::time::interval(TICK);
    let mut read = std::pin::pin!(read);
    loop {
        monoio::select! {
            r = &mut read => return Ok(r),
            _ = ticker.tick() => {
                if client.peer_closed() {
                    return Err(Stop::ClientGone);
                }
                if last_byte.elapsed() >= settings.upstream_idle_timeout {
                    inc(&w.metrics.timeouts);
                    return Err(Stop::IdleTimeout);
                }
                if w.shared.shutdown.deadline().is_some_and(|d| Instant::now() >= d) {
                    return Err(Stop::ShuttingDown);
                }
            }
        }
    }
}

pub struct EventReader {
    dec: ChunkedDecoder,
    scanner: SseScanner,
    framing: UpstreamFraming,
    remaining: Option<u64>,
    done: bool,
    last_byte: Instant,
    /// The upstream connection ended exactly at the body's end (it may be pooled again).
    pub clean: bool,
}

impl EventReader {
    pub fn new(head: &UpstreamHead) -> Self {
        EventReader {
            dec: ChunkedDecoder::new(),
            scanner: SseScanner::keeping_all(MAX_EVENT_BYTES),
            framing: head.framing,
            remaining: match head.framing {
                UpstreamFraming::Length(n) => Some(n),
                UpstreamFraming::Empty => Some(0),
                _ => None,
            },
            done: false,
            last_byte: Instant::now(),
            clean: !head.close,
        }
    }

    pub async fn next(&mut self, w: &Worker, conn: &mut UpstreamConn, client: &ClientConn) -> Read {
        loop {
            if self.done || self.remaining == Some(0) {
                return Read::End;
            }
            let got = watched(w, client, self.last_byte, conn.next_bytes()).await;
            let bytes = match got {
                Err(Stop::ClientGone) => return Read::ClientGone,
                Err(Stop::ShuttingDown) => return Read::ShuttingDown,
                Err(Stop::IdleTimeout) => {
                    return Read::Failed(
                        "upstream_timeout",
                        "upstream sent nothing within the idle timeout".into(),
                    )
                }
                Ok(Err(e)) => {
                    return Read::Failed(
                        "upstream_connection_error",
                        format!("upstream read failed: {e}"),
                    )
                }
                Ok(Ok(b)) if b.is_empty() => {
                    if self.framing == UpstreamFraming::UntilClose {
                        self.done = true;
                        self.clean = false;
                        return Read::Events(self.scanner.take_ready());
                    }
                    return Read::Failed(
                        "upstream_stream_truncated",
                        "upstream closed the stream before it ended".into(),
                    );
                }
                Ok(Ok(b)) => b,
            };
            self.last_byte = Instant::now();
            match self.framing {
                UpstreamFraming::Chunked => {
                    let scanner = &mut self.scanner;
                    match self.dec.feed(&bytes, |d| scanner.feed(d)) {
                        Ok(f) => {
                            self.clean &= f.consumed == bytes.len();
                            self.done = f.done;
                        }
                        Err(e) => {
                            return Read::Failed(
                                "upstream_protocol_error",
                                format!("bad upstream chunking: {e}"),
                            )
                        }
                    }
                }
                _ => {
                    let take = self.remaining.map_or(bytes.len(), |r| {
                        usize::try_from(r).unwrap_or(usize::MAX).min(bytes.len())
                    });
                    if let Some(r) = self.remaining.as_mut() {
                        *r -= take as u64;
                    }
                    self.clean &= take == bytes.len();
                    self.scanner.feed(&bytes[..take]);
                }
            }
            let ready = self.scanner.take_ready();
            if !ready.is_empty() || self.done {
                return Read::Events(ready);
            }
        }
    }
}
