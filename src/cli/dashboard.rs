//! `codex-lb dashboard set-password`: the dashboard's admin or viewer password from the command
//! line, so a gateway can be given one before it first listens beyond loopback. Through the
//! running gateway when it holds the data dir (with the admin token), else in the store.

use std::io::{BufRead, IsTerminal};

use clap::Subcommand;
use serde_json::json;

use super::{backend, call, Backend};
use crate::config::TargetArgs;
use crate::dashboard::auth::service::{password_is_set, set_password_in_store};
use crate::dashboard::auth::Role;

#[derive(Debug, Subcommand)]
pub enum DashboardAction {
    /// Set the admin password (asks for the current one when there is one), or with --viewer the
    /// read-only login's. Reads from the terminal, or one line each from standard input.
    SetPassword {
        #[arg(long)]
        viewer: bool,
    },
}

/// Prompts on a terminal (no echo), else reads the next line of standard input.
fn read_secret(prompt: &str, lines: &mut impl Iterator<Item = String>) -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt).map_err(|e| format!("cannot read the password: {e}"))
    } else {
        lines
            .next()
            .ok_or_else(|| format!("standard input ended before: {}", prompt.trim()))
    }
}

pub fn run(target: TargetArgs, action: DashboardAction) -> Result<(), String> {
    let DashboardAction::SetPassword { viewer } = action;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines().map_while(Result::ok);
    let new = read_secret("new password: ", &mut lines)?;
    if std::io::stdin().is_terminal() && read_secret("again: ", &mut lines)? != new {
        return Err("the two passwords differ; nothing changed".into());
    }
    let role = if viewer { Role::Viewer } else { Role::Admin };
    match backend(&target)? {
        Backend::Direct(store) => {
            let tree = store
                .db
                .open_tree("admin")
                .map_err(|e| format!("cannot open the store: {e}"))?;
            let current = if role == Role::Admin && password_is_set(&tree) {
                Some(read_secret("current password: ", &mut lines)?)
            } else {
                None
            };
            set_password_in_store(&tree, role, &new, current.as_deref())
                .map_err(|e| e.to_string())?;
        }
        Backend::Gateway(base) => {
            if viewer {
                call(
                    "PUT",
                    &format!("{base}/api/dashboard-auth/viewer-password"),
                    Some(json!({ "password": new }).to_string().as_bytes()),
                )?;
            } else {
                let session = call("GET", &format!("{base}/api/dashboard-auth/session"), None)?;
                let mut body = json!({ "new_password": new });
                if session["password_set"] == true {
                    body["current_password"] =
                        json!(read_secret("current password: ", &mut lines)?);
                }
                call(
                    "POST",
                    &format!("{base}/api/dashboard-auth/password"),
                    Some(body.to_string().as_bytes()),
                )?;
            }
        }
    }
    println!(
        "{} password set{}",
        if viewer { "viewer" } else { "dashboard" },
        if viewer {
            ""
        } else {
            "; earlier dashboard sessions are signed out"
        }
    );
    Ok(())
}
