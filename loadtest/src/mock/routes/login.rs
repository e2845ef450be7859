//! The issuer's sign-in pages and device-login API (PROTOCOL.md 5.2, 5.3, 9 item 4), at the
//! mock's origin like `/oauth/token`:
//!
//! - `GET /oauth/authorize`: checks the client, PKCE and loopback `redirect_uri`, then
//!   auto-approves: `302` to `{redirect_uri}?code=…&state=…` for the login account (or the
//!   seeded account whose e-mail `login_hint` names), or to `?error=…&error_description=…&state=…`
//!   when a denial is armed. Bad parameters get `400 {"error","error_description"}` and no
//!   redirect, as RFC 6749 section 4.1.2.1 requires for a bad client or redirect URI.
//! - `POST /api/accounts/deviceauth/usercode` and `…/token`: start a device login, then poll it
//!   (pending `403`s, then the code triple). Errors use `{"error":{"code","message"}}`.
//! - `GET /codex/device`: the page a user would type the code into.
//!
//! Sign-in replies carry no backend headers and are never cached.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::read_body;
use crate::mock::body::MockBody;
use crate::mock::errors;
use crate::mock::jwt::{email, CLIENT_ID};
use crate::mock::logins::{is_pkce_value, Authorized, DevicePoll};
use crate::mock::reply::no_store_json;
use crate::mock::request::{parse_form, percent_encode};
use crate::mock::state::Shared;

pub const AUTHORIZE_PATH: &str = "/oauth/authorize";
pub const USERCODE_PATH: &str = "/api/accounts/deviceauth/usercode";
pub const DEVICE_TOKEN_PATH: &str = "/api/accounts/deviceauth/token";
pub const DEVICE_PAGE_PATH: &str = "/codex/device";

/// Hosts a native client's redirect may point at (RFC 8252 section 7.3 loopback redirects).
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// The authorize parameters that decide the outcome, once checked.
#[derive(Debug, PartialEq, Eq)]
struct AuthorizeReq {
    redirect_uri: String,
    challenge: String,
    state: String,
    login_hint: Option<String>,
}

pub fn authorize(shared: &Shared, req: &Request<Incoming>) -> Response<MockBody> {
    let query = req.uri().query().unwrap_or("");
    let checked = match check_authorize(query) {
        Ok(a) => a,
        Err((error, description)) => {
            shared.logins().authorize_rejected();
            return no_store_json(StatusCode::BAD_REQUEST, &errors::oauth(error, &description));
        }
    };
    let hinted = checked.login_hint.as_deref().and_then(|hint| {
        (0..shared.accounts.len()).find(|&i| email(i).eq_ignore_ascii_case(hint.trim()))
    });
    let outcome = shared.logins().authorize(
        hinted,
        &checked.redirect_uri,
        &checked.challenge,
        shared.clock.now(),
    );
    let params = match &outcome {
        Authorized::Code(code) => vec![("code", code.as_str()), ("state", &checked.state)],
        Authorized::Denied { error, description } => vec![
            ("error", error.as_str()),
            ("error_description", description.as_str()),
            ("state", &checked.state),
        ],
    };
    redirect(&with_query(&checked.redirect_uri, &params))
}

