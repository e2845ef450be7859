//! `GET /backend-api/codex/responses` with `Upgrade: websocket`: the WebSocket transport of the
//! model turn (PROTOCOL.md 6, 9 item 15).
//!
//! Only a `GET` with `Upgrade: websocket` is routed here (a plain `GET` stays a 404). Handshake
//! steps, in order: authenticate (401/403 as on POST) -> upgrade allowed? (WebSocket on,
//! `Connection: Upgrade`, version 13, `OpenAI-Beta: responses_websockets=…`, else 426) ->
//! `Sec-WebSocket-Key` (400) -> record -> armed failure -> quota (429) -> 101. The 101 carries
//! `x-request-id`, `x-codex-turn-state`, `x-models-etag` and the rate-limit headers; it offers no
//! extension, so a client's `permessage-deflate` offer is declined (RFC 7692 section 5), and no
//! subprotocol.
//!
//! Then one task per socket reads client messages and sends turns. A `response.create` (or a
//! v1 `response.append`, which adds its `input` to the last request's) goes through the same
//! steps as a POST body ([`super::turn`]) and its events are the POST's events, sent as one text
//! message each, with `codex.rate_limits` after `response.created`; a refusal becomes an
//! `{"type":"error","status":…,"error":{…},"headers":{…}}` message (PROTOCOL.md 6.4) and the
//! socket stays open. One response is in flight per socket; `previous_response_id` must name a
//! response completed on this socket; `generate: false` answers `response.created` and an empty
//! `response.completed`. Past the connection-age limit the next turn gets the
//! `websocket_connection_limit_reached` error and the socket is closed. Pings are answered by
//! tungstenite; a binary message closes with 1003.
//!
//! Scenario knobs mean what they mean on SSE: pacing (`ttfb_ms`, `head_delay_ms`, `delay_ms`,
//! `jitter_ms`), content, `hang`, `record` (kept as `{x-request-id}#{n}`, one message per line).
//! `fail_after_events` counts the same events as on SSE (`codex.rate_limits` not included); its
//! `reset` drops the TCP connection (RST, no close frame), `eof` closes with 1000, the terminal
//! failure events are sent as messages and the socket stays open. The SSE-only write knobs
//! (`chunk_bytes`, `coalesce`, `crlf`, `keepalive_comments`, `tail_delay_ms`) do not apply. An
//! armed [`WsClose`] counts messages, `codex.rate_limits` included.
//!
//! Framing, masking and the close handshake are tungstenite's: an implementation independent of
//! the gateway's codec, so each checks the other. This module must not frame bytes itself.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use hyper::upgrade::Upgraded;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::auth::authenticated;
use super::turn::{admit, armed_failure, plan_turn, quota, Refused, StreamField};
use crate::mock::accounts::WsClose;
use crate::mock::body::{ConnCtl, MockBody, Pacer, RESET_GRACE};
use crate::mock::errors;
use crate::mock::render::End;
use crate::mock::reply::{headers_object, rate_limits_event, ReplyCtx, MODELS_ETAG};
use crate::mock::request::{header_list, RecordedRequest, Transport, MAX_BODY_BYTES};
use crate::mock::scenario::FailMode;
use crate::mock::state::Shared;

/// The route key WebSocket turns are counted under in `requests_by_route`.
pub const WS_TURN_ROUTE: &str = "WS /backend-api/codex/responses";
/// The `OpenAI-Beta` token that asks for the transport (any date after `=`).
const BETA_TOKEN: &str = "responses_websockets=";
/// Largest client message accepted, as for a POST body.
const MAX_MESSAGE_BYTES: usize = MAX_BODY_BYTES;
/// Responses remembered per socket for `previous_response_id`; the oldest are forgotten first.
const MAX_REMEMBERED: usize = 1024;
/// How long a close waits for the peer's close frame before the socket is dropped anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

type Ws = WebSocketStream<TokioIo<Upgraded>>;

