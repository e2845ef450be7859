//! The mock upstream the targets stand in front of: a child process (this executable's hidden
//! `mock` subcommand) or one already running (`--upstream URL`). Either way the harness talks
//! to it only over its `/__mock/` control API, so both cases take the same path.
//!
//! A child mock is its own process so its CPU and memory are measured apart from the load
//! generator's (it is the "direct" target), and so the harness's open-file budget goes to
//! client sockets only. It exits when its stdin closes, so it cannot outlive the harness.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};

use super::ctl;
use super::driver::Credentials;
use super::target::{parse_upstream, HttpUrl};

const CTL_TIMEOUT: Duration = Duration::from_secs(10);
/// Tokens a mock account can serve before its windows fill: far more than any bounded run.
pub const HUGE_CAPACITY: u64 = 1 << 50;

/// One seeded account: what direct requests carry and what the gateway imports.
#[derive(Debug, Clone)]
pub struct MockAccount {
    pub creds: Credentials,
    pub auth_json: String,
}

pub struct Upstream {
    pub url: HttpUrl,
    pub accounts: Vec<MockAccount>,
    child: Option<(Child, Option<ChildStdin>)>,
}

impl Upstream {
    /// Starts this executable as `loadtest mock` and reads the base URL it prints.
    pub fn spawn(accounts: usize, workers: usize) -> anyhow::Result<Upstream> {
        let exe = std::env::current_exe().context("finding the harness executable")?;
        let mut child = Command::new(exe)
            .args(["mock", "--accounts", &accounts.to_string()])
            .args(["--workers", &workers.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the mock upstream")?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no mock stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the mock's address")?;
        let url = line
            .trim()
            .strip_prefix(MOCK_READY)
            .ok_or_else(|| anyhow!("unexpected first line from the mock: {line:?}"))?;
        let mut up = Upstream::connect(url)?;
        up.child = Some((child, stdin));
        Ok(up)
    }

    /// Uses a mock that is already running.
    pub fn connect(url: &str) -> anyhow::Result<Upstream> {
        let url = parse_upstream(url).map_err(anyhow::Error::msg)?;
        let raw = ctl::call_ok(url.addr, "GET", "/__mock/accounts", b"", CTL_TIMEOUT)
            .with_context(|| format!("listing the accounts of the mock at {}", url.host))?;
        let list: Vec<Value> = serde_json::from_slice(&raw)?;
        let accounts = list
            .iter()
            .map(|a| {
                let s = |k: &str| {
                    a[k].as_str()
                        .map(str::to_string)
                        .ok_or_else(|| anyhow!("mock account without {k}"))
                };
                Ok(MockAccount {
                    creds: Credentials {
                        account_id: s("chatgpt_account_id")?,
                        access_token: s("access_token")?,
                    },
                    auth_json: a["auth_json"].to_string(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if accounts.is_empty() {
            bail!("the mock at {} has no accounts", url.host);
        }
        Ok(Upstream {
            url,
            accounts,
            child: None,
        })
    }

    /// `http://HOST:PORT/backend-api`, the gateway's `--upstream-base-url`.
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.url.host, self.url.path)
    }

    /// The child's pid when the harness started the mock.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|(c, _)| c.id())
    }

    /// Clears armed failures, counters and the mock clock between runs.
    pub fn reset(&self) -> anyhow::Result<()> {
        ctl::call_ok(self.url.addr, "POST", "/__mock/reset", b"", CTL_TIMEOUT)?;
        Ok(())
    }

    /// The next `count` requests of the account get `status` before any byte.
    pub fn fail_next(&self, account_id: &str, status: u16, count: u32) -> anyhow::Result<()> {
        let body = json!({"status": status, "count": count}).to_string();
        let path = format!("/__mock/accounts/{account_id}/fail");
        ctl::call_ok(self.url.addr, "POST", &path, body.as_bytes(), CTL_TIMEOUT)?;
        Ok(())
    }

    /// Non-2xx answers the mock gave since the last reset, by status.
    pub fn rejections(&self) -> anyhow::Result<BTreeMap<u16, u64>> {
        let raw = ctl::call_ok(self.url.addr, "GET", "/__mock/stats", b"", CTL_TIMEOUT)?;
        let v: Value = serde_json::from_slice(&raw)?;
        Ok(v["rejected_by_status"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, n)| Some((k.parse().ok()?, n.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            drop(stdin);
            super::gateway::signal(child.id(), libc::SIGTERM);
            let _ = child.wait();
        }
    }
}

/// The line a child mock prints first, followed by its base URL.
pub const MOCK_READY: &str = "mock listening on ";

/// Body of the hidden `mock` subcommand: serve until stdin closes.
pub fn serve_mock(accounts: usize, workers: usize) -> anyhow::Result<()> {
    use crate::mock::{MockConfig, MockUpstream};
    use std::io::{Read as _, Write as _};
    let mock = MockUpstream::start(MockConfig {
        accounts,
        worker_threads: workers,
        primary_capacity_tokens: HUGE_CAPACITY,
        secondary_capacity_tokens: HUGE_CAPACITY,
        ..MockConfig::default()
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MOCK_READY}{}", mock.base_url())?;
    out.flush()?;
    drop(out);
    let mut sink = [0u8; 64];
    while std::io::stdin()
        .read(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {}
    drop(mock);
    Ok(())
}
