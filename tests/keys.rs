//! Proxy API keys: authentication errors, revocation on every worker, per-key budgets, model and
//! effort rules, stream caps, hidden quota headers, and the `keys` command.

mod common;

use std::time::Duration;

use common::{cli, turn_body, Env};
use serde_json::{json, Value};

fn create_key(env: &Env, spec: Value) -> (String, Value) {
    let v = env.post_json("/api/keys", spec.to_string().as_bytes());
    let key = v["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    (key, v["api_key"].clone())
}

fn set(env: &Env, settings: Value) -> Value {
    ureq::put(&env.url("/api/settings"))
        .send_string(&settings.to_string())
        .unwrap()
        .into_json()
        .unwrap()
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn with_key_auth_on_every_turn_needs_a_live_key_and_each_refusal_says_why() {
    let env = Env::start(1);
    assert_eq!(
        set(&env, json!({"api_key_auth": true}))["api_key_auth"],
        true
    );
    let (alice, info) = create_key(&env, json!({"name": "alice"}));
    assert!(alice.starts_with("sk-clb-"), "{alice}");
    assert_eq!(info["status"], "active");
    let listed = env.get_json("/api/keys").to_string();
    assert!(!listed.contains(&alice[7..]), "the secret is never listed");

    let refused = |headers: &[(&str, &str)]| {
        let r = env.turn(&turn_body("hi"), headers);
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid_api_key");
        r.json()["error"]["message"].as_str().unwrap().to_string()
    };
    assert!(refused(&[]).contains("Missing API key"));
    assert!(refused(&[("authorization", "Bearer sk-clb-nope")]).contains("Invalid API key"));
    assert_eq!(
        env.turn(&turn_body("hi"), &[("authorization", &bearer(&alice))])
            .status,
        200
    );
    let (late, _) = create_key(&env, json!({"name": "late", "expires_at": now() - 1}));
    assert!(refused(&[("authorization", &bearer(&late))]).contains("expired"));

    // Revoked: refused by every worker from the next request on (both workers get a turn).
    let id = info["id"].as_str().unwrap();
    let revoked = ureq::delete(&env.url(&format!("/api/keys/{id}")))
        .call()
        .unwrap()
        .into_json::<Value>()
        .unwrap();
    assert_eq!(revoked["api_key"]["status"], "revoked");
    for _ in 0..4 {
        assert!(refused(&[("authorization", &bearer(&alice))]).contains("revoked"));
    }
    // The models route is a proxy route too.
    let models = ureq::get(&env.url("/backend-api/codex/models")).call();
    assert!(matches!(models, Err(ureq::Error::Status(401, _))));
    // Refusals are recorded with their key.
    let rows = env.get_json("/api/requests?limit=20");
    assert!(rows["requests"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["key_id"] == id && r["status"] == 401));
}

#[test]
fn a_daily_token_budget_cuts_off_after_the_request_that_crosses_it() {
    let env = Env::start(1);
    let (key, info) = create_key(
        &env,
        json!({"name": "budget", "limits": [{"kind": "total_tokens", "window": "daily", "limit": 1000}]}),
    );
    let auth = bearer(&key);
    let mut served = 0;
    let refusal = loop {
        let r = env.turn(&turn_body("count my tokens"), &[("authorization", &auth)]);
        if r.status != 200 {
            break r;
        }
        served += 1;
        assert!(served < 100, "the budget never cut in");
    };
    assert!(served >= 1);
    assert_eq!(refusal.status, 429, "{}", refusal.text());
    let e = &refusal.json()["error"];
    assert_eq!(e["code"], "rate_limit_exceeded");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("total_tokens daily") && msg.contains("Usage resets at"),
        "{msg}"
    );
    assert!(
        msg.contains("T00:00:00Z"),
        "a daily window resets at UTC midnight: {msg}"
    );
    let retry: u64 = refusal.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry));
    // The budget was crossed by the last request served, not before it.
    let keys = env.get_json("/api/keys");
    let k = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == info["id"])
        .unwrap();
    let used = k["limits"][0]["used"].as_f64().unwrap();
    let per_turn = used / served as f64;
    assert!(
        used >= 1000.0 && used - per_turn < 1000.0,
        "used {used} in {served} turns"
    );
    // Other keys and keyless loopback callers are unaffected.
    assert_eq!(env.turn(&turn_body("free"), &[]).status, 200);
}

