//! The `loadtest` command line: `run` (one target), `compare` (the mock directly, the gateway,
//! nginx and any `--target`, alternating) and the hidden `mock` (the child mock process).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::scenario::Kind;

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    about = "Load harness for codex-lb: drives Codex-shaped streaming load at the gateway, the mock upstream directly and nginx, and reports throughput, latency and the gateway's CPU and memory"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load one target (the gateway, started here, unless --target or --via says otherwise).
    Run(RunArgs),
    /// The same load, alternating, against the mock directly, the gateway, nginx and every
    /// --target.
    Compare(CompareArgs),
    /// Serve the mock upstream until stdin closes (used by the harness itself).
    #[command(hide = true)]
    Mock(MockArgs),
}

/// What to run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    Gateway,
    Direct,
    Nginx,
}

/// Flags `run` and `compare` share.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    #[arg(long, value_enum, default_value = "short")]
    pub scenario: Kind,
    /// Connections (closed loop), the in-flight cap (--rate), streams (hold) or WebSocket
    /// clients, one socket each (ws). Default: 64; hold 10000; big 16.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// How long each run sends requests; for hold, how long all streams stay open together.
    /// Default: 10s; hold 20s; mixed 15s.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop a run after this many requests (ws: turns), even before --duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Open loop: start R requests per second on schedule and time each from its scheduled
    /// start (corrects for coordinated omission). Default: closed loop. Not for ws.
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// Worker threads of the gateway and worker processes of nginx. Default: cores.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Use the mock upstream already running at this URL instead of starting one.
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Accounts in the started mock (all imported into the gateway).
    #[arg(long, default_value_t = 8)]
    pub accounts: usize,
    /// JSON results file. Default: target/loadtest/<mode>-<scenario>-<time>.json.
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
    /// Also write an SVG chart of latency percentiles and throughput per target.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Longest a single request may take. Default: 30s (hold: ramp + hold + 30s).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Pause between delta events for stream, hold and mixed. Default: 10; hold 1000.
    #[arg(long, value_name = "MS")]
    pub event_ms: Option<u64>,
    /// hold: streams opened per second.
    #[arg(long, default_value_t = 1000.0, value_name = "PER_S")]
    pub ramp: f64,
    /// mixed: arm one upstream failure (5xx; every fifth a 429 on one account) this often.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub fail_every: Duration,
    /// A JSON object laid over every request's mock scenario, e.g. '{"delta_bytes":128}'.
    #[arg(long, value_name = "JSON")]
    pub mock_scenario: Option<String>,
    /// Threads of the load generator. Default: cores.
    #[arg(long)]
    pub client_threads: Option<usize>,
    /// The codex-lb binary. Default: the one beside this executable, rebuilt by cargo first.
    #[arg(long, value_name = "PATH")]
    pub gateway_bin: Option<PathBuf>,
    /// Do not run `cargo build -p codex-lb` before starting the gateway.
    #[arg(long)]
    pub no_build: bool,
    /// Start the gateway with `--api-key-auth`, create one key through its admin API and send it
    /// (`Authorization: Bearer sk-clb-…`) on every request to the gateway; the target is then
    /// named `codex-lb+keys`. The mock and nginx keep their account headers. Compare a run with
    /// and one without to see what key auth costs.
    #[arg(long)]
    pub api_key_auth: bool,
    /// Exit 1 unless every target finished with zero errors (for CI).
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Load this already running gateway ([NAME=]URL) instead of starting one.
    #[arg(long, value_name = "URL", conflicts_with = "via")]
    pub target: Option<String>,
    /// Which local target to start and load.
    #[arg(long, value_enum, default_value = "gateway")]
    pub via: Via,
    /// The nginx binary (with --via nginx).
    #[arg(long, value_name = "PATH")]
    pub nginx: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Another gateway to load beside ours ([NAME=]URL; repeatable). It must reach the same
    /// mock (see --upstream) and have its accounts imported.
    #[arg(long = "target", value_name = "URL")]
    pub targets: Vec<String>,
    /// Runs per target; targets alternate within each round, in a rotated order.
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Leave nginx out even when installed.
    #[arg(long)]
    pub no_nginx: bool,
    /// The nginx binary. Default: nginx on PATH or in /usr/sbin.
    #[arg(long, value_name = "PATH")]
    pub nginx: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct MockArgs {
    #[arg(long, default_value_t = 8)]
    pub accounts: usize,
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

/// `500ms`, `20s`, `2m`, ...
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (try 500ms, 20s, 2m)"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("loadtest").chain(args.iter().copied()))
    }

    #[test]
    fn the_issue_command_parses() {
        let cli = parse(&[
            "run",
            "--scenario",
            "short",
            "--concurrency",
            "64",
            "--duration",
            "20s",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(r.load.scenario, Kind::Short);
        assert_eq!(r.load.concurrency, Some(64));
        assert_eq!(r.load.duration, Some(Duration::from_secs(20)));
        assert_eq!(r.via, Via::Gateway);
        assert!(!r.load.api_key_auth);
        let cli = parse(&["compare", "--api-key-auth"]).unwrap();
        let Command::Compare(c) = cli.command else {
            panic!("not compare")
        };
        assert!(c.load.api_key_auth);
    }

    #[test]
    fn compare_takes_repeated_targets_and_rounds() {
        let cli = parse(&[
            "compare",
            "--scenario",
            "mixed",
            "--target",
            "a=http://127.0.0.1:1",
            "--target",
            "http://127.0.0.1:2",
            "--rounds",
            "3",
            "--rate",
            "500",
            "--check",
        ])
        .unwrap();
        let Command::Compare(c) = cli.command else {
            panic!("not compare")
        };
        assert_eq!(c.targets.len(), 2);
        assert_eq!(
            (c.rounds, c.load.rate, c.load.check),
            (3, Some(500.0), true)
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["run", "--scenario", "nope"]).is_err());
        assert!(parse(&["run", "--duration", "0s"]).is_err());
        assert!(parse(&["run", "--duration", "soon"]).is_err());
        assert!(parse(&["run", "--target", "http://127.0.0.1:1", "--via", "direct"]).is_err());
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    }
}
