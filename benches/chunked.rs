//! Chunked decoding of an upstream SSE body: `ChunkedDecoder::feed` over the Codex stream encoded in
//! chunks of 64 B, 1 KiB and 16 KiB, fed in 16 KiB reads (the socket read size). `ours` hands the
//! data runs to a sink that only counts them (the relay's splice path forwards the original bytes,
//! so the decoder never touches chunk data); `ours_into_vec` copies them into a body buffer, as the
//! request-body and unary-response paths do. Baseline: a plain `memcpy` of the same encoded bytes
//! into a preallocated buffer.

mod common;

use std::hint::black_box;
use std::time::Duration;

use codex_lb::http::chunked::{chunk_header, ChunkedDecoder, LAST_CHUNK};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Bytes per socket read handed to the decoder.
const READ: usize = 16 * 1024;

fn chunk_encode(data: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / chunk * 8 + 16);
    for piece in data.chunks(chunk) {
        chunk_header(piece.len(), &mut out);
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(LAST_CHUNK);
    out
}

/// Decodes `encoded` read by read; returns the number of data bytes seen.
fn decode(encoded: &[u8]) -> usize {
    let mut dec = ChunkedDecoder::new();
    let mut data = 0usize;
    for read in encoded.chunks(READ) {
        let feed = dec
            .feed(read, |d| data += black_box(d).len())
            .expect("valid chunking");
        if feed.done {
            break;
        }
    }
    data
}

/// Decodes `encoded` read by read, appending the data to `body`.
fn decode_into(encoded: &[u8], body: &mut Vec<u8>) {
    let mut dec = ChunkedDecoder::new();
    for read in encoded.chunks(READ) {
        let feed = dec
            .feed(read, |d| body.extend_from_slice(d))
            .expect("valid chunking");
        if feed.done {
            break;
        }
    }
}

fn benches(c: &mut Criterion) {
    let (stream, _) = common::codex_sse_stream();
    eprintln!("input: {} byte SSE stream", stream.len());
    for (label, chunk) in [("64B", 64), ("1KiB", 1024), ("16KiB", 16 * 1024)] {
        let encoded = chunk_encode(&stream, chunk);
        assert_eq!(decode(&encoded), stream.len());
        let mut body = Vec::with_capacity(stream.len());
        decode_into(&encoded, &mut body);
        assert_eq!(body, stream);
        eprintln!("input: {} bytes encoded in {label} chunks", encoded.len());
        let mut g = c.benchmark_group(format!("chunked/{label}"));
        g.throughput(Throughput::Bytes(encoded.len() as u64));
        g.bench_function(BenchmarkId::from_parameter("ours"), |b| {
            b.iter(|| decode(black_box(&encoded)))
        });
        g.bench_function(BenchmarkId::from_parameter("ours_into_vec"), |b| {
            b.iter(|| {
                body.clear();
                decode_into(black_box(&encoded), &mut body);
                black_box(&mut body);
            })
        });
        let mut dst = vec![0u8; encoded.len()];
        g.bench_function(BenchmarkId::from_parameter("memcpy"), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&encoded));
                black_box(&mut dst);
            })
        });
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .nresamples(10_000)
}

criterion_group! {
    name = chunked;
    config = config();
    targets = benches
}
criterion_main!(chunked);
