//! The auth thread: the one place that hashes and checks passwords (argon2 costs tens of
//! milliseconds, too long for a worker), checks TOTP codes, and writes the `admin` tree.
//! Workers send it jobs and poll for the answer; it publishes flags and sessions to `AdminAuth`.
//!
//! Stored in `admin`: the admin and viewer password hashes (argon2id PHC strings), the TOTP
//! secret (sealed with the data dir's key) with the last step used, and one entry per session
//! (the SHA-256 of its cookie, never the cookie), so sessions outlive a restart.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chacha20poly1305::aead::OsRng;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};

use super::throttle::Throttle;
use super::totp;
use super::{sha256, AdminAuth, AuthFlags, Role, Session};
use crate::accounts::now_unix;
use crate::accounts::sealing::Sealer;
use crate::login::pkce::random_token;

pub const MIN_PASSWORD_CHARS: usize = 8;
/// Long enough for any passphrase; bounded so hashing cost is bounded.
pub const MAX_PASSWORD_BYTES: usize = 1024;
const ADMIN_HASH: &[u8] = b"admin_password";
const VIEWER_HASH: &[u8] = b"viewer_password";
const TOTP_KEY: &[u8] = b"totp";
const SESSION_PREFIX: &[u8] = b"session/";
/// How often expired sessions are swept.
const SWEEP: Duration = Duration::from_secs(60);

/// Why an auth job was refused; each maps to one error code the dashboard branches on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("wrong password")]
    InvalidCredentials,
    #[error("a TOTP code is required")]
    TotpRequired,
    #[error("wrong or already used TOTP code")]
    InvalidTotp,
    #[error("too many failed sign-ins from this address; try again in {0} s")]
    Throttled(u64),
    #[error("a bootstrap token is required (dashboard-bootstrap.token in the gateway's data dir)")]
    BootstrapRequired,
    #[error("wrong bootstrap token")]
    InvalidBootstrap,
    #[error("the password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} bytes long")]
    BadPassword,
    #[error("no dashboard password is set")]
    NoPassword,
    #[error("TOTP is not enrolled")]
    TotpNotEnrolled,
    #[error("start TOTP enrolment first")]
    NoPendingTotp,
    #[error("could not save: {0}")]
    Store(String),
}

/// A new session: the cookie value (shown once) and what it allows.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: String,
    pub session: Session,
}

#[derive(Debug)]
pub enum AuthOutcome {
    Session(NewSession),
    Done,
    Totp(totp::Enrolment),
}

pub type AuthReply = Sender<Result<AuthOutcome, AuthError>>;

/// Who asks to set the admin password, as the worker saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setter {
    /// An admin already (open mode, the admin token or an admin session).
    Admin,
    /// A remote caller while no password is set: needs the bootstrap token.
    Remote,
}

pub enum AuthJob {
    Login {
        password: String,
        totp_code: Option<String>,
        addr: IpAddr,
        reply: AuthReply,
    },
    Logout {
        hash: [u8; 32],
    },
    SetPassword {
        new_password: String,
        current_password: Option<String>,
        bootstrap_token: Option<String>,
        setter: Setter,
        addr: IpAddr,
        reply: AuthReply,
    },
    RemovePassword {
        current_password: String,
        addr: IpAddr,
        reply: AuthReply,
    },
    SetViewerPassword {
        password: Option<String>,
        reply: AuthReply,
    },
    TotpStart {
        reply: AuthReply,
    },
    TotpConfirm {
        code: String,
        reply: AuthReply,
    },
    TotpDisable {
        code: String,
        reply: AuthReply,
    },
    Stop,
}

#[derive(Serialize, Deserialize)]
struct StoredTotp {
    /// The secret, sealed with the data dir's key.
    sealed: String,
    last_step: u64,
}

pub struct AuthService {
    tree: sled::Tree,
    sealer: Sealer,
    auth: Arc<AdminAuth>,
    admin_hash: Option<String>,
    viewer_hash: Option<String>,
    totp: Option<(Vec<u8>, u64)>,
    pending_totp: Option<Vec<u8>>,
    throttle: Throttle,
    /// One-time token for the first remote password setup; `None` once a password is set.
    bootstrap: Option<String>,
    /// Where the token is written for the owner (never to the log, which may be shipped
    /// elsewhere); `None` while the gateway listens on loopback only.
    bootstrap_file: Option<PathBuf>,
}

