//! The Codex WebSocket transport through the gateway, with an independent client (tungstenite):
//! several turns on one socket, `previous_response_id`, usage per turn, wrapped error frames,
//! a stream broken before its terminal event, protocol errors with their close codes, the age
//! limit, and the 1012 close at shutdown.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::Env;
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

fn connect_with(env: &Env, headers: &[(&'static str, &str)]) -> Result<Socket, tungstenite::Error> {
    let mut req = format!("ws://{}/backend-api/codex/responses", env.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "openai-beta",
        "responses_websockets=2026-02-06".parse().unwrap(),
    );
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    let (ws, resp) = tungstenite::connect(req)?;
    assert_eq!(resp.status(), 101);
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    }
    Ok(ws)
}

fn connect(env: &Env) -> Socket {
    connect_with(env, &[]).expect("upgrade")
}

fn create(text: &str, extra: Value) -> Message {
    let mut v = json!({
        "type": "response.create",
        "model": "gpt-5.5",
        "instructions": "You are Codex.",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}],
        "store": false,
        "prompt_cache_key": "ws-conversation",
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    Message::text(v.to_string())
}

/// The next message; a read interrupted by a signal (EINTR) is retried.
fn next(ws: &mut Socket) -> Result<Message, tungstenite::Error> {
    loop {
        match ws.read() {
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Reads messages until a terminal event or an error frame; returns them all.
fn turn(ws: &mut Socket) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        match next(ws).expect("read") {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("json message");
                let t = v["type"].as_str().unwrap_or_default().to_string();
                events.push(v);
                if matches!(
                    t.as_str(),
                    "response.completed" | "response.failed" | "response.incomplete" | "error"
                ) {
                    return events;
                }
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?} after {events:?}"),
        }
    }
}

fn close_code(ws: &mut Socket) -> u16 {
    loop {
        match next(ws) {
            Ok(Message::Close(Some(f))) => return u16::from(f.code),
            Ok(Message::Close(None)) => return 1005,
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

#[test]
fn turns_on_one_socket_stay_on_one_account_and_are_recorded_each() {
    let env = Env::start(3);
    let mut ws = connect(&env);
    ws.send(create("first", json!({}))).unwrap();
    let first = turn(&mut ws);
    assert_eq!(first[0]["type"], "response.created", "{first:?}");
    let done = first.last().unwrap();
    assert_eq!(done["type"], "response.completed", "{done}");
    let id = done["response"]["id"].as_str().unwrap().to_string();
    ws.send(create("second", json!({"previous_response_id": id})))
        .unwrap();
    let second = turn(&mut ws);
    assert_eq!(second.last().unwrap()["type"], "response.completed");
    ws.send(create("third", json!({}))).unwrap();
    assert_eq!(turn(&mut ws).last().unwrap()["type"], "response.completed");
    ws.close(None).unwrap();

    std::thread::sleep(Duration::from_millis(1500));
    let rows = env.get_json("/api/requests?limit=10");
    let turns: Vec<&Value> = rows["requests"].as_array().unwrap().iter().collect();
    assert_eq!(turns.len(), 3, "{rows}");
    let account = &turns[0]["account_id"];
    for t in &turns {
        assert_eq!(t["transport"], "websocket", "{t}");
        assert_eq!(t["outcome"], "completed", "{t}");
        assert!(t["total_tokens"].as_u64().unwrap() > 0, "{t}");
        assert_eq!(&t["account_id"], account, "one socket, one account: {rows}");
    }
    // Upstream, the three turns went over one WebSocket of that account, as response.create
    // messages.
    let acct = env
        .mock
        .accounts()
        .into_iter()
        .find(|a| env.mock.ws_turns(&a.chatgpt_account_id) > 0)
        .expect("turns over an upstream websocket");
    assert_eq!(env.mock.ws_turns(&acct.chatgpt_account_id), 3);
    assert_eq!(env.mock.ws_upgrades(&acct.chatgpt_account_id), 1);
    let seen = env.mock.last_request(&acct.chatgpt_account_id).unwrap();
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["type"], "response.create", "{body}");
    assert_eq!(body["input"][0]["content"][0]["text"], "third", "{body}");
}

#[test]
fn an_upstream_without_websocket_is_reached_over_http_for_the_rest_of_the_session() {
    let env = Env::start(1);
    env.mock.set_websockets(false);
    let acct = env.mock.accounts()[0].chatgpt_account_id.clone();
    let mut ws = connect(&env);
    for text in ["one", "two"] {
        ws.send(create(text, json!({}))).unwrap();
        assert_eq!(turn(&mut ws).last().unwrap()["type"], "response.completed");
    }
    // Refused once (426), then HTTP without asking again.
    assert_eq!(env.mock.ws_refused(&acct), 1);
    assert_eq!(env.mock.ws_turns(&acct), 0);
    // With the upstream leg set to HTTP, no upgrade is tried at all.
    let env = Env::start_with(1, |s| {
        s.upstream_transport = codex_lb::config::UpstreamTransport::Http
    });
    let acct = env.mock.accounts()[0].chatgpt_account_id.clone();
    let mut ws = connect(&env);
    ws.send(create("three", json!({}))).unwrap();
    assert_eq!(turn(&mut ws).last().unwrap()["type"], "response.completed");
    assert_eq!(env.mock.ws_refused(&acct) + env.mock.ws_upgrades(&acct), 0);
}

#[test]
fn an_upstream_socket_closed_mid_turn_ends_the_turn_with_response_failed() {
    let env = Env::start(1);
    let acct = env.mock.accounts()[0].chatgpt_account_id.clone();
    let mut ws = connect(&env);
    env.mock.close_next_ws(
        &acct,
        loadtest::mock::WsClose::DropMidStream { after_events: 3 },
    );
    ws.send(create("dropped", json!({}))).unwrap();
    let events = turn(&mut ws);
    assert_eq!(
        events.last().unwrap()["type"],
        "response.failed",
        "{events:?}"
    );
    // The next turn opens a new upstream socket and completes.
    ws.send(create("again", json!({}))).unwrap();
    assert_eq!(turn(&mut ws).last().unwrap()["type"], "response.completed");
    assert_eq!(env.mock.ws_upgrades(&acct), 2);
}

#[test]
fn an_exhausted_pool_answers_with_a_wrapped_error_the_cli_maps_to_its_status() {
    let env = Env::start(1);
    let acct = env.mock.accounts()[0].chatgpt_account_id.clone();
    let mut ws = connect(&env);
    env.mock.fail_next(&acct, 429, 1);
    ws.send(create("limited", json!({}))).unwrap();
    let events = turn(&mut ws);
    let err = events.last().unwrap();
    assert_eq!(err["type"], "error", "{events:?}");
    assert_eq!(err["status"], 429, "{err}");
    assert!(
        err["error"]["type"].is_string() || err["error"]["code"].is_string(),
        "{err}"
    );
    // The socket is still good for the next turn (which the cooling account refuses too, in
    // its own frame).
    ws.send(create("after", json!({}))).unwrap();
    let next = turn(&mut ws);
    assert!(next.last().unwrap()["type"].is_string(), "{next:?}");
}

#[test]
fn a_stream_broken_before_its_terminal_event_ends_with_response_failed() {
    let env = Env::start(1);
    let mut ws = connect(&env);
    ws.send(create(
        r#"break [[mock {"deltas":8,"fail_after_events":4,"fail_mode":"reset"}]]"#,
        json!({}),
    ))
    .unwrap();
    let events = turn(&mut ws);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.failed", "{events:?}");
    assert!(events.len() >= 4, "{events:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let rows = env.get_json("/api/requests?limit=5");
    let row = &rows["requests"][0];
    assert_eq!(row["transport"], "websocket", "{row}");
    assert_ne!(row["outcome"], "completed", "{row}");
}

#[test]
fn protocol_errors_close_with_their_codes_and_bad_messages_get_error_frames() {
    let env = Env::start(1);
    // Not JSON: an error frame, the socket stays.
    let mut ws = connect(&env);
    ws.send(Message::text("not json")).unwrap();
    let e = turn(&mut ws);
    assert_eq!(e[0]["status"], 400, "{e:?}");
    assert_eq!(e[0]["error"]["code"], "invalid_json", "{e:?}");
    ws.send(Message::text(r#"{"type":"response.append","input":[]}"#))
        .unwrap();
    let e = turn(&mut ws);
    assert_eq!(e[0]["error"]["code"], "unsupported_message_type", "{e:?}");
    // A ping is answered with its payload.
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    match next(&mut ws).unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        other => panic!("{other:?}"),
    }
    // Binary is not part of the protocol: 1003.
    ws.send(Message::Binary(vec![1, 2, 3].into())).unwrap();
    assert_eq!(close_code(&mut ws), 1003);

    // Larger than the body limit: 1009.
    let env = Env::start_with(1, |s| s.max_body_bytes = 1024);
    let mut ws = connect(&env);
    ws.send(create(&"x".repeat(4096), json!({}))).unwrap();
    assert_eq!(close_code(&mut ws), 1009);
}

#[test]
fn an_old_socket_is_told_to_reconnect_and_shutdown_closes_with_1012() {
    let env = Env::start_with(1, |s| s.websocket_max_age = Duration::from_secs(1));
    let mut ws = connect(&env);
    ws.send(create("young", json!({}))).unwrap();
    assert_eq!(turn(&mut ws).last().unwrap()["type"], "response.completed");
    std::thread::sleep(Duration::from_millis(1100));
    ws.send(create("old", json!({}))).unwrap();
    let e = turn(&mut ws);
    assert_eq!(
        e[0]["error"]["code"], "websocket_connection_limit_reached",
        "{e:?}"
    );
    assert_eq!(close_code(&mut ws), 1000);

    // A socket with nothing to say for the idle limit is closed normally.
    let env = Env::start_with(1, |s| s.websocket_idle_timeout = Duration::from_secs(1));
    let mut ws = connect(&env);
    let started = std::time::Instant::now();
    assert_eq!(close_code(&mut ws), 1000);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let mut env = Env::start(1);
    let mut ws = connect(&env);
    ws.send(create("before shutdown", json!({}))).unwrap();
    assert_eq!(turn(&mut ws).last().unwrap()["type"], "response.completed");
    let gw = env.gateway.take().unwrap();
    let stopper = std::thread::spawn(move || gw.shutdown());
    assert_eq!(close_code(&mut ws), 1012);
    stopper.join().unwrap().unwrap();
}

#[test]
fn a_bad_key_is_refused_at_the_upgrade_with_its_status() {
    let env = Env::start_with(1, |s| s.api_key_auth = Some(true));
    match connect_with(&env, &[("authorization", "Bearer sk-clb-wrong")]) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("upgraded without a valid key"),
    }
}

#[test]
fn an_http_turn_can_reach_the_upstream_over_websocket_and_still_read_as_sse() {
    let env = Env::start_with(1, |s| {
        s.upstream_transport = codex_lb::config::UpstreamTransport::Websocket
    });
    let acct = env.mock.accounts()[0].chatgpt_account_id.clone();
    let r = ureq::post(&env.url("/backend-api/codex/responses"))
        .set("content-type", "application/json")
        .send_string(&common::turn_body("http in, websocket out"))
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_type(), "text/event-stream");
    let text = r.into_string().unwrap();
    assert!(
        text.starts_with("event: response.created\ndata: {"),
        "{text}"
    );
    assert!(
        text.contains("\nevent: response.completed\ndata: {"),
        "{text}"
    );
    assert_eq!(
        env.mock.ws_turns(&acct),
        1,
        "the upstream leg was a WebSocket"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let rows = env.get_json("/api/requests?limit=1");
    let row = &rows["requests"][0];
    assert_eq!(row["outcome"], "completed", "{row}");
    assert!(row["total_tokens"].as_u64().unwrap() > 0, "{row}");
}

#[test]
fn the_openai_path_v1_responses_takes_the_same_websocket_sessions() {
    let env = Env::start(1);
    let req = format!("ws://{}/v1/responses", env.addr)
        .into_client_request()
        .unwrap();
    let (mut ws, resp) = tungstenite::connect(req).expect("upgrade on /v1/responses");
    assert_eq!(resp.status(), 101);
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    }
    ws.send(create("over the OpenAI path", json!({}))).unwrap();
    let events = turn(&mut ws);
    assert_eq!(
        events.last().unwrap()["type"],
        "response.completed",
        "{events:?}"
    );
    ws.close(None).unwrap();
    // A plain GET there (no upgrade) is refused by the handshake, not served as something else.
    let r = ureq::get(&env.url("/v1/responses")).call();
    let status = match r {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{e}"),
    };
    assert!((400..500).contains(&status), "{status}");
}
