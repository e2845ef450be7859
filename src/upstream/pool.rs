//! The per-worker keep-alive pool: idle upstream connections, most recently used first.
//!
//! Only connections whose last response was read to its end without error or timeout come back
//! here; anything else is dropped (closed), because its byte stream is no longer known.

use std::time::{Duration, Instant};

use super::io::UpstreamConn;

/// Idle connections kept per worker.
pub const MAX_IDLE_PER_WORKER: usize = 256;
/// Idle connections older than this are closed rather than reused: upstreams close idle
/// keep-alives after a while and a request on a half-closed one fails.
pub const IDLE_TTL: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Pool {
    idle: Vec<(UpstreamConn, Instant)>,
}

impl Pool {
    pub fn take(&mut self, now: Instant) -> Option<UpstreamConn> {
        while let Some((mut conn, since)) = self.idle.pop() {
            if now.duration_since(since) < IDLE_TTL {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    pub fn put(&mut self, conn: UpstreamConn, now: Instant) {
        if !conn.buf.is_empty() {
            // Unsolicited bytes after a complete response: not a clean connection.
            return;
        }
        if self.idle.len() >= MAX_IDLE_PER_WORKER {
            self.idle.remove(0);
        }
        self.idle.push((conn, now));
    }

    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}
