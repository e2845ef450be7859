//! Who may use the dashboard and the admin API (`/api/...`), and as what.
//!
//! Callers are recognised in this order:
//! 1. `Authorization: Bearer <admin token>` from loopback: the token is `<data dir>/admin.token`
//!    (0600), so whoever can read the data dir (the `codex-lb` CLI) is an admin.
//! 2. A session cookie made by a password login: admin or viewer (read-only).
//! 3. Open mode: no password is set and the caller is on loopback, addressing the gateway by a
//!    loopback name (a page that rebinds its own DNS name to 127.0.0.1 does not count).
//!
//! State-changing requests made from a browser carry `X-CSRF-Token`: the session's token, or in
//! open mode the process's. Workers only read here (one short mutex hold per admin call, off the
//! proxy path); everything that hashes a password or writes the store runs on the auth thread
//! (`service`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::accounts::now_unix;
use crate::http::error_body::ApiError;
use crate::http::request::RequestHead;

pub mod service;
mod throttle;
mod totp;

pub use service::{AuthError, AuthJob, AuthOutcome};

/// The cookie that carries a dashboard session.
pub const SESSION_COOKIE: &str = "codex_lb_session";
/// The header that carries the CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    /// Sees everything an admin sees except credentials; changes nothing.
    Viewer,
}

/// A signed-in browser, keyed by the SHA-256 of its cookie value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub role: Role,
    pub csrf: String,
    pub expires_at: u64,
}

/// What the dashboard may show about how it is protected (never a secret).
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthFlags {
    pub password_set: bool,
    pub viewer_password_set: bool,
    pub totp_enabled: bool,
}

#[derive(Default)]
struct Published {
    flags: AuthFlags,
    /// The first-setup token while no password is set.
    bootstrap: Option<String>,
    sessions: HashMap<[u8; 32], Session>,
}

/// The part of dashboard auth that every worker reads.
pub struct AdminAuth {
    published: Mutex<Published>,
    admin_token_hash: [u8; 32],
    /// The CSRF token of open mode (no password): per process, handed out by the session call.
    open_csrf: String,
    pub session_ttl: Duration,
    /// Whether the gateway terminates TLS (cookies are then `Secure`).
    pub secure_cookies: bool,
    jobs: Sender<AuthJob>,
}

/// How a caller was recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The admin token from the data dir.
    Token,
    Session {
        hash: [u8; 32],
        session: Session,
    },
    /// Loopback, no password set.
    Open,
    /// Nobody we know; `bootstrap` when no password is set yet (remote first setup).
    Anonymous {
        bootstrap: bool,
    },
}

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read-only figures: a viewer will do.
    Read,
    /// A change, or a read of credentials: an admin, and a CSRF token from browsers.
    Write,
}

impl Caller {
    pub fn role(&self) -> Option<Role> {
        match self {
            Caller::Token | Caller::Open => Some(Role::Admin),
            Caller::Session { session, .. } => Some(session.role),
            Caller::Anonymous { .. } => None,
        }
    }
}

/// The admin token's file in the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The one-time first-setup token of a remotely reachable gateway with no password yet.
pub const BOOTSTRAP_TOKEN_FILE: &str = "dashboard-bootstrap.token";

/// Reads `<dir>/admin.token`, making it (0600) on first use.
pub fn load_or_create_admin_token(dir: &std::path::Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = crate::login::pkce::random_token(32);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok(token)
}

