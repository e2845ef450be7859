//! Per-worker account choice: `CoreAccounts::pick` over snapshots of 10, 100 and 1000 accounts in a
//! realistic mix (a tenth blocked pool-wide by a usage limit, a tenth cooling down on this worker,
//! a twentieth paused, a third carrying in-flight requests), alone and with the `begin`/`end` pair
//! every request wraps around it. Also `pick` right after the control thread published a new
//! snapshot version (the slot map is pruned against it then). Baseline: round-robin by index over
//! a `Vec` of the same accounts, the floor for any choice.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codex_lb::accounts::quota::{QuotaReading, Window};
use codex_lb::accounts::selection::{CoreAccounts, Pick, PickRequest};
use codex_lb::accounts::strategy::Strategy;
use codex_lb::accounts::{
    AccountStatus, AccountView, AccountsSnapshot, Block, BlockReason, Priority,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

struct Fixture {
    snap: AccountsSnapshot,
    core: CoreAccounts,
    now: Instant,
    now_unix: u64,
}

fn fixture(n: usize) -> Fixture {
    let now = Instant::now();
    let now_unix = 1_764_100_000;
    let accounts: Vec<Arc<AccountView>> = (0..n)
        .map(|i| {
            let id = format!("acct_{i:04}_5b7f2c1e8a4d");
            Arc::new(AccountView {
                account_header: Some(Bytes::from(id.clone())),
                id: Arc::from(id),
                email: Some(format!("user{i}@example.com")),
                plan: Some("plus".into()),
                status: if i % 20 == 2 {
                    AccountStatus::Paused
                } else {
                    AccountStatus::Active
                },
                authorization: Bytes::from(format!("Bearer eyJhbGciOiJSUzI1NiJ9.token{i}")),
                block: (i % 10 == 0).then_some(Block {
                    until_unix: now_unix + 3600,
                    reason: BlockReason::UsageLimit,
                }),
                priority: Priority::Normal,
                quota: QuotaReading {
                    primary: Some(Window {
                        used_percent: (i % 97) as f64,
                        window_minutes: Some(300),
                        reset_at: Some(now_unix + 1000 + i as u64),
                    }),
                    secondary: None,
                    plan_type: None,
                    observed_ms: 0,
                },
                cap_primary_percent: Some(90.0),
                cap_secondary_percent: None,
                requests_per_minute: None,
                minute: Default::default(),
            })
        })
        .collect();
    let snap = AccountsSnapshot {
        version: 1,
        accounts,
        strategy: Strategy::CapacityWeighted,
        slots_per_worker: 0,
    };
    let mut core = CoreAccounts::new(1);
    // The first pick for a version aligns the slots; do it before setting per-account state.
    let first = core.pick(&snap, PickRequest::default(), now, now_unix);
    assert!(matches!(first, Pick::Account(_)), "{first:?}");
    for (i, a) in snap.accounts.iter().enumerate() {
        if i % 10 == 1 {
            core.cool_down(&a.id, now + Duration::from_secs(3600), None);
        }
        if i % 3 == 0 {
            for _ in 0..(i % 4 + 1) {
                core.begin(&a.id);
            }
        }
    }
    Fixture {
        snap,
        core,
        now,
        now_unix,
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("selection");
    for n in [10usize, 100, 1000] {
        let mut f = fixture(n);
        g.bench_with_input(BenchmarkId::new("pick", n), &n, |b, _| {
            b.iter(|| {
                f.core.pick(
                    black_box(&f.snap),
                    PickRequest::default(),
                    f.now,
                    f.now_unix,
                )
            })
        });
        let mut key = 0u64;
        g.bench_with_input(BenchmarkId::new("pick_sticky", n), &n, |b, _| {
            b.iter(|| {
                key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let req = PickRequest {
                    sticky_key: Some(key),
                    ..Default::default()
                };
                f.core.pick(black_box(&f.snap), req, f.now, f.now_unix)
            })
        });
        g.bench_with_input(BenchmarkId::new("pick_begin_end", n), &n, |b, _| {
            b.iter(|| {
                if let Pick::Account(a) = f.core.pick(
                    black_box(&f.snap),
                    PickRequest::default(),
                    f.now,
                    f.now_unix,
                ) {
                    f.core.begin(&a.id);
                    f.core.end(&a.id);
                }
            })
        });
        g.bench_with_input(BenchmarkId::new("pick_new_snapshot", n), &n, |b, _| {
            b.iter(|| {
                f.snap.version += 1;
                f.core.pick(
                    black_box(&f.snap),
                    PickRequest::default(),
                    f.now,
                    f.now_unix,
                )
            })
        });
        let all: Vec<Arc<AccountView>> = f.snap.accounts.clone();
        let mut next = 0usize;
        g.bench_with_input(BenchmarkId::new("round_robin_floor", n), &n, |b, _| {
            b.iter(|| {
                next = (next + 1) % all.len();
                all.get(next).map(Arc::clone)
            })
        });
    }
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
    name = selection;
    config = config();
    targets = benches
}
criterion_main!(selection);