/// Upstream's checks on an authorize request; `Err` is (OAuth error code, description).
fn check_authorize(query: &str) -> Result<AuthorizeReq, (&'static str, String)> {
    let form = parse_form(query.as_bytes());
    let param = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let invalid = |msg: &str| ("invalid_request", msg.to_string());
    match param("client_id") {
        Some(CLIENT_ID) => {}
        Some(other) => return Err(("invalid_client", format!("Unknown client_id {other:?}."))),
        None => return Err(invalid("Missing client_id.")),
    }
    let redirect_uri = param("redirect_uri").ok_or_else(|| invalid("Missing redirect_uri."))?;
    check_loopback_redirect(redirect_uri).map_err(|m| invalid(&m))?;
    match param("response_type") {
        Some("code") => {}
        Some(other) => {
            return Err((
                "unsupported_response_type",
                format!("Unsupported response_type {other:?}: only \"code\" is supported."),
            ))
        }
        None => return Err(invalid("Missing response_type.")),
    }
    let challenge = param("code_challenge").ok_or_else(|| invalid("Missing code_challenge."))?;
    if !is_pkce_value(challenge) {
        return Err(invalid(
            "The code_challenge must be 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636).",
        ));
    }
    if param("code_challenge_method") != Some("S256") {
        return Err(invalid("code_challenge_method must be S256."));
    }
    let state = param("state").ok_or_else(|| invalid("Missing state."))?;
    Ok(AuthorizeReq {
        redirect_uri: redirect_uri.to_string(),
        challenge: challenge.to_string(),
        state: state.to_string(),
        login_hint: param("login_hint").map(str::to_string),
    })
}

/// `http://localhost[:port]/path[?query]` (or 127.0.0.1, [::1]): what the CLI and codex-lb
/// register. No userinfo, no fragment (RFC 6749 section 3.1.2), and only visible ASCII, so the
/// `Location` built from it is always a valid header.
fn check_loopback_redirect(uri: &str) -> Result<(), String> {
    let bad = |why: &str| format!("Invalid redirect_uri {uri:?}: {why}.");
    if !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("not a URL"));
    }
    let rest = uri
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .map(|_| &uri[7..])
        .ok_or_else(|| bad("must be an http:// loopback URL"))?;
    if uri.contains('#') {
        return Err(bad("must not have a fragment"));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(bad("must not carry user info"));
    }
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    if !LOOPBACK_HOSTS.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return Err(bad("the host must be localhost, 127.0.0.1 or [::1]"));
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad("bad port"));
        }
    }
    Ok(())
}

/// `base` with `params` appended to its query (a `?` or `&` as needed), values
/// percent-encoded.
fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    let sep = match base.find('?') {
        None => "?",
        Some(_) if base.ends_with('?') || base.ends_with('&') => "",
        Some(_) => "&",
    };
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    format!("{base}{sep}{}", query.join("&"))
}

