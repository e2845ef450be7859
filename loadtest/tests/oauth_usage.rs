//! The OAuth token endpoint (refresh-token grant, rotation, refusals, failure knobs) and
//! `GET /backend-api/wham/usage` (live windows, auth, error modes), through the library API and
//! the `/__mock/` control API.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use loadtest::mock::{MockConfig, MockUpstream, SeedAccount, UsageMode};
use serde_json::{json, Value};

const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";

/// The CLI's refresh request (PROTOCOL.md 5.4), with codex-lb's `scope`.
fn refresh_json(m: &MockUpstream, refresh_token: &str) -> Reply {
    let body = json!({
        "client_id": CLIENT_ID,
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "scope": "openid profile email",
    });
    request(
        m.addr(),
        "POST",
        "/oauth/token",
        &[("content-type".into(), "application/json".into())],
        body.to_string().as_bytes(),
    )
}

fn refresh_form(m: &MockUpstream, body: &str) -> Reply {
    request(
        m.addr(),
        "POST",
        "/oauth/token",
        &[(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body.as_bytes(),
    )
}

fn usage(m: &MockUpstream, a: &SeedAccount) -> Reply {
    usage_with(m, &auth(a))
}

fn usage_with(m: &MockUpstream, headers: &[(String, String)]) -> Reply {
    request(m.addr(), "GET", "/backend-api/wham/usage", headers, b"")
}

fn jwt_payload(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "three segments");
    assert!(parts.iter().all(|p| !p.is_empty()));
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

/// The tokens of a 200 token response, as an account the tests can authenticate with.
fn issued(r: &Reply, old: &SeedAccount) -> SeedAccount {
    assert_eq!(r.status(), 200, "{}", r.text());
    let v = r.json();
    let s = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("no {k}"))
            .to_string()
    };
    SeedAccount {
        access_token: s("access_token"),
        refresh_token: s("refresh_token"),
        id_token: s("id_token"),
        ..old.clone()
    }
}

fn error_code(r: &Reply) -> Value {
    r.json()["error"]["code"].clone()
}

fn turn_status(m: &MockUpstream, a: &SeedAccount) -> u16 {
    post_turn(m, a, &[], &turn("gpt-5.5", "x")).status()
}

#[test]
fn refresh_rotates_every_token_and_retires_the_old_access_token() {
    let m = start();
    let [a, b] = [m.accounts()[0].clone(), m.accounts()[1].clone()];
    let r = refresh_json(&m, &a.refresh_token);
    let new = issued(&r, &a);
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.header("x-codex-primary-used-percent").is_none(),
        "the issuer is not a backend route"
    );
    assert_ne!(new.access_token, a.access_token);
    assert_ne!(new.refresh_token, a.refresh_token);
    assert_ne!(new.id_token, a.id_token);

    // same claims as the seeded token, `exp` one TTL after the refresh
    let (old_p, new_p) = (jwt_payload(&a.access_token), jwt_payload(&new.access_token));
    let auth_claim = "https://api.openai.com/auth";
    assert_eq!(new_p[auth_claim], old_p[auth_claim]);
    assert_eq!(new_p["email"], old_p["email"]);
    assert_eq!(
        new_p["exp"].as_u64().unwrap(),
        new_p["iat"].as_u64().unwrap() + 3600
    );
    assert!(new_p["iat"].as_u64() >= old_p["iat"].as_u64());
    let id_p = jwt_payload(&new.id_token);
    assert_eq!(id_p["email"], "user0@example.com");
    assert_eq!(id_p[auth_claim]["chatgpt_account_id"], a.chatgpt_account_id);

    assert_eq!(turn_status(&m, &new), 200, "the new access token works");
    let old = post_turn(&m, &a, &[], &turn("gpt-5.5", "x"));
    assert_eq!(old.status(), 401, "the old one is refused");
    assert_eq!(error_code(&old), "token_expired");
    assert_eq!(turn_status(&m, &b), 200, "other accounts keep their tokens");

    // the library and the control API hand out the current tokens
    assert_eq!(m.accounts()[0], new);
    assert_eq!(m.accounts()[1], b);
    let auth_json: Value = serde_json::from_str(&m.auth_json(0)).unwrap();
    assert_eq!(
        auth_json["tokens"]["access_token"],
        new.access_token.as_str()
    );
    assert_eq!(
        auth_json["tokens"]["refresh_token"],
        new.refresh_token.as_str()
    );
    assert_eq!(auth_json["tokens"]["id_token"], new.id_token.as_str());
    let list = control(&m, "GET", "/__mock/accounts", "").json();
    assert_eq!(list[0]["access_token"], new.access_token.as_str());
    assert_eq!(
        list[0]["auth_json"]["tokens"]["refresh_token"],
        new.refresh_token.as_str()
    );

    // a second rotation retires the first access token for good
    let newer = issued(&refresh_json(&m, &new.refresh_token), &a);
    assert_eq!(turn_status(&m, &newer), 200);
    assert_eq!(
        error_code(&post_turn(&m, &new, &[], &turn("gpt-5.5", "x"))),
        "token_expired"
    );
    assert_eq!(
        error_code(&post_turn(&m, &a, &[], &turn("gpt-5.5", "x"))),
        "invalid_api_key"
    );

    // reset restores the seeded tokens
    m.reset();
    assert_eq!(m.accounts()[0], a);
    assert_eq!(turn_status(&m, &a), 200);
    assert_eq!(turn_status(&m, &newer), 401);
}

