//! Settings: every knob with its named default, read from flags and `CODEX_LB_*` environment
//! variables (flags win), then resolved into the values the rest of the gateway uses.
//!
//! This module owns parsing and validation only; it never opens files or sockets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::http::request::{
    HeadLimits, DEFAULT_MAX_HEADERS, DEFAULT_MAX_HEAD_BYTES, MAX_HEADERS_CEILING,
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:2455";
pub const DEFAULT_UPSTREAM_BASE_URL: &str = "https://chatgpt.com/backend-api";
/// Codex sends the whole history every turn; multi-MB bodies are normal.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_HEAD_READ_TIMEOUT: &str = "10s";
pub const DEFAULT_IDLE_KEEPALIVE_TIMEOUT: &str = "75s";
pub const DEFAULT_CLIENT_BODY_TIMEOUT: &str = "30s";
/// A 16 MiB body at 0.5 Mbit/s, a slow hotel uplink, takes about 4.5 minutes.
pub const DEFAULT_CLIENT_BODY_DEADLINE: &str = "5m";
pub const DEFAULT_CLIENT_WRITE_TIMEOUT: &str = "60s";
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: &str = "10s";
/// Matches the Codex CLI's own stream idle timeout (300 s): never cut a stream the CLI would wait for.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: &str = "300s";
pub const DEFAULT_SHUTDOWN_GRACE: &str = "30s";
pub const DEFAULT_MAX_CONNECTIONS_PER_WORKER: usize = 16_384;
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 1024;
pub const DEFAULT_LEDGER_FLUSH_INTERVAL: &str = "1s";
pub const DEFAULT_LEDGER_CHANNEL_CAPACITY: usize = 65_536;
pub const DEFAULT_LOG_RETENTION: &str = "90days";
pub const DEFAULT_ROLLUP_RETENTION: &str = "400days";
pub const DEFAULT_FAILOVER_ATTEMPTS: usize = 3;
pub const DEFAULT_MODELS_CACHE_TTL: &str = "300s";
pub const DEFAULT_CLIENT_VERSION: &str = "0.169.0";
pub const DEFAULT_AUTH_BASE_URL: &str = "https://auth.openai.com";
pub const DEFAULT_OAUTH_CALLBACK_PORT: u16 = 1455;
pub const DEFAULT_LOGIN_TIMEOUT: &str = "10m";
pub const DEFAULT_DASHBOARD_SESSION_TTL: &str = "7d";
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: &str = "15m";
pub const DEFAULT_WEBSOCKET_MAX_AGE: &str = "60m";
pub const DEFAULT_USAGE_POLL_INTERVAL: &str = "60s";
pub const DEFAULT_ACCOUNT_MAX_STREAMS: usize = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverChoice {
    /// io_uring when the kernel allows it, else the epoll driver.
    Auto,
    Uring,
    Legacy,
}

/// Where sign-ins and token refreshes go; shared by `serve` and `accounts login`.
#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// OAuth issuer (sign-in and token refresh).
    #[arg(long, env = "CODEX_LB_AUTH_BASE_URL", default_value = DEFAULT_AUTH_BASE_URL)]
    pub auth_base_url: String,
    /// Port of the browser sign-in callback (`http://localhost:<port>/auth/callback`). The issuer
    /// accepts 1455 and 1457; it is listened on only while a sign-in is pending.
    #[arg(long, env = "CODEX_LB_OAUTH_CALLBACK_PORT", default_value_t = DEFAULT_OAUTH_CALLBACK_PORT)]
    pub oauth_callback_port: u16,
    /// How long a browser sign-in may stay pending (device sign-ins last as long as their code).
    #[arg(long, env = "CODEX_LB_LOGIN_TIMEOUT", default_value = DEFAULT_LOGIN_TIMEOUT, value_parser = parse_duration)]
    pub login_timeout: Duration,
    /// An HTTP proxy every outbound connection tunnels through with CONNECT (the upstream, the
    /// OAuth issuer, usage polls): `http://[user:password@]host:port`.
    #[arg(long, env = "CODEX_LB_UPSTREAM_PROXY", value_parser = parse_egress_proxy)]
    pub upstream_proxy: Option<crate::upstream::egress::EgressProxy>,
}

fn parse_egress_proxy(s: &str) -> Result<crate::upstream::egress::EgressProxy, String> {
    crate::upstream::egress::EgressProxy::parse(s)
}

