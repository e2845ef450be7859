//! Drives load at one target within the run's bounds, in one of three modes:
//!
//! - **closed loop** (default): `concurrency` connections, each sending its next request when
//!   the previous one ends. Latencies are *service times*; a stalled target also slows the
//!   sender, so queueing delay it would cause real users is not in the numbers (coordinated
//!   omission). Compare targets by throughput and by these service times.
//! - **open loop** (`--rate R`): request `n` is due at `start + n/R` whatever happened before;
//!   each is timed from when it was due, not from when a free connection picked it up, so a
//!   stall is charged to every request it delayed. At most `concurrency` are in flight.
//! - **hold**: `concurrency` streams, opened at `ramp` per second, one request each, all kept
//!   open together for the hold time.
//!
//! Bounds: no request starts after the duration (or past `--requests`); requests in flight
//! then may finish within `--timeout`; whatever is still running after that is cut off and
//! counted as a timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::client::{exchange, Conn, Request};
use super::live::Live;
use super::record::{ErrorKind, Outcome, Recorder};
use super::scenario::Plan;
use super::target::Target;

/// Bodies up to this size are sent in the same write as the head.
const INLINE_BODY: usize = 64 * 1024;
/// Recorder shards: tasks lock one per finished request, so a few spread the contention.
const SHARDS: usize = 16;
/// The Codex CLI version the requests claim to come from.
pub const CODEX_VERSION: &str = "0.169.0";

/// Credentials sent to targets that need them (the mock and nginx).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub account_id: String,
    pub access_token: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Closed,
    Open { rate: f64 },
    Hold { ramp_per_s: f64 },
}

#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub concurrency: usize,
    /// No request starts after this (for hold: nothing; the streams define the length).
    pub duration: Duration,
    pub max_requests: Option<u64>,
    /// Per request, and the drain allowance after the duration.
    pub timeout: Duration,
    /// Read buffer per connection.
    pub read_buf: usize,
}

/// Every request a run can send at one target: `[variant][account]`.
pub struct Prepared {
    plan: Plan,
    requests: Vec<Vec<Request>>,
}

impl Prepared {
    pub fn new(target: &Target, plan: &Plan, bodies: &[Bytes], creds: &[Credentials]) -> Prepared {
        let requests = plan
            .variants
            .iter()
            .zip(bodies)
            .enumerate()
            .map(|(vi, (_, body))| {
                let heads: Vec<String> = if target.account_headers {
                    creds
                        .iter()
                        .map(|c| {
                            format!(
                                "authorization: Bearer {}\r\nchatgpt-account-id: {}\r\n",
                                c.access_token, c.account_id
                            )
                        })
                        .collect()
                } else if let Some(key) = &target.api_key {
                    vec![format!("authorization: Bearer {key}\r\n")]
                } else {
                    vec![String::new()]
                };
                heads
                    .into_iter()
                    .map(|auth| {
                        let head = format!(
                            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
                             accept: text/event-stream\r\ncontent-length: {}\r\n\
                             originator: codex_cli_rs\r\nversion: {CODEX_VERSION}\r\n\
                             user-agent: codex_cli_rs/{CODEX_VERSION} (codex-lb loadtest)\r\n\
                             session_id: 0199a0b0-{vi:04x}-7000-8000-00000000load\r\n{auth}\r\n",
                            target.path,
                            target.host,
                            body.len()
                        );
                        if body.len() <= INLINE_BODY {
                            let mut all = head.into_bytes();
                            all.extend_from_slice(body);
                            Request {
                                head: Bytes::from(all),
                                body: Bytes::new(),
                            }
                        } else {
                            Request {
                                head: Bytes::from(head),
                                body: body.clone(),
                            }
                        }
                    })
                    .collect()
            })
            .collect();
        Prepared {
            plan: plan.clone(),
            requests,
        }
    }

    /// The request for request number `n`; accounts rotate with `n`.
    pub fn pick(&self, n: u64) -> &Request {
        let per_account = &self.requests[self.plan.variant_index(n)];
        &per_account[(n % per_account.len() as u64) as usize]
    }
}

struct Shared {
    addr: SocketAddr,
    prepared: Arc<Prepared>,
    live: Arc<Live>,
    bounds: Bounds,
    mode: Mode,
    tickets: AtomicU64,
    in_flight: AtomicU64,
    shards: Vec<Mutex<Recorder>>,
}

impl Shared {
    fn ticket(&self) -> Option<u64> {
        let n = self.tickets.fetch_add(1, Ordering::Relaxed);
        match self.bounds.max_requests {
            Some(max) if n >= max => None,
            _ => Some(n),
        }
    }

