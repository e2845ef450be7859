//! The 200 path of `/responses`: event sequence, usage, headers, scenario layering, write modes,
//! request decoding and recording.

mod common;

use common::*;
use loadtest::mock::Scenario;
use serde_json::{json, Value};

const RATE_HEADERS: [&str; 13] = [
    "x-codex-primary-used-percent",
    "x-codex-primary-window-minutes",
    "x-codex-primary-reset-at",
    "x-codex-primary-reset-after-seconds",
    "x-codex-secondary-used-percent",
    "x-codex-secondary-window-minutes",
    "x-codex-secondary-reset-at",
    "x-codex-secondary-reset-after-seconds",
    "x-codex-credits-has-credits",
    "x-codex-credits-unlimited",
    "x-codex-credits-balance",
    "x-codex-plan-type",
    "x-codex-active-limit",
];

fn kinds(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn full_event_sequence_usage_and_headers() {
    let m = start();
    let a = &m.accounts()[0];
    let body = turn("gpt-5.5", "Say hi in three words.");
    let r = post_turn(&m, a, &[], &body);
    assert_eq!(r.status(), 200, "{}", r.text());
    assert!(r.complete);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    for h in RATE_HEADERS {
        assert!(r.header(h).is_some(), "missing {h}");
    }
    assert_eq!(r.header("x-codex-primary-window-minutes"), Some("300"));
    assert_eq!(r.header("x-codex-secondary-window-minutes"), Some("10080"));
    assert_eq!(r.header("x-codex-plan-type"), Some("plus"));
    assert_eq!(r.header("x-codex-active-limit"), Some("codex"));
    assert_eq!(r.header("openai-model"), Some("gpt-5.5"));
    assert_eq!(r.header("x-reasoning-included"), Some("true"));
    assert!(r.header("x-models-etag").is_some());
    assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));
    assert!(r
        .header("x-codex-turn-state")
        .is_some_and(|v| !v.is_empty()));

    let ev = r.events();
    let expected = [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
    ];
    assert_eq!(&kinds(&ev)[..6], expected);
    assert_eq!(
        kinds(&ev)
            .iter()
            .filter(|k| **k == "response.output_text.delta")
            .count(),
        8
    );
    assert_eq!(
        &kinds(&ev)[14..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    for (i, (k, v)) in ev.iter().enumerate() {
        assert_eq!(v["type"], k.as_str(), "type matches event name");
        assert_eq!(v["sequence_number"], i, "sequence numbers run 0..");
    }
    let text: String = ev
        .iter()
        .filter(|(k, _)| k == "response.output_text.delta")
        .map(|(_, v)| v["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text.len(), 8 * 16);
    assert_eq!(ev[14].1["text"], text.as_str());
    let done = &ev[ev.len() - 1].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["model"], "gpt-5.5");
    assert_eq!(done["id"], ev[0].1["response"]["id"]);
    assert_eq!(done["output"][0]["type"], "reasoning");
    assert_eq!(done["output"][1]["content"][0]["text"], text.as_str());
    let u = &done["usage"];
    let body_len = body.to_string().len() as u64;
    assert_eq!(u["input_tokens"].as_u64(), Some(body_len / 4));
    assert_eq!(u["input_tokens_details"]["cached_tokens"].as_u64(), Some(0));
    assert_eq!(
        u["output_tokens_details"]["reasoning_tokens"].as_u64(),
        Some(16)
    );
    assert_eq!(u["output_tokens"].as_u64(), Some(128 / 4 + 16));
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(body_len / 4 + 128 / 4 + 16)
    );

    let s = m.stats();
    assert_eq!(s.requests_total, 1);
    assert_eq!(s.responses_completed, 1);
    assert_eq!(s.requests_by_account.get(&a.chatgpt_account_id), Some(&1));
    assert_eq!(
        s.requests_by_route.get("POST /backend-api/codex/responses"),
        Some(&1)
    );
    assert_eq!(s.streams_active, 0);
    assert!(s.bytes_sent >= r.body.len() as u64);
}

#[test]
fn request_and_turn_state_are_echoed_or_minted() {
    let m = start();
    let a = &m.accounts()[0];
    let h = [
        ("x-request-id".to_string(), "req-abc".to_string()),
        ("x-codex-turn-state".to_string(), "ts-xyz".to_string()),
    ];
    let r = post_turn(&m, a, &h, &turn("gpt-5.3-codex", "hi"));
    assert_eq!(r.header("x-request-id"), Some("req-abc"));
    assert_eq!(r.header("x-codex-turn-state"), Some("ts-xyz"));
    let r1 = post_turn(&m, a, &[], &turn("gpt-5.3-codex", "hi"));
    let r2 = post_turn(&m, a, &[], &turn("gpt-5.3-codex", "hi"));
    assert_ne!(
        r1.header("x-codex-turn-state"),
        r2.header("x-codex-turn-state")
    );
    assert_ne!(r1.header("x-request-id"), r2.header("x-request-id"));
}

#[test]
fn scenario_layers_later_wins() {
    let m = start();
    let a = &m.accounts()[0];
    m.set_scenario(Scenario {
        deltas: 2,
        reasoning: false,
        ..Scenario::default()
    });
    let header = [(
        "x-mock-scenario".to_string(),
        r#"{"text":"abc def ghi","deltas":3}"#.to_string(),
    )];

    let r = post_turn(&m, a, &header, &turn("gpt-5.5", "plain"));
    let ev = r.events();
    let deltas: Vec<&str> = ev
        .iter()
        .filter(|(k, _)| k == "response.output_text.delta")
        .map(|(_, v)| v["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas.concat(), "abc def ghi");
    assert_eq!(deltas.len(), 3, "header beats global");
    assert_eq!(
        ev[2].1["item"]["type"], "message",
        "global reasoning=false kept"
    );

    let r = post_turn(
        &m,
        a,
        &header,
        &turn("gpt-5.5", "please [[mock {\"deltas\":1}]] thanks"),
    );
    let n = r
        .events()
        .iter()
        .filter(|(k, _)| k == "response.output_text.delta")
        .count();
    assert_eq!(n, 1, "directive beats header");

    let bad = [("x-mock-scenario".to_string(), r#"{"nope":1}"#.to_string())];
    let r = post_turn(&m, a, &bad, &turn("gpt-5.5", "x"));
    assert_eq!(r.status(), 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nope"));
}

/// Makes two renders of one request comparable: `created_at` is the clock second.
fn normalize(body: &[u8]) -> String {
    let s = String::from_utf8(body.to_vec()).unwrap();
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find("\"created_at\":") {
        let (head, tail) = rest.split_at(i + "\"created_at\":".len());
        out.push_str(head);
        out.push('0');
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

#[test]
fn chunk_bytes_reslices_without_changing_bytes() {
    let m = start();
    let a = &m.accounts()[0];
    let rid = [("x-request-id".to_string(), "same-request".to_string())];
    let body = turn("gpt-5.5", "slice me");
    let base = post_turn(&m, a, &rid, &body);
    assert!(base.complete);
    assert!(
        base.chunks.len() >= 17,
        "default mode writes one chunk per event: {:?}",
        base.chunks
    );
    let reference = normalize(&base.body);
    for n in [1usize, 2, 3, 5, 7, 13, 64, 1000] {
        let h = with(
            rid.to_vec(),
            "x-mock-scenario",
            &format!(r#"{{"chunk_bytes":{n}}}"#),
        );
        let r = post_turn(&m, a, &h, &body);
        assert!(r.complete);
        assert_eq!(normalize(&r.body), reference, "chunk_bytes={n}");
        let (last, full) = r.chunks.split_last().unwrap();
        assert!(
            full.iter().all(|c| *c == n),
            "chunk_bytes={n}: {:?}",
            &r.chunks[..r.chunks.len().min(20)]
        );
        assert!(*last <= n && *last > 0);
    }
    let h = with(rid.to_vec(), "x-mock-scenario", r#"{"coalesce":true}"#);
    let r = post_turn(&m, a, &h, &body);
    assert_eq!(r.chunks.len(), 1);
    assert_eq!(normalize(&r.body), reference);
}

#[test]
fn crlf_keepalive_tool_call_refusal_and_big_events() {
    let m = start();
    let a = &m.accounts()[0];
    let sc = |j: &str| [("x-mock-scenario".to_string(), j.to_string())];

    let r = post_turn(
        &m,
        a,
        &sc(r#"{"crlf":true,"keepalive_comments":true}"#),
        &turn("gpt-5.5", "x"),
    );
    let raw = r.text();
    assert!(raw.contains("\r\n\r\n: keepalive\r\n\r\n"));
    assert!(
        !raw.replace("\r\n", "").contains('\n'),
        "no bare LF in CRLF mode"
    );
    assert_eq!(r.events().last().unwrap().0, "response.completed");

    let r = post_turn(
        &m,
        a,
        &sc(r#"{"tool_call":true,"reasoning":false}"#),
        &turn("gpt-5.5", "x"),
    );
    let ev = r.events();
    assert!(ev
        .iter()
        .any(|(k, _)| k == "response.function_call_arguments.delta"));
    let item = &ev.last().unwrap().1["response"]["output"][0];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["name"], "shell");
    let args: Value = serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["command"][0], "echo");
    assert_eq!(r.header("x-reasoning-included"), Some("false"));

    let r = post_turn(
        &m,
        a,
        &sc(r#"{"refusal":true,"text":"I can't help with that."}"#),
        &turn("gpt-5.5", "x"),
    );
    let ev = r.events();
    let refusal: String = ev
        .iter()
        .filter(|(k, _)| k == "response.refusal.delta")
        .map(|(_, v)| v["delta"].as_str().unwrap())
        .collect();
    assert_eq!(refusal, "I can't help with that.");

    let r = post_turn(
        &m,
        a,
        &sc(r#"{"big_event_bytes":3000000}"#),
        &turn("gpt-5.5", "x"),
    );
    let ev = r.events();
    let big = ev
        .iter()
        .rev()
        .find(|(k, _)| k == "response.output_item.done")
        .unwrap();
    assert!(big.1["item"]["content"][0]["text"].as_str().unwrap().len() >= 3_000_000);
}

#[test]
fn compressed_bodies_are_decoded_and_recorded() {
    let m = start();
    let a = &m.accounts()[0];
    let body = turn("gpt-5.5", "compressed please").to_string();
    let z = zstd::encode_all(body.as_bytes(), 3).unwrap();
    let mut h = auth(a);
    h.push(("content-encoding".into(), "zstd".into()));
    h.push(("x-custom-forwarded".into(), "yes".into()));
    let r = request(
        m.addr(),
        "POST",
        "/backend-api/codex/responses?trace=1",
        &h,
        &z,
    );
    assert_eq!(r.status(), 200, "{}", r.text());
    let usage = r.events().last().unwrap().1["response"]["usage"].clone();
    assert_eq!(
        usage["input_tokens"].as_u64(),
        Some(body.len() as u64 / 4),
        "tokens count decoded bytes"
    );
    let last = m.last_request(&a.chatgpt_account_id).expect("recorded");
    assert_eq!(last.body, body.as_bytes());
    assert_eq!(last.content_encoding.as_deref(), Some("zstd"));
    assert_eq!(last.method, "POST");
    assert_eq!(last.path, "/backend-api/codex/responses?trace=1");
    assert_eq!(last.header("X-Custom-Forwarded"), Some("yes"));
    let names: Vec<&str> = last.headers.iter().map(|(k, _)| k.as_str()).collect();
    let pos = |n: &str| names.iter().position(|k| *k == n).unwrap();
    assert!(
        pos("authorization") < pos("content-encoding"),
        "received order kept: {names:?}"
    );

    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut g, body.as_bytes()).unwrap();
    let mut h = auth(a);
    h.push(("content-encoding".into(), "gzip".into()));
    let r = request(
        m.addr(),
        "POST",
        "/backend-api/codex/responses",
        &h,
        &g.finish().unwrap(),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(
        m.last_request(&a.chatgpt_account_id).unwrap().body,
        body.as_bytes()
    );

    let mut h = auth(a);
    h.push(("content-encoding".into(), "zstd".into()));
    let r = request(
        m.addr(),
        "POST",
        "/backend-api/codex/responses",
        &h,
        b"not zstd at all",
    );
    assert_eq!(r.status(), 400);
}

#[test]
fn recorded_response_equals_bytes_received() {
    let m = start();
    let a = &m.accounts()[0];
    let h = [
        ("x-request-id".to_string(), "rec-1".to_string()),
        (
            "x-mock-scenario".to_string(),
            r#"{"record":true,"chunk_bytes":7,"keepalive_comments":true}"#.to_string(),
        ),
    ];
    let r = post_turn(&m, a, &h, &turn("gpt-5.5", "record me"));
    assert!(r.complete);
    assert_eq!(m.recorded_response("rec-1").as_deref(), Some(&r.body[..]));
    let via_http = control(&m, "GET", "/__mock/recorded/rec-1", "");
    assert_eq!(via_http.body, r.body);
    assert!(m.recorded_response("never-sent").is_none());

    let plain = post_turn(
        &m,
        a,
        &[("x-request-id".to_string(), "rec-2".to_string())],
        &turn("gpt-5.5", "x"),
    );
    assert!(plain.complete);
    assert!(
        m.recorded_response("rec-2").is_none(),
        "only recorded when the scenario asks"
    );
}

#[test]
fn cached_tokens_follow_prompt_cache_key() {
    let m = start();
    let a = &m.accounts()[0];
    let mut body = turn("gpt-5.5", "first");
    body["prompt_cache_key"] = json!("conv-1");
    let usage = |r: &Reply| r.events().last().unwrap().1["response"]["usage"].clone();
    let u1 = usage(&post_turn(&m, a, &[], &body));
    assert_eq!(u1["input_tokens_details"]["cached_tokens"], 0);
    body["input"].as_array_mut().unwrap().push(json!({"type":"message","role":"user","content":[{"type":"input_text","text":"second turn, longer history"}]}));
    let u2 = usage(&post_turn(&m, a, &[], &body));
    assert_eq!(
        u2["input_tokens_details"]["cached_tokens"],
        u1["input_tokens"]
    );
    assert!(u2["input_tokens"].as_u64() > u1["input_tokens"].as_u64());
}