/// Flags and environment for `codex-lb serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Upstream ChatGPT backend base URL.
    #[arg(long, env = "CODEX_LB_UPSTREAM_BASE_URL", default_value = DEFAULT_UPSTREAM_BASE_URL)]
    pub upstream_base_url: String,
    /// Worker threads (one runtime, listener, pool and account shard each); default: one per core.
    #[arg(long, env = "CODEX_LB_WORKERS")]
    pub workers: Option<usize>,
    /// IO driver for the workers.
    #[arg(long, env = "CODEX_LB_DRIVER", value_enum, default_value = "auto")]
    pub driver: DriverChoice,
    /// Largest request head (request line + headers) in bytes.
    #[arg(long, env = "CODEX_LB_MAX_HEAD_BYTES", default_value_t = DEFAULT_MAX_HEAD_BYTES)]
    pub max_head_bytes: usize,
    /// Most header fields in one request.
    #[arg(long, env = "CODEX_LB_MAX_HEADERS", default_value_t = DEFAULT_MAX_HEADERS)]
    pub max_headers: usize,
    /// Largest request body in bytes, after decompression.
    #[arg(long, env = "CODEX_LB_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Time a client has to send a complete request head once it started one.
    #[arg(long, env = "CODEX_LB_HEAD_READ_TIMEOUT", default_value = DEFAULT_HEAD_READ_TIMEOUT, value_parser = parse_duration)]
    pub head_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept open.
    #[arg(long, env = "CODEX_LB_IDLE_KEEPALIVE_TIMEOUT", default_value = DEFAULT_IDLE_KEEPALIVE_TIMEOUT, value_parser = parse_duration)]
    pub idle_keepalive_timeout: Duration,
    /// Longest pause between request body bytes.
    #[arg(long, env = "CODEX_LB_CLIENT_BODY_TIMEOUT", default_value = DEFAULT_CLIENT_BODY_TIMEOUT, value_parser = parse_duration)]
    pub client_body_timeout: Duration,
    /// Longest a whole request body may take to arrive, however steadily it drips.
    #[arg(long, env = "CODEX_LB_CLIENT_BODY_DEADLINE", default_value = DEFAULT_CLIENT_BODY_DEADLINE, value_parser = parse_duration)]
    pub client_body_deadline: Duration,
    /// Longest a write to a client may stall (a client that stopped reading).
    #[arg(long, env = "CODEX_LB_CLIENT_WRITE_TIMEOUT", default_value = DEFAULT_CLIENT_WRITE_TIMEOUT, value_parser = parse_duration)]
    pub client_write_timeout: Duration,
    /// Upstream TCP + TLS connect timeout.
    #[arg(long, env = "CODEX_LB_UPSTREAM_CONNECT_TIMEOUT", default_value = DEFAULT_UPSTREAM_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub upstream_connect_timeout: Duration,
    /// Longest silence from the upstream (before its head, or between body bytes).
    #[arg(long, env = "CODEX_LB_UPSTREAM_IDLE_TIMEOUT", default_value = DEFAULT_UPSTREAM_IDLE_TIMEOUT, value_parser = parse_duration)]
    pub upstream_idle_timeout: Duration,
    /// On SIGINT/SIGTERM, how long in-flight streams may run before they are ended.
    #[arg(long, env = "CODEX_LB_SHUTDOWN_GRACE", default_value = DEFAULT_SHUTDOWN_GRACE, value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// How turns reach the upstream: `auto` (WebSocket clients over a WebSocket, or HTTP/SSE once
    /// the upstream answers 426; HTTP clients over HTTP/SSE), `http`, or `websocket` (every Codex
    /// turn over a WebSocket, HTTP clients' too; a 426 is the client's error).
    #[arg(long, env = "CODEX_LB_UPSTREAM_TRANSPORT", value_enum, default_value_t = UpstreamTransport::Auto)]
    pub upstream_transport: UpstreamTransport,
    /// A client WebSocket with no message for this long is closed (Codex reopens it).
    #[arg(long, env = "CODEX_LB_WEBSOCKET_IDLE_TIMEOUT", default_value = DEFAULT_WEBSOCKET_IDLE_TIMEOUT, value_parser = parse_duration)]
    pub websocket_idle_timeout: Duration,
    /// Age after which a client WebSocket's next turn is told to reconnect (as the upstream does).
    #[arg(long, env = "CODEX_LB_WEBSOCKET_MAX_AGE", default_value = DEFAULT_WEBSOCKET_MAX_AGE, value_parser = parse_duration)]
    pub websocket_max_age: Duration,
    /// Open client connections per worker; past it new connections get a 503 and are closed.
    #[arg(long, env = "CODEX_LB_MAX_CONNECTIONS_PER_WORKER", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_WORKER)]
    pub max_connections_per_worker: usize,
    /// Most usage a crash can lose: the ledger flushes sled at least this often.
    #[arg(long, env = "CODEX_LB_LEDGER_FLUSH_INTERVAL", default_value = DEFAULT_LEDGER_FLUSH_INTERVAL, value_parser = parse_duration)]
    pub ledger_flush_interval: Duration,
    /// How long request log rows are kept (`0s`: forever).
    #[arg(long, env = "CODEX_LB_LOG_RETENTION", default_value = DEFAULT_LOG_RETENTION, value_parser = parse_duration)]
    pub log_retention: Duration,
    /// How long hourly and daily usage rollups are kept (`0s`: forever).
    #[arg(long, env = "CODEX_LB_ROLLUP_RETENTION", default_value = DEFAULT_ROLLUP_RETENTION, value_parser = parse_duration)]
    pub rollup_retention: Duration,
    /// Usage events buffered between the workers and the ledger; a full buffer drops (and counts).
    #[arg(long, env = "CODEX_LB_LEDGER_CHANNEL_CAPACITY", default_value_t = DEFAULT_LEDGER_CHANNEL_CAPACITY)]
    pub ledger_channel_capacity: usize,
    /// Upstream failures (5xx, transport errors, refused tokens) one request may meet before the
    /// last is answered; accounts at their usage limit are skipped without counting.
    #[arg(long, env = "CODEX_LB_FAILOVER_ATTEMPTS", default_value_t = DEFAULT_FAILOVER_ATTEMPTS)]
    pub failover_attempts: usize,
    /// How long a fetched model catalog is reused.
    #[arg(long, env = "CODEX_LB_MODELS_CACHE_TTL", default_value = DEFAULT_MODELS_CACHE_TTL, value_parser = parse_duration)]
    pub models_cache_ttl: Duration,
    #[command(flatten)]
    pub login: LoginArgs,
    /// Routing strategy at start (switchable at run time through the admin API; the last choice
    /// is kept in the data dir and used when this is not given).
    #[arg(long, env = "CODEX_LB_STRATEGY", value_enum)]
    pub strategy: Option<crate::accounts::strategy::Strategy>,
    /// Streams one account may serve at once across all workers (0: no cap).
    #[arg(long, env = "CODEX_LB_ACCOUNT_MAX_STREAMS", default_value_t = DEFAULT_ACCOUNT_MAX_STREAMS)]
    pub account_max_streams: usize,
    /// How often each account's quota is read from the upstream's usage endpoint (0s: never).
    #[arg(long, env = "CODEX_LB_USAGE_POLL_INTERVAL", default_value = DEFAULT_USAGE_POLL_INTERVAL, value_parser = parse_duration)]
    pub usage_poll_interval: Duration,
    /// Extra CA certificates (PEM) to trust for the upstream, beside the built-in webpki roots.
    #[arg(long, env = "CODEX_LB_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Codex CLI version sent as `client_version` when the client did not send one.
    #[arg(long, env = "CODEX_LB_CLIENT_VERSION", default_value = DEFAULT_CLIENT_VERSION)]
    pub client_version: String,
    /// Client networks allowed to connect (CIDR, repeatable or comma-separated); loopback is
    /// always allowed. Empty: any address (key auth still applies).
    #[arg(
        long = "allow-cidr",
        env = "CODEX_LB_ALLOW_CIDRS",
        value_delimiter = ','
    )]
    pub allow_cidrs: Vec<ipnet::IpNet>,
    /// Serve clients over TLS with this PEM certificate chain (leaf first); needs --tls-key.
    /// Loopback clients may still use plain HTTP on the same port.
    #[arg(long, env = "CODEX_LB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, SEC1 or PKCS#1).
    #[arg(long, env = "CODEX_LB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How long a dashboard login lasts.
    #[arg(long, env = "CODEX_LB_DASHBOARD_SESSION_TTL", default_value = DEFAULT_DASHBOARD_SESSION_TTL, value_parser = parse_duration)]
    pub dashboard_session_ttl: Duration,
    /// Client networks allowed to use the dashboard and admin API (CIDR, repeatable or
    /// comma-separated), on top of --allow-cidr; loopback always is. Empty: whoever may connect.
    #[arg(
        long = "dashboard-allow-cidr",
        env = "CODEX_LB_DASHBOARD_ALLOW_CIDRS",
        value_delimiter = ','
    )]
    pub dashboard_allow_cidrs: Vec<ipnet::IpNet>,
    /// Reverse proxies whose `X-Forwarded-For` (or `Forwarded: for=`) names the client (CIDR,
    /// repeatable or comma-separated). Requests they forward are judged by that address: the
    /// allow-lists, the dashboard's login throttle and the request log. Empty: no one's.
    #[arg(
        long = "trusted-proxy",
        env = "CODEX_LB_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header --trusted-proxy names the client in; only that one is read.
    #[arg(long, env = "CODEX_LB_TRUSTED_PROXY_HEADER", value_enum, default_value_t = crate::access::ForwardedHeader::XForwardedFor)]
    pub trusted_proxy_header: crate::access::ForwardedHeader,
    /// Connections one client address may hold open on one worker; past it, 503 and close.
    #[arg(long, env = "CODEX_LB_MAX_CONNECTIONS_PER_CLIENT", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_CLIENT)]
    pub max_connections_per_client: usize,
    /// Let non-loopback callers use the proxy without a key while key auth is off (and listen on
    /// a non-loopback address without `--api-key-auth`). Anyone who can reach the port can then
    /// spend the pooled accounts.
    #[arg(long, env = "CODEX_LB_INSECURE_ALLOW_REMOTE", default_value_t = false)]
    pub insecure_allow_remote: bool,
    /// Require a proxy API key (`Authorization: Bearer sk-clb-…`) on every proxy route. Without
    /// this flag the last run-time choice (`PUT /api/settings`) applies, else off.
    #[arg(long, env = "CODEX_LB_API_KEY_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub api_key_auth: Option<bool>,
}

