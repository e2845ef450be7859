//! Routing that keeps accounts healthy: conversations stay on one account, replayed turns go back
//! to the account that issued them, owners can pause accounts and switch strategies at run time.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{turn_body, turn_body_in, Env};

fn per_account(env: &Env) -> BTreeMap<String, u64> {
    env.turns_by_account()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn a_conversation_stays_on_one_account_and_moves_once_when_it_is_limited() {
    let env = Env::start(3);
    for i in 0..20 {
        let reply = env.turn(&turn_body_in(&format!("turn {i}"), "conversation-A"), &[]);
        assert_eq!(reply.status, 200);
    }
    let used = per_account(&env);
    assert_eq!(used.len(), 1, "one conversation, one account: {used:?}");
    let (first, _) = used.iter().next().map(|(a, n)| (a.clone(), *n)).unwrap();
    // Its account hits the usage limit: the conversation moves once, then stays.
    env.mock.fail_next(&first, 429, 1);
    let reply = env.turn(&turn_body_in("refused, then moved", "conversation-A"), &[]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The worker that met the limit tells the others through the control thread; a turn that
    // reached another worker before that would try the account once more (and fail over).
    env.wait_for(Duration::from_secs(5), |e| {
        e.get_json("/api/accounts")["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| {
                a["chatgpt_account_id"] == first.as_str() && a["block_reason"] == "usage_limit"
            })
            .then_some(())
    })
    .expect("the limited account is blocked pool-wide");
    for i in 1..10 {
        let reply = env.turn(&turn_body_in(&format!("after {i}"), "conversation-A"), &[]);
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let after = per_account(&env);
    assert_eq!(
        after.len(),
        2,
        "moved to exactly one other account: {after:?}"
    );
    assert_eq!(
        after[&first], 21,
        "the limited account saw only the refused turn"
    );
    // One move, counted by each worker that carried the conversation (two here).
    let moves = env.get_json("/health")["metrics"]["sticky_moves"]
        .as_u64()
        .unwrap();
    assert!((1..=2).contains(&moves), "sticky moves counted: {moves}");
}

#[test]
fn a_replayed_turn_state_goes_back_to_its_account() {
    let env = Env::start(3);
    let first = env.turn(&turn_body("start a turn"), &[]);
    assert_eq!(first.status, 200);
    let state = first
        .header("x-codex-turn-state")
        .expect("turn state on the reply")
        .to_string();
    let (account, upstream_state) = state.split_once('~').expect("account prefix");
    assert!(account.starts_with("acc_"), "{state}");
    // Later requests of the turn, in other conversations' clothing, all go to that account.
    for i in 0..6 {
        let reply = env.turn(
            &turn_body(&format!("follow-up {i}")),
            &[("x-codex-turn-state", &state)],
        );
        assert_eq!(reply.status, 200);
    }
    let used = per_account(&env);
    assert_eq!(used.len(), 1, "{used:?}");
    let acct = used.keys().next().unwrap();
    let seen = env.mock.last_request(acct).unwrap();
    assert_eq!(
        seen.header("x-codex-turn-state"),
        Some(upstream_state),
        "the upstream gets its own value back"
    );
    // Paused, that account can no longer serve the turn: a clear 409, not a silent move.
    let paused = env.post_json(&format!("/api/accounts/{account}/pause"), b"{}");
    assert_eq!(paused["account"]["status"], "paused", "{paused}");
    let reply = env.turn(&turn_body("one more"), &[("x-codex-turn-state", &state)]);
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(
        reply.json()["error"]["code"],
        "turn_state_account_unavailable"
    );
}

#[test]
fn a_continued_response_goes_back_to_the_account_that_produced_it() {
    let env = Env::start(3);
    let first = env.turn(&turn_body("the first turn"), &[]);
    assert_eq!(first.status, 200);
    let response_id = first.terminal().unwrap()["response"]["id"]
        .as_str()
        .expect("completed response id")
        .to_string();
    let owner = per_account(&env).keys().next().unwrap().clone();
    // Each continuation wears a conversation key of its own; only previous_response_id ties it
    // to the first turn, and that alone must bring it back to the same account.
    for i in 0..12 {
        let mut body: serde_json::Value =
            serde_json::from_str(&turn_body(&format!("continue {i}"))).unwrap();
        body["previous_response_id"] = response_id.clone().into();
        let reply = env.turn(&body.to_string(), &[]);
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let used = per_account(&env);
    assert_eq!(used.len(), 1, "{used:?}");
    assert_eq!(used[&owner], 13);
    // Unknown ids are routed as usual (the upstream has the last word on them).
    for i in 0..12 {
        let mut body: serde_json::Value =
            serde_json::from_str(&turn_body(&format!("unknown {i}"))).unwrap();
        body["previous_response_id"] = format!("resp_never_seen_{i}").into();
        assert_eq!(env.turn(&body.to_string(), &[]).status, 200);
    }
    assert!(per_account(&env).len() > 1, "{:?}", per_account(&env));
    // The owner paused: a clear 409 rather than another account that never saw the response.
    let list = env.get_json("/api/accounts");
    let gateway_id = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["chatgpt_account_id"] == owner.as_str())
        .map(|a| a["id"].as_str().unwrap().to_string())
        .expect("owner in the account list");
    let paused = env.post_json(&format!("/api/accounts/{gateway_id}/pause"), b"{}");
    assert_eq!(paused["account"]["status"], "paused", "{paused}");
    let mut body: serde_json::Value = serde_json::from_str(&turn_body("after pause")).unwrap();
    body["previous_response_id"] = response_id.into();
    let reply = env.turn(&body.to_string(), &[]);
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(
        reply.json()["error"]["code"],
        "previous_response_owner_unavailable"
    );
    assert_eq!(reply.json()["error"]["param"], "previous_response_id");
}

#[test]
fn paused_accounts_get_no_traffic_and_the_strategy_switches_at_run_time() {
    let env = Env::start(2);
    let list = env.get_json("/api/accounts");
    let ids: Vec<String> = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    let paused = env.post_json(&format!("/api/accounts/{}/pause", ids[0]), b"{}");
    assert_eq!(paused["account"]["status"], "paused");
    for i in 0..10 {
        assert_eq!(env.turn(&turn_body(&format!("p{i}")), &[]).status, 200);
    }
    assert_eq!(per_account(&env).len(), 1);
    let resumed = env.post_json(&format!("/api/accounts/{}/resume", ids[0]), b"{}");
    assert_eq!(resumed["account"]["status"], "active");

    // fill_first: every new conversation goes to the first account while it can serve.
    let put = ureq::put(&env.url("/api/settings"))
        .send_string(r#"{"strategy":"fill_first"}"#)
        .unwrap();
    assert_eq!(
        put.into_json::<serde_json::Value>().unwrap()["strategy"],
        "fill_first"
    );
    assert_eq!(env.get_json("/api/settings")["strategy"], "fill_first");
    env.mock.reset();
    for i in 0..10 {
        assert_eq!(env.turn(&turn_body(&format!("f{i}")), &[]).status, 200);
    }
    assert_eq!(
        per_account(&env).len(),
        1,
        "fill_first drains one account first"
    );
    // round_robin without conversation keys alternates evenly.
    ureq::put(&env.url("/api/settings"))
        .send_string(r#"{"strategy":"round_robin"}"#)
        .unwrap();
    env.mock.reset();
    // No conversation to keep together: no cache key, and nothing the gateway could derive one
    // from (no instructions, no user message).
    let body = r#"{"model":"gpt-5.5","stream":true,"store":false,"input":[]}"#;
    for _ in 0..20 {
        assert_eq!(env.turn(body, &[]).status, 200);
    }
    let spread = per_account(&env);
    assert!(spread.values().all(|n| (8..=12).contains(n)), "{spread:?}");
    let bad = ureq::put(&env.url("/api/settings")).send_string(r#"{"strategy":"random"}"#);
    assert!(matches!(bad, Err(ureq::Error::Status(400, _))));
}

#[test]
fn owner_caps_and_priorities_through_the_admin_api() {
    let env = Env::start(2);
    let ids: Vec<String> = env.get_json("/api/accounts")["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    let patched = ureq::request("PATCH", &env.url(&format!("/api/accounts/{}", ids[1])))
        .send_string(r#"{"priority":"burn_first","cap_primary_percent":80}"#)
        .unwrap()
        .into_json::<serde_json::Value>()
        .unwrap();
    assert_eq!(patched["account"]["priority"], "burn_first");
    assert_eq!(patched["account"]["cap_primary_percent"], 80.0);
    for i in 0..8 {
        assert_eq!(env.turn(&turn_body(&format!("b{i}")), &[]).status, 200);
    }
    let used = per_account(&env);
    assert_eq!(
        used.len(),
        1,
        "burn_first takes everything while it can: {used:?}"
    );
    let bad = ureq::request("PATCH", &env.url(&format!("/api/accounts/{}", ids[1])))
        .send_string(r#"{"cap_primary_percent":150}"#);
    assert!(matches!(bad, Err(ureq::Error::Status(400, _))));
}

#[test]
fn an_owner_can_pace_an_account_per_minute() {
    let env = Env::start(2);
    let list = env.get_json("/api/accounts");
    let ids: Vec<(String, String)> = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_string(),
                a["chatgpt_account_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pace = |id: &str, rpm: serde_json::Value| {
        let r = ureq::patch(&env.url(&format!("/api/accounts/{id}")))
            .send_string(&serde_json::json!({ "requests_per_minute": rpm }).to_string())
            .unwrap()
            .into_json::<serde_json::Value>()
            .unwrap();
        assert_eq!(r["account"]["requests_per_minute"], rpm, "{r}");
    };
    // Room in this minute for the whole test.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if secs > 50 {
        std::thread::sleep(std::time::Duration::from_secs(61 - secs));
    }
    // Round robin, so both accounts are asked for in turn and the pace (not chance) decides.
    ureq::put(&env.url("/api/settings"))
        .send_string(r#"{"strategy":"round_robin"}"#)
        .unwrap();
    pace(&ids[0].0, 3.into());
    for i in 0..12 {
        let body = turn_body(&format!("paced {i}")).replace("\"prompt_cache_key\"", "\"no_key\"");
        assert_eq!(env.turn(&body, &[]).status, 200);
    }
    let used = per_account(&env);
    assert_eq!(used.get(&ids[0].1).copied().unwrap_or(0), 3, "{used:?}");
    assert_eq!(used[&ids[1].1], 9);
    // Both at their pace: a 429 that says when, not a queue.
    pace(&ids[1].0, 1.into());
    let r = env.turn(&turn_body("over"), &[]);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "account_rate_limit");
    assert!(r.header("retry-after").is_some());
    pace(&ids[0].0, serde_json::Value::Null);
    assert_eq!(env.turn(&turn_body("unpaced"), &[]).status, 200);
}