impl AuthService {
    /// Loads the stored credentials and sessions and publishes them.
    pub fn load(
        tree: sled::Tree,
        sealer: Sealer,
        auth: Arc<AdminAuth>,
    ) -> Result<AuthService, sled::Error> {
        let text = |k: &[u8]| -> Result<Option<String>, sled::Error> {
            Ok(tree
                .get(k)?
                .and_then(|v| String::from_utf8(v.to_vec()).ok()))
        };
        let admin_hash = text(ADMIN_HASH)?;
        let viewer_hash = text(VIEWER_HASH)?;
        let totp = match tree.get(TOTP_KEY)? {
            Some(v) => match serde_json::from_slice::<StoredTotp>(&v)
                .ok()
                .and_then(|t| Some((sealer.open(&t.sealed).ok()?, t.last_step)))
            {
                Some(t) => Some(t),
                None => {
                    // A lost secret.key: refusing every login would lock the owner out of a
                    // dashboard they can only reset from the data dir anyway.
                    tracing::error!("the dashboard's TOTP secret cannot be read (was secret.key replaced?); TOTP is off until enrolled again");
                    None
                }
            },
            None => None,
        };
        let now = now_unix();
        for item in tree.scan_prefix(SESSION_PREFIX) {
            let (k, v) = item?;
            let Ok(hash) = <[u8; 32]>::try_from(&k[SESSION_PREFIX.len()..]) else {
                continue;
            };
            match serde_json::from_slice::<Session>(&v) {
                Ok(s) if s.expires_at > now => auth.publish_session(hash, s),
                _ => {
                    tree.remove(&k)?;
                }
            }
        }
        let bootstrap = admin_hash.is_none().then(|| random_token(32));
        let svc = AuthService {
            tree,
            sealer,
            auth,
            admin_hash,
            viewer_hash,
            totp,
            pending_totp: None,
            throttle: Throttle::default(),
            bootstrap,
            bootstrap_file: None,
        };
        svc.publish();
        Ok(svc)
    }

    /// The first-setup token, while no password is set.
    pub fn bootstrap_token(&self) -> Option<&str> {
        self.bootstrap.as_deref()
    }

    /// Keeps the first-setup token in `path` (0600) while no password is set, for a gateway
    /// reachable from elsewhere; a stale file from an earlier run goes either way.
    pub fn keep_bootstrap_file(&mut self, path: PathBuf) -> std::io::Result<()> {
        remove_if_there(&path)?;
        self.bootstrap_file = Some(path);
        self.write_bootstrap_file()
    }

    fn write_bootstrap_file(&self) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let (Some(path), Some(token)) = (&self.bootstrap_file, &self.bootstrap) else {
            return Ok(());
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(token.as_bytes())?;
        f.sync_all()
    }

    fn spend_bootstrap(&mut self) {
        self.bootstrap = None;
        if let Some(path) = &self.bootstrap_file {
            if let Err(e) = remove_if_there(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the spent bootstrap token file");
            }
        }
    }

    pub fn password_set(&self) -> bool {
        self.admin_hash.is_some()
    }

    fn publish(&self) {
        self.auth.publish_flags(
            AuthFlags {
                password_set: self.admin_hash.is_some(),
                viewer_password_set: self.viewer_hash.is_some(),
                totp_enabled: self.totp.is_some(),
            },
            self.bootstrap.clone(),
        );
    }

    pub fn spawn(mut self, rx: Receiver<AuthJob>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("codex-lb-auth".into())
            .spawn(move || loop {
                match rx.recv_timeout(SWEEP) {
                    Ok(AuthJob::Stop) | Err(RecvTimeoutError::Disconnected) => {
                        let _ = self.tree.flush();
                        return;
                    }
                    Ok(job) => self.handle(job),
                    Err(RecvTimeoutError::Timeout) => self.sweep(),
                }
            })
    }

    fn sweep(&mut self) {
        for h in self.auth.expire_sessions(now_unix()) {
            let _ = self.tree.remove(session_key(&h));
        }
    }

