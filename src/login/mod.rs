//! Adding accounts by signing in (PROTOCOL.md §5): the browser flow (authorization code + PKCE,
//! callback on `localhost:1455` only while a sign-in is pending), the device-code flow for
//! headless servers, and the manual path where the person pastes the final callback URL.
//!
//! A sign-in is a `Flow` kept server-side with its state and PKCE verifier until it ends or
//! expires; the admin API and the `accounts login` command drive the same flows. What a finished
//! sign-in yields is handed to `StoreAccount`, which writes the account (upsert by seat).

pub mod callback;
pub mod issuer;
pub mod pkce;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::accounts::{now_unix, Tokens};
use issuer::{DeviceCode, DevicePoll, Issuer};
use pkce::Pkce;

/// Sign-ins pending at once; more are refused (the API is loopback-only, but bounded anyway).
const MAX_PENDING: usize = 16;
/// Finished sign-ins are kept this long so their outcome can be read.
const KEEP_FINISHED: Duration = Duration::from_secs(600);

/// Writes a signed-in account; returns its public description and whether it is new.
pub type StoreAccount = Box<dyn Fn(&Tokens) -> Result<(Value, bool), String> + Send + Sync>;

#[derive(Debug, Error, PartialEq)]
pub enum LoginError {
    #[error("no sign-in {0}")]
    NotFound(String),
    #[error("sign-in {id} is {status}, not pending")]
    NotPending { id: String, status: &'static str },
    #[error("the callback's state does not match this sign-in (a stale or foreign link)")]
    StateMismatch,
    #[error("the callback URL has no code: {0}")]
    BadCallback(String),
    #[error("sign-in refused: {0}")]
    Denied(String),
    #[error("callback port {port} is busy ({reason}); is another sign-in (codex login?) running? Use the manual path or another callback port")]
    PortBusy { port: u16, reason: String },
    #[error("too many sign-ins pending; finish or cancel one")]
    TooMany,
    #[error("{0}")]
    Issuer(String),
}

impl LoginError {
    /// HTTP status for the admin API.
    pub fn status(&self) -> u16 {
        match self {
            LoginError::NotFound(_) => 404,
            LoginError::NotPending { .. } | LoginError::PortBusy { .. } => 409,
            LoginError::StateMismatch | LoginError::BadCallback(_) | LoginError::Denied(_) => 400,
            LoginError::TooMany => 429,
            LoginError::Issuer(_) => 502,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            LoginError::NotFound(_) => "login_not_found",
            LoginError::NotPending { .. } => "login_not_pending",
            LoginError::StateMismatch => "login_state_mismatch",
            LoginError::BadCallback(_) => "login_bad_callback",
            LoginError::Denied(_) => "login_denied",
            LoginError::PortBusy { .. } => "login_port_busy",
            LoginError::TooMany => "too_many_logins",
            LoginError::Issuer(_) => "login_issuer_error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Browser,
    Device,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Pending,
    /// The code is being exchanged for tokens.
    Exchanging,
    Complete {
        account: Value,
        created: bool,
    },
    Failed {
        error: String,
    },
    Expired,
    Cancelled,
}

impl Status {
    fn name(&self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Exchanging => "exchanging",
            Status::Complete { .. } => "complete",
            Status::Failed { .. } => "failed",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn is_final(&self) -> bool {
        !matches!(self, Status::Pending | Status::Exchanging)
    }
}

/// What a caller may know of a sign-in (never its verifier).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowView {
    pub id: String,
    pub mode: Mode,
    #[serde(flatten)]
    pub status: Status,
    /// Browser: the URL to open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
    /// Browser: where the issuer sends the browser back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// Browser: whether this gateway listens for that callback (else paste it back).
    pub listening: bool,
    /// Device: where to type the code, and the code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_code: Option<String>,
    pub expires_at: u64,
}

struct Flow {
    view: FlowView,
    /// Browser flows: the secrets the callback must match.
    state: String,
    verifier: String,
    expires: Instant,
    finished_at: Option<Instant>,
}

pub struct LoginFlows {
    issuer: Issuer,
    callback_port: u16,
    ttl: Duration,
    store: StoreAccount,
    flows: Mutex<HashMap<String, Flow>>,
}

impl LoginFlows {
    pub fn new(issuer: Issuer, callback_port: u16, ttl: Duration, store: StoreAccount) -> Self {
        LoginFlows {
            issuer,
            callback_port,
            ttl,
            store,
            flows: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flow>> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Expires overdue flows and forgets long-finished ones.
    fn sweep(flows: &mut HashMap<String, Flow>) {
        let now = Instant::now();
        for f in flows.values_mut() {
            if !f.view.status.is_final() && now >= f.expires {
                f.view.status = Status::Expired;
                f.finished_at = Some(now);
            }
        }
        flows.retain(|_, f| f.finished_at.is_none_or(|t| now - t < KEEP_FINISHED));
    }

    fn admit(&self, flow: Flow) -> Result<FlowView, LoginError> {
        let mut flows = self.lock();
        Self::sweep(&mut flows);
        let pending = flows.values().filter(|f| !f.view.status.is_final()).count();
        if pending >= MAX_PENDING {
            return Err(LoginError::TooMany);
        }
        let view = flow.view.clone();
        flows.insert(view.id.clone(), flow);
        Ok(view)
    }

    fn new_flow(&self, mode: Mode) -> Flow {
        Flow {
            view: FlowView {
                id: format!("login_{}", pkce::random_token(12)),
                mode,
                status: Status::Pending,
                authorize_url: None,
                redirect_uri: None,
                listening: false,
                verification_url: None,
                user_code: None,
                expires_at: now_unix() + self.ttl.as_secs(),
            },
            state: String::new(),
            verifier: String::new(),
            expires: Instant::now() + self.ttl,
            finished_at: None,
        }
    }

    /// Starts a browser sign-in. With `listen`, a listener on `localhost:<callback port>` takes
    /// the callback while the sign-in is pending; without, the person pastes the final URL back
    /// (`complete`), and the redirect URI still names the port the issuer allows.
    pub fn start_browser(self: &Arc<Self>, listen: bool) -> Result<FlowView, LoginError> {
        let mut flow = self.new_flow(Mode::Browser);
        let pkce = Pkce::generate();
        flow.state = pkce::random_token(32);
        flow.verifier = pkce.verifier;
        let listener = if listen {
            let l = callback::bind(self.callback_port).map_err(|e| LoginError::PortBusy {
                port: self.callback_port,
                reason: e.to_string(),
            })?;
            flow.view.listening = true;
            Some(l)
        } else {
            None
        };
        // Port 0 (tests) means whichever port the listener got.
        let port = match &listener {
            Some(l) => l.local_addr().map_or(self.callback_port, |a| a.port()),
            None if self.callback_port == 0 => crate::config::DEFAULT_OAUTH_CALLBACK_PORT,
            None => self.callback_port,
        };
        let redirect_uri = format!("http://localhost:{port}/auth/callback");
        flow.view.authorize_url = Some(pkce::authorize_url(
            &self.issuer.base,
            &redirect_uri,
            &pkce.challenge,
            &flow.state,
        ));
        flow.view.redirect_uri = Some(redirect_uri);
        let view = self.admit(flow)?;
        if let Some(listener) = listener {
            let me = Arc::clone(self);
            let id = view.id.clone();
            let spawned = std::thread::Builder::new()
                .name("codex-lb-login-callback".into())
                .spawn(move || callback::serve(&me, &id, listener));
            if let Err(e) = spawned {
                self.finish(
                    &view.id,
                    Status::Failed {
                        error: format!("cannot start the callback listener: {e}"),
                    },
                );
                return Err(LoginError::Issuer(e.to_string()));
            }
        }
        Ok(view)
    }

    /// Starts a device-code sign-in: asks the issuer for a code (blocking), then polls for the
    /// person's approval on a thread of its own.
    pub fn start_device(self: &Arc<Self>) -> Result<FlowView, LoginError> {
        let code = self.issuer.device_code().map_err(LoginError::Issuer)?;
        let mut flow = self.new_flow(Mode::Device);
        // A device sign-in lives as long as the issuer's code.
        flow.expires = Instant::now() + code.expires_in;
        flow.view.expires_at = now_unix() + code.expires_in.as_secs();
        flow.view.verification_url = Some(self.issuer.device_verification_url());
        flow.view.user_code = Some(code.user_code.clone());
        let view = self.admit(flow)?;
        let me = Arc::clone(self);
        let id = view.id.clone();
        std::thread::Builder::new()
            .name("codex-lb-login-device".into())
            .spawn(move || me.poll_device(&id, &code))
            .map_err(|e| LoginError::Issuer(format!("cannot start the device poller: {e}")))?;
        Ok(view)
    }

    fn poll_device(&self, id: &str, code: &DeviceCode) {
        loop {
            std::thread::sleep(code.interval);
            match self.status(id) {
                Some(v) if v.status == Status::Pending => {}
                _ => return,
            }
            match self.issuer.device_poll(code) {
                DevicePoll::Pending => {}
                DevicePoll::Failed(error) => {
                    let expired = error.contains("expired");
                    self.finish(
                        id,
                        if expired {
                            Status::Expired
                        } else {
                            Status::Failed { error }
                        },
                    );
                    return;
                }
                DevicePoll::Approved {
                    authorization_code,
                    code_verifier,
                } => {
                    if self.begin_exchange(id).is_err() {
                        return;
                    }
                    let redirect = self.issuer.device_redirect_uri();
                    let result =
                        self.exchange_and_store(&authorization_code, &redirect, &code_verifier);
                    self.finish(id, result);
                    return;
                }
            }
        }
    }

    pub fn status(&self, id: &str) -> Option<FlowView> {
        let mut flows = self.lock();
        Self::sweep(&mut flows);
        flows.get(id).map(|f| f.view.clone())
    }

    pub fn cancel(&self, id: &str) -> Option<FlowView> {
        let view = self.status(id)?;
        if !view.status.is_final() {
            self.finish(id, Status::Cancelled);
        }
        self.status(id)
    }

    /// Ends a flow (a final status is never overwritten).
    fn finish(&self, id: &str, status: Status) {
        let mut flows = self.lock();
        if let Some(f) = flows.get_mut(id) {
            if !f.view.status.is_final() {
                f.view.status = status;
                f.finished_at = Some(Instant::now());
            }
        }
    }

    /// Flow `id`, if it is still pending.
    fn pending<'a>(
        flows: &'a mut HashMap<String, Flow>,
        id: &str,
    ) -> Result<&'a mut Flow, LoginError> {
        Self::sweep(flows);
        let f = flows
            .get_mut(id)
            .ok_or_else(|| LoginError::NotFound(id.to_string()))?;
        if f.view.status != Status::Pending {
            return Err(LoginError::NotPending {
                id: id.to_string(),
                status: f.view.status.name(),
            });
        }
        Ok(f)
    }

    /// Moves a pending flow to `Exchanging`, so one code is exchanged once.
    fn begin_exchange(&self, id: &str) -> Result<(), LoginError> {
        Self::pending(&mut self.lock(), id)?.view.status = Status::Exchanging;
        Ok(())
    }

    fn exchange_and_store(&self, code: &str, redirect_uri: &str, verifier: &str) -> Status {
        let tokens = match self.issuer.exchange_code(code, redirect_uri, verifier) {
            Ok(t) => t,
            Err(error) => return Status::Failed { error },
        };
        match (self.store)(&tokens) {
            Ok((account, created)) => Status::Complete { account, created },
            Err(error) => Status::Failed {
                error: format!("signed in, but the account could not be stored: {error}"),
            },
        }
    }

    /// Completes a browser sign-in from the callback's query (`code`, `state`, or `error`), from
    /// the listener or from a URL the person pasted. Blocking: exchanges the code.
    pub fn complete_query(&self, id: &str, query: &str) -> Result<FlowView, LoginError> {
        let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let (expected_state, verifier, redirect_uri, mode) = {
            let mut flows = self.lock();
            let f = Self::pending(&mut flows, id)?;
            (
                f.state.clone(),
                f.verifier.clone(),
                f.view.redirect_uri.clone().unwrap_or_default(),
                f.view.mode,
            )
        };
        if mode != Mode::Browser {
            return Err(LoginError::BadCallback(
                "device sign-ins complete on their own once approved".into(),
            ));
        }
        // Checked before anything else: a foreign link must not end this sign-in.
        if params.get("state").map(String::as_str) != Some(expected_state.as_str()) {
            return Err(LoginError::StateMismatch);
        }
        if let Some(error) = params.get("error") {
            let detail = params
                .get("error_description")
                .map(|d| format!("{error}: {d}"))
                .unwrap_or_else(|| error.clone());
            self.finish(
                id,
                Status::Failed {
                    error: detail.clone(),
                },
            );
            return Err(LoginError::Denied(detail));
        }
        let code = params
            .get("code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| LoginError::BadCallback("missing code".into()))?
            .clone();
        self.begin_exchange(id)?;
        let status = self.exchange_and_store(&code, &redirect_uri, &verifier);
        self.finish(id, status);
        self.status(id)
            .ok_or_else(|| LoginError::NotFound(id.to_string()))
    }

    /// Completes a browser sign-in from the full callback URL the browser ended on.
    pub fn complete_url(&self, id: &str, callback_url: &str) -> Result<FlowView, LoginError> {
        let url = url::Url::parse(callback_url.trim())
            .map_err(|e| LoginError::BadCallback(format!("not a URL ({e})")))?;
        self.complete_query(id, url.query().unwrap_or_default())
    }

    /// Blocks until the flow ends (or `limit` passes), calling `tick` about five times a second.
    /// `None` when the flow is unknown.
    pub fn wait(
        &self,
        id: &str,
        limit: Duration,
        mut tick: impl FnMut(&FlowView),
    ) -> Option<FlowView> {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.status(id)?;
            if v.status.is_final() || Instant::now() >= deadline {
                return Some(v);
            }
            tick(&v);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
