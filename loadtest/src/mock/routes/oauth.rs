//! `POST /oauth/token` at the mock's origin, which a gateway uses as its OAuth issuer, with a
//! JSON (CLI, codex-lb) or form-encoded body:
//!
//! - `refresh_token` (PROTOCOL.md 5.4); `scope` and `client_id` are ignored. Steps: read the
//!   body -> name the account by its refresh token and count the attempt -> check the grant ->
//!   rotate or refuse (one write lock on the credentials) -> wait the account's latency ->
//!   reply. The rotation comes before the wait on purpose: a gateway that gives up waiting has
//!   still spent its refresh token, the hazard PROTOCOL.md 5.4 warns about ("a transport failure
//!   after dispatch is never replayed"), and a test can show it deterministically.
//! - `authorization_code` (PROTOCOL.md 5.2 step 4, 5.3 step 4): the code must be known, unspent
//!   and unexpired, `client_id` the Codex one, `redirect_uri` the one the code was issued for,
//!   and `code_verifier` hash to its S256 challenge; then the signing-in account gets a new
//!   session (`Credentials::sign_in`). Refusals are 400 `{"error":"invalid_grant"|
//!   "invalid_request","error_description"}`.
//!
//! Other grant types get 400 `unsupported_grant_type`.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::read_body;
use crate::mock::body::MockBody;
use crate::mock::credentials::RefreshRefusal;
use crate::mock::errors;
use crate::mock::reply::no_store_json as reply;
use crate::mock::request::parse_form;
use crate::mock::state::Shared;

pub const TOKEN_PATH: &str = "/oauth/token";
/// What a sign-in grants (PROTOCOL.md 5.1, codex-lb's scope).
const GRANTED_SCOPE: &str = "openid profile email offline_access";

/// The fields of a token request the mock looks at.
#[derive(Debug, Default, PartialEq)]
struct Grant {
    grant_type: Option<String>,
    refresh_token: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    code_verifier: Option<String>,
}

impl Grant {
    fn from_fields(field: impl Fn(&str) -> Option<String>) -> Grant {
        Grant {
            grant_type: field("grant_type"),
            refresh_token: field("refresh_token"),
            code: field("code"),
            redirect_uri: field("redirect_uri"),
            client_id: field("client_id"),
            code_verifier: field("code_verifier"),
        }
    }
}

pub async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<MockBody> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let grant = match read_body(req.into_body()).await {
        Ok(raw) => parse_grant(content_type.as_deref(), &raw),
        Err(msg) => Err(msg),
    };
    let grant = match grant {
        Ok(g) => g,
        Err(msg) => {
            return reply(
                StatusCode::BAD_REQUEST,
                &errors::oauth("invalid_request", &msg),
            )
        }
    };
    let known = grant
        .refresh_token
        .as_deref()
        .and_then(|t| shared.credentials().lookup_refresh(t));
    if let Some((account, _)) = known {
        shared.stats.refresh_call(shared.account_id(account));
    }
    let (status, body) = outcome(shared, &grant);
    if let Some((_, ms)) = known.filter(|(_, ms)| *ms > 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    reply(status, &body)
}

fn outcome(shared: &Shared, grant: &Grant) -> (StatusCode, Value) {
    match grant.grant_type.as_deref() {
        Some("refresh_token") => {}
        Some("authorization_code") => return exchange_code(shared, grant),
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                errors::oauth(
                    "unsupported_grant_type",
                    &format!(
                        "Unsupported grant_type {other:?}: the mock implements refresh_token and authorization_code."
                    ),
                ),
            )
        }
        None => {
            return (
                StatusCode::BAD_REQUEST,
                errors::oauth("invalid_request", "Missing grant_type."),
            )
        }
    }
    let Some(token) = grant.refresh_token.as_deref().filter(|t| !t.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            errors::oauth("invalid_request", "Missing refresh_token."),
        );
    };
    let attempt = shared.credentials_mut().refresh(token, shared.clock.now());
    match attempt {
        None => (
            StatusCode::UNAUTHORIZED,
            errors::oauth("invalid_grant", "The refresh token is invalid or unknown."),
        ),
        Some(Ok((t, expires_in))) => (
            StatusCode::OK,
            json!({
                "id_token": t.id_token,
                "access_token": t.access_token,
                "refresh_token": t.refresh_token,
                "token_type": "Bearer",
                "expires_in": expires_in,
            }),
        ),
        Some(Err(RefreshRefusal::Injected)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            errors::refresh_refused(RefreshRefusal::Injected),
        ),
        Some(Err(why)) => (StatusCode::UNAUTHORIZED, errors::refresh_refused(why)),
    }
}