#[test]
fn reusing_a_refresh_token_is_refused_and_unknown_ones_are_invalid_grant() {
    let m = start();
    let a = m.accounts()[0].clone();
    let new = issued(&refresh_json(&m, &a.refresh_token), &a);

    let r = refresh_json(&m, &a.refresh_token);
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(&r), "refresh_token_reused");
    assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());

    // the reuse did not disturb the rotated token, and a token two rotations back is still a reuse
    let newer = issued(&refresh_json(&m, &new.refresh_token), &a);
    assert_eq!(
        error_code(&refresh_json(&m, &a.refresh_token)),
        "refresh_token_reused"
    );
    assert_eq!(
        error_code(&refresh_json(&m, &new.refresh_token)),
        "refresh_token_reused"
    );
    assert_eq!(m.accounts()[0], newer);

    let r = refresh_json(&m, "rt_never_issued");
    assert_eq!(r.status(), 401);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert!(r.json()["error_description"].is_string());
}

#[test]
fn revoked_and_expired_refresh_tokens_get_their_codes() {
    let m = start();
    let [a, b] = [m.accounts()[0].clone(), m.accounts()[1].clone()];
    m.revoke_refresh_token(&a.chatgpt_account_id);
    m.expire_refresh_token(&b.chatgpt_account_id);
    for (acct, code) in [
        (&a, "refresh_token_invalidated"),
        (&b, "refresh_token_expired"),
    ] {
        let r = refresh_json(&m, &acct.refresh_token);
        assert_eq!(r.status(), 401);
        assert_eq!(error_code(&r), code);
        assert_eq!(turn_status(&m, acct), 200, "access tokens still work");
    }

    m.reset();
    let a1 = issued(&refresh_json(&m, &a.refresh_token), &a);
    // over the control API, on the rotated token
    let id = &a.chatgpt_account_id;
    let path = |action: &str| format!("/__mock/accounts/{id}/{action}");
    assert_eq!(
        control(&m, "POST", &path("expire-refresh"), "").status(),
        200
    );
    assert_eq!(
        error_code(&refresh_json(&m, &a1.refresh_token)),
        "refresh_token_expired"
    );
    assert_eq!(
        control(&m, "POST", &path("revoke-refresh"), "").status(),
        200
    );
    assert_eq!(
        error_code(&refresh_json(&m, &a1.refresh_token)),
        "refresh_token_invalidated"
    );
    assert_eq!(
        error_code(&refresh_json(&m, &a.refresh_token)),
        "refresh_token_reused",
        "a retired token is a reuse whatever the current one's state"
    );
    assert_eq!(
        control(&m, "POST", "/__mock/accounts/nope/revoke-refresh", "").status(),
        404
    );
}

