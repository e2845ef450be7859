//! `loadtest`: the load harness for codex-lb (`run`, `compare`; see `loadtest --help` and
//! tuning.md). Everything lives in `loadtest::harness`; this file only dispatches.

use std::process::ExitCode;

use clap::Parser as _;
use loadtest::harness::cli::{Cli, Command};
use loadtest::harness::{session, upstream};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => session::run(args),
        Command::Compare(args) => session::compare(args),
        Command::Mock(args) => {
            upstream::serve_mock(args.accounts, args.workers).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
