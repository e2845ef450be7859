//! A mock ChatGPT Codex upstream (PROTOCOL.md section 9) on a real socket.
//!
//! [`MockUpstream::start`] binds, spawns its own thread with a tokio runtime, and returns once
//! listening; dropping it stops the listener and joins that thread. Everything a test can do
//! over the `/__mock/` control API it can also do through the methods here.
//!
//! Module map: `routes` (one module per endpoint), `state` (shared state), `accounts` (windows,
//! failures, usage error mode), `credentials` (tokens, rotation, sign-in, refresh knobs),
//! `logins` (authorization codes, device logins, sign-in knobs and counters), `scenario`
//! (knobs), `render` (pre-rendered SSE), `body` (pacing, write modes, failure endings, cancel
//! detection), `reply` (headers), `jwt` (tokens, auth.json), `server` (accept loop), `tls`
//! (HTTPS certificates and server config), `clock`, `stats`, `request`, `errors`.
//!
//! Sign-in flows (PROTOCOL.md 5.2, 5.3) run against [`MockUpstream::issuer_url`]:
//! `GET /oauth/authorize` redirects to the loopback `redirect_uri` with a code, which
//! `POST /oauth/token` (`grant_type=authorization_code`, PKCE S256) exchanges for a new session
//! of the signing-in account; the device flow hands out the same kind of code after a
//! configurable number of pending polls. Codes live [`CODE_TTL_SECS`] and device logins
//! `expires_in` seconds, both on the mock's clock (so [`MockUpstream::advance_clock`] ages them).
//!
//! `/backend-api/codex/responses` also speaks WebSocket (PROTOCOL.md 6): [`MockUpstream::ws_url`]
//! is the address, [`MockConfig::websockets`] / [`MockUpstream::set_websockets`] switch it off
//! (426), [`MockConfig::ws_max_age`] is the connection-age limit (real time, not the mock
//! clock), [`MockUpstream::close_next_ws`] arms a close for an account's next turn, and the
//! `ws_*` counters of [`MockStats`] count upgrades, refusals, turns and open sockets.

mod accounts;
mod body;
mod clock;
mod credentials;
mod errors;
mod jwt;
mod logins;
mod render;
mod reply;
mod request;
mod routes;
mod scenario;
mod server;
mod state;
mod stats;
#[cfg(test)]
mod testing;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::oneshot;

pub use accounts::{UsageMode, WsClose};
pub use jwt::SeedAccount;
pub use logins::{OAuthStats, CODE_TTL_SECS};
pub use request::{RecordedRequest, Transport};
pub use scenario::{FailMode, Scenario};
pub use stats::MockStats;
pub use tls::{self_signed_localhost, MockTls};

use accounts::Account;
use logins::DeviceFlow;
use state::Shared;

/// How long `Drop` lets open connections wind down before the runtime is torn down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Default WebSocket connection-age limit (PROTOCOL.md 6.4: 60 minutes).
pub const DEFAULT_WS_MAX_AGE: Duration = Duration::from_secs(60 * 60);

#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Number of seeded accounts.
    pub accounts: usize,
    /// Plan type of every seeded account that `plans` does not name.
    pub plan: String,
    /// Plan type per account index; empty (the default), or shorter than `accounts`, leaves
    /// the rest on `plan`. Tokens, `/wham/usage`, rate-limit headers, 429 bodies and the model
    /// catalog all follow the account's own plan.
    pub plans: Vec<String>,
    /// Lifetime of the minted access tokens (`exp`), seeded and refreshed alike.
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
    /// Accept WebSocket upgrades of `/backend-api/codex/responses`; off, they get `426`.
    pub websockets: bool,
    /// Age after which a socket's next `response.create` gets the
    /// `websocket_connection_limit_reached` error and the socket is closed.
    pub ws_max_age: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            accounts: 2,
            plan: "plus".to_string(),
            plans: Vec::new(),
            token_ttl: Duration::from_secs(3600),
            primary_capacity_tokens: 2_000_000,
            secondary_capacity_tokens: 20_000_000,
            scenario: Scenario::default(),
            worker_threads: 2,
            tls: None,
            websockets: true,
            ws_max_age: DEFAULT_WS_MAX_AGE,
        }
    }
}