#[test]
fn token_endpoint_takes_form_and_json_bodies_and_checks_the_grant() {
    let m = start();
    let a = m.accounts()[0].clone();

    // form-encoded, percent escapes and `+` spaces in the ignored scope
    let r = refresh_form(
        &m,
        &format!(
            "grant_type=refresh_token&client_id={CLIENT_ID}&refresh_token={}&scope=openid+profile%20email",
            a.refresh_token
        ),
    );
    let a1 = issued(&r, &a);
    assert_eq!(turn_status(&m, &a1), 200);

    // JSON without a content type is recognised by its opening brace
    let body = json!({"grant_type": "refresh_token", "refresh_token": a1.refresh_token});
    let r = request(
        m.addr(),
        "POST",
        "/oauth/token",
        &[],
        body.to_string().as_bytes(),
    );
    let a2 = issued(&r, &a);
    assert_eq!(turn_status(&m, &a2), 200);

    let bad_grant = refresh_form(
        &m,
        &format!(
            "grant_type=authorization_code&code=abc&refresh_token={}",
            a2.refresh_token
        ),
    );
    // An authorization-code grant with an unknown code (the grant itself is supported).
    assert_eq!(bad_grant.status(), 400);
    assert_eq!(bad_grant.json()["error"], "invalid_grant");
    let body = json!({"grant_type": "password", "refresh_token": a2.refresh_token});
    let r = request(
        m.addr(),
        "POST",
        "/oauth/token",
        &[("content-type".into(), "application/json".into())],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status(), 400);
    assert_eq!(r.json()["error"], "unsupported_grant_type");
    for form in ["refresh_token=x", "grant_type=refresh_token", ""] {
        let r = refresh_form(&m, form);
        assert_eq!(r.status(), 400, "{form:?}");
        assert_eq!(r.json()["error"], "invalid_request", "{form:?}");
    }
    let r = request(
        m.addr(),
        "POST",
        "/oauth/token",
        &[("content-type".into(), "application/json".into())],
        b"{not json",
    );
    assert_eq!(r.status(), 400);
    assert_eq!(r.json()["error"], "invalid_request");
    assert_eq!(
        request(m.addr(), "GET", "/oauth/token", &[], b"").status(),
        404,
        "POST only"
    );
    assert_eq!(
        request(m.addr(), "POST", "/backend-api/oauth/token", &[], b"").status(),
        404,
        "at the origin, not under /backend-api"
    );
    // none of the refused grants spent the token
    assert_eq!(m.accounts()[0], a2);
    assert_eq!(m.stats().requests_by_route["POST /oauth/token"], 8);
    assert!(m.issuer_url().starts_with("http://127.0.0.1:"));
}

