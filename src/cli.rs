//! The command line: `serve` (the default) and the `accounts` commands.
//!
//! sled lets one process hold a data dir, so `accounts` commands talk to the running gateway's
//! admin API when the dir is locked, and open the store directly when no gateway holds it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::accounts::registry;
use crate::config::{ServeArgs, TargetArgs};
use crate::control::AccountInfo;
use crate::store::{Store, StoreError};

#[derive(Debug, Parser)]
#[command(
    name = "codex-lb",
    version,
    about = "Pools ChatGPT (Codex) accounts behind one endpoint",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (what bare `codex-lb` does).
    Serve(Box<ServeArgs>),
    /// Add, list and remove pooled accounts.
    Accounts {
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        action: AccountsAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsAction {
    /// Import Codex auth.json files (e.g. ~/.codex/auth.json) as pooled accounts.
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List pooled accounts.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a pooled account by id.
    Remove { id: String },
}

/// Where an `accounts` command runs.
enum Backend {
    Direct(Store),
    Gateway(String),
}

fn backend(target: &TargetArgs) -> Result<Backend, String> {
    let dir = target.resolved_data_dir();
    match Store::open(&dir) {
        Ok(store) => Ok(Backend::Direct(store)),
        Err(StoreError::Locked(_)) => Ok(Backend::Gateway(admin_base(target.listen))),
        Err(e) => Err(e.to_string()),
    }
}

fn admin_base(listen: SocketAddr) -> String {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("http://{addr}")
}

fn call(method: &str, url: &str, body: Option<&[u8]>) -> Result<Value, String> {
    let req = ureq::request(method, url).timeout(std::time::Duration::from_secs(15));
    let res = match body {
        Some(b) => req.set("content-type", "application/json").send_bytes(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => {
            return Err(format!(
                "the data dir is held by a running gateway, but it did not answer at {url}: {e} (pass its --listen address)"
            ))
        }
    };
    let status = resp.status();
    let v: Value = resp
        .into_json()
        .map_err(|e| format!("bad reply from the gateway: {e}"))?;
    if status >= 400 {
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or("request failed")
            .to_string();
        return Err(msg);
    }
    Ok(v)
}

pub fn run_accounts(target: TargetArgs, action: AccountsAction) -> Result<(), String> {
    let backend = backend(&target)?;
    match action {
        AccountsAction::Import { paths } => {
            for path in paths {
                let body = std::fs::read(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let (info, created) = match &backend {
                    Backend::Direct(store) => {
                        let (record, _, created) = registry::import(store, &body)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                        (serde_json::to_value(record).unwrap_or_default(), created)
                    }
                    Backend::Gateway(base) => {
                        let v = call("POST", &format!("{base}/api/accounts/import"), Some(&body))
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                        (
                            v["account"].clone(),
                            v["created"].as_bool().unwrap_or(false),
                        )
                    }
                };
                println!(
                    "{} {} ({}, plan {})",
                    if created { "imported" } else { "updated" },
                    info["id"].as_str().unwrap_or("?"),
                    info["email"].as_str().unwrap_or("no email"),
                    info["plan"].as_str().unwrap_or("unknown"),
                );
            }
            Ok(())
        }
        AccountsAction::List { json } => {
            let accounts: Vec<Value> = match &backend {
                Backend::Direct(store) => registry::load_all(store)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|(record, _)| {
                        serde_json::to_value(AccountInfo {
                            record,
                            blocked_until: None,
                            block_reason: None,
                        })
                        .unwrap_or_default()
                    })
                    .collect(),
                Backend::Gateway(base) => {
                    let v = call("GET", &format!("{base}/api/accounts"), None)?;
                    v["accounts"].as_array().cloned().unwrap_or_default()
                }
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&accounts).unwrap_or_default()
                );
                return Ok(());
            }
            if accounts.is_empty() {
                println!("no accounts; add one with `codex-lb accounts import ~/.codex/auth.json`");
                return Ok(());
            }
            println!(
                "{:<18} {:<32} {:<10} {:<10} BLOCKED UNTIL",
                "ID", "EMAIL", "PLAN", "STATUS"
            );
            for a in accounts {
                println!(
                    "{:<18} {:<32} {:<10} {:<10} {}",
                    a["id"].as_str().unwrap_or("?"),
                    a["email"].as_str().unwrap_or("-"),
                    a["plan"].as_str().unwrap_or("-"),
                    a["status"].as_str().unwrap_or("-"),
                    a["blocked_until"]
                        .as_u64()
                        .map_or("-".to_string(), |t| t.to_string()),
                );
            }
            Ok(())
        }
        AccountsAction::Remove { id } => {
            match &backend {
                Backend::Direct(store) => {
                    if !registry::remove(store, &id).map_err(|e| e.to_string())? {
                        return Err(format!("no account {id}"));
                    }
                }
                Backend::Gateway(base) => {
                    call("DELETE", &format!("{base}/api/accounts/{id}"), None)?;
                }
            }
            println!("removed {id}");
            Ok(())
        }
    }
}
