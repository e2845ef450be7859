//! Quota-aware routing and token refresh against the mock's windows, clock and OAuth endpoint.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{turn_body, Env};
use loadtest::mock::MockConfig;

fn mock_ids(env: &Env) -> Vec<String> {
    env.mock
        .accounts()
        .into_iter()
        .map(|a| a.chatgpt_account_id)
        .collect()
}

fn gateway_ids(env: &Env) -> BTreeMap<String, String> {
    // chatgpt account id -> gateway account id
    env.get_json("/api/accounts")["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["chatgpt_account_id"].as_str().unwrap().to_string(),
                a["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn polling(s: &mut codex_lb::config::Settings) {
    s.usage_poll_interval = Duration::from_millis(200);
}

#[test]
fn capacity_weighted_follows_headroom_and_stops_at_the_cap() {
    let env = Env::start_with(3, polling);
    let ids = mock_ids(&env);
    for (id, used) in ids.iter().zip([10.0, 50.0, 95.0]) {
        env.mock.set_used_percent(id, used, 5.0);
    }
    let gw = gateway_ids(&env);
    for id in gw.values() {
        let r = ureq::request("PATCH", &env.url(&format!("/api/accounts/{id}")))
            .send_string(r#"{"cap_primary_percent":90}"#)
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // The gateway learns each account's windows from the usage endpoint.
    env.wait_for(Duration::from_secs(5), |e| {
        let list = e.get_json("/api/accounts");
        list["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| {
                a["quota"]["primary"]["used_percent"]
                    .as_f64()
                    .is_some_and(|u| u >= 10.0)
            })
            .then_some(())
    })
    .expect("quota learned from /wham/usage");
    let turns = |e: &Env| e.turns_by_account();
    let before = turns(&env);
    for i in 0..300 {
        assert_eq!(env.turn(&turn_body(&format!("q{i}")), &[]).status, 200);
    }
    let after = turns(&env);
    let n = |i: usize| {
        after.get(&ids[i]).copied().unwrap_or(0) - before.get(&ids[i]).copied().unwrap_or(0)
    };
    assert_eq!(
        n(2),
        0,
        "the account past its 90 % cap got traffic: {after:?} {}",
        env.get_json("/api/accounts")
    );
    assert!(
        n(0) > n(1),
        "more headroom, more traffic: {} vs {}",
        n(0),
        n(1)
    );
    assert!(n(1) >= 60, "the half-full account still shares: {}", n(1));
    let listed = env.get_json("/api/accounts");
    assert!(
        listed["accounts"][0]["quota"]["primary"]["reset_at"].is_u64(),
        "{listed}"
    );
}

#[test]
fn an_exhausted_pool_answers_429_and_resumes_on_its_own_after_the_reset() {
    let env = Env::start_custom(
        MockConfig {
            accounts: 2,
            token_ttl: Duration::from_secs(48 * 3600),
            ..MockConfig::default()
        },
        polling,
    );
    let ids = mock_ids(&env);
    for id in &ids {
        env.mock.set_used_percent(id, 100.0, 20.0);
    }
    let reply = env.turn(&turn_body("no quota"), &[]);
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert_eq!(reply.json()["error"]["type"], "usage_limit_reached");
    assert!(reply.json()["error"]["resets_at"].is_u64());
    // The upstream's window resets (its clock moves past the reset); polling notices, and traffic
    // flows again without anyone touching the gateway.
    env.mock.advance_clock(5 * 3600 + 60);
    let back = env.wait_for(Duration::from_secs(10), |e| {
        let r = e.turn(&turn_body("later"), &[]);
        (r.status == 200).then_some(r)
    });
    assert!(
        back.is_some(),
        "traffic did not resume after the window reset"
    );
}

#[test]
fn an_expired_token_is_refreshed_once_under_concurrent_requests() {
    let env = Env::start(1);
    let id = mock_ids(&env).remove(0);
    env.mock.expire_token(&id);
    let url = env.url("/backend-api/codex/responses");
    let workers: Vec<_> = (0..50)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let r = ureq::post(&url)
                    .timeout(Duration::from_secs(30))
                    .send_string(&turn_body(&format!("c{i}")));
                match r {
                    Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
                    Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
                    Err(e) => (0, e.to_string()),
                }
            })
        })
        .collect();
    for w in workers {
        let (status, body) = w.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("response.completed"));
    }
    assert_eq!(
        env.mock.refresh_calls(&id),
        1,
        "exactly one refresh for 50 requests"
    );
    let list = env.get_json("/api/accounts");
    assert_eq!(list["accounts"][0]["status"], "active");
    assert!(list["accounts"][0]["last_refresh_at"].is_u64());
    // The rotated tokens were stored: a restarted gateway still works without a new refresh.
    let mut env = env;
    env.restart();
    assert_eq!(env.turn(&turn_body("after restart"), &[]).status, 200);
    assert_eq!(env.mock.refresh_calls(&id), 1);
}

#[test]
fn a_refused_refresh_token_needs_a_new_sign_in_and_traffic_moves_elsewhere() {
    let env = Env::start(2);
    let ids = mock_ids(&env);
    env.mock.revoke_refresh_token(&ids[0]);
    env.mock.expire_token(&ids[0]);
    for i in 0..10 {
        let reply = env.turn(&turn_body(&format!("r{i}")), &[]);
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let gw = gateway_ids(&env);
    let list = env.get_json("/api/accounts");
    let first = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == gw[&ids[0]].as_str())
        .unwrap()
        .clone();
    assert_eq!(first["status"], "reauth_required", "{first}");
    assert!(
        first["status_reason"]
            .as_str()
            .unwrap()
            .contains("refresh_token_invalidated"),
        "{first}"
    );
    assert!(
        env.mock.refresh_calls(&ids[0]) <= 1,
        "a refused refresh token is not tried again"
    );
    // Resuming is refused until a fresh auth.json is imported.
    let resume =
        ureq::post(&env.url(&format!("/api/accounts/{}/resume", gw[&ids[0]]))).send_string("{}");
    assert!(matches!(resume, Err(ureq::Error::Status(409, _))));
}
