//! Mid-stream failure injection and the mock's view of a client that goes away.

mod common;

use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::*;
use loadtest::mock::MockUpstream;

fn scenario(j: &str) -> Vec<(String, String)> {
    vec![("x-mock-scenario".to_string(), j.to_string())]
}

#[test]
fn fail_mode_reset_aborts_after_n_events() {
    let m = start();
    let a = &m.accounts()[0];
    let r = post_turn(
        &m,
        a,
        &scenario(r#"{"fail_after_events":3,"fail_mode":"reset"}"#),
        &turn("gpt-5.5", "x"),
    );
    assert_eq!(r.status(), 200);
    assert!(!r.complete, "no terminating chunk after a reset");
    let err = r.error.as_ref().expect("read error");
    eprintln!("reset seen by the client as {err:?}");
    assert!(err.kind() == std::io::ErrorKind::ConnectionReset, "{err:?}");
    let ev = r.events();
    assert_eq!(ev.len(), 3, "events before the reset arrive");
    assert_eq!(ev[2].0, "response.output_item.added");
    let s = m.stats();
    assert_eq!(s.responses_completed, 0);
    assert_eq!(
        s.streams_cancelled, 0,
        "an injected reset is not a client cancel"
    );
}

#[test]
fn fail_mode_eof_ends_cleanly_without_terminal_event() {
    let m = start();
    let a = &m.accounts()[0];
    let r = post_turn(
        &m,
        a,
        &scenario(r#"{"fail_after_events":5,"fail_mode":"eof"}"#),
        &turn("gpt-5.5", "x"),
    );
    assert!(r.complete, "terminating chunk sent");
    assert!(r.error.is_none());
    let ev = r.events();
    assert_eq!(ev.len(), 5);
    assert!(ev.iter().all(|(k, _)| k != "response.completed"));
    assert_eq!(m.stats().responses_completed, 0);
}

#[test]
fn terminal_failure_events() {
    let m = start();
    let a = &m.accounts()[0];
    for (mode, kind) in [
        ("failed_event", "response.failed"),
        ("error_event", "error"),
        ("incomplete", "response.incomplete"),
    ] {
        let r = post_turn(
            &m,
            a,
            &scenario(&format!(
                r#"{{"fail_after_events":7,"fail_mode":"{mode}"}}"#
            )),
            &turn("gpt-5.5", "x"),
        );
        assert!(r.complete, "{mode}");
        let ev = r.events();
        assert_eq!(ev.len(), 8, "{mode}");
        let (k, v) = ev.last().unwrap();
        assert_eq!(k, kind);
        assert_eq!(v["sequence_number"], 7);
        match mode {
            "failed_event" => {
                assert_eq!(v["response"]["status"], "failed");
                assert_eq!(v["response"]["error"]["code"], "server_error");
            }
            "error_event" => assert_eq!(v["code"], "server_error"),
            _ => {
                assert_eq!(
                    v["response"]["incomplete_details"]["reason"],
                    "max_output_tokens"
                );
                assert!(v["response"]["usage"]["total_tokens"].is_u64());
            }
        }
    }
    // past the last event: the terminal event is what gets replaced
    let r = post_turn(
        &m,
        a,
        &scenario(r#"{"fail_after_events":999,"fail_mode":"failed_event"}"#),
        &turn("gpt-5.5", "x"),
    );
    let ev = r.events();
    assert_eq!(ev.len(), 18);
    assert_eq!(ev.last().unwrap().0, "response.failed");
    assert_eq!(m.stats().responses_completed, 0);
}

/// Reads the head and `events` chunks, drops the connection, and returns when it was closed.
fn abandon(m: &MockUpstream, scenario_json: &str, chunks: usize) -> Instant {
    let a = &m.accounts()[0];
    let mut c = Conn::open(m.addr());
    let mut h = auth(a);
    h.push(("x-mock-scenario".into(), scenario_json.into()));
    c.send(
        "POST",
        "/backend-api/codex/responses",
        &h,
        turn("gpt-5.5", "x").to_string().as_bytes(),
    );
    let head = c.read_head().unwrap();
    assert_eq!(head.status, 200);
    for _ in 0..chunks {
        c.read_chunk().unwrap().expect("a data chunk");
    }
    let _ = c.stream().shutdown(Shutdown::Both);
    drop(c);
    Instant::now()
}

fn wait_cancelled(m: &MockUpstream, n: usize) -> Vec<(String, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let c = m.cancelled_streams();
        if c.len() >= n || Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn cancelled_stream_is_seen_within_a_second() {
    let m = start();
    let id = m.accounts()[0].chatgpt_account_id.clone();
    for (i, (sc, chunks)) in [
        (r#"{"deltas":40,"delay_ms":30}"#, 8),
        (r#"{"deltas":10,"delay_ms":200}"#, 7),
        (r#"{"deltas":10,"delay_ms":200,"chunk_bytes":13}"#, 5),
        (r#"{"ttfb_ms":5000}"#, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let closed = abandon(&m, sc, chunks);
        let seen = wait_cancelled(&m, i + 1);
        assert_eq!(seen.len(), i + 1, "{sc}: cancel not seen");
        let (acct, at) = &seen[i];
        assert_eq!(acct, &id);
        let lag = at.saturating_duration_since(closed);
        eprintln!("{sc}: cancel seen {lag:?} after close");
        assert!(
            lag < Duration::from_secs(1),
            "{sc}: saw the close {lag:?} later"
        );
    }
    let s = m.stats();
    assert_eq!(s.streams_cancelled, 4);
    assert_eq!(s.streams_active, 0);
    assert_eq!(s.responses_completed, 0);
    assert!(s.streams_max_concurrent >= 1);
}

#[test]
fn concurrent_streams_are_counted() {
    let m = start();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let a = m.accounts()[0].clone();
            let addr = m.addr();
            std::thread::spawn(move || {
                let mut h = auth(&a);
                h.push((
                    "x-mock-scenario".into(),
                    r#"{"deltas":5,"delay_ms":60}"#.into(),
                ));
                request(
                    addr,
                    "POST",
                    "/backend-api/codex/responses",
                    &h,
                    turn("gpt-5.5", "x").to_string().as_bytes(),
                )
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap().complete);
    }
    let s = m.stats();
    assert_eq!(s.streams_max_concurrent, 4);
    assert_eq!(s.streams_active, 0);
    assert_eq!(s.responses_completed, 4);
}

#[test]
fn hang_and_delays() {
    let m = start();
    let a = &m.accounts()[0];
    let mut c = Conn::open(m.addr());
    c.stream()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut h = auth(a);
    h.push(("x-mock-scenario".into(), r#"{"hang":true}"#.into()));
    c.send(
        "POST",
        "/backend-api/codex/responses",
        &h,
        turn("gpt-5.5", "x").to_string().as_bytes(),
    );
    let err = c.read_head().err().expect("no answer while hanging");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err:?}"
    );
    assert_eq!(m.stats().requests_total, 1);

    let t = Instant::now();
    let r = post_turn(
        &m,
        a,
        &scenario(r#"{"head_delay_ms":150,"ttfb_ms":100,"deltas":3,"delay_ms":50}"#),
        &turn("gpt-5.5", "x"),
    );
    assert!(r.complete);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    // dropping the mock with a hanging connection open must not block
    let t = Instant::now();
    drop(m);
    assert!(t.elapsed() < Duration::from_secs(3));
}
