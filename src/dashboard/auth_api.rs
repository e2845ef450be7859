//! `/api/dashboard-auth/...`: the session, login and logout, the admin and viewer passwords, and
//! TOTP enrolment. The checks that need hashing run on the auth thread (`auth::service`).

use bytes::Bytes;
use crossbeam_channel::bounded;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::service::{NewSession, Setter, MAX_PASSWORD_BYTES};
use super::auth::{AuthError, AuthJob, AuthOutcome, Caller, Need};
use super::{await_reply, busy};
use crate::http::error_body::ApiError;
use crate::http::request::RequestHead;
use crate::http::response::full_response;
use crate::proxy::client::ClientConn;
use crate::proxy::send;
use crate::worker::Worker;

const PREFIX: &str = "/api/dashboard-auth/";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRoute {
    Session,
    Login,
    Logout,
    SetPassword,
    RemovePassword,
    SetViewerPassword,
    RemoveViewerPassword,
    TotpSetup,
    TotpConfirm,
    TotpDisable,
}

impl AuthRoute {
    /// `Some(Err)` is one of these paths with the wrong method.
    pub fn parse(method: &str, path: &str) -> Option<Result<AuthRoute, ()>> {
        let rest = path.strip_prefix(PREFIX)?;
        let r = match (method, rest) {
            ("GET", "session") => AuthRoute::Session,
            ("POST", "login") => AuthRoute::Login,
            ("POST", "logout") => AuthRoute::Logout,
            ("POST", "password") => AuthRoute::SetPassword,
            ("DELETE", "password") => AuthRoute::RemovePassword,
            ("PUT", "viewer-password") => AuthRoute::SetViewerPassword,
            ("DELETE", "viewer-password") => AuthRoute::RemoveViewerPassword,
            ("POST", "totp/setup") => AuthRoute::TotpSetup,
            ("POST", "totp/confirm") => AuthRoute::TotpConfirm,
            ("POST", "totp/disable") => AuthRoute::TotpDisable,
            (
                _,
                "session" | "login" | "logout" | "password" | "viewer-password" | "totp/setup"
                | "totp/confirm" | "totp/disable",
            ) => return Some(Err(())),
            _ => return None,
        };
        Some(Ok(r))
    }

