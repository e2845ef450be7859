//! The models catalog, unknown routes, the `/__mock/` control API, seeded accounts, and the
//! `mock-upstream` binary.

mod common;

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use serde_json::Value;

fn models(m: &loadtest::mock::MockUpstream, query: &str) -> Reply {
    let a = &m.accounts()[0];
    request(
        m.addr(),
        "GET",
        &format!("/backend-api/codex/models{query}"),
        &auth(a),
        b"",
    )
}

fn slugs(r: &Reply) -> Vec<String> {
    r.json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["slug"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn models_catalog_hides_models_newer_than_the_client() {
    let m = start();
    let r = models(&m, "?client_version=0.144.0");
    assert_eq!(r.status(), 200);
    assert!(r.header("etag").is_some());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        slugs(&r),
        ["gpt-5.5", "gpt-5.3-codex", "gpt-5.1-codex-mini"]
    );
    let first = &r.json()["models"][0];
    for field in [
        "slug",
        "display_name",
        "description",
        "context_window",
        "supported_reasoning_levels",
        "default_reasoning_level",
        "input_modalities",
        "visibility",
        "supported_in_api",
        "priority",
        "minimal_client_version",
        "shell_type",
    ] {
        assert!(!first[field].is_null(), "missing {field}");
    }
    assert_eq!(first["visibility"], "list");
    assert_eq!(first["supported_reasoning_levels"][0]["effort"], "low");
    assert_eq!(
        slugs(&models(&m, "")),
        ["gpt-5.5", "gpt-5.3-codex", "gpt-5.1-codex-mini"],
        "missing version = 0.0.0"
    );
    assert_eq!(slugs(&models(&m, "?client_version=99.0.0")).len(), 4);
    assert!(slugs(&models(&m, "?client_version=100.2.3")).contains(&"gpt-6-preview".to_string()));

    let r = request(
        m.addr(),
        "GET",
        "/backend-api/codex/models?client_version=1.0.0",
        &[],
        b"",
    );
    assert_eq!(r.status(), 401, "auth required");
    assert_eq!(
        m.stats()
            .requests_by_route
            .get("GET /backend-api/codex/models"),
        Some(&5)
    );
}

#[test]
fn unknown_routes_get_a_json_404() {
    let m = start();
    let r = request(m.addr(), "GET", "/backend-api/nope", &[], b"");
    assert_eq!(r.status(), 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    let r = request(
        m.addr(),
        "GET",
        "/backend-api/codex/responses",
        &auth(&m.accounts()[0]),
        b"",
    );
    assert_eq!(r.status(), 404);
    let s = m.stats();
    assert_eq!(s.requests_by_route.get("not_found"), Some(&2));
    assert_eq!(s.rejected_by_status.get(&404), Some(&2));
}

fn jwt_payload(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|p| !p.is_empty()));
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

#[test]
fn seeded_accounts_and_auth_json() {
    let m = start();
    let accts = m.accounts();
    assert_eq!(accts.len(), 2);
    assert_ne!(accts[0].chatgpt_account_id, accts[1].chatgpt_account_id);
    assert_eq!(accts[1].email, "user1@example.com");
    let p = jwt_payload(&accts[0].access_token);
    assert_eq!(
        p["https://api.openai.com/auth"]["chatgpt_account_id"],
        accts[0].chatgpt_account_id.as_str()
    );
    assert_eq!(
        p["https://api.openai.com/auth"]["chatgpt_plan_type"],
        "plus"
    );
    assert!(p["exp"].as_u64().unwrap() > p["iat"].as_u64().unwrap());
    let id = jwt_payload(&accts[0].id_token);
    assert_eq!(id["email"], "user0@example.com");
    let auth: Value = serde_json::from_str(&m.auth_json(1)).unwrap();
    assert_eq!(
        auth["tokens"]["access_token"],
        accts[1].access_token.as_str()
    );
    assert_eq!(
        auth["tokens"]["refresh_token"],
        accts[1].refresh_token.as_str()
    );
    assert_eq!(auth["tokens"]["id_token"], accts[1].id_token.as_str());
    assert_eq!(
        auth["tokens"]["account_id"],
        accts[1].chatgpt_account_id.as_str()
    );
    assert!(auth["last_refresh"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn control_api_mirrors_the_library() {
    // tokens outlive the 5-hour clock jump below
    let m = loadtest::mock::MockUpstream::start(loadtest::mock::MockConfig {
        token_ttl: std::time::Duration::from_secs(30 * 86_400),
        ..Default::default()
    })
    .unwrap();
    let a = m.accounts()[0].clone();
    let id = &a.chatgpt_account_id;

    let list = control(&m, "GET", "/__mock/accounts", "").json();
    assert_eq!(list[0]["chatgpt_account_id"], id.as_str());
    assert_eq!(
        list[0]["auth_json"]["tokens"]["access_token"],
        a.access_token.as_str()
    );

    assert_eq!(
        control(
            &m,
            "POST",
            &format!("/__mock/accounts/{id}/fail"),
            r#"{"status":502,"count":1}"#
        )
        .status(),
        200
    );
    assert_eq!(post_turn(&m, &a, &[], &turn("gpt-5.5", "x")).status(), 502);

    control(
        &m,
        "POST",
        &format!("/__mock/accounts/{id}/usage"),
        r#"{"primary":100,"secondary":5}"#,
    );
    assert_eq!(post_turn(&m, &a, &[], &turn("gpt-5.5", "x")).status(), 429);
    let now = control(&m, "POST", "/__mock/clock", r#"{"advance_secs":18000}"#).json()["now"]
        .as_u64()
        .unwrap();
    assert!(now > 18_000);
    assert_eq!(
        post_turn(&m, &a, &[], &turn("gpt-5.5", "x")).status(),
        200,
        "window reset after the clock moved"
    );

    control(
        &m,
        "POST",
        "/__mock/scenario",
        r#"{"deltas":2,"reasoning":false}"#,
    );
    assert_eq!(m.scenario().deltas, 2);
    let ev = post_turn(&m, &a, &[], &turn("gpt-5.5", "x")).events();
    assert_eq!(
        ev.iter()
            .filter(|(k, _)| k == "response.output_text.delta")
            .count(),
        2
    );
    assert_eq!(
        control(&m, "POST", "/__mock/scenario", r#"{"deltaz":2}"#).status(),
        400
    );

    let last = control(&m, "GET", &format!("/__mock/last-request/{id}"), "").json();
    assert_eq!(last["method"], "POST");
    assert!(last["body"].as_str().unwrap().contains("gpt-5.5"));
    assert!(last["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "chatgpt-account-id"));

    let stats = control(&m, "GET", "/__mock/stats", "").json();
    assert_eq!(stats["responses_completed"], 2);
    assert_eq!(stats["rejected_by_status"]["502"], 1);
    assert_eq!(stats["requests_total"], 4, "control calls are not counted");

    control(&m, "POST", &format!("/__mock/accounts/{id}/expire"), "");
    assert_eq!(post_turn(&m, &a, &[], &turn("gpt-5.5", "x")).status(), 401);

    assert_eq!(control(&m, "POST", "/__mock/reset", "").status(), 200);
    assert_eq!(post_turn(&m, &a, &[], &turn("gpt-5.5", "x")).status(), 200);
    let s = m.stats();
    assert_eq!((s.requests_total, s.responses_completed), (1, 1));
    assert_eq!(
        m.scenario().deltas,
        8,
        "reset restores the configured scenario"
    );

    assert_eq!(
        control(
            &m,
            "POST",
            "/__mock/accounts/nobody/fail",
            r#"{"status":500}"#
        )
        .status(),
        404
    );
    assert_eq!(
        control(&m, "GET", "/__mock/recorded/none", "").status(),
        404
    );
    assert_eq!(control(&m, "GET", "/__mock/whatever", "").status(), 404);
}

#[test]
#[should_panic(expected = "unknown mock account id")]
fn library_calls_reject_unknown_accounts() {
    start().fail_next("acct-typo", 500, 1);
}

#[test]
fn binary_prints_its_url_writes_auth_files_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("mock-upstream-test-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args([
            "--accounts",
            "3",
            "--plan",
            "pro",
            "--scenario",
            r#"{"deltas":1}"#,
            "--write-auth-dir",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("mock-upstream listening on ")
        .expect("banner")
        .to_string();
    let addr: std::net::SocketAddr = url
        .strip_prefix("http://")
        .and_then(|s| s.strip_suffix("/backend-api"))
        .unwrap()
        .parse()
        .unwrap();
    for i in 0..3 {
        let auth: Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("auth-{i}.json"))).unwrap())
                .unwrap();
        assert_eq!(
            jwt_payload(auth["tokens"]["access_token"].as_str().unwrap())
                ["https://api.openai.com/auth"]["chatgpt_plan_type"],
            "pro"
        );
    }
    let scenario = request(addr, "GET", "/__mock/scenario", &[], b"").json();
    assert_eq!(scenario["deltas"], 1);
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
