//! A client that goes away mid-stream: the upstream request ends at once and the request is
//! recorded as cancelled.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{turn_body, Env};
use serde_json::json;

fn start_stream(env: &Env, scenario: serde_json::Value) -> TcpStream {
    let body = turn_body("long answer");
    let req = format!(
        "POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-mock-scenario: {}\r\ncontent-length: {}\r\n\r\n{}",
        scenario, body.len(), body
    );
    let mut s = TcpStream::connect(env.addr).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Read until the first delta has arrived: the stream is flowing.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("output_text.delta") {
        let n = match s.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.expect("stream bytes"),
        };
        assert!(
            n > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    s
}

fn assert_cancel_seen(env: &Env, scenario: serde_json::Value) {
    let before = env.mock.cancelled_streams().len();
    let s = start_stream(env, scenario.clone());
    let closed_at = Instant::now();
    drop(s);
    let seen = env
        .wait_for(Duration::from_secs(3), |e| {
            e.mock.cancelled_streams().get(before).map(|(_, at)| *at)
        })
        .unwrap_or_else(|| panic!("{scenario}: mock never saw the upstream request end"));
    let lag = seen.saturating_duration_since(closed_at);
    assert!(
        lag < Duration::from_secs(1),
        "{scenario}: upstream closed {lag:?} after the client left"
    );
}

#[test]
fn client_disconnect_closes_the_upstream_within_a_second() {
    let env = Env::start(1);
    // Frequent deltas: the next write to the client fails.
    assert_cancel_seen(&env, json!({"deltas": 200, "delay_ms": 30}));
    // A long silence between deltas: the relay's liveness check notices.
    assert_cancel_seen(&env, json!({"deltas": 5, "delay_ms": 1500}));
    let row = env
        .wait_for(Duration::from_secs(3), |e| {
            let rows = e.get_json("/api/requests?limit=2");
            let all = rows["requests"].as_array()?.clone();
            (all.len() == 2 && all.iter().all(|r| r["outcome"] == "cancelled")).then_some(all)
        })
        .expect("both requests recorded as cancelled");
    assert_eq!(row[0]["error_code"], "client_disconnected");
    assert_eq!(env.summary()["totals"]["cancelled"], 2);
    assert_eq!(env.get_json("/health")["metrics"]["streams_open"], 0);
}

#[test]
fn a_client_that_leaves_right_after_the_terminal_event_is_recorded_as_completed() {
    // The Codex CLI stops reading at `response.completed` and may close before the body's last
    // chunk: the turn was delivered, and is recorded so.
    let env = Env::start(1);
    let body = turn_body("short one");
    let req = format!(
        "POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-mock-scenario: {}\r\ncontent-length: {}\r\n\r\n{}",
        json!({"deltas": 2, "tail_delay_ms": 300}),
        body.len(),
        body
    );
    let mut s = TcpStream::connect(env.addr).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Read the head, then de-chunk the body until the whole terminal event is in.
    let mut raw = Vec::new();
    let mut body_at = None;
    let mut decoded = Vec::new();
    let mut dec = codex_lb::http::chunked::ChunkedDecoder::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&decoded);
        if let Some(at) = text.find("event: response.completed") {
            if text[at..].contains("}\n\n") {
                break;
            }
        }
        let n = match s.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.expect("stream bytes"),
        };
        assert!(n > 0, "stream ended early");
        raw.extend_from_slice(&buf[..n]);
        if body_at.is_none() {
            body_at = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        }
        if let Some(at) = body_at.as_mut() {
            let feed = dec
                .feed(&raw[*at..], |d| decoded.extend_from_slice(d))
                .expect("valid chunking");
            *at += feed.consumed;
        }
    }
    drop(s);
    let row = env
        .wait_for(Duration::from_secs(3), |e| {
            let rows = e.get_json("/api/requests?limit=1");
            rows["requests"].as_array()?.first().cloned()
        })
        .expect("request recorded");
    assert_eq!(row["outcome"], "completed", "{row}");
    assert!(row["total_tokens"].as_u64().unwrap() > 0);
}
