//! A mock ChatGPT Codex upstream (PROTOCOL.md section 9) on a real socket.
//!
//! [`MockUpstream::start`] binds, spawns its own thread with a tokio runtime, and returns once
//! listening; dropping it stops the listener and joins that thread. Everything a test can do
//! over the `/__mock/` control API it can also do through the methods here.
//!
//! Module map: `routes` (one module per endpoint), `state` (shared state), `accounts` (windows,
//! failures, expiry), `scenario` (knobs), `render` (pre-rendered SSE), `body` (pacing, write
//! modes, failure endings, cancel detection), `reply` (headers), `jwt` (tokens, auth.json),
//! `server` (accept loop), `tls` (HTTPS certificates and server config), `clock`, `stats`,
//! `request`, `errors`.

mod accounts;
mod body;
mod clock;
mod errors;
mod jwt;
mod render;
mod reply;
mod request;
mod routes;
mod scenario;
mod server;
mod state;
mod stats;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::oneshot;

pub use jwt::SeedAccount;
pub use request::RecordedRequest;
pub use scenario::{FailMode, Scenario};
pub use stats::MockStats;
pub use tls::{self_signed_localhost, MockTls};

use accounts::Account;
use state::Shared;

/// How long `Drop` lets open connections wind down before the runtime is torn down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Number of seeded accounts.
    pub accounts: usize,
    /// Plan type of every seeded account.
    pub plan: String,
    /// Lifetime of the minted access tokens (`exp`).
    pub token_ttl: Duration,
    /// Tokens that fill the 5-hour window to 100 %.
    pub primary_capacity_tokens: u64,
    /// Tokens that fill the weekly window to 100 %.
    pub secondary_capacity_tokens: u64,
    /// Global default scenario.
    pub scenario: Scenario,
    /// Tokio worker threads.
    pub worker_threads: usize,
    /// Serve HTTPS with this certificate instead of plain HTTP (see [`self_signed_localhost`]).
    pub tls: Option<MockTls>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            accounts: 2,
            plan: "plus".to_string(),
            token_ttl: Duration::from_secs(3600),
            primary_capacity_tokens: 2_000_000,
            secondary_capacity_tokens: 20_000_000,
            scenario: Scenario::default(),
            worker_threads: 2,
            tls: None,
        }
    }
}

/// A running mock upstream.
pub struct MockUpstream {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MockUpstream {
    pub fn start(cfg: MockConfig) -> anyhow::Result<MockUpstream> {
        let acceptor = cfg
            .tls
            .as_ref()
            .map(|t| t.server_config().map(tokio_rustls::TlsAcceptor::from))
            .transpose()
            .context("configuring the mock's TLS")?;
        let tls = acceptor.is_some();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.worker_threads.max(1))
            .thread_name("mock-upstream")
            .enable_all()
            .build()
            .context("building the mock-upstream runtime")?;
        let listener = {
            let _guard = rt.enter();
            let socket = if cfg.listen.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }?;
            socket.set_reuseaddr(true)?;
            socket
                .bind(cfg.listen)
                .with_context(|| format!("binding {}", cfg.listen))?;
            socket.listen(server::LISTEN_BACKLOG)?
        };
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(&cfg));
        let (tx, rx) = oneshot::channel();
        let serve_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("mock-upstream-main".into())
            .spawn(move || {
                rt.block_on(server::serve(listener, acceptor, serve_shared, rx));
                rt.shutdown_timeout(SHUTDOWN_GRACE);
            })
            .context("spawning the mock-upstream thread")?;
        Ok(MockUpstream {
            addr,
            tls,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The gateway's upstream base: `http://127.0.0.1:PORT/backend-api`, or with
    /// [`MockConfig::tls`] `https://localhost:PORT/backend-api` (the name the certificate is for).
    pub fn base_url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}/backend-api", self.addr.port())
        } else {
            format!("http://{}/backend-api", self.addr)
        }
    }

    /// Whether the mock serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub fn accounts(&self) -> Vec<SeedAccount> {
        self.shared
            .accounts
            .iter()
            .map(|a| a.seed.clone())
            .collect()
    }

    /// A Codex `~/.codex/auth.json` for account `index`. Panics if there is no such account.
    pub fn auth_json(&self, index: usize) -> String {
        let a = self.shared.accounts.get(index).unwrap_or_else(|| {
            panic!(
                "mock has {} accounts, no index {index}",
                self.shared.accounts.len()
            )
        });
        jwt::auth_json(&a.seed, self.shared.issued_at)
    }

    pub fn scenario(&self) -> Scenario {
        (*self.shared.scenario()).clone()
    }

    /// Replaces the global default scenario.
    pub fn set_scenario(&self, s: Scenario) {
        self.shared.set_scenario(s);
    }

    /// The next `count` `/responses` requests of the account get `status` before any header,
    /// with the JSON body upstream sends for it. Arming again queues behind what is armed.
    pub fn fail_next(&self, account_id: &str, status: u16, count: u32) {
        self.account(account_id).arm_failure(status, count);
    }

    pub fn set_used_percent(&self, account_id: &str, primary: f64, secondary: f64) {
        self.account(account_id)
            .set_used_percent(primary, secondary, self.shared.clock.now());
    }

    /// The account's access token answers 401 `token_expired` from now on (until `reset`).
    pub fn expire_token(&self, account_id: &str) {
        self.account(account_id).expire();
    }

    /// Moves the mock's clock forward: windows reset and tokens expire as if time had passed.
    pub fn advance_clock(&self, secs: u64) {
        self.shared.clock.advance(secs);
    }

    pub fn stats(&self) -> MockStats {
        self.shared.stats.snapshot()
    }

    /// Streams the peer abandoned: (account id, when the mock saw it go).
    pub fn cancelled_streams(&self) -> Vec<(String, Instant)> {
        self.shared.stats.cancelled_streams()
    }

    /// The last `/responses` request of the account (body decoded).
    pub fn last_request(&self, account_id: &str) -> Option<RecordedRequest> {
        self.account(account_id).last_request()
    }

    /// The exact de-chunked body bytes sent for the request with this `x-request-id`, when its
    /// scenario had `record: true`.
    pub fn recorded_response(&self, request_id: &str) -> Option<Vec<u8>> {
        self.shared.recorded(request_id)
    }

    /// Back to the start state: clock, usage, failures, expiries, recordings, counters and
    /// the global scenario.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Panics on an unknown id: a silently ignored typo would make a test pass for nothing.
    fn account(&self, account_id: &str) -> &Account {
        let i = self.shared.account_by_id(account_id).unwrap_or_else(|| {
            let known: Vec<&str> = self.shared.accounts.iter().map(|a| a.id()).collect();
            panic!("unknown mock account id {account_id:?}; known: {known:?}")
        });
        &self.shared.accounts[i]
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
