//! The mock's WebSocket transport of `/backend-api/codex/responses` (PROTOCOL.md 6, 9 item 15),
//! driven by tokio-tungstenite as the client: handshake, refusals, turns, error messages,
//! connection age, injected closes, and the events against the SSE route's.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use loadtest::mock::{MockConfig, MockUpstream, SeedAccount, Transport, WsClose};
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::Response;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const BETA: &str = "responses_websockets=2026-02-06";
/// Bound on every wait for the mock: it answers in milliseconds.
const WAIT: Duration = Duration::from_secs(10);

/// Opens a socket for `a` with the Codex headers plus `extra`; panics unless it gets a 101.
async fn connect(m: &MockUpstream, a: &SeedAccount, extra: &[(&str, &str)]) -> (Ws, Response<()>) {
    let mut req = m.ws_url().into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert(
        "authorization",
        format!("Bearer {}", a.access_token).parse().unwrap(),
    );
    h.insert("chatgpt-account-id", a.chatgpt_account_id.parse().unwrap());
    h.insert("openai-beta", BETA.parse().unwrap());
    h.insert("originator", "codex_cli_rs".parse().unwrap());
    for (k, v) in extra {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::try_from(*k).unwrap();
        h.insert(name, v.parse().unwrap());
    }
    let (ws, resp) = tokio::time::timeout(WAIT, connect_async(req))
        .await
        .expect("handshake in time")
        .expect("upgrade accepted");
    let (parts, _) = resp.into_parts();
    (ws, Response::from_parts(parts, ()))
}

/// The upgrade request as raw HTTP (so a refusal's full JSON body can be read).
fn raw_upgrade(
    m: &MockUpstream,
    a: &SeedAccount,
    beta: Option<&str>,
    extra: &[(String, String)],
) -> Reply {
    let mut h = vec![
        (
            "authorization".to_string(),
            format!("Bearer {}", a.access_token),
        ),
        (
            "chatgpt-account-id".to_string(),
            a.chatgpt_account_id.clone(),
        ),
        ("connection".to_string(), "Upgrade".to_string()),
        ("upgrade".to_string(), "websocket".to_string()),
        ("sec-websocket-version".to_string(), "13".to_string()),
        (
            "sec-websocket-key".to_string(),
            "dGhlIHNhbXBsZSBub25jZQ==".to_string(),
        ),
    ];
    if let Some(b) = beta {
        h.push(("openai-beta".to_string(), b.to_string()));
    }
    h.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    h.extend_from_slice(extra);
    request(m.addr(), "GET", "/backend-api/codex/responses", &h, b"")
}

/// `{"type":"response.create", …body…}`.
fn create(body: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), json!("response.create"));
    m.extend(body.as_object().unwrap().clone());
    m
}

async fn send_json(ws: &mut Ws, v: impl Into<Value>) {
    ws.send(Message::text(v.into().to_string())).await.unwrap();
}

/// The next message: JSON for a text message, panics on anything else.
async fn next_json(ws: &mut Ws) -> Value {
    match next(ws).await {
        Some(Ok(Message::Text(t))) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

async fn next(ws: &mut Ws) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a message in time")
}

/// Messages up to and including the turn's terminal event (or an error message).
async fn turn_events(ws: &mut Ws) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = next_json(ws).await;
        let kind = v["type"].as_str().unwrap_or_default().to_string();
        out.push(v);
        if matches!(
            kind.as_str(),
            "response.completed" | "response.failed" | "response.incomplete" | "error"
        ) {
            return out;
        }
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default())
        .collect()
}

/// The close frame's code after `messages` more text messages, and none after it.
async fn expect_close(ws: &mut Ws, code: CloseCode) {
    match next(ws).await {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, code, "{f:?}"),
        other => panic!("expected a close frame {code}, got {other:?}"),
    }
}