pub async fn handle(
    shared: &Arc<Shared>,
    conn: Arc<ConnCtl>,
    mut req: Request<Incoming>,
) -> Response<MockBody> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _body) = req.into_parts();
    let (mut ctx, account) = match authenticated(shared, &parts.headers) {
        Ok(x) => x,
        Err(refused) => return *refused,
    };
    let acct = &shared.accounts[account];
    if let Some(why) = refuse_upgrade(shared, &parts.headers) {
        shared.stats.ws_refused(acct.id());
        let mut r = ctx.json(shared, StatusCode::UPGRADE_REQUIRED, &why);
        // RFC 9110 section 15.5.22: a 426 names the protocol to switch to.
        let h = r.headers_mut();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return r;
    }
    let Some(key) = parts.headers.get(SEC_WEBSOCKET_KEY) else {
        let body = errors::invalid_request("Missing Sec-WebSocket-Key header.", None, None);
        return ctx.json(shared, StatusCode::BAD_REQUEST, &body);
    };
    let accept = derive_accept_key(key.as_bytes());
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.to_string());
    acct.record_request(RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        headers: header_list(&parts.headers),
        body: Vec::new(),
        content_encoding: None,
        transport: Transport::WebSocket,
    });
    if let Some(refused) = armed_failure(shared, account, &mut ctx) {
        return ctx.json(shared, refused.status, &refused.body);
    }
    if let Err(refused) = quota(shared, account, &mut ctx) {
        return ctx.json(shared, refused.status, &refused.body);
    }

    shared.stats.ws_upgrade(acct.id());
    // Counted from the 101 on, so a client that has its 101 sees the socket in `ws_active`.
    let open = OpenSocket::new(shared.clone());
    let session = Session {
        shared: shared.clone(),
        conn,
        account,
        request_id: ctx.request_id.clone(),
        turn_state: ctx.turn_state.clone(),
        path,
        headers: parts.headers,
        opened: Instant::now(),
        turns: 0,
        last_body: None,
        completed: HashSet::new(),
        completed_order: VecDeque::new(),
        active: None,
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(MAX_MESSAGE_BYTES))
                    .max_frame_size(Some(MAX_MESSAGE_BYTES));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                session.run(ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "mock-upstream WebSocket upgrade failed"),
        }
        drop(open);
    });

    let mut r = Response::new(MockBody::Full(None));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::try_from(accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    h.insert("x-models-etag", HeaderValue::from_static(MODELS_ETAG));
    ctx.apply(shared, h);
    r
}

/// Whether a `GET` asks to switch to WebSocket (`Upgrade: websocket`); a plain `GET` of
/// `/responses` is no route at all (404), as before the transport existed.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, UPGRADE, "websocket")
}

/// Whether the comma-separated header `name` lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// The 426 body when the request may not switch to WebSocket, `None` when it may.
fn refuse_upgrade(shared: &Shared, headers: &HeaderMap) -> Option<Value> {
    let refusal =
        |message: &str, code: &str| Some(errors::invalid_request(message, None, Some(code)));
    if !shared.websockets() {
        return refusal(
            "WebSocket transport is not available for /responses; use HTTP POST.",
            "websockets_unavailable",
        );
    }
    if !has_token(headers, CONNECTION, "upgrade") {
        return refusal(
            "A WebSocket handshake needs Connection: Upgrade (RFC 6455 section 4.1).",
            "upgrade_required",
        );
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        != Some("13")
    {
        return refusal(
            "Unsupported Sec-WebSocket-Version: only 13 is supported.",
            "unsupported_websocket_version",
        );
    }
    let beta = headers.get_all("openai-beta").iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().starts_with(BETA_TOKEN)))
    });
    if !beta {
        return refusal(
            "Responses over WebSocket need the header OpenAI-Beta: responses_websockets=2026-02-06.",
            "websocket_beta_required",
        );
    }
    None
}

/// One open socket: what it remembers between turns, and the turn in flight.
struct Session {
    shared: Arc<Shared>,
    conn: Arc<ConnCtl>,
    account: usize,
    request_id: String,
    turn_state: String,
    path: String,
    /// The upgrade request's headers: recorded with every turn, and their `x-mock-scenario`
    /// applies to every turn of the socket.
    headers: HeaderMap,
    opened: Instant,
    /// `response.create` / `response.append` messages so far.
    turns: u64,
    /// The last admitted request body (without `type`), which `response.append` extends.
    last_body: Option<Map<String, Value>>,
    completed: HashSet<String>,
    completed_order: VecDeque<String>,
    active: Option<ActiveTurn>,
}

