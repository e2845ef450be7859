//! Everything a session starts before the load: the run's resolved settings (scenario
//! defaults, descriptor budget), the mock upstream, the gateway, nginx and the target list.
//! [`Stage`] owns the started processes; dropping it stops whatever is still running.

use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use serde::Serialize;

use super::body::codex_body;
use super::cli::LoadArgs;
use super::driver::{Bounds, Mode};
use super::gateway::{self, Gateway};
use super::limits::{max_proxied_streams, proxy_fds, FD_OVERHEAD};
use super::machine::cores;
use super::nginx::{self, Nginx};
use super::scenario::{parse_overlay, Kind, Plan, PlanInput};
use super::target::{parse_named_target, HttpUrl, Target, TargetKind};
use super::upstream::Upstream;

/// A request may take this long (hold streams add their own length).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Read buffer per connection; hold keeps thousands of connections, so it gets a small one.
const READ_BUF: usize = 16 * 1024;
const HOLD_READ_BUF: usize = 2 * 1024;

/// The run's settings after defaults and limits.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub scenario: Kind,
    pub concurrency: usize,
    pub duration_s: f64,
    pub requests: Option<u64>,
    pub rate: Option<f64>,
    pub workers: usize,
    pub client_threads: usize,
    /// The started gateway required a proxy API key, and every request to it sent one.
    pub api_key_auth: bool,
    pub timeout_s: f64,
    pub event_ms: u64,
    /// hold: how long each stream lasts (ramp + hold).
    pub stream_life_s: f64,
    pub ramp_per_s: f64,
    /// How the load is generated and what the latencies mean.
    pub measurement: String,
    #[serde(skip)]
    pub mode: Mode,
    #[serde(skip)]
    pub bounds: Bounds,
    #[serde(skip)]
    pub plan_input: PlanInput,
}

/// Resolves `load` against scenario defaults and the descriptor limit `nofile`; `proxied` says
/// whether a proxy (two sockets per stream) is among the targets. Adjustments go to `notes`.
pub fn settings(
    load: &LoadArgs,
    proxied: bool,
    nofile: u64,
    notes: &mut Vec<String>,
) -> anyhow::Result<Settings> {
    let kind = load.scenario;
    let mut concurrency = load
        .concurrency
        .unwrap_or_else(|| kind.default_concurrency());
    if concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let cap = if proxied {
        max_proxied_streams(nofile)
    } else {
        nofile.saturating_sub(FD_OVERHEAD)
    };
    if concurrency as u64 > cap {
        let need = if proxied {
            proxy_fds(concurrency as u64)
        } else {
            concurrency as u64 + FD_OVERHEAD
        };
        let msg =
            format!(
            "{} connections need about {need} open files in {} (a client and an upstream socket \
             per stream in a proxy), but RLIMIT_NOFILE is {nofile} here (hard limit; raise it as \
             root with `ulimit -Hn`, or LimitNOFILE= under systemd); running {cap} instead",
            concurrency,
            if proxied { "the gateway and nginx" } else { "the load generator" },
        );
        eprintln!("loadtest: {msg}");
        notes.push(msg);
        concurrency = cap as usize;
        if concurrency == 0 {
            bail!("no connections fit under RLIMIT_NOFILE {nofile}");
        }
    }
    let duration = load.duration.unwrap_or_else(|| kind.default_duration());
    let event_ms = load
        .event_ms
        .unwrap_or_else(|| kind.default_event_ms())
        .max(1);
    if load.ramp.is_nan() || load.ramp <= 0.0 {
        bail!("--ramp must be above zero");
    }
    let (mode, stream_life, measurement) = match (kind, load.rate) {
        (Kind::Hold, rate) => {
            if rate.is_some() {
                notes.push("--rate is ignored by hold: streams are opened at --ramp per second".into());
            }
            let ramp = Duration::from_secs_f64(concurrency as f64 / load.ramp);
            (
                Mode::Hold {
                    ramp_per_s: load.ramp,
                },
                ramp + duration,
                format!(
                    "hold: {concurrency} streams opened at {} per second, each lasting ramp + hold \
                     ({:.1}s), one event per {event_ms} ms; RSS sampled every 100 ms",
                    load.ramp,
                    (ramp + duration).as_secs_f64()
                ),
            )
        }
        (Kind::Ws, Some(_)) => bail!(
            "--rate does not apply to ws: each socket carries one turn at a time, back to back \
             (use --concurrency for the number of sockets)"
        ),
        (Kind::Ws, None) => (
            Mode::Closed,
            Duration::ZERO,
            format!(
                "websocket: {concurrency} sockets, each sending its next response.create as soon \
                 as the previous turn's terminal event arrived (closed loop: service times, \
                 coordinated omission as for HTTP); time to first event from writing the \
                 response.create to the first message, turn to response.completed; the upgrade \
                 before a socket's first turn is timed apart"
            ),
        ),
        (_, Some(rate)) if rate > 0.0 => (
            Mode::Open { rate },
            Duration::ZERO,
            format!(
                "open loop: {rate} requests/s started on schedule (at most {concurrency} in flight); \
                 every latency is measured from the request's scheduled start, so stalls are charged \
                 to the requests they delayed (no coordinated omission)"
            ),
        ),
        (_, Some(_)) => bail!("--rate must be above zero"),
        (_, None) => (
            Mode::Closed,
            Duration::ZERO,
            format!(
                "closed loop: {concurrency} keep-alive connections, each sending its next request \
                 when the previous one ends; latencies are service times (a stalled target also \
                 slows the sender, so queueing delay is not in them: coordinated omission); use \
                 --rate for open-loop numbers"
            ),
        ),
    };
    let timeout = load.timeout.unwrap_or(DEFAULT_TIMEOUT + stream_life);
    let overlay = load
        .mock_scenario
        .as_deref()
        .map(parse_overlay)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let workers = load.workers.unwrap_or_else(cores).max(1);
    let client_threads = load.client_threads.unwrap_or_else(cores).max(1);
    Ok(Settings {
        scenario: kind,
        concurrency,
        duration_s: duration.as_secs_f64(),
        requests: load.requests,
        rate: load.rate,
        workers,
        client_threads,
        api_key_auth: load.api_key_auth,
        timeout_s: timeout.as_secs_f64(),
        event_ms,
        stream_life_s: stream_life.as_secs_f64(),
        ramp_per_s: load.ramp,
        measurement,
        mode,
        bounds: Bounds {
            concurrency,
            duration,
            max_requests: load.requests,
            timeout,
            read_buf: if kind == Kind::Hold {
                HOLD_READ_BUF
            } else {
                READ_BUF
            },
        },
        plan_input: PlanInput {
            event_ms,
            stream_life,
            overlay,
        },
    })
}

