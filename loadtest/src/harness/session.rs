//! One harness session: resolve settings and start the stage (`setup`), run the rounds (each
//! target once per round, in a rotated order, with CPU/RSS watches, the progress line and, for
//! `mixed`, failure injection), stop the gateway and check it exits 0, then print the tables
//! and write the JSON (and the chart). `ws` runs its clients (`ws`) where the other scenarios
//! run `driver`; everything around the run is the same.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use serde::Serialize;
use serde_json::Value;

use super::cli::{CompareArgs, LoadArgs, RunArgs, Via};
use super::driver::{drive, Credentials, Prepared};
use super::limits::raise_nofile;
use super::live::Live;
use super::machine::Machine;
use super::procstat::{self, Watch};
use super::progress::Progress;
use super::report::{add_baseline, render, render_ws, summarize, Run, TargetSummary};
use super::scenario::{Kind, Plan};
use super::setup::{bodies, settings, Settings, Stage, Wants};
use super::target::{Target, TargetKind};
use super::upstream::Upstream;
use super::ws::{self, WsPrepared};

/// Pause between runs, so connections of one run are closed before the next starts.
const SETTLE: Duration = Duration::from_secs(1);

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let none = Wants {
        direct: false,
        gateway: false,
        nginx: None,
        nginx_bin: args.nginx.clone(),
        externals: Vec::new(),
    };
    let wants = match (&args.target, args.via) {
        (Some(t), _) => Wants {
            externals: vec![t.clone()],
            ..none
        },
        (None, Via::Gateway) => Wants {
            gateway: true,
            ..none
        },
        (None, Via::Direct) => Wants {
            direct: true,
            ..none
        },
        (None, Via::Nginx) => Wants {
            nginx: Some(true),
            ..none
        },
    };
    session("run", &args.load, wants, 1)
}

pub fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let wants = Wants {
        direct: true,
        gateway: true,
        nginx: (!args.no_nginx).then_some(false),
        nginx_bin: args.nginx.clone(),
        externals: args.targets.clone(),
    };
    session("compare", &args.load, wants, args.rounds)
}

/// The `k`-th injected failure for `mixed` over `accounts` accounts: (status, account index).
/// Mostly 5xx rotating over accounts 1.., every fifth a 429 on account 0 only: a 429 is a usage
/// limit, which takes the account out of the gateway's pool until its window resets (hours on
/// the mock), so spreading them would empty the pool within a run.
pub fn failure(k: usize, accounts: usize) -> (u16, usize) {
    if k % 5 == 4 {
        return (429, 0);
    }
    let status = [500, 502, 503][k % 3];
    (
        status,
        if accounts < 2 {
            0
        } else {
            1 + k % (accounts - 1)
        },
    )
}

fn inject(up: &Upstream, every: Duration, stop: &AtomicBool) {
    let mut k = 0;
    let mut next = Instant::now() + every;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(20)));
            continue;
        }
        next += every;
        let (status, i) = failure(k, up.accounts.len());
        if let Err(e) = up.fail_next(&up.accounts[i].creds.account_id, status, 1) {
            eprintln!("loadtest: arming an upstream failure failed: {e:#}");
        }
        k += 1;
    }
}

/// What a run sends at one target, built before the rounds.
#[derive(Clone)]
enum Load {
    Http(Arc<Prepared>),
    Ws(Arc<WsPrepared>),
}

struct RunCtx<'a> {
    rt: &'a tokio::runtime::Runtime,
    stage: &'a Stage,
    st: &'a Settings,
    load: &'a LoadArgs,
    rounds: u32,
}

