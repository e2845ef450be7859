//! The `ws` scenario's load: `concurrency` clients on the Codex WebSocket transport (`GET
//! /backend-api/codex/responses` with `Upgrade: websocket` and `OpenAI-Beta:
//! responses_websockets=…`), each running turns back to back on its own socket: one
//! `response.create` text message, then one text message per event until `response.completed`.
//!
//! Each turn is timed from just before its `response.create` is written: the first message of any
//! kind (time to first event, kept in the recorder's `ttfb`), the first answer delta (`ttfd`), the
//! gaps between deltas (`gap`) and the terminal event (`total`). Messages count as events and
//! their payload bytes as bytes received (no frame headers). The upgrade (TCP connect to the 101)
//! is timed apart (`upgrade`) and belongs to no turn.
//!
//! Bounds, as in the closed loop (`driver`): no turn starts after the duration or past
//! `--requests`; each turn, and each upgrade, gets `--timeout`; a hard stop follows the drain.
//! A socket that breaks (closed, reset, timed out, a binary message) is dropped and the client's
//! next turn opens a new one; a refused or failed upgrade counts as a failed turn and the client
//! waits [`RETRY_PAUSE`] before the next, so a refusing target is not hammered. At the end every
//! socket is closed with a close frame, waiting at most [`CLOSE_WAIT`] for the peer's.
//!
//! Handshake, framing and masking are tokio-tungstenite's; this module never frames bytes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::{client_async, WebSocketStream};

use super::body::codex_body;
use super::driver::{Bounds, Credentials, CODEX_VERSION};
use super::live::{Live, StreamGuard};
use super::record::{ErrorKind, Outcome, Recorder};
use super::scenario::Plan;
use super::sse::{classify, json_type, Event};
use super::target::Target;

/// The `OpenAI-Beta` value that asks for the transport, as the Codex CLI sends it.
pub const BETA: &str = "responses_websockets=2026-02-06";
/// Pause after a failed upgrade before the client tries again.
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest wait for the peer's close frame when the run closes a socket.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Recorder shards, as in `driver`: locked once per finished turn.
const SHARDS: usize = 16;

type Ws = WebSocketStream<TcpStream>;

/// The conversation of socket `i`: its `prompt_cache_key` and `session_id`, so a gateway's
/// stickiness sees one conversation per socket, as with the Codex CLI.
fn conversation(i: usize) -> String {
    format!("0199a0b0-0000-7000-9000-{i:012x}")
}