fn redirect(location: &str) -> Response<MockBody> {
    let Ok(value) = HeaderValue::try_from(location) else {
        // Unreachable after `check_loopback_redirect`; still no panic on client bytes.
        return no_store_json(
            StatusCode::BAD_REQUEST,
            &errors::oauth("invalid_request", "The redirect_uri is not a valid URL."),
        );
    };
    let mut r = Response::new(MockBody::full(Bytes::new()));
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut().insert(LOCATION, value);
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /api/accounts/deviceauth/usercode` `{"client_id"}`.
pub async fn usercode(shared: &Shared, req: Request<Incoming>) -> Response<MockBody> {
    let body = match json_body(req).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    match body.get("client_id").and_then(Value::as_str) {
        Some(CLIENT_ID) => {}
        other => {
            let msg = match other {
                Some(id) => format!("Unknown client_id {id:?}."),
                None => "Missing client_id.".to_string(),
            };
            return device_error(StatusCode::BAD_REQUEST, "invalid_client", &msg);
        }
    }
    let Some(d) = shared.logins().start_device(shared.clock.now()) else {
        // PROTOCOL.md 5.3: 404 means device login is unavailable.
        return device_error(
            StatusCode::NOT_FOUND,
            "deviceauth_disabled",
            "Device login is not available: the mock has no seeded account.",
        );
    };
    no_store_json(
        StatusCode::OK,
        &json!({
            "device_auth_id": d.device_auth_id,
            "user_code": d.user_code,
            // a string: the CLI's parser wants one (PROTOCOL.md 5.3)
            "interval": d.interval_secs.to_string(),
            "expires_in": d.expires_in_secs,
        }),
    )
}

/// `POST /api/accounts/deviceauth/token` `{"device_auth_id","user_code"}` (`usercode` also
/// accepted, the spelling PROTOCOL.md 5.3 allows for the usercode reply).
pub async fn device_token(shared: &Shared, req: Request<Incoming>) -> Response<MockBody> {
    let body = match json_body(req).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    let user_code = match field("user_code") {
        "" => field("usercode"),
        c => c,
    };
    let redirect_uri = shared.device_redirect_uri();
    let poll = shared.logins().poll_device(
        field("device_auth_id"),
        user_code,
        &redirect_uri,
        shared.clock.now(),
    );
    match poll {
        DevicePoll::Unknown => device_error(
            StatusCode::NOT_FOUND,
            "deviceauth_not_found",
            "Unknown device_auth_id, or the user_code does not belong to it.",
        ),
        DevicePoll::Expired => device_error(
            StatusCode::BAD_REQUEST,
            "deviceauth_expired",
            "The device code has expired. Please start the login again.",
        ),
        DevicePoll::Pending => device_error(
            StatusCode::FORBIDDEN,
            "deviceauth_authorization_pending",
            "The user has not yet entered and approved the code.",
        ),
        DevicePoll::Approved(g) => no_store_json(
            StatusCode::OK,
            &json!({
                "authorization_code": g.authorization_code,
                "code_challenge": g.code_challenge,
                "code_verifier": g.code_verifier,
            }),
        ),
    }
}

/// A JSON-object request body, or the 400 reply for one that is not.
async fn json_body(req: Request<Incoming>) -> Result<Value, Response<MockBody>> {
    let raw = read_body(req.into_body())
        .await
        .map_err(|msg| device_error(StatusCode::BAD_REQUEST, "invalid_request", &msg))?;
    match serde_json::from_slice::<Value>(&raw) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(device_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request body must be a JSON object.",
        )),
    }
}

fn device_error(status: StatusCode, code: &str, message: &str) -> Response<MockBody> {
    no_store_json(status, &errors::device(code, message))
}

/// `GET /codex/device`: where a user would type the code. The mock approves by itself after
/// the configured pending polls, so the page only explains that.
pub fn device_page() -> Response<MockBody> {
    const PAGE: &str = "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
        <title>Sign in to Codex with a code</title></head>\n<body>\n\
        <h1>Sign in to Codex</h1>\n\
        <p>Enter the code shown in your terminal (it looks like <code>ABCD-1234</code>) to \
        approve the device login.</p>\n\
        <p>This is the codex-lb mock upstream: it approves every device login by itself after \
        the configured number of pending polls, so there is nothing to type here.</p>\n\
        </body>\n</html>\n";
    let mut r = Response::new(MockBody::full(Bytes::from_static(PAGE.as_bytes())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::testing::{call, Reply};
    use crate::mock::{MockConfig, MockUpstream, OAuthStats, SeedAccount};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    /// RFC 7636 appendix B's verifier and its S256 challenge.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const REDIRECT: &str = "http://localhost:1455/auth/callback";
    const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
    const JSON: (&str, &str) = ("content-type", "application/json");

    fn mock() -> MockUpstream {
        MockUpstream::start(MockConfig::default()).expect("mock starts")
    }

    fn get_authorize(m: &MockUpstream, overrides: &[(&str, Option<&str>)]) -> Reply {
        let path = format!("{AUTHORIZE_PATH}?{}", query(overrides));
        call(m.addr(), "GET", &path, &[], b"")
    }

    /// The query of a redirect's `Location`, decoded.
    fn location_params(r: &Reply) -> Vec<(String, String)> {
        assert_eq!(r.status, 302, "{}", String::from_utf8_lossy(&r.body));
        let loc = r.header("location").expect("a Location");
        let (base, q) = loc.split_once('?').expect("a query");
        assert_eq!(base, REDIRECT);
        parse_form(q.as_bytes())
    }

    fn param<'a>(params: &'a [(String, String)], k: &str) -> Option<&'a str> {
        params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn authorize_code(m: &MockUpstream, overrides: &[(&str, Option<&str>)]) -> String {
        let params = location_params(&get_authorize(m, overrides));
        assert_eq!(param(&params, "state"), Some("st+/="));
        param(&params, "code").expect("a code").to_string()
    }

    fn exchange_form(m: &MockUpstream, code: &str, redirect_uri: &str, verifier: &str) -> Reply {
        let body = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", CLIENT_ID),
            ("code_verifier", verifier),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
        call(m.addr(), "POST", "/oauth/token", &[FORM], body.as_bytes())
    }

    fn post_json(m: &MockUpstream, path: &str, v: Value) -> Reply {
        call(m.addr(), "POST", path, &[JSON], v.to_string().as_bytes())
    }

    fn claims(jwt: &str) -> Value {
        let payload = jwt.split('.').nth(1).expect("three segments");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    /// Status of one `/responses` turn with these tokens.
    fn turn_status(m: &MockUpstream, access_token: &str, account_id: &str) -> u16 {
        let bearer = format!("Bearer {access_token}");
        let body = json!({"model": "gpt-5.5", "input": [], "stream": true, "store": false});
        let headers = [
            ("authorization", bearer.as_str()),
            ("chatgpt-account-id", account_id),
            JSON,
        ];
        let path = "/backend-api/codex/responses";
        call(
            m.addr(),
            "POST",
            path,
            &headers,
            body.to_string().as_bytes(),
        )
        .status
    }

    fn refresh(m: &MockUpstream, refresh_token: &str) -> Reply {
        let body = json!({"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": refresh_token});
        post_json(m, "/oauth/token", body)
    }

    #[test]
    fn authorize_redirect_and_pkce_exchange_start_a_new_session() {
        let m = mock();
        let seeded: SeedAccount = m.accounts()[0].clone();
        let code = authorize_code(&m, &[]);
        assert!(code.starts_with("ac_"), "{code}");

        let r = exchange_form(&m, &code, REDIRECT, VERIFIER);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let v = r.json();
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["scope"], "openid profile email offline_access");
        assert_eq!(v["expires_in"], 3600);
        let access = v["access_token"].as_str().unwrap();
        let refresh_token = v["refresh_token"].as_str().unwrap();
        for jwt in [access, v["id_token"].as_str().unwrap()] {
            let c = claims(jwt);
            assert_eq!(c["email"], "user0@example.com");
            let auth = &c["https://api.openai.com/auth"];
            assert_eq!(
                auth["chatgpt_account_id"],
                seeded.chatgpt_account_id.as_str()
            );
            assert_eq!(auth["chatgpt_plan_type"], "plus");
            assert!(c["exp"].as_u64().unwrap() > c["iat"].as_u64().unwrap());
        }
        assert_ne!(access, seeded.access_token);
        assert_ne!(refresh_token, seeded.refresh_token);
        assert_eq!(m.accounts()[0].refresh_token, refresh_token);

        // the new session works; the replaced one is over
        assert_eq!(turn_status(&m, access, &seeded.chatgpt_account_id), 200);
        assert_eq!(
            turn_status(&m, &seeded.access_token, &seeded.chatgpt_account_id),
            401
        );
        let old = refresh(&m, &seeded.refresh_token);
        assert_eq!(old.status, 401);
        assert_eq!(old.json()["error"]["code"], "refresh_token_invalidated");
        let rotated = refresh(&m, refresh_token);
        assert_eq!(rotated.status, 200);
        let rotated_access = rotated.json()["access_token"].as_str().unwrap().to_string();
        assert_eq!(
            turn_status(&m, &rotated_access, &seeded.chatgpt_account_id),
            200
        );

        // a code is single use
        let again = exchange_form(&m, &code, REDIRECT, VERIFIER);
        assert_eq!(again.status, 400);
        assert_eq!(again.json()["error"], "invalid_grant");
        assert!(again.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("already been used"));

        // a verifier that does not hash to the challenge is refused
        let code = authorize_code(&m, &[]);
        let wrong = exchange_form(&m, &code, REDIRECT, &"w".repeat(43));
        assert_eq!(wrong.status, 400);
        assert_eq!(wrong.json()["error"], "invalid_grant");
        assert!(wrong.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("code_verifier"));

        // as is another redirect URI
        let code = authorize_code(&m, &[]);
        let other = exchange_form(&m, &code, "http://localhost:1457/auth/callback", VERIFIER);
        assert_eq!(other.status, 400);
        assert_eq!(other.json()["error"], "invalid_grant");

        // login_hint picks the account; a JSON token request works too
        let code = authorize_code(&m, &[("login_hint", Some("user1@example.com"))]);
        let r = post_json(
            &m,
            "/oauth/token",
            json!({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                   "client_id": CLIENT_ID, "code_verifier": VERIFIER}),
        );
        assert_eq!(r.status, 200);
        let c = claims(r.json()["access_token"].as_str().unwrap());
        assert_eq!(c["email"], "user1@example.com");
        assert_eq!(m.accounts()[1].access_token, r.json()["access_token"]);

        let s = m.oauth_stats();
        assert_eq!(
            (
                s.authorize_calls,
                s.codes_issued,
                s.code_exchanges,
                s.code_exchanges_ok
            ),
            (4, 4, 5, 2)
        );
        assert_eq!(m.stats().requests_by_route["GET /oauth/authorize"], 4);
        assert_eq!(m.stats().rejected_by_status.get(&302), None);
        m.reset();
        assert_eq!(m.oauth_stats(), OAuthStats::default());
        assert_eq!(m.accounts()[0], seeded);
    }

    #[test]
    fn authorize_refuses_bad_requests_and_honours_knobs() {
        let m = mock();
        let r = get_authorize(&m, &[("client_id", Some("app_other"))]);
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"], "invalid_client");
        assert!(r.header("location").is_none());
        let r = get_authorize(&m, &[("redirect_uri", Some("http://evil.example/cb"))]);
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"], "invalid_request");
        let r = get_authorize(&m, &[("code_challenge_method", Some("plain"))]);
        assert_eq!(r.status, 400);

        m.deny_next_login("access_denied", "missing_codex_entitlement");
        let params = location_params(&get_authorize(&m, &[]));
        assert_eq!(param(&params, "error"), Some("access_denied"));
        assert_eq!(
            param(&params, "error_description"),
            Some("missing_codex_entitlement")
        );
        assert_eq!(param(&params, "state"), Some("st+/="));
        assert_eq!(param(&params, "code"), None);

        // the denial was for one login; the next signs in account 1 as set
        m.set_login_account(1);
        let code = authorize_code(&m, &[]);
        let r = exchange_form(&m, &code, REDIRECT, VERIFIER);
        assert_eq!(
            claims(r.json()["id_token"].as_str().unwrap())["email"],
            "user1@example.com"
        );
        // an unknown hint falls back to the login account
        let code = authorize_code(&m, &[("login_hint", Some("nobody@example.com"))]);
        let r = exchange_form(&m, &code, REDIRECT, VERIFIER);
        assert_eq!(
            claims(r.json()["id_token"].as_str().unwrap())["email"],
            "user1@example.com"
        );

        // codes expire on the mock's clock
        let code = authorize_code(&m, &[]);
        m.advance_clock(crate::mock::CODE_TTL_SECS);
        let r = exchange_form(&m, &code, REDIRECT, VERIFIER);
        assert_eq!(r.status, 400);
        assert!(r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("expired"));

        let s = m.oauth_stats();
        assert_eq!(
            (s.authorize_calls, s.authorize_rejected, s.logins_denied),
            (7, 3, 1)
        );
    }

    #[test]
    fn device_login_pends_then_hands_out_a_code_for_the_callback() {
        let m = mock();
        m.set_login_account(1);
        m.set_device_flow(1, 900, 2);
        let wrong = post_json(&m, USERCODE_PATH, json!({"client_id": "app_other"}));
        assert_eq!(wrong.status, 400);
        let r = post_json(&m, USERCODE_PATH, json!({"client_id": CLIENT_ID}));
        assert_eq!(r.status, 200);
        let d = r.json();
        assert_eq!(d["interval"], "1", "a string");
        assert_eq!(d["expires_in"], 900);
        let id = d["device_auth_id"].as_str().unwrap();
        let user_code = d["user_code"].as_str().unwrap();
        assert!(id.starts_with("dauth_"));
        assert_eq!(user_code.len(), 9);

        let poll = |code: &str| {
            post_json(
                &m,
                DEVICE_TOKEN_PATH,
                json!({"device_auth_id": id, "user_code": code}),
            )
        };
        let unknown = poll("AAAA-0000");
        assert_eq!(unknown.status, 404);
        for _ in 0..2 {
            let r = poll(user_code);
            assert_eq!(r.status, 403);
            assert_eq!(
                r.json()["error"]["code"],
                "deviceauth_authorization_pending"
            );
        }
        let r = poll(user_code);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let g = r.json();
        let verifier = g["code_verifier"].as_str().unwrap();
        assert_eq!(
            g["code_challenge"],
            crate::mock::logins::s256_challenge(verifier)
        );

        let code = g["authorization_code"].as_str().unwrap();
        assert_eq!(
            m.device_redirect_uri(),
            format!("{}/deviceauth/callback", m.issuer_url())
        );
        let t = exchange_form(&m, code, &m.device_redirect_uri(), verifier);
        assert_eq!(t.status, 200, "{}", String::from_utf8_lossy(&t.body));
        let access = t.json()["access_token"].as_str().unwrap().to_string();
        let acct = m.accounts()[1].chatgpt_account_id.clone();
        assert_eq!(claims(&access)["email"], "user1@example.com");
        assert_eq!(turn_status(&m, &access, &acct), 200);

        let s = m.oauth_stats();
        assert_eq!(
            (
                s.device_codes,
                s.device_polls,
                s.device_pending,
                s.device_approvals
            ),
            (1, 4, 2, 1)
        );
        assert_eq!(s.code_exchanges_ok, 1);
    }

    #[test]
    fn device_logins_expire_by_clock_or_on_demand() {
        let m = mock();
        m.set_device_flow(1, 30, 5);
        let start = || post_json(&m, USERCODE_PATH, json!({"client_id": CLIENT_ID})).json();
        let poll = |d: &Value| {
            post_json(
                &m,
                DEVICE_TOKEN_PATH,
                json!({"device_auth_id": d["device_auth_id"], "user_code": d["user_code"]}),
            )
        };
        let a = start();
        assert_eq!(poll(&a).status, 403);
        m.advance_clock(30);
        let r = poll(&a);
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"]["code"], "deviceauth_expired");

        let b = start();
        assert_eq!(poll(&b).status, 403);
        m.expire_device_logins();
        let r = poll(&b);
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"]["code"], "deviceauth_expired");
        assert_eq!(m.oauth_stats().device_expired, 2);

        // the same knobs over the control API
        let ctl =
            |path: &str, body: &str| call(m.addr(), "POST", path, &[JSON], body.as_bytes()).status;
        assert_eq!(
            ctl(
                "/__mock/device-flow",
                r#"{"interval_secs":2,"expires_in_secs":60,"pending_polls":0}"#
            ),
            200
        );
        let c = start();
        assert_eq!(c["interval"], "2");
        assert_eq!(poll(&c).status, 200, "no pending polls");
        assert_eq!(ctl("/__mock/login-account", r#"{"index":7}"#), 404);
        assert_eq!(
            ctl(
                "/__mock/deny-login",
                r#"{"error":"access_denied","description":"x"}"#
            ),
            200
        );
        let params = location_params(&get_authorize(&m, &[]));
        assert_eq!(param(&params, "error"), Some("access_denied"));
        let stats = call(m.addr(), "GET", "/__mock/oauth-stats", &[], b"").json();
        assert_eq!(stats["logins_denied"], 1);
        assert_eq!(stats["device_codes"], 3);

        let page = call(m.addr(), "GET", DEVICE_PAGE_PATH, &[], b"");
        assert_eq!(page.status, 200);
        assert!(page
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
        assert!(String::from_utf8_lossy(&page.body).contains("ABCD-1234"));
    }

    fn query(overrides: &[(&str, Option<&str>)]) -> String {
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", "http://localhost:1455/auth/callback"),
            ("scope", "openid profile email offline_access"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("state", "st+/="),
        ];
        for (k, v) in overrides {
            params.retain(|(n, _)| n != k);
            if let Some(v) = v {
                params.push((k, v));
            }
        }
        params
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    #[test]
    fn authorize_checks() {
        let ok = check_authorize(&query(&[])).unwrap();
        assert_eq!(ok.redirect_uri, "http://localhost:1455/auth/callback");
        assert_eq!(ok.state, "st+/=");
        assert_eq!(ok.challenge, CHALLENGE);
        assert_eq!(ok.login_hint, None);
        let hinted = check_authorize(&query(&[("login_hint", Some("user1@example.com"))]));
        assert_eq!(
            hinted.unwrap().login_hint.as_deref(),
            Some("user1@example.com")
        );

        for (k, v, error) in [
            ("client_id", Some("app_other"), "invalid_client"),
            ("client_id", None, "invalid_request"),
            ("response_type", Some("token"), "unsupported_response_type"),
            ("response_type", None, "invalid_request"),
            ("code_challenge_method", Some("plain"), "invalid_request"),
            ("code_challenge_method", None, "invalid_request"),
            ("code_challenge", None, "invalid_request"),
            ("code_challenge", Some("short"), "invalid_request"),
            ("state", None, "invalid_request"),
            ("redirect_uri", None, "invalid_request"),
            (
                "redirect_uri",
                Some("https://localhost:1455/cb"),
                "invalid_request",
            ),
            (
                "redirect_uri",
                Some("http://evil.example/cb"),
                "invalid_request",
            ),
        ] {
            let got = check_authorize(&query(&[(k, v)]));
            assert_eq!(got.map_err(|e| e.0), Err(error), "{k}={v:?}");
        }
    }

    #[test]
    fn loopback_redirects() {
        for ok in [
            "http://localhost:1455/auth/callback",
            "http://LOCALHOST:1457/auth/callback",
            "http://127.0.0.1:8080/cb?x=1",
            "http://[::1]:9/cb",
            "http://localhost/cb",
            "http://127.0.0.1",
        ] {
            assert_eq!(check_loopback_redirect(ok), Ok(()), "{ok}");
        }
        for bad in [
            "https://localhost:1455/cb",
            "http://localhost.evil.example/cb",
            "http://user@localhost/cb",
            "http://evil.example@localhost/cb",
            "http://localhost:1455/cb#frag",
            "http://localhost:0/cb",
            "http://localhost:99999/cb",
            "http://localhost:1455/a b",
            "http://10.0.0.1/cb",
            "localhost:1455/cb",
            "http:/",
            "",
        ] {
            assert!(check_loopback_redirect(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirect_query_is_appended_and_encoded() {
        assert_eq!(
            with_query(
                "http://localhost:1455/cb",
                &[("code", "ac_1"), ("state", "a b&c")]
            ),
            "http://localhost:1455/cb?code=ac_1&state=a%20b%26c"
        );
        assert_eq!(
            with_query("http://localhost/cb?x=1", &[("code", "c")]),
            "http://localhost/cb?x=1&code=c"
        );
        assert_eq!(
            with_query("http://localhost/cb?", &[("code", "c")]),
            "http://localhost/cb?code=c"
        );
    }
}
