//! Shared harness for the end-to-end tests: an in-process mock upstream, an in-process gateway on
//! port 0 pointed at it with its accounts imported through the admin API, and small HTTP clients
//! (ureq for JSON, raw sockets where the exact bytes matter).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use codex_lb::config::Settings;
use codex_lb::Gateway;
use loadtest::mock::{MockConfig, MockUpstream};
use serde_json::Value;

pub struct Env {
    pub mock: MockUpstream,
    pub gateway: Option<Gateway>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub settings: Settings,
}

pub fn settings_for(dir: PathBuf, mock: &MockUpstream) -> Settings {
    Settings::for_test(dir, &mock.base_url())
}

impl Env {
    /// A mock with `accounts` seeded accounts and a gateway that has imported all of them.
    pub fn start(accounts: usize) -> Env {
        Self::start_with(accounts, |_| {})
    }

    pub fn start_with(accounts: usize, tweak: impl FnOnce(&mut Settings)) -> Env {
        Self::start_custom(
            MockConfig {
                accounts,
                ..MockConfig::default()
            },
            tweak,
        )
    }

    /// A mock built from `cfg` and a gateway with all its accounts imported.
    pub fn start_custom(cfg: MockConfig, tweak: impl FnOnce(&mut Settings)) -> Env {
        let accounts = cfg.accounts;
        let env = Self::start_unimported(cfg, tweak);
        for i in 0..accounts {
            let v = env.post_json("/api/accounts/import", env.mock.auth_json(i).as_bytes());
            assert!(v["account"]["id"].is_string(), "import {i}: {v}");
        }
        env
    }

    /// A mock built from `cfg` and a gateway that knows none of its accounts yet.
    pub fn start_unimported(cfg: MockConfig, tweak: impl FnOnce(&mut Settings)) -> Env {
        let mock = MockUpstream::start(cfg).expect("mock starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = settings_for(dir.path().join("data"), &mock);
        tweak(&mut settings);
        let gateway = Gateway::start(settings.clone()).expect("gateway starts");
        let addr = gateway.local_addr();
        Env {
            mock,
            gateway: Some(gateway),
            addr,
            dir,
            settings,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Graceful stop, then a new gateway on the same data dir (a new port).
    pub fn restart(&mut self) {
        self.gateway
            .take()
            .expect("running")
            .shutdown()
            .expect("clean shutdown");
        let mut s = self.settings.clone();
        s.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let g = Gateway::start(s).expect("gateway restarts");
        self.addr = g.local_addr();
        self.gateway = Some(g);
    }

    pub fn get_json(&self, path: &str) -> Value {
        match ureq::get(&self.url(path))
            .timeout(Duration::from_secs(10))
            .call()
        {
            Ok(r) => r.into_json().expect("json"),
            Err(ureq::Error::Status(_, r)) => r.into_json().expect("json"),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    pub fn post_json(&self, path: &str, body: &[u8]) -> Value {
        match ureq::post(&self.url(path))
            .timeout(Duration::from_secs(10))
            .send_bytes(body)
        {
            Ok(r) => r.into_json().expect("json"),
            Err(ureq::Error::Status(_, r)) => r.into_json().expect("json"),
            Err(e) => panic!("POST {path}: {e}"),
        }
    }

    /// POSTs a Codex turn; returns status, headers and the (de-chunked) body.
    pub fn turn(&self, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = ureq::post(&self.url("/backend-api/codex/responses"))
            .timeout(Duration::from_secs(30))
            .set("content-type", "application/json")
            .set("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let resp = match req.send_string(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("turn failed: {e}"),
        };
        let status = resp.status();
        let headers: Vec<(String, String)> = resp
            .headers_names()
            .into_iter()
            .map(|n| {
                let v = resp.header(&n).unwrap_or_default().to_string();
                (n, v)
            })
            .collect();
        let mut body = Vec::new();
        resp.into_reader().read_to_end(&mut body).expect("body");
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Turns the mock served per account (its per-account count less the gateway's usage polls).
    pub fn turns_by_account(&self) -> std::collections::BTreeMap<String, u64> {
        let st = self.mock.stats();
        st.requests_by_account
            .iter()
            .map(|(k, n)| {
                (
                    k.clone(),
                    n.saturating_sub(st.usage_calls.get(k).copied().unwrap_or(0)),
                )
            })
            .collect()
    }

    pub fn summary(&self) -> Value {
        self.get_json("/api/usage/summary")
    }

    /// Polls `f` until it returns Some or `limit` passes.
    pub fn wait_for<T>(&self, limit: Duration, mut f: impl FnMut(&Env) -> Option<T>) -> Option<T> {
        let end = Instant::now() + limit;
        loop {
            if let Some(v) = f(self) {
                return Some(v);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(g) = self.gateway.take() {
            let _ = g.shutdown();
        }
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` JSON of every SSE event, in order.
    pub fn events(&self) -> Vec<Value> {
        self.text()
            .replace("\r\n", "\n")
            .split("\n\n")
            .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    }

    pub fn terminal(&self) -> Option<Value> {
        self.events().into_iter().rev().find(|e| {
            matches!(
                e["type"].as_str(),
                Some("response.completed" | "response.failed" | "response.incomplete")
            )
        })
    }
}

/// A minimal Codex turn body in a conversation of its own; `text` is the user message.
pub fn turn_body(text: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    turn_body_in(text, &format!("conversation-{}-{n}", std::process::id()))
}

/// A turn of the conversation `key` (its `prompt_cache_key`).
pub fn turn_body_in(text: &str, key: &str) -> String {
    serde_json::json!({
        "model": "gpt-5.5",
        "instructions": "You are Codex.",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}],
        "tools": [], "tool_choice": "auto", "parallel_tool_calls": true,
        "store": false, "stream": true, "include": [],
        "prompt_cache_key": key
    })
    .to_string()
}

/// Sends raw bytes on a fresh connection and reads until the server closes it or `limit` passes.
pub fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(limit)).expect("timeout");
    s.write_all(request).expect("write");
    read_until_close(&mut s, limit)
}

/// Reads until EOF (returns true) or the time limit (returns false).
pub fn read_until_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let end = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, false);
        }
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return (out, false),
        }
    }
}

/// Status code and JSON body of a raw HTTP/1.1 response with a content-length.
pub fn parse_raw_response(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Runs the `codex-lb` binary with `args`, away from any data dir or listen address the
/// environment names.
pub fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_codex-lb"))
        .args(args)
        .env_remove("CODEX_LB_DATA_DIR")
        .env_remove("CODEX_LB_LISTEN")
        .output()
        .expect("codex-lb runs")
}

/// The official Codex CLI that `scripts/test.sh` installs (or `CODEX_LB_CODEX_BIN`).
pub fn codex_bin() -> PathBuf {
    let path = std::env::var_os("CODEX_LB_CODEX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".e2e/node_modules/.bin/codex")
        });
    assert!(
        path.exists(),
        "Codex CLI not found at {}: run scripts/test.sh, which installs @openai/codex",
        path.display()
    );
    path
}