/// Polls `f` until it holds; the mock counts some things just after the client saw them.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn handshake_switches_protocols_with_turn_headers_and_declines_deflate() {
    let m = start();
    let a = &m.accounts()[0];
    let (_ws, resp) = connect(
        &m,
        a,
        &[
            ("x-request-id", "req-handshake-1"),
            (
                "sec-websocket-extensions",
                "permessage-deflate; client_max_window_bits",
            ),
        ],
    )
    .await;
    assert_eq!(resp.status(), 101);
    let h = resp.headers();
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok());
    assert_eq!(get("x-request-id"), Some("req-handshake-1"));
    assert!(get("x-codex-turn-state").is_some_and(|v| v.starts_with("ts_mock")));
    assert_eq!(get("x-codex-primary-used-percent"), Some("0.0"));
    assert!(get("x-codex-primary-reset-at").is_some());
    assert_eq!(get("x-codex-plan-type"), Some("plus"));
    assert!(get("x-models-etag").is_some());
    assert_eq!(
        get("sec-websocket-extensions"),
        None,
        "permessage-deflate is declined"
    );

    // A replayed turn state comes back unchanged.
    let (_ws2, resp2) = connect(&m, a, &[("x-codex-turn-state", "ts_client_sticky")]).await;
    assert_eq!(
        resp2.headers()["x-codex-turn-state"].to_str().unwrap(),
        "ts_client_sticky"
    );

    let seen = m.last_request(&a.chatgpt_account_id).unwrap();
    assert_eq!(seen.transport, Transport::WebSocket);
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/backend-api/codex/responses");
    assert_eq!(seen.header("openai-beta"), Some(BETA));
    assert_eq!(seen.header("originator"), Some("codex_cli_rs"));
    assert!(seen.body.is_empty());
    assert_eq!(m.ws_upgrades(&a.chatgpt_account_id), 2);
    let s = m.stats();
    assert_eq!(
        s.requests_by_route["GET /backend-api/codex/responses"], 2,
        "{s:?}"
    );
    assert_eq!(s.ws_active, 2);
}

#[tokio::test]
async fn upgrade_without_the_beta_header_or_with_websockets_off_is_426() {
    let m = start();
    let a = &m.accounts()[0];
    let id = &a.chatgpt_account_id;

    let r = raw_upgrade(&m, a, None, &[]);
    assert_eq!(r.status(), 426);
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert_eq!(r.json()["error"]["code"], "websocket_beta_required");
    assert!(
        r.header("x-codex-primary-used-percent").is_some(),
        "rate-limit headers on a 426 too"
    );
    let r = raw_upgrade(&m, a, Some("responses=experimental"), &[]);
    assert_eq!(r.status(), 426);

    // Without `Connection: Upgrade` it is no handshake either; a plain GET is no route at all.
    let r = raw_upgrade(
        &m,
        a,
        Some(BETA),
        &[("connection".into(), "keep-alive".into())],
    );
    assert_eq!(r.status(), 426);
    assert_eq!(r.json()["error"]["code"], "upgrade_required");
    let r = request(
        m.addr(),
        "GET",
        "/backend-api/codex/responses",
        &auth(a),
        b"",
    );
    assert_eq!(r.status(), 404);

    m.set_websockets(false);
    let r = raw_upgrade(&m, a, Some(BETA), &[]);
    assert_eq!(r.status(), 426);
    assert_eq!(r.json()["error"]["code"], "websockets_unavailable");
    assert_eq!(m.ws_refused(id), 4);
    assert_eq!(m.ws_upgrades(id), 0);
    assert_eq!(m.stats().rejected_by_status[&426], 4);

    // Over the control API, and back on.
    let c = control(&m, "POST", "/__mock/websockets", r#"{"enabled":true}"#);
    assert_eq!(c.json()["enabled"], true);
    let r = raw_upgrade(&m, a, Some(BETA), &[]);
    assert_eq!(r.status(), 101);
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "RFC 6455 section 1.3's example key"
    );
    assert_eq!(m.ws_upgrades(id), 1);

    // Switched off by configuration.
    let off = MockUpstream::start(MockConfig {
        websockets: false,
        ..MockConfig::default()
    })
    .unwrap();
    let b = &off.accounts()[0];
    assert_eq!(raw_upgrade(&off, b, Some(BETA), &[]).status(), 426);
    let stats = control(&off, "GET", "/__mock/stats", "").json();
    assert_eq!(stats["ws_refused"][&b.chatgpt_account_id], 1);
}

