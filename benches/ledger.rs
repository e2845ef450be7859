//! The ledger thread's write path: `Ledger::record` for a batch of 1, 64 or 1024 `UsageEvent`s, then
//! `write_pending` (one sled transaction for the rows and the touched totals), into a sled store in a
//! temp dir; and `maybe_fsync(true)` after a written batch of 64. Baseline: `serde_json::to_vec` of
//! the same events, the serialization share of the cost.
//!
//! Each sample opens a fresh store (untimed), so the request tree holds at most a few hundred
//! milliseconds of writes; the events are cloned outside the timed region.

use std::hint::black_box;
use std::time::{Duration, Instant};

use codex_lb::ledger::{Ledger, Outcome, UsageEvent};
use codex_lb::store::Store;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const ACCOUNTS: usize = 8;
const MODELS: [&str; 3] = ["gpt-5.5", "gpt-5.3-codex", "gpt-5.5-mini"];

fn events(n: usize) -> Vec<UsageEvent> {
    (0..n)
        .map(|i| {
            let input = 5_000 + (i as u64 * 37) % 40_000;
            let output = 40 + (i as u64 * 13) % 2_000;
            UsageEvent {
                ts_ms: 1_764_100_000_000 + i as u64 * 7,
                request_id: format!("req_0199a1c3-0b2c-7d4e-8f90-{i:012x}"),
                route: "responses".into(),
                account_id: Some(format!("acct_{:04}_5b7f2c1e8a4d", i % ACCOUNTS)),
                model: MODELS.get(i % MODELS.len()).map(|m| m.to_string()),
                status: 200,
                outcome: Outcome::Completed,
                error_code: None,
                input_tokens: input,
                cached_tokens: input * 9 / 10,
                output_tokens: output,
                reasoning_tokens: output / 2,
                total_tokens: input + output,
                request_bytes: 48_213,
                response_bytes: 81_920,
                latency_ms: 4_210,
                ttfb_ms: Some(612),
                attempts: 1,
                ..Default::default()
            }
        })
        .collect()
}

/// A ledger on a fresh store; the temp dir must outlive it.
fn fresh_ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::Builder::new()
        .prefix("codex-lb-bench-ledger-")
        .tempdir()
        .expect("temp dir");
    let store = Store::open(&dir.path().join("data")).expect("store");
    // A long interval: only the forced fsync below ever syncs.
    let ledger = Ledger::open(store, Duration::from_secs(3600)).expect("ledger");
    (dir, ledger)
}

fn record_all(ledger: &mut Ledger, batch: Vec<UsageEvent>) {
    for ev in batch {
        ledger.record(ev);
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger");
    for n in [1usize, 64, 1024] {
        let batch = events(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("record_write", n), &batch, |b, batch| {
            b.iter_custom(|iters| {
                let (dir, mut ledger) = fresh_ledger();
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let evs = batch.clone();
                    let t = Instant::now();
                    record_all(&mut ledger, evs);
                    ledger.write_pending().expect("write");
                    timed += t.elapsed();
                }
                drop(ledger);
                drop(dir);
                timed
            })
        });
        g.bench_with_input(
            BenchmarkId::new("serde_json_floor", n),
            &batch,
            |b, batch| {
                b.iter(|| {
                    for ev in batch {
                        black_box(serde_json::to_vec(black_box(ev)).expect("json"));
                    }
                })
            },
        );
    }
    let batch = events(64);
    g.throughput(Throughput::Elements(1));
    g.bench_function("fsync_after_64", |b| {
        b.iter_custom(|iters| {
            let (dir, mut ledger) = fresh_ledger();
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                record_all(&mut ledger, batch.clone());
                ledger.write_pending().expect("write");
                let t = Instant::now();
                ledger.maybe_fsync(true).expect("fsync");
                timed += t.elapsed();
            }
            drop(ledger);
            drop(dir);
            timed
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .nresamples(10_000)
}

criterion_group! {
    name = ledger;
    config = config();
    targets = benches
}
criterion_main!(ledger);
