//! The gateway under test as a child process, so its CPU time and memory can be read from
//! `/proc/<pid>` apart from the load generator's and the mock's.
//!
//! The `codex-lb` binary is the one next to the harness's own executable (same cargo profile),
//! brought up to date with `cargo build -p codex-lb` first when the harness runs from a cargo
//! target directory (a stale gateway would be measured silently otherwise). It gets a fresh
//! data dir, a free loopback port and the mock as its upstream; the mock's accounts are
//! imported through the admin API. With key auth it is started with `--api-key-auth` and one
//! proxy API key is created through the admin API (which answers loopback callers without one).
//! At the end it is sent SIGTERM and must exit 0.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;

use super::ctl;

/// Longest wait for `GET /health` to answer 200 after start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for the process to exit after SIGTERM (its default shutdown grace is 30 s).
const EXIT_TIMEOUT: Duration = Duration::from_secs(40);
const CTL_TIMEOUT: Duration = Duration::from_secs(10);
/// The name of the proxy API key created for the load.
const KEY_NAME: &str = "loadtest";

pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    /// The proxy API key every load request carries, when started with key auth.
    pub api_key: Option<String>,
    _dir: tempfile::TempDir,
}

/// A free loopback port (bound, read, released; the tiny race is acceptable on a test box).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}

/// The `codex-lb` binary to run: `explicit`, else the one beside this executable, rebuilt by
/// cargo when `build` is set and this executable lives in a cargo target dir.
pub fn locate(explicit: Option<&Path>, build: bool) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("--gateway-bin {}: no such file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().context("finding the harness executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("harness executable has no directory"))?;
    let bin = dir.join("codex-lb");
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let release = profile == "release";
    let cmd = format!(
        "cargo build{} -p codex-lb",
        if release { " --release" } else { "" }
    );
    if build && (profile == "debug" || release) && workspace.join("Cargo.toml").is_file() {
        eprintln!("loadtest: {cmd} (so the gateway measured is the current source)");
        let target_dir = dir.parent().unwrap_or(dir);
        let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        c.arg("build")
            .args(["-p", "codex-lb"])
            .current_dir(&workspace);
        if release {
            c.arg("--release");
        }
        let status = c
            .env("CARGO_TARGET_DIR", target_dir)
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running {cmd}"))?;
        if !status.success() {
            bail!("{cmd} failed ({status}); fix the build or pass --no-build / --gateway-bin");
        }
    }
    if !bin.is_file() {
        bail!(
            "no gateway binary at {}: run `{cmd}` (with the same CARGO_TARGET_DIR), or pass --gateway-bin PATH",
            bin.display()
        );
    }
    Ok(bin)
}

impl Gateway {
    /// Starts the gateway and imports `auth_jsons` (one Codex auth.json each); with
    /// `api_key_auth`, turns key auth on and creates the key the load will send.
    pub fn start(
        bin: &Path,
        upstream_base: &str,
        workers: usize,
        auth_jsons: &[String],
        api_key_auth: bool,
    ) -> anyhow::Result<Gateway> {
        let dir = tempfile::Builder::new()
            .prefix("codex-lb-loadtest-gw-")
            .tempdir()
            .context("creating the gateway's data dir")?;
        let addr = free_port()?;
        let log = dir.path().join("gateway.log");
        let out = File::create(&log).context("creating the gateway log")?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve");
        if api_key_auth {
            cmd.arg("--api-key-auth");
        }
        let child = cmd
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--upstream-base-url")
            .arg(upstream_base)
            .arg("--workers")
            .arg(workers.to_string())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // Key auth is this harness's choice alone, never the caller's environment's.
            .env_remove("CODEX_LB_API_KEY_AUTH")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut gw = Gateway {
            child,
            addr,
            log,
            api_key: None,
            _dir: dir,
        };
        gw.wait_ready()?;
        for (i, auth) in auth_jsons.iter().enumerate() {
            ctl::call_ok(
                addr,
                "POST",
                "/api/accounts/import",
                auth.as_bytes(),
                CTL_TIMEOUT,
            )
            .with_context(|| format!("importing mock account {i} into the gateway"))?;
        }
        if api_key_auth {
            gw.api_key = Some(gw.create_key().context("creating the load's API key")?);
        }
        Ok(gw)
    }

    /// `POST /api/keys` with no limits; returns the key itself (shown only in this answer).
    fn create_key(&self) -> anyhow::Result<String> {
        let body = serde_json::json!({ "name": KEY_NAME }).to_string();
        let (status, reply) =
            ctl::call(self.addr, "POST", "/api/keys", body.as_bytes(), CTL_TIMEOUT)?;
        if status != 201 {
            bail!(
                "POST /api/keys: status {status} (expected 201): {}",
                String::from_utf8_lossy(&reply)
            );
        }
        key_from_reply(&reply)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let until = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the gateway exited at start ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            if let Ok((200, _)) = ctl::call(self.addr, "GET", "/health", b"", CTL_TIMEOUT) {
                return Ok(());
            }
            if Instant::now() > until {
                bail!(
                    "the gateway did not answer /health within {READY_TIMEOUT:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /health` as JSON.
    pub fn health(&self) -> anyhow::Result<Value> {
        let body = ctl::call_ok(self.addr, "GET", "/health", b"", CTL_TIMEOUT)?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// `Some(status)` if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of the gateway's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then waits for the exit; returns the status (whatever it is) and the log's tail.
    pub fn stop(mut self) -> anyhow::Result<(ExitStatus, String)> {
        if self.exited().is_none() {
            signal(self.child.id(), libc::SIGTERM);
        }
        let until = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok((s, self.log_tail()));
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                let s = self.child.wait()?;
                bail!(
                    "the gateway did not exit within {EXIT_TIMEOUT:?} of SIGTERM; killed ({s}); log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // A gateway still running here is on an error path: never leave one behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `key` of a `POST /api/keys` answer: `{"key": "sk-clb-…", "api_key": {…}}`.
fn key_from_reply(reply: &[u8]) -> anyhow::Result<String> {
    let v: Value = serde_json::from_slice(reply).context("POST /api/keys answered non-JSON")?;
    match v.get("key").and_then(Value::as_str) {
        Some(k) if k.starts_with("sk-clb-") => Ok(k.to_string()),
        _ => bail!(
            "POST /api/keys: no \"key\" starting with sk-clb- in {}",
            String::from_utf8_lossy(reply)
        ),
    }
}

/// Sends `sig` to one process we started.
pub fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on a pid of a child this process spawned and has not reaped.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_read_from_the_create_answer() {
        let reply = br#"{"key":"sk-clb-abc","api_key":{"id":"key_1","name":"loadtest"}}"#;
        assert_eq!(key_from_reply(reply).unwrap(), "sk-clb-abc");
        assert!(key_from_reply(br#"{"api_key":{}}"#).is_err());
        assert!(key_from_reply(br#"{"key":"secret"}"#).is_err());
        assert!(key_from_reply(b"<html>").is_err());
    }
}