/// The admin token of a data dir, for the CLI; `None` when there is none to read.
pub fn read_admin_token(dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(dir.join(ADMIN_TOKEN_FILE))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl AdminAuth {
    pub(crate) fn new(
        admin_token: &str,
        session_ttl: Duration,
        secure_cookies: bool,
        jobs: Sender<AuthJob>,
    ) -> AdminAuth {
        AdminAuth {
            published: Mutex::default(),
            admin_token_hash: sha256(admin_token.as_bytes()),
            open_csrf: crate::login::pkce::random_token(24),
            session_ttl,
            secure_cookies,
            jobs,
        }
    }

    /// Hands work to the auth thread; `false` when its queue is full or it has stopped.
    pub fn submit(&self, job: AuthJob) -> bool {
        self.jobs.try_send(job).is_ok()
    }

    pub fn flags(&self) -> AuthFlags {
        self.published.lock().map(|p| p.flags).unwrap_or_default()
    }

    pub(crate) fn publish_flags(&self, flags: AuthFlags, bootstrap: Option<String>) {
        if let Ok(mut p) = self.published.lock() {
            p.flags = flags;
            p.bootstrap = bootstrap;
        }
    }

    /// The one-time token for a first password set from another machine (printed at start).
    pub fn bootstrap_token(&self) -> Option<String> {
        self.published.lock().ok()?.bootstrap.clone()
    }

    pub(crate) fn publish_session(&self, hash: [u8; 32], session: Session) {
        if let Ok(mut p) = self.published.lock() {
            p.sessions.insert(hash, session);
        }
    }

    pub(crate) fn drop_session(&self, hash: &[u8; 32]) {
        if let Ok(mut p) = self.published.lock() {
            p.sessions.remove(hash);
        }
    }

    /// Ends every session (the password changed or was removed); returns their hashes.
    pub(crate) fn drop_all_sessions(&self) -> Vec<[u8; 32]> {
        self.published
            .lock()
            .map(|mut p| p.sessions.drain().map(|(h, _)| h).collect())
            .unwrap_or_default()
    }

    pub(crate) fn expire_sessions(&self, now: u64) -> Vec<[u8; 32]> {
        let Ok(mut p) = self.published.lock() else {
            return Vec::new();
        };
        let gone: Vec<[u8; 32]> = p
            .sessions
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(h, _)| *h)
            .collect();
        for h in &gone {
            p.sessions.remove(h);
        }
        gone
    }

    /// Recognises the caller of an admin request.
    pub fn identify(&self, head: &RequestHead, peer: SocketAddr) -> Caller {
        let loopback = crate::access::from_this_machine(peer, head);
        if loopback {
            if let Some(token) = head
                .header_str("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
            {
                if sha256(token.trim().as_bytes()) == self.admin_token_hash {
                    return Caller::Token;
                }
            }
        }
        let Ok(p) = self.published.lock() else {
            return Caller::Anonymous { bootstrap: false };
        };
        if let Some(value) = cookie(head, SESSION_COOKIE) {
            let hash = sha256(value.as_bytes());
            if let Some(s) = p.sessions.get(&hash) {
                if s.expires_at > now_unix() {
                    return Caller::Session {
                        hash,
                        session: s.clone(),
                    };
                }
            }
        }
        if !p.flags.password_set {
            if loopback && host_is_loopback(head.header_str("host")) {
                return Caller::Open;
            }
            return Caller::Anonymous {
                bootstrap: !loopback,
            };
        }
        Caller::Anonymous { bootstrap: false }
    }

    /// The CSRF token a caller's browser must send back on changes.
    pub fn csrf_for(&self, caller: &Caller) -> Option<String> {
        match caller {
            Caller::Session { session, .. } => Some(session.csrf.clone()),
            Caller::Open => Some(self.open_csrf.clone()),
            Caller::Token | Caller::Anonymous { .. } => None,
        }
    }

    /// Whether `caller` may make a request that needs `need`; the error says why not.
    pub fn check(&self, caller: &Caller, head: &RequestHead, need: Need) -> Result<Role, ApiError> {
        let role = match caller {
            Caller::Anonymous { bootstrap: true } => return Err(bootstrap_required()),
            Caller::Anonymous { bootstrap: false } => return Err(authentication_required()),
            c => c.role().unwrap_or(Role::Viewer),
        };
        if need == Need::Write {
            if role != Role::Admin {
                return Err(ApiError::new(
                    403,
                    "permission_error",
                    "read_only",
                    "this dashboard login is read-only; sign in with the admin password to change \
                     anything",
                ));
            }
            self.check_csrf(caller, head)?;
        }
        Ok(role)
    }

    /// Browsers must echo the CSRF token on changes. Cookie sessions always; open mode when the
    /// request comes from a browser (it carries `Origin` or `Sec-Fetch-Site`), so command-line
    /// tools on this machine keep working without one.
    pub fn check_csrf(&self, caller: &Caller, head: &RequestHead) -> Result<(), ApiError> {
        let expected = match caller {
            Caller::Session { session, .. } => &session.csrf,
            Caller::Open
                if head.header("origin").is_some() || head.header("sec-fetch-site").is_some() =>
            {
                &self.open_csrf
            }
            _ => return Ok(()),
        };
        let sent = head.header(CSRF_HEADER).unwrap_or_default();
        if sha256(sent) == sha256(expected.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::new(
                403,
                "permission_error",
                "csrf_token_invalid",
                "missing or wrong X-CSRF-Token header; reload the dashboard",
            ))
        }
    }

    /// The `Set-Cookie` value for a new session token.
    pub fn session_cookie(&self, token: &str) -> String {
        format!(
            "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.session_ttl.as_secs(),
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }
}

pub fn authentication_required() -> ApiError {
    ApiError::new(
        401,
        "authentication_error",
        "authentication_required",
        "sign in to the dashboard first (POST /api/dashboard-auth/login)",
    )
}

pub fn bootstrap_required() -> ApiError {
    ApiError::new(
        401,
        "authentication_error",
        "bootstrap_required",
        "no dashboard password is set: set one with the bootstrap token from \
         dashboard-bootstrap.token in the gateway's data dir (POST /api/dashboard-auth/password), \
         or from the gateway's own machine",
    )
}

/// Whether a `Host` header names this machine: `localhost` or a loopback IP, with any port.
fn host_is_loopback(host: Option<&str>) -> bool {
    let Some(host) = host else {
        // HTTP/1.0 clients may omit it; browsers never do.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(head: &'a RequestHead, name: &str) -> Option<&'a str> {
    head.headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:2455",
            "127.0.0.1:2455",
            "[::1]:2455",
            "[::1]",
        ] {
            assert!(host_is_loopback(Some(h)), "{h}");
        }
        for h in [
            "evil.example:2455",
            "10.0.0.1",
            "localhost.evil.example",
            "[2001:db8::1]:80",
        ] {
            assert!(!host_is_loopback(Some(h)), "{h}");
        }
    }
}
