//! Faults and attacks: an upstream that breaks mid-stream in every way it can (reset, clean close,
//! malformed SSE, bad chunking, silence), storms of abandoned and slow clients, and hostile request
//! framing. Each fault ends in a well-formed answer (a `response.failed` event, a 4xx envelope or a
//! closed connection), never a hang or a panic, and never blames the account or disturbs other
//! clients.
//!
//! Malformed upstream bytes the mock cannot produce come from [`FaultUpstream`], a small proxy in
//! front of the mock that answers a turn whose text holds `[[fault NAME]]` with canned bytes and
//! forwards everything else.
//!
//! Not repeated here (tests/bad_input.rs has them): duplicate `Content-Length`, `Content-Length`
//! with `Transfer-Encoding`, the head-size limit at and past, the single slow client.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{parse_raw_response, read_until_close, turn_body, Env, Reply};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(5);

/// Storms take the gate exclusively: their latency and RSS figures are not shared with other
/// tests of this file running alongside.
static GATE: RwLock<()> = RwLock::new(());

fn light() -> std::sync::RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(PoisonError::into_inner)
}

fn heavy() -> std::sync::RwLockWriteGuard<'static, ()> {
    GATE.write().unwrap_or_else(PoisonError::into_inner)
}

// === Upstream faults ===

/// A proxy between the gateway and the mock. A request whose bytes hold `[[fault NAME]]` is
/// answered with the canned bytes of that fault and the connection closed; anything else is
/// forwarded to the mock (one request per mock connection, `connection: close`).
struct FaultUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultUpstream {
    fn start(mock: SocketAddr) -> FaultUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fault upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        std::thread::spawn(move || serve_fault_conn(s, mock));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultUpstream {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}/backend-api", self.addr)
    }
}

impl Drop for FaultUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request (head + Content-Length body) from `s`, with `buf` holding bytes read ahead.
fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + body_len {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(buf.drain(..head_end + body_len).collect())
}

fn serve_fault_conn(mut s: TcpStream, mock: SocketAddr) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut s, &mut buf) {
        if let Some(name) = fault_name(&req) {
            write_fault(&mut s, &name);
            return;
        }
        // Forward on a connection of its own that the mock closes after its answer.
        let Ok(mut up) = TcpStream::connect(mock) else {
            return;
        };
        let line_end = req.windows(2).position(|w| w == b"\r\n").unwrap_or(0) + 2;
        let mut out = req[..line_end].to_vec();
        out.extend_from_slice(b"connection: close\r\n");
        out.extend_from_slice(&req[line_end..]);
        if up.write_all(&out).is_err() {
            return;
        }
        let mut answer = Vec::new();
        let _ = up.read_to_end(&mut answer);
        if answer.is_empty() || s.write_all(&answer).is_err() {
            return;
        }
    }
}

fn fault_name(req: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(req);
    let at = text.find("[[fault ")? + "[[fault ".len();
    let end = text[at..].find("]]")?;
    Some(text[at..at + end].to_string())
}