#[tokio::test]
async fn handshake_refusals_are_the_post_routes_statuses_and_bodies() {
    let m = start();
    let accts = m.accounts();
    let (a, b) = (&accts[0], &accts[1]);

    let mut bad = a.clone();
    bad.access_token = "not-a-token".into();
    let r = raw_upgrade(&m, &bad, Some(BETA), &[]);
    assert_eq!(r.status(), 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");

    let mut other = a.clone();
    other.chatgpt_account_id = b.chatgpt_account_id.clone();
    let r = raw_upgrade(&m, &other, Some(BETA), &[]);
    assert_eq!(r.status(), 403);
    assert_eq!(r.json()["error"]["code"], "account_mismatch");

    m.fail_next(&a.chatgpt_account_id, 429, 1);
    let r = raw_upgrade(&m, a, Some(BETA), &[]);
    assert_eq!(r.status(), 429);
    assert_eq!(r.json()["error"]["type"], "usage_limit_reached");
    assert_eq!(r.header("x-codex-primary-used-percent"), Some("100.0"));
    let post = post_turn(&m, a, &[], &turn("gpt-5.5", "hi"));
    assert_eq!(
        post.status(),
        200,
        "the armed failure was spent by the handshake"
    );

    m.fail_next(&a.chatgpt_account_id, 503, 1);
    let r = raw_upgrade(&m, a, Some(BETA), &[]);
    assert_eq!(r.status(), 503);
    assert_eq!(r.json()["error"]["code"], "server_is_overloaded");

    m.set_used_percent(&a.chatgpt_account_id, 100.0, 10.0);
    let r = raw_upgrade(&m, a, Some(BETA), &[]);
    let post = post_turn(&m, a, &[], &turn("gpt-5.5", "hi"));
    assert_eq!(r.status(), 429);
    assert_eq!(post.status(), 429);
    assert_eq!(r.json(), post.json(), "same body as the POST's");
    assert_eq!(r.header("x-codex-primary-used-percent"), Some("100.0"));

    m.expire_token(&b.chatgpt_account_id);
    let r = raw_upgrade(&m, b, Some(BETA), &[]);
    assert_eq!(r.status(), 401);
    assert_eq!(r.json()["error"]["code"], "token_expired");

    m.set_used_percent(&a.chatgpt_account_id, 0.0, 0.0);
    let r = raw_upgrade(
        &m,
        a,
        Some(BETA),
        &[("sec-websocket-version".into(), "8".into())],
    );
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    assert_eq!(r.status(), 426, "version 8 is refused: {}", r.text());
    assert_eq!(m.ws_upgrades(&a.chatgpt_account_id), 0);
}

#[tokio::test]
async fn two_turns_on_one_socket_each_complete_with_usage() {
    let m = start();
    let a = &m.accounts()[0];
    let id = &a.chatgpt_account_id;
    let (mut ws, _) = connect(&m, a, &[]).await;

    let mut ids = Vec::new();
    let mut primaries = Vec::new();
    for n in 0..2 {
        let mut body = turn("gpt-5.5", &format!("turn {n}"));
        if n == 1 {
            // codex-lb drops `stream`; the CLI keeps it: both are accepted.
            body.as_object_mut().unwrap().remove("stream");
        }
        send_json(&mut ws, create(&body)).await;
        let ev = turn_events(&mut ws).await;
        let k = kinds(&ev);
        assert_eq!(
            &k[..3],
            [
                "response.created",
                "codex.rate_limits",
                "response.in_progress"
            ]
        );
        assert_eq!(*k.last().unwrap(), "response.completed", "{k:?}");
        let limits = &ev[1];
        assert_eq!(limits["plan_type"], "plus");
        assert_eq!(limits["rate_limits"]["primary"]["window_minutes"], 300);
        assert!(limits["rate_limits"]["primary"]["reset_at"]
            .as_u64()
            .is_some());
        assert_eq!(limits["credits"]["has_credits"], false);
        primaries.push(
            limits["rate_limits"]["primary"]["used_percent"]
                .as_f64()
                .unwrap(),
        );
        let done = ev.last().unwrap();
        let usage = &done["response"]["usage"];
        for f in ["input_tokens", "output_tokens", "total_tokens"] {
            assert!(usage[f].as_u64().unwrap() > 0, "{f}: {usage}");
        }
        assert!(usage["input_tokens_details"]["cached_tokens"].is_u64());
        assert_eq!(done["response"]["status"], "completed");
        assert_eq!(done["response"]["id"], ev[0]["response"]["id"]);
        ids.push(done["response"]["id"].as_str().unwrap().to_string());
    }
    assert_ne!(ids[0], ids[1], "each turn is its own response");
    assert!(
        primaries[1] > primaries[0],
        "the first turn was charged: {primaries:?}"
    );

    let s = m.stats();
    assert_eq!(s.responses_completed, 2);
    assert_eq!(s.ws_turns[id], 2);
    assert_eq!(m.ws_turns(id), 2);
    assert_eq!(s.requests_by_route["WS /backend-api/codex/responses"], 2);
    assert_eq!(s.requests_by_account[id], 3, "the upgrade and two turns");
    let seen = m.last_request(id).unwrap();
    assert_eq!(seen.transport, Transport::WebSocket);
    let body = seen.body_json().unwrap();
    assert_eq!(body["type"], "response.create");
    assert_eq!(
        body["input"][1]["content"][0]["text"], "turn 1",
        "the last message, as received"
    );
    assert!(body.get("stream").is_none());
    let last = control(&m, "GET", &format!("/__mock/last-request/{id}"), "").json();
    assert_eq!(last["transport"], "websocket");
}

#[tokio::test]
async fn previous_response_id_must_name_a_response_of_this_socket() {
    let m = start();
    let a = &m.accounts()[0];
    let (mut ws, _) = connect(&m, a, &[]).await;

    let mut body = turn("gpt-5.5", "hi");
    body["previous_response_id"] = json!("resp_unknown");
    send_json(&mut ws, create(&body)).await;
    let err = next_json(&mut ws).await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["status"], 400);
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert_eq!(err["error"]["code"], "previous_response_not_found");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("resp_unknown"));

    // The socket is still good: a first turn, then one that continues it.
    send_json(&mut ws, create(&turn("gpt-5.5", "hi"))).await;
    let first = turn_events(&mut ws).await;
    let rid = first.last().unwrap()["response"]["id"].clone();
    body["previous_response_id"] = rid.clone();
    body["input"] =
        json!([{"type":"message","role":"user","content":[{"type":"input_text","text":"more"}]}]);
    send_json(&mut ws, create(&body)).await;
    let second = turn_events(&mut ws).await;
    assert_eq!(*kinds(&second).last().unwrap(), "response.completed");

    // Another socket does not know this socket's responses.
    let (mut other, _) = connect(&m, a, &[]).await;
    send_json(&mut other, create(&body)).await;
    assert_eq!(
        next_json(&mut other).await["error"]["code"],
        "previous_response_not_found"
    );
    assert_eq!(m.stats().rejected_by_status[&400], 2);
}