impl MockConfig {
    /// The plan of account `index`: `plans[index]` when there is one, else `plan`.
    pub fn plan_of(&self, index: usize) -> &str {
        self.plans.get(index).unwrap_or(&self.plan)
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
        let issuer = if tls {
            format!("https://localhost:{}", addr.port())
        } else {
            format!("http://{addr}")
        };
        let shared = Arc::new(Shared::new(&cfg, issuer));
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

    /// The gateway's OAuth issuer: the mock's origin (`http://127.0.0.1:PORT`, or
    /// `https://localhost:PORT` with TLS); the token endpoint is `{issuer}/oauth/token`.
    pub fn issuer_url(&self) -> String {
        self.shared.issuer.clone()
    }

    /// The `redirect_uri` under which device-flow codes are exchanged:
    /// `{issuer}/deviceauth/callback` (PROTOCOL.md 5.3 step 4).
    pub fn device_redirect_uri(&self) -> String {
        self.shared.device_redirect_uri()
    }

    /// The WebSocket address of `/responses`: `ws://127.0.0.1:PORT/backend-api/codex/responses`,
    /// or `wss://localhost:PORT/…` with TLS.
    pub fn ws_url(&self) -> String {
        let base = self.base_url();
        let rest = base
            .strip_prefix("https://")
            .map(|r| format!("wss://{r}"))
            .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))
            .unwrap_or(base);
        format!("{rest}/codex/responses")
    }

    /// Whether the mock serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The accounts with their current tokens (those of the last refresh, if any).
    pub fn accounts(&self) -> Vec<SeedAccount> {
        let creds = self.shared.credentials();
        (0..self.shared.accounts.len())
            .map(|i| creds.tokens(i))
            .collect()
    }

    /// A Codex `~/.codex/auth.json` for account `index`, with its current tokens and
    /// `last_refresh`. Panics if there is no such account.
    pub fn auth_json(&self, index: usize) -> String {
        let n = self.shared.accounts.len();
        assert!(index < n, "mock has {n} accounts, no index {index}");
        self.shared.credentials().auth_json(index)
    }

    /// The account that signs in through `/oauth/authorize` (unless its `login_hint` names
    /// another seeded account's e-mail) and through device logins started from now on. Account
    /// 0 by default; `reset` restores that. Panics if there is no such account.
    pub fn set_login_account(&self, index: usize) {
        let known = self.shared.logins().set_login_account(index);
        let n = self.shared.accounts.len();
        assert!(known, "mock has {n} accounts, no index {index}");
    }

    /// The next valid `/oauth/authorize` request redirects to
    /// `{redirect_uri}?error=…&error_description=…&state=…` instead of issuing a code (e.g.
    /// `access_denied` / `missing_codex_entitlement`). Device logins are not affected.
    pub fn deny_next_login(&self, error: &str, description: &str) {
        self.shared.logins().deny_next(error, description);
    }

    /// Device logins started from now on ask for polls every `interval_secs` (not enforced),
    /// expire `expires_in_secs` after their usercode reply (mock clock), and answer
    /// `deviceauth_authorization_pending` to their first `pending_polls` polls before handing
    /// out the code. Defaults: 5, 900, 0.
    pub fn set_device_flow(&self, interval_secs: u64, expires_in_secs: u64, pending_polls: u32) {
        self.shared.logins().set_device_flow(DeviceFlow {
            interval_secs,
            expires_in_secs,
            pending_polls,
        });
    }

    /// Every device login started so far answers `deviceauth_expired` from now on.
    pub fn expire_device_logins(&self) {
        self.shared.logins().expire_devices();
    }

    /// Sign-in counters: authorize calls, code exchanges, device polls.
    pub fn oauth_stats(&self) -> OAuthStats {
        self.shared.logins().stats()
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

    /// The account's next WebSocket turn (`response.create` / `response.append` that passes its
    /// checks) ends this way; arming again queues behind what is armed.
    pub fn close_next_ws(&self, account_id: &str, close: WsClose) {
        self.account(account_id).arm_ws_close(close);
    }

    /// Switches the WebSocket transport on or off for new upgrades (off: `426`); open sockets
    /// keep working. `reset` restores [`MockConfig::websockets`].
    pub fn set_websockets(&self, on: bool) {
        self.shared.set_websockets(on);
    }

    /// The connection-age limit, for open sockets too. `reset` restores
    /// [`MockConfig::ws_max_age`].
    pub fn set_ws_max_age(&self, age: Duration) {
        self.shared.set_ws_max_age(age);
    }

    /// WebSocket upgrades of the account answered `101`.
    pub fn ws_upgrades(&self, account_id: &str) -> u64 {
        let id = self.account(account_id).id();
        self.stats().ws_upgrades.get(id).copied().unwrap_or(0)
    }

    /// Authenticated upgrade attempts of the account answered `426`.
    pub fn ws_refused(&self, account_id: &str) -> u64 {
        let id = self.account(account_id).id();
        self.stats().ws_refused.get(id).copied().unwrap_or(0)
    }

    /// `response.create` / `response.append` messages of the account, refused ones included.
    pub fn ws_turns(&self, account_id: &str) -> u64 {
        let id = self.account(account_id).id();
        self.stats().ws_turns.get(id).copied().unwrap_or(0)
    }

    pub fn set_used_percent(&self, account_id: &str, primary: f64, secondary: f64) {
        self.account(account_id)
            .set_used_percent(primary, secondary, self.shared.clock.now());
    }

    /// The account's current access token answers 401 `token_expired` from now on (until a
    /// refresh replaces it, or `reset`).
    pub fn expire_token(&self, account_id: &str) {
        let i = self.index(account_id);
        self.shared.credentials_mut().expire_access(i);
    }

    /// The account's current refresh token answers 401 `refresh_token_invalidated` from now on.
    pub fn revoke_refresh_token(&self, account_id: &str) {
        let i = self.index(account_id);
        self.shared.credentials_mut().revoke_refresh(i);
    }

    /// The account's current refresh token answers 401 `refresh_token_expired` from now on.
    pub fn expire_refresh_token(&self, account_id: &str) {
        let i = self.index(account_id);
        self.shared.credentials_mut().expire_refresh(i);
    }

    /// The account's next `count` refresh-token grants answer 500 without spending the token
    /// (added to any still armed).
    pub fn fail_refresh(&self, account_id: &str, count: u32) {
        let i = self.index(account_id);
        self.shared.credentials_mut().fail_refresh(i, count);
    }

    /// `POST /oauth/token` waits this long before answering the account (0 = no wait). The
    /// refresh takes effect before the wait, so a client that times out has spent its token.
    pub fn set_refresh_latency(&self, account_id: &str, ms: u64) {
        let i = self.index(account_id);
        self.shared.credentials_mut().set_refresh_latency(i, ms);
    }

    /// `GET /wham/usage` fails this way for the account (after authentication); `None` answers.
    pub fn set_usage_mode(&self, account_id: &str, mode: Option<UsageMode>) {
        self.account(account_id).set_usage_mode(mode);
    }

    /// Refresh-token grants attempted for the account, failed ones included.
    pub fn refresh_calls(&self, account_id: &str) -> u64 {
        let id = self.account(account_id).id();
        self.stats().refresh_calls.get(id).copied().unwrap_or(0)
    }

    /// `/wham/usage` calls for the account, rejected ones included.
    pub fn usage_calls(&self, account_id: &str) -> u64 {
        let id = self.account(account_id).id();
        self.stats().usage_calls.get(id).copied().unwrap_or(0)
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

    /// The last `/responses` request of the account (body decoded): a POST, a WebSocket upgrade,
    /// or a WebSocket turn message ([`RecordedRequest::transport`] tells which).
    pub fn last_request(&self, account_id: &str) -> Option<RecordedRequest> {
        self.account(account_id).last_request()
    }

    /// The exact de-chunked body bytes sent for the request with this `x-request-id`, when its
    /// scenario had `record: true`. A WebSocket turn is kept as `{x-request-id}#{n}` (the upgrade's
    /// request id, `n` counting the socket's turns from 1), one message per line.
    pub fn recorded_response(&self, request_id: &str) -> Option<Vec<u8>> {
        self.shared.recorded(request_id)
    }

    /// Back to the start state: clock, seeded tokens, sign-ins (codes, device logins, login
    /// knobs, OAuth counters), usage, failures, expiries, refresh and usage knobs, recordings,
    /// counters and the global scenario.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Panics on an unknown id: a silently ignored typo would make a test pass for nothing.
    fn index(&self, account_id: &str) -> usize {
        self.shared.account_by_id(account_id).unwrap_or_else(|| {
            let known: Vec<&str> = self.shared.accounts.iter().map(|a| a.id()).collect();
            panic!("unknown mock account id {account_id:?}; known: {known:?}")
        })
    }

    fn account(&self, account_id: &str) -> &Account {
        &self.shared.accounts[self.index(account_id)]
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
