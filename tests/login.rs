//! Adding accounts by signing in, against the mock issuer: the browser flow with the test playing
//! the browser, the manual paste, the device code, and the CLI's import, export and key handling.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{cli, turn_body, Env};
use loadtest::mock::MockConfig;
use serde_json::{json, Value};

fn mock_with(accounts: usize) -> MockConfig {
    MockConfig {
        accounts,
        ..MockConfig::default()
    }
}

fn no_redirects() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(10))
        .build()
}

/// Follows the authorize URL like a browser and returns where the issuer sends it back.
fn authorize(url: &str) -> String {
    let r = no_redirects().get(url).call().expect("authorize answers");
    assert_eq!(r.status(), 302, "authorize redirects");
    r.header("location").expect("a Location").to_string()
}

fn callback_port(view: &Value) -> u16 {
    let uri = view["redirect_uri"].as_str().expect("redirect_uri");
    url::Url::parse(uri).unwrap().port().unwrap()
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn wait_final(env: &Env, id: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let v = env.get_json(&format!("/api/accounts/login/{id}"));
        let s = v["status"].as_str().unwrap_or_default().to_string();
        if !matches!(s.as_str(), "pending" | "exchanging") || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(env: &Env, body: Value) -> Value {
    let v = env.post_json("/api/accounts/login", body.to_string().as_bytes());
    assert!(v["id"].is_string(), "{v}");
    v
}

fn account_count(env: &Env) -> usize {
    env.get_json("/api/accounts")["accounts"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn browser_sign_in_adds_the_account_updates_it_on_a_second_login_and_closes_the_port() {
    let env = Env::start_unimported(mock_with(2), |_| {});
    let seeds = env.mock.accounts();
    let view = start(&env, json!({"mode": "browser"}));
    assert_eq!(view["status"], "pending");
    assert_eq!(view["listening"], true);
    let port = callback_port(&view);
    assert!(port_open(port), "the callback port listens while pending");
    let auth_url = view["authorize_url"].as_str().unwrap();
    assert!(
        auth_url.contains("code_challenge_method=S256"),
        "{auth_url}"
    );

    // The test is the browser: authorize, then follow the redirect to the callback.
    let back = authorize(auth_url);
    assert!(
        back.starts_with(&format!("http://localhost:{port}/auth/callback?")),
        "{back}"
    );
    let page = ureq::get(&back.replace("localhost", "127.0.0.1"))
        .call()
        .expect("callback page");
    assert!(page.into_string().unwrap().contains(&seeds[0].email));

    let done = wait_final(&env, view["id"].as_str().unwrap(), Duration::from_secs(5));
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["created"], true);
    assert_eq!(done["account"]["email"], seeds[0].email.as_str());
    assert_eq!(account_count(&env), 1);
    // Closed once the sign-in is over: Codex's own sign-in can have the port again.
    let deadline = Instant::now() + Duration::from_secs(2);
    while port_open(port) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !port_open(port),
        "callback port still open after the sign-in"
    );
    // The new account serves turns with the tokens the sign-in produced.
    assert_eq!(env.turn(&turn_body("hello"), &[]).status, 200);

    // The same person signs in again: the account is updated, not duplicated.
    let again = start(&env, json!({"mode": "browser"}));
    let back = authorize(again["authorize_url"].as_str().unwrap());
    ureq::get(&back.replace("localhost", "127.0.0.1"))
        .call()
        .unwrap();
    let done = wait_final(&env, again["id"].as_str().unwrap(), Duration::from_secs(5));
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["created"], false);
    assert_eq!(account_count(&env), 1);

    // Someone else signs in: a second account.
    env.mock.set_login_account(1);
    let other = start(&env, json!({}));
    let back = authorize(other["authorize_url"].as_str().unwrap());
    ureq::get(&back.replace("localhost", "127.0.0.1"))
        .call()
        .unwrap();
    let done = wait_final(&env, other["id"].as_str().unwrap(), Duration::from_secs(5));
    assert_eq!(done["account"]["email"], seeds[1].email.as_str(), "{done}");
    assert_eq!(account_count(&env), 2);
}

#[test]
fn foreign_state_is_refused_denials_are_reported_and_expired_sign_ins_cannot_finish() {
    let env = Env::start_unimported(mock_with(1), |s| {
        s.login_timeout = Duration::from_secs(2);
    });
    let view = start(&env, json!({"mode": "browser"}));
    let id = view["id"].as_str().unwrap().to_string();
    let port = callback_port(&view);
    let back = authorize(view["authorize_url"].as_str().unwrap());
    let (_, real_query) = back.split_once('?').unwrap();
    let forged = format!("http://127.0.0.1:{port}/auth/callback?code=stolen&state=not-ours");
    match ureq::get(&forged).call() {
        Err(ureq::Error::Status(400, _)) => {}
        other => panic!("a foreign state must be refused: {other:?}"),
    }
    let pasted = env.post_json(
        &format!("/api/accounts/login/{id}/complete"),
        json!({"callback_url": forged}).to_string().as_bytes(),
    );
    assert_eq!(pasted["error"]["code"], "login_state_mismatch", "{pasted}");
    assert_eq!(
        env.get_json(&format!("/api/accounts/login/{id}"))["status"],
        "pending"
    );
    assert_eq!(
        env.mock.oauth_stats().code_exchanges,
        0,
        "nothing was exchanged"
    );

    // Left alone, the sign-in expires, its port closes, and its real code no longer works.
    let done = wait_final(&env, &id, Duration::from_secs(5));
    assert_eq!(done["status"], "expired", "{done}");
    let deadline = Instant::now() + Duration::from_secs(2);
    while port_open(port) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!port_open(port));
    let late = env.post_json(
        &format!("/api/accounts/login/{id}/complete"),
        json!({"callback_url": format!("http://localhost:{port}/auth/callback?{real_query}")})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(late["error"]["code"], "login_not_pending", "{late}");
    assert_eq!(account_count(&env), 0);

    // The issuer says no (a workspace without Codex): the sign-in fails with its words.
    env.mock
        .deny_next_login("access_denied", "missing_codex_entitlement");
    let denied = start(&env, json!({"mode": "browser", "listen": false}));
    let back = authorize(denied["authorize_url"].as_str().unwrap());
    let r = env.post_json(
        &format!(
            "/api/accounts/login/{}/complete",
            denied["id"].as_str().unwrap()
        ),
        json!({"callback_url": back}).to_string().as_bytes(),
    );
    assert_eq!(r["error"]["code"], "login_denied", "{r}");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("missing_codex_entitlement"));
    let status = env.get_json(&format!(
        "/api/accounts/login/{}",
        denied["id"].as_str().unwrap()
    ));
    assert_eq!(status["status"], "failed");
}

