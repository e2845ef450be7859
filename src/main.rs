//! Process entry: allocator, logging, CLI dispatch, signals.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use codex_lb::cli::{run_accounts, Cli, Command};
use codex_lb::config::{ServeArgs, Settings};
use codex_lb::Gateway;

#[global_allocator]
static GLOBAL: codex_lb::alloc::GatewayAlloc = codex_lb::alloc::GatewayAlloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    codex_lb::alloc::configure_system_allocator();
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(*args),
        Some(Command::Accounts { target, action }) => exit(run_accounts(target, action)),
        Some(Command::Keys { target, action }) => exit(codex_lb::cli::keys::run(target, action)),
        Some(Command::Usage { target, json }) => exit(codex_lb::cli::usage::run(target, json)),
        Some(Command::Codex { action }) => exit(codex_lb::cli::codex::run(action)),
        Some(Command::Doctor(args)) => exit(codex_lb::cli::codex::doctor::run(args)),
        Some(Command::Dashboard { target, action }) => {
            exit(codex_lb::cli::dashboard::run(target, action))
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let settings = match Settings::from_args(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match codex_lb::cores::raise_fd_limit() {
        Ok((old, new)) if new > old => tracing::info!(old, new, "raised the open-file limit"),
        Ok((_, now)) if now < 4096 => {
            tracing::warn!(limit = now, "open-file limit is low; each stream needs two")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
    let gateway = match Gateway::start(settings) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = gateway.shutdown_handle();
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signal_handle = handle.clone();
    std::thread::spawn(move || {
        let mut seen = 0;
        for sig in signals.forever() {
            seen += 1;
            if seen == 1 {
                tracing::info!(
                    signal = sig,
                    "shutting down: no new connections, in-flight requests may finish"
                );
                signal_handle.trigger();
            } else {
                tracing::warn!("second signal: exiting at once");
                std::process::exit(130);
            }
        }
    });
    let mut crashed = false;
    while !gateway.shared().shutdown.is_requested() {
        if gateway.worker_died() {
            tracing::error!("a worker thread died; shutting down");
            crashed = true;
            handle.trigger();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match gateway.wait() {
        Ok(()) if !crashed => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Ok(()) => ExitCode::FAILURE,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn exit(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