/// Request bodies for every variant of the plan, built once and shared by all targets.
pub fn bodies(plan: &Plan) -> Vec<Bytes> {
    plan.variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let key = format!("0199a0b0-0000-7000-8000-{i:012}");
            Bytes::from(codex_body(&v.mock, v.body_bytes, &key))
        })
        .collect()
}

/// The started gateway's target name: runs with and without key auth stay apart in results.
pub fn gateway_name(api_key_auth: bool) -> &'static str {
    if api_key_auth {
        "codex-lb+keys"
    } else {
        "codex-lb"
    }
}

/// Which targets to set up.
pub struct Wants {
    pub direct: bool,
    pub gateway: bool,
    /// `Some(required)`: set nginx up; a missing nginx is an error only when required.
    pub nginx: Option<bool>,
    pub nginx_bin: Option<std::path::PathBuf>,
    pub externals: Vec<String>,
}

/// The processes a session started and the targets in front of them.
pub struct Stage {
    pub upstream: Option<Upstream>,
    pub gateway: Option<Gateway>,
    pub nginx: Option<Nginx>,
    pub targets: Vec<Target>,
}

impl Stage {
    pub fn start(
        load: &LoadArgs,
        wants: &Wants,
        workers: usize,
        nofile: u64,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<Stage> {
        if load.api_key_auth && !wants.gateway {
            bail!(
                "--api-key-auth applies to the gateway the harness starts, and this run starts \
                 none (--target or --via direct|nginx)"
            );
        }
        let nginx_bin = match wants.nginx {
            Some(required) => match nginx::find(wants.nginx_bin.as_deref()) {
                Some(b) => Some(b),
                None if required => bail!("{}", nginx::INSTALL_HINT),
                None => {
                    let msg = format!("skipping the nginx target: {}", nginx::INSTALL_HINT);
                    eprintln!("loadtest: {msg}");
                    notes.push(msg);
                    None
                }
            },
            None => None,
        };
        let gateway_bin = if wants.gateway {
            Some(gateway::locate(
                load.gateway_bin.as_deref(),
                !load.no_build,
            )?)
        } else {
            None
        };
        let need_upstream =
            wants.direct || wants.gateway || nginx_bin.is_some() || load.upstream.is_some();
        let upstream = match (&load.upstream, need_upstream) {
            (Some(url), _) => Some(Upstream::connect(url)?),
            (None, true) => Some(Upstream::spawn(load.accounts.max(1), cores())?),
            (None, false) => None,
        };
        let mut stage = Stage {
            upstream,
            gateway: None,
            nginx: None,
            targets: Vec::new(),
        };
        if let Some(up) = &stage.upstream {
            if wants.direct {
                let url = HttpUrl {
                    addr: up.url.addr,
                    host: up.url.host.clone(),
                    path: format!("{}/codex/responses", up.url.path),
                };
                stage
                    .targets
                    .push(Target::new("direct", TargetKind::Direct, &url, up.pid()));
            }
            if let Some(bin) = &gateway_bin {
                let auths: Vec<String> = up.accounts.iter().map(|a| a.auth_json.clone()).collect();
                let gw = Gateway::start(bin, &up.base_url(), workers, &auths, load.api_key_auth)
                    .context("starting the gateway")?;
                let (_, url) = parse_named_target(&format!("http://{}", gw.addr))
                    .map_err(anyhow::Error::msg)?;
                let mut t = Target::new(
                    gateway_name(load.api_key_auth),
                    TargetKind::Gateway,
                    &url,
                    Some(gw.pid()),
                );
                t.api_key = gw.api_key.clone();
                stage.targets.push(t);
                stage.gateway = Some(gw);
            }
            if let Some(bin) = &nginx_bin {
                let n = Nginx::start(bin, up.url.addr, workers, nofile, load.scenario == Kind::Ws)
                    .context("starting nginx")?;
                let (_, url) = parse_named_target(&format!("http://{}", n.addr))
                    .map_err(anyhow::Error::msg)?;
                stage
                    .targets
                    .push(Target::new("nginx", TargetKind::Nginx, &url, Some(n.pid())));
                stage.nginx = Some(n);
            }
        }
        for spec in &wants.externals {
            let (name, url) = parse_named_target(spec).map_err(anyhow::Error::msg)?;
            stage
                .targets
                .push(Target::new(&name, TargetKind::External, &url, None));
        }
        if stage.targets.is_empty() {
            bail!("no target to load");
        }
        Ok(stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::cli::{Cli, Command};
    use clap::Parser as _;

    fn load(args: &[&str]) -> LoadArgs {
        let cli = Cli::try_parse_from(["loadtest", "run"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Run(r) => r.load,
            _ => unreachable!(),
        }
    }

    #[test]
    fn scenario_defaults_and_modes() {
        let mut notes = Vec::new();
        let s = settings(&load(&[]), true, 20_000, &mut notes).unwrap();
        assert_eq!(
            (s.concurrency, s.duration_s, s.mode),
            (64, 10.0, Mode::Closed)
        );
        assert!(s.measurement.contains("coordinated omission"));
        assert!(!s.api_key_auth);
        assert_eq!(gateway_name(s.api_key_auth), "codex-lb");
        let s = settings(&load(&["--rate", "200"]), true, 20_000, &mut notes).unwrap();
        assert_eq!(s.mode, Mode::Open { rate: 200.0 });
        assert!(notes.is_empty());
        let s = settings(&load(&["--scenario", "ws"]), true, 20_000, &mut notes).unwrap();
        assert_eq!(
            (s.concurrency, s.duration_s, s.mode),
            (64, 10.0, Mode::Closed)
        );
        assert!(s.measurement.starts_with("websocket: 64 sockets"));
        let s = settings(&load(&["--api-key-auth"]), true, 20_000, &mut notes).unwrap();
        assert!(s.api_key_auth);
        assert_eq!(gateway_name(s.api_key_auth), "codex-lb+keys");
    }

    #[test]
    fn hold_is_capped_by_the_descriptor_limit() {
        let mut notes = Vec::new();
        let s = settings(&load(&["--scenario", "hold"]), true, 20_000, &mut notes).unwrap();
        assert_eq!(s.concurrency, 9_950);
        assert!(notes[0].contains("RLIMIT_NOFILE is 20000"), "{notes:?}");
        // 9950 streams at 1000/s take 9.95 s to open; each lasts that plus the 20 s hold.
        assert!((s.stream_life_s - 29.95).abs() < 1e-9);
        assert!((s.timeout_s - 59.95).abs() < 1e-9);
        assert_eq!(s.bounds.read_buf, HOLD_READ_BUF);
        let mut notes = Vec::new();
        let s = settings(&load(&["--scenario", "hold"]), false, 20_000, &mut notes).unwrap();
        assert_eq!(s.concurrency, 10_000);
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut notes = Vec::new();
        assert!(settings(&load(&["--concurrency", "0"]), true, 20_000, &mut notes).is_err());
        assert!(settings(&load(&["--rate", "0"]), true, 20_000, &mut notes).is_err());
        assert!(settings(&load(&["--mock-scenario", "[]"]), true, 20_000, &mut notes).is_err());
        let err = settings(
            &load(&["--scenario", "ws", "--rate", "10"]),
            true,
            20_000,
            &mut notes,
        )
        .unwrap_err();
        assert!(err.to_string().contains("--rate"), "{err:#}");
    }

    #[test]
    fn key_auth_needs_a_started_gateway() {
        let wants = Wants {
            direct: true,
            gateway: false,
            nginx: None,
            nginx_bin: None,
            externals: Vec::new(),
        };
        let mut notes = Vec::new();
        let err = Stage::start(&load(&["--api-key-auth"]), &wants, 1, 20_000, &mut notes)
            .err()
            .unwrap();
        assert!(err.to_string().contains("--api-key-auth"), "{err:#}");
    }
}
