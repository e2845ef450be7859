//! SSE event scanning on the relay path: `SseScanner::feed` over a whole Codex stream, fed in the
//! piece sizes a socket hands over (1 KiB, 16 KiB, all at once), with `take_ready` after each piece
//! as the relay does. Baseline: counting `"\n\n"` with `memchr::memmem::find_iter` over the same
//! bytes, the floor for any event-boundary scan.

mod common;

use std::hint::black_box;
use std::time::Duration;

use codex_lb::http::sse::{EventKind, SseScanner};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use memchr::memmem;

fn scan(stream: &[u8], piece: usize) -> (u64, usize) {
    let mut s = SseScanner::default();
    let mut kept = 0;
    for p in stream.chunks(piece) {
        s.feed(p);
        for ev in s.take_ready() {
            kept += black_box(ev).data.len();
        }
    }
    (s.events_seen(), kept)
}

fn check_inputs(stream: &[u8], events: usize) {
    let mut s = SseScanner::default();
    s.feed(stream);
    let kinds: Vec<EventKind> = s.take_ready().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::RateLimits, EventKind::Completed]);
    assert_eq!(s.events_seen(), events as u64);
    assert!(s.at_boundary());
    assert_eq!(memmem::find_iter(stream, b"\n\n").count(), events);
}

fn benches(c: &mut Criterion) {
    let (stream, events) = common::codex_sse_stream();
    check_inputs(&stream, events);
    eprintln!("input: {} byte SSE stream, {events} events", stream.len());
    let mut g = c.benchmark_group("sse_scan");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    for (label, piece) in [
        ("1KiB", 1024),
        ("16KiB", 16 * 1024),
        ("whole", stream.len()),
    ] {
        g.bench_with_input(BenchmarkId::new("ours", label), &piece, |b, &piece| {
            b.iter(|| scan(black_box(&stream), piece))
        });
    }
    g.bench_function("memmem_floor", |b| {
        b.iter(|| memmem::find_iter(black_box(&stream), b"\n\n").count())
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
    name = sse_scan;
    config = config();
    targets = benches
}
criterion_main!(sse_scan);