#[test]
fn fail_refresh_answers_500_without_spending_the_token() {
    let m = start();
    let [a, b] = [m.accounts()[0].clone(), m.accounts()[1].clone()];
    m.fail_refresh(&a.chatgpt_account_id, 2);
    for _ in 0..2 {
        let r = refresh_json(&m, &a.refresh_token);
        assert_eq!(r.status(), 500);
        assert_eq!(error_code(&r), "server_error");
    }
    assert_eq!(m.accounts()[0], a, "not rotated");
    issued(&refresh_json(&m, &b.refresh_token), &b);
    let a1 = issued(&refresh_json(&m, &a.refresh_token), &a);

    let path = format!("/__mock/accounts/{}/fail-refresh", a.chatgpt_account_id);
    assert_eq!(control(&m, "POST", &path, r#"{"count":1}"#).status(), 200);
    assert_eq!(refresh_json(&m, &a1.refresh_token).status(), 500);
    issued(&refresh_json(&m, &a1.refresh_token), &a);
    assert_eq!(control(&m, "POST", &path, r#"{"count":"x"}"#).status(), 400);
}

#[test]
fn refresh_latency_delays_the_reply_after_spending_the_token() {
    let m = start();
    let [a, b] = [m.accounts()[0].clone(), m.accounts()[1].clone()];
    m.set_refresh_latency(&a.chatgpt_account_id, 300);
    let t = Instant::now();
    let a1 = issued(&refresh_json(&m, &a.refresh_token), &a);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    issued(&refresh_json(&m, &b.refresh_token), &b);
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "other accounts answer at once"
    );
    // refusals wait too
    let t = Instant::now();
    assert_eq!(
        error_code(&refresh_json(&m, &a.refresh_token)),
        "refresh_token_reused"
    );
    assert!(t.elapsed() >= Duration::from_millis(300));

    // a client that gives up has still spent its refresh token
    let path = format!("/__mock/accounts/{}/refresh-latency", a.chatgpt_account_id);
    assert_eq!(control(&m, "POST", &path, r#"{"ms":1500}"#).status(), 200);
    let s = TcpStream::connect(m.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut c = Conn::over(s);
    let body = json!({"grant_type": "refresh_token", "refresh_token": a1.refresh_token});
    c.send(
        "POST",
        "/oauth/token",
        &[("content-type".into(), "application/json".into())],
        body.to_string().as_bytes(),
    );
    assert!(c.read_head().is_err(), "timed out");
    drop(c);
    assert_ne!(m.accounts()[0], a1, "rotated before the wait");
    assert_eq!(control(&m, "POST", &path, r#"{"ms":0}"#).status(), 200);
    assert_eq!(
        error_code(&refresh_json(&m, &a1.refresh_token)),
        "refresh_token_reused"
    );
    let current = m.accounts()[0].clone();
    assert_eq!(turn_status(&m, &current), 200);
}

#[test]
fn expired_access_tokens_are_renewed_by_a_refresh() {
    let m = start();
    let [a, b] = [m.accounts()[0].clone(), m.accounts()[1].clone()];
    // past the seeded `exp`
    m.advance_clock(3601);
    let r = post_turn(&m, &a, &[], &turn("gpt-5.5", "x"));
    assert_eq!(error_code(&r), "token_expired");
    let a1 = issued(&refresh_json(&m, &a.refresh_token), &a);
    assert_eq!(
        turn_status(&m, &a1),
        200,
        "exp counts from the mock's clock"
    );
    assert_eq!(turn_status(&m, &b), 401);
    // (a margin below `exp`: the real clock may tick a second meanwhile)
    m.advance_clock(3500);
    assert_eq!(turn_status(&m, &a1), 200);
    m.advance_clock(100);
    assert_eq!(
        turn_status(&m, &a1),
        401,
        "refreshed tokens live token_ttl too"
    );

    // explicitly expired: refused until a refresh replaces it
    let a2 = issued(&refresh_json(&m, &a1.refresh_token), &a);
    m.expire_token(&a.chatgpt_account_id);
    assert_eq!(
        error_code(&post_turn(&m, &a2, &[], &turn("gpt-5.5", "x"))),
        "token_expired"
    );
    let a3 = issued(&refresh_json(&m, &a2.refresh_token), &a);
    assert_eq!(turn_status(&m, &a3), 200);
}

#[test]
fn custom_token_ttl_sets_expires_in() {
    let m = MockUpstream::start(MockConfig {
        token_ttl: Duration::from_secs(90),
        ..Default::default()
    })
    .unwrap();
    let a = m.accounts()[0].clone();
    let r = refresh_json(&m, &a.refresh_token);
    assert_eq!(r.json()["expires_in"], 90);
    let p = jwt_payload(&issued(&r, &a).access_token);
    assert_eq!(p["exp"].as_u64().unwrap() - p["iat"].as_u64().unwrap(), 90);
}

#[test]
fn usage_reports_the_live_windows() {
    // tokens outlive the week-long clock jumps below
    let m = MockUpstream::start(MockConfig {
        token_ttl: Duration::from_secs(30 * 86_400),
        ..Default::default()
    })
    .unwrap();
    let [a, b] = [m.accounts()[0].clone(), m.accounts()[1].clone()];
    let id = &a.chatgpt_account_id;
    m.set_used_percent(id, 37.0, 12.5);
    let r = usage(&m, &a);
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["plan_type"], "plus");
    let rl = &v["rate_limit"];
    assert_eq!(rl["allowed"], true);
    assert_eq!(rl["limit_reached"], false);
    let (p, s) = (&rl["primary_window"], &rl["secondary_window"]);
    assert_eq!(p["used_percent"], 37);
    assert_eq!(p["limit_window_seconds"], 18_000);
    assert_eq!(s["used_percent"], 12.5);
    assert_eq!(s["limit_window_seconds"], 604_800);
    // the same windows the headers describe
    let reset_at = p["reset_at"].as_u64().unwrap();
    assert_eq!(
        r.header("x-codex-primary-reset-at"),
        Some(reset_at.to_string().as_str())
    );
    assert_eq!(
        r.header("x-codex-secondary-reset-at"),
        Some(s["reset_at"].as_u64().unwrap().to_string().as_str())
    );
    let after = p["reset_after_seconds"].as_u64().unwrap();
    assert!((17_990..=18_000).contains(&after), "{after}");
    assert_eq!(v["credits"]["has_credits"], false);
    assert_eq!(v["credits"]["balance"], "0");
    assert_eq!(
        usage(&m, &b).json()["rate_limit"]["primary_window"]["used_percent"],
        0
    );

    m.set_used_percent(id, 100.0, 12.5);
    let rl = usage(&m, &a).json()["rate_limit"].clone();
    assert_eq!(rl["allowed"], false);
    assert_eq!(rl["limit_reached"], true);

    // past the 5-hour reset the primary window is empty again, the weekly one is not
    m.advance_clock(18_000);
    let rl = usage(&m, &a).json()["rate_limit"].clone();
    assert_eq!(rl["allowed"], true);
    assert_eq!(rl["primary_window"]["used_percent"], 0);
    assert!(rl["primary_window"]["reset_at"].as_u64().unwrap() >= reset_at + 18_000);
    assert_eq!(rl["secondary_window"]["used_percent"], 12.5);
    m.advance_clock(604_800);
    let rl = usage(&m, &a).json()["rate_limit"].clone();
    assert_eq!(rl["secondary_window"]["used_percent"], 0);
}

#[test]
fn usage_follows_charged_turns() {
    let m = start();
    let a = m.accounts()[0].clone();
    assert_eq!(turn_status(&m, &a), 200);
    let p = &usage(&m, &a).json()["rate_limit"]["primary_window"];
    let used = p["used_percent"].as_f64().unwrap();
    assert!(used > 0.0 && used < 1.0, "{used}");
}

#[test]
fn usage_authenticates_like_responses() {
    let m = start();
    let [a, b] = [m.accounts()[0].clone(), m.accounts()[1].clone()];
    let r = usage_with(&m, &[]);
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(&r), "invalid_api_key");
    let mut h = auth(&a);
    h[1].1 = b.chatgpt_account_id.clone();
    let r = usage_with(&m, &h);
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(&r), "account_mismatch");
    m.expire_token(&a.chatgpt_account_id);
    let r = usage(&m, &a);
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(&r), "token_expired");
    assert!(r.header("x-codex-primary-reset-at").is_some());
    assert_eq!(usage(&m, &b).status(), 200);
    assert_eq!(m.stats().rejected_by_status[&401], 2);
}

#[test]
fn usage_error_modes() {
    let m = start();
    let [a, b] = [m.accounts()[0].clone(), m.accounts()[1].clone()];
    let id = &a.chatgpt_account_id;
    for (mode, status, code) in [
        (UsageMode::Unauthorized, 401, json!("invalid_api_key")),
        (UsageMode::PaymentRequired, 402, Value::Null),
        (UsageMode::Forbidden, 403, Value::Null),
        (UsageMode::NotFound, 404, Value::Null),
        (UsageMode::Deactivated, 403, json!("account_deactivated")),
        (UsageMode::ServerError, 500, json!("server_error")),
    ] {
        m.set_usage_mode(id, Some(mode));
        let r = usage(&m, &a);
        assert_eq!(r.status(), status, "{mode:?}");
        assert_eq!(error_code(&r), code, "{mode:?}");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert_eq!(
            msg.contains("account has been deactivated"),
            mode == UsageMode::Deactivated,
            "{mode:?}: {msg}"
        );
        assert_eq!(usage(&m, &b).status(), 200, "other accounts answer");
        assert_eq!(turn_status(&m, &a), 200, "only the usage endpoint fails");
    }
    m.set_usage_mode(id, None);
    assert_eq!(usage(&m, &a).status(), 200);

    // over the control API: a status, a name, null; junk is refused
    let path = format!("/__mock/accounts/{id}/usage-mode");
    assert_eq!(control(&m, "POST", &path, r#"{"mode":402}"#).status(), 200);
    assert_eq!(usage(&m, &a).status(), 402);
    assert_eq!(
        control(&m, "POST", &path, r#"{"mode":"deactivated"}"#).status(),
        200
    );
    let r = usage(&m, &a);
    assert_eq!(r.status(), 403);
    assert!(r.text().contains("account has been deactivated"));
    assert_eq!(
        control(&m, "POST", &path, r#"{"mode":"500"}"#).status(),
        200
    );
    assert_eq!(usage(&m, &a).status(), 500);
    assert_eq!(control(&m, "POST", &path, r#"{"mode":418}"#).status(), 400);
    assert_eq!(
        usage(&m, &a).status(),
        500,
        "a refused mode changes nothing"
    );
    assert_eq!(control(&m, "POST", &path, r#"{"mode":null}"#).status(), 200);
    assert_eq!(usage(&m, &a).status(), 200);
    m.set_usage_mode(id, Some(UsageMode::NotFound));
    m.reset();
    assert_eq!(usage(&m, &a).status(), 200, "reset clears the mode");
}

#[test]
fn refresh_and_usage_calls_are_counted_per_account() {
    let m = start();
    let [a, b] = [m.accounts()[0].clone(), m.accounts()[1].clone()];
    let (ia, ib) = (&a.chatgpt_account_id, &b.chatgpt_account_id);
    m.fail_refresh(ia, 1);
    assert_eq!(refresh_json(&m, &a.refresh_token).status(), 500);
    let a1 = issued(&refresh_json(&m, &a.refresh_token), &a);
    assert_eq!(refresh_json(&m, &a.refresh_token).status(), 401);
    assert_eq!(
        refresh_form(
            &m,
            &format!("grant_type=password&refresh_token={}", a1.refresh_token)
        )
        .status(),
        400
    );
    assert_eq!(refresh_json(&m, "rt_unknown").status(), 401);
    assert_eq!(m.refresh_calls(ia), 4, "every attempt, failed ones too");
    assert_eq!(m.refresh_calls(ib), 0);

    assert_eq!(usage(&m, &a1).status(), 200);
    m.set_usage_mode(ia, Some(UsageMode::ServerError));
    assert_eq!(usage(&m, &a1).status(), 500);
    assert_eq!(
        usage(&m, &a).status(),
        401,
        "stale token, still this account"
    );
    assert_eq!(usage(&m, &b).status(), 200);
    assert_eq!(m.usage_calls(ia), 3);
    assert_eq!(m.usage_calls(ib), 1);
    assert_eq!(m.refresh_calls(ia), 4, "usage is not a refresh");

    let stats = m.stats();
    assert_eq!(stats.refresh_calls.get(ia.as_str()), Some(&4));
    assert_eq!(
        stats.refresh_calls.len(),
        1,
        "unknown tokens are not attributed"
    );
    assert_eq!(stats.usage_calls.get(ib.as_str()), Some(&1));
    assert_eq!(stats.requests_by_route["POST /oauth/token"], 5);
    assert_eq!(stats.requests_by_route["GET /backend-api/wham/usage"], 4);
    let over_http = control(&m, "GET", "/__mock/stats", "").json();
    assert_eq!(over_http["refresh_calls"][ia.as_str()], 4);
    assert_eq!(over_http["usage_calls"][ia.as_str()], 3);

    m.reset();
    assert_eq!(m.refresh_calls(ia), 0);
    assert_eq!(m.usage_calls(ia), 0);
}
