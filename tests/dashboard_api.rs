//! The dashboard's own surfaces: the embedded web UI (headers, client-side routes), the live
//! feed of `/api/live`, and the read-only server facts of `/api/settings`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{turn_body, Env};
use serde_json::Value;

#[test]
fn the_ui_is_served_with_a_strict_policy_and_client_routes_fall_back_to_it() {
    let env = Env::start(0);
    let r = ureq::get(&env.url("/")).call().unwrap();
    assert_eq!(r.content_type(), "text/html");
    let csp = r.header("content-security-policy").unwrap().to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let html = r.into_string().unwrap();
    assert!(html.contains("<script type=\"module\""), "{html}");
    // Nothing is fetched from elsewhere, and nothing inline the policy would block.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(!html.contains("style=\""), "{html}");
    // Each asset the page names is served with its type.
    for (path, ty) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
    ] {
        let r = ureq::get(&env.url(path)).call().unwrap();
        assert_eq!(r.content_type(), ty, "{path}");
    }
    let deep = ureq::get(&env.url("/keys"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert_eq!(deep, html, "a deep link opens the UI");
    // API and proxy paths never fall back to the page.
    for path in ["/api/nope", "/v1/nope", "/assets/nope.js"] {
        match ureq::get(&env.url(path)).call() {
            Err(ureq::Error::Status(404, r)) => {
                let v: Value = r.into_json().unwrap();
                assert_eq!(v["error"]["code"], "not_found", "{path}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
}

#[test]
fn live_feed_carries_counters_and_new_requests() {
    let env = Env::start(1);
    let mut s = TcpStream::connect(env.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /api/live HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut lines = BufReader::new(s).lines();
    let status = lines.next().unwrap().unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut ticks = Vec::new();
    let mut sent = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = None;
    while Instant::now() < deadline {
        let line = lines.next().unwrap().unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let tick: Value = serde_json::from_str(data).unwrap();
        assert!(tick["metrics"]["requests"].is_u64(), "{tick}");
        ticks.push(tick.clone());
        if !sent {
            // After the first tick, a request through the gateway.
            let r = ureq::post(&env.url("/backend-api/codex/responses"))
                .set("content-type", "application/json")
                .send_string(&turn_body("live"))
                .unwrap();
            assert_eq!(r.status(), 200);
            let _ = r.into_string();
            sent = true;
            continue;
        }
        if let Some(row) = tick["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == "responses")
        {
            seen = Some(row.clone());
            break;
        }
    }
    let row = seen.unwrap_or_else(|| panic!("no request in {} ticks: {ticks:?}", ticks.len()));
    assert_eq!(row["status"], 200, "{row}");
    assert_eq!(row["model"], "gpt-5.5", "{row}");
    // It arrives once: the next tick does not repeat it.
    let next = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(d) = line.strip_prefix("data: ") {
            break serde_json::from_str::<Value>(d).unwrap();
        }
    };
    assert!(
        !next["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["request_id"] == row["request_id"]),
        "{next}"
    );
}

#[test]
fn settings_show_the_fixed_server_facts() {
    let env = Env::start(0);
    let v = env.get_json("/api/settings");
    assert_eq!(v["server"]["workers"], 2, "{v}");
    assert_eq!(
        v["server"]["listen"],
        env.settings.listen.to_string(),
        "{v}"
    );
    assert_eq!(v["server"]["log_retention_days"], 90, "{v}");
    assert!(v["strategy"].is_string(), "{v}");
}

/// Orchestrator probes: live while the process answers; ready only with an account that can
/// take a turn, and not ready (503, with the reason) while none can.
#[test]
fn health_probes_say_live_and_ready_for_orchestrators() {
    let status = |env: &Env, path: &str| match ureq::get(&env.url(path)).call() {
        Ok(r) => (r.status(), r.into_json::<serde_json::Value>().unwrap()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap()),
        Err(e) => panic!("{e}"),
    };
    let empty = Env::start(0);
    assert_eq!(status(&empty, "/health/live").0, 200);
    assert_eq!(status(&empty, "/health/startup").0, 200);
    let (s, v) = status(&empty, "/health/ready");
    assert_eq!(s, 503, "{v}");
    assert!(
        v["reasons"][0].as_str().unwrap().contains("no account"),
        "{v}"
    );

    let env = Env::start(1);
    let (s, v) = status(&env, "/health/ready");
    assert_eq!((s, v["status"].as_str()), (200, Some("ready")), "{v}");
    // Paused, the only account cannot serve: not ready until resumed.
    let id = env.get_json("/api/accounts")["accounts"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.post_json(&format!("/api/accounts/{id}/pause"), b"{}");
    assert_eq!(status(&env, "/health/ready").0, 503);
    env.post_json(&format!("/api/accounts/{id}/resume"), b"{}");
    assert_eq!(status(&env, "/health/ready").0, 200);
}
