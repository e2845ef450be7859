//! `/api/accounts/login…`: sign-ins driven over the admin API (the dashboard and `accounts login`
//! against a running gateway). start → status → complete (paste the callback URL) or cancel.
//!
//! Starting and completing may wait on the issuer, so they run on a short-lived thread of their
//! own and the worker polls for the answer, as it does for the control thread.

use std::sync::Arc;

use crossbeam_channel::bounded;
use serde::Deserialize;
use serde_json::{json, Value};

use super::await_reply;
use crate::http::error_body::ApiError;
use crate::login::{LoginError, LoginFlows};
use crate::worker::Worker;

pub const START_PATH: &str = "/api/accounts/login";
const FLOW_PREFIX: &str = "/api/accounts/login/";

/// The sign-in routes; `None` when `path` is not one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRoute {
    Start,
    Status,
    Complete,
    Cancel,
}

impl LoginRoute {
    /// `Some(Err)` is a sign-in path with the wrong method.
    pub fn parse(method: &str, path: &str) -> Option<Result<LoginRoute, ()>> {
        if path == START_PATH {
            return Some(if method == "POST" {
                Ok(LoginRoute::Start)
            } else {
                Err(())
            });
        }
        let rest = path.strip_prefix(FLOW_PREFIX)?;
        let r = match (method, rest.split_once('/')) {
            ("GET", None) => LoginRoute::Status,
            ("DELETE", None) => LoginRoute::Cancel,
            ("POST", Some((_, "complete"))) => LoginRoute::Complete,
            (_, None) | (_, Some((_, "complete"))) => return Some(Err(())),
            _ => return None,
        };
        Some(Ok(r))
    }
}

fn flow_id(path: &str) -> &str {
    let rest = path.strip_prefix(FLOW_PREFIX).unwrap_or_default();
    rest.split_once('/').map_or(rest, |(id, _)| id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    #[serde(default)]
    mode: Option<String>,
    /// Browser sign-ins: listen for the callback on the callback port (default), or not (the
    /// person pastes the final URL back).
    #[serde(default)]
    listen: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    callback_url: String,
}

fn login_error(e: LoginError) -> ApiError {
    let kind = match e.status() {
        502 => "server_error",
        _ => "invalid_request_error",
    };
    ApiError::new(e.status(), kind, e.code(), e.to_string())
}

fn unanswered() -> ApiError {
    ApiError::new(
        504,
        "server_error",
        "login_timeout",
        "the sign-in did not answer in time; read its status again",
    )
}

/// Runs a blocking sign-in step off the worker and waits for it without blocking.
async fn off_core<T: Send + 'static>(
    flows: &Arc<LoginFlows>,
    f: impl FnOnce(&Arc<LoginFlows>) -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = bounded(1);
    let flows = Arc::clone(flows);
    std::thread::Builder::new()
        .name("codex-lb-login".into())
        .spawn(move || {
            let _ = tx.send(f(&flows));
        })
        .ok()?;
    await_reply(rx).await
}

pub async fn answer(
    w: &Worker,
    route: LoginRoute,
    path: &str,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    let flows = &w.shared.login;
    let invalid = |msg: String| ApiError::invalid_request("invalid_json", msg);
    let id = flow_id(path).to_string();
    let view = match route {
        LoginRoute::Start => {
            let start: StartBody = if body.is_empty() {
                StartBody {
                    mode: None,
                    listen: None,
                }
            } else {
                serde_json::from_slice(body).map_err(|e| {
                    invalid(format!(
                        "expected {{\"mode\": \"browser\"|\"device\", \"listen\": bool}}: {e}"
                    ))
                })?
            };
            let listen = start.listen.unwrap_or(true);
            let res = match start.mode.as_deref().unwrap_or("browser") {
                "browser" => off_core(flows, move |f| f.start_browser(listen)).await,
                "device" => off_core(flows, |f| f.start_device()).await,
                other => {
                    return Err(ApiError::invalid_request(
                        "invalid_value",
                        format!("mode {other:?}: expected \"browser\" or \"device\""),
                    )
                    .with_param("mode"))
                }
            };
            let view = res.ok_or_else(unanswered)?.map_err(login_error)?;
            return Ok((201, json!(view)));
        }
        LoginRoute::Status => flows
            .status(&id)
            .ok_or_else(|| login_error(LoginError::NotFound(id.clone())))?,
        LoginRoute::Cancel => flows
            .cancel(&id)
            .ok_or_else(|| login_error(LoginError::NotFound(id.clone())))?,
        LoginRoute::Complete => {
            let c: CompleteBody = serde_json::from_slice(body)
                .map_err(|e| invalid(format!("expected {{\"callback_url\": \"...\"}}: {e}")))?;
            off_core(flows, move |f| f.complete_url(&id, &c.callback_url))
                .await
                .ok_or_else(unanswered)?
                .map_err(login_error)?
        }
    };
    Ok((200, json!(view)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            LoginRoute::parse("POST", "/api/accounts/login"),
            Some(Ok(LoginRoute::Start))
        );
        assert_eq!(
            LoginRoute::parse("GET", "/api/accounts/login"),
            Some(Err(()))
        );
        assert_eq!(
            LoginRoute::parse("GET", "/api/accounts/login/login_x"),
            Some(Ok(LoginRoute::Status))
        );
        assert_eq!(
            LoginRoute::parse("DELETE", "/api/accounts/login/login_x"),
            Some(Ok(LoginRoute::Cancel))
        );
        assert_eq!(
            LoginRoute::parse("POST", "/api/accounts/login/login_x/complete"),
            Some(Ok(LoginRoute::Complete))
        );
        assert_eq!(
            LoginRoute::parse("GET", "/api/accounts/login/login_x/complete"),
            Some(Err(()))
        );
        assert_eq!(LoginRoute::parse("GET", "/api/accounts/acc_1"), None);
        assert_eq!(flow_id("/api/accounts/login/login_x/complete"), "login_x");
    }
}
