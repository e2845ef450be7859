//! WebSocket hot path. `ws_mask`: `apply_mask` (u64 at a time) over 125 B, 16 KiB and 1 MiB
//! against the byte-at-a-time loop it replaces (baseline) and a `memcpy` of the same bytes
//! (floor). `ws_read`: a server-role `MessageReader` over the Codex SSE stream's events sent as
//! masked text frames (one JSON message per event, PROTOCOL.md §6.3), fed in 16 KiB reads;
//! baseline: the same bytes unmasked byte by byte into a buffer.

mod common;

use std::hint::black_box;
use std::time::Duration;

use codex_lb::http::ws::frame::encode_frame;
use codex_lb::http::ws::{apply_mask, MessageReader, Opcode, Role, WsLimits};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// Bytes per socket read handed to the reader.
const READ: usize = 16 * 1024;

fn mask_bytewise(buf: &mut [u8], key: [u8; 4]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// The stream's events as masked text frames (the `data:` payloads, one message each).
fn codex_ws_stream() -> (Vec<u8>, usize) {
    let (sse, _) = common::codex_sse_stream();
    let text = String::from_utf8(sse).expect("utf-8 stream");
    let mut out = Vec::new();
    let mut n = 0;
    for line in text.lines() {
        if let Some(data) = line.strip_prefix("data: ") {
            out.extend(encode_frame(
                Opcode::Text,
                true,
                false,
                data.as_bytes(),
                Some(KEY),
            ));
            n += 1;
        }
    }
    (out, n)
}

fn read_all(wire: &[u8]) -> usize {
    let mut reader = MessageReader::new(Role::Server, None, WsLimits::default());
    let mut messages = 0;
    for read in wire.chunks(READ) {
        let mut rest = read;
        while !rest.is_empty() {
            let r = reader.feed(rest).expect("valid frames");
            rest = &rest[r.consumed..];
            messages += usize::from(black_box(r.message).is_some());
        }
    }
    messages
}

fn benches(c: &mut Criterion) {
    for (label, len) in [("125B", 125), ("16KiB", 16 * 1024), ("1MiB", 1 << 20)] {
        let mut buf: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let src = buf.clone();
        let mut g = c.benchmark_group(format!("ws_mask/{label}"));
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::from_parameter("ours"), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), KEY))
        });
        g.bench_function(BenchmarkId::from_parameter("bytewise"), |b| {
            b.iter(|| mask_bytewise(black_box(&mut buf), KEY))
        });
        g.bench_function(BenchmarkId::from_parameter("memcpy"), |b| {
            b.iter(|| buf.copy_from_slice(black_box(&src)))
        });
        g.finish();
    }

    let (wire, events) = codex_ws_stream();
    assert_eq!(read_all(&wire), events);
    eprintln!("input: {} bytes, {events} masked text frames", wire.len());
    let mut g = c.benchmark_group("ws_read");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function(BenchmarkId::from_parameter("ours"), |b| {
        b.iter(|| read_all(black_box(&wire)))
    });
    let mut dst = Vec::with_capacity(wire.len());
    g.bench_function(BenchmarkId::from_parameter("copy_bytewise_unmask"), |b| {
        b.iter(|| {
            dst.clear();
            dst.extend_from_slice(black_box(&wire));
            mask_bytewise(&mut dst, KEY);
            black_box(&mut dst);
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .nresamples(10_000)
}

criterion_group! {
    name = ws;
    config = config();
    targets = benches
}
criterion_main!(ws);
