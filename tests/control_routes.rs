//! Codex's control routes (thread goals, analytics events, memories, safety, search, the agent
//! identity keys): relayed to the same path upstream with a pooled account — the conversation's
//! own when the request names one — with failover, key checks and a request-log row.

mod common;

use std::time::Duration;

use common::{turn_body_in, Env};
use serde_json::{json, Value};

fn call(
    env: &Env,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = ureq::request(method, &env.url(path)).timeout(Duration::from_secs(10));
    for (n, v) in headers {
        req = req.set(n, v);
    }
    let res = match body {
        Some(b) => req.set("content-type", "application/json").send_string(b),
        None => req.call(),
    };
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = r.status();
    (status, r.into_json().unwrap_or(Value::Null))
}

/// A key with a per-minute pace, as a bearer header value, made early enough in a UTC minute
/// that a test's requests all fall in it.
fn paced_key(env: &Env, name: &str, rpm: u32) -> String {
    let created = env.post_json(
        "/api/keys",
        json!({"name": name, "requests_per_minute": rpm})
            .to_string()
            .as_bytes(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now % 60 > 50 {
        std::thread::sleep(Duration::from_secs(61 - now % 60));
    }
    format!("Bearer {}", created["key"].as_str().unwrap())
}

/// The mock account whose last request carried `marker` in its body or path.
fn reached(env: &Env, marker: &str) -> Vec<String> {
    env.mock
        .accounts()
        .into_iter()
        .map(|a| a.chatgpt_account_id)
        .filter(|id| {
            env.mock.last_request(id).is_some_and(|r| {
                r.path.contains(marker) || String::from_utf8_lossy(&r.body).contains(marker)
            })
        })
        .collect()
}

#[test]
fn control_routes_reach_the_conversation_s_account_as_they_were_sent() {
    let env = Env::start(3);
    // A conversation's turn lands on some account (Codex sends its conversation id both as the
    // prompt_cache_key and as the session_id header)...
    let turn = env.turn(
        &turn_body_in("hello", "sess-goal"),
        &[("session_id", "sess-goal")],
    );
    assert_eq!(turn.status, 200);
    let state = turn.header("x-codex-turn-state").unwrap().to_string();
    let gateway_id = state.split_once('~').unwrap().0;
    // The mock knows the account by its ChatGPT account id.
    let owner = env.get_json("/api/accounts")["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == gateway_id)
        .and_then(|a| a["chatgpt_account_id"].as_str())
        .unwrap()
        .to_string();
    // ...and its thread goal goes to the same one, path, query and body as sent.
    let body = r#"{"thread_id":"th-1","goal":"ship the goal marker-1"}"#;
    let (status, reply) = call(
        &env,
        "POST",
        "/backend-api/codex/thread/goal/set?source=cli",
        &[("session_id", "sess-goal"), ("x-custom-thing", "kept")],
        Some(body),
    );
    assert_eq!((status, &reply), (200, &json!({})));
    assert_eq!(reached(&env, "marker-1"), vec![owner.clone()]);
    let seen = env.mock.last_request(&owner).unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/backend-api/codex/thread/goal/set?source=cli");
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.header("session_id"), Some("sess-goal"));
    assert_eq!(seen.header("x-custom-thing"), Some("kept"));
    // A turn state pins it as well, whatever the session.
    let (status, _) = call(
        &env,
        "POST",
        "/backend-api/codex/memories/trace_summarize",
        &[("x-codex-turn-state", &state)],
        Some(r#"{"trace":"marker-2"}"#),
    );
    assert_eq!(status, 200);
    assert_eq!(reached(&env, "marker-2"), vec![owner.clone()]);

    // GET routes, the WHAM one too.
    for path in [
        "/backend-api/codex/agent-identities/jwks",
        "/backend-api/wham/agent-identities/jwks",
    ] {
        let (status, reply) = call(&env, "GET", path, &[], None);
        assert_eq!((status, reply), (200, json!({})), "{path}");
    }
    // Only GET and POST are relayed.
    let (status, reply) = call(
        &env,
        "PUT",
        "/backend-api/codex/safety/arc",
        &[],
        Some("{}"),
    );
    assert_eq!(status, 405, "{reply}");

    // An account that fails is left for another.
    env.mock.fail_next(&owner, 503, 1);
    let (status, _) = call(
        &env,
        "POST",
        "/backend-api/codex/analytics-events/events",
        &[("session_id", "sess-goal")],
        Some(r#"{"events":["marker-3"]}"#),
    );
    assert_eq!(status, 200);
    let got = reached(&env, "marker-3");
    assert_eq!(got.len(), 2, "both tried: {got:?}");

    // Each is in the request log under the `control` route, with the account it reached.
    let rows = env
        .wait_for(Duration::from_secs(5), |e| {
            let page = e.get_json("/api/requests?limit=100");
            let rows: Vec<Value> = page["requests"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["route"] == "control")
                .cloned()
                .collect();
            (rows.len() == 5).then_some(rows)
        })
        .expect("five control rows");
    let failed_over = rows
        .iter()
        .find(|r| r["attempts"] == 2)
        .expect("the failed-over one");
    assert_eq!(failed_over["status"], 200, "{failed_over}");
}

#[test]
fn control_routes_need_a_key_when_keys_are_on_and_answer_clearly_without_accounts() {
    let env = Env::start(1);
    let v: Value = ureq::put(&env.url("/api/settings"))
        .send_string(&json!({"api_key_auth": true}).to_string())
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(v["api_key_auth"], true);
    let (status, reply) = call(
        &env,
        "GET",
        "/backend-api/codex/agent-identities/jwks",
        &[],
        None,
    );
    assert_eq!(status, 401, "{reply}");
    assert!(reply["error"]["code"].is_string(), "{reply}");

    let empty = Env::start(0);
    let (status, reply) = call(
        &empty,
        "POST",
        "/backend-api/codex/alpha/search",
        &[],
        Some("{}"),
    );
    assert_eq!(status, 503, "{reply}");
    assert!(reply["error"]["message"].is_string(), "{reply}");
}

/// A key's pace and budgets hold on the control routes, but the events Codex sends beside its
/// turns do not use up the pace meant for turns.
#[test]
fn control_routes_respect_a_key_s_pace_without_spending_it() {
    let env = Env::start(1);
    let auth = paced_key(&env, "paced", 2);
    let event = |env: &Env| {
        call(
            env,
            "POST",
            "/backend-api/codex/analytics-events/events",
            &[("authorization", &auth)],
            Some(r#"{"events":[]}"#),
        )
    };
    for _ in 0..5 {
        assert_eq!(event(&env).0, 200);
    }
    // Both turns of the minute are still there...
    for i in 0..2 {
        let r = env.turn(
            &turn_body_in(&format!("turn {i}"), "paced"),
            &[("authorization", &auth)],
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // ...and with the pace used up, the control routes wait for the next minute too.
    let (status, v) = event(&env);
    assert_eq!(status, 429, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per minute"),
        "{v}"
    );
}

fn multipart(boundary: &str, audio: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, value) in extra {
        b.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    b.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"voice.wav\"\r\nContent-Type: audio/wav\r\n\r\n")
            .as_bytes(),
    );
    b.extend_from_slice(audio);
    b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    b
}

/// Codex's voice input and OpenAI's transcription route reach the upstream's `/transcribe` with
/// the multipart body intact, counted in the key's pace and logged as `transcribe`.
#[test]
fn transcriptions_are_relayed_whole_and_count_in_the_key_s_pace() {
    let env = Env::start(1);
    let auth = paced_key(&env, "voice", 3);
    let audio: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let send = |path: &str, extra: &[(&str, &str)]| {
        let body = multipart("b0undary", &audio, extra);
        match ureq::post(&env.url(path))
            .set("authorization", &auth)
            .set("content-type", "multipart/form-data; boundary=b0undary")
            .send_bytes(&body)
        {
            Ok(r) => (r.status(), r.into_json::<Value>().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_json::<Value>().unwrap()),
            Err(e) => panic!("{e}"),
        }
    };
    let (s, v) = send("/backend-api/transcribe", &[("prompt", "codex")]);
    assert_eq!(
        (s, &v),
        (200, &json!({"text": "mock transcription of 200000 bytes"}))
    );
    let id = env.mock.accounts()[0].chatgpt_account_id.clone();
    let seen = env.mock.last_request(&id).unwrap();
    assert_eq!(seen.path, "/backend-api/transcribe");
    assert_eq!(
        seen.body,
        multipart("b0undary", &audio, &[("prompt", "codex")])
    );
    let (s, v) = send(
        "/v1/audio/transcriptions",
        &[("model", "gpt-4o-transcribe")],
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        env.mock.last_request(&id).unwrap().path,
        "/backend-api/transcribe"
    );
    // Two of the key's three requests this minute are spent: one turn left, then a 429.
    let r = env.turn(
        &turn_body_in("after voice", "v"),
        &[("authorization", &auth)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (s, v) = send("/backend-api/transcribe", &[]);
    assert_eq!(s, 429, "{v}");
    let rows = env
        .wait_for(Duration::from_secs(5), |e| {
            let page = e.get_json("/api/requests?route=transcribe");
            let rows = page["requests"].as_array().unwrap().clone();
            (rows.len() == 3).then_some(rows)
        })
        .expect("three transcription rows");
    assert_eq!(rows.iter().filter(|r| r["status"] == 200).count(), 2);
}