    fn handle(&mut self, job: AuthJob) {
        match job {
            AuthJob::Login {
                password,
                totp_code,
                addr,
                reply,
            } => {
                let _ = reply.send(self.login(&password, totp_code.as_deref(), addr));
            }
            AuthJob::Logout { hash } => {
                self.auth.drop_session(&hash);
                let _ = self.tree.remove(session_key(&hash));
            }
            AuthJob::SetPassword {
                new_password,
                current_password,
                bootstrap_token,
                setter,
                addr,
                reply,
            } => {
                let r = self.set_password(
                    &new_password,
                    current_password.as_deref(),
                    bootstrap_token.as_deref(),
                    setter,
                    addr,
                );
                let _ = reply.send(r);
            }
            AuthJob::RemovePassword {
                current_password,
                addr,
                reply,
            } => {
                let _ = reply.send(self.remove_password(&current_password, addr));
            }
            AuthJob::SetViewerPassword { password, reply } => {
                let _ = reply.send(self.set_viewer(password.as_deref()));
            }
            AuthJob::TotpStart { reply } => {
                let secret = totp::new_secret();
                let r = totp::enrolment(&secret)
                    .map(AuthOutcome::Totp)
                    .ok_or_else(|| AuthError::Store("cannot build the TOTP enrolment".into()));
                self.pending_totp = Some(secret);
                let _ = reply.send(r);
            }
            AuthJob::TotpConfirm { code, reply } => {
                let _ = reply.send(self.totp_confirm(&code));
            }
            AuthJob::TotpDisable { code, reply } => {
                let _ = reply.send(self.totp_disable(&code));
            }
            AuthJob::Stop => {}
        }
    }

    fn login(
        &mut self,
        password: &str,
        code: Option<&str>,
        addr: IpAddr,
    ) -> Result<AuthOutcome, AuthError> {
        let now = now_unix();
        if let Some(wait) = self.throttle.blocked_for(addr, now) {
            return Err(AuthError::Throttled(wait));
        }
        let role = if self
            .admin_hash
            .as_deref()
            .is_some_and(|h| verify(h, password))
        {
            Role::Admin
        } else if self
            .viewer_hash
            .as_deref()
            .is_some_and(|h| verify(h, password))
        {
            Role::Viewer
        } else {
            self.throttle.failed(addr, now);
            return Err(if self.admin_hash.is_none() {
                AuthError::NoPassword
            } else {
                AuthError::InvalidCredentials
            });
        };
        if role == Role::Admin && self.totp.is_some() {
            let Some(code) = code.filter(|c| !c.trim().is_empty()) else {
                // The password was right: no failure counted, the form asks for the code.
                return Err(AuthError::TotpRequired);
            };
            if let Err(e) = self.use_totp(code, now) {
                self.throttle.failed(addr, now);
                return Err(e);
            }
        }
        self.throttle.succeeded(addr);
        self.new_session(role).map(AuthOutcome::Session)
    }

    /// Checks a code against the enrolled secret and spends its step.
    fn use_totp(&mut self, code: &str, now: u64) -> Result<(), AuthError> {
        let Some((secret, last)) = self.totp.as_mut() else {
            return Err(AuthError::TotpNotEnrolled);
        };
        match totp::check(secret, code, now) {
            Some(step) if step > *last => {
                *last = step;
                let stored = StoredTotp {
                    sealed: self.sealer.seal(secret),
                    last_step: step,
                };
                self.put(TOTP_KEY, &serde_json::to_vec(&stored).unwrap_or_default())
            }
            _ => Err(AuthError::InvalidTotp),
        }
    }

    fn new_session(&mut self, role: Role) -> Result<NewSession, AuthError> {
        let token = random_token(32);
        let session = Session {
            role,
            csrf: random_token(24),
            expires_at: now_unix() + self.auth.session_ttl.as_secs(),
        };
        let hash = sha256(token.as_bytes());
        self.put(
            &session_key(&hash),
            &serde_json::to_vec(&session).unwrap_or_default(),
        )?;
        self.auth.publish_session(hash, session.clone());
        Ok(NewSession { token, session })
    }

