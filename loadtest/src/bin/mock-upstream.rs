//! `mock-upstream`: runs the mock ChatGPT Codex upstream as a process, for the load harness and
//! for pointing a real Codex CLI or gateway at it by hand. Prints one line with its base URL,
//! then serves until SIGINT or SIGTERM. `--tls` serves HTTPS with a fresh throwaway CA and a
//! `localhost` certificate; `--write-ca` saves that CA for the client to trust. The WebSocket
//! transport of `/responses` is on unless `--no-websockets`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use loadtest::mock::{self_signed_localhost, MockConfig, MockUpstream, Scenario};

#[derive(Parser, Debug)]
#[command(
    name = "mock-upstream",
    about = "Mock ChatGPT Codex upstream for codex-lb tests"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Number of seeded accounts.
    #[arg(long, default_value_t = 2)]
    accounts: usize,
    /// Plan type of the seeded accounts.
    #[arg(long, default_value = "plus")]
    plan: String,
    /// Write DIR/auth-<i>.json (Codex auth.json) for every account.
    #[arg(long, value_name = "DIR")]
    write_auth_dir: Option<PathBuf>,
    /// Global default scenario as JSON, e.g. '{"deltas":32,"delay_ms":20}'.
    #[arg(long)]
    scenario: Option<String>,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Tokens that fill an account's 5-hour window (raise it for load tests).
    #[arg(long, default_value_t = MockConfig::default().primary_capacity_tokens)]
    primary_capacity_tokens: u64,
    /// Tokens that fill an account's weekly window.
    #[arg(long, default_value_t = MockConfig::default().secondary_capacity_tokens)]
    secondary_capacity_tokens: u64,
    /// Serve HTTPS (certificate for localhost and 127.0.0.1, signed by a CA made at start-up);
    /// the base URL becomes https://localhost:PORT/backend-api.
    #[arg(long)]
    tls: bool,
    /// With --tls: write the CA certificate (PEM) clients must trust to this file.
    #[arg(long, value_name = "PATH", requires = "tls")]
    write_ca: Option<PathBuf>,
    /// Refuse WebSocket upgrades of /backend-api/codex/responses with 426, as an upstream
    /// without the WebSocket transport would (clients then fall back to HTTP POST).
    #[arg(long)]
    no_websockets: bool,
    /// WebSocket connection-age limit: the next response.create after it gets the
    /// websocket_connection_limit_reached error, e.g. "60m", "30s".
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "60m")]
    ws_max_age: std::time::Duration,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let scenario = match &args.scenario {
        Some(raw) => Scenario::from_json(raw).map_err(anyhow::Error::msg)?,
        None => Scenario::default(),
    };
    let (tls, ca_pem) = if args.tls {
        let (tls, ca_pem) = self_signed_localhost();
        (Some(tls), Some(ca_pem))
    } else {
        (None, None)
    };
    if let (Some(path), Some(pem)) = (&args.write_ca, &ca_pem) {
        std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
    }
    let cfg = MockConfig {
        listen: args.listen,
        accounts: args.accounts,
        plan: args.plan.clone(),
        scenario,
        worker_threads: args.workers,
        primary_capacity_tokens: args.primary_capacity_tokens,
        secondary_capacity_tokens: args.secondary_capacity_tokens,
        tls,
        websockets: !args.no_websockets,
        ws_max_age: args.ws_max_age,
        ..MockConfig::default()
    };
    let mock = MockUpstream::start(cfg)?;
    if let Some(dir) = &args.write_auth_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for i in 0..args.accounts {
            let path = dir.join(format!("auth-{i}.json"));
            std::fs::write(&path, mock.auth_json(i))
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    // The handlers exist before the address is printed: whoever reads it may signal at once.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut term, mut int) = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "mock-upstream listening on {}", mock.base_url())?;
    out.flush()?;
    drop(out);

    rt.block_on(async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    drop(mock);
    Ok(())
}