fn one_run(ctx: &RunCtx<'_>, t: &Target, load: Load, round: u32) -> anyhow::Result<Run> {
    let up = ctx.stage.upstream.as_ref();
    if let Some(u) = up.filter(|u| u.pid().is_some()) {
        u.reset().context("resetting the mock between runs")?;
    }
    let rej_before = up
        .map(Upstream::rejections)
        .transpose()?
        .unwrap_or_default();
    let mock_pid = up.and_then(Upstream::pid);
    let target_watch = t.pid.map(Watch::start);
    let mock_watch = mock_pid.filter(|p| Some(*p) != t.pid).map(Watch::start);
    let me = [std::process::id()];
    let client_before = procstat::sample(&me).cpu_s;
    let stop = AtomicBool::new(false);
    let label = format!("{} {round}/{}", t.name, ctx.rounds);
    let (rec, live) = std::thread::scope(|s| {
        let injector = up
            .filter(|_| ctx.st.scenario == Kind::Mixed)
            .map(|u| s.spawn(|| inject(u, ctx.load.fail_every, &stop)));
        let live = Arc::new(Live::new());
        let progress = Progress::start(label, live.clone());
        let rec = match load {
            Load::Http(p) => ctx
                .rt
                .block_on(drive(t, p, ctx.st.mode, ctx.st.bounds, live.clone())),
            Load::Ws(p) => ctx.rt.block_on(ws::drive(p, ctx.st.bounds, live.clone())),
        };
        progress.finish();
        stop.store(true, Ordering::Relaxed);
        if let Some(h) = injector {
            let _ = h.join();
        }
        (rec, live)
    });
    let elapsed = match live.active_time() {
        d if d.is_zero() => live.started.elapsed(),
        d => d,
    };
    let target_proc = target_watch.map(Watch::finish);
    let mock_proc = match mock_watch {
        Some(w) => Some(w.finish()),
        None if mock_pid.is_some() => target_proc,
        None => None,
    };
    let rej_after = up
        .map(Upstream::rejections)
        .transpose()?
        .unwrap_or_default();
    let upstream_rejections: BTreeMap<u16, u64> = rej_after
        .into_iter()
        .filter_map(|(s, n)| {
            let d = n.saturating_sub(rej_before.get(&s).copied().unwrap_or(0));
            (d > 0).then_some((s, d))
        })
        .collect();
    Ok(Run {
        round,
        elapsed,
        streams_peak: live.open_peak.load(Ordering::Relaxed),
        rec,
        target_proc,
        mock_proc,
        client_cpu_s: procstat::sample(&me).cpu_s - client_before,
        upstream_rejections,
    })
}

#[derive(Serialize)]
struct GatewayEnd {
    exit: String,
    exit_code: Option<i32>,
    health: Option<Value>,
}

#[derive(Serialize)]
struct Document<'a> {
    mode: &'a str,
    command: Vec<String>,
    machine: &'a Machine,
    settings: &'a Settings,
    rounds: u32,
    plan: &'a Plan,
    targets: &'a [TargetSummary],
    gateway: Option<GatewayEnd>,
    notes: &'a [String],
    failures: &'a [String],
}

fn default_out(mode: &str, kind: Kind) -> PathBuf {
    let base = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let dir = exe.parent()?;
            let profile = dir.file_name()?.to_str()?;
            matches!(profile, "debug" | "release")
                .then(|| dir.parent().map(|t| t.join("loadtest")))?
        })
        .unwrap_or_else(|| PathBuf::from("target/loadtest"));
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    base.join(format!("{mode}-{}-{secs}.json", kind.name()))
}

