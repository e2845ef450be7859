//! Response bodies: a fixed JSON body, or a paced SSE stream that follows a [`Plan`].
//!
//! The SSE body owns the write pattern (one write per event, fixed-size re-slicing, or one
//! coalesced write), the pauses between deltas, the injected ending (clean, EOF, reset), and the
//! drop guard that records a stream the peer abandoned. After each data frame it returns
//! `Pending` once (waking itself) so hyper flushes that frame as its own write instead of
//! batching several frames into one.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::render::{End, Plan};
use super::scenario::Scenario;
use super::state::Shared;

/// Pause between the last bytes before an injected reset and the reset itself, so the peer's
/// reader has drained them: an RST may otherwise overtake data still in its receive path.
pub const RESET_GRACE: Duration = Duration::from_millis(20);

/// The pauses of one stream (`ttfb_ms` before the first event, `delay_ms` plus up to
/// `jitter_ms` before each delta), shared by the SSE body and the WebSocket turn.
pub struct Pacer {
    ttfb: Duration,
    delay: Duration,
    jitter_ms: u64,
    rng: u64,
}

impl Pacer {
    pub fn new(ttfb: Duration, delay: Duration, jitter_ms: u64, seed: u64) -> Pacer {
        Pacer {
            ttfb,
            delay,
            jitter_ms,
            rng: seed | 1,
        }
    }

    /// The pause owed before event `index` (a delta when `is_delta`).
    pub fn pause_before(&mut self, index: usize, is_delta: bool) -> Duration {
        if index == 0 {
            return self.ttfb;
        }
        if !is_delta {
            return Duration::ZERO;
        }
        let mut d = self.delay;
        if self.jitter_ms > 0 {
            // xorshift64: deterministic per request, no rand dependency
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            d += Duration::from_millis(self.rng % (self.jitter_ms + 1));
        }
        d
    }
}

/// Per-connection switches a body can flip; read when the connection's socket is dropped.
#[derive(Debug, Default)]
pub struct ConnCtl {
    reset: AtomicBool,
}

impl ConnCtl {
    pub fn request_reset(&self) {
        self.reset.store(true, Ordering::Relaxed);
    }

    pub fn reset_requested(&self) -> bool {
        self.reset.load(Ordering::Relaxed)
    }
}

pub enum MockBody {
    Full(Option<Bytes>),
    Sse(Box<SseBody>),
}

impl MockBody {
    pub fn full(b: impl Into<Bytes>) -> MockBody {
        MockBody::Full(Some(b.into()))
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            MockBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Sse(s) => s.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, MockBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            MockBody::Sse(_) => SizeHint::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteMode {
    PerEvent,
    Chunk(usize),
    Coalesce,
}

/// What the stream reports when it ends or is dropped.
pub struct StreamMeta {
    pub account: usize,
    pub request_id: String,
    /// Charged to the account's windows when `response.completed` went out.
    pub total_tokens: u64,
}

pub struct SseBody {
    shared: Arc<Shared>,
    conn: Arc<ConnCtl>,
    meta: StreamMeta,
    plan: Plan,
    pos: usize,
    pacer: Pacer,
    tail: Duration,
    tail_slept: bool,
    mode: WriteMode,
    carry: BytesMut,
    ready: VecDeque<Bytes>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The pause owed before event `pos` has elapsed.
    slept: bool,
    reset_graced: bool,
    yield_next: bool,
    finished: bool,
    record: Option<Vec<u8>>,
}

impl SseBody {
    pub fn new(
        shared: Arc<Shared>,
        conn: Arc<ConnCtl>,
        meta: StreamMeta,
        plan: Plan,
        sc: &Scenario,
        seed: u64,
    ) -> SseBody {
        let mode = match (sc.coalesce, sc.chunk_bytes) {
            (true, _) => WriteMode::Coalesce,
            (false, Some(n)) => WriteMode::Chunk(n.max(1)),
            (false, None) => WriteMode::PerEvent,
        };
        shared.stats.stream_opened();
        // One coalesced write cannot be paced.
        let pacer = if mode == WriteMode::Coalesce {
            Pacer::new(Duration::from_millis(sc.ttfb_ms), Duration::ZERO, 0, seed)
        } else {
            Pacer::new(
                Duration::from_millis(sc.ttfb_ms),
                Duration::from_millis(sc.delay_ms),
                sc.jitter_ms,
                seed,
            )
        };
        SseBody {
            shared,
            conn,
            meta,
            plan,
            pos: 0,
            pacer,
            tail: Duration::from_millis(sc.tail_delay_ms),
            tail_slept: false,
            mode,
            carry: BytesMut::new(),
            ready: VecDeque::new(),
            sleep: None,
            slept: false,
            reset_graced: false,
            yield_next: false,
            finished: false,
            record: sc.record.then(Vec::new),
        }
    }

    fn assemble(&mut self, ev: Bytes) {
        match self.mode {
            WriteMode::PerEvent => self.ready.push_back(ev),
            WriteMode::Coalesce => self.carry.extend_from_slice(&ev),
            WriteMode::Chunk(n) => {
                self.carry.extend_from_slice(&ev);
                while self.carry.len() >= n {
                    self.ready.push_back(self.carry.split_to(n).freeze());
                }
            }
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            if self.yield_next {
                self.yield_next = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if let Some(frame) = self.ready.pop_front() {
                self.shared.stats.bytes(frame.len());
                if let Some(r) = self.record.as_mut() {
                    r.extend_from_slice(&frame);
                }
                self.yield_next = true;
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            if let Some(s) = self.sleep.as_mut() {
                if s.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
                continue;
            }
            if self.pos < self.plan.events.len() {
                if !self.slept {
                    self.slept = true;
                    let is_delta = self.plan.is_delta.get(self.pos).copied().unwrap_or(false);
                    let d = self.pacer.pause_before(self.pos, is_delta);
                    if !d.is_zero() {
                        self.sleep = Some(Box::pin(tokio::time::sleep(d)));
                        continue;
                    }
                }
                self.slept = false;
                let ev = self.plan.events[self.pos].sse.clone();
                self.pos += 1;
                self.assemble(ev);
                continue;
            }
            if !self.carry.is_empty() {
                let rest = self.carry.split().freeze();
                self.ready.push_back(rest);
                continue;
            }
            match self.plan.end {
                End::Clean if !self.tail_slept && !self.tail.is_zero() => {
                    self.tail_slept = true;
                    self.sleep = Some(Box::pin(tokio::time::sleep(self.tail)));
                }
                End::Clean => {
                    self.finish();
                    return Poll::Ready(None);
                }
                End::Reset if !self.reset_graced => {
                    self.reset_graced = true;
                    self.sleep = Some(Box::pin(tokio::time::sleep(RESET_GRACE)));
                }
                End::Reset => {
                    self.finish();
                    self.conn.request_reset();
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "mock: injected connection reset",
                    ))));
                }
            }
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        if self.plan.completes {
            self.shared
                .stream_completed(self.meta.account, self.meta.total_tokens);
        }
        self.store_recording();
    }

    fn store_recording(&mut self) {
        if let Some(r) = self.record.take() {
            self.shared.store_recording(&self.meta.request_id, r);
        }
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        self.shared.stats.stream_closed();
        if !self.finished {
            let at = Instant::now();
            let id = self.shared.account_id(self.meta.account).to_string();
            self.shared.stats.stream_cancelled(&id, at);
            self.store_recording();
        }
    }
}