/// What the socket loop does next.
enum Flow {
    Continue,
    /// Send a close frame with this code and reason, wait for the peer's, end.
    Close(CloseCode, &'static str),
    /// Reset the TCP connection without a close frame.
    Drop,
    /// The peer is gone.
    Gone,
}

enum Step {
    Incoming(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Due,
}

impl Session {
    async fn run(mut self, mut ws: Ws) {
        loop {
            let step = tokio::select! {
                msg = ws.next() => Step::Incoming(msg),
                () = due(&mut self.active) => Step::Due,
            };
            let flow = match step {
                Step::Incoming(Some(Ok(msg))) => self.on_message(&mut ws, msg).await,
                Step::Incoming(Some(Err(e))) => {
                    tracing::debug!(error = %e, "mock-upstream WebSocket read failed");
                    Flow::Gone
                }
                Step::Incoming(None) => Flow::Gone,
                Step::Due => self.emit(&mut ws).await,
            };
            match flow {
                Flow::Continue => {}
                Flow::Close(code, reason) => {
                    self.end_turn();
                    close(&mut ws, code, reason).await;
                    return;
                }
                Flow::Drop => {
                    self.end_turn();
                    tokio::time::sleep(RESET_GRACE).await;
                    self.conn.request_reset();
                    return;
                }
                // A turn still in flight is dropped with the session: counted as cancelled.
                Flow::Gone => return,
            }
        }
    }

    /// Forgets the turn in flight as the mock's own ending (not a client cancel).
    fn end_turn(&mut self) {
        if let Some(mut t) = self.active.take() {
            t.finish();
        }
    }

    async fn on_message(&mut self, ws: &mut Ws, msg: Message) -> Flow {
        match msg {
            Message::Text(text) => self.on_text(ws, &text).await,
            Message::Binary(_) => {
                Flow::Close(CloseCode::Unsupported, "binary messages are not supported")
            }
            // tungstenite has queued the pong (or the close reply) already.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {
                Flow::Continue
            }
        }
    }

    async fn on_text(&mut self, ws: &mut Ws, text: &str) -> Flow {
        let Ok(Value::Object(mut msg)) = serde_json::from_str::<Value>(text) else {
            let body = errors::invalid_request(errors::UNPARSABLE_JSON, None, None);
            return self.error(ws, StatusCode::BAD_REQUEST, &body, None).await;
        };
        let kind = msg
            .remove("type")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        match kind.as_str() {
            "response.create" | "response.append" => self.on_turn(ws, &kind, msg, text).await,
            // An acknowledgement of a consumed response: nothing to answer.
            "response.processed" => Flow::Continue,
            _ => {
                let body = errors::invalid_request(
                    &format!("Invalid value: '{kind}'. Supported values are: 'response.create', 'response.append' and 'response.processed'."),
                    Some("type"),
                    Some("invalid_value"),
                );
                self.error(ws, StatusCode::BAD_REQUEST, &body, None).await
            }
        }
    }

    /// Steps: count -> connection age -> one in flight -> record -> build the body (append) ->
    /// armed failure -> `previous_response_id` -> validate, scenario, quota -> armed close ->
    /// plan and start streaming.
    async fn on_turn(
        &mut self,
        ws: &mut Ws,
        kind: &str,
        msg: Map<String, Value>,
        text: &str,
    ) -> Flow {
        let shared = self.shared.clone();
        let acct = &shared.accounts[self.account];
        shared.stats.request(WS_TURN_ROUTE);
        shared.stats.account(acct.id());
        shared.stats.ws_turn(acct.id());
        self.turns += 1;

        let max_age = shared.ws_max_age();
        if self.opened.elapsed() >= max_age {
            let body = errors::invalid_request(
                &format!(
                    "Responses websocket connection limit reached ({}). Create a new websocket connection to continue.",
                    age_text(max_age)
                ),
                None,
                Some("websocket_connection_limit_reached"),
            );
            return match self.error(ws, StatusCode::BAD_REQUEST, &body, None).await {
                Flow::Continue => Flow::Close(CloseCode::Normal, "connection limit reached"),
                other => other,
            };
        }
        if self.active.is_some() {
            let body = errors::invalid_request(
                "Another response is in progress on this connection. Wait for it to finish before sending response.create.",
                None,
                Some("response_in_progress"),
            );
            return self.error(ws, StatusCode::BAD_REQUEST, &body, None).await;
        }
        acct.record_request(RecordedRequest {
            method: "GET".to_string(),
            path: self.path.clone(),
            headers: header_list(&self.headers),
            body: text.as_bytes().to_vec(),
            content_encoding: None,
            transport: Transport::WebSocket,
        });

        let body = if kind == "response.append" {
            match appended(self.last_body.as_ref(), msg) {
                Ok(b) => b,
                Err(body) => return self.error(ws, StatusCode::BAD_REQUEST, &body, None).await,
            }
        } else {
            msg
        };

        let mut ctx = ReplyCtx {
            request_id: self.request_id.clone(),
            turn_state: self.turn_state.clone(),
            account: Some(self.account),
            usage: None,
            model: None,
            reasoning_included: None,
        };
        if let Some(refused) = armed_failure(&shared, self.account, &mut ctx) {
            return self.refused(ws, &ctx, refused).await;
        }
        match body.get("previous_response_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(id)) if self.completed.contains(id) => {}
            Some(other) => {
                let shown = other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_string);
                let body = errors::invalid_request(
                    &format!("Previous response with id '{shown}' not found."),
                    Some("previous_response_id"),
                    Some("previous_response_not_found"),
                );
                return self.error(ws, StatusCode::BAD_REQUEST, &body, None).await;
            }
        }
        let admitted = match admit(
            &shared,
            self.account,
            &mut ctx,
            &self.headers,
            &body,
            StreamField::Optional,
        ) {
            Ok(a) => a,
            Err(refused) => return self.refused(ws, &ctx, refused).await,
        };
        let close = acct.take_ws_close();
        if close == Some(WsClose::NormalBeforeCreated) {
            return Flow::Close(CloseCode::Normal, "");
        }

