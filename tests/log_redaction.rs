//! No secret in the logs: the gateway binary runs at `RUST_LOG=trace` (its own events and every
//! dependency's) through account import, a token refresh, API keys used right and wrong, a
//! dashboard password, a login and its cookie, and the CLI's admin token; then every one of those
//! secrets is looked for in everything it printed.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::turn_body;
use loadtest::mock::{MockConfig, MockUpstream};
use serde_json::{json, Value};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(10));
    for (n, v) in headers {
        req = req.set(n, v);
    }
    let res = match body {
        Some(b) => req.send_string(&b.to_string()),
        None => req.call(),
    };
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = r.status();
    let cookie = r.header("set-cookie").map(str::to_string);
    let text = r.into_string().unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, cookie, v)
}

#[test]
fn no_secret_reaches_the_log_even_at_trace() {
    let mock = MockUpstream::start(MockConfig {
        accounts: 1,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log_path = dir.path().join("gateway.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut gw = Command::new(env!("CARGO_BIN_EXE_codex-lb"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.to_str().unwrap(),
            "--upstream-base-url",
            &mock.base_url(),
            "--auth-base-url",
            &mock.issuer_url(),
            "--workers",
            "1",
        ])
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while ureq::get(&format!("{base}/health")).call().is_err() {
        assert!(Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut secrets: Vec<(&str, String)> = Vec::new();
    let seed = mock.accounts()[0].clone();
    secrets.push(("access token", seed.access_token.clone()));
    secrets.push(("refresh token", seed.refresh_token.clone()));
    secrets.push(("id token", seed.id_token.clone()));
    let (s, _, v) = call(
        "POST",
        &format!("{base}/api/accounts/import"),
        &[],
        Some(serde_json::from_str(&mock.auth_json(0)).unwrap()),
    );
    assert!(s < 300, "{v}");

    // A key, used; a wrong one, refused.
    let (s, _, v) = call(
        "POST",
        &format!("{base}/api/keys"),
        &[],
        Some(json!({"name": "logged?"})),
    );
    assert!(s < 300, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    secrets.push(("API key", key.clone()));
    let (s, _, v) = call(
        "PUT",
        &format!("{base}/api/settings"),
        &[],
        Some(json!({"api_key_auth": true})),
    );
    assert_eq!(s, 200, "{v}");
    let turn = |auth: &str| {
        call(
            "POST",
            &format!("{base}/backend-api/codex/responses"),
            &[
                ("authorization", auth),
                ("content-type", "application/json"),
            ],
            Some(serde_json::from_str(&turn_body("secret-free")).unwrap()),
        )
        .0
    };
    assert_eq!(turn(&format!("Bearer {key}")), 200);
    let wrong = "sk-clb-this-one-is-wrong-but-still-a-secret-0123456789";
    secrets.push(("wrong API key", wrong.to_string()));
    assert_eq!(turn(&format!("Bearer {wrong}")), 401);

    // The upstream token expires: the next turn refreshes it, rotating both tokens.
    mock.expire_token(&seed.chatgpt_account_id);
    assert_eq!(turn(&format!("Bearer {key}")), 200);
    assert_eq!(mock.refresh_calls(&seed.chatgpt_account_id), 1);
    let rotated = mock.accounts()[0].clone();
    assert_ne!(rotated.access_token, seed.access_token);
    secrets.push(("refreshed access token", rotated.access_token.clone()));
    secrets.push(("rotated refresh token", rotated.refresh_token.clone()));

    // A dashboard password, a login, its cookie and CSRF token, a wrong password.
    let (_, _, session) = call(
        "GET",
        &format!("{base}/api/dashboard-auth/session"),
        &[],
        None,
    );
    let csrf = session["csrf_token"].as_str().unwrap().to_string();
    let password = "correct horse battery staple 42";
    secrets.push(("dashboard password", password.to_string()));
    let (s, _, v) = call(
        "POST",
        &format!("{base}/api/dashboard-auth/password"),
        &[
            ("x-csrf-token", &csrf),
            ("content-type", "application/json"),
        ],
        Some(json!({"new_password": password})),
    );
    assert_eq!(s, 200, "{v}");
    let wrong_password = "not the password at all 99";
    secrets.push(("wrong password", wrong_password.to_string()));
    let login = |p: &str| {
        call(
            "POST",
            &format!("{base}/api/dashboard-auth/login"),
            &[("content-type", "application/json")],
            Some(json!({"password": p})),
        )
    };
    assert_eq!(login(wrong_password).0, 401);
    let (s, cookie, v) = login(password);
    assert_eq!(s, 200, "{v}");
    let cookie = cookie.unwrap();
    let pair = cookie.split(';').next().unwrap().to_string();
    let cookie_value = pair.split_once('=').unwrap().1.to_string();
    secrets.push(("session cookie", cookie_value));
    let csrf = v["csrf_token"].as_str().unwrap().to_string();
    secrets.push(("session CSRF token", csrf.clone()));
    let (s, _, v) = call(
        "GET",
        &format!("{base}/api/accounts"),
        &[("cookie", &pair), ("x-csrf-token", &csrf)],
        None,
    );
    assert_eq!(s, 200, "{v}");

    // The CLI reaches the running gateway with the admin token.
    let admin_token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    secrets.push(("admin token", admin_token.trim().to_string()));
    let listen = format!("127.0.0.1:{port}");
    let out = common::cli(&[
        "keys",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &listen,
        "list",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Let the ledger flush, then stop the gateway and read everything it printed.
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: sending SIGTERM to our own child's pid.
    unsafe {
        libc::kill(gw.id() as i32, libc::SIGTERM);
    }
    let waited = Instant::now();
    while gw.try_wait().unwrap().is_none() {
        if waited.elapsed() > Duration::from_secs(15) {
            let _ = gw.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut text = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    // The log is really at trace and saw the traffic (else the search below proves nothing).
    assert!(text.contains("TRACE"), "no trace-level lines");
    assert!(text.contains("API key created"), "{text}");
    assert!(text.contains("access token refreshed"), "{text}");
    for (what, secret) in &secrets {
        assert!(secret.len() >= 16, "{what} is too short to look for");
        assert!(
            !text.contains(secret.as_str()),
            "the {what} is in the log:\n{}",
            text.lines()
                .filter(|l| l.contains(secret.as_str()))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    eprintln!(
        "{} log lines, {} secrets looked for",
        text.lines().count(),
        secrets.len()
    );
}