    /// What the caller needs; `None`: anyone may call (the route checks what it must).
    pub fn need(self) -> Option<Need> {
        match self {
            AuthRoute::Session | AuthRoute::Login | AuthRoute::Logout | AuthRoute::SetPassword => {
                None
            }
            _ => Some(Need::Write),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    password: String,
    #[serde(default)]
    totp_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    new_password: String,
    #[serde(default)]
    current_password: Option<String>,
    #[serde(default)]
    bootstrap_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CurrentBody {
    current_password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewerBody {
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: String,
}

/// One answer: status, body, and the cookie to set, if any.
struct Answer {
    status: u16,
    body: Value,
    cookie: Option<String>,
}

impl Answer {
    fn ok(body: Value) -> Answer {
        Answer {
            status: 200,
            body,
            cookie: None,
        }
    }
}

pub async fn handle(
    w: &Worker,
    client: &mut ClientConn,
    head: &RequestHead,
    route: AuthRoute,
    caller: &Caller,
    body: &[u8],
    keep_alive: bool,
) -> (bool, u16, Option<String>) {
    match answer(w, client, head, route, caller, body).await {
        Ok(a) => {
            let bytes = serde_json::to_vec(&a.body).unwrap_or_default();
            let mut headers: Vec<(&str, &[u8])> = vec![("cache-control", b"no-store")];
            if let Some(c) = &a.cookie {
                headers.push(("set-cookie", c.as_bytes()));
            }
            let out = full_response(a.status, "application/json", &headers, &bytes, keep_alive);
            (
                send(w, client, Bytes::from(out), keep_alive).await,
                a.status,
                None,
            )
        }
        Err(e) => {
            let retry = match &e {
                Failure::Auth(AuthError::Throttled(s)) => Some(s.to_string()),
                _ => None,
            };
            let err = e.into_api();
            if err.status < 500 {
                crate::metrics::inc(&w.metrics.client_errors);
            }
            let mut headers: Vec<(&str, &[u8])> = Vec::new();
            if let Some(r) = &retry {
                headers.push(("retry-after", r.as_bytes()));
            }
            let out = full_response(
                err.status,
                "application/json",
                &headers,
                &err.to_json(),
                keep_alive,
            );
            let open = send(w, client, Bytes::from(out), keep_alive).await;
            (open, err.status, err.code)
        }
    }
}

enum Failure {
    Api(ApiError),
    Auth(AuthError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

impl Failure {
    fn into_api(self) -> ApiError {
        match self {
            Failure::Api(e) => e,
            Failure::Auth(e) => auth_error(e),
        }
    }
}

pub fn auth_error(e: AuthError) -> ApiError {
    let (status, kind, code) = match &e {
        AuthError::InvalidCredentials => (401, "authentication_error", "invalid_credentials"),
        AuthError::TotpRequired => (401, "authentication_error", "totp_required"),
        AuthError::InvalidTotp => (401, "authentication_error", "invalid_totp"),
        AuthError::Throttled(_) => (429, "rate_limit_error", "login_throttled"),
        AuthError::BootstrapRequired => (401, "authentication_error", "bootstrap_required"),
        AuthError::InvalidBootstrap => (401, "authentication_error", "invalid_bootstrap_token"),
        AuthError::BadPassword => (400, "invalid_request_error", "invalid_password"),
        AuthError::NoPassword => (409, "invalid_request_error", "no_password_set"),
        AuthError::TotpNotEnrolled => (409, "invalid_request_error", "totp_not_enrolled"),
        AuthError::NoPendingTotp => (409, "invalid_request_error", "totp_setup_not_started"),
        AuthError::Store(_) => (500, "server_error", "store_error"),
    };
    ApiError::new(status, kind, code, e.to_string())
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], expected: &str) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::Api(ApiError::invalid_request(
            "invalid_json",
            format!("expected {expected}: {e}"),
        ))
    })
}

/// Runs a job on the auth thread and waits for its outcome.
async fn run(
    w: &Worker,
    make: impl FnOnce(super::auth::service::AuthReply) -> AuthJob,
) -> Result<AuthOutcome, Failure> {
    let (tx, rx) = bounded(1);
    if !w.shared.admin_auth.submit(make(tx)) {
        return Err(Failure::Api(busy()));
    }
    match await_reply(rx).await {
        Some(r) => r.map_err(Failure::Auth),
        None => Err(Failure::Api(busy())),
    }
}

/// The session as the dashboard sees it (`GET /session` and after a login).
fn session_json(w: &Worker, caller: &Caller, peer_loopback: bool) -> Value {
    let auth = &w.shared.admin_auth;
    let flags = auth.flags();
    let (expires_at, role) = match caller {
        Caller::Session { session, .. } => (Some(session.expires_at), caller.role()),
        _ => (None, caller.role()),
    };
    json!({
        "authenticated": role.is_some(),
        "role": role,
        "open": *caller == Caller::Open,
        "password_set": flags.password_set,
        "viewer_password_set": flags.viewer_password_set,
        "totp_enabled": flags.totp_enabled,
        "bootstrap_required": !flags.password_set && !peer_loopback,
        "csrf_token": auth.csrf_for(caller),
        "expires_at": expires_at,
    })
}

fn session_answer(w: &Worker, new: NewSession, peer_loopback: bool) -> Answer {
    let auth = &w.shared.admin_auth;
    let cookie = auth.session_cookie(&new.token);
    let caller = Caller::Session {
        hash: super::auth::sha256(new.token.as_bytes()),
        session: new.session,
    };
    Answer {
        status: 200,
        body: session_json(w, &caller, peer_loopback),
        cookie: Some(cookie),
    }
}

fn session_of(o: AuthOutcome) -> Result<NewSession, Failure> {
    match o {
        AuthOutcome::Session(s) => Ok(s),
        _ => Err(Failure::Api(ApiError::new(
            500,
            "server_error",
            "auth_error",
            "unexpected answer from the auth thread",
        ))),
    }
}

async fn answer(
    w: &Worker,
    client: &ClientConn,
    head: &RequestHead,
    route: AuthRoute,
    caller: &Caller,
    body: &[u8],
) -> Result<Answer, Failure> {
    let auth = &w.shared.admin_auth;
    let addr = client.origin.ip;
    let loopback = crate::access::from_this_machine(client.peer, head);
    if let Some(need) = route.need() {
        auth.check(caller, head, need)?;
    }
    match route {
        AuthRoute::Session => Ok(Answer::ok(session_json(w, caller, loopback))),
        AuthRoute::Login => {
            let b: LoginBody = parse(body, r#"{"password", "totp_code"?}"#)?;
            if b.password.len() > MAX_PASSWORD_BYTES {
                return Err(Failure::Auth(AuthError::InvalidCredentials));
            }
            run(w, |reply| AuthJob::Login {
                password: b.password,
                totp_code: b.totp_code,
                addr,
                reply,
            })
            .await
            .and_then(session_of)
            .map(|s| session_answer(w, s, loopback))
        }
        AuthRoute::Logout => {
            if let Caller::Session { hash, .. } = caller {
                auth.drop_session(hash);
                // The stored copy goes too; if the queue is full it expires on its own.
                let _ = auth.submit(AuthJob::Logout { hash: *hash });
            }
            Ok(Answer {
                status: 200,
                body: json!({}),
                cookie: Some(auth.clear_cookie()),
            })
        }
        AuthRoute::SetPassword => {
            let b: PasswordBody = parse(
                body,
                r#"{"new_password", "current_password"?, "bootstrap_token"?}"#,
            )?;
            let setter = match caller {
                Caller::Anonymous { bootstrap: true } => Setter::Remote,
                Caller::Anonymous { bootstrap: false } => {
                    return Err(Failure::Api(super::auth::authentication_required()))
                }
                c => {
                    auth.check(c, head, Need::Write)?;
                    Setter::Admin
                }
            };
            run(w, |reply| AuthJob::SetPassword {
                new_password: b.new_password,
                current_password: b.current_password,
                bootstrap_token: b.bootstrap_token,
                setter,
                addr,
                reply,
            })
            .await
            .and_then(session_of)
            .map(|s| session_answer(w, s, loopback))
        }
        AuthRoute::RemovePassword => {
            let b: CurrentBody = parse(body, r#"{"current_password"}"#)?;
            run(w, |reply| AuthJob::RemovePassword {
                current_password: b.current_password,
                addr,
                reply,
            })
            .await?;
            Ok(Answer {
                cookie: Some(auth.clear_cookie()),
                ..Answer::ok(json!({"password_set": false}))
            })
        }
        AuthRoute::SetViewerPassword => {
            let b: ViewerBody = parse(body, r#"{"password"}"#)?;
            run(w, |reply| AuthJob::SetViewerPassword {
                password: Some(b.password),
                reply,
            })
            .await?;
            Ok(Answer::ok(json!({"viewer_password_set": true})))
        }
        AuthRoute::RemoveViewerPassword => {
            run(w, |reply| AuthJob::SetViewerPassword {
                password: None,
                reply,
            })
            .await?;
            Ok(Answer::ok(json!({"viewer_password_set": false})))
        }
        AuthRoute::TotpSetup => match run(w, |reply| AuthJob::TotpStart { reply }).await? {
            AuthOutcome::Totp(e) => Ok(Answer::ok(json!({
                "secret": e.secret_base32,
                "otpauth_uri": e.uri,
                "qr_svg": e.qr_svg,
            }))),
            other => session_of(other).map(|_| Answer::ok(json!({}))),
        },
        AuthRoute::TotpConfirm => {
            let b: CodeBody = parse(body, r#"{"code"}"#)?;
            run(w, |reply| AuthJob::TotpConfirm {
                code: b.code,
                reply,
            })
            .await?;
            Ok(Answer::ok(json!({"totp_enabled": true})))
        }
        AuthRoute::TotpDisable => {
            let b: CodeBody = parse(body, r#"{"code"}"#)?;
            run(w, |reply| AuthJob::TotpDisable {
                code: b.code,
                reply,
            })
            .await?;
            Ok(Answer::ok(json!({"totp_enabled": false})))
        }
    }
}
