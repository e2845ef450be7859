//! The command line: `serve` (the default) and the `accounts` commands.
//!
//! sled lets one process hold a data dir, so `accounts` commands talk to the running gateway's
//! admin API when the dir is locked, and open the store directly when no gateway holds it.

pub mod codex;
pub mod dashboard;
pub mod keys;
mod login;
pub mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::accounts::registry;
use crate::accounts::AccountStatus;
use crate::config::{LoginArgs, ServeArgs, TargetArgs};
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
    /// Tokens, cost and cache hits per key and per account: today, 7 and 30 days.
    Usage {
        #[command(flatten)]
        target: TargetArgs,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Create, list, update and revoke proxy API keys.
    Keys {
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        action: keys::KeysAction,
    },
    /// Point the Codex CLI at the gateway (`setup`) and move saved sessions to it
    /// (`retag-sessions`).
    Codex {
        #[command(subcommand)]
        action: codex::CodexAction,
    },
    /// Check that the Codex CLI can use the gateway: PASS or FAIL per check, with the fix.
    Doctor(codex::DoctorArgs),
    /// The dashboard's passwords.
    Dashboard {
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        action: dashboard::DashboardAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsAction {
    /// Sign in to ChatGPT and add the account: in a browser (callback on localhost:1455 while
    /// the sign-in is pending), by device code, or by pasting the final URL back.
    Login {
        /// Sign in with a code typed on another device (headless servers).
        #[arg(long, conflicts_with = "manual")]
        device: bool,
        /// Do not listen for the callback; paste the URL the browser ends on instead (when the
        /// callback port cannot be reached from the browser).
        #[arg(long)]
        manual: bool,
        /// Print the sign-in URL without trying to open a browser.
        #[arg(long)]
        no_browser: bool,
        #[command(flatten)]
        login: LoginArgs,
        /// Extra CA certificates (PEM) to trust for the issuer.
        #[arg(long, env = "CODEX_LB_UPSTREAM_CA_FILE")]
        upstream_ca_file: Option<PathBuf>,
    },
    /// Import Codex auth.json files (e.g. ~/.codex/auth.json), or every *.json file of a
    /// directory, as pooled accounts. Importing the same account again updates it.
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Write an account's tokens as a Codex auth.json (to move it; see the warning it prints).
    Export {
        id: String,
        /// Output format; `codex` is the Codex CLI's auth.json.
        #[arg(long, default_value = "codex", value_parser = ["codex"])]
        format: String,
        /// Write to this file (created with mode 0600) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// List pooled accounts.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a pooled account by id.
    Remove { id: String },
    /// Take an account out of rotation (it keeps its tokens and usage).
    Pause { id: String },
    /// Put a paused (or deactivated) account back into rotation.
    Resume { id: String },
    /// Set an account's routing priority and usage caps.
    Set {
        id: String,
        /// burn_first, normal or preserve.
        #[arg(long)]
        priority: Option<crate::accounts::Priority>,
        /// Stop routing here once the 5 h window is this full (percent); `none` clears it.
        #[arg(long, value_parser = parse_cap)]
        cap_primary: Option<Option<f64>>,
        /// Stop routing here once the weekly window is this full (percent); `none` clears it.
        #[arg(long, value_parser = parse_cap)]
        cap_secondary: Option<Option<f64>>,
        /// Start at most this many requests per minute here; `none` clears it.
        #[arg(long, value_parser = parse_rpm)]
        rpm: Option<Option<u32>>,
    },
}

fn parse_rpm(s: &str) -> Result<Option<u32>, String> {
    match s {
        "none" => Ok(None),
        _ => match s.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(format!(
                "{s:?}: a whole number of requests per minute, or `none`"
            )),
        },
    }
}

fn parse_cap(s: &str) -> Result<Option<f64>, String> {
    if s == "none" {
        return Ok(None);
    }
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err("caps are between 0 and 100".into());
    }
    Ok(Some(v))
}

/// Where an `accounts` command runs.
enum Backend {
    Direct(Store),
    Gateway(String),
}

fn backend(target: &TargetArgs) -> Result<Backend, String> {
    let dir = target.resolved_data_dir();
    match Store::open_with(&dir, target.allow_open_data_dir) {
        Ok(store) => Ok(Backend::Direct(store)),
        Err(StoreError::Locked(_)) => {
            // Whoever can read the data dir is the gateway's admin (see dashboard::auth).
            if let Some(token) = crate::dashboard::auth::read_admin_token(&dir) {
                let _ = ADMIN_TOKEN.set(token);
            }
            Ok(Backend::Gateway(admin_base(target.listen)))
        }
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

/// The running gateway's admin token, read from its data dir when a command goes through it.
static ADMIN_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn call(method: &str, url: &str, body: Option<&[u8]>) -> Result<Value, String> {
    let mut req = ureq::request(method, url).timeout(std::time::Duration::from_secs(15));
    if let Some(token) = ADMIN_TOKEN.get() {
        req = req.set("authorization", &format!("Bearer {token}"));
    }
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
        AccountsAction::Login {
            device,
            manual,
            no_browser,
            login,
            upstream_ca_file,
        } => login::run(
            backend,
            login::LoginOptions {
                device,
                manual,
                no_browser,
                login,
                ca_file: upstream_ca_file,
            },
        ),
        AccountsAction::Import { paths } => {
            let files = import_files(&paths)?;
            let mut failed = 0;
            for path in &files {
                match import_one(&backend, path) {
                    Ok((info, created)) => println!(
                        "{} {} ({}, plan {})",
                        if created { "imported" } else { "updated" },
                        info["id"].as_str().unwrap_or("?"),
                        info["email"].as_str().unwrap_or("no email"),
                        info["plan"].as_str().unwrap_or("unknown"),
                    ),
                    Err(e) => {
                        eprintln!("{}: {e}", path.display());
                        failed += 1;
                    }
                }
            }
            match failed {
                0 => Ok(()),
                n => Err(format!("{n} of {} files were not imported", files.len())),
            }
        }
        AccountsAction::Export {
            id,
            format: _,
            output,
        } => {
            let auth = match &backend {
                Backend::Direct(store) => {
                    let (record, tokens) = registry::get(store, &id)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("no account {id}"))?;
                    crate::accounts::auth_file::to_auth_json(
                        &tokens,
                        Some(&record.chatgpt_account_id),
                        record.last_refresh_at,
                    )
                }
                Backend::Gateway(base) => {
                    call("GET", &format!("{base}/api/accounts/{id}/export"), None)?["auth_json"]
                        .clone()
                }
            };
            let text = serde_json::to_string_pretty(&auth).unwrap_or_default();
            match output {
                Some(path) => write_private(&path, text.as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
                None => println!("{text}"),
            }
            eprintln!("warning: {}", crate::dashboard::EXPORT_WARNING);
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
                            quota: Default::default(),
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
                "{:<18} {:<28} {:<6} {:<16} {:<10} {:<22} {:<22} BLOCKED",
                "ID", "EMAIL", "PLAN", "STATUS", "PRIORITY", "5H WINDOW", "WEEKLY WINDOW"
            );
            let now = crate::accounts::now_unix();
            for a in accounts {
                let blocked = match (a["blocked_until"].as_u64(), a["block_reason"].as_str()) {
                    (Some(t), Some(r)) => format!("{r} for {}", human_secs(t.saturating_sub(now))),
                    _ => "-".to_string(),
                };
                println!(
                    "{:<18} {:<28} {:<6} {:<16} {:<10} {:<22} {:<22} {}",
                    a["id"].as_str().unwrap_or("?"),
                    a["email"].as_str().unwrap_or("-"),
                    a["plan"].as_str().unwrap_or("-"),
                    a["status"].as_str().unwrap_or("-"),
                    a["priority"].as_str().unwrap_or("normal"),
                    window_text(&a["quota"]["primary"], now),
                    window_text(&a["quota"]["secondary"], now),
                    blocked,
                );
            }
            Ok(())
        }
        AccountsAction::Pause { id } => account_change(&backend, &id, "pause", |r| {
            r.status = AccountStatus::Paused;
            r.status_reason = Some("paused by the owner".into());
        }),
        AccountsAction::Resume { id } => account_change(&backend, &id, "resume", |r| {
            r.status = AccountStatus::Active;
            r.status_reason = None;
        }),
        AccountsAction::Set {
            id,
            priority,
            cap_primary,
            cap_secondary,
            rpm,
        } => {
            let mut patch = serde_json::Map::new();
            if let Some(p) = priority {
                patch.insert(
                    "priority".into(),
                    serde_json::to_value(p).unwrap_or_default(),
                );
            }
            if let Some(c) = cap_primary {
                patch.insert(
                    "cap_primary_percent".into(),
                    serde_json::to_value(c).unwrap_or_default(),
                );
            }
            if let Some(c) = cap_secondary {
                patch.insert(
                    "cap_secondary_percent".into(),
                    serde_json::to_value(c).unwrap_or_default(),
                );
            }
            if let Some(r) = rpm {
                patch.insert(
                    "requests_per_minute".into(),
                    serde_json::to_value(r).unwrap_or_default(),
                );
            }
            match &backend {
                Backend::Direct(store) => {
                    let (mut record, tokens) = registry::get(store, &id)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("no account {id}"))?;
                    if let Some(p) = priority {
                        record.priority = p;
                    }
                    if let Some(c) = cap_primary {
                        record.cap_primary_percent = c;
                    }
                    if let Some(c) = cap_secondary {
                        record.cap_secondary_percent = c;
                    }
                    if let Some(r) = rpm {
                        record.requests_per_minute = r;
                    }
                    registry::put(store, &record, &tokens).map_err(|e| e.to_string())?;
                    store.accounts.flush().map_err(|e| e.to_string())?;
                }
                Backend::Gateway(base) => {
                    let body = serde_json::to_vec(&patch).unwrap_or_default();
                    call("PATCH", &format!("{base}/api/accounts/{id}"), Some(&body))?;
                }
            }
            println!("updated {id}");
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

/// The files an import reads: each file given, and the `*.json` files of each directory given.
fn import_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "json"))
                .collect();
            if found.is_empty() {
                return Err(format!("{} has no .json files", p.display()));
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn import_one(backend: &Backend, path: &std::path::Path) -> Result<(Value, bool), String> {
    let body = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    match backend {
        Backend::Direct(store) => {
            let (record, _, created) = registry::import(store, &body).map_err(|e| e.to_string())?;
            Ok((serde_json::to_value(record).unwrap_or_default(), created))
        }
        Backend::Gateway(base) => {
            let v = call("POST", &format!("{base}/api/accounts/import"), Some(&body))?;
            Ok((
                v["account"].clone(),
                v["created"].as_bool().unwrap_or(false),
            ))
        }
    }
}

/// Writes a file only its owner can read (it holds tokens).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open; tighten it too.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// Pauses or resumes an account, through the gateway or directly in the store.
fn account_change(
    backend: &Backend,
    id: &str,
    action: &str,
    apply: impl FnOnce(&mut crate::accounts::AccountRecord),
) -> Result<(), String> {
    match backend {
        Backend::Direct(store) => {
            let (mut record, tokens) = registry::get(store, id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no account {id}"))?;
            if action == "resume" && record.status == AccountStatus::ReauthRequired {
                return Err(format!(
                    "account {id} needs a new sign-in: import a fresh auth.json"
                ));
            }
            apply(&mut record);
            registry::put(store, &record, &tokens).map_err(|e| e.to_string())?;
            store.accounts.flush().map_err(|e| e.to_string())?;
        }
        Backend::Gateway(base) => {
            call(
                "POST",
                &format!("{base}/api/accounts/{id}/{action}"),
                Some(b"{}"),
            )?;
        }
    }
    println!("{action}d {id}");
    Ok(())
}

fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `37% (resets in 2h05m)`, or `-` when the window is unknown.
fn window_text(w: &Value, now: u64) -> String {
    let Some(used) = w["used_percent"].as_f64() else {
        return "-".into();
    };
    match w["reset_at"].as_u64() {
        Some(t) if t > now => format!("{used:.0}% (resets {})", human_secs(t - now)),
        _ => format!("{used:.0}%"),
    }
}