/// The authorization-code grant: check the code (one lock on the sign-ins), then mint the new
/// session (one write lock on the credentials; never both at once).
fn exchange_code(shared: &Shared, grant: &Grant) -> (StatusCode, Value) {
    let checked = shared.logins().exchange(
        grant.code.as_deref(),
        grant.client_id.as_deref(),
        grant.redirect_uri.as_deref(),
        grant.code_verifier.as_deref(),
        shared.clock.now(),
    );
    let account = match checked {
        Ok(a) => a,
        Err(why) => {
            return (
                StatusCode::BAD_REQUEST,
                errors::oauth(why.error(), why.description()),
            )
        }
    };
    let (t, expires_in) = shared
        .credentials_mut()
        .sign_in(account, shared.clock.now());
    (
        StatusCode::OK,
        json!({
            "id_token": t.id_token,
            "access_token": t.access_token,
            "refresh_token": t.refresh_token,
            "expires_in": expires_in,
            "token_type": "Bearer",
            "scope": GRANTED_SCOPE,
        }),
    )
}

/// JSON when the content type says so, form-encoded when it says so; without a usable content
/// type, a body opening with `{` is JSON and anything else a form, as clients do send either.
fn parse_grant(content_type: Option<&str>, body: &[u8]) -> Result<Grant, String> {
    let json = match content_type {
        Some(ct) if ct.contains("json") => true,
        Some(ct) if ct.contains("x-www-form-urlencoded") => false,
        _ => body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
    };
    if json {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| format!("The token request body is not valid JSON: {e}"))?;
        if !v.is_object() {
            return Err("The token request body must be a JSON object.".into());
        }
        Ok(Grant::from_fields(|k| {
            v.get(k).and_then(Value::as_str).map(str::to_string)
        }))
    } else {
        let form = parse_form(body);
        Ok(Grant::from_fields(|k| {
            form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(g: &str, rt: &str) -> Grant {
        Grant {
            grant_type: Some(g.into()),
            refresh_token: Some(rt.into()),
            client_id: Some("app_x".into()),
            ..Grant::default()
        }
    }

    #[test]
    fn reads_json_and_form_bodies() {
        let json_body = br#"{"client_id":"app_x","grant_type":"refresh_token","refresh_token":"rt_1","scope":"openid profile email"}"#;
        let form_body =
            b"client_id=app_x&grant_type=refresh_token&refresh_token=rt_1&scope=openid+profile";
        assert_eq!(
            parse_grant(Some("application/json"), json_body),
            Ok(grant("refresh_token", "rt_1"))
        );
        assert_eq!(
            parse_grant(Some("application/x-www-form-urlencoded"), form_body),
            Ok(grant("refresh_token", "rt_1"))
        );
        // sniffed without a content type
        assert_eq!(
            parse_grant(None, json_body),
            Ok(grant("refresh_token", "rt_1"))
        );
        assert_eq!(
            parse_grant(None, form_body),
            Ok(grant("refresh_token", "rt_1"))
        );
        assert!(parse_grant(Some("application/json"), b"{not json").is_err());
        assert!(parse_grant(Some("application/json"), b"[1]").is_err());
        assert_eq!(
            parse_grant(Some("application/json"), br#"{"grant_type":1}"#),
            Ok(Grant::default())
        );
    }

    #[test]
    fn reads_authorization_code_fields() {
        let form = b"grant_type=authorization_code&code=ac_1&redirect_uri=http%3A%2F%2Flocalhost%3A1455%2Fauth%2Fcallback&client_id=app_EMoamEEZ73f0CkXaXp7hrann&code_verifier=v-1";
        let want = Grant {
            grant_type: Some("authorization_code".into()),
            code: Some("ac_1".into()),
            redirect_uri: Some("http://localhost:1455/auth/callback".into()),
            client_id: Some("app_EMoamEEZ73f0CkXaXp7hrann".into()),
            code_verifier: Some("v-1".into()),
            ..Grant::default()
        };
        assert_eq!(parse_grant(None, form).as_ref(), Ok(&want));
        let json_body = br#"{"grant_type":"authorization_code","code":"ac_1","redirect_uri":"http://localhost:1455/auth/callback","client_id":"app_EMoamEEZ73f0CkXaXp7hrann","code_verifier":"v-1"}"#;
        assert_eq!(parse_grant(Some("application/json"), json_body), Ok(want));
    }
}
