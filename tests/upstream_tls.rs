//! The upstream over real TLS (rustls on both ends): the gateway trusts the mock's CA through
//! `--upstream-ca-file`, relays byte-identical streams over it, and refuses an untrusted upstream
//! with a clear 502 envelope.

mod common;

use std::net::SocketAddr;

use codex_lb::Gateway;
use common::{turn_body, Env};
use loadtest::mock::{self_signed_localhost, MockConfig, MockUpstream};
use serde_json::json;

fn tls_env(trust: bool) -> Env {
    let (tls, ca_pem) = self_signed_localhost();
    let mock = MockUpstream::start(MockConfig {
        tls: Some(tls),
        ..MockConfig::default()
    })
    .unwrap();
    assert!(mock.base_url().starts_with("https://localhost:"));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings_for(dir.path().join("data"), &mock);
    if trust {
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pem).unwrap();
        settings.upstream_ca_file = Some(ca);
    }
    let gateway = Gateway::start(settings.clone()).unwrap();
    let addr: SocketAddr = gateway.local_addr();
    let env = Env {
        mock,
        gateway: Some(gateway),
        addr,
        dir,
        settings,
    };
    for i in 0..2 {
        let v = env.post_json("/api/accounts/import", env.mock.auth_json(i).as_bytes());
        assert!(v["account"]["id"].is_string());
    }
    env
}

#[test]
fn turns_are_relayed_byte_identical_over_tls() {
    let env = tls_env(true);
    for (i, scenario) in [
        json!({"record": true}),
        json!({"record": true, "chunk_bytes": 7}),
    ]
    .iter()
    .enumerate()
    {
        let id = format!("tls-{i}");
        let reply = env.turn(
            &turn_body("over tls"),
            &[
                ("x-request-id", &id),
                ("x-mock-scenario", &scenario.to_string()),
            ],
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.terminal().unwrap()["type"], "response.completed");
        assert!(
            reply.body == env.mock.recorded_response(&id).unwrap(),
            "{scenario}: bytes differ over TLS"
        );
    }
    // Keep-alive TLS connections are pooled and reused.
    for _ in 0..4 {
        assert_eq!(env.turn(&turn_body("again"), &[]).status, 200);
    }
    let m = &env.get_json("/health")["metrics"];
    assert!(m["upstream_reused"].as_u64().unwrap() >= 3, "{m}");
    assert_eq!(env.summary()["totals"]["completed"], 6);
}

#[test]
fn an_untrusted_upstream_certificate_is_a_502() {
    let env = tls_env(false);
    let reply = env.turn(&turn_body("who are you"), &[]);
    assert_eq!(reply.status, 502, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["error"]["type"], "server_error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("TLS"),
        "{v}"
    );
    assert_eq!(env.mock.stats().requests_total, 0);
}
