//! The dashboard end to end in headless Chromium (the system's `chromium`, driven by
//! `playwright-core`; both installed by scripts/test.sh): log in, create a key bound to one
//! account, pause, resume and regenerate it, see a request made with its new secret appear live
//! on the overview, and screenshot every page into
//! `target/dashboard-screenshots/` (kept as CI artifacts).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::Env;
use serde_json::{json, Value};

fn chromium() -> PathBuf {
    let path = std::env::var_os("CODEX_LB_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "Chromium not found at {}: run scripts/test.sh, which installs Debian's chromium",
        path.display()
    );
    path
}

fn playwright_core() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".e2e/node_modules/playwright-core");
    assert!(
        path.join("package.json").exists(),
        "playwright-core not found at {}: run scripts/test.sh, which installs it",
        path.display()
    );
    path
}

#[test]
fn log_in_create_a_key_and_watch_a_request_arrive_live() {
    let env = Env::start(2);
    // The password is set the way the CLI would: with the data dir's admin token.
    let token = std::fs::read_to_string(env.settings.data_dir.join("admin.token")).unwrap();
    let password = "e2e dashboard password";
    let r = ureq::post(&env.url("/api/dashboard-auth/password"))
        .set("authorization", &format!("Bearer {}", token.trim()))
        .timeout(Duration::from_secs(20))
        .send_json(json!({ "new_password": password }))
        .expect("password set");
    assert_eq!(r.status(), 200);

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/dashboard.mjs");
    let out = Command::new("node")
        .arg(&script)
        .env("BASE_URL", format!("http://{}", env.addr))
        .env("PASSWORD", password)
        .env("SHOTS_DIR", &shots)
        .env("CHROMIUM", chromium())
        .env("PLAYWRIGHT_CORE", playwright_core())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser run failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("report: {e}\n{stdout}\n{stderr}"));
    assert_eq!(report["console_errors"], json!([]), "{report}");
    assert_eq!(report["foreign_requests"], json!([]), "{report}");

    // The key the page showed is the one the gateway stored and recorded the request under.
    let key = report["key"].as_str().unwrap();
    let keys = ureq::get(&env.url("/api/keys"))
        .set("authorization", &format!("Bearer {}", token.trim()))
        .call()
        .unwrap()
        .into_json::<Value>()
        .unwrap();
    let stored = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "e2e-key")
        .unwrap_or_else(|| panic!("{keys}"));
    assert!(
        key.starts_with(stored["prefix"].as_str().unwrap()),
        "{key} {stored}"
    );
    // The account ticked in the form is the key's only one; after the regeneration the first
    // secret is refused and the key is active again.
    let account = report["account"].as_str().unwrap();
    assert!(account.starts_with("acc_"), "{report}");
    assert_eq!(stored["allowed_accounts"], json!([account]), "{stored}");
    assert_eq!(stored["status"], "active", "{stored}");
    let first = report["first_key"].as_str().unwrap();
    assert_ne!(first, key);
    // With key auth on, the first secret is no key at all.
    ureq::put(&env.url("/api/settings"))
        .set("authorization", &format!("Bearer {}", token.trim()))
        .send_json(json!({ "api_key_auth": true }))
        .expect("key auth on");
    let old = env.turn(
        &common::turn_body("old secret"),
        &[("authorization", &format!("Bearer {first}"))],
    );
    assert_eq!(old.status, 401, "{}", old.text());
    assert_eq!(old.json()["error"]["code"], "invalid_api_key");
    let rows = ureq::get(&env.url("/api/requests"))
        .set("authorization", &format!("Bearer {}", token.trim()))
        .call()
        .unwrap()
        .into_json::<Value>()
        .unwrap();
    assert!(
        rows["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["key_id"] == stored["id"]
                && r["status"] == 200
                && r["account_id"] == account),
        "{rows}"
    );

    // Every screenshot is a real PNG of some size.
    let list = report["shots"].as_array().unwrap();
    assert!(list.len() >= 19, "{report}");
    for name in list {
        let bytes = std::fs::read(shots.join(name.as_str().unwrap())).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{name}");
        assert!(bytes.len() > 5_000, "{name}: {} bytes", bytes.len());
    }
}
