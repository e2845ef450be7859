//! The SSE relay: bytes reach the client exactly as the upstream sent them, however the upstream
//! splits its writes; the terminal event's usage is recorded and survives a restart.

mod common;

use common::{turn_body, Env};
use serde_json::json;

#[test]
fn bytes_are_identical_for_every_upstream_write_split() {
    let env = Env::start(1);
    let modes = [
        json!({}),
        json!({"coalesce": true}),
        json!({"crlf": true, "keepalive_comments": true}),
        json!({"chunk_bytes": 1, "deltas": 3}),
        json!({"chunk_bytes": 2}),
        json!({"chunk_bytes": 3}),
        json!({"chunk_bytes": 5}),
        json!({"chunk_bytes": 7}),
        json!({"chunk_bytes": 13}),
        json!({"chunk_bytes": 64}),
        json!({"chunk_bytes": 1000}),
        json!({"big_event_bytes": 300000, "chunk_bytes": 65536}),
    ];
    for (i, mode) in modes.iter().enumerate() {
        let mut scenario = mode.clone();
        scenario["record"] = json!(true);
        let id = format!("relay-{i}");
        let reply = env.turn(
            &turn_body("hello"),
            &[
                ("x-request-id", &id),
                ("x-mock-scenario", &scenario.to_string()),
            ],
        );
        assert_eq!(reply.status, 200, "mode {mode}: {}", reply.text());
        let sent = env
            .mock
            .recorded_response(&id)
            .unwrap_or_else(|| panic!("mock recorded {id}"));
        assert!(
            reply.body == sent,
            "mode {mode}: client got {} bytes, mock sent {}",
            reply.body.len(),
            sent.len()
        );
        assert_eq!(
            reply.terminal().expect("terminal event")["type"],
            "response.completed",
            "mode {mode}"
        );
    }
}

#[test]
fn usage_of_the_terminal_event_is_recorded_and_survives_restart() {
    let mut env = Env::start(2);
    let mut expected = (0u64, 0u64, 0u64, 0u64);
    for i in 0..4 {
        let reply = env.turn(&turn_body(&format!("question {i}")), &[]);
        assert_eq!(reply.status, 200);
        let usage = reply.terminal().expect("terminal")["response"]["usage"].clone();
        expected.0 += usage["input_tokens"].as_u64().unwrap();
        expected.1 += usage["output_tokens"].as_u64().unwrap();
        expected.2 += usage["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        expected.3 += usage["total_tokens"].as_u64().unwrap();
    }
    let check = |env: &Env| {
        let s = env.summary();
        let t = &s["totals"];
        assert_eq!(t["requests"], 4, "{s}");
        assert_eq!(t["completed"], 4);
        assert_eq!(t["input_tokens"].as_u64(), Some(expected.0));
        assert_eq!(t["output_tokens"].as_u64(), Some(expected.1));
        assert_eq!(t["cached_tokens"].as_u64(), Some(expected.2));
        assert_eq!(t["total_tokens"].as_u64(), Some(expected.3));
        assert_eq!(s["by_model"]["gpt-5.5"]["requests"], 4);
        let per_account: u64 = s["by_account"]
            .as_object()
            .unwrap()
            .values()
            .map(|a| a["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(per_account, 4);
        s
    };
    let before = check(&env);
    let rows = env.get_json("/api/requests?limit=10");
    assert_eq!(rows["requests"].as_array().unwrap().len(), 4);
    assert_eq!(rows["requests"][0]["outcome"], "completed");
    assert!(rows["requests"][0]["ttfb_ms"].is_u64());
    env.restart();
    let after = check(&env);
    assert_eq!(before["totals"], after["totals"]);
    assert_eq!(
        env.get_json("/api/requests?limit=10")["requests"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

#[test]
fn upstream_failure_mid_stream_becomes_response_failed_and_a_clean_end() {
    let env = Env::start(1);
    for mode in ["reset", "eof"] {
        let scenario = json!({"fail_after_events": 6, "fail_mode": mode, "chunk_bytes": 50});
        let reply = env.turn(
            &turn_body("x"),
            &[("x-mock-scenario", &scenario.to_string())],
        );
        assert_eq!(reply.status, 200);
        let terminal = reply
            .terminal()
            .unwrap_or_else(|| panic!("{mode}: no terminal event in {}", reply.text()));
        assert_eq!(terminal["type"], "response.failed", "{mode}");
        assert_eq!(terminal["response"]["status"], "failed");
        assert!(
            terminal["response"]["error"]["code"]
                .as_str()
                .unwrap()
                .starts_with("upstream_"),
            "{terminal}"
        );
    }
    // An upstream `response.failed` is relayed as it is, not replaced.
    let scenario = json!({"fail_after_events": 4, "fail_mode": "failed_event"});
    let reply = env.turn(
        &turn_body("x"),
        &[("x-mock-scenario", &scenario.to_string())],
    );
    assert_eq!(
        reply.terminal().unwrap()["response"]["error"]["code"],
        "server_error"
    );
    let rows = env.get_json("/api/requests?limit=3");
    let outcomes: Vec<&str> = rows["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["failed", "upstream_error", "upstream_error"]);
}