    fn set_password(
        &mut self,
        new: &str,
        current: Option<&str>,
        bootstrap: Option<&str>,
        setter: Setter,
        addr: IpAddr,
    ) -> Result<AuthOutcome, AuthError> {
        if new.chars().count() < MIN_PASSWORD_CHARS || new.len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::BadPassword);
        }
        let now = now_unix();
        if let Some(wait) = self.throttle.blocked_for(addr, now) {
            return Err(AuthError::Throttled(wait));
        }
        match (&self.admin_hash, setter) {
            // First setup from afar: only with the token from the log.
            (None, Setter::Remote) => {
                let Some(expected) = self.bootstrap.as_deref() else {
                    return Err(AuthError::BootstrapRequired);
                };
                let Some(given) = bootstrap else {
                    return Err(AuthError::BootstrapRequired);
                };
                if sha256(given.trim().as_bytes()) != sha256(expected.as_bytes()) {
                    self.throttle.failed(addr, now);
                    return Err(AuthError::InvalidBootstrap);
                }
            }
            (None, Setter::Admin) => {}
            // A change needs the current password, even from an admin session: a session left
            // open on a shared screen must not be enough to take the dashboard over.
            (Some(hash), _) => {
                if !current.is_some_and(|c| verify(hash, c)) {
                    self.throttle.failed(addr, now);
                    return Err(AuthError::InvalidCredentials);
                }
            }
        }
        let hash = hash_password(new)?;
        self.put(ADMIN_HASH, hash.as_bytes())?;
        self.admin_hash = Some(hash);
        self.spend_bootstrap();
        // Every earlier session ends with the old password.
        self.end_all_sessions();
        self.publish();
        self.new_session(Role::Admin).map(AuthOutcome::Session)
    }

    fn remove_password(&mut self, current: &str, addr: IpAddr) -> Result<AuthOutcome, AuthError> {
        let now = now_unix();
        if let Some(wait) = self.throttle.blocked_for(addr, now) {
            return Err(AuthError::Throttled(wait));
        }
        let Some(hash) = &self.admin_hash else {
            return Err(AuthError::NoPassword);
        };
        if !verify(hash, current) {
            self.throttle.failed(addr, now);
            return Err(AuthError::InvalidCredentials);
        }
        for k in [ADMIN_HASH, VIEWER_HASH, TOTP_KEY] {
            self.tree
                .remove(k)
                .map_err(|e| AuthError::Store(e.to_string()))?;
        }
        self.admin_hash = None;
        self.viewer_hash = None;
        self.totp = None;
        self.bootstrap = Some(random_token(32));
        if let Err(e) = self.write_bootstrap_file() {
            tracing::warn!(error = %e, "cannot write the new bootstrap token file");
        }
        self.end_all_sessions();
        self.flush()?;
        self.publish();
        Ok(AuthOutcome::Done)
    }

    fn set_viewer(&mut self, password: Option<&str>) -> Result<AuthOutcome, AuthError> {
        if self.admin_hash.is_none() {
            // A viewer login beside an open dashboard would protect nothing.
            return Err(AuthError::NoPassword);
        }
        match password {
            Some(p) => {
                if p.chars().count() < MIN_PASSWORD_CHARS || p.len() > MAX_PASSWORD_BYTES {
                    return Err(AuthError::BadPassword);
                }
                let hash = hash_password(p)?;
                self.put(VIEWER_HASH, hash.as_bytes())?;
                self.viewer_hash = Some(hash);
            }
            None => {
                self.tree
                    .remove(VIEWER_HASH)
                    .map_err(|e| AuthError::Store(e.to_string()))?;
                self.flush()?;
                self.viewer_hash = None;
                self.end_sessions_of(Role::Viewer);
            }
        }
        self.publish();
        Ok(AuthOutcome::Done)
    }

    fn totp_confirm(&mut self, code: &str) -> Result<AuthOutcome, AuthError> {
        if self.admin_hash.is_none() {
            return Err(AuthError::NoPassword);
        }
        let Some(secret) = self.pending_totp.as_ref() else {
            return Err(AuthError::NoPendingTotp);
        };
        let step = totp::check(secret, code, now_unix()).ok_or(AuthError::InvalidTotp)?;
        let stored = StoredTotp {
            sealed: self.sealer.seal(secret),
            last_step: step,
        };
        self.put(TOTP_KEY, &serde_json::to_vec(&stored).unwrap_or_default())?;
        self.totp = self.pending_totp.take().map(|s| (s, step));
        self.publish();
        Ok(AuthOutcome::Done)
    }

    fn totp_disable(&mut self, code: &str) -> Result<AuthOutcome, AuthError> {
        if self.totp.is_none() {
            return Err(AuthError::TotpNotEnrolled);
        }
        self.use_totp(code, now_unix())?;
        self.tree
            .remove(TOTP_KEY)
            .map_err(|e| AuthError::Store(e.to_string()))?;
        self.flush()?;
        self.totp = None;
        self.publish();
        Ok(AuthOutcome::Done)
    }

    fn end_all_sessions(&mut self) {
        for h in self.auth.drop_all_sessions() {
            let _ = self.tree.remove(session_key(&h));
        }
    }

    fn end_sessions_of(&mut self, role: Role) {
        let keys: Vec<_> = self
            .tree
            .scan_prefix(SESSION_PREFIX)
            .filter_map(Result::ok)
            .filter(|(_, v)| serde_json::from_slice::<Session>(v).is_ok_and(|s| s.role == role))
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            if let Ok(hash) = <[u8; 32]>::try_from(&k[SESSION_PREFIX.len()..]) {
                self.auth.drop_session(&hash);
            }
            let _ = self.tree.remove(k);
        }
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), AuthError> {
        self.tree
            .insert(key, value)
            .map_err(|e| AuthError::Store(e.to_string()))?;
        self.flush()
    }

    /// Credentials and sessions are rare, small writes: each is made durable before it is
    /// answered, so an acknowledged password change survives a crash.
    fn flush(&self) -> Result<(), AuthError> {
        self.tree
            .flush()
            .map(drop)
            .map_err(|e| AuthError::Store(e.to_string()))
    }
}