fn session(mode: &str, load: &LoadArgs, wants: Wants, rounds: u32) -> anyhow::Result<ExitCode> {
    let nofile = raise_nofile();
    let machine = Machine::read(nofile);
    let mut notes = Vec::new();
    let proxied = wants.gateway || wants.nginx.is_some() || !wants.externals.is_empty();
    let st = settings(load, proxied, nofile.0, &mut notes)?;
    let plan = Plan::new(st.scenario, &st.plan_input);
    let bodies = bodies(&plan);
    let mut stage = Stage::start(load, &wants, st.workers, nofile.0, &mut notes)?;
    let creds: Vec<Credentials> = stage
        .upstream
        .as_ref()
        .map(|u| u.accounts.iter().map(|a| a.creds.clone()).collect())
        .unwrap_or_default();
    let is_ws = st.scenario == Kind::Ws;
    let ws_messages = Arc::new(if is_ws {
        ws::messages(&plan, st.concurrency)
    } else {
        Vec::new()
    });
    let prepared: Vec<Load> = stage
        .targets
        .iter()
        .map(|t| {
            Ok(if is_ws {
                Load::Ws(Arc::new(WsPrepared::new(t, ws_messages.clone(), &creds)?))
            } else {
                Load::Http(Arc::new(Prepared::new(t, &plan, &bodies, &creds)))
            })
        })
        .collect::<anyhow::Result<_>>()?;
    if st.scenario == Kind::Mixed && stage.upstream.is_none() {
        notes.push("mixed without a known upstream (--upstream): no failures injected".into());
    }

    println!("## loadtest {mode}: scenario {}", st.scenario.name());
    println!("{}", machine.line());
    println!(
        "settings: concurrency {}, {:.0}s per run{}, {rounds} round(s), gateway/nginx workers {}, client threads {}{}",
        st.concurrency,
        st.duration_s,
        st.requests.map_or(String::new(), |r| format!(" or {r} requests")),
        st.workers,
        st.client_threads,
        if st.api_key_auth {
            ", gateway with API key auth (one key, no limits)"
        } else {
            ""
        }
    );
    println!("measurement: {}", st.measurement);
    for t in &stage.targets {
        println!("target {}: {}", t.name, t.url);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(st.client_threads)
        .thread_name("loadtest-client")
        .enable_all()
        .build()
        .context("building the load generator's runtime")?;
    let n = stage.targets.len();
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); n];
    let mut failures = Vec::new();
    let mut gateway_dead = false;
    for round in 1..=rounds {
        for k in 0..n {
            let ti = (k + round as usize - 1) % n;
            let t = stage.targets[ti].clone();
            if t.kind == TargetKind::Gateway && gateway_dead {
                continue;
            }
            let ctx = RunCtx {
                rt: &rt,
                stage: &stage,
                st: &st,
                load,
                rounds,
            };
            runs[ti].push(one_run(&ctx, &t, prepared[ti].clone(), round)?);
            std::thread::sleep(SETTLE);
            if t.kind != TargetKind::Gateway {
                continue;
            }
            if let Some(gw) = stage.gateway.as_mut() {
                if let Some(status) = gw.exited() {
                    let msg = format!(
                        "the gateway died during round {round} ({status}); its log:\n{}",
                        gw.log_tail()
                    );
                    eprintln!("loadtest: {msg}");
                    failures.push(msg);
                    gateway_dead = true;
                }
            }
        }
    }
    drop(rt);

    let gateway_end = match stage.gateway.take() {
        None => None,
        Some(gw) => {
            let health = gw.health().ok();
            if let Some(p) = health
                .as_ref()
                .and_then(|h| h["panics"].as_u64())
                .filter(|p| *p > 0)
            {
                notes.push(format!("the gateway's /health counted {p} panics"));
            }
            Some(match gw.stop() {
                Ok((status, tail)) => {
                    if !status.success() {
                        failures.push(format!(
                            "the gateway exited with {status} after SIGTERM; its log:\n{tail}"
                        ));
                    }
                    GatewayEnd {
                        exit: status.to_string(),
                        exit_code: status.code(),
                        health,
                    }
                }
                Err(e) => {
                    failures.push(format!("{e:#}"));
                    GatewayEnd {
                        exit: format!("{e:#}"),
                        exit_code: None,
                        health,
                    }
                }
            })
        }
    };
    if let Some(nginx) = stage.nginx.take() {
        nginx.stop();
    }
    drop(stage.upstream.take());

    let mut summaries: Vec<TargetSummary> = stage
        .targets
        .iter()
        .zip(&runs)
        .filter(|(_, r)| !r.is_empty())
        .map(|(t, r)| summarize(t, r, st.scenario == Kind::Hold))
        .collect();
    add_baseline(&mut summaries);
    if st.scenario == Kind::Mixed {
        notes.push(
            "mixed: the direct and nginx targets do not fail over, so the injected upstream \
             failures they receive are their errors; a gateway should turn them into retries"
                .into(),
        );
    }
    if load.check {
        for s in &summaries {
            if s.error_total > 0 || s.requests_ok == 0 {
                failures.push(format!(
                    "check: {} finished {} {} with {} errors ({:?})",
                    s.name,
                    s.requests_ok,
                    if is_ws { "turns" } else { "requests" },
                    s.error_total,
                    s.errors
                ));
            }
        }
    }

    println!();
    print!(
        "{}",
        if is_ws {
            render_ws(&summaries)
        } else {
            render(&summaries)
        }
    );
    for note in &notes {
        println!("note: {note}");
    }
    let out = load
        .out
        .clone()
        .unwrap_or_else(|| default_out(mode, st.scenario));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let doc = Document {
        mode,
        command: std::env::args().collect(),
        machine: &machine,
        settings: &st,
        rounds,
        plan: &plan,
        targets: &summaries,
        gateway: gateway_end,
        notes: &notes,
        failures: &failures,
    };
    std::fs::write(&out, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("results: {}", out.display());
    if let Some(path) = &load.plot {
        let title = format!(
            "codex-lb loadtest {mode}: {} (concurrency {})",
            st.scenario.name(),
            st.concurrency
        );
        let chart = if is_ws {
            super::plot::svg_ws(&title, &summaries)?
        } else {
            super::plot::svg(&title, &summaries, st.scenario == Kind::Hold)?
        };
        std::fs::write(path, chart).with_context(|| format!("writing {}", path.display()))?;
        println!("chart: {}", path.display());
    }
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failures {
            eprintln!("loadtest: FAILED: {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_rotate_and_429s_stay_on_one_account() {
        let picks: Vec<(u16, usize)> = (0..10).map(|k| failure(k, 8)).collect();
        assert_eq!(picks[4], (429, 0));
        assert_eq!(picks[9], (429, 0));
        assert!(picks
            .iter()
            .filter(|(s, _)| *s != 429)
            .all(|(s, a)| (500..=503).contains(s) && *a >= 1));
        let fives: Vec<u16> = picks.iter().map(|p| p.0).filter(|s| *s != 429).collect();
        assert!(fives.contains(&500) && fives.contains(&502) && fives.contains(&503));
        assert!((0..20).all(|k| failure(k, 1).1 == 0));
    }
}