        let generate = body.get("generate") != Some(&Value::Bool(false));
        // The size of the equivalent POST body, so both transports report the same usage.
        let body_len = serde_json::to_vec(&body).map_or(0, |b| b.len() as u64);
        let stable_key =
            (!self.request_id.is_empty()).then(|| format!("{}#{}", self.request_id, self.turns));
        let turn = plan_turn(
            &shared,
            &admitted,
            &body,
            body_len,
            stable_key.as_deref(),
            generate,
        );
        self.last_body = Some(body);
        let usage = ctx.usage.unwrap_or_else(|| acct.usage(shared.clock.now()));
        let limits = Bytes::from(rate_limits_event(&acct.plan_type, &usage).to_string());
        let sc = &admitted.sc;

        let mut frames = Vec::with_capacity(turn.plan.events.len() + 1);
        let mut is_delta = Vec::with_capacity(turn.plan.events.len() + 1);
        for (i, ev) in turn.plan.events.iter().enumerate() {
            frames.push(ev.json.clone());
            is_delta.push(turn.plan.is_delta.get(i).copied().unwrap_or(false));
            // Upstream sends the account's snapshot right after `response.created`.
            if i == 0 && sc.fail_after_events != Some(0) {
                frames.push(limits.clone());
                is_delta.push(false);
            }
        }
        let ending = match turn.plan.end {
            End::Reset => Ending::Drop,
            End::Clean
                if !turn.plan.completes
                    && sc.fail_after_events.is_some()
                    && sc.fail_mode == FailMode::Eof =>
            {
                Ending::Close(CloseCode::Normal)
            }
            End::Clean => Ending::Stay,
        };
        let injected = match close {
            Some(WsClose::ErrorMidStream { after_events }) => {
                Some((after_events as usize, Ending::Close(CloseCode::Error)))
            }
            Some(WsClose::DropMidStream { after_events }) => {
                Some((after_events as usize, Ending::Drop))
            }
            Some(WsClose::NormalBeforeCreated) | None => None,
        };
        shared.stats.stream_opened();
        self.active = Some(ActiveTurn {
            shared: shared.clone(),
            frames,
            is_delta,
            pos: 0,
            pacer: Pacer::new(
                Duration::from_millis(sc.head_delay_ms + sc.ttfb_ms),
                Duration::from_millis(sc.delay_ms),
                sc.jitter_ms,
                turn.seed,
            ),
            sleep: None,
            slept: false,
            hang: sc.hang,
            ending,
            injected,
            completes: turn.plan.completes,
            response_id: turn.response_id,
            account: self.account,
            total_tokens: turn.total_tokens,
            recording_key: format!("{}#{}", self.request_id, self.turns),
            record: sc.record.then(Vec::new),
            finished: false,
        });
        Flow::Continue
    }