#[test]
fn model_effort_rpm_and_stream_rules() {
    let env = Env::start(1);
    let (key, _) = create_key(
        &env,
        json!({"name": "rules", "allowed_models": ["gpt-5.5"], "allowed_efforts": ["low", "medium"],
               "requests_per_minute": 5, "max_streams": 1}),
    );
    let auth = bearer(&key);
    let with_effort = |effort: &str| {
        let mut b: Value = serde_json::from_str(&turn_body("think")).unwrap();
        b["reasoning"] = json!({"effort": effort});
        b.to_string()
    };
    let r = env.turn(&with_effort("high"), &[("authorization", &auth)]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "reasoning_effort_not_allowed");
    assert_eq!(r.json()["error"]["param"], "reasoning.effort");
    let other_model = turn_body("x").replace("\"gpt-5.5\"", "\"gpt-5.4\"");
    let r = env.turn(&other_model, &[("authorization", &auth)]);
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "model_not_allowed");
    // The key's model picker shows only what it may use.
    let models: Value = ureq::get(&env.url("/backend-api/codex/models"))
        .set("authorization", &auth)
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let slugs: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, vec!["gpt-5.5"]);

    // One stream at a time: a second while the first drips is refused.
    let slow = std::thread::spawn({
        let url = env.url("/backend-api/codex/responses");
        let auth = auth.clone();
        let body = turn_body("slow");
        move || {
            ureq::post(&url)
                .set("authorization", &auth)
                .set("x-mock-scenario", r#"{"deltas": 5, "delay_ms": 200}"#)
                .send_string(&body)
                .map(|r| r.into_string().unwrap().len())
                .map_err(|e| e.to_string())
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let r = env.turn(&with_effort("low"), &[("authorization", &auth)]);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "api_key_stream_limit");
    assert!(slow.join().unwrap().is_ok());

    // Requests per minute hold exactly across both workers (the counter is shared): a fresh key,
    // and a burst that does not straddle a minute boundary.
    let (key, _) = create_key(&env, json!({"name": "rpm", "requests_per_minute": 5}));
    let auth = bearer(&key);
    if now() % 60 > 54 {
        std::thread::sleep(Duration::from_secs(60 - now() % 60));
    }
    let statuses: Vec<u16> = (0..8)
        .map(|i| {
            std::thread::spawn({
                let url = env.url("/backend-api/codex/responses");
                let auth = auth.clone();
                let body = turn_body(&format!("burst {i}"));
                move || match ureq::post(&url)
                    .set("authorization", &auth)
                    .send_string(&body)
                {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(s, _)) => s,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (5, 3), "{statuses:?}");
}

#[test]
fn quota_headers_can_be_hidden_from_key_holders() {
    let env = Env::start(1);
    let (key, _) = create_key(&env, json!({"name": "q"}));
    let quota = |r: &common::Reply| r.header("x-codex-primary-used-percent").is_some();
    assert!(quota(
        &env.turn(&turn_body("a"), &[("authorization", &bearer(&key))])
    ));
    assert_eq!(
        set(&env, json!({"hide_quota_headers": true}))["hide_quota_headers"],
        true
    );
    let r = env.turn(&turn_body("b"), &[("authorization", &bearer(&key))]);
    assert_eq!(r.status, 200);
    assert!(!quota(&r), "hidden from key holders");
    assert!(r.header("x-codex-turn-state").is_some() || r.header("x-request-id").is_some());
    // Error replies relayed from the upstream hide them too.
    let acct = env.mock.accounts()[0].chatgpt_account_id.clone();
    env.mock.fail_next(&acct, 400, 2);
    let r = env.turn(&turn_body("bad"), &[("authorization", &bearer(&key))]);
    assert_eq!(r.status, 400);
    assert!(!quota(&r), "hidden on relayed errors");
    // The owner on loopback without a key still sees them.
    let r = env.turn(&turn_body("bad again"), &[]);
    assert_eq!(r.status, 400);
    assert!(quota(&r), "the upstream's 4xx carries them");
    assert!(quota(&env.turn(&turn_body("c"), &[])));
}

#[test]
fn keys_command_creates_lists_updates_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let out = cli(&[
        "keys",
        "--data-dir",
        d,
        "create",
        "--name",
        "bob",
        "--limit",
        "total_tokens:daily:5000",
        "--rpm",
        "30",
        "--expires-in",
        "30d",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(secret.starts_with("sk-clb-"), "{secret}");
    let list = |extra: &[&str]| {
        let mut a = vec!["keys", "--data-dir", d, "list"];
        a.extend_from_slice(extra);
        cli(&a)
    };
    let v: Value = serde_json::from_slice(&list(&["--json"]).stdout).unwrap();
    let k = &v[0];
    assert_eq!(k["name"], "bob");
    assert_eq!(k["requests_per_minute"], 30);
    assert_eq!(k["limits"][0]["limit"], 5000.0);
    assert!(k["expires_at"].as_u64().unwrap() > now() + 29 * 86_400);
    let id = k["id"].as_str().unwrap().to_string();
    let table = String::from_utf8_lossy(&list(&[]).stdout).to_string();
    assert!(table.contains("bob") && table.contains("30 rpm"), "{table}");
    let out = cli(&[
        "keys",
        "--data-dir",
        d,
        "update",
        &id,
        "--rpm",
        "none",
        "--allow-model",
        "gpt-5.5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&list(&["--json"]).stdout).unwrap();
    assert!(v[0]["requests_per_minute"].is_null());
    assert_eq!(v[0]["allowed_models"], json!(["gpt-5.5"]));
    let bad = cli(&[
        "keys",
        "--data-dir",
        d,
        "update",
        &id,
        "--limit",
        "tokens:daily:1",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("total_tokens"));
    assert!(cli(&["keys", "--data-dir", d, "revoke", &id])
        .status
        .success());
    let v: Value = serde_json::from_slice(&list(&["--json"]).stdout).unwrap();
    assert_eq!(v[0]["status"], "revoked");
    // Only the hash is stored.
    for f in std::fs::read_dir(data.join("db")).unwrap().flatten() {
        if f.path().is_file() {
            let bytes = std::fs::read(f.path()).unwrap();
            assert!(!bytes.windows(20).any(|w| w == &secret.as_bytes()[7..27]));
        }
    }
}

#[test]
fn each_request_carries_its_cost_and_key_budgets_survive_a_restart() {
    let mut env = Env::start(1);
    let (key, info) = create_key(
        &env,
        json!({"name": "cost", "limits": [
            {"kind": "cost_usd", "window": "monthly", "limit": 100.0},
            {"kind": "total_tokens", "window": "daily", "limit": 1000000}
        ]}),
    );
    let id = info["id"].as_str().unwrap().to_string();
    let auth = bearer(&key);
    let r = env.turn(&turn_body("price me"), &[("authorization", &auth)]);
    assert_eq!(r.status, 200);
    let usage = r.terminal().unwrap()["response"]["usage"].clone();
    let (input, cached, output) = (
        usage["input_tokens"].as_u64().unwrap(),
        usage["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0),
        usage["output_tokens"].as_u64().unwrap(),
    );
    assert!(input > 0 && output > 0);
    // gpt-5.5: $5 in, $0.50 cached in, $30 out per 1M tokens = micro-dollars per token.
    let expected =
        ((input - cached) as f64 * 5.0 + cached as f64 * 0.5 + output as f64 * 30.0).round() as u64;
    let rows = env.get_json("/api/requests?limit=1");
    assert_eq!(rows["requests"][0]["cost_micro_usd"], expected, "{rows}");
    let summary = env.summary();
    assert_eq!(
        summary["by_key"][&id]["cost_micro_usd"], expected,
        "{summary}"
    );

    // A model without a price is recorded with its cost unknown, never as free.
    let unpriced = turn_body("no price").replace("\"gpt-5.5\"", "\"gpt-6-preview\"");
    assert_eq!(env.turn(&unpriced, &[("authorization", &auth)]).status, 200);
    let rows = env.get_json("/api/requests?limit=1");
    assert!(rows["requests"][0]["cost_micro_usd"].is_null(), "{rows}");
    assert_eq!(env.summary()["totals"]["unpriced_requests"], 1);

    let used = |env: &Env| {
        let keys = env.get_json("/api/keys");
        let k = keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id.as_str())
            .unwrap()
            .clone();
        (
            k["limits"][0]["used"].as_f64().unwrap(),
            k["limits"][1]["used"].as_f64().unwrap(),
        )
    };
    let before = used(&env);
    assert!(
        (before.0 - expected as f64 / 1e6).abs() < 1e-9,
        "{before:?}"
    );
    assert!(
        before.1 > (input + output) as f64,
        "both requests count tokens: {before:?}"
    );
    env.restart();
    assert_eq!(
        used(&env),
        before,
        "a restart keeps what the key spent this window"
    );
}

#[test]
fn a_key_holder_reads_its_own_limits_and_use_at_v1_usage() {
    let env = Env::start(1);
    let (key, _) = create_key(
        &env,
        json!({"name": "self", "requests_per_minute": 50, "max_streams": 3,
               "limits": [{"kind": "total_tokens", "window": "daily", "limit": 100000}]}),
    );
    let auth = bearer(&key);
    assert_eq!(
        env.turn(&turn_body("spend"), &[("authorization", &auth)])
            .status,
        200
    );
    let usage = |auth: Option<&str>| {
        let mut req = ureq::get(&env.url("/v1/usage"));
        if let Some(a) = auth {
            req = req.set("authorization", a);
        }
        match req.call() {
            Ok(r) => (r.status(), r.into_json::<Value>().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_json::<Value>().unwrap()),
            Err(e) => panic!("{e}"),
        }
    };
    // The ledger settles the turn's tokens after it ends.
    let v = env
        .wait_for(Duration::from_secs(5), |_| {
            let (s, v) = usage(Some(&auth));
            assert_eq!(s, 200, "{v}");
            (v["limits"][0]["used"].as_u64() > Some(0)).then_some(v)
        })
        .expect("the turn's tokens count against the daily limit");
    assert_eq!(v["key"]["name"], "self");
    let used = v["limits"][0]["used"].as_u64().unwrap();
    assert_eq!(
        v["limits"][0]["remaining"].as_u64().unwrap(),
        100_000 - used
    );
    assert_eq!(v["limits"][0]["window"], "daily");
    assert!(v["limits"][0]["resets_at"].as_u64().unwrap() > now());
    assert_eq!(v["requests_per_minute"]["limit"], 50);
    assert!(
        v["requests_per_minute"]["used"].as_u64().unwrap() >= 1,
        "{v}"
    );
    assert_eq!(v["streams"]["limit"], 3);
    assert_eq!(v["allowed_accounts"], json!([]));
    assert_eq!(v["upstream"]["rate_limit"]["allowed"], true, "{v}");
    // The owner can hide the pool's quota from key holders.
    set(&env, json!({"hide_quota_headers": true}));
    assert!(usage(Some(&auth)).1["upstream"].is_null());
    // Only a key has usage to report; a wrong one is refused too.
    let (s, v) = usage(None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("api_key_required")),
        "{v}"
    );
    let (s, _) = usage(Some("Bearer sk-clb-not-a-key"));
    assert_eq!(s, 401);
}

/// The pool's accounts as the gateway lists them: (gateway id, ChatGPT account id).
fn pool(env: &Env) -> Vec<(String, String)> {
    env.get_json("/api/accounts")["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_string(),
                a["chatgpt_account_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn patch_key(env: &Env, id: &str, patch: Value) -> (u16, Value) {
    match ureq::patch(&env.url(&format!("/api/keys/{id}"))).send_string(&patch.to_string()) {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

fn post(env: &Env, path: &str) -> (u16, Value) {
    match ureq::post(&env.url(path)).call() {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

fn listed(env: &Env, id: &str) -> Value {
    env.get_json("/api/keys")["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no key {id}"))
}

/// Turns each account served since `before`, by ChatGPT account id.
fn served_since(
    env: &Env,
    before: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    env.turns_by_account()
        .into_iter()
        .map(|(k, n)| {
            let was = before.get(&k).copied().unwrap_or(0);
            (k, n - was)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn a_key_bound_to_one_account_is_served_by_it_alone() {
    let env = Env::start(3);
    let accounts = pool(&env);
    assert_eq!(accounts.len(), 3);
    let (mine, mine_upstream) = accounts[1].clone();
    let (other, _) = accounts[0].clone();
    let (key, info) = create_key(&env, json!({"name": "bound", "allowed_accounts": [mine]}));
    assert_eq!(info["allowed_accounts"], json!([mine]));
    assert_eq!(info["unknown_accounts"], json!([]));
    let id = info["id"].as_str().unwrap().to_string();
    let auth = bearer(&key);

    // Ten conversations, each of which the pool alone would spread over all three accounts.
    let before = env.turns_by_account();
    for i in 0..10 {
        let r = env.turn(
            &turn_body(&format!("bound {i}")),
            &[("authorization", &auth)],
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let served = served_since(&env, &before);
    assert_eq!(
        served,
        [(mine_upstream.clone(), 10)].into_iter().collect(),
        "{served:?}"
    );
    // The same ten without the key go elsewhere too: the list is what kept them there.
    let before = env.turns_by_account();
    for i in 0..12 {
        assert_eq!(env.turn(&turn_body(&format!("free {i}")), &[]).status, 200);
    }
    assert!(served_since(&env, &before).len() > 1);

    // A turn state from an account outside the list is not replayed there.
    let pinned = format!("{other}~upstream-state");
    let r = env.turn(
        &turn_body("pinned elsewhere"),
        &[("authorization", &auth), ("x-codex-turn-state", &pinned)],
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "turn_state_account_unavailable");

    // Codex's control routes obey the list as well, whatever the session.
    for i in 0..6 {
        let marker = format!("goal-marker-{i}");
        let r = ureq::post(&env.url("/backend-api/codex/thread/goal/set"))
            .set("authorization", &auth)
            .set("session_id", &format!("sess-{i}"))
            .send_string(&json!({"thread_id": "t", "goal": marker}).to_string())
            .unwrap();
        assert_eq!(r.status(), 200);
        let reached: Vec<String> = env
            .mock
            .accounts()
            .into_iter()
            .map(|a| a.chatgpt_account_id)
            .filter(|a| {
                env.mock
                    .last_request(a)
                    .is_some_and(|r| String::from_utf8_lossy(&r.body).contains(&marker))
            })
            .collect();
        assert_eq!(reached, vec![mine_upstream.clone()], "{marker}");
    }

    // Its account paused: the pool's answer, about the key's accounts.
    assert_eq!(post(&env, &format!("/api/accounts/{mine}/pause")).0, 200);
    let r = env.turn(&turn_body("paused account"), &[("authorization", &auth)]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "no_accounts");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("to this API key (1 paused)"),
        "{}",
        r.text()
    );
    assert_eq!(env.turn(&turn_body("others serve"), &[]).status, 200);
    assert_eq!(post(&env, &format!("/api/accounts/{mine}/resume")).0, 200);

    // Accounts the pool does not have: listed as unknown, and a clear refusal.
    let (s, v) = patch_key(&env, &id, json!({"allowed_accounts": ["acc_000000000000"]}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["api_key"]["unknown_accounts"],
        json!(["acc_000000000000"])
    );
    let r = env.turn(&turn_body("nowhere"), &[("authorization", &auth)]);
    assert_eq!(r.status, 503, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["code"], "no_allowed_accounts");
    assert_eq!(e["type"], "server_error");
    assert!(
        e["message"].as_str().unwrap().contains("acc_000000000000"),
        "{e}"
    );
    let (s, v) = patch_key(&env, &id, json!({"allowed_accounts": [""]}));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_value"))
    );

    // Its one account at its usage limit: the pool's usage-limit answer, while others serve.
    assert_eq!(
        patch_key(&env, &id, json!({"allowed_accounts": [mine]})).0,
        200
    );
    env.mock.set_used_percent(&mine_upstream, 100.0, 10.0);
    let r = env.turn(&turn_body("no quota"), &[("authorization", &auth)]);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "usage_limit_reached");
    assert_eq!(env.turn(&turn_body("others serve"), &[]).status, 200);
    // An empty list is the whole pool again.
    assert_eq!(patch_key(&env, &id, json!({"allowed_accounts": []})).0, 200);
    assert_eq!(
        env.turn(&turn_body("anywhere"), &[("authorization", &auth)])
            .status,
        200
    );
}

#[test]
fn a_paused_key_is_refused_until_resumed() {
    let env = Env::start(1);
    let (key, info) = create_key(&env, json!({"name": "pausable"}));
    let id = info["id"].as_str().unwrap().to_string();
    let auth = bearer(&key);
    assert_eq!(
        env.turn(&turn_body("before"), &[("authorization", &auth)])
            .status,
        200
    );
    let (s, v) = patch_key(&env, &id, json!({"paused": true}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["api_key"]["status"], "paused");
    assert!(v["api_key"]["paused_at"].as_u64().unwrap() >= now() - 5);
    let refused = |env: &Env| {
        let r = env.turn(&turn_body("while paused"), &[("authorization", &auth)]);
        assert_eq!(r.status, 401, "{}", r.text());
        let e = r.json()["error"].clone();
        assert_eq!(e["code"], "api_key_paused");
        assert_eq!(e["type"], "authentication_error");
        assert_eq!(e["message"], "API key is paused");
    };
    // Refused with key auth off (a loopback caller could go without a key, but not with this
    // one) and on, on every worker.
    for _ in 0..3 {
        refused(&env);
    }
    set(&env, json!({"api_key_auth": true}));
    for _ in 0..3 {
        refused(&env);
    }
    assert_eq!(listed(&env, &id)["status"], "paused");
    // Refusals are recorded against the key.
    let rows = env
        .wait_for(Duration::from_secs(5), |e| {
            let rows = e.get_json("/api/requests?limit=20")["requests"].clone();
            let n = rows
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["key_id"] == id.as_str() && r["status"] == 401)
                .count();
            (n >= 6).then_some(n)
        })
        .expect("six refusals recorded with the key");
    assert_eq!(rows, 6);
    // A pause keeps everything else; resuming restores the key.
    assert_eq!(
        patch_key(&env, &id, json!({"paused": "yes"})).0,
        400,
        "a pause is a boolean"
    );
    let (s, v) = patch_key(&env, &id, json!({"paused": false}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["api_key"]["status"], "active");
    assert!(v["api_key"]["paused_at"].is_null());
    assert_eq!(
        env.turn(&turn_body("after"), &[("authorization", &auth)])
            .status,
        200
    );
}

#[test]
fn regenerating_a_key_replaces_its_secret_and_keeps_its_id_rules_and_usage() {
    let env = Env::start(1);
    set(&env, json!({"api_key_auth": true}));
    let (old, info) = create_key(
        &env,
        json!({"name": "rotate", "requests_per_minute": 100,
               "limits": [{"kind": "total_tokens", "window": "daily", "limit": 1000000}]}),
    );
    let id = info["id"].as_str().unwrap().to_string();
    if now() % 60 > 45 {
        std::thread::sleep(Duration::from_secs(60 - now() % 60));
    }
    for i in 0..3 {
        let r = env.turn(
            &turn_body(&format!("old {i}")),
            &[("authorization", &bearer(&old))],
        );
        assert_eq!(r.status, 200);
    }
    // The ledger settles the turns' tokens after they end.
    let used = env
        .wait_for(Duration::from_secs(5), |e| {
            let k = listed(e, &id);
            let used = k["limits"][0]["used"].as_f64().unwrap();
            (used > 0.0 && k["requests_this_minute"] == 3).then_some(used)
        })
        .expect("three turns counted");
    let (s, v) = post(&env, &format!("/api/keys/{id}/regenerate"));
    assert_eq!(s, 200, "{v}");
    let new = v["key"].as_str().unwrap().to_string();
    assert!(new.starts_with("sk-clb-") && new != old, "{new}");
    let k = &v["api_key"];
    assert_eq!(k["id"], id.as_str());
    assert_eq!(k["name"], "rotate");
    assert_eq!(k["status"], "active");
    assert!(new.starts_with(k["prefix"].as_str().unwrap()));
    assert_ne!(k["prefix"], info["prefix"]);
    assert_eq!(k["requests_per_minute"], 100);
    assert_eq!(k["limits"][0]["used"].as_f64(), Some(used), "{k}");
    assert_eq!(k["requests_this_minute"], 3, "{k}");
    assert!(
        !env.get_json("/api/keys").to_string().contains(&new[7..]),
        "the new secret is not listed"
    );

    // The old secret stops at once, on every worker; the new one works and counts on.
    for _ in 0..3 {
        let r = env.turn(&turn_body("old"), &[("authorization", &bearer(&old))]);
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    }
    let r = env.turn(&turn_body("new"), &[("authorization", &bearer(&new))]);
    assert_eq!(r.status, 200, "{}", r.text());
    let k = env
        .wait_for(Duration::from_secs(5), |e| {
            let k = listed(e, &id);
            (k["limits"][0]["used"].as_f64().unwrap() > used).then_some(k)
        })
        .expect("the new secret's turn counts on the same budget");
    assert_eq!(k["requests_this_minute"], 4, "{k}");
    let rows = env.get_json("/api/requests?limit=1");
    assert_eq!(rows["requests"][0]["key_id"], id.as_str());

    // Unknown and revoked keys get no new secret; only POST regenerates.
    let (s, v) = post(&env, "/api/keys/key_nope/regenerate");
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("key_not_found"))
    );
    let r = ureq::get(&env.url(&format!("/api/keys/{id}/regenerate"))).call();
    assert!(matches!(r, Err(ureq::Error::Status(405, _))), "{r:?}");
    ureq::delete(&env.url(&format!("/api/keys/{id}")))
        .call()
        .unwrap();
    let (s, v) = post(&env, &format!("/api/keys/{id}/regenerate"));
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("revoked"));
    let r = env.turn(&turn_body("revoked"), &[("authorization", &bearer(&new))]);
    assert_eq!(r.status, 401);
}

#[test]
fn keys_command_pauses_resumes_regenerates_and_binds_accounts_offline_and_through_a_gateway() {
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    // Offline: straight into the data dir.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let keys = |args: &[&str]| {
        let mut a = vec!["keys", "--data-dir", d];
        a.extend_from_slice(args);
        cli(&a)
    };
    let (secret, err) = ok(keys(&[
        "create",
        "--name",
        "carol",
        "--allow-account",
        "acc_aaaaaaaaaaaa",
        "--allow-account",
        "acc_bbbbbbbbbbbb",
    ]));
    assert!(secret.starts_with("sk-clb-"), "{secret}");
    assert!(
        err.contains("no account acc_aaaaaaaaaaaa, acc_bbbbbbbbbbbb"),
        "{err}"
    );
    let list = || -> Value { serde_json::from_str(&ok(keys(&["list", "--json"])).0).unwrap() };
    let k = list()[0].clone();
    let id = k["id"].as_str().unwrap().to_string();
    assert_eq!(
        k["allowed_accounts"],
        json!(["acc_aaaaaaaaaaaa", "acc_bbbbbbbbbbbb"])
    );
    assert_eq!(k["unknown_accounts"], k["allowed_accounts"]);
    let table = ok(keys(&["list"])).0;
    assert!(
        table.contains("accounts acc_aaaaaaaaaaaa(unknown) acc_bbbbbbbbbbbb(unknown)"),
        "{table}"
    );
    let bad = keys(&["update", &id, "--allow-account", ""]);
    assert!(!bad.status.success());
    ok(keys(&["update", &id, "--allow-account", "none"]));
    assert_eq!(list()[0]["allowed_accounts"], json!([]));

    assert_eq!(ok(keys(&["pause", &id])).0, format!("paused {id}"));
    assert_eq!(list()[0]["status"], "paused");
    assert!(list()[0]["paused_at"].is_u64());
    assert!(ok(keys(&["list"])).0.contains("paused"));
    assert_eq!(ok(keys(&["resume", &id])).0, format!("resumed {id}"));
    assert_eq!(list()[0]["status"], "active");
    let (fresh, err) = ok(keys(&["regenerate", &id]));
    assert!(fresh.starts_with("sk-clb-") && fresh != secret, "{fresh}");
    assert!(err.contains("old one no longer works"), "{err}");
    let k = list()[0].clone();
    assert_eq!(k["id"], id.as_str());
    assert!(fresh.starts_with(k["prefix"].as_str().unwrap()));
    assert!(!keys(&["pause", "key_nope"]).status.success());
    assert!(!keys(&["regenerate", "key_nope"]).status.success());

    // Through a running gateway that holds the data dir: the same commands, live.
    let env = Env::start(2);
    set(&env, json!({"api_key_auth": true}));
    let accounts = pool(&env);
    let (mine, mine_upstream) = accounts[0].clone();
    let addr = env.addr.to_string();
    let data = env.settings.data_dir.to_str().unwrap().to_string();
    let live = |args: &[&str]| {
        let mut a = vec!["keys", "--listen", &addr, "--data-dir", &data];
        a.extend_from_slice(args);
        cli(&a)
    };
    let (secret, err) = ok(live(&[
        "create",
        "--name",
        "dave",
        "--allow-account",
        &mine,
    ]));
    assert!(!err.contains("note:"), "{err}");
    let k = env.get_json("/api/keys")["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "dave")
        .cloned()
        .unwrap();
    let id = k["id"].as_str().unwrap().to_string();
    assert_eq!(k["allowed_accounts"], json!([mine]));
    let status = |key: &str| env.turn(&turn_body("via cli"), &[("authorization", &bearer(key))]);
    let before = env.turns_by_account();
    for _ in 0..4 {
        assert_eq!(status(&secret).status, 200);
    }
    assert_eq!(
        served_since(&env, &before),
        [(mine_upstream, 4)].into_iter().collect()
    );
    ok(live(&["pause", &id]));
    let r = status(&secret);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (401, Some("api_key_paused"))
    );
    let through: Value = serde_json::from_str(&ok(live(&["list", "--json"])).0).unwrap();
    assert_eq!(through[0]["status"], "paused");
    ok(live(&["resume", &id]));
    assert_eq!(status(&secret).status, 200);
    let (fresh, _) = ok(live(&["regenerate", &id]));
    assert!(fresh.starts_with("sk-clb-") && fresh != secret);
    assert_eq!(status(&secret).status, 401);
    assert_eq!(status(&fresh).status, 200);
    assert_eq!(listed(&env, &id)["id"], id.as_str());
}