#[tokio::test]
async fn generate_false_answers_created_and_an_empty_completed() {
    let m = start();
    let a = &m.accounts()[0];
    let (mut ws, _) = connect(&m, a, &[]).await;
    let mut body = turn("gpt-5.5", "warm up");
    body["generate"] = json!(false);
    send_json(&mut ws, create(&body)).await;
    let ev = turn_events(&mut ws).await;
    assert_eq!(
        kinds(&ev),
        [
            "response.created",
            "codex.rate_limits",
            "response.completed"
        ]
    );
    let done = &ev[2]["response"];
    assert_eq!(done["output"], json!([]));
    assert_eq!(done["usage"]["output_tokens"], 0);
    assert_eq!(
        done["usage"]["output_tokens_details"]["reasoning_tokens"],
        0
    );
    assert_eq!(ev[2]["sequence_number"], 1);

    // The pre-warmed response can be continued.
    let mut next_body = turn("gpt-5.5", "now answer");
    next_body["previous_response_id"] = done["id"].clone();
    send_json(&mut ws, create(&next_body)).await;
    let ev = turn_events(&mut ws).await;
    assert_eq!(*kinds(&ev).last().unwrap(), "response.completed");
    assert!(ev.len() > 5);
}

#[tokio::test]
async fn an_exhausted_account_gets_a_429_error_message_and_the_socket_stays_open() {
    let m = start();
    let a = &m.accounts()[0];
    let id = &a.chatgpt_account_id;
    let (mut ws, _) = connect(&m, a, &[]).await;

    m.set_used_percent(id, 100.0, 40.0);
    send_json(&mut ws, create(&turn("gpt-5.5", "hi"))).await;
    let err = next_json(&mut ws).await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["status"], 429);
    assert_eq!(err["error"]["type"], "usage_limit_reached");
    assert_eq!(err["error"]["plan_type"], "plus");
    assert!(err["error"]["resets_at"].as_u64().is_some());
    assert!(err["error"]["resets_in_seconds"].as_u64().is_some());
    let h = &err["headers"];
    assert_eq!(h["x-codex-primary-used-percent"], "100.0");
    assert_eq!(h["x-codex-secondary-used-percent"], "40.0");
    assert_eq!(h["x-codex-active-limit"], "codex");
    let post = post_turn(&m, a, &[], &turn("gpt-5.5", "hi"));
    assert_eq!(
        err["error"],
        post.json()["error"],
        "the HTTP 429's error object"
    );

    // An armed failure goes out the same way, with its status.
    m.set_used_percent(id, 0.0, 0.0);
    m.fail_next(id, 429, 1);
    send_json(&mut ws, create(&turn("gpt-5.5", "hi"))).await;
    let err = next_json(&mut ws).await;
    assert_eq!(err["status"], 429);
    assert_eq!(err["headers"]["x-codex-primary-used-percent"], "100.0");
    m.fail_next(id, 500, 1);
    send_json(&mut ws, create(&turn("gpt-5.5", "hi"))).await;
    let err = next_json(&mut ws).await;
    assert_eq!(err["status"], 500);
    assert_eq!(err["error"]["code"], "server_error");

    // Validation failures too, as the POST's 400s.
    send_json(&mut ws, create(&json!({"model": "gpt-nope", "input": []}))).await;
    let err = next_json(&mut ws).await;
    assert_eq!(err["status"], 400);
    assert_eq!(err["error"]["param"], "model");

    send_json(&mut ws, create(&turn("gpt-5.5", "hi"))).await;
    let ev = turn_events(&mut ws).await;
    assert_eq!(*kinds(&ev).last().unwrap(), "response.completed");
    let s = m.stats();
    assert_eq!(s.rejected_by_status[&429], 3, "two frames and the POST");
    assert_eq!(s.ws_turns[id], 5);
}

