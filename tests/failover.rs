//! Account selection and failover before the first byte.

mod common;

use common::{turn_body, Env};

fn account_ids(env: &Env) -> Vec<String> {
    env.mock
        .accounts()
        .into_iter()
        .map(|a| a.chatgpt_account_id)
        .collect()
}

#[test]
fn requests_spread_over_both_accounts() {
    let env = Env::start(2);
    // Each turn is its own conversation, placed by hashing: 40 of them land on both accounts
    // (fewer than 8 on one has a chance of about 1 in 50 000).
    for _ in 0..40 {
        assert_eq!(env.turn(&turn_body("spread"), &[]).status, 200);
    }
    let turns = env.turns_by_account();
    let counts: Vec<u64> = account_ids(&env)
        .iter()
        .map(|a| turns.get(a).copied().unwrap_or(0))
        .collect();
    assert!(counts.iter().all(|c| *c >= 8), "uneven spread: {counts:?}");
    let both = env.wait_for(std::time::Duration::from_secs(2), |e| {
        let summary = e.summary();
        (summary["by_account"].as_object().unwrap().len() == 2).then_some(())
    });
    assert!(
        both.is_some(),
        "usage recorded for both accounts: {}",
        env.summary()
    );
}

/// Arms a failure on the first account, then sends turns until the mock has served it; every
/// client must still get a complete answer.
fn survives_failure_on_one_account(status: u16) -> Env {
    let env = Env::start(2);
    let failing = account_ids(&env)[0].clone();
    env.mock.fail_next(&failing, status, 1);
    // Conversations spread over both accounts: within 20 the failing one is chosen.
    for _ in 0..20 {
        let reply = env.turn(&turn_body("failover"), &[]);
        assert_eq!(reply.status, 200, "{status}: {}", reply.text());
        assert_eq!(
            reply.terminal().expect("terminal")["type"],
            "response.completed"
        );
        if env.mock.stats().rejected_by_status.get(&status).copied() == Some(1) {
            break;
        }
    }
    let stats = env.mock.stats();
    assert_eq!(
        stats.rejected_by_status.get(&status),
        Some(&1),
        "the armed {status} was served: {stats:?}"
    );
    let health = env.get_json("/health");
    assert!(
        health["metrics"]["failovers"].as_u64().unwrap() >= 1,
        "{health}"
    );
    env
}

#[test]
fn a_500_on_one_account_fails_over_to_the_other() {
    survives_failure_on_one_account(500);
}

#[test]
fn a_429_on_one_account_fails_over_and_blocks_it_pool_wide() {
    let env = survives_failure_on_one_account(429);
    let failing = account_ids(&env)[0].clone();
    let blocked = env
        .wait_for(std::time::Duration::from_secs(2), |e| {
            let list = e.get_json("/api/accounts");
            list["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["chatgpt_account_id"] == failing.as_str())
                .and_then(|a| {
                    (a["block_reason"] == "usage_limit")
                        .then(|| a["blocked_until"].as_u64())
                        .flatten()
                })
        })
        .expect("account shown as blocked");
    assert!(blocked > codex_lb::accounts::now_unix());
    // While blocked, every turn goes to the other account: the mock sees no more requests for it.
    let before = env.turns_by_account().get(&failing).copied();
    for _ in 0..4 {
        assert_eq!(env.turn(&turn_body("after block"), &[]).status, 200);
    }
    assert_eq!(env.turns_by_account().get(&failing).copied(), before);
}

#[test]
fn both_accounts_exhausted_answers_429_usage_limit_with_reset() {
    let env = Env::start(2);
    for a in account_ids(&env) {
        env.mock.set_used_percent(&a, 100.0, 40.0);
    }
    let reply = env.turn(&turn_body("no quota"), &[]);
    assert_eq!(reply.status, 429, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["error"]["type"], "usage_limit_reached");
    assert_eq!(v["error"]["code"], "usage_limit_reached");
    let resets_at = v["error"]["resets_at"].as_u64().expect("resets_at");
    assert!(resets_at > codex_lb::accounts::now_unix());
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Try again in"));
    // Once the control thread has told every worker, the next turn is answered without asking
    // the upstream.
    env.wait_for(std::time::Duration::from_secs(2), |e| {
        let list = e.get_json("/api/accounts");
        list["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["block_reason"] == "usage_limit")
            .then_some(())
    })
    .expect("both accounts blocked");
    let seen = env.mock.stats().requests_total;
    let again = env.turn(&turn_body("still no quota"), &[]);
    assert_eq!(again.status, 429);
    assert_eq!(again.json()["error"]["resets_at"].as_u64(), Some(resets_at));
    assert_eq!(env.mock.stats().requests_total, seen);
}

#[test]
fn no_accounts_is_a_503_envelope() {
    let env = Env::start(0);
    let reply = env.turn(&turn_body("anyone?"), &[]);
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["error"]["code"], "no_accounts");
}

#[test]
fn non_retryable_upstream_errors_are_relayed_as_they_are() {
    let env = Env::start(2);
    let body = turn_body("x").replace("gpt-5.5", "gpt-unknown");
    let reply = env.turn(&body, &[]);
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not supported"),
        "{}",
        reply.text()
    );
    // Rate-limit headers of the upstream reply reach the client.
    assert!(reply.header("x-codex-primary-used-percent").is_some());
    // Only one account was tried: a 400 is the request's fault, not the account's.
    let total: u64 = env.turns_by_account().values().sum();
    assert_eq!(total, 1);
}

#[test]
fn identity_headers_are_forwarded_and_auth_is_replaced() {
    // The request carries X-Forwarded-For, which takes away the key-less loopback use (see
    // tests/access.rs); this test is about which headers go upstream, so remote use is allowed.
    let env = Env::start_with(1, |s| s.insecure_allow_remote = true);
    let reply = env.turn(
        &turn_body("headers"),
        &[
            ("authorization", "Bearer client-secret"),
            ("originator", "codex_exec"),
            ("session-id", "sess-1"),
            ("x-codex-turn-metadata", "{\"turn\":1}"),
            ("user-agent", "codex_exec/0.169.0 (Linux; x86_64) test"),
            ("x-forwarded-for", "10.0.0.1"),
        ],
    );
    assert_eq!(reply.status, 200);
    let acct = &env.mock.accounts()[0];
    let seen = env
        .mock
        .last_request(&acct.chatgpt_account_id)
        .expect("recorded");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {}", acct.access_token).as_str())
    );
    assert_eq!(
        seen.header("chatgpt-account-id"),
        Some(acct.chatgpt_account_id.as_str())
    );
    assert_eq!(seen.header("originator"), Some("codex_exec"));
    assert_eq!(seen.header("session-id"), Some("sess-1"));
    assert_eq!(seen.header("x-codex-turn-metadata"), Some("{\"turn\":1}"));
    assert_eq!(
        seen.header("user-agent"),
        Some("codex_exec/0.169.0 (Linux; x86_64) test")
    );
    assert_eq!(seen.header("x-forwarded-for"), None);
    assert_eq!(
        seen.body_json().expect("json body")["input"][0]["content"][0]["text"],
        "headers"
    );
}
