//! Bad input gets its 4xx envelope or a closed connection within the limit's time, and the
//! gateway keeps serving everyone else. Nothing panics.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{parse_raw_response, raw_exchange, read_until_close, turn_body, Env};

const LIMIT: Duration = Duration::from_secs(5);

fn small_limits() -> Env {
    Env::start_with(1, |s| {
        s.head_limits.max_head_bytes = 8 * 1024;
        s.max_body_bytes = 64 * 1024;
        s.head_read_timeout = Duration::from_secs(1);
        s.client_body_timeout = Duration::from_secs(1);
    })
}

fn expect_error(env: &Env, request: &[u8], status: u16, code: &str) {
    let (raw, closed) = raw_exchange(env.addr, request, LIMIT);
    let (got, body) = parse_raw_response(&raw);
    assert_eq!(got, status, "{}: {}", code, String::from_utf8_lossy(&raw));
    assert_eq!(
        body["error"]["code"],
        code,
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(body["error"]["message"].is_string() && body["error"]["type"].is_string());
    assert!(closed, "{code}: connection left open");
}

fn post(body: &str) -> Vec<u8> {
    format!(
        "POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        body
    )
    .into_bytes()
}

#[test]
fn malformed_heads_and_smuggling_shapes_are_refused_and_closed() {
    let env = small_limits();
    expect_error(&env, b"GARBAGE\r\n\r\n", 400, "malformed_request");
    expect_error(
        &env,
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        400,
        "malformed_request",
    );
    expect_error(
        &env,
        b"GET /health HTTP/3.0\r\n\r\n",
        400,
        "unsupported_http_version",
    );
    let smuggling: [&[u8]; 4] = [
        b"POST /backend-api/codex/responses HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /backend-api/codex/responses HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /backend-api/codex/responses HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST /backend-api/codex/responses HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    ];
    for req in smuggling {
        expect_error(&env, req, 400, "invalid_framing");
    }
    expect_error(
        &env,
        b"POST /backend-api/codex/responses HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
        "invalid_chunked_body",
    );
    assert_eq!(env.get_json("/health")["panics"], 0);
}

#[test]
fn size_limits_at_and_past() {
    let env = small_limits();
    let pad = |n: usize| "a".repeat(n);
    // Head: exactly at the limit is served, one byte past is 431.
    let base = "GET /health HTTP/1.1\r\nconnection: close\r\nx-pad: \r\n\r\n";
    let at = format!(
        "GET /health HTTP/1.1\r\nconnection: close\r\nx-pad: {}\r\n\r\n",
        pad(8 * 1024 - base.len())
    );
    assert_eq!(at.len(), 8 * 1024);
    let (raw, _) = raw_exchange(env.addr, at.as_bytes(), LIMIT);
    assert_eq!(parse_raw_response(&raw).0, 200);
    let over = format!(
        "GET /health HTTP/1.1\r\nconnection: close\r\nx-pad: {}\r\n\r\n",
        pad(8 * 1024 - base.len() + 1)
    );
    expect_error(&env, over.as_bytes(), 431, "request_header_too_large");
    // Body: oversize is 400 (not 413, which the Codex CLI retries), before the body is read.
    let big = format!(
        "POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        64 * 1024 + 1
    );
    expect_error(&env, big.as_bytes(), 400, "payload_too_large");
    // A body at the limit is read and judged on its content.
    let mut body = turn_body("x");
    body.insert_str(
        body.len() - 1,
        &format!(",\"pad\":\"{}\"", pad(64 * 1024 - body.len() - 9)),
    );
    assert_eq!(body.len(), 64 * 1024);
    let (raw, _) = raw_exchange(env.addr, &post(&body), LIMIT);
    assert!(
        String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw[..200.min(raw.len())])
    );
    // Chunked bodies count too.
    let mut chunked =
        b"POST /backend-api/codex/responses HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..9 {
        chunked.extend_from_slice(format!("{:x}\r\n{}\r\n", 8000, pad(8000)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    expect_error(&env, &chunked, 400, "payload_too_large");
}

#[test]
fn invalid_json_and_missing_model_are_400_and_keep_the_connection() {
    let env = small_limits();
    for (body, code) in [
        ("{not json", "invalid_json"),
        ("[1,2]", "invalid_json"),
        ("{\"stream\":true}", "missing_required_parameter"),
    ] {
        let reply = env.turn(body, &[]);
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["error"]["code"], code);
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    }
    // The same keep-alive connection answers a 400 and then a good request.
    let mut s = TcpStream::connect(env.addr).unwrap();
    let bad = "{oops";
    let good = turn_body("after a bad one");
    let mut two = format!(
        "POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{}",
        bad.len(),
        bad
    )
    .into_bytes();
    two.extend_from_slice(&post(&good));
    s.write_all(&two).unwrap();
    let (raw, closed) = read_until_close(&mut s, LIMIT);
    let text = String::from_utf8_lossy(&raw);
    assert!(closed);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.contains("HTTP/1.1 200 OK") && text.contains("response.completed"),
        "{text}"
    );
}

#[test]
fn a_slow_client_is_cut_off_at_the_head_timeout_and_others_are_served() {
    let env = small_limits();
    let mut slow = TcpStream::connect(env.addr).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nx-slow: ").unwrap();
    let started = Instant::now();
    // Meanwhile other clients are served.
    for _ in 0..3 {
        assert_eq!(env.turn(&turn_body("meanwhile"), &[]).status, 200);
    }
    let (raw, closed) = read_until_close(&mut slow, Duration::from_secs(4));
    let waited = started.elapsed();
    assert!(closed, "slow connection still open after {waited:?}");
    assert!(
        waited < Duration::from_millis(2500),
        "cut off after {waited:?}, limit 1s"
    );
    let (status, body) = parse_raw_response(&raw);
    assert_eq!(status, 408);
    assert_eq!(body["error"]["code"], "request_timeout");
    // A body that stalls is cut off too.
    let mut stalled = TcpStream::connect(env.addr).unwrap();
    stalled
        .write_all(
            b"POST /backend-api/codex/responses HTTP/1.1\r\ncontent-length: 100\r\n\r\n{\"mo",
        )
        .unwrap();
    let (raw, closed) = read_until_close(&mut stalled, Duration::from_secs(4));
    assert!(closed);
    assert_eq!(parse_raw_response(&raw).0, 408);
    assert_eq!(env.get_json("/health")["metrics"]["timeouts"], 2);
}

#[test]
fn compressed_bodies_expect_continue_and_pipelining() {
    let env = small_limits();
    let body = turn_body("zstd please");
    let compressed = zstd::encode_all(body.as_bytes(), 3).unwrap();
    let mut req = format!(
        "POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\ncontent-encoding: zstd\r\nexpect: 100-continue\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        compressed.len()
    )
    .into_bytes();
    let mut s = TcpStream::connect(env.addr).unwrap();
    s.write_all(&req).unwrap();
    let mut interim = [0u8; 25];
    std::io::Read::read_exact(&mut s, &mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(&compressed).unwrap();
    let (raw, _) = read_until_close(&mut s, LIMIT);
    assert!(String::from_utf8_lossy(&raw).contains("response.completed"));
    let acct = &env.mock.accounts()[0];
    let seen = env.mock.last_request(&acct.chatgpt_account_id).unwrap();
    assert_eq!(seen.content_encoding, None, "decoded before forwarding");
    assert_eq!(seen.body, body.as_bytes());
    // A corrupt zstd body is a 400.
    req = b"POST /backend-api/codex/responses HTTP/1.1\r\ncontent-encoding: zstd\r\ncontent-length: 4\r\n\r\nnope".to_vec();
    expect_error(&env, &req, 400, "invalid_content_encoding");
    // Two pipelined requests in one write get two answers, in order.
    let (raw, _) = raw_exchange(
        env.addr,
        b"GET /health HTTP/1.1\r\n\r\nGET /api/nope HTTP/1.1\r\nconnection: close\r\n\r\n",
        LIMIT,
    );
    let text = String::from_utf8_lossy(&raw);
    let first = text.find("HTTP/1.1 200").expect("health answered");
    let second = text.find("HTTP/1.1 404").expect("404 answered");
    assert!(first < second, "{text}");
}