/// Whether the `admin` tree holds an admin password (for the CLI, which reads the store).
pub fn password_is_set(tree: &sled::Tree) -> bool {
    tree.get(ADMIN_HASH).ok().flatten().is_some()
}

/// Sets the admin or viewer password straight in the `admin` tree of a data dir no gateway holds
/// (`codex-lb dashboard set-password`). Changing the admin password needs the current one and
/// ends every session, as it does through the dashboard.
pub fn set_password_in_store(
    tree: &sled::Tree,
    role: Role,
    new: &str,
    current: Option<&str>,
) -> Result<(), AuthError> {
    if new.chars().count() < MIN_PASSWORD_CHARS || new.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::BadPassword);
    }
    let store = |e: sled::Error| AuthError::Store(e.to_string());
    let admin = tree.get(ADMIN_HASH).map_err(store)?;
    let key = match role {
        Role::Admin => {
            if let Some(hash) = &admin {
                let hash = String::from_utf8_lossy(hash);
                if !current.is_some_and(|c| verify(&hash, c)) {
                    return Err(AuthError::InvalidCredentials);
                }
            }
            ADMIN_HASH
        }
        Role::Viewer if admin.is_none() => return Err(AuthError::NoPassword),
        Role::Viewer => VIEWER_HASH,
    };
    tree.insert(key, hash_password(new)?.as_bytes())
        .map_err(store)?;
    if role == Role::Admin {
        let sessions: Vec<_> = tree
            .scan_prefix(SESSION_PREFIX)
            .keys()
            .filter_map(Result::ok)
            .collect();
        for k in sessions {
            tree.remove(k).map_err(store)?;
        }
    }
    tree.flush().map(drop).map_err(store)
}

fn session_key(hash: &[u8; 32]) -> Vec<u8> {
    [SESSION_PREFIX, hash.as_slice()].concat()
}

fn hash_password(p: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(p.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Store(format!("hashing failed: {e}")))
}

fn verify(hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

fn remove_if_there(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert!(verify(&a, "correct horse"));
        assert!(!verify(&a, "correct horsf"));
        assert!(!verify("not a hash", "x"));
    }
}