    /// Sends the turn's next message; ends the turn as soon as it has nothing more to send, so
    /// a client that answers `response.completed` at once finds the socket free.
    async fn emit(&mut self, ws: &mut Ws) -> Flow {
        let Some(t) = self.active.as_mut() else {
            return Flow::Continue;
        };
        if let Some(ending) = t.ending_now() {
            return self.finish_turn(ending);
        }
        if let Some(frame) = t.frames.get(t.pos).cloned() {
            t.pos += 1;
            t.slept = false;
            if let Some(r) = t.record.as_mut() {
                r.extend_from_slice(&frame);
                r.push(b'\n');
            }
            if send(ws, &self.shared, frame).await.is_err() {
                return Flow::Gone;
            }
        }
        match self.active.as_ref().and_then(ActiveTurn::ending_now) {
            Some(ending) => self.finish_turn(ending),
            None => Flow::Continue,
        }
    }

    /// The turn sent what it will send: charge a completed response, remember its id, and say
    /// what happens to the socket.
    fn finish_turn(&mut self, ending: Ending) -> Flow {
        let Some(mut t) = self.active.take() else {
            return Flow::Continue;
        };
        if t.completes && t.pos >= t.frames.len() {
            self.shared.stream_completed(t.account, t.total_tokens);
            self.remember(std::mem::take(&mut t.response_id));
        }
        t.finish();
        match ending {
            Ending::Stay => Flow::Continue,
            Ending::Close(code) => Flow::Close(code, ""),
            Ending::Drop => Flow::Drop,
        }
    }

    fn remember(&mut self, id: String) {
        if self.completed_order.len() >= MAX_REMEMBERED {
            if let Some(old) = self.completed_order.pop_front() {
                self.completed.remove(&old);
            }
        }
        self.completed.insert(id.clone());
        self.completed_order.push_back(id);
    }

    /// A refused turn: its status, its upstream body's `error`, and the headers the HTTP reply
    /// would have carried.
    async fn refused(&mut self, ws: &mut Ws, ctx: &ReplyCtx, refused: Refused) -> Flow {
        let mut h = HeaderMap::new();
        ctx.apply(&self.shared, &mut h);
        let headers = headers_object(&h);
        self.error(ws, refused.status, &refused.body, Some(headers))
            .await
    }

    /// `{"type":"error","status":…,"error":{…}[,"headers":{…}]}` (PROTOCOL.md 6.4).
    async fn error(
        &mut self,
        ws: &mut Ws,
        status: StatusCode,
        body: &Value,
        headers: Option<Map<String, Value>>,
    ) -> Flow {
        self.shared.stats.rejected(status.as_u16());
        let mut frame = json!({
            "type": "error",
            "status": status.as_u16(),
            "error": body.get("error").cloned().unwrap_or(Value::Null),
        });
        if let Some(h) = headers {
            frame["headers"] = Value::Object(h);
        }
        match send(ws, &self.shared, Bytes::from(frame.to_string())).await {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::Gone,
        }
    }
}

/// A v1 `response.append`: the last request with `input` extended by the message's (and any
/// other field of the message laid over it).
fn appended(
    last: Option<&Map<String, Value>>,
    mut msg: Map<String, Value>,
) -> Result<Map<String, Value>, Value> {
    let Some(last) = last else {
        return Err(errors::invalid_request(
            "There is no response on this connection to append to: send response.create first.",
            None,
            Some("no_response_to_append"),
        ));
    };
    let Some(Value::Array(more)) = msg.remove("input") else {
        return Err(errors::invalid_request(
            "response.append needs an 'input' array.",
            Some("input"),
            None,
        ));
    };
    let mut body = last.clone();
    // `previous_response_id` and `generate` belonged to the request being extended.
    body.remove("previous_response_id");
    body.remove("generate");
    let mut input = match body.remove("input") {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    input.extend(more);
    body.insert("input".to_string(), Value::Array(input));
    body.extend(msg);
    Ok(body)
}

/// `60 minutes`, `90 seconds`: the limit as the error message states it.
fn age_text(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 60 && secs % 60 == 0 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    let s = if n == 1 { "" } else { "s" };
    format!("{n} {unit}{s}")
}

/// What becomes of the socket once a turn's messages are out.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// Stays open for the next turn.
    Stay,
    Close(CloseCode),
    Drop,
}

/// The turn in flight: its messages, pacing and ending. Counted as an open stream while it
/// lives; dropped unfinished (the peer went away) it counts as a cancelled stream, as an SSE body
/// does.
struct ActiveTurn {
    shared: Arc<Shared>,
    frames: Vec<Bytes>,
    is_delta: Vec<bool>,
    pos: usize,
    pacer: Pacer,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The pause owed before message `pos` has been set up.
    slept: bool,
    /// Accepted and never answered (`hang`).
    hang: bool,
    ending: Ending,
    /// An armed close: after this many messages, end this way.
    injected: Option<(usize, Ending)>,
    completes: bool,
    response_id: String,
    account: usize,
    total_tokens: u64,
    recording_key: String,
    record: Option<Vec<u8>>,
    finished: bool,
}

