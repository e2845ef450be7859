//! Request-head parsing: ours (`parse_request_head`: httparse into a stack array, offsets, framing
//! checks, one copy of the head) against monoio-http's h1 `RequestHeadDecoder` (httparse, then an
//! `http::HeaderMap` with validated names) and plain `httparse::Request::parse` (the tokenizer alone,
//! the floor), all on the same ~2 KiB Codex CLI head.
//!
//! The partial case delivers the head in three reads into one growing buffer and parses after each,
//! as `proxy::client` does. monoio-http first looks for the blank line with `memmem` and skips
//! httparse until it is there; ours runs httparse on every attempt.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use codex_lb::http::request::{parse_request_head, BodyFraming, HeadLimits};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use monoio_codec::{Decoded, Decoder};
use monoio_http::h1::codec::decoder::RequestHeadDecoder;

/// A head as the Codex CLI sends it to the gateway for one turn (PROTOCOL.md §1.4).
fn codex_head() -> Vec<u8> {
    let session = "0199a1c2-7d3e-7b10-9f00-5c1a2b3c4d5e";
    let turn_metadata = format!(
        concat!(
            r#"{{"installation_id":"5b7f2c1e-8a4d-4c3b-9e2f-1a6d7c8b9e0f","session_id":"{s}","#,
            r#""thread_id":"{s}","turn_id":"0199a1c3-0b2c-7d4e-8f90-a1b2c3d4e5f6","#,
            r#""window_id":"0199a1c2-7d3e-7b10-9f00-000000000001","request_kind":"turn","#,
            r#""turn_started_at_ms":1764100000123,"sandbox":"workspace-write","approval":"on-request","#,
            r#""workspace":{{"git":true,"repo_root_hash":"3f9a1c0e7b2d4a6f","branch_hash":"a1b2c3d4e5f60718","#,
            r#""dirty":true,"languages":["rust","python","typescript"],"files_hint":2841}},"#,
            r#""model":"gpt-5.5","reasoning_effort":"medium","client":"codex_cli_rs/0.144.0"}}"#
        ),
        s = session
    );
    let turn_state = "ts1.".to_string() + &"Zm9vYmFyYmF6cXV4".repeat(12);
    let headers: Vec<(&str, String)> = vec![
        ("Host", "127.0.0.1:2455".into()),
        (
            "Authorization",
            "Bearer clb_live_8f3a9c2e1b7d4f6a0c5e9b2d7a1f3c8e".into(),
        ),
        ("originator", "codex_cli_rs".into()),
        (
            "User-Agent",
            "codex_cli_rs/0.144.0 (Mac OS 15.5.0; arm64) iTerm.app/3.5.10".into(),
        ),
        ("version", "0.144.0".into()),
        ("session-id", session.into()),
        ("thread-id", session.into()),
        ("x-codex-window-id", "0199a1c2-7d3e-7b10-9f00-000000000001".into()),
        ("x-client-request-id", session.into()),
        (
            "x-codex-installation-id",
            "5b7f2c1e-8a4d-4c3b-9e2f-1a6d7c8b9e0f".into(),
        ),
        ("x-codex-turn-state", turn_state),
        ("x-codex-turn-metadata", turn_metadata),
        (
            "x-codex-beta-features",
            "unified_exec,apply_patch_freeform,web_search_request,view_image_tool,streamable_shell,rmcp_client,exec_permission_approvals".into(),
        ),
        ("x-responsesapi-include-timing-metrics", "true".into()),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        ),
        ("Accept", "text/event-stream".into()),
        ("Accept-Encoding", "gzip, br, zstd".into()),
        ("Content-Type", "application/json".into()),
        ("Content-Encoding", "zstd".into()),
        ("Content-Length", "48213".into()),
        ("Connection", "keep-alive".into()),
    ];
    let mut out = b"POST /backend-api/codex/responses HTTP/1.1\r\n".to_vec();
    for (name, value) in &headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn monoio_decode(buf: &mut BytesMut) -> Option<monoio_http::common::request::RequestHead> {
    match RequestHeadDecoder.decode(buf) {
        Ok(Decoded::Some(h)) => Some(h),
        Ok(_) => None,
        Err(e) => panic!("monoio-http refused the head: {e}"),
    }
}

fn check_inputs(head: &[u8]) {
    let (parsed, used) = parse_request_head(head, HeadLimits::default())
        .expect("valid head")
        .expect("complete head");
    assert_eq!(used, head.len());
    assert_eq!(parsed.framing, BodyFraming::Length(48213));
    assert_eq!(parsed.header_str("originator"), Some("codex_cli_rs"));
    let theirs = monoio_decode(&mut BytesMut::from(head)).expect("complete head");
    assert_eq!(theirs.headers.len(), parsed.headers().count());
}

fn bench_full(c: &mut Criterion, head: &[u8]) {
    let limits = HeadLimits::default();
    let mut g = c.benchmark_group("request_head/complete");
    g.throughput(Throughput::Bytes(head.len() as u64));
    g.bench_function("ours", |b| {
        b.iter(|| parse_request_head(black_box(head), limits))
    });
    // The bytes already sit in the connection's read buffer, so building that buffer is setup; the
    // decoded head is dropped inside the timed routine, as ours is.
    g.bench_function("monoio_http", |b| {
        b.iter_batched(
            || BytesMut::from(head),
            |mut buf| {
                let h = monoio_decode(black_box(&mut buf));
                black_box(h.is_some())
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("httparse_only", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 100];
            let mut req = httparse::Request::new(&mut headers);
            let status = req.parse(black_box(head));
            black_box(status.map(|s| s.is_complete()).unwrap_or(false))
        })
    });
    g.finish();
}

fn bench_partial(c: &mut Criterion, head: &[u8]) {
    let limits = HeadLimits::default();
    let cuts = [head.len() / 3, head.len() * 2 / 3, head.len()];
    let pieces: Vec<&[u8]> = {
        let mut start = 0;
        cuts.iter()
            .map(|&end| {
                let p = &head[start..end];
                start = end;
                p
            })
            .collect()
    };
    let mut g = c.benchmark_group("request_head/three_reads");
    g.throughput(Throughput::Bytes(head.len() as u64));
    g.bench_function("ours", |b| {
        b.iter(|| {
            let mut rbuf = BytesMut::with_capacity(4096);
            for p in &pieces {
                rbuf.extend_from_slice(black_box(p));
                if let Some(done) = parse_request_head(&rbuf, limits).expect("valid head") {
                    return done;
                }
            }
            unreachable!("head never completed")
        })
    });
    g.bench_function("monoio_http", |b| {
        b.iter(|| {
            let mut rbuf = BytesMut::with_capacity(4096);
            for p in &pieces {
                rbuf.extend_from_slice(black_box(p));
                if let Some(h) = monoio_decode(&mut rbuf) {
                    return h;
                }
            }
            unreachable!("head never completed")
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let head = codex_head();
    check_inputs(&head);
    eprintln!("input: {} byte request head", head.len());
    bench_full(c, &head);
    bench_partial(c, &head);
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .nresamples(10_000)
}

criterion_group! {
    name = request_head;
    config = config();
    targets = benches
}
criterion_main!(request_head);