#[tokio::test]
async fn past_the_connection_age_limit_the_next_turn_is_refused_and_the_socket_closed() {
    let m = MockUpstream::start(MockConfig {
        ws_max_age: Duration::from_secs(1),
        ..MockConfig::default()
    })
    .unwrap();
    let a = &m.accounts()[0];
    let (mut ws, _) = connect(&m, a, &[]).await;
    send_json(&mut ws, create(&turn("gpt-5.5", "hi"))).await;
    assert_eq!(
        *kinds(&turn_events(&mut ws).await).last().unwrap(),
        "response.completed"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    send_json(&mut ws, create(&turn("gpt-5.5", "hi"))).await;
    let err = next_json(&mut ws).await;
    assert_eq!(
        err,
        json!({"type":"error","status":400,"error":{
            "type":"invalid_request_error","code":"websocket_connection_limit_reached","param":null,
            "message":"Responses websocket connection limit reached (1 second). Create a new websocket connection to continue."}})
    );
    expect_close(&mut ws, CloseCode::Normal).await;

    // The default is PROTOCOL.md's 60 minutes, and the limit can move at run time.
    assert_eq!(MockConfig::default().ws_max_age, Duration::from_secs(3600));
    m.set_ws_max_age(Duration::from_secs(120));
    let (mut ws, _) = connect(&m, a, &[]).await;
    let c = control(&m, "POST", "/__mock/websockets", r#"{"max_age_ms":0}"#).json();
    assert_eq!(
        (c["enabled"].clone(), c["max_age_ms"].clone()),
        (json!(true), json!(0))
    );
    send_json(&mut ws, create(&turn("gpt-5.5", "hi"))).await;
    let err = next_json(&mut ws).await;
    assert_eq!(err["error"]["code"], "websocket_connection_limit_reached");
    expect_close(&mut ws, CloseCode::Normal).await;
}

#[tokio::test]
async fn injected_closes_end_the_next_turn_as_armed() {
    let m = start();
    let a = &m.accounts()[0];
    let id = &a.chatgpt_account_id;

    // 1000 before response.created.
    m.close_next_ws(id, WsClose::NormalBeforeCreated);
    let (mut ws, _) = connect(&m, a, &[]).await;
    send_json(&mut ws, create(&turn("gpt-5.5", "hi"))).await;
    expect_close(&mut ws, CloseCode::Normal).await;

    // 1011 mid-stream.
    m.close_next_ws(id, WsClose::ErrorMidStream { after_events: 4 });
    let (mut ws, _) = connect(&m, a, &[]).await;
    send_json(&mut ws, create(&turn("gpt-5.5", "hi"))).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_json(&mut ws).await);
    }
    assert_eq!(
        kinds(&got),
        [
            "response.created",
            "codex.rate_limits",
            "response.in_progress",
            "response.output_item.added"
        ]
    );
    expect_close(&mut ws, CloseCode::Error).await;

    // An abrupt drop: messages, then no close frame.
    control(
        &m,
        "POST",
        &format!("/__mock/accounts/{id}/ws-close"),
        r#"{"close":"drop_mid_stream","after_events":2}"#,
    );
    let (mut ws, _) = connect(&m, a, &[]).await;
    send_json(&mut ws, create(&turn("gpt-5.5", "hi"))).await;
    assert_eq!(next_json(&mut ws).await["type"], "response.created");
    assert_eq!(next_json(&mut ws).await["type"], "codex.rate_limits");
    match next(&mut ws).await {
        Some(Err(e)) => eprintln!("drop seen by the client as {e:?}"),
        None => {}
        other => panic!("expected the connection to drop, got {other:?}"),
    }

    // Only the next turn is affected: a new socket streams normally.
    let (mut ws, _) = connect(&m, a, &[]).await;
    send_json(&mut ws, create(&turn("gpt-5.5", "hi"))).await;
    assert_eq!(
        *kinds(&turn_events(&mut ws).await).last().unwrap(),
        "response.completed"
    );
    let s = m.stats();
    assert_eq!(s.responses_completed, 1);
    assert_eq!(s.streams_cancelled, 0, "injected endings are not cancels");
    drop(ws);
    eventually("every socket closed", || m.stats().ws_active == 0).await;
}