/// The upstream leg of WebSocket clients' turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UpstreamTransport {
    Auto,
    Http,
    Websocket,
}

/// Where a gateway listens and keeps its data; shared by `serve` and the `accounts` commands.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Address to listen on (`accounts` commands: where the running gateway is).
    #[arg(long, env = "CODEX_LB_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Data directory (sled database and the secret key); default `~/.codex-lb`.
    #[arg(long, env = "CODEX_LB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use a data dir (or key file) that other users can read; refused otherwise.
    #[arg(long, env = "CODEX_LB_ALLOW_OPEN_DATA_DIR")]
    pub allow_open_data_dir: bool,
}

impl TargetArgs {
    pub fn resolved_data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }
}

pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME").map_or_else(
        || PathBuf::from(".codex-lb"),
        |h| PathBuf::from(h).join(".codex-lb"),
    )
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 5m)"))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid upstream base URL {url:?}: {reason}")]
    UpstreamUrl { url: String, reason: &'static str },
    #[error("{name} must be between {min} and {max}")]
    OutOfRange {
        name: &'static str,
        min: usize,
        max: usize,
    },
    #[error(
        "refusing to listen on non-loopback address {0} without --api-key-auth: anyone reaching the \
         port could spend the pooled accounts; pass --insecure-allow-remote to do it anyway"
    )]
    RemoteWithoutAuth(SocketAddr),
}