#[test]
fn a_pasted_callback_url_completes_a_sign_in_without_a_listener() {
    let env = Env::start_unimported(mock_with(1), |_| {});
    let view = start(&env, json!({"mode": "browser", "listen": false}));
    assert_eq!(view["listening"], false);
    let back = authorize(view["authorize_url"].as_str().unwrap());
    // Nobody listens on the port named in the URL; the person copies it from the address bar.
    let r = env.post_json(
        &format!(
            "/api/accounts/login/{}/complete",
            view["id"].as_str().unwrap()
        ),
        json!({"callback_url": back}).to_string().as_bytes(),
    );
    assert_eq!(r["status"], "complete", "{r}");
    assert_eq!(account_count(&env), 1);
    assert_eq!(env.mock.oauth_stats().code_exchanges, 1);
}

#[test]
fn device_sign_in_waits_through_pending_polls_and_expires_when_never_approved() {
    let env = Env::start_unimported(mock_with(1), |_| {});
    env.mock.set_device_flow(1, 900, 2);
    let view = start(&env, json!({"mode": "device"}));
    assert!(view["user_code"].as_str().unwrap().contains('-'), "{view}");
    assert!(view["verification_url"]
        .as_str()
        .unwrap()
        .ends_with("/codex/device"));
    let done = wait_final(&env, view["id"].as_str().unwrap(), Duration::from_secs(10));
    assert_eq!(done["status"], "complete", "{done}");
    assert!(env.mock.oauth_stats().device_polls >= 3);
    assert_eq!(account_count(&env), 1);
    assert_eq!(env.turn(&turn_body("from a device login"), &[]).status, 200);

    env.mock.set_device_flow(1, 900, 1_000);
    let never = start(&env, json!({"mode": "device"}));
    std::thread::sleep(Duration::from_millis(1500));
    env.mock.expire_device_logins();
    let done = wait_final(&env, never["id"].as_str().unwrap(), Duration::from_secs(10));
    assert_eq!(done["status"], "expired", "{done}");
}

