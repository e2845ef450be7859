//! The per-request API key path over a snapshot of 10 000 keys: `KeysSnapshot::find` (SHA-256 of
//! the presented key, then a map lookup) for a key that is there and one that is not,
//! `admission::admit` and `admission::settle` alone, and the whole path a keyed request takes
//! (`find`, the revoked and expiry checks and the `Arc` clone of `proxy::auth`, `admit`, a stream
//! slot, then `settle` when the response ends). Baselines in the same run, the floor under
//! `find`: a bare SHA-256 of the same 50-byte keys and a `HashMap<[u8; 32], _>` get with the hash
//! already computed.
//!
//! Every key has two budgets (daily `total_tokens`, monthly `cost_usd`), a requests-per-minute
//! cap, a list of three models and a stream cap. The numbers are set so no budget fills while
//! the bench runs (a check costs the same at any number); every measured call asserts it was
//! admitted, so a refused path can never pass for the admitted one. Calls rotate over all keys, as
//! many callers would, so the map and the key views are not all in cache.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use codex_lb::keys::admission::{admit, settle};
use codex_lb::keys::limits::Spent;
use codex_lb::keys::{
    generate, hash, KeyLive, KeyPolicy, KeyView, KeysSnapshot, LimitKind, LimitRule, LimitWindow,
    WindowCounter,
};
use criterion::{criterion_group, criterion_main, Criterion};
use sha2::{Digest, Sha256};

const KEYS: usize = 10_000;
/// Absent keys to rotate over (well formed, never inserted).
const ABSENT: usize = 1_024;
/// 2026-11-26T13:45:00Z.
const NOW: u64 = 1_795_700_700;
const MODEL: &str = "gpt-5.5";
const EFFORT: &str = "medium";
/// One `short`-sized turn: what `settle` adds to each budget.
const SPENT: Spent = Spent {
    input_tokens: 5_231,
    output_tokens: 1_241,
    cost_micro_usd: Some(19_000),
};

fn policy() -> KeyPolicy {
    KeyPolicy {
        limits: vec![
            LimitRule {
                kind: LimitKind::TotalTokens,
                window: LimitWindow::Daily,
                limit: 1e9,
                model: None,
            },
            LimitRule {
                kind: LimitKind::CostUsd,
                window: LimitWindow::Monthly,
                limit: 10_000.0,
                model: None,
            },
        ],
        allowed_models: vec!["gpt-5.3-codex".into(), "gpt-5.4".into(), MODEL.into()],
        allowed_efforts: Vec::new(),
        allowed_accounts: Vec::new(),
        max_streams: Some(64),
        requests_per_minute: Some(1_000_000_000),
    }
}

struct Fixture {
    snap: KeysSnapshot,
    /// The secrets of every key in `snap`, in insertion order.
    present: Vec<String>,
    absent: Vec<String>,
    /// `hash(present[i])`, for the map floor.
    hashes: Vec<[u8; 32]>,
    views: Vec<Arc<KeyView>>,
}

fn fixture() -> Fixture {
    let mut by_hash = HashMap::with_capacity(KEYS);
    let mut present = Vec::with_capacity(KEYS);
    let mut hashes = Vec::with_capacity(KEYS);
    let mut views = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let (secret, record) = generate(&format!("user-{i:05}"), NOW - 86_400);
        let policy = policy();
        let counters = policy
            .limits
            .iter()
            .map(|_| Arc::new(WindowCounter::default()))
            .collect();
        let view = Arc::new(KeyView {
            id: Arc::from(record.id.as_str()),
            name: record.name,
            expires_at: Some(NOW + 365 * 86_400),
            revoked: false,
            paused: false,
            policy,
            live: Arc::new(KeyLive::default()),
            counters,
        });
        let h = hash(&secret);
        assert!(by_hash.insert(h, Arc::clone(&view)).is_none());
        present.push(secret);
        hashes.push(h);
        views.push(view);
    }
    let absent = (0..ABSENT)
        .map(|i| generate(&format!("stranger-{i}"), NOW).0)
        .collect();
    Fixture {
        snap: KeysSnapshot {
            by_hash,
            auth_required: true,
            hide_quota_headers: false,
        },
        present,
        absent,
        hashes,
        views,
    }
}

/// Cycles `0..n`.
struct Rotor {
    next: usize,
    n: usize,
}

impl Rotor {
    fn new(n: usize) -> Rotor {
        Rotor { next: 0, n }
    }

    fn step(&mut self) -> usize {
        let i = self.next;
        self.next = if i + 1 == self.n { 0 } else { i + 1 };
        i
    }
}

/// What `proxy::auth::authenticate` does with a presented key when key auth is on.
fn authenticate(snap: &KeysSnapshot, presented: &str, now: u64) -> Option<Arc<KeyView>> {
    let key = snap.find(presented)?;
    if key.revoked || key.expires_at.is_some_and(|t| t <= now) {
        return None;
    }
    Some(Arc::clone(key))
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    assert_eq!(f.present[0].len(), 50, "keys are sk-clb- + 43 characters");
    let mut g = c.benchmark_group("keys_10000");

    let mut r = Rotor::new(KEYS);
    g.bench_function("find_present", |b| {
        b.iter(|| {
            let found = f.snap.find(black_box(&f.present[r.step()]));
            assert!(found.is_some());
            found.map(Arc::as_ptr)
        })
    });
    let mut r = Rotor::new(ABSENT);
    g.bench_function("find_absent", |b| {
        b.iter(|| {
            let found = f.snap.find(black_box(&f.absent[r.step()]));
            assert!(found.is_none());
            found.map(Arc::as_ptr)
        })
    });
    let mut r = Rotor::new(KEYS);
    g.bench_function("admit", |b| {
        b.iter(|| {
            let key = &f.views[r.step()];
            let res = admit(black_box(key), Some(MODEL), Some(EFFORT), NOW);
            assert!(res.is_ok(), "{res:?}");
        })
    });
    let mut r = Rotor::new(KEYS);
    g.bench_function("settle", |b| {
        b.iter(|| settle(black_box(&f.views[r.step()]), Some(MODEL), &SPENT, NOW))
    });
    let mut r = Rotor::new(KEYS);
    g.bench_function("find_admit_settle", |b| {
        b.iter(|| {
            let presented = black_box(f.present[r.step()].as_str());
            let key = authenticate(&f.snap, presented, NOW);
            let Some(key) = key else {
                panic!("key not found");
            };
            let res = admit(&key, Some(MODEL), Some(EFFORT), NOW);
            assert!(res.is_ok(), "{res:?}");
            let slot = key.live.try_stream(key.policy.max_streams);
            assert!(slot.is_some());
            settle(&key, Some(MODEL), black_box(&SPENT), NOW);
            drop(slot);
        })
    });

    let mut r = Rotor::new(KEYS);
    g.bench_function("sha256_floor", |b| {
        b.iter(|| -> [u8; 32] { Sha256::digest(black_box(f.present[r.step()].as_bytes())).into() })
    });
    let mut r = Rotor::new(KEYS);
    g.bench_function("map_get_floor", |b| {
        b.iter(|| {
            let found = f.snap.by_hash.get(black_box(&f.hashes[r.step()]));
            assert!(found.is_some());
            found.map(Arc::as_ptr)
        })
    });
    g.finish();

    // Whatever the measurement time, no budget may have filled: the numbers above are admissions.
    for key in &f.views {
        assert!(admit(key, Some(MODEL), None, NOW).is_ok());
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
    name = keys;
    config = config();
    targets = benches
}
criterion_main!(keys);
