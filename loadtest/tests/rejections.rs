//! Replies before any stream: auth (401/403), validation (400), quota (429), injected failures,
//! and the rate-limit headers on all of them.

mod common;

use common::*;
use loadtest::mock::{MockConfig, MockUpstream};
use serde_json::json;

#[test]
fn unknown_and_missing_tokens_get_401_invalid_api_key() {
    let m = start();
    let a = &m.accounts()[0];
    let mut h = auth(a);
    h[0].1 = "Bearer not-a-real-token".into();
    let r = request(
        m.addr(),
        "POST",
        "/backend-api/codex/responses",
        &h,
        turn("gpt-5.5", "x").to_string().as_bytes(),
    );
    assert_eq!(r.status(), 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    assert_eq!(
        r.header("x-codex-primary-used-percent"),
        Some("0.0"),
        "headers for the named account"
    );
    h.remove(0);
    let r = request(m.addr(), "POST", "/backend-api/codex/responses", &h, b"{}");
    assert_eq!(r.status(), 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    assert_eq!(m.stats().rejected_by_status.get(&401), Some(&2));
}

#[test]
fn expired_tokens_get_401_token_expired() {
    let m = start();
    let [a, b] = [&m.accounts()[0], &m.accounts()[1]];
    m.expire_token(&a.chatgpt_account_id);
    let r = post_turn(&m, a, &[], &turn("gpt-5.5", "x"));
    assert_eq!(r.status(), 401);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "token_expired");
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(
        e["message"],
        "Provided authentication token is expired. Please try signing in again."
    );
    assert!(
        r.header("x-codex-primary-reset-at").is_some(),
        "rate headers on 401"
    );
    assert_eq!(
        post_turn(&m, b, &[], &turn("gpt-5.5", "x")).status(),
        200,
        "other account unaffected"
    );

    // by `exp`: the tokens live one hour on the mock's clock
    m.advance_clock(3601);
    let r = post_turn(&m, b, &[], &turn("gpt-5.5", "x"));
    assert_eq!(r.status(), 401);
    assert_eq!(r.json()["error"]["code"], "token_expired");

    m.reset();
    assert_eq!(
        post_turn(&m, a, &[], &turn("gpt-5.5", "x")).status(),
        200,
        "reset un-expires"
    );
}

#[test]
fn account_header_must_match_token() {
    let m = start();
    let [a, b] = [&m.accounts()[0], &m.accounts()[1]];
    let mut h = auth(a);
    h[1].1 = b.chatgpt_account_id.clone();
    let r = request(
        m.addr(),
        "POST",
        "/backend-api/codex/responses",
        &h,
        turn("gpt-5.5", "x").to_string().as_bytes(),
    );
    assert_eq!(r.status(), 403);
    assert!(r.json()["error"]["message"].is_string());
    assert!(r.header("x-codex-plan-type").is_some());
    h.remove(1);
    let r = request(
        m.addr(),
        "POST",
        "/backend-api/codex/responses",
        &h,
        turn("gpt-5.5", "x").to_string().as_bytes(),
    );
    assert_eq!(r.status(), 403);
}

#[test]
fn validation_errors_are_400() {
    let m = start();
    let a = &m.accounts()[0];
    let post_raw = |body: &[u8]| {
        request(
            m.addr(),
            "POST",
            "/backend-api/codex/responses",
            &auth(a),
            body,
        )
    };

    let r = post_raw(b"{not json");
    assert_eq!(r.status(), 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert!(
        r.header("x-codex-primary-used-percent").is_some(),
        "rate headers on 400"
    );

    let mut b = turn("gpt-5.5", "x");
    b["stream"] = json!(false);
    let r = post_turn(&m, a, &[], &b);
    assert_eq!(
        (r.status(), r.json()["error"]["param"].clone()),
        (400, json!("stream"))
    );
    b.as_object_mut().unwrap().remove("stream");
    assert_eq!(post_turn(&m, a, &[], &b).status(), 400, "stream absent");

    let mut b = turn("gpt-5.5", "x");
    b["store"] = json!(true);
    let r = post_turn(&m, a, &[], &b);
    assert_eq!(
        (r.status(), r.json()["error"]["param"].clone()),
        (400, json!("store"))
    );

    for p in [
        "temperature",
        "top_p",
        "max_output_tokens",
        "metadata",
        "truncation",
        "user",
        "safety_identifier",
        "prompt_cache_retention",
    ] {
        let mut b = turn("gpt-5.5", "x");
        b[p] = json!(1);
        let r = post_turn(&m, a, &[], &b);
        assert_eq!(r.status(), 400, "{p}");
        assert_eq!(r.json()["error"]["param"], p);
    }

    let r = post_turn(&m, a, &[], &turn("gpt-4o", "x"));
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json()["error"]["message"],
        "The 'gpt-4o' model is not supported when using Codex with a ChatGPT account."
    );
    let mut b = turn("gpt-5.5", "x");
    b.as_object_mut().unwrap().remove("model");
    assert_eq!(post_turn(&m, a, &[], &b).status(), 400);

    for slug in [
        "gpt-5.5",
        "gpt-5.3-codex",
        "gpt-5.1-codex-mini",
        "gpt-6-preview",
    ] {
        assert_eq!(
            post_turn(&m, a, &[], &turn(slug, "x")).status(),
            200,
            "{slug}"
        );
    }
    assert_eq!(m.stats().rejected_by_status.get(&400), Some(&14));
}

#[test]
fn exhausted_window_gets_429_usage_limit_reached() {
    // tokens outlive the 5-hour clock jump below
    let m = MockUpstream::start(MockConfig {
        token_ttl: std::time::Duration::from_secs(30 * 86_400),
        ..MockConfig::default()
    })
    .unwrap();
    let [a, b] = [&m.accounts()[0], &m.accounts()[1]];
    m.set_used_percent(&a.chatgpt_account_id, 100.0, 40.0);
    let r = post_turn(&m, a, &[], &turn("gpt-5.5", "x"));
    assert_eq!(r.status(), 429);
    let e = &r.json()["error"];
    assert_eq!(e["type"], "usage_limit_reached");
    assert_eq!(e["plan_type"], "plus");
    let resets_at = e["resets_at"].as_u64().unwrap();
    assert_eq!(
        r.header("x-codex-primary-reset-at").unwrap(),
        resets_at.to_string()
    );
    let secs = e["resets_in_seconds"].as_u64().unwrap();
    assert!((300 * 60 - 5..=300 * 60).contains(&secs), "{secs}");
    assert_eq!(r.header("x-codex-primary-used-percent"), Some("100.0"));
    assert_eq!(r.header("x-codex-secondary-used-percent"), Some("40.0"));
    assert_eq!(r.header("x-codex-active-limit"), Some("codex"));
    assert_eq!(post_turn(&m, b, &[], &turn("gpt-5.5", "x")).status(), 200);

    m.set_used_percent(&b.chatgpt_account_id, 0.0, 100.0);
    let r = post_turn(&m, b, &[], &turn("gpt-5.5", "x"));
    assert_eq!(r.status(), 429);
    let secs = r.json()["error"]["resets_in_seconds"].as_u64().unwrap();
    assert!(secs > 7 * 86_400 - 60, "weekly window binds: {secs}");

    // the 5-hour window resets on the injectable clock
    m.advance_clock(300 * 60);
    let r = post_turn(&m, a, &[], &turn("gpt-5.5", "x"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("x-codex-primary-used-percent"), Some("0.0"));
    assert_eq!(m.stats().rejected_by_status.get(&429), Some(&2));
}

#[test]
fn usage_accrues_into_headers_until_429() {
    let m = MockUpstream::start(MockConfig {
        primary_capacity_tokens: 1_000,
        secondary_capacity_tokens: 10_000,
        ..MockConfig::default()
    })
    .unwrap();
    let a = &m.accounts()[0];
    let pct = |r: &Reply, slot: &str| {
        r.header(&format!("x-codex-{slot}-used-percent"))
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    let r1 = post_turn(&m, a, &[], &turn("gpt-5.5", "x"));
    assert_eq!(pct(&r1, "primary"), 0.0);
    let total = r1.events().last().unwrap().1["response"]["usage"]["total_tokens"]
        .as_u64()
        .unwrap();
    let r2 = post_turn(&m, a, &[], &turn("gpt-5.5", "x"));
    let expect = total as f64 * 100.0 / 1_000.0;
    assert!(
        (pct(&r2, "primary") - expect).abs() < 0.01,
        "{} vs {expect}",
        pct(&r2, "primary")
    );
    assert!((pct(&r2, "secondary") - expect / 10.0).abs() < 0.01);
    let mut status = 200;
    for _ in 0..20 {
        status = post_turn(&m, a, &[], &turn("gpt-5.5", "x")).status();
        if status == 429 {
            break;
        }
    }
    assert_eq!(status, 429, "usage reaches 100 %");
}

#[test]
fn fail_next_injects_statuses_in_order() {
    let m = start();
    let a = &m.accounts()[0];
    m.fail_next(&a.chatgpt_account_id, 500, 2);
    m.fail_next(&a.chatgpt_account_id, 503, 1);
    m.fail_next(&a.chatgpt_account_id, 429, 1);
    m.fail_next(&a.chatgpt_account_id, 401, 1);
    let codes: Vec<(u16, serde_json::Value)> = (0..6)
        .map(|_| {
            let r = post_turn(&m, a, &[], &turn("gpt-5.5", "x"));
            assert!(r.header("x-codex-primary-used-percent").is_some());
            let body = if r.status() == 200 {
                json!(null)
            } else {
                r.json()["error"].clone()
            };
            (r.status(), body)
        })
        .collect();
    let statuses: Vec<u16> = codes.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [500, 500, 503, 429, 401, 200]);
    assert_eq!(codes[0].1["code"], "server_error");
    assert_eq!(codes[2].1["code"], "server_is_overloaded");
    assert_eq!(codes[3].1["type"], "usage_limit_reached");
    assert_eq!(codes[4].1["code"], "token_expired");
    let s = m.stats();
    assert_eq!(s.rejected_by_status.get(&500), Some(&2));
    assert_eq!(s.responses_completed, 1);
    assert!(
        m.last_request(&a.chatgpt_account_id).is_some(),
        "failed requests are still recorded"
    );
}