#[tokio::test]
async fn mid_stream_scenario_failures_map_to_close_reset_and_failure_events() {
    let m = start();
    let a = &m.accounts()[0];
    let directive = |j: &str| turn("gpt-5.5", &format!("go [[mock {j}]]"));

    let (mut ws, _) = connect(&m, a, &[]).await;
    send_json(
        &mut ws,
        create(&directive(
            r#"{"fail_after_events":4,"fail_mode":"failed_event"}"#,
        )),
    )
    .await;
    let ev = turn_events(&mut ws).await;
    assert_eq!(ev.len(), 6, "4 events, the rate limits and the failure");
    assert_eq!(ev[5]["type"], "response.failed");
    assert_eq!(ev[5]["response"]["error"]["code"], "server_error");
    // The socket survives a failed response.
    send_json(&mut ws, create(&turn("gpt-5.5", "ok"))).await;
    assert_eq!(
        *kinds(&turn_events(&mut ws).await).last().unwrap(),
        "response.completed"
    );

    // A clean end without a terminal event is a close 1000 over WebSocket.
    send_json(
        &mut ws,
        create(&directive(r#"{"fail_after_events":3,"fail_mode":"eof"}"#)),
    )
    .await;
    for _ in 0..4 {
        next_json(&mut ws).await;
    }
    expect_close(&mut ws, CloseCode::Normal).await;

    // A reset is a drop without a close frame.
    let (mut ws, _) = connect(&m, a, &[]).await;
    send_json(
        &mut ws,
        create(&directive(r#"{"fail_after_events":2,"fail_mode":"reset"}"#)),
    )
    .await;
    for _ in 0..3 {
        next_json(&mut ws).await;
    }
    assert!(
        !matches!(next(&mut ws).await, Some(Ok(_))),
        "no further message"
    );
    assert_eq!(m.stats().responses_completed, 1);
}

#[tokio::test]
async fn one_response_in_flight_per_socket() {
    let m = start();
    let a = &m.accounts()[0];
    let (mut ws, _) = connect(&m, a, &[]).await;
    send_json(
        &mut ws,
        create(&turn(
            "gpt-5.5",
            r#"slow [[mock {"deltas":4,"delay_ms":100}]]"#,
        )),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["type"], "response.created");
    send_json(&mut ws, create(&turn("gpt-5.5", "second"))).await;
    let mut ev = Vec::new();
    loop {
        let v = next_json(&mut ws).await;
        let done = v["type"] == "response.completed";
        ev.push(v);
        if done {
            break;
        }
    }
    let errors: Vec<&Value> = ev.iter().filter(|v| v["type"] == "error").collect();
    assert_eq!(errors.len(), 1, "{ev:?}");
    assert_eq!(errors[0]["status"], 400);
    assert_eq!(errors[0]["error"]["code"], "response_in_progress");
    assert_eq!(
        ev.iter()
            .filter(|v| v["type"] == "response.output_text.delta")
            .count(),
        4,
        "the first response streamed on, whole"
    );
    // After it, the socket takes the next turn.
    send_json(&mut ws, create(&turn("gpt-5.5", "third"))).await;
    assert_eq!(
        *kinds(&turn_events(&mut ws).await).last().unwrap(),
        "response.completed"
    );
}

#[tokio::test]
async fn append_extends_the_last_request_and_processed_is_not_answered() {
    let m = start();
    let a = &m.accounts()[0];
    let (mut ws, _) = connect(&m, a, &[]).await;

    send_json(&mut ws, json!({"type":"response.append","input":[]})).await;
    let err = next_json(&mut ws).await;
    assert_eq!(
        (err["status"].clone(), err["error"]["code"].clone()),
        (json!(400), json!("no_response_to_append"))
    );

    send_json(&mut ws, create(&turn("gpt-5.5", "first"))).await;
    let first = turn_events(&mut ws).await;
    let first_input = first.last().unwrap()["response"]["usage"]["input_tokens"]
        .as_u64()
        .unwrap();
    send_json(
        &mut ws,
        json!({"type":"response.processed","response_id": first.last().unwrap()["response"]["id"]}),
    )
    .await;

    let more = json!([
        {"type":"message","role":"assistant","content":[{"type":"output_text","text":"earlier answer"}]},
        {"type":"message","role":"user","content":[{"type":"input_text","text":"[[mock {\"text\":\"appended!\",\"deltas\":2}]]"}]}
    ]);
    send_json(&mut ws, json!({"type":"response.append","input": more})).await;
    // No reply to `response.processed`: the next message belongs to the appended turn.
    let ev = turn_events(&mut ws).await;
    assert_eq!(ev[0]["type"], "response.created");
    let text: String = ev.iter().filter_map(|v| v["delta"].as_str()).collect();
    assert_eq!(
        text, "appended!",
        "the appended user message is the last one"
    );
    let done = ev.last().unwrap();
    assert!(
        done["response"]["usage"]["input_tokens"].as_u64().unwrap() > first_input,
        "the whole extended input counts"
    );
    let seen = m.last_request(&a.chatgpt_account_id).unwrap();
    assert_eq!(seen.body_json().unwrap()["type"], "response.append");

    send_json(&mut ws, json!({"type":"session.update"})).await;
    let err = next_json(&mut ws).await;
    assert_eq!(err["status"], 400);
    assert_eq!(err["error"]["param"], "type");
    ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(next_json(&mut ws).await["status"], 400);
}

#[tokio::test]
async fn pings_are_ponged_and_binary_messages_close_with_1003() {
    let m = start();
    let a = &m.accounts()[0];
    let (mut ws, _) = connect(&m, a, &[]).await;
    ws.send(Message::Ping(b"are you there"[..].into()))
        .await
        .unwrap();
    match next(&mut ws).await {
        Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    ws.send(Message::Binary(b"{}"[..].into())).await.unwrap();
    expect_close(&mut ws, CloseCode::Unsupported).await;
}

/// The event objects with what differs between two requests (ids, timestamps) blanked.
fn normalized(events: impl IntoIterator<Item = Value>) -> Vec<Value> {
    events
        .into_iter()
        .filter(|v| v["type"] != "codex.rate_limits")
        .map(|mut v| {
            if let Some(r) = v.get_mut("response") {
                r["id"] = json!("resp_x");
                r["created_at"] = json!(0);
            }
            v
        })
        .collect()
}

#[tokio::test]
async fn events_are_the_sse_routes_events() {
    let m = start();
    let a = &m.accounts()[0];
    let (mut ws, _) = connect(&m, a, &[]).await;
    for text in [
        "plain",
        r#"tool [[mock {"tool_call":true,"deltas":3}]]"#,
        r#"words [[mock {"text":"Hi there, friend!","deltas":3,"reasoning":false}]]"#,
        r#"refuse [[mock {"refusal":true}]]"#,
        r#"cut [[mock {"fail_after_events":5,"fail_mode":"incomplete"}]]"#,
        r#"big [[mock {"big_event_bytes":100000,"deltas":2}]]"#,
    ] {
        let body = turn("gpt-5.5", text);
        let sse = post_turn(&m, a, &[], &body);
        assert_eq!(sse.status(), 200);
        let sse_events: Vec<Value> = sse.events().into_iter().map(|(_, v)| v).collect();
        send_json(&mut ws, create(&body)).await;
        let ws_events = turn_events(&mut ws).await;
        assert_eq!(ws_events[1]["type"], "codex.rate_limits");
        assert_eq!(
            normalized(ws_events),
            normalized(sse_events),
            "events for {text:?}"
        );
    }
}

#[tokio::test]
async fn wss_over_tls_carries_turns() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};

    let (tls, ca_pem) = loadtest::mock::self_signed_localhost();
    let m = MockUpstream::start(MockConfig {
        tls: Some(tls),
        ..MockConfig::default()
    })
    .unwrap();
    let url = m.ws_url();
    assert!(url.starts_with("wss://localhost:"), "{url}");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(m.addr()).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let a = &m.accounts()[0];
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert(
        "authorization",
        format!("Bearer {}", a.access_token).parse().unwrap(),
    );
    h.insert("chatgpt-account-id", a.chatgpt_account_id.parse().unwrap());
    h.insert("openai-beta", BETA.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text(
        Value::Object(create(&turn("gpt-5.5", "hi"))).to_string(),
    ))
    .await
    .unwrap();
    let mut last = Value::Null;
    while last["type"] != "response.completed" {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => last = serde_json::from_str(&t).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(last["response"]["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn the_handshakes_scenario_header_applies_to_every_turn() {
    let m = start();
    let a = &m.accounts()[0];
    let (mut ws, _) = connect(&m, a, &[("x-mock-scenario", r#"{"deltas":2,"text":"ab"}"#)]).await;
    for _ in 0..2 {
        send_json(&mut ws, create(&turn("gpt-5.5", "hi"))).await;
        let ev = turn_events(&mut ws).await;
        let deltas: Vec<&str> = ev.iter().filter_map(|v| v["delta"].as_str()).collect();
        assert_eq!(deltas, ["a", "b"]);
    }
}