impl ActiveTurn {
    /// How the turn ends if it ends now: an armed close whose count is reached, or the plan's
    /// ending once every message is out.
    fn ending_now(&self) -> Option<Ending> {
        if let Some((after, ending)) = self.injected {
            if self.pos >= after.min(self.frames.len()) {
                return Some(ending);
            }
        }
        (self.pos >= self.frames.len()).then_some(self.ending)
    }

    /// Waits out the pause owed before the next message. Cancel-safe: the timer lives here.
    async fn wait(&mut self) {
        if !self.slept {
            self.slept = true;
            let is_delta = self.is_delta.get(self.pos).copied().unwrap_or(false);
            let d = self.pacer.pause_before(self.pos, is_delta);
            if !d.is_zero() {
                self.sleep = Some(Box::pin(tokio::time::sleep(d)));
            }
        }
        if let Some(s) = self.sleep.as_mut() {
            s.as_mut().await;
            self.sleep = None;
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        if let Some(r) = self.record.take() {
            self.shared.store_recording(&self.recording_key, r);
        }
    }
}

impl Drop for ActiveTurn {
    fn drop(&mut self) {
        self.shared.stats.stream_closed();
        if !self.finished {
            let id = self.shared.account_id(self.account).to_string();
            self.shared
                .stats
                .stream_cancelled(&id, std::time::Instant::now());
            if let Some(r) = self.record.take() {
                self.shared.store_recording(&self.recording_key, r);
            }
        }
    }
}

/// Resolves when the turn in flight owes its next step; never without one (or while it hangs).
async fn due(active: &mut Option<ActiveTurn>) {
    match active {
        Some(t) if !t.hang => t.wait().await,
        _ => std::future::pending().await,
    }
}

async fn send(ws: &mut Ws, shared: &Shared, frame: Bytes) -> Result<(), ()> {
    let n = frame.len();
    let text = Utf8Bytes::try_from(frame).map_err(|_| ())?;
    ws.send(Message::Text(text)).await.map_err(|e| {
        tracing::debug!(error = %e, "mock-upstream WebSocket write failed");
    })?;
    shared.stats.bytes(n);
    Ok(())
}

/// Sends a close frame, then waits (bounded) for the peer's so the close handshake completes
/// (RFC 6455 section 7.1.1: the server closes the TCP connection first, after it).
async fn close(ws: &mut Ws, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Counts an open socket in `ws_active` for its lifetime.
struct OpenSocket(Arc<Shared>);

impl OpenSocket {
    fn new(shared: Arc<Shared>) -> OpenSocket {
        shared.stats.ws_opened();
        OpenSocket(shared)
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.stats.ws_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_extends_the_last_input_and_drops_turn_only_fields() {
        let last = json!({"model":"gpt-5.5","input":[{"n":1}],"previous_response_id":"resp_1",
            "generate":false,"prompt_cache_key":"k"});
        let msg = json!({"input":[{"n":2},{"n":3}],"client_metadata":{"turn":"2"}});
        let body = appended(
            last.as_object(),
            msg.as_object().cloned().unwrap_or_default(),
        )
        .unwrap();
        assert_eq!(body["input"], json!([{"n":1},{"n":2},{"n":3}]));
        assert_eq!(body["model"], "gpt-5.5");
        assert_eq!(body["prompt_cache_key"], "k");
        assert_eq!(body["client_metadata"]["turn"], "2");
        assert!(body.get("previous_response_id").is_none());
        assert!(body.get("generate").is_none());

        let none = appended(None, Map::new()).unwrap_err();
        assert_eq!(none["error"]["code"], "no_response_to_append");
        let no_input = appended(last.as_object(), Map::new()).unwrap_err();
        assert_eq!(no_input["error"]["param"], "input");
    }

    #[test]
    fn age_limit_text() {
        assert_eq!(age_text(Duration::from_secs(3600)), "60 minutes");
        assert_eq!(age_text(Duration::from_secs(90)), "90 seconds");
        assert_eq!(age_text(Duration::from_secs(60)), "1 minute");
        assert_eq!(age_text(Duration::from_secs(1)), "1 second");
        assert_eq!(age_text(Duration::from_millis(500)), "0 seconds");
    }
}