/// One `response.create` message per socket: the variant the plan gives request `i`, as the
/// Codex CLI sends it (the turn body with `"type":"response.create"` first).
pub fn messages(plan: &Plan, sockets: usize) -> Vec<Utf8Bytes> {
    (0..sockets.max(1))
        .map(|i| {
            let v = &plan.variants[plan.variant_index(i as u64)];
            let body = codex_body(&v.mock, v.body_bytes, &conversation(i));
            let fields = body.get(1..).unwrap_or_default();
            let mut text = String::with_capacity(body.len() + 32);
            text.push_str(r#"{"type":"response.create","#);
            text.push_str(&String::from_utf8_lossy(fields));
            Utf8Bytes::from(text)
        })
        .collect()
}

/// Everything the clients send to one target: its address and URL, and per socket the upgrade's
/// headers and the turn message.
pub struct WsPrepared {
    addr: SocketAddr,
    url: String,
    heads: Vec<Vec<(HeaderName, HeaderValue)>>,
    messages: Arc<Vec<Utf8Bytes>>,
}

impl WsPrepared {
    /// Socket `i` carries account `i mod n`'s credentials where the target needs them (the mock,
    /// nginx), the proxy API key where it has one, else no authorization.
    pub fn new(
        target: &Target,
        messages: Arc<Vec<Utf8Bytes>>,
        creds: &[Credentials],
    ) -> anyhow::Result<WsPrepared> {
        let heads = (0..messages.len())
            .map(|i| {
                let mut h = vec![
                    ("openai-beta", BETA.to_string()),
                    ("originator", "codex_cli_rs".to_string()),
                    ("version", CODEX_VERSION.to_string()),
                    (
                        "user-agent",
                        format!("codex_cli_rs/{CODEX_VERSION} (codex-lb loadtest)"),
                    ),
                    ("session_id", conversation(i)),
                ];
                if target.account_headers && !creds.is_empty() {
                    let c = &creds[i % creds.len()];
                    h.push(("authorization", format!("Bearer {}", c.access_token)));
                    h.push(("chatgpt-account-id", c.account_id.clone()));
                } else if let Some(key) = &target.api_key {
                    h.push(("authorization", format!("Bearer {key}")));
                }
                h.into_iter()
                    .map(|(k, v)| {
                        let v = HeaderValue::try_from(v)
                            .with_context(|| format!("the {k} header of socket {i}"))?;
                        Ok((HeaderName::from_static(k), v))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(WsPrepared {
            addr: target.addr,
            url: format!("ws://{}{}", target.host, target.path),
            heads,
            messages,
        })
    }
}

struct Shared {
    prepared: Arc<WsPrepared>,
    live: Arc<Live>,
    bounds: Bounds,
    tickets: AtomicU64,
    in_flight: AtomicU64,
    shards: Vec<Mutex<Recorder>>,
}

/// An open socket, counted in `Live::open` while it lives.
struct Open<'a> {
    ws: Ws,
    _counted: StreamGuard<'a>,
}

impl Shared {
    fn ticket(&self) -> bool {
        let n = self.tickets.fetch_add(1, Ordering::Relaxed);
        self.bounds.max_requests.is_none_or(|max| n < max)
    }

    fn record(&self, socket: usize, out: &Outcome) {
        if let Ok(mut r) = self.shards[socket % SHARDS].lock() {
            r.record(out);
        }
        self.live.finished(out.error.is_some());
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Client `socket`: turns back to back until the deadline, then a clean close.
    async fn client(&self, socket: usize, deadline: Instant) {
        let p = &self.prepared;
        let msg = &p.messages[socket % p.messages.len()];
        let mut open: Option<Open<'_>> = None;
        while Instant::now() < deadline && self.ticket() {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            let ws = match &mut open {
                Some(o) => &mut o.ws,
                None => {
                    let up = tokio::time::timeout(self.bounds.timeout, self.upgrade(socket)).await;
                    match up.unwrap_or(Err(ErrorKind::Timeout)) {
                        Ok(ws) => {
                            let o = open.insert(Open {
                                ws,
                                _counted: self.live.open_stream(),
                            });
                            &mut o.ws
                        }
                        Err(kind) => {
                            let out = Outcome {
                                error: Some(kind),
                                ..Outcome::default()
                            };
                            self.record(socket, &out);
                            tokio::time::sleep(RETRY_PAUSE).await;
                            continue;
                        }
                    }
                }
            };
            let start = Instant::now();
            let out = match tokio::time::timeout(self.bounds.timeout, turn(ws, msg, start)).await {
                Ok((out, reusable)) => {
                    if !reusable {
                        open = None;
                    }
                    out
                }
                Err(_) => {
                    open = None;
                    Outcome {
                        error: Some(ErrorKind::Timeout),
                        total: start.elapsed(),
                        ..Outcome::default()
                    }
                }
            };
            self.record(socket, &out);
        }
        if let Some(mut o) = open.take() {
            close(&mut o.ws).await;
        }
    }

    /// TCP connect and the WebSocket handshake with socket `socket`'s headers; the time to the
    /// 101 goes to the recorder.
    async fn upgrade(&self, socket: usize) -> Result<Ws, ErrorKind> {
        let p = &self.prepared;
        let started = Instant::now();
        let tcp = TcpStream::connect(p.addr)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        // Turn messages and events are small; Nagle would hold them back.
        let _ = tcp.set_nodelay(true);
        let mut req = p
            .url
            .as_str()
            .into_client_request()
            .map_err(|_| ErrorKind::Protocol)?;
        for (k, v) in &p.heads[socket % p.heads.len()] {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let ws = match client_async(req, tcp).await {
            Ok((ws, _)) => ws,
            Err(WsError::Http(r)) => return Err(ErrorKind::Status(r.status().as_u16())),
            Err(WsError::Io(_) | WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                return Err(ErrorKind::Io)
            }
            Err(_) => return Err(ErrorKind::Protocol),
        };
        if let Ok(mut r) = self.shards[socket % SHARDS].lock() {
            r.upgrade.record(started.elapsed());
        }
        Ok(ws)
    }
}

/// One turn on an open socket; durations from `start`. Returns the outcome and whether the
/// socket can carry the next turn (a failed turn answered in-band leaves it open; a broken
/// socket does not).
async fn turn(ws: &mut Ws, msg: &Utf8Bytes, start: Instant) -> (Outcome, bool) {
    let mut out = Outcome {
        sent: msg.len() as u64,
        ..Outcome::default()
    };
    let mut last_delta: Option<Instant> = None;
    let reusable = if ws.send(Message::Text(msg.clone())).await.is_err() {
        out.error = Some(ErrorKind::Io);
        false
    } else {
        loop {
            let m = match ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(_)) | None => {
                    out.error = Some(ErrorKind::Truncated);
                    break false;
                }
            };
            let now = Instant::now();
            match m {
                Message::Text(t) => {
                    out.events += 1;
                    out.bytes += t.len() as u64;
                    out.ttfb.get_or_insert(now - start);
                    match event_of(t.as_bytes()) {
                        Event::Delta => {
                            match last_delta {
                                None => out.ttfd = Some(now - start),
                                Some(prev) => out.gaps_us.push((now - prev).as_micros() as u64),
                            }
                            last_delta = Some(now);
                        }
                        Event::Completed => break true,
                        Event::Failed => {
                            out.error = Some(ErrorKind::FailedEvent);
                            break true;
                        }
                        Event::Other => {}
                    }
                }
                Message::Binary(_) => {
                    out.error = Some(ErrorKind::Protocol);
                    break false;
                }
                Message::Close(_) => {
                    out.error = Some(ErrorKind::Truncated);
                    break false;
                }
                // tungstenite answers pings itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    };
    out.total = start.elapsed();
    (out, reusable)
}

/// The meaning of one event message: its `"type"`, read from the front where every Responses
/// event has it, else from the parsed object (a wrapped error frame may order keys otherwise).
fn event_of(text: &[u8]) -> Event {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    match json_type(text) {
        Some(t) => classify(t),
        None => serde_json::from_slice::<Typed>(text)
            .ok()
            .and_then(|t| t.kind)
            .map_or(Event::Other, |k| classify(k.as_bytes())),
    }
}

/// Sends a close frame and waits (bounded) for the peer's, so the target sees a clean close.
async fn close(ws: &mut Ws) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Runs the `ws` load at one target; returns the merged tally. `live.started` is time zero.
pub async fn drive(prepared: Arc<WsPrepared>, bounds: Bounds, live: Arc<Live>) -> Recorder {
    let deadline = live.started + bounds.duration;
    let shared = Arc::new(Shared {
        prepared,
        live,
        bounds,
        tickets: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        shards: (0..SHARDS)
            .map(|_| Mutex::new(Recorder::default()))
            .collect(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for socket in 0..bounds.concurrency {
        let s = shared.clone();
        tasks.spawn(async move { s.client(socket, deadline).await });
    }
    let hard_stop = deadline + bounds.timeout + CLOSE_WAIT + Duration::from_secs(1);
    super::driver::finish(tasks, hard_stop, &shared.shards, &shared.in_flight).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::scenario::{Kind, PlanInput};
    use crate::harness::target::{parse_named_target, TargetKind};
    use crate::harness::upstream::HUGE_CAPACITY;
    use crate::mock::{MockConfig, MockUpstream};
    use serde_json::Value;

    fn plan() -> Plan {
        Plan::new(
            Kind::Ws,
            &PlanInput {
                event_ms: 10,
                stream_life: Duration::from_secs(1),
                overlay: None,
            },
        )
    }

    fn creds(n: usize) -> Vec<Credentials> {
        (0..n)
            .map(|i| Credentials {
                account_id: format!("acct-{i}"),
                access_token: format!("tok-{i}"),
            })
            .collect()
    }

    fn bounds(concurrency: usize, duration: Duration) -> Bounds {
        Bounds {
            concurrency,
            duration,
            max_requests: None,
            timeout: Duration::from_secs(10),
            read_buf: 0,
        }
    }

    fn header<'a>(p: &'a WsPrepared, socket: usize, name: &str) -> Option<&'a str> {
        p.heads[socket]
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn each_socket_sends_a_response_create_of_its_own_conversation() {
        let m = messages(&plan(), 3);
        assert_eq!(m.len(), 3);
        assert!(m[0]
            .as_str()
            .starts_with(r#"{"type":"response.create","model":"#));
        let v: Vec<Value> = m
            .iter()
            .map(|t| serde_json::from_str(t.as_str()).unwrap())
            .collect();
        assert_eq!(v[0]["type"], "response.create");
        assert_eq!(v[0]["model"], "gpt-5.5");
        assert_eq!(v[0]["store"], false);
        assert_ne!(v[0]["prompt_cache_key"], v[1]["prompt_cache_key"]);
        let last = v[2]["input"].as_array().unwrap().last().unwrap();
        let text = last["content"][0]["text"].as_str().unwrap();
        assert!(
            text.contains("[[mock {") && text.contains(r#""deltas":32"#),
            "{text}"
        );
    }

    #[test]
    fn upgrade_headers_carry_what_each_target_needs() {
        let u = parse_named_target("http://127.0.0.1:9").unwrap().1;
        let m = Arc::new(messages(&plan(), 3));
        let direct = WsPrepared::new(
            &Target::new("d", TargetKind::Direct, &u, None),
            m.clone(),
            &creds(2),
        )
        .unwrap();
        assert_eq!(direct.url, "ws://127.0.0.1:9/backend-api/codex/responses");
        assert_eq!(header(&direct, 0, "openai-beta"), Some(BETA));
        assert_eq!(header(&direct, 0, "authorization"), Some("Bearer tok-0"));
        assert_eq!(header(&direct, 1, "chatgpt-account-id"), Some("acct-1"));
        assert_eq!(header(&direct, 2, "chatgpt-account-id"), Some("acct-0"));
        let v: Value = serde_json::from_str(m[1].as_str()).unwrap();
        assert_eq!(
            header(&direct, 1, "session_id"),
            v["prompt_cache_key"].as_str()
        );
        let gw = WsPrepared::new(
            &Target::new("g", TargetKind::Gateway, &u, None),
            m.clone(),
            &creds(2),
        )
        .unwrap();
        assert_eq!(header(&gw, 0, "authorization"), None);
        assert_eq!(header(&gw, 0, "chatgpt-account-id"), None);
        assert_eq!(header(&gw, 0, "openai-beta"), Some(BETA));
        let mut keyed = Target::new("g", TargetKind::Gateway, &u, None);
        keyed.api_key = Some("sk-clb-test".into());
        let keyed = WsPrepared::new(&keyed, m, &creds(2)).unwrap();
        assert_eq!(
            header(&keyed, 2, "authorization"),
            Some("Bearer sk-clb-test")
        );
    }

    #[test]
    fn event_types_from_the_front_or_from_the_object() {
        assert_eq!(
            event_of(br#"{"type":"response.output_text.delta","delta":"x"}"#),
            Event::Delta
        );
        assert_eq!(
            event_of(br#"{"type":"response.completed","response":{}}"#),
            Event::Completed
        );
        assert_eq!(
            event_of(br#"{"status":429,"type":"error","error":{"type":"usage_limit_reached"}}"#),
            Event::Failed
        );
        assert_eq!(event_of(br#"{"type":"codex.rate_limits"}"#), Event::Other);
        assert_eq!(event_of(b"not json"), Event::Other);
    }

    /// The whole client against the mock's own WebSocket route: sockets kept across turns,
    /// every turn complete, the socket count back to zero, `--requests` honoured, and a refused
    /// upgrade counted and paced.
    #[test]
    fn turns_against_the_mock_over_websocket() {
        let mock = MockUpstream::start(MockConfig {
            accounts: 2,
            worker_threads: 1,
            primary_capacity_tokens: HUGE_CAPACITY,
            secondary_capacity_tokens: HUGE_CAPACITY,
            ..MockConfig::default()
        })
        .unwrap();
        let creds: Vec<Credentials> = mock
            .accounts()
            .iter()
            .map(|a| Credentials {
                account_id: a.chatgpt_account_id.clone(),
                access_token: a.access_token.clone(),
            })
            .collect();
        let url = parse_named_target(&format!("http://{}", mock.addr()))
            .unwrap()
            .1;
        let target = Target::new("direct", TargetKind::Direct, &url, None);
        let p = Arc::new(WsPrepared::new(&target, Arc::new(messages(&plan(), 2)), &creds).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();

        let live = Arc::new(Live::new());
        let rec = rt.block_on(drive(
            p.clone(),
            bounds(2, Duration::from_millis(300)),
            live.clone(),
        ));
        assert_eq!(rec.error_total(), 0, "{:?}", rec.errors);
        assert!(rec.ok >= 2, "{}", rec.ok);
        assert_eq!(rec.upgrade.count(), 2, "one socket per client, kept");
        assert!(rec.events >= rec.ok * 32, "{} events", rec.events);
        assert_eq!((rec.ttfb.count(), rec.total.count()), (rec.ok, rec.ok));
        assert_eq!(rec.ttfd.count(), rec.ok);
        assert!(rec.ttfb.quantile_ms(0.5) <= rec.total.quantile_ms(0.5));
        let turns: u64 = creds.iter().map(|c| mock.ws_turns(&c.account_id)).sum();
        assert_eq!(turns, rec.ok);
        assert_eq!(live.open.load(Ordering::Relaxed), 0);
        assert_eq!(live.open_peak.load(Ordering::Relaxed), 2);
        assert_eq!(live.done.load(Ordering::Relaxed), rec.ok);

        let mut b = bounds(2, Duration::from_secs(5));
        b.max_requests = Some(5);
        let rec = rt.block_on(drive(p.clone(), b, Arc::new(Live::new())));
        assert_eq!((rec.ok, rec.error_total()), (5, 0), "{:?}", rec.errors);

        mock.set_websockets(false);
        let rec = rt.block_on(drive(
            p,
            bounds(2, Duration::from_millis(200)),
            Arc::new(Live::new()),
        ));
        assert_eq!(rec.ok, 0);
        let refused = rec
            .errors
            .get(&ErrorKind::Status(426))
            .copied()
            .unwrap_or(0);
        assert_eq!(refused, rec.error_total(), "{:?}", rec.errors);
        // Paced by RETRY_PAUSE: at most one attempt per 50 ms per client (plus the first).
        assert!((2..=2 * (200 / 50 + 2)).contains(&refused), "{refused}");
    }
}