    async fn one(&self, conn: &mut Conn, n: u64, start: Instant, shard: usize) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let req = self.prepared.pick(n);
        let fut = exchange(conn, self.addr, req, start, &self.live);
        let out = match tokio::time::timeout(self.bounds.timeout, fut).await {
            Ok(o) => o,
            Err(_) => {
                conn.reset();
                Outcome {
                    error: Some(ErrorKind::Timeout),
                    total: start.elapsed(),
                    ..Outcome::default()
                }
            }
        };
        if let Ok(mut r) = self.shards[shard % SHARDS].lock() {
            r.record(&out);
        }
        self.live.finished(out.error.is_some());
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs the load; returns the merged tally. `live.started` is the run's time zero.
pub async fn drive(
    target: &Target,
    prepared: Arc<Prepared>,
    mode: Mode,
    bounds: Bounds,
    live: Arc<Live>,
) -> Recorder {
    let t0 = live.started;
    let shared = Arc::new(Shared {
        addr: target.addr,
        prepared,
        live,
        bounds,
        mode,
        tickets: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        shards: (0..SHARDS)
            .map(|_| Mutex::new(Recorder::default()))
            .collect(),
    });
    let deadline = t0 + bounds.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..bounds.concurrency {
        let s = shared.clone();
        tasks.spawn(async move {
            let mut conn = Conn::new(s.bounds.read_buf);
            match s.mode {
                Mode::Closed => {
                    while Instant::now() < deadline {
                        let Some(n) = s.ticket() else { break };
                        s.one(&mut conn, n, Instant::now(), task).await;
                    }
                }
                Mode::Open { rate } => {
                    while let Some(n) = s.ticket() {
                        let due = t0 + Duration::from_secs_f64(n as f64 / rate);
                        if due >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        s.one(&mut conn, n, due, task).await;
                    }
                }
                Mode::Hold { ramp_per_s } => {
                    let due = t0 + Duration::from_secs_f64(task as f64 / ramp_per_s);
                    tokio::time::sleep_until(due.into()).await;
                    if let Some(n) = s.ticket() {
                        s.one(&mut conn, n, Instant::now(), task).await;
                    }
                }
            }
        });
    }
    let hard_stop = match mode {
        Mode::Hold { ramp_per_s } => {
            t0 + Duration::from_secs_f64(bounds.concurrency as f64 / ramp_per_s) + bounds.timeout
        }
        _ => deadline + bounds.timeout,
    } + Duration::from_secs(1);
    finish(tasks, hard_stop, &shared.shards, &shared.in_flight).await
}

/// Waits for the clients until `hard_stop` (then aborts the rest), merges their recorders, and
/// counts what was still in flight — cut off before its bookkeeping — as timeouts.
pub(crate) async fn finish(
    mut tasks: tokio::task::JoinSet<()>,
    hard_stop: Instant,
    shards: &[Mutex<Recorder>],
    in_flight: &AtomicU64,
) -> Recorder {
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout_at(hard_stop.into(), all_done)
        .await
        .is_err()
    {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    let mut total = Recorder::default();
    for shard in shards {
        if let Ok(r) = shard.lock() {
            total.merge(&r);
        }
    }
    let cut = in_flight.load(Ordering::Relaxed);
    if cut > 0 {
        *total.errors.entry(ErrorKind::Timeout).or_default() += cut;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::scenario::{Kind, PlanInput};
    use crate::harness::target::{parse_named_target, TargetKind};

    fn plan(kind: Kind) -> Plan {
        Plan::new(
            kind,
            &PlanInput {
                event_ms: 10,
                stream_life: Duration::from_secs(1),
                overlay: None,
            },
        )
    }

    #[test]
    fn requests_carry_credentials_only_where_needed_and_rotate() {
        let u = parse_named_target("http://127.0.0.1:9").unwrap().1;
        let creds: Vec<Credentials> = (0..3)
            .map(|i| Credentials {
                account_id: format!("acct-{i}"),
                access_token: format!("tok-{i}"),
            })
            .collect();
        let p = plan(Kind::Big);
        let bodies: Vec<Bytes> = p
            .variants
            .iter()
            .map(|v| Bytes::from(vec![b'x'; v.body_bytes]))
            .collect();
        let direct = Prepared::new(
            &Target::new("d", TargetKind::Direct, &u, None),
            &p,
            &bodies,
            &creds,
        );
        let r0 = String::from_utf8_lossy(&direct.pick(0).head).to_string();
        let r1 = String::from_utf8_lossy(&direct.pick(1).head).to_string();
        assert!(r0.contains("chatgpt-account-id: acct-0\r\n") && r0.contains("Bearer tok-0"));
        assert!(r1.contains("chatgpt-account-id: acct-1\r\n"));
        assert!(r0.contains("content-length: 200000\r\n"));
        assert_eq!(
            direct.pick(0).body.len(),
            200_000,
            "large bodies go in their own write"
        );
        let gw = Prepared::new(
            &Target::new("g", TargetKind::Gateway, &u, None),
            &p,
            &bodies,
            &creds,
        );
        let g0 = String::from_utf8_lossy(&gw.pick(0).head).to_string();
        assert!(!g0.to_ascii_lowercase().contains("authorization"));
        assert!(g0.starts_with("POST /backend-api/codex/responses HTTP/1.1\r\n"));
        let mut keyed = Target::new("g", TargetKind::Gateway, &u, None);
        keyed.api_key = Some("sk-clb-test".into());
        let keyed = Prepared::new(&keyed, &p, &bodies, &creds);
        for n in 0..3 {
            let h = String::from_utf8_lossy(&keyed.pick(n).head).to_string();
            assert!(
                h.contains("\r\nauthorization: Bearer sk-clb-test\r\n"),
                "{h}"
            );
            assert!(!h.contains("chatgpt-account-id"));
            assert!(h.ends_with("\r\n\r\n"));
        }
    }

    #[test]
    fn small_bodies_are_inlined() {
        let u = parse_named_target("http://127.0.0.1:9").unwrap().1;
        let p = plan(Kind::Short);
        let prepared = Prepared::new(
            &Target::new("g", TargetKind::Gateway, &u, None),
            &p,
            &[Bytes::from_static(b"{}")],
            &[],
        );
        let r = prepared.pick(5);
        assert!(r.head.ends_with(b"\r\n\r\n{}") && r.body.is_empty());
    }
}