const CREATED: &str = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_fault\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-5.5\",\"output\":[]}}\n\n";
const DELTA: &str = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_fault\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hello\"}\n\n";
const COMPLETED: &str = "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{\"id\":\"resp_fault\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-5.5\",\"output\":[],\"usage\":{\"input_tokens\":11,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":7,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":18}}}\n\n";

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The canned answer of fault `name`: a 200 SSE head, then the pieces written one by one (the
/// gateway reads them as separate arrivals), then the connection is closed.
fn write_fault(s: &mut TcpStream, name: &str) {
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    let last: &[u8] = b"0\r\n\r\n";
    let pieces: Vec<Vec<u8>> = match name {
        // A data line cut inside its JSON, then a clean end of the body.
        "malformed_json" => vec![
            chunk(CREATED.as_bytes()),
            chunk(DELTA.as_bytes()),
            chunk(b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"unterminat\n\n"),
            last.to_vec(),
        ],
        // Binary garbage with no line end at all, then a clean end of the body.
        "garbage_bytes" => vec![
            chunk(CREATED.as_bytes()),
            chunk(DELTA.as_bytes()),
            chunk(b"\x00\xff\xfe\xfd garbage \x80\x81\x82 with no line end \xc3\x28"),
            last.to_vec(),
        ],
        // A chunk-size line that is not hex: the body's framing is broken.
        "bad_chunking" => vec![
            chunk(CREATED.as_bytes()),
            chunk(DELTA.as_bytes()),
            b"zz\r\nnot a chunk\r\n".to_vec(),
        ],
        // The terminal event itself is torn: its name says completed, its data is not JSON.
        "malformed_terminal" => vec![
            chunk(CREATED.as_bytes()),
            chunk(DELTA.as_bytes()),
            chunk(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_fault\",\"usage\":{\"input_tok\n\n"),
            last.to_vec(),
        ],
        // Junk between good events, then a good terminal event.
        "garbage_then_completed" => vec![
            chunk(CREATED.as_bytes()),
            chunk(b"data: {oops, not json\n\n"),
            chunk(b"\xff\xfe\xfd\x00\n\n"),
            chunk(DELTA.as_bytes()),
            chunk(COMPLETED.as_bytes()),
            last.to_vec(),
        ],
        // A valid terminal event larger than the relay's 16 MiB capture cap (a long answer
        // repeated in `output`).
        "huge_terminal" => {
            let pad = "x".repeat(17 * 1024 * 1024);
            let completed = COMPLETED.replace(
                "\"output\":[]",
                &format!("\"output\":[{{\"type\":\"message\",\"content\":[{{\"type\":\"output_text\",\"text\":\"{pad}\"}}]}}]"),
            );
            vec![
                chunk(CREATED.as_bytes()),
                chunk(DELTA.as_bytes()),
                chunk(completed.as_bytes()),
                last.to_vec(),
            ]
        }
        other => panic!("unknown fault {other}"),
    };
    if s.write_all(head).is_err() {
        return;
    }
    for p in pieces {
        std::thread::sleep(Duration::from_millis(20));
        if s.write_all(&p).is_err() {
            return;
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    let _ = s.shutdown(Shutdown::Both);
}

/// A mock with one account and a gateway whose upstream is a [`FaultUpstream`] in front of it.
fn env_with_fault_upstream() -> (Env, FaultUpstream) {
    let env = Env::start(1);
    let fault = FaultUpstream::start(env.mock.addr());
    let url = fault.base_url();
    (restart_with_upstream(env, &url), fault)
}

/// Restarts `env`'s gateway on its data dir with its upstream replaced by `url`.
fn restart_with_upstream(mut env: Env, url: &str) -> Env {
    env.gateway
        .take()
        .expect("running")
        .shutdown()
        .expect("clean shutdown");
    let mut s = env.settings.clone();
    s.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    s.upstream = codex_lb::config::UpstreamUrl::parse(url).expect("upstream url");
    let g = codex_lb::Gateway::start(s.clone()).expect("gateway restarts");
    env.addr = g.local_addr();
    env.gateway = Some(g);
    env.settings = s;
    env
}

/// The `data:` JSON of the last SSE block of a reply, which must be the body's final event.
fn last_event(reply: &Reply) -> Value {
    let text = reply.text().replace("\r\n", "\n");
    let block = text
        .trim_end_matches('\n')
        .rsplit("\n\n")
        .next()
        .unwrap_or_default()
        .to_string();
    let data = block
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("last block has no data line: {block:?}"));
    serde_json::from_str(data)
        .unwrap_or_else(|e| panic!("last event is not JSON ({e}): {data:?}\nwhole body: {text}"))
}

/// The request-log row of `request_id`, once the ledger has it.
fn request_row(env: &Env, request_id: &str) -> Value {
    env.wait_for(Duration::from_secs(5), |e| {
        let rows = e.get_json("/api/requests?limit=50");
        rows["requests"]
            .as_array()?
            .iter()
            .find(|r| r["request_id"] == request_id)
            .cloned()
    })
    .unwrap_or_else(|| panic!("{request_id} never reached the request log"))
}

/// The turn that meets a fault got a 200 stream that ends in a well-formed `response.failed`
/// with `code`; it is logged as an upstream error with that code; the account is neither blocked
/// nor cooled down: the next turns are served by it.
fn assert_fault_contained(env: &Env, text: &str, scenario: Option<Value>, code: &str) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let id = format!(
        "fault-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let scenario = scenario.map(|s| s.to_string());
    let mut headers = vec![("x-request-id", id.as_str())];
    if let Some(s) = &scenario {
        headers.push(("x-mock-scenario", s.as_str()));
    }
    let started = Instant::now();
    let reply = env.turn(&turn_body(text), &headers);
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{text}: {}", reply.text());
    let last = last_event(&reply);
    assert_eq!(last["type"], "response.failed", "{text}: {}", reply.text());
    assert_eq!(last["response"]["status"], "failed", "{last}");
    assert_eq!(last["response"]["error"]["code"], code, "{text}: {last}");
    assert!(last["response"]["error"]["message"].is_string(), "{last}");
    let row = request_row(env, &id);
    assert_eq!(row["outcome"], "upstream_error", "{text}: {row}");
    assert_eq!(row["error_code"], code, "{text}: {row}");
    eprintln!("fault {text:?}: response.failed {code} after {took:?}");
    // Not blamed: no block pool-wide, and no local cool-down either (any worker serves next).
    let accounts = env.get_json("/api/accounts");
    for a in accounts["accounts"].as_array().expect("accounts") {
        assert!(a["block_reason"].is_null(), "{text}: account blocked: {a}");
        assert_eq!(a["status"], "active", "{text}: {a}");
    }
    for i in 0..4 {
        let next = env.turn(&turn_body(&format!("after the fault {i}")), &[]);
        assert_eq!(next.status, 200, "{text}: next turn {i}: {}", next.text());
        assert_eq!(
            next.terminal().expect("terminal")["type"],
            "response.completed"
        );
    }
    let health = env
        .wait_for(Duration::from_secs(2), |e| {
            let h = e.get_json("/health");
            (h["metrics"]["streams_open"] == 0).then_some(h)
        })
        .expect("streams_open back to 0");
    assert_eq!(health["panics"], 0, "{health}");
    assert_eq!(health["accounts"]["blocked"], 0, "{health}");
}

#[test]
fn upstream_reset_mid_stream_is_contained() {
    let _g = light();
    let env = Env::start(1);
    assert_fault_contained(
        &env,
        "reset",
        Some(json!({"fail_after_events": 5, "fail_mode": "reset", "deltas": 20})),
        "upstream_connection_error",
    );
}

#[test]
fn upstream_clean_close_before_the_terminal_event_is_contained() {
    let _g = light();
    let env = Env::start(1);
    assert_fault_contained(
        &env,
        "eof",
        Some(json!({"fail_after_events": 5, "fail_mode": "eof", "deltas": 20})),
        "upstream_stream_truncated",
    );
}

#[test]
fn upstream_error_event_then_close_is_contained_with_the_upstream_code() {
    // The upstream said why (`server_error`); the closing `response.failed` and the request log
    // keep its word rather than a generic "truncated" (the Codex CLI decides on retries by it).
    let _g = light();
    let env = Env::start(1);
    assert_fault_contained(
        &env,
        "error event",
        Some(json!({"fail_after_events": 5, "fail_mode": "error_event", "deltas": 20})),
        "server_error",
    );
}

#[test]
fn upstream_silence_past_the_idle_timeout_is_contained() {
    let _g = light();
    let env = Env::start_with(1, |s| s.upstream_idle_timeout = Duration::from_secs(1));
    let started = Instant::now();
    assert_fault_contained(
        &env,
        "stall",
        Some(json!({"deltas": 3, "delay_ms": 4000})),
        "upstream_timeout",
    );
    // Four follow-up turns ran too; the stalled one was cut near the 1 s limit, not at 4 s.
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(env.get_json("/health")["metrics"]["timeouts"].as_u64() >= Some(1));
    let cut = env
        .wait_for(Duration::from_secs(3), |e| {
            e.mock.cancelled_streams().first().map(|(_, at)| *at)
        })
        .expect("the mock saw the stalled stream end");
    assert!(cut.duration_since(started) < Duration::from_millis(3000));
}

#[test]
fn upstream_malformed_json_line_then_close_is_contained() {
    let _g = light();
    let (env, _fault) = env_with_fault_upstream();
    assert_fault_contained(
        &env,
        "[[fault malformed_json]]",
        None,
        "upstream_stream_truncated",
    );
}

#[test]
fn upstream_garbage_bytes_then_close_are_contained() {
    let _g = light();
    let (env, _fault) = env_with_fault_upstream();
    assert_fault_contained(
        &env,
        "[[fault garbage_bytes]]",
        None,
        "upstream_stream_truncated",
    );
}

#[test]
fn upstream_broken_chunk_framing_is_contained() {
    let _g = light();
    let (env, _fault) = env_with_fault_upstream();
    assert_fault_contained(
        &env,
        "[[fault bad_chunking]]",
        None,
        "upstream_protocol_error",
    );
}

#[test]
fn upstream_torn_terminal_event_is_not_taken_for_a_completion() {
    let _g = light();
    let (env, _fault) = env_with_fault_upstream();
    assert_fault_contained(
        &env,
        "[[fault malformed_terminal]]",
        None,
        "upstream_protocol_error",
    );
}

#[test]
fn upstream_junk_between_good_events_is_relayed_and_the_good_terminal_counts() {
    // A splicing relay does not judge event payloads it does not read: junk lines go to the
    // client as they came (the Codex CLI skips events it cannot parse), and the valid terminal
    // event decides the outcome and the usage.
    let _g = light();
    let (env, _fault) = env_with_fault_upstream();
    let reply = env.turn(
        &turn_body("[[fault garbage_then_completed]]"),
        &[("x-request-id", "junk-then-completed")],
    );
    assert_eq!(reply.status, 200);
    assert!(reply.body.windows(6).any(|w| w == b"\xff\xfe\xfd\x00\n\n"));
    let last = last_event(&reply);
    assert_eq!(last["type"], "response.completed", "{}", reply.text());
    let row = request_row(&env, "junk-then-completed");
    assert_eq!(row["outcome"], "completed", "{row}");
    assert_eq!(row["total_tokens"], 18, "{row}");
    assert_eq!(env.get_json("/health")["panics"], 0);
}

#[test]
fn a_terminal_event_larger_than_the_capture_cap_still_completes_the_turn() {
    let _g = light();
    let (env, _fault) = env_with_fault_upstream();
    let reply = env.turn(
        &turn_body("[[fault huge_terminal]]"),
        &[("x-request-id", "huge-terminal")],
    );
    assert_eq!(reply.status, 200);
    assert!(reply.body.len() > 17 * 1024 * 1024);
    let last = last_event(&reply);
    assert_eq!(
        last["type"],
        "response.completed",
        "{}",
        reply.text().chars().take(2000).collect::<String>()
    );
    let row = request_row(&env, "huge-terminal");
    assert_eq!(row["outcome"], "completed", "{row}");
    assert_eq!(row["total_tokens"], 18, "{row}");
}

// === Client storms ===

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Turns made by a "normal" client in a thread until `stop`: every latency, and any failure.
fn normal_client(env: &Env, stop: &AtomicBool) -> (Vec<Duration>, Vec<String>) {
    let mut lat = Vec::new();
    let mut bad = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let reply = env.turn(&turn_body("a normal turn during the storm"), &[]);
        lat.push(t.elapsed());
        let ok = reply.status == 200
            && reply
                .terminal()
                .is_some_and(|t| t["type"] == "response.completed");
        if !ok {
            bad.push(format!("{} {}", reply.status, reply.text()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (lat, bad)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn wait_connections_drained(env: &Env, limit: Duration) -> Value {
    let mut last = Value::Null;
    let drained = env.wait_for(limit, |e| {
        last = e.get_json("/health");
        // The `/health` request's own connection is open while it is answered.
        (last["metrics"]["connections_open"].as_u64() <= Some(1)).then_some(())
    });
    assert!(drained.is_some(), "connections still open: {last}");
    last
}

/// Sets SO_LINGER 0 so that dropping the socket sends RST instead of FIN.
fn abortive(s: TcpStream) -> TcpStream {
    let sock = socket2::Socket::from(s);
    sock.set_linger(Some(Duration::ZERO)).expect("linger");
    sock.into()
}

#[test]
fn a_storm_of_abandoned_partial_requests_leaves_normal_clients_served() {
    const STORM: usize = 5000;
    const BATCH: usize = 250;
    let _g = heavy();
    let env = Env::start(1);
    let rss_before = rss_kib();
    let stop = AtomicBool::new(false);
    let body = turn_body("a body that will never be finished");
    let partials: [Vec<u8>; 4] = [
        // Half a head.
        b"POST /backend-api/codex/responses HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-ty".to_vec(),
        // A whole head and half its body.
        format!(
            "POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
            body.len(),
            &body[..body.len() / 2]
        )
        .into_bytes(),
        // Nothing at all.
        Vec::new(),
        // A chunked body that stops mid-chunk.
        b"POST /v1/responses HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n400\r\n{\"model\":".to_vec(),
    ];
    let started = Instant::now();
    let (lat, bad, opened) = std::thread::scope(|scope| {
        let normal = scope.spawn(|| normal_client(&env, &stop));
        let mut opened = 0usize;
        let mut batch_no = 0usize;
        while opened < STORM {
            let mut batch = Vec::with_capacity(BATCH);
            for i in 0..BATCH {
                let mut s = TcpStream::connect(env.addr).expect("storm connect");
                let p = &partials[(opened + i) % partials.len()];
                if !p.is_empty() {
                    s.write_all(p).expect("storm write");
                }
                batch.push(s);
            }
            opened += batch.len();
            // Let the gateway read what was sent, then drop the whole batch: RST (SO_LINGER 0)
            // for three batches in four, FIN for the rest.
            std::thread::sleep(Duration::from_millis(20));
            let rst = batch_no % 4 != 3;
            for s in batch {
                if rst {
                    drop(abortive(s));
                } else {
                    drop(s);
                }
            }
            batch_no += 1;
        }
        // Keep the normal client going a little past the storm.
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let (lat, bad) = normal.join().expect("normal client");
        (lat, bad, opened)
    });
    let storm_took = started.elapsed();
    let mut sorted = lat.clone();
    sorted.sort();
    let (p50, max) = (percentile(&sorted, 0.5), percentile(&sorted, 1.0));
    let health = wait_connections_drained(&env, Duration::from_secs(10));
    let rss_after = rss_kib();
    eprintln!(
        "storm: {opened} partial connections in {storm_took:?}; normal client {} turns, p50 {p50:?}, max {max:?}; \
         RSS {} -> {} MiB; accepted {}, open after {}",
        lat.len(),
        rss_before / 1024,
        rss_after / 1024,
        health["metrics"]["connections_accepted"],
        health["metrics"]["connections_open"],
    );
    assert!(bad.is_empty(), "normal turns failed: {bad:?}");
    assert!(lat.len() >= 5, "only {} normal turns ran", lat.len());
    assert!(max < Duration::from_secs(5), "slowest normal turn {max:?}");
    assert_eq!(health["panics"], 0, "{health}");
    assert!(
        health["metrics"]["connections_accepted"].as_u64() >= Some(STORM as u64),
        "{health}"
    );
    assert_eq!(health["metrics"]["requests_in_flight"], 1, "{health}");
    assert!(
        rss_after.saturating_sub(rss_before) < 200 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Still serving.
    assert_eq!(env.turn(&turn_body("after the storm"), &[]).status, 200);
}

#[test]
fn slowloris_heads_are_cut_at_the_head_timeout_while_others_are_served() {
    const SLOW: usize = 1000;
    const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
    let _g = heavy();
    let env = Env::start_with(1, |s| s.head_read_timeout = HEAD_TIMEOUT);
    let rss_before = rss_kib();
    let timeouts_before = env.get_json("/health")["metrics"]["timeouts"]
        .as_u64()
        .unwrap_or(0);
    // A head that is never finished at one byte a second.
    let mut head = b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ".to_vec();
    head.resize(head.len() + 64, b'a');
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (lat, bad, outcome) = std::thread::scope(|scope| {
        let normal = scope.spawn(|| normal_client(&env, &stop));
        let mut socks: Vec<Option<(TcpStream, Vec<u8>)>> = Vec::with_capacity(SLOW);
        for _ in 0..SLOW {
            let mut s = TcpStream::connect(env.addr).expect("slow connect");
            s.write_all(&head[..1]).expect("first byte");
            s.set_nonblocking(true).expect("nonblocking");
            socks.push(Some((s, Vec::new())));
        }
        let opened_at = Instant::now();
        let mut sent = 1;
        let mut closed_at = Vec::new();
        let mut got_408 = 0usize;
        let mut closed_bare = 0usize;
        let mut other = Vec::new();
        let mut last_byte = Instant::now();
        while socks.iter().any(Option::is_some)
            && opened_at.elapsed() < HEAD_TIMEOUT + Duration::from_secs(6)
        {
            // Read first: a socket the gateway answered is written to no more.
            for slot in socks.iter_mut() {
                let Some((s, got)) = slot.as_mut() else {
                    continue;
                };
                let mut buf = [0u8; 1024];
                let ended = loop {
                    match s.read(&mut buf) {
                        Ok(0) => break true,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break true,
                    }
                };
                if ended {
                    closed_at.push(Instant::now());
                    if got.is_empty() {
                        closed_bare += 1;
                    } else {
                        let (status, body) = parse_raw_response(got);
                        if status == 408 && body["error"]["code"] == "request_timeout" {
                            got_408 += 1;
                        } else {
                            other.push(String::from_utf8_lossy(got).into_owned());
                        }
                    }
                    *slot = None;
                }
            }
            if last_byte.elapsed() >= Duration::from_secs(1) && sent < head.len() {
                for (s, got) in socks.iter_mut().flatten() {
                    if got.is_empty() {
                        let _ = s.write(&head[sent..sent + 1]);
                    }
                }
                sent += 1;
                last_byte = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let still_open = socks.iter().filter(|s| s.is_some()).count();
        let slowest = closed_at
            .iter()
            .map(|t| t.duration_since(opened_at))
            .max()
            .unwrap_or_default();
        stop.store(true, Ordering::Relaxed);
        let (lat, bad) = normal.join().expect("normal client");
        (
            lat,
            bad,
            (got_408, closed_bare, other, still_open, slowest, sent),
        )
    });
    let (got_408, closed_bare, other, still_open, slowest, sent) = outcome;
    let mut sorted = lat.clone();
    sorted.sort();
    let (p50, max) = (percentile(&sorted, 0.5), percentile(&sorted, 1.0));
    let health = wait_connections_drained(&env, Duration::from_secs(5));
    let rss_after = rss_kib();
    eprintln!(
        "slowloris: {SLOW} clients, {sent} bytes each at most; {got_408} got 408, {closed_bare} closed bare, \
         {} other, {still_open} still open; last closed {slowest:?} after the last opened (limit {HEAD_TIMEOUT:?}); \
         normal client {} turns, p50 {p50:?}, max {max:?}; RSS {} -> {} MiB; total {:?}",
        other.len(),
        lat.len(),
        rss_before / 1024,
        rss_after / 1024,
        started.elapsed()
    );
    assert_eq!(still_open, 0, "slow connections outlived the head timeout");
    assert!(
        other.is_empty(),
        "unexpected answers: {:?}",
        &other[..other.len().min(3)]
    );
    assert!(
        slowest < HEAD_TIMEOUT + Duration::from_secs(2),
        "last slow client cut {slowest:?} after they were all open"
    );
    assert!(
        got_408 * 10 >= SLOW * 9,
        "only {got_408} of {SLOW} got their 408"
    );
    assert!(bad.is_empty(), "normal turns failed: {bad:?}");
    assert!(lat.len() >= 3, "only {} normal turns ran", lat.len());
    assert!(max < Duration::from_secs(5), "slowest normal turn {max:?}");
    assert_eq!(health["panics"], 0, "{health}");
    let timeouts = health["metrics"]["timeouts"].as_u64().unwrap_or(0) - timeouts_before;
    assert!(timeouts >= SLOW as u64, "{timeouts} head timeouts counted");
    assert!(
        rss_after.saturating_sub(rss_before) < 200 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

// === Bad input ===

/// Sends `request` on a fresh connection (tolerating a write the server cut short), then reads
/// until close. Returns status (0: none), JSON body, whether the server closed, the raw answer.
fn exchange(env: &Env, request: &[u8]) -> (u16, Value, bool, Vec<u8>) {
    let mut s = TcpStream::connect(env.addr).expect("connect");
    let _ = s.write_all(request);
    let (raw, closed) = read_until_close(&mut s, LIMIT);
    let (status, body) = parse_raw_response(&raw);
    (status, body, closed, raw)
}

/// A 4xx envelope with `code` and a closed connection.
fn assert_refused(env: &Env, what: &str, request: &[u8], status: u16, code: &str) {
    let (got, body, closed, raw) = exchange(env, request);
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(got, status, "{what}: {text}");
    assert_eq!(body["error"]["code"], code, "{what}: {text}");
    assert!(
        body["error"]["message"].is_string() && body["error"]["type"].is_string(),
        "{what}: {text}"
    );
    assert!(closed, "{what}: connection left open");
}

fn post_to(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fn turns_served(env: &Env) -> u64 {
    env.turns_by_account().values().sum()
}

fn assert_still_healthy(env: &Env) {
    assert_eq!(env.turn(&turn_body("still fine"), &[]).status, 200);
    assert_eq!(env.get_json("/health")["panics"], 0);
}

#[test]
fn framing_variants_beyond_the_classic_smuggling_shapes_are_refused() {
    let _g = light();
    let env = Env::start(1);
    let cases: [(&str, &[u8]); 6] = [
        (
            "Transfer-Encoding twice",
            b"POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding before Content-Length, odd case",
            b"POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\ntransfer-encoding: CHUNKED\r\nCONTENT-LENGTH: 4\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding identity with Content-Length",
            b"POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\nContent-Length: 4\r\nTransfer-Encoding: identity\r\n\r\nabcd",
        ),
        (
            "Content-Length as a list",
            b"POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\nContent-Length: 4, 4\r\n\r\nabcd",
        ),
        (
            "Content-Length in hex",
            b"POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\nContent-Length: 0x4\r\n\r\nabcd",
        ),
        (
            "Content-Length with a sign",
            b"POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\nContent-Length: +4\r\n\r\nabcd",
        ),
    ];
    for (what, req) in cases {
        assert_refused(&env, what, req, 400, "invalid_framing");
    }
    // A folded Transfer-Encoding is not a header httparse accepts at all.
    assert_refused(
        &env,
        "obs-fold Transfer-Encoding",
        b"POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\nContent-Length: 4\r\nTransfer-Encoding:\r\n chunked\r\n\r\nabcd",
        400,
        "malformed_request",
    );
    assert_eq!(
        turns_served(&env),
        0,
        "a refused request reached the upstream"
    );
    assert_still_healthy(&env);
}

#[test]
fn a_100_kib_header_value_is_431() {
    let _g = light();
    let env = Env::start(1);
    let mut req = b"GET /health HTTP/1.1\r\nhost: x\r\nx-huge: ".to_vec();
    req.resize(req.len() + 100 * 1024, b'h');
    req.extend_from_slice(b"\r\n\r\n");
    let (status, body, closed, raw) = exchange(&env, &req);
    assert!(closed, "connection left open");
    assert_eq!(status, 431, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(body["error"]["code"], "request_header_too_large");
    assert_still_healthy(&env);
}

#[test]
fn non_utf8_bytes_inside_the_json_body_are_400_and_never_forwarded() {
    let _g = light();
    let env = Env::start(1);
    let with_bad_bytes = |text: &str, at: &str| {
        let at = text.find(at).unwrap();
        let mut out = text.as_bytes()[..at].to_vec();
        out.extend_from_slice(b"caf\xe9 \xff\xfe \xc3\x28 \xed\xa0\x80");
        out.extend_from_slice(&text.as_bytes()[at..]);
        out
    };
    let body = turn_body("PLACEHOLDER");
    let in_text = with_bad_bytes(&body, "PLACEHOLDER");
    let in_model = with_bad_bytes(&body, "\",\"instructions\"");
    // The routes that rebuild the body, and a field the gateway reads, refuse it; the last case,
    // bytes inside a field the Codex route passes through untouched, is the one to watch.
    let cases = [
        ("/v1/responses", "in the input text", &in_text),
        (
            "/backend-api/codex/responses/compact",
            "in the input text",
            &in_text,
        ),
        ("/backend-api/codex/responses", "in the model", &in_model),
        (
            "/backend-api/codex/responses",
            "in the input text",
            &in_text,
        ),
    ];
    for (path, what, bytes) in cases {
        let before = turns_served(&env);
        assert_refused(
            &env,
            &format!("{path}: non-UTF-8 {what}"),
            &post_to(path, bytes),
            400,
            "invalid_json",
        );
        assert_eq!(
            turns_served(&env),
            before,
            "{path}: a body that is not UTF-8 ({what}) was forwarded upstream"
        );
    }
    assert_still_healthy(&env);
}

#[test]
fn a_json_nesting_bomb_is_400_on_every_json_route() {
    let _g = light();
    let env = Env::start(1);
    let bomb = vec![b'['; 100_000];
    let mut inner = br#"{"model":"gpt-5.5","stream":true,"input":"#.to_vec();
    inner.extend_from_slice(&bomb);
    for path in [
        "/backend-api/codex/responses",
        "/v1/responses",
        "/v1/chat/completions",
        "/backend-api/codex/responses/compact",
    ] {
        for (what, body) in [("top level", &bomb), ("inside input", &inner)] {
            let (status, v, closed, raw) = exchange(&env, &post_to(path, body));
            assert_eq!(
                status,
                400,
                "{path} {what}: {}",
                String::from_utf8_lossy(&raw)
            );
            assert!(v["error"]["code"].is_string(), "{path} {what}: {v}");
            assert!(closed, "{path} {what}");
        }
    }
    let (status, _, closed, raw) = exchange(&env, &post_to("/api/accounts/import", &bomb));
    assert!(
        (400..500).contains(&status) && closed,
        "import: {}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(turns_served(&env), 0);
    assert_still_healthy(&env);
}

#[test]
fn a_body_shorter_than_its_content_length_then_close_is_dropped_at_once() {
    let _g = light();
    // The body timeout is the default 30 s: the close, not a timer, must end this.
    let env = Env::start(1);
    let body = turn_body("cut short");
    let mut s = TcpStream::connect(env.addr).unwrap();
    s.write_all(
        format!(
            "POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{}",
            body.len() + 100,
            body
        )
        .as_bytes(),
    )
    .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let t = Instant::now();
    let (raw, closed) = read_until_close(&mut s, LIMIT);
    assert!(closed, "gateway kept a half-closed short body open");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Nothing to answer a client that left, or an envelope; never a served turn.
    if !raw.is_empty() {
        let (status, v) = parse_raw_response(&raw);
        assert!(
            (400..500).contains(&status) && v["error"]["code"].is_string(),
            "{}",
            String::from_utf8_lossy(&raw)
        );
    }
    assert_eq!(turns_served(&env), 0);
    env.wait_for(Duration::from_secs(2), |e| {
        (e.get_json("/health")["metrics"]["connections_open"].as_u64() <= Some(1)).then_some(())
    })
    .expect("the connection was released");
    assert_still_healthy(&env);
}

#[test]
fn a_body_that_drips_under_the_pause_limit_is_still_cut_at_its_deadline() {
    let _g = light();
    let env = Env::start_with(1, |s| {
        s.client_body_timeout = Duration::from_millis(800);
        s.client_body_deadline = Duration::from_millis(1500);
    });
    let body = turn_body("one byte at a time");
    let mut s = TcpStream::connect(env.addr).unwrap();
    s.write_all(
        format!(
            "POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    // Every pause is well under the 800 ms pause cap; the body would take many seconds.
    let t = Instant::now();
    for b in body.as_bytes() {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if t.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let (raw, _) = read_until_close(&mut s, LIMIT);
    let (status, v) = parse_raw_response(&raw);
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(v["error"]["code"], "request_timeout");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("within"),
        "{v}"
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(turns_served(&env), 0);
    assert_still_healthy(&env);
}

#[test]
fn bytes_past_the_content_length_are_never_a_smuggled_turn() {
    let _g = light();
    let env = Env::start(1);
    let body = turn_body("the real one");
    let second = String::from_utf8(post_to(
        "/backend-api/codex/responses",
        turn_body("smuggled").as_bytes(),
    ))
    .unwrap();
    let count = |raw: &[u8], what: &str| String::from_utf8_lossy(raw).matches(what).count();

    // Keep-alive, junk past the body: the turn is served, the junk is a malformed next head.
    let mut req = format!(
        "POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        body
    )
    .into_bytes();
    req.extend_from_slice(b"{\"extra\": \"json that is not a request\"}\r\n\r\n");
    let (_, _, closed, raw) = exchange(&env, &req);
    let text = String::from_utf8_lossy(&raw);
    assert!(closed);
    assert_eq!(count(&raw, "HTTP/1.1 200"), 1, "{text}");
    assert!(text.contains("response.completed"), "{text}");
    let tail = &text[text.rfind("HTTP/1.1 ").unwrap()..];
    let (status, v) = parse_raw_response(tail.as_bytes());
    assert_eq!(status, 400, "{text}");
    assert_eq!(v["error"]["code"], "malformed_request");
    assert_eq!(turns_served(&env), 1);

    // `connection: close`, a whole request past the body: nothing after the body is read.
    let mut req = format!(
        "POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        body
    )
    .into_bytes();
    req.extend_from_slice(second.as_bytes());
    let (_, _, closed, raw) = exchange(&env, &req);
    assert!(closed);
    assert_eq!(
        count(&raw, "HTTP/1.1 "),
        1,
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(
        turns_served(&env),
        2,
        "the request past the body was served"
    );

    // Refused before its body is read (no such route, a method not allowed, a body on GET):
    // the unread body, a whole turn, must not be taken as the next request.
    for line in [
        "POST /backend-api/nope HTTP/1.1",
        "PUT /backend-api/codex/responses HTTP/1.1",
        "GET /health HTTP/1.1",
    ] {
        let req = format!(
            "{line}\r\nhost: x\r\ncontent-length: {}\r\n\r\n{second}",
            second.len()
        );
        let (status, _, closed, raw) = exchange(&env, req.as_bytes());
        assert!(closed, "{line}");
        assert!(status >= 200, "{line}: {}", String::from_utf8_lossy(&raw));
        assert_eq!(
            count(&raw, "HTTP/1.1 "),
            1,
            "{line}: {}",
            String::from_utf8_lossy(&raw)
        );
    }
    assert_eq!(turns_served(&env), 2, "a body was served as a request");
    assert_still_healthy(&env);
}

#[test]
fn a_second_host_header_and_misplaced_lines_are_400() {
    let _g = light();
    let env = Env::start(1);
    // RFC 9112 §3.2: more than one Host field line is a 400.
    let body = turn_body("two hosts");
    let two_hosts = format!(
        "POST /backend-api/codex/responses HTTP/1.1\r\nHost: a.example\r\ncontent-length: {}\r\nHost: b.example\r\n\r\n{body}",
        body.len()
    );
    assert_refused(
        &env,
        "Host twice",
        two_hosts.as_bytes(),
        400,
        "malformed_request",
    );
    assert_refused(
        &env,
        "Host twice on GET",
        b"GET /health HTTP/1.1\r\nhost: a\r\nHOST: a\r\n\r\n",
        400,
        "malformed_request",
    );
    let cases: [(&str, &[u8]); 5] = [
        (
            "HTTP/2 pseudo-header",
            b"GET /health HTTP/1.1\r\n:authority: x\r\n\r\n",
        ),
        (
            "header line before the request line",
            b"Host: x\r\nGET /health HTTP/1.1\r\n\r\n",
        ),
        (
            "whitespace before the first header",
            b"GET /health HTTP/1.1\r\n host: x\r\n\r\n",
        ),
        (
            "NUL in a header value",
            b"GET /health HTTP/1.1\r\nhost: x\r\nx-a: b\x00c\r\n\r\n",
        ),
        (
            "space before the colon",
            b"GET /health HTTP/1.1\r\nhost : x\r\n\r\n",
        ),
    ];
    for (what, req) in cases {
        assert_refused(&env, what, req, 400, "malformed_request");
    }
    // The HTTP/2 connection preface.
    assert_refused(
        &env,
        "h2 preface",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        400,
        "unsupported_http_version",
    );
    assert_eq!(turns_served(&env), 0);
    assert_still_healthy(&env);
}
