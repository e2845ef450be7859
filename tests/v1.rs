//! The OpenAI-compatible side beyond what the SDK test drives: remote compaction, the pool's
//! usage view for the Codex CLI's `/status`, request errors, and key auth on every route.

mod common;

use common::{turn_body, Env};
use serde_json::{json, Value};

fn post(env: &Env, path: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = ureq::post(&env.url(path)).set("content-type", "application/json");
    for (k, v) in headers {
        req = req.set(k, v);
    }
    match req.send_string(&body.to_string()) {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap()),
        Err(e) => panic!("{path}: {e}"),
    }
}

fn compaction_request() -> Value {
    json!({
        "model": "gpt-5.5",
        "instructions": "You are Codex.",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Fix the bug."}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Now the tests."}]}
        ],
        "tools": [], "parallel_tool_calls": false
    })
}

#[test]
fn remote_compaction_goes_through_the_pool_with_failover_and_is_recorded() {
    let env = Env::start(2);
    for path in [
        "/backend-api/codex/responses/compact",
        "/v1/responses/compact",
    ] {
        let (status, v) = post(&env, path, &compaction_request(), &[]);
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["object"], "response.compaction");
        let output = v["output"].as_array().unwrap();
        assert_eq!(
            output.len(),
            3,
            "two user messages kept, one compaction: {v}"
        );
        let last = output.last().unwrap();
        assert_eq!(last["type"], "compaction");
        assert!(last["encrypted_content"].as_str().unwrap().len() > 8);
    }
    // An account failing before the reply: the next one answers (whichever request meets it).
    let first = env.mock.accounts()[0].chatgpt_account_id.clone();
    env.mock.fail_next(&first, 502, 1);
    let mut sent = 2;
    let failed_over = loop {
        let (status, v) = post(
            &env,
            "/backend-api/codex/responses/compact",
            &compaction_request(),
            &[],
        );
        assert_eq!(status, 200, "{v}");
        sent += 1;
        let rows = env.get_json("/api/requests?limit=1");
        if rows["requests"][0]["attempts"] == 2 {
            break true;
        }
        if sent >= 12 {
            break false;
        }
    };
    assert!(failed_over, "no compaction met the failing account");
    let rows = env.get_json("/api/requests?limit=20");
    let compacts: Vec<&Value> = rows["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["route"] == "compact")
        .collect();
    assert_eq!(compacts.len(), sent);
    for r in compacts {
        assert_eq!(r["outcome"], "completed", "{r}");
        assert!(r["total_tokens"].as_u64().unwrap() > 100, "{r}");
        assert!(r["cost_micro_usd"].as_u64().is_some(), "priced: {r}");
    }
    // Bad input is the client's error, in the OpenAI envelope.
    let (status, v) = post(
        &env,
        "/backend-api/codex/responses/compact",
        &json!({"input": []}),
        &[],
    );
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "model");
}

#[test]
fn the_cli_usage_view_shows_the_pool() {
    let env = Env::start(2);
    for i in 0..4 {
        assert_eq!(env.turn(&turn_body(&format!("u{i}")), &[]).status, 200);
    }
    // Readings reach the published snapshot on the control thread's next tick.
    env.wait_for(std::time::Duration::from_secs(3), |e| {
        let v = e.get_json("/backend-api/wham/usage");
        v["rate_limit"]["primary_window"]["used_percent"]
            .is_number()
            .then_some(())
    })
    .expect("the pool's windows appear");
    for path in ["/backend-api/wham/usage", "/api/codex/usage"] {
        let v = env.get_json(path);
        assert_eq!(v["plan_type"], "plus", "{v}");
        assert_eq!(v["rate_limit"]["allowed"], true);
        assert_eq!(v["rate_limit"]["limit_reached"], false);
        let primary = &v["rate_limit"]["primary_window"];
        assert!(primary["used_percent"].as_f64().unwrap() >= 0.0, "{v}");
        assert_eq!(primary["limit_window_seconds"], 18_000);
        assert_eq!(v["pool"]["active"], 2);
    }
    // Every account used up: the view says so.
    for a in env.mock.accounts() {
        env.mock
            .set_used_percent(&a.chatgpt_account_id, 100.0, 50.0);
    }
    for _ in 0..3 {
        env.turn(&turn_body("exhaust"), &[]);
    }
    let reached = env.wait_for(std::time::Duration::from_secs(3), |e| {
        let v = e.get_json("/backend-api/wham/usage");
        (v["rate_limit"]["limit_reached"] == true).then_some(v)
    });
    assert!(
        reached.is_some(),
        "{}",
        env.get_json("/backend-api/wham/usage")
    );
}