#[test]
fn cli_device_login_export_import_and_a_lost_key() {
    let mock = loadtest::mock::MockUpstream::start(mock_with(2)).unwrap();
    mock.set_device_flow(1, 900, 1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    // No gateway holds the data dir: the command signs in by itself.
    let out = cli(&[
        "accounts",
        "--data-dir",
        data_s,
        "login",
        "--device",
        "--auth-base-url",
        &mock.issuer_url(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("enter the code"), "{stdout}");
    assert!(stdout.contains("signed in and added"), "{stdout}");
    let seed = &mock.accounts()[0];
    assert!(stdout.contains(&seed.email), "{stdout}");

    // Tokens are sealed at rest: no file of the data dir holds the refresh token in clear.
    let listed = cli(&["accounts", "--data-dir", data_s, "list", "--json"]);
    let accounts: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = accounts[0]["id"].as_str().unwrap().to_string();
    let exported = dir.path().join("exported.json");
    let out = cli(&[
        "accounts",
        "--data-dir",
        data_s,
        "export",
        &id,
        "--output",
        exported.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalidates"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&exported).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let auth: Value = serde_json::from_slice(&std::fs::read(&exported).unwrap()).unwrap();
    let refresh = auth["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(auth["auth_mode"], "chatgpt");
    assert_eq!(
        auth["tokens"]["account_id"],
        seed.chatgpt_account_id.as_str()
    );
    for entry in walk(&data) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes
                .windows(refresh.len())
                .any(|w| w == refresh.as_bytes()),
            "{} holds the refresh token in clear",
            entry.display()
        );
    }

    // A directory import: the good file is imported, the broken one is named with its problem.
    let batch = dir.path().join("batch");
    std::fs::create_dir(&batch).unwrap();
    std::fs::write(batch.join("a.json"), mock.auth_json(1)).unwrap();
    std::fs::write(
        batch.join("b.json"),
        r#"{"tokens":{"id_token":"x.y.z","refresh_token":"r"}}"#,
    )
    .unwrap();
    let out = cli(&[
        "accounts",
        "--data-dir",
        data_s,
        "import",
        batch.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("b.json") && stderr.contains("tokens.access_token"),
        "{stderr}"
    );
    let listed = cli(&["accounts", "--data-dir", data_s, "list", "--json"]);
    let accounts: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(accounts.as_array().unwrap().len(), 2);

    // The key file is lost: a clear state and reason, no crash; a re-import repairs the account.
    std::fs::remove_file(data.join("secret.key")).unwrap();
    let listed = cli(&["accounts", "--data-dir", data_s, "list", "--json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let accounts: Value = serde_json::from_slice(&listed.stdout).unwrap();
    for a in accounts.as_array().unwrap() {
        assert_eq!(a["status"], "reauth_required", "{a}");
        assert!(a["status_reason"].as_str().unwrap().contains("secret.key"));
    }
    let out = cli(&[
        "accounts",
        "--data-dir",
        data_s,
        "import",
        exported.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = cli(&["accounts", "--data-dir", data_s, "list", "--json"]);
    let accounts: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let repaired = accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id.as_str())
        .unwrap();
    assert_eq!(repaired["status"], "active", "{repaired}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