/// The upstream base URL, split once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash, e.g. `/backend-api`.
    pub base_path: String,
    /// Value for the `Host` header.
    pub authority: String,
}

impl UpstreamUrl {
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let err = |reason| ConfigError::UpstreamUrl {
            url: url.to_string(),
            reason,
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(err("must start with http:// or https://"));
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if authority.is_empty() {
            return Err(err("missing host"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(port) => (h, port),
                Err(_) if h.contains(':') => (authority, if tls { 443 } else { 80 }),
                Err(_) => return Err(err("invalid port")),
            },
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let base_path = format!("/{}", path.trim_end_matches('/'))
            .trim_end_matches('/')
            .to_string();
        Ok(UpstreamUrl {
            tls,
            host,
            port,
            base_path,
            authority: authority.to_string(),
        })
    }
}

/// Settings after validation, as the workers read them.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub upstream: UpstreamUrl,
    pub auth_base: UpstreamUrl,
    /// The issuer URL as given, for links shown to people.
    pub auth_base_url: String,
    /// `--upstream-proxy`: all outbound connections tunnel through it.
    pub upstream_proxy: Option<crate::upstream::egress::EgressProxy>,
    pub oauth_callback_port: u16,
    pub login_timeout: Duration,
    pub upstream_ca_file: Option<PathBuf>,
    pub strategy: Option<crate::accounts::strategy::Strategy>,
    pub account_max_streams: usize,
    pub usage_poll_interval: Duration,
    pub workers: usize,
    pub driver: DriverChoice,
    pub head_limits: HeadLimits,
    pub max_body_bytes: usize,
    pub head_read_timeout: Duration,
    pub idle_keepalive_timeout: Duration,
    pub client_body_timeout: Duration,
    pub client_body_deadline: Duration,
    pub client_write_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub websocket_idle_timeout: Duration,
    pub websocket_max_age: Duration,
    pub upstream_transport: UpstreamTransport,
    pub max_connections_per_worker: usize,
    pub ledger_flush_interval: Duration,
    pub ledger_channel_capacity: usize,
    pub log_retention: Option<Duration>,
    pub rollup_retention: Option<Duration>,
    pub failover_attempts: usize,
    pub models_cache_ttl: Duration,
    pub client_version: String,
    pub api_key_auth: Option<bool>,
    /// Non-loopback callers may use the proxy without a key while key auth is off.
    pub insecure_allow_remote: bool,
    pub allow_cidrs: Vec<ipnet::IpNet>,
    pub dashboard_allow_cidrs: Vec<ipnet::IpNet>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub trusted_proxy_header: crate::access::ForwardedHeader,
    pub max_connections_per_client: usize,
    pub allow_open_data_dir: bool,
    pub dashboard_session_ttl: Duration,
    /// Certificate chain and key for client TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Settings {
    pub fn from_args(a: &ServeArgs) -> Result<Settings, ConfigError> {
        let upstream = UpstreamUrl::parse(&a.upstream_base_url)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = a.workers.unwrap_or(cores);
        range("workers", workers, 1, 1024)?;
        range("max-headers", a.max_headers, 1, MAX_HEADERS_CEILING)?;
        range("max-head-bytes", a.max_head_bytes, 1024, 1024 * 1024)?;
        range(
            "ledger-channel-capacity",
            a.ledger_channel_capacity,
            16,
            16 * 1024 * 1024,
        )?;
        range("failover-attempts", a.failover_attempts, 1, 16)?;
        range(
            "max-connections-per-worker",
            a.max_connections_per_worker,
            1,
            1 << 20,
        )?;
        if !a.target.listen.ip().is_loopback()
            && !a.insecure_allow_remote
            && a.api_key_auth != Some(true)
        {
            return Err(ConfigError::RemoteWithoutAuth(a.target.listen));
        }
        Ok(Settings {
            listen: a.target.listen,
            data_dir: a.target.resolved_data_dir(),
            upstream,
            auth_base: UpstreamUrl::parse(&a.login.auth_base_url)?,
            auth_base_url: a.login.auth_base_url.trim_end_matches('/').to_string(),
            upstream_proxy: a.login.upstream_proxy.clone(),
            oauth_callback_port: a.login.oauth_callback_port,
            login_timeout: a.login.login_timeout,
            upstream_ca_file: a.upstream_ca_file.clone(),
            strategy: a.strategy,
            account_max_streams: a.account_max_streams,
            usage_poll_interval: a.usage_poll_interval,
            workers,
            driver: a.driver,
            head_limits: HeadLimits {
                max_head_bytes: a.max_head_bytes,
                max_headers: a.max_headers,
            },
            max_body_bytes: a.max_body_bytes,
            head_read_timeout: a.head_read_timeout,
            idle_keepalive_timeout: a.idle_keepalive_timeout,
            client_body_timeout: a.client_body_timeout,
            client_body_deadline: a.client_body_deadline,
            client_write_timeout: a.client_write_timeout,
            upstream_connect_timeout: a.upstream_connect_timeout,
            upstream_idle_timeout: a.upstream_idle_timeout,
            shutdown_grace: a.shutdown_grace,
            websocket_idle_timeout: a.websocket_idle_timeout,
            websocket_max_age: a.websocket_max_age,
            upstream_transport: a.upstream_transport,
            max_connections_per_worker: a.max_connections_per_worker,
            ledger_flush_interval: a.ledger_flush_interval,
            ledger_channel_capacity: a.ledger_channel_capacity,
            log_retention: Some(a.log_retention).filter(|d| !d.is_zero()),
            rollup_retention: Some(a.rollup_retention).filter(|d| !d.is_zero()),
            failover_attempts: a.failover_attempts,
            models_cache_ttl: a.models_cache_ttl,
            client_version: a.client_version.clone(),
            api_key_auth: a.api_key_auth,
            insecure_allow_remote: a.insecure_allow_remote,
            allow_cidrs: a.allow_cidrs.clone(),
            dashboard_allow_cidrs: a.dashboard_allow_cidrs.clone(),
            trusted_proxies: a.trusted_proxies.clone(),
            trusted_proxy_header: a.trusted_proxy_header,
            allow_open_data_dir: a.target.allow_open_data_dir,
            max_connections_per_client: a.max_connections_per_client,
            dashboard_session_ttl: a.dashboard_session_ttl,
            tls: a.tls_cert.clone().zip(a.tls_key.clone()),
        })
    }

    /// Defaults on 127.0.0.1 port 0 with a given data dir and upstream (what tests start from).
    pub fn for_test(data_dir: PathBuf, upstream_base_url: &str) -> Settings {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let mut args = Wrapper::parse_from(["codex-lb"]).serve;
        args.target.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        args.target.data_dir = Some(data_dir);
        args.upstream_base_url = upstream_base_url.to_string();
        // The mock serves the OAuth endpoints at its origin.
        args.login.auth_base_url = upstream_base_url
            .trim_end_matches('/')
            .trim_end_matches("/backend-api")
            .to_string();
        args.workers = Some(2);
        // Tests run side by side: each sign-in listens on a port of its own.
        args.login.oauth_callback_port = 0;
        let mut s = Settings::from_args(&args).unwrap_or_else(|e| panic!("test settings: {e}"));
        s.shutdown_grace = Duration::from_secs(5);
        // The test script runs the suite once per IO driver.
        s.driver = match std::env::var("CODEX_LB_TEST_DRIVER").as_deref() {
            Ok("legacy") => DriverChoice::Legacy,
            Ok("uring") => DriverChoice::Uring,
            _ => DriverChoice::Auto,
        };
        s
    }
}

fn range(name: &'static str, v: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if v < min || v > max {
        return Err(ConfigError::OutOfRange { name, min, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_url_forms() {
        let u = UpstreamUrl::parse("https://chatgpt.com/backend-api").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.base_path.as_str()),
            (true, "chatgpt.com", 443, "/backend-api")
        );
        let u = UpstreamUrl::parse("http://127.0.0.1:8080/backend-api/").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.base_path.as_str()),
            (false, "127.0.0.1", 8080, "/backend-api")
        );
        assert_eq!(u.authority, "127.0.0.1:8080");
        let u = UpstreamUrl::parse("http://[::1]:9/x").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("::1", 9, "/x")
        );
        let u = UpstreamUrl::parse("http://h").unwrap();
        assert_eq!((u.port, u.base_path.as_str()), (80, ""));
        assert!(UpstreamUrl::parse("ftp://x").is_err());
        assert!(UpstreamUrl::parse("http://h:notaport/").is_err());
    }

    #[test]
    fn defaults_parse_and_remote_bind_needs_opt_in() {
        let s = Settings::for_test(PathBuf::from("/tmp/x"), "http://127.0.0.1:1/backend-api");
        assert_eq!(s.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(s.head_read_timeout, Duration::from_secs(10));
        use clap::Parser;
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let a = W::parse_from(["x", "--listen", "0.0.0.0:2455"]).serve;
        assert!(matches!(
            Settings::from_args(&a),
            Err(ConfigError::RemoteWithoutAuth(_))
        ));
        let a = W::parse_from(["x", "--listen", "0.0.0.0:2455", "--insecure-allow-remote"]).serve;
        assert!(Settings::from_args(&a).is_ok());
    }
}