#[test]
fn v1_errors_are_openai_envelopes_and_keys_guard_every_route() {
    let env = Env::start(1);
    let (status, v) = post(
        &env,
        "/v1/chat/completions",
        &json!({"model": "gpt-5.5", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
        &[],
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "n");
    let (status, v) = post(
        &env,
        "/v1/responses",
        &json!({"model": "gpt-5.5", "input": 5}),
        &[],
    );
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "input");
    // A non-streamed Responses call gets the final object, with the mock's text in its output.
    let (status, v) = post(
        &env,
        "/v1/responses",
        &json!({"model": "gpt-5.5", "input": "hi [[mock {\"text\":\"plain json\"}]]"}),
        &[],
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "response");
    let message = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "message")
        .expect("a message item");
    assert_eq!(message["content"][0]["text"], "plain json", "{v}");

    ureq::put(&env.url("/api/settings"))
        .send_string(r#"{"api_key_auth": true}"#)
        .unwrap();
    for (path, body) in [
        ("/v1/responses", json!({"model": "gpt-5.5", "input": "x"})),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-5.5", "messages": []}),
        ),
        ("/backend-api/codex/responses/compact", compaction_request()),
    ] {
        let (status, v) = post(&env, path, &body, &[]);
        assert_eq!(status, 401, "{path}: {v}");
        assert_eq!(v["error"]["code"], "invalid_api_key");
    }
    let r = ureq::get(&env.url("/v1/models")).call();
    assert!(matches!(r, Err(ureq::Error::Status(401, _))));
    let key = env.post_json("/api/keys", br#"{"name": "v1"}"#)["key"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = format!("Bearer {key}");
    let (status, v) = post(
        &env,
        "/v1/chat/completions",
        &json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi [[mock {\"text\":\"keyed\"}]]"}]}),
        &[("authorization", &auth)],
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "keyed");
}

/// SDK callers rarely send `prompt_cache_key`: the gateway derives one from the opening of the
/// conversation, so its turns stay on one account and the upstream sees the same key each time.
#[test]
fn sdk_conversations_without_a_cache_key_stay_on_one_account() {
    let env = Env::start(3);
    let turn = |opening: &str, n: usize| {
        let mut input = vec![json!({"role": "user", "content": opening})];
        for i in 0..n {
            input.push(json!({"role": "assistant", "content": format!("answer {i}")}));
            input.push(json!({"role": "user", "content": format!("follow-up {i}")}));
        }
        let (s, v) = post(
            &env,
            "/v1/responses",
            &json!({"model": "gpt-5.5", "instructions": "You are terse.", "input": input}),
            &[],
        );
        assert_eq!(s, 200, "{v}");
    };
    let accounts: Vec<String> = env
        .mock
        .accounts()
        .into_iter()
        .map(|a| a.chatgpt_account_id)
        .collect();
    let upstream_keys = |env: &Env| -> Vec<(String, String)> {
        accounts
            .iter()
            .filter_map(|id| {
                let r = env.mock.last_request(id)?;
                let b: Value = serde_json::from_slice(&r.body).ok()?;
                Some((id.clone(), b["prompt_cache_key"].as_str()?.to_string()))
            })
            .collect()
    };
    let before = env.turns_by_account();
    for n in 0..6 {
        turn("plan the migration", n);
    }
    let after = env.turns_by_account();
    let used: Vec<&String> = after
        .iter()
        .filter(|(id, n)| **n > before.get(*id).copied().unwrap_or(0))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(used.len(), 1, "one conversation, one account: {after:?}");
    let keys = upstream_keys(&env);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].1.starts_with("clb-"), "{keys:?}");
    // Other conversations spread over the pool rather than all landing on that account.
    for c in 0..12 {
        turn(&format!("conversation {c}"), 0);
    }
    let spread = env.turns_by_account().values().filter(|n| **n > 0).count();
    assert!(spread >= 2, "{:?}", env.turns_by_account());
}
