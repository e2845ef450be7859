//! `codex-lb codex …` and `codex-lb doctor`: the Codex CLI's side of the gateway.
//!
//! Owns what codex-lb writes into a Codex home (`$CODEX_HOME`, default `~/.codex`): the provider
//! block and model keys of `config.toml` (`setup`), the provider tag of saved sessions and of the
//! state database's threads (`retag-sessions`), and the checks that tell why the CLI cannot use
//! the gateway (`doctor`). It must not touch the gateway's own data dir, and it changes a Codex
//! file only after a copy of it is on disk, by writing a temp file beside it and renaming it over.

pub mod doctor;

mod config;
mod diff;
mod fsutil;
mod retag;
mod setup;

use std::path::PathBuf;

use clap::{Args, Subcommand};

pub use doctor::DoctorArgs;
pub use retag::RetagArgs;
pub use setup::SetupArgs;

/// Where the gateway listens unless told otherwise (`serve --listen` default).
pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:2455";
/// The provider id `setup` writes and `retag-sessions` moves sessions to.
pub const PROVIDER_ID: &str = "codex-lb";
/// The provider id Codex tags sessions with when it talks to ChatGPT directly.
pub const BUILTIN_PROVIDER: &str = "openai";
/// The gateway path the Codex CLI's provider `base_url` points at.
pub const CODEX_PATH: &str = "/backend-api/codex";
/// The environment variable the README tells users to keep their `sk-clb-…` key in.
pub const DEFAULT_KEY_ENV: &str = "CODEX_LB_API_KEY";

#[derive(Debug, Subcommand)]
pub enum CodexAction {
    /// Point the Codex CLI at the gateway: add or update the provider block and the
    /// `model_provider` / `model` keys of $CODEX_HOME/config.toml, keeping every other line and
    /// comment as it is (a timestamped copy is written beside it first).
    Setup(SetupArgs),
    /// Move saved sessions from one provider to another so `codex resume` lists them again:
    /// rewrites the provider of each session's header line and of the state database's threads,
    /// after copying every file it changes into $CODEX_HOME/codex-lb-backups/<time>/. Close
    /// running Codex sessions first: one that is open keeps writing to the file it opened.
    RetagSessions(RetagArgs),
}

/// The Codex home a command works on.
#[derive(Debug, Clone, Args)]
pub struct HomeArgs {
    /// The Codex home (default ~/.codex).
    #[arg(long, env = "CODEX_HOME", value_name = "DIR")]
    pub codex_home: Option<PathBuf>,
}

impl HomeArgs {
    /// `--codex-home`, else `$CODEX_HOME`, else `~/.codex`; made absolute, because backups
    /// record where each file goes back to.
    pub fn dir(&self) -> Result<PathBuf, String> {
        let dir = match self
            .codex_home
            .as_ref()
            .filter(|d| !d.as_os_str().is_empty())
        {
            Some(d) => d.clone(),
            None => match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
                Some(home) => PathBuf::from(home).join(".codex"),
                None => return Err("HOME is not set: pass --codex-home or set CODEX_HOME".into()),
            },
        };
        std::path::absolute(&dir).map_err(|e| format!("{}: {e}", dir.display()))
    }
}

pub fn run(action: CodexAction) -> Result<(), String> {
    match action {
        CodexAction::Setup(args) => setup::run(args),
        CodexAction::RetagSessions(args) => retag::run(args),
    }
}

/// Checks a gateway URL and returns it without a trailing `/` (and without the Codex path, when
/// the user pasted a provider `base_url`).
pub fn normalize_gateway(raw: &str) -> Result<String, String> {
    let parsed = url::Url::parse(raw.trim())
        .map_err(|e| format!("--gateway {raw:?} is not a URL ({e}); e.g. {DEFAULT_GATEWAY}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("--gateway {raw:?}: use an http:// or https:// URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("--gateway {raw:?} names no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("--gateway {raw:?}: no query or fragment, please"));
    }
    let mut s = parsed.as_str().trim_end_matches('/').to_string();
    if let Some(stripped) = s.strip_suffix(CODEX_PATH) {
        s = stripped.to_string();
    }
    Ok(s)
}

/// Whether `name` can be an environment variable name in a shell (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_are_normalized() {
        assert_eq!(
            normalize_gateway("http://127.0.0.1:2455/").unwrap(),
            "http://127.0.0.1:2455"
        );
        assert_eq!(
            normalize_gateway("http://10.0.0.5:2455/backend-api/codex").unwrap(),
            "http://10.0.0.5:2455"
        );
        assert_eq!(
            normalize_gateway("https://lb.example/prefix/").unwrap(),
            "https://lb.example/prefix"
        );
        assert!(normalize_gateway("127.0.0.1:2455").is_err());
        assert!(normalize_gateway("ftp://host/").is_err());
        assert!(normalize_gateway("http://host/?a=1").is_err());
    }

    #[test]
    fn env_names() {
        assert!(valid_env_name("CODEX_LB_API_KEY"));
        assert!(valid_env_name("_k1"));
        assert!(!valid_env_name(""));
        assert!(!valid_env_name("1KEY"));
        assert!(!valid_env_name("MY-KEY"));
    }
}
