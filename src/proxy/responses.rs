//! `POST /backend-api/codex/responses`: the Codex turn. Steps 5–9 of a request (DESIGN.md): read
//! the body and the few fields routing needs, choose an account, forward, fail over while nothing
//! has reached the client, relay, record.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::client::ClientConn;
use super::events::{parse_error_body, retry_hint_secs, StreamFacts, UpstreamErrorInfo};
use super::observe;
use super::relay::{forward_response_header, is_quota_header, relay};
use super::{record, respond, respond_error, Record};
use crate::accounts::quota;
use crate::accounts::selection::{Pick, PickRequest};
use crate::accounts::strategy::hash_str;
use crate::accounts::{now_unix, AccountStatus, AccountView, Block, BlockReason};
use crate::config::UpstreamTransport;
use crate::control::{ControlMsg, Observation};
use crate::http::error_body::ApiError;
use crate::http::name_eq;
use crate::http::request::RequestHead;
use crate::http::response::{full_response, UpstreamHead};
use crate::keys::admission::{self, Refusal};
use crate::keys::limits::Spent;
use crate::keys::KeyView;
use crate::ledger::Outcome;
use crate::metrics::inc;
use crate::proxy::ws::upstream::{self as upstream_ws, Attempt};
use crate::upstream::exchange::{self, Exchange};
use crate::worker::Worker;

/// Fields the ChatGPT backend rejects; stripped before forwarding (PROTOCOL.md §1.5).
const UNSUPPORTED_FIELDS: &[&str] = &[
    "max_output_tokens",
    "metadata",
    "prompt_cache_retention",
    "safety_identifier",
    "temperature",
    "top_p",
    "truncation",
    "user",
];
/// Largest upstream error body read to decide failover.
const MAX_ERROR_BODY: usize = 1024 * 1024;
/// How long this worker avoids an account after a transient upstream failure.
const TRANSIENT_COOLDOWN: Duration = Duration::from_secs(2);
/// How long an account whose token was refused stays out of rotation (pool-wide).
const AUTH_BLOCK_SECS: u64 = 300;
/// Reset used when a usage-limit reply carries no usable reset time.
const DEFAULT_LIMIT_SECS: u64 = 300;
/// `resets_at` values further out than this are not believed (PROTOCOL.md §3.5).
const MAX_RESET_HORIZON_SECS: u64 = 366 * 24 * 3600;

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// The few body fields the gateway reads; everything else is skipped without allocating.
#[derive(Debug, Deserialize)]
struct Fields {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt_cache_key: Option<String>,
    #[serde(default)]
    service_tier: Option<String>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    reasoning: Option<ReasoningField>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    max_output_tokens: bool,
    #[serde(default, deserialize_with = "present")]
    metadata: bool,
    #[serde(default, deserialize_with = "present")]
    prompt_cache_retention: bool,
    #[serde(default, deserialize_with = "present")]
    safety_identifier: bool,
    #[serde(default, deserialize_with = "present")]
    temperature: bool,
    #[serde(default, deserialize_with = "present")]
    top_p: bool,
    #[serde(default, deserialize_with = "present")]
    truncation: bool,
    #[serde(default, deserialize_with = "present")]
    user: bool,
}

#[derive(Debug, Deserialize)]
struct ReasoningField {
    #[serde(default)]
    effort: Option<String>,
}

impl Fields {
    fn needs_rewrite(&self) -> bool {
        self.stream != Some(true)
            || self.store == Some(true)
            || self.max_output_tokens
            || self.metadata
            || self.prompt_cache_retention
            || self.safety_identifier
            || self.temperature
            || self.top_p
            || self.truncation
            || self.user
    }
}

/// The body to forward and the fields routing reads from it.
#[derive(Debug)]
struct Prepared {
    body: Bytes,
    model: Option<String>,
    cache_key: Option<String>,
    previous_response_id: Option<String>,
    effort: Option<String>,
    service_tier: Option<String>,
}

/// The conversation id a client names in a header (Codex sends `session_id`; other clients use
/// the `x-codex-…` spellings).
pub(crate) fn session_header(head: &RequestHead) -> Option<&str> {
    [
        "session_id",
        "session-id",
        "x-codex-session-id",
        "x-codex-conversation-id",
    ]
    .into_iter()
    .find_map(|h| head.header_str(h))
    .filter(|s| !s.is_empty())
}

/// The whole text of the first user message in a Responses `input` (all its text parts): a
/// prefix would give every conversation that opens with the same long preamble one key.
fn first_user_text(input: &Value) -> Option<String> {
    match input {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let item = items
                .iter()
                .find(|i| i.get("role").and_then(Value::as_str) == Some("user"))?;
            match item.get("content")? {
                Value::String(s) => Some(s.clone()),
                Value::Array(parts) => {
                    let texts: Vec<&str> = parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect();
                    (!texts.is_empty()).then(|| texts.join("\u{1f}"))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A `prompt_cache_key` for a turn that brought none (OpenAI SDK callers rarely set one; Codex
/// always does): the same instructions and opening message, from the same key and model class,
/// give the same key — so the conversation stays on one account and the upstream's prompt cache
/// sees its prefix again. `None` when there is nothing to tell conversations apart by.
fn derived_cache_key(
    obj: &serde_json::Map<String, Value>,
    model: &str,
    key_id: Option<&str>,
) -> Option<String> {
    use sha2::{Digest, Sha256};
    let instructions = obj.get("instructions").and_then(Value::as_str);
    let user = obj.get("input").and_then(first_user_text);
    if instructions.is_none() && user.is_none() {
        return None;
    }
    let class = if model.to_ascii_lowercase().contains("mini") {
        "mini"
    } else {
        "std"
    };
    let mut h = Sha256::new();
    for part in [
        class,
        key_id.unwrap_or(""),
        instructions.unwrap_or(""),
        user.as_deref().unwrap_or(""),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    Some(format!("clb-{}", hex::encode(&h.finalize()[..16])))
}

/// Whether a turn without a `prompt_cache_key` gets one derived (see `derived_cache_key`), and
/// for which key.
#[derive(Debug, Clone, Copy)]
enum Derive<'a> {
    /// The client named its conversation some other way (a session header), or the request is
    /// not a turn of one (compaction): leave the body be.
    No,
    ForKey(Option<&'a str>),
}

/// Parses the routing fields and returns the body to forward: the client's bytes unchanged unless
/// the upstream would reject them (unsupported fields, `store:true`, `stream` not true) or the
/// turn brought no way to tell its conversation (a key is derived, see `derived_cache_key`).
fn prepare_body(body: Bytes, derive: Derive<'_>) -> Result<Prepared, ApiError> {
    // serde skips the fields it does not read without checking them, and the body is forwarded
    // as it came: invalid UTF-8 anywhere in it must be refused here, not by the upstream.
    if let Err(e) = std::str::from_utf8(&body) {
        return Err(ApiError::invalid_request(
            "invalid_json",
            format!(
                "request body is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ),
        ));
    }
    let fields: Fields = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid_request(
            "invalid_json",
            format!("request body is not a valid JSON object: {e}"),
        )
    })?;
    let model = fields.model.clone().filter(|m| !m.is_empty());
    if model.is_none() {
        return Err(ApiError::invalid_request(
            "missing_required_parameter",
            "Missing required parameter: 'model'.",
        )
        .with_param("model"));
    }
    let mut cache_key = fields.prompt_cache_key.clone().filter(|k| !k.is_empty());
    let previous_response_id = fields
        .previous_response_id
        .clone()
        .filter(|p| !p.is_empty());
    let effort = fields.reasoning.as_ref().and_then(|r| r.effort.clone());
    let service_tier = fields.service_tier.clone().filter(|t| !t.is_empty());
    let key_for = match derive {
        Derive::ForKey(k) if cache_key.is_none() => Some(k),
        _ => None,
    };
    let body = if fields.needs_rewrite() || key_for.is_some() {
        let mut obj: serde_json::Map<String, Value> =
            serde_json::from_slice(&body).map_err(|e| {
                ApiError::invalid_request(
                    "invalid_json",
                    format!("request body is not a valid JSON object: {e}"),
                )
            })?;
        if let Some(key_id) = key_for {
            cache_key = derived_cache_key(&obj, model.as_deref().unwrap_or_default(), key_id);
        }
        let derived = key_for.is_some() && cache_key.is_some();
        if fields.needs_rewrite() || derived {
            if let (true, Some(k)) = (derived, &cache_key) {
                obj.insert("prompt_cache_key".into(), Value::String(k.clone()));
            }
            for f in UNSUPPORTED_FIELDS {
                obj.remove(*f);
            }
            obj.insert("store".into(), Value::Bool(false));
            obj.insert("stream".into(), Value::Bool(true));
            Bytes::from(
                serde_json::to_vec(&obj)
                    .map_err(|e| ApiError::invalid_request("invalid_json", e.to_string()))?,
            )
        } else {
            body
        }
    } else {
        body
    };
    Ok(Prepared {
        body,
        model,
        cache_key,
        previous_response_id,
        effort,
        service_tier,
    })
}

/// A compaction body: the same routing fields and stripped fields as a turn, but no
/// `stream`/`store` forced on it (the compact endpoint answers one JSON object).
fn prepare_compact_body(body: Bytes) -> Result<Prepared, ApiError> {
    let mut p = prepare_body(body, Derive::No)?;
    let mut obj: serde_json::Map<String, Value> = serde_json::from_slice(&p.body)
        .map_err(|e| ApiError::invalid_request("invalid_json", e.to_string()))?;
    obj.remove("stream");
    obj.remove("store");
    p.body = Bytes::from(
        serde_json::to_vec(&obj)
            .map_err(|e| ApiError::invalid_request("invalid_json", e.to_string()))?,
    );
    Ok(p)
}

/// Inbound headers never forwarded: our own auth replaces the client's, framing is ours, and
/// proxy/CDN hop headers describe the client's path, not ours (PROTOCOL.md §1.4).
pub(crate) fn forward_request_header(name: &str) -> bool {
    const DROP: &[&str] = &[
        "authorization",
        "chatgpt-account-id",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "host",
        "accept",
        "accept-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "cookie",
        "forwarded",
        "x-real-ip",
        "true-client-ip",
    ];
    let lower_prefix = |p: &str| {
        name.len() >= p.len()
            && name
                .get(..p.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(p))
    };
    !(DROP.iter().any(|d| name_eq(name, d))
        || lower_prefix("x-forwarded-")
        || lower_prefix("cf-")
        || lower_prefix("x-codex-lb-")
        // A WebSocket handshake is per hop: the upstream leg makes its own.
        || lower_prefix("sec-websocket-"))
}

/// The account-independent part of the upstream request head.
fn upstream_head_prefix(
    w: &Worker,
    head: &RequestHead,
    body_len: usize,
    compact: bool,
) -> BytesMut {
    let up = &w.shared.settings.upstream;
    let mut b = BytesMut::with_capacity(1024 + head.head_len());
    b.put_slice(b"POST ");
    b.put_slice(up.base_path.as_bytes());
    if compact {
        b.put_slice(b"/codex/responses/compact HTTP/1.1\r\nhost: ");
    } else {
        b.put_slice(b"/codex/responses HTTP/1.1\r\nhost: ");
    }
    b.put_slice(up.authority.as_bytes());
    b.put_slice(if compact {
        b"\r\ncontent-type: application/json\r\naccept: application/json\r\ncontent-length: "
            .as_slice()
    } else {
        b"\r\ncontent-type: application/json\r\naccept: text/event-stream\r\ncontent-length: "
            .as_slice()
    });
    b.put_slice(body_len.to_string().as_bytes());
    b.put_slice(b"\r\n");
    for (n, v) in head.headers() {
        if forward_request_header(n) {
            // The upstream gets back exactly the turn state it issued, without our prefix.
            let v = match std::str::from_utf8(v)
                .ok()
                .filter(|_| name_eq(n, "x-codex-turn-state"))
                .and_then(split_turn_state)
            {
                Some((_, upstream_value)) => upstream_value.as_bytes(),
                None => v,
            };
            b.put_slice(n.as_bytes());
            b.put_slice(b": ");
            b.put_slice(v);
            b.put_slice(b"\r\n");
        }
    }
    b
}

pub fn account_head(prefix: &BytesMut, account: &AccountView) -> Bytes {
    let mut b = BytesMut::with_capacity(prefix.len() + account.authorization.len() + 96);
    b.put_slice(prefix);
    b.put_slice(b"authorization: ");
    b.put_slice(&account.authorization);
    b.put_slice(b"\r\n");
    if let Some(h) = &account.account_header {
        b.put_slice(b"chatgpt-account-id: ");
        b.put_slice(h);
        b.put_slice(b"\r\n");
    }
    b.put_slice(b"\r\n");
    b.freeze()
}

/// An attempt on `account` starts: its in-flight slot (held until the returned guard drops), its
/// per-minute count, and the record's attempt and failover counts.
pub(crate) fn begin_attempt<'a>(
    w: &'a Worker,
    account: &AccountView,
    rec: &mut Record,
) -> Slot<'a> {
    let slot = Slot::take(w, &account.id);
    account.count_request(now_unix());
    rec.attempts += 1;
    rec.account_id = Some(account.id.to_string());
    if rec.attempts > 1 {
        inc(&w.metrics.failovers);
    }
    slot
}

/// Holds one of this worker's in-flight slots on an account.
pub(crate) struct Slot<'a> {
    w: &'a Worker,
    id: Arc<str>,
}

impl<'a> Slot<'a> {
    pub(crate) fn take(w: &'a Worker, id: &Arc<str>) -> Self {
        w.accounts.borrow_mut().begin(id);
        Slot {
            w,
            id: Arc::clone(id),
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.w.accounts.borrow_mut().end(&self.id);
    }
}

/// How an upstream non-success reply is handled.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    /// The account's usage window is exhausted until `resets_at`.
    UsageLimit {
        resets_at: u64,
        plan_type: Option<String>,
    },
    /// Short-term rate limit: try another account, avoid this one for a moment.
    RateLimited(Duration),
    /// The upstream refused the account's token.
    Auth,
    /// 5xx or a transport failure.
    Transient,
}

/// Decides failover for a non-2xx upstream reply; `None` means relay it to the client as is.
fn classify(
    status: u16,
    info: &UpstreamErrorInfo,
    head_reset_at: Option<u64>,
    now: u64,
) -> Option<Failure> {
    let code = info.code.as_deref().unwrap_or_default();
    let usage_codes = [
        "usage_limit_reached",
        "usage_not_included",
        "insufficient_quota",
        "quota_exceeded",
    ];
    if usage_codes.contains(&code) || (status == 429 && code.is_empty() && head_reset_at.is_some())
    {
        let believable = |t: u64| t > now && t <= now + MAX_RESET_HORIZON_SECS;
        let resets_at = info
            .resets_at
            .filter(|t| believable(*t))
            .or_else(|| info.resets_in_seconds.map(|s| now + s.max(1)))
            .or(head_reset_at.filter(|t| believable(*t)))
            .unwrap_or(now + DEFAULT_LIMIT_SECS);
        return Some(Failure::UsageLimit {
            resets_at,
            plan_type: info.plan_type.clone(),
        });
    }
    match status {
        429 => {
            let secs = info
                .message
                .as_deref()
                .and_then(retry_hint_secs)
                .unwrap_or(5)
                .min(DEFAULT_LIMIT_SECS);
            Some(Failure::RateLimited(Duration::from_secs(secs)))
        }
        401 | 403 => Some(Failure::Auth),
        500..=599 => Some(Failure::Transient),
        _ => None,
    }
}

/// Attempts that count against `--failover-attempts`: upstream trouble (5xx, transport, refused
/// tokens). An account that answers "usage limit" or "slow down" is skipped for free: it did no
/// work, and the pool bounds how many there are.
fn spent_budget(failures: &[Failure]) -> usize {
    failures
        .iter()
        .filter(|f| matches!(f, Failure::Transient | Failure::Auth))
        .count()
}

/// The last upstream error reply, kept to answer with when every attempt failed.
struct LastReply {
    head: UpstreamHead,
    body: Bytes,
}

/// Why a turn must go to one account.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PinSource {
    /// It replays a turn state that account issued (our prefix on the token says which).
    TurnState,
    /// It continues a response that account produced (`previous_response_id`).
    PreviousResponse,
}

/// Where a turn must go and which conversation it belongs to, read from the request.
#[derive(Default)]
pub(crate) struct Routing {
    sticky_key: Option<u64>,
    pinned: Option<(String, PinSource)>,
    model: Option<String>,
    /// The plans that offer `model`, when the upstream catalog restricts it.
    plans: Option<Arc<[String]>>,
    /// The caller's key, when it may draw only from some accounts (`allowed_accounts`).
    bound_key: Option<Arc<KeyView>>,
}

impl Routing {
    /// The accounts the caller may be served by; `None`: the whole pool.
    fn allowed(&self) -> Option<&[String]> {
        self.bound_key
            .as_deref()
            .map(|k| k.policy.allowed_accounts.as_slice())
    }
}

/// The key when its policy bounds the account choice.
fn bound(key: Option<&Arc<KeyView>>) -> Option<Arc<KeyView>> {
    key.filter(|k| !k.policy.allowed_accounts.is_empty())
        .cloned()
}

/// The account choice for a request with no model (Codex's control routes): the conversation's
/// account by its turn state or session id, else any the caller's key allows.
pub(crate) fn control_routing(head: &RequestHead, key: Option<&Arc<KeyView>>) -> Routing {
    let sticky_key = session_header(head).map(hash_str);
    Routing {
        sticky_key,
        pinned: head
            .header_str("x-codex-turn-state")
            .and_then(split_turn_state)
            .map(|(id, _)| (id.to_string(), PinSource::TurnState)),
        model: None,
        plans: None,
        bound_key: bound(key),
    }
}

fn routing(
    w: &Worker,
    head: &RequestHead,
    prepared: &Prepared,
    key: Option<&Arc<KeyView>>,
) -> Routing {
    let sticky_key = prepared
        .cache_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .or_else(|| session_header(head))
        .map(hash_str);
    let turn_state = head
        .header_str("x-codex-turn-state")
        .and_then(split_turn_state)
        .map(|(id, _)| (id.to_string(), PinSource::TurnState));
    // An id the gateway never saw completes nowhere it knows of: routed as usual, and the
    // upstream answers for it.
    let continued = || {
        let id = prepared.previous_response_id.as_deref()?;
        let owner = w.shared.response_owners.owner(id)?;
        Some((owner.to_string(), PinSource::PreviousResponse))
    };
    let plans = prepared
        .model
        .as_deref()
        .and_then(|m| w.shared.model_plans.plans_for(m));
    Routing {
        sticky_key,
        pinned: turn_state.or_else(continued),
        model: prepared.model.clone(),
        plans,
        bound_key: bound(key),
    }
}

/// Our turn-state values are `<account id>~<upstream value>`: the account travels with the token,
/// so any worker can route a replayed turn without shared state.
pub fn split_turn_state(v: &str) -> Option<(&str, &str)> {
    v.split_once('~')
        .filter(|(id, _)| id.starts_with("acc_") && !id.is_empty())
}

/// How long a request waits for a token refresh another part of the gateway started.
const REFRESH_WAIT: Duration = Duration::from_secs(10);
/// How long a request waits for an in-flight slot when every account is at its stream cap.
const SLOT_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

/// After a 401: asks the control thread for a refresh and waits until the account's token
/// changes (refreshed) or it leaves rotation. Returns true when the request may try again.
async fn await_refresh(w: &Worker, account: &AccountView) -> bool {
    observe::auth_failed(w, &account.id, &account.authorization);
    let deadline = Instant::now() + REFRESH_WAIT;
    while Instant::now() < deadline {
        monoio::time::sleep(POLL).await;
        let snap = w.shared.accounts.load();
        match snap.find(&account.id) {
            Some(a) if a.authorization != account.authorization => {
                return a.status == AccountStatus::Active
            }
            Some(a) if a.status != AccountStatus::Active || a.blocked_at(now_unix()).is_some() => {
                return false
            }
            None => return false,
            _ => {}
        }
    }
    false
}

/// The key's answer to this request, as the client sees it.
pub(crate) fn key_refusal(r: Refusal, now: u64) -> ApiError {
    let message = r.message();
    match r {
        Refusal::ModelNotAllowed(_) => {
            ApiError::new(403, "permission_error", "model_not_allowed", message).with_param("model")
        }
        Refusal::EffortNotAllowed(_) => ApiError::new(
            403,
            "permission_error",
            "reasoning_effort_not_allowed",
            message,
        )
        .with_param("reasoning.effort"),
        Refusal::Exhausted { resets_at, .. } => {
            ApiError::new(429, "rate_limit_error", "rate_limit_exceeded", message)
                .with_extra("resets_at", json!(resets_at))
                .with_retry_after(resets_at.saturating_sub(now))
        }
    }
}

/// How a turn's successful upstream stream reaches the client.
pub enum Delivery {
    /// The upstream's SSE bytes, spliced (the Codex route, streaming `/v1/responses`).
    Sse,
    /// The final `response` object as one JSON reply (`/v1/responses` without `stream`).
    Json,
    /// Translated to Chat Completions (`/v1/chat/completions`).
    Chat(crate::proxy::deliver::ChatDelivery),
    /// Remote compaction: the upstream's unary JSON reply (`/responses/compact`).
    Compact,
    /// Each event as a WebSocket message on the client's socket (`proxy::ws`).
    WebSocket(Rc<crate::proxy::ws::WsOut>),
}

/// A refused turn: an HTTP error reply, or an error frame on a WebSocket.
async fn answer_error(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    delivery: &Delivery,
    err: ApiError,
    keep_alive: bool,
    rec: Record,
) -> bool {
    match delivery {
        Delivery::WebSocket(out) => crate::proxy::ws::refuse_turn(w, client, out, err, rec).await,
        _ => respond_error(w, client, err, keep_alive, rec).await,
    }
}

/// An upstream error reply relayed: as it came, or as an error frame on a WebSocket.
async fn answer_upstream_error(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    delivery: &Delivery,
    reply: LastReply,
    hide_quota: bool,
    keep_alive: bool,
    rec: Record,
) -> bool {
    match delivery {
        Delivery::WebSocket(out) => {
            crate::proxy::ws::relay_error(w, client, out, &reply.head, &reply.body, hide_quota, rec)
                .await
        }
        _ => relay_error_reply(w, client, reply, hide_quota, keep_alive, rec).await,
    }
}

/// Reads a turn's request body; on failure answers (or not, when the client is gone) and returns
/// what the connection loop should do next as `Err`.
async fn read_turn_body(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    head: &RequestHead,
    rec: &mut Record,
) -> Result<Bytes, bool> {
    let s = &w.shared.settings;
    match client
        .read_body(
            head,
            s.max_body_bytes,
            s.client_body_timeout,
            s.client_body_deadline,
        )
        .await
    {
        Ok(b) => {
            rec.request_bytes = b.len() as u64;
            Ok(b)
        }
        Err(e) => {
            let Some(err) = crate::proxy::body_error(w, &e) else {
                return Err(false);
            };
            Err(respond_error(w, client, err, false, rec.clone()).await)
        }
    }
}

/// `POST /backend-api/codex/responses`.
pub async fn handle(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    head: RequestHead,
    key: Option<Arc<KeyView>>,
    rec: Record,
) -> bool {
    turn_with(w, client, head, key, rec, |body| Ok((body, Delivery::Sse))).await
}

/// A turn whose body `reshape` turns into the upstream's shape and a way of delivering the
/// answer (every turn route: Codex, `/v1/responses`, chat, compaction); a reshape error is the
/// client's, answered in the OpenAI envelope.
pub async fn turn_with(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    head: RequestHead,
    key: Option<Arc<KeyView>>,
    mut rec: Record,
    reshape: impl FnOnce(Bytes) -> Result<(Bytes, Delivery), ApiError>,
) -> bool {
    let body = match read_turn_body(w, client, &head, &mut rec).await {
        Ok(b) => b,
        Err(open) => return open,
    };
    match reshape(body) {
        Ok((body, delivery)) => serve_turn(w, client, head, key, rec, body, delivery).await,
        Err(e) => {
            let keep_alive = head.keep_alive && !w.shared.shutdown.is_requested();
            respond_error(w, client, e, keep_alive, rec).await
        }
    }
}

/// One turn from a body in the upstream's shape: key rules, account choice, failover, delivery.
pub(crate) async fn serve_turn(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    head: RequestHead,
    key: Option<Arc<KeyView>>,
    mut rec: Record,
    body: Bytes,
    delivery: Delivery,
) -> bool {
    let s = &w.shared.settings;
    let keep_alive = head.keep_alive && !w.shared.shutdown.is_requested();
    let prepared = match if matches!(delivery, Delivery::Compact) {
        prepare_compact_body(body)
    } else if session_header(&head).is_some() {
        prepare_body(body, Derive::No)
    } else {
        prepare_body(body, Derive::ForKey(key.as_deref().map(|k| &*k.id)))
    } {
        Ok(x) => x,
        Err(err) => return answer_error(w, client, &delivery, err, keep_alive, rec).await,
    };
    // Key rules before any account is asked (limits are checked, not reserved: see admission).
    let _key_stream = match &key {
        Some(k) => {
            let now = now_unix();
            if let Err(r) = admission::admit(
                k,
                prepared.model.as_deref(),
                prepared.effort.as_deref(),
                now,
            ) {
                rec.model = prepared.model;
                return answer_error(w, client, &delivery, key_refusal(r, now), keep_alive, rec)
                    .await;
            }
            match k.live.try_stream(k.policy.max_streams) {
                Some(slot) => Some(slot),
                None => {
                    rec.model = prepared.model;
                    let err = ApiError::new(
                        429,
                        "rate_limit_error",
                        "api_key_stream_limit",
                        format!(
                            "This API key already has its {} streams open; retry when one ends",
                            k.policy.max_streams.unwrap_or_default()
                        ),
                    )
                    .with_retry_after(1);
                    return answer_error(w, client, &delivery, err, keep_alive, rec).await;
                }
            }
        }
        None => None,
    };
    rec.effort = prepared.effort.clone();
    rec.service_tier = prepared.service_tier.clone();
    rec.conversation = prepared
        .cache_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .or_else(|| session_header(&head))
        .map(|c| c.chars().take(128).collect());
    let route = routing(w, &head, &prepared, key.as_ref());
    let hide_quota = key.is_some() && w.shared.keys.load().hide_quota_headers;
    let body = prepared.body;
    rec.model = prepared.model;
    let compact = matches!(delivery, Delivery::Compact);
    let prefix = upstream_head_prefix(w, &head, body.len(), compact);
    let mut excluded: Vec<Arc<str>> = Vec::new();
    let mut failures: Vec<Failure> = Vec::new();
    let mut last_reply: Option<LastReply> = None;
    let mut last_transport: Option<String> = None;
    let mut refreshed: Vec<Arc<str>> = Vec::new();

    loop {
        let pick = pick_account(w, &route, &excluded).await;
        let account = match pick {
            Pick::Account(a) => a,
            other => {
                let err = exhausted_error(
                    &other,
                    &route,
                    &failures,
                    last_reply.is_some(),
                    last_transport.as_deref(),
                );
                return match (err, last_reply) {
                    (Some(err), _) => {
                        answer_error(w, client, &delivery, err, keep_alive, rec).await
                    }
                    (None, Some(reply)) => {
                        answer_upstream_error(
                            w, client, &delivery, reply, hide_quota, keep_alive, rec,
                        )
                        .await
                    }
                    (None, None) => {
                        let err = ApiError::new(
                            502,
                            "server_error",
                            "upstream_unavailable",
                            "upstream unavailable",
                        );
                        answer_error(w, client, &delivery, err, keep_alive, rec).await
                    }
                };
            }
        };
        let _slot = begin_attempt(w, &account, &mut rec);
        let req_head = account_head(&prefix, &account);
        // A WebSocket client's turn goes over an upstream WebSocket while the upstream offers one;
        // a Codex HTTP turn does too when the owner asked for WebSocket only (a socket per turn).
        let ws_attempt = match &delivery {
            Delivery::WebSocket(out) if out.upstream_ws(w) => {
                Some(upstream_ws::attempt(w, client, out, &head, &account, &body).await)
            }
            Delivery::Sse if s.upstream_transport == UpstreamTransport::Websocket => {
                let scratch = crate::proxy::ws::WsOut::for_http_turn();
                Some(upstream_ws::attempt(w, client, &scratch, &head, &account, &body).await)
            }
            _ => None,
        };
        let got = match ws_attempt {
            Some(Ok(Attempt::Started(sock, first))) => Ok(Got::Ws(sock, first)),
            Some(Ok(Attempt::Refused { head, body })) => Ok(Got::Refused(head, body)),
            Some(Err(e)) => Err(e),
            other => {
                if let (Some(Ok(Attempt::NotOffered)), Delivery::WebSocket(out)) =
                    (&other, &delivery)
                {
                    out.use_http_upstream();
                }
                exchange::send(w, &req_head, &body).await.map(Got::Http)
            }
        };
        let (up_head, err_body) = match got {
            Ok(Got::Ws(sock, first)) => {
                let Delivery::WebSocket(out) = &delivery else {
                    let http11 = head.version_minor == 1;
                    return crate::proxy::ws::sse::deliver(
                        w,
                        client,
                        sock,
                        first,
                        &account.id,
                        key.as_deref(),
                        http11,
                        keep_alive,
                        rec,
                    )
                    .await;
                };
                return crate::proxy::ws::deliver_upstream(
                    w,
                    client,
                    out,
                    sock,
                    first,
                    &account.id,
                    key.as_deref(),
                    rec,
                )
                .await;
            }
            Ok(Got::Refused(h, b)) => {
                if let Some(reading) = quota::from_headers(h.headers(), now_unix()) {
                    observe::quota(w, &account.id, reading);
                }
                (h, b)
            }
            Err(e) => {
                inc(&w.metrics.upstream_errors);
                tracing::warn!(account = %account.id, error = %e, "upstream request failed before a response");
                w.accounts.borrow_mut().cool_down(
                    &account.id,
                    Instant::now() + TRANSIENT_COOLDOWN,
                    None,
                );
                failures.push(Failure::Transient);
                last_transport = Some(e.to_string());
                rec.error_code = Some(e.code().to_string());
                excluded.push(Arc::clone(&account.id));
                if spent_budget(&failures) >= s.failover_attempts {
                    let err = ApiError::new(
                        502,
                        "server_error",
                        e.code(),
                        format!("upstream unavailable: {e}"),
                    );
                    return answer_error(w, client, &delivery, err, keep_alive, rec).await;
                }
                continue;
            }
            Ok(Got::Http(ex)) => {
                if let Some(reading) = quota::from_headers(ex.head.headers(), now_unix()) {
                    observe::quota(w, &account.id, reading);
                }
                if (200..300).contains(&ex.head.status) {
                    // No retry can follow: what only a retry would need does not live as long as the
                    // stream (a held stream's memory is mostly what it keeps).
                    let http11 = head.version_minor == 1;
                    drop((body, prefix, req_head, head));
                    client.release_buffer();
                    return match delivery {
                        Delivery::WebSocket(out) => {
                            crate::proxy::ws::deliver(
                                w,
                                client,
                                ex,
                                &account.id,
                                key.as_deref(),
                                &out,
                                rec,
                            )
                            .await
                        }
                        Delivery::Sse => {
                            relay_success(
                                w,
                                client,
                                ex,
                                http11,
                                &account.id,
                                key.as_deref(),
                                keep_alive,
                                rec,
                            )
                            .await
                        }
                        other => {
                            crate::proxy::deliver::deliver(
                                w,
                                client,
                                ex,
                                &account.id,
                                key.as_deref(),
                                keep_alive,
                                rec,
                                other,
                            )
                            .await
                        }
                    };
                }
                let Exchange {
                    mut conn,
                    head: up_head,
                } = ex;
                let (err_body, reusable) = exchange::read_body(
                    &mut conn,
                    &up_head,
                    MAX_ERROR_BODY,
                    s.upstream_idle_timeout,
                )
                .await
                .unwrap_or_default();
                if reusable {
                    w.pool.borrow_mut().put(conn, Instant::now());
                }
                (up_head, err_body)
            }
        };
        let status = up_head.status;
        let info = parse_error_body(&err_body);
        let now = now_unix();
        let head_reset = up_head
            .header_str("x-codex-primary-reset-at")
            .filter(|_| used_up(&up_head, "x-codex-primary-used-percent"))
            .or_else(|| {
                up_head
                    .header_str("x-codex-secondary-reset-at")
                    .filter(|_| used_up(&up_head, "x-codex-secondary-used-percent"))
            })
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64);
        rec.error_code = info
            .code
            .clone()
            .or_else(|| Some(format!("upstream_{status}")));
        let Some(failure) = classify(status, &info, head_reset, now) else {
            let reply = LastReply {
                head: up_head,
                body: err_body,
            };
            return answer_upstream_error(w, client, &delivery, reply, hide_quota, keep_alive, rec)
                .await;
        };
        // A refused token is refreshed once and the same account tried again.
        if status == 401 && !refreshed.contains(&account.id) {
            refreshed.push(Arc::clone(&account.id));
            tracing::info!(account = %account.id, "upstream refused the token; waiting for a refresh");
            if await_refresh(w, &account).await {
                rec.attempts -= 1;
                continue;
            }
        }
        tracing::info!(account = %account.id, status, code = ?info.code, ?failure, "upstream refused; failing over");
        apply_failure(w, &account.id, &failure, now);
        failures.push(failure);
        last_reply = Some(LastReply {
            head: up_head,
            body: err_body,
        });
        excluded.push(Arc::clone(&account.id));
        if spent_budget(&failures) >= s.failover_attempts || route.pinned.is_some() {
            let err = exhausted_error(&Pick::NoneAvailable, &route, &failures, true, None);
            return match (err, last_reply) {
                (Some(err), _) => answer_error(w, client, &delivery, err, keep_alive, rec).await,
                (None, Some(reply)) => {
                    answer_upstream_error(w, client, &delivery, reply, hide_quota, keep_alive, rec)
                        .await
                }
                (None, None) => false,
            };
        }
    }
}

/// What one upstream attempt brought back.
enum Got {
    Http(Exchange),
    /// The turn started on an upstream WebSocket: the socket and its first messages.
    Ws(Box<upstream_ws::UpstreamSocket>, Vec<String>),
    /// Refused before any event on the upstream WebSocket, as an HTTP-shaped reply.
    Refused(UpstreamHead, Bytes),
}

/// Chooses an account; when every account is at its stream cap, waits briefly for a free slot.
pub(crate) async fn pick_account(w: &Worker, route: &Routing, excluded: &[Arc<str>]) -> Pick {
    let deadline = Instant::now() + SLOT_WAIT;
    loop {
        let pick = {
            let snap = w.shared.accounts.load();
            let req = PickRequest {
                excluded,
                sticky_key: route.sticky_key,
                pinned: route.pinned.as_ref().map(|(id, _)| id.as_str()),
                plans: route.plans.as_deref(),
                allowed: route.allowed(),
            };
            w.accounts
                .borrow_mut()
                .pick(&snap, req, Instant::now(), now_unix())
        };
        if w.accounts.borrow_mut().take_moved() {
            inc(&w.metrics.sticky_moves);
        }
        if !matches!(pick, Pick::AllBusy) || Instant::now() >= deadline {
            return pick;
        }
        monoio::time::sleep(POLL).await;
    }
}

fn used_up(h: &UpstreamHead, name: &str) -> bool {
    h.header_str(name)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .is_some_and(|p| p >= 100.0)
}

/// Marks an account after a failure: locally at once, pool-wide through the control thread.
fn apply_failure(w: &Worker, id: &Arc<str>, failure: &Failure, now: u64) {
    let local_until = |secs: u64| Instant::now() + Duration::from_secs(secs);
    let block = match failure {
        Failure::UsageLimit { resets_at, .. } => {
            w.accounts.borrow_mut().cool_down(
                id,
                local_until(resets_at.saturating_sub(now).max(1)),
                Some(*resets_at),
            );
            Some(Block {
                until_unix: *resets_at,
                reason: BlockReason::UsageLimit,
            })
        }
        Failure::Auth => {
            w.accounts
                .borrow_mut()
                .cool_down(id, local_until(AUTH_BLOCK_SECS), None);
            Some(Block {
                until_unix: now + AUTH_BLOCK_SECS,
                reason: BlockReason::AuthFailed,
            })
        }
        Failure::RateLimited(d) => {
            w.accounts
                .borrow_mut()
                .cool_down(id, Instant::now() + *d, None);
            None
        }
        Failure::Transient => {
            w.accounts
                .borrow_mut()
                .cool_down(id, Instant::now() + TRANSIENT_COOLDOWN, None);
            None
        }
    };
    if let Some(block) = block {
        let msg = ControlMsg::Observe(Observation::Blocked {
            id: Arc::clone(id),
            block,
        });
        if w.shared.control_tx.try_send(msg).is_err() {
            tracing::warn!(account = %id, "control channel full; block stays local to this worker");
        }
    }
}

/// The error for a request no account could serve. `None`: relay the last upstream reply.
/// Why no account could take a request that never reached the upstream (no failures to weigh).
pub(crate) fn no_account_error(pick: &Pick, route: &Routing) -> ApiError {
    exhausted_error(pick, route, &[], false, None).unwrap_or_else(|| {
        ApiError::new(
            502,
            "server_error",
            "upstream_unavailable",
            "upstream unavailable",
        )
    })
}

fn exhausted_error(
    pick: &Pick,
    route: &Routing,
    failures: &[Failure],
    have_reply: bool,
    transport: Option<&str>,
) -> Option<ApiError> {
    let now = now_unix();
    let limits: Vec<(u64, Option<String>)> = failures
        .iter()
        .filter_map(|f| match f {
            Failure::UsageLimit {
                resets_at,
                plan_type,
            } => Some((*resets_at, plan_type.clone())),
            _ => None,
        })
        .collect();
    let usage_limited = |resets_at: u64, plan: Option<String>| {
        let wait = resets_at.saturating_sub(now);
        let mut e = ApiError::new(
            429,
            "usage_limit_reached",
            "usage_limit_reached",
            format!(
                "Rate limit exceeded. Try again in {}s",
                wait.min(DEFAULT_LIMIT_SECS)
            ),
        )
        .with_extra("resets_at", json!(resets_at))
        .with_extra("resets_in_seconds", json!(wait));
        if let Some(p) = plan {
            e = e.with_extra("plan_type", json!(p));
        }
        e
    };
    match pick {
        Pick::NoAccounts {
            paused,
            reauth,
            deactivated,
        } => {
            let why: Vec<String> = [
                (*paused, "paused"),
                (*reauth, "need a new sign-in"),
                (*deactivated, "deactivated"),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
            // A key bound to some accounts hears about those alone.
            let scope = if route.allowed().is_some() {
                " to this API key"
            } else {
                ""
            };
            let message = if why.is_empty() {
                "No active accounts available: add one with `codex-lb accounts import`".to_string()
            } else {
                format!("No active accounts available{scope} ({})", why.join(", "))
            };
            return Some(ApiError::new(503, "server_error", "no_accounts", message));
        }
        Pick::NoAllowedAccounts => {
            let ids = route.allowed().unwrap_or_default().join(", ");
            return Some(ApiError::new(
                503,
                "server_error",
                "no_allowed_accounts",
                format!(
                    "None of the accounts this API key may use ({ids}) is in the pool; the \
                     gateway's owner can change the key's accounts (`codex-lb keys update \
                     --allow-account`)"
                ),
            ));
        }
        Pick::AllCapped => {
            return Some(ApiError::new(
                503,
                "server_error",
                "account_caps_reached",
                "Every account is at the usage cap its owner set; raise a cap or add accounts",
            ));
        }
        Pick::AllPaced { resets_at } => {
            let wait = resets_at.saturating_sub(now);
            return Some(
                ApiError::new(
                    429,
                    "rate_limit_error",
                    "account_rate_limit",
                    format!(
                        "Every account has started as many requests this minute as its owner \
                         allows; retry in {wait}s"
                    ),
                )
                .with_retry_after(wait),
            );
        }
        Pick::AllBusy => {
            return Some(ApiError::new(
                429,
                "rate_limit_error",
                "account_concurrency_limit",
                "Every account is serving as many streams as allowed; retry shortly",
            ));
        }
        Pick::PinnedUnavailable => {
            let err = match route.pinned.as_ref().map(|(_, why)| *why) {
                Some(PinSource::PreviousResponse) => ApiError::new(
                    409,
                    "invalid_request_error",
                    "previous_response_owner_unavailable",
                    "The account that produced previous_response_id cannot serve now; resend the \
                     full conversation without previous_response_id",
                )
                .with_param("previous_response_id"),
                _ => ApiError::new(
                    409,
                    "invalid_request_error",
                    "turn_state_account_unavailable",
                    "The account this turn started on can no longer serve it; start a new turn",
                ),
            };
            return Some(err);
        }
        Pick::ModelNotOnPlan { pool_plans } => {
            let model = route.model.as_deref().unwrap_or_default();
            let needs = route.plans.as_deref().unwrap_or_default().join(", ");
            let has = if pool_plans.is_empty() {
                "unknown".to_string()
            } else {
                pool_plans.join(", ")
            };
            return Some(
                ApiError::new(
                    503,
                    "server_error",
                    "no_plan_support_for_model",
                    format!(
                        "No active account's plan offers model '{model}' (offered on: {needs}; \
                         plans in this pool: {has})"
                    ),
                )
                .with_param("model"),
            );
        }
        Pick::AllUsageLimited { resets_at } => {
            let plan = limits.iter().find_map(|(_, p)| p.clone());
            let earliest = limits
                .iter()
                .map(|(t, _)| *t)
                .chain([*resets_at])
                .min()
                .unwrap_or(*resets_at);
            return Some(usage_limited(earliest, plan));
        }
        _ => {}
    }
    if !failures.is_empty() && limits.len() == failures.len() {
        let earliest = limits
            .iter()
            .map(|(t, _)| *t)
            .min()
            .unwrap_or(now + DEFAULT_LIMIT_SECS);
        let plan = limits.iter().find_map(|(_, p)| p.clone());
        return Some(usage_limited(earliest, plan));
    }
    if have_reply {
        return None;
    }
    if let Some(t) = transport {
        return Some(ApiError::new(
            502,
            "server_error",
            "upstream_unavailable",
            format!("upstream unavailable: {t}"),
        ));
    }
    Some(ApiError::new(
        503,
        "server_error",
        "accounts_unavailable",
        "Every account is cooling down after upstream errors; retry shortly",
    ))
}

/// What every delivered turn leaves behind: the account's quota reading, the response's owner,
/// the usage in the record, and the key's budgets.
pub fn settle_turn(
    w: &Worker,
    account: &Arc<str>,
    key: Option<&KeyView>,
    rec: &mut Record,
    facts: StreamFacts,
) {
    if let Some(reading) = facts.rate_limits {
        observe::quota(w, account, reading);
    }
    if let Some(u) = facts.usage {
        rec.usage = u;
    }
    if facts.model.is_some() {
        rec.model = facts.model;
    }
    if facts.service_tier.is_some() {
        rec.service_tier = facts.service_tier;
    }
    if let Some(id) = &facts.response_id {
        w.shared.response_owners.remember(id, account);
    }
    if let Some(k) = key {
        let spent = Spent {
            input_tokens: rec.usage.input_tokens,
            output_tokens: rec.usage.output_tokens,
            cost_micro_usd: rec.priced(w),
        };
        admission::settle(k, rec.model.as_deref(), &spent, now_unix());
    }
}

/// A turn whose client went away mid-stream: what it used is still settled and recorded.
/// Returns false (the connection is done).
pub fn settle_cancelled(
    w: &Worker,
    account: &Arc<str>,
    key: Option<&KeyView>,
    mut rec: Record,
    facts: StreamFacts,
) -> bool {
    rec.outcome = Outcome::Cancelled;
    settle_turn(w, account, key, &mut rec, facts);
    record(w, rec);
    false
}

#[allow(clippy::too_many_arguments)]
async fn relay_success(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    ex: Exchange,
    http11: bool,
    account: &Arc<str>,
    key: Option<&KeyView>,
    keep_alive: bool,
    mut rec: Record,
) -> bool {
    rec.status = ex.head.status;
    let hide_quota = key.is_some() && w.shared.keys.load().hide_quota_headers;
    let r = relay(
        w,
        client,
        ex,
        account,
        http11,
        keep_alive,
        hide_quota,
        rec.started,
    )
    .await;
    rec.outcome = r.outcome;
    rec.error_code = r
        .error_code
        .or(rec.error_code.take())
        .filter(|_| r.outcome != Outcome::Completed);
    rec.response_bytes = r.response_bytes;
    rec.ttfb = r.ttfb;
    settle_turn(w, account, key, &mut rec, r.facts);
    record(w, rec);
    match r.tail {
        Some(tail) => {
            let written = client
                .write(tail, w.shared.settings.client_write_timeout)
                .await;
            written.is_ok() && r.client_reusable
        }
        None => r.client_reusable,
    }
}

async fn relay_error_reply(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    reply: LastReply,
    hide_quota: bool,
    keep_alive: bool,
    mut rec: Record,
) -> bool {
    let status = reply.head.status;
    let headers: Vec<(&str, &[u8])> = reply
        .head
        .headers()
        .filter(|(n, _)| {
            forward_response_header(n)
                && !name_eq(n, "content-type")
                && !(hide_quota && is_quota_header(n))
        })
        .collect();
    let content_type = reply
        .head
        .header_str("content-type")
        .unwrap_or("application/json");
    let bytes = full_response(status, content_type, &headers, &reply.body, keep_alive);
    rec.status = status;
    rec.outcome = Outcome::Failed;
    rec.response_bytes = reply.body.len() as u64;
    respond(w, client, Bytes::from(bytes), keep_alive, rec).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_without_a_cache_key_gets_one_derived_from_its_opening() {
        let body = |instr: &str, text: &str| {
            Bytes::from(
                json!({"model": "gpt-5.5", "stream": true, "instructions": instr,
                       "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]},
                                 {"role": "assistant", "content": "later turns differ"}]})
                .to_string(),
            )
        };
        let a = prepare_body(body("be brief", "hello"), Derive::ForKey(Some("key_1"))).unwrap();
        let k = a.cache_key.clone().unwrap();
        assert!(k.starts_with("clb-") && k.len() == 36, "{k}");
        let sent: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(sent["prompt_cache_key"], k.as_str());
        // The same opening later in the conversation: the same key.
        let mut later: Value = serde_json::from_slice(&body("be brief", "hello")).unwrap();
        later["input"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "user", "content": "more"}));
        let later = prepare_body(
            Bytes::from(later.to_string()),
            Derive::ForKey(Some("key_1")),
        )
        .unwrap();
        assert_eq!(later.cache_key.as_deref(), Some(k.as_str()));
        // Another opening, another API key, or a string input: other keys.
        for (b, key) in [
            (body("be brief", "goodbye"), Some("key_1")),
            (body("be brief", "hello"), Some("key_2")),
            (body("be brief", "hello"), None),
        ] {
            assert_ne!(
                prepare_body(b, Derive::ForKey(key)).unwrap().cache_key,
                Some(k.clone())
            );
        }
        let s = Bytes::from_static(br#"{"model":"m","stream":true,"input":"just text"}"#);
        assert!(prepare_body(s.clone(), Derive::ForKey(None))
            .unwrap()
            .cache_key
            .is_some());
        // Named another way (a session header) or a compaction: the body is left as it came.
        assert_eq!(prepare_body(s.clone(), Derive::No).unwrap().body, s);
        assert!(prepare_compact_body(s).unwrap().cache_key.is_none());
        // A long shared preamble does not make two conversations one.
        let preamble = "x".repeat(2000);
        let a = prepare_body(
            body("i", &format!("{preamble} task one")),
            Derive::ForKey(None),
        );
        let b = prepare_body(
            body("i", &format!("{preamble} task two")),
            Derive::ForKey(None),
        );
        assert_ne!(a.unwrap().cache_key, b.unwrap().cache_key);
        // A client's own key is kept and its bytes untouched.
        let own = Bytes::from_static(
            br#"{"model":"m","stream":true,"prompt_cache_key":"mine","input":"x"}"#,
        );
        let p = prepare_body(own.clone(), Derive::ForKey(Some("key_1"))).unwrap();
        assert_eq!((p.body, p.cache_key.as_deref()), (own, Some("mine")));
    }

    #[test]
    fn body_is_forwarded_untouched_unless_the_upstream_would_reject_it() {
        let clean =
            Bytes::from_static(br#"{"model":"gpt-5.5","stream":true,"store":false,"input":[]}"#);
        let p = prepare_body(clean.clone(), Derive::ForKey(None)).unwrap();
        assert_eq!(p.body, clean);
        assert_eq!(p.model.as_deref(), Some("gpt-5.5"));
        let dirty = Bytes::from_static(
            br#"{"model":"m","temperature":0.2,"store":true,"input":[1],"user":null}"#,
        );
        let p = prepare_body(dirty, Derive::ForKey(None)).unwrap();
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(
            v,
            json!({"model":"m","store":false,"input":[1],"stream":true})
        );
        assert_eq!(
            prepare_body(Bytes::from_static(b"[1]"), Derive::ForKey(None))
                .unwrap_err()
                .code
                .as_deref(),
            Some("invalid_json")
        );
        assert_eq!(
            prepare_body(
                Bytes::from_static(b"{\"stream\":true}"),
                Derive::ForKey(None)
            )
            .unwrap_err()
            .param
            .as_deref(),
            Some("model")
        );
    }

    #[test]
    fn header_policy() {
        for keep in [
            "originator",
            "session-id",
            "session_id",
            "x-codex-turn-state",
            "User-Agent",
            "version",
            "x-client-request-id",
        ] {
            assert!(forward_request_header(keep), "{keep}");
        }
        for drop in [
            "Authorization",
            "chatgpt-account-id",
            "Host",
            "X-Forwarded-For",
            "cf-ray",
            "x-codex-lb-key",
            "Content-Encoding",
        ] {
            assert!(!forward_request_header(drop), "{drop}");
        }
    }

    #[test]
    fn failover_classification() {
        let now = 1000;
        let info = |code: &str| UpstreamErrorInfo {
            code: Some(code.into()),
            ..Default::default()
        };
        assert!(matches!(
            classify(429, &info("usage_limit_reached"), None, now),
            Some(Failure::UsageLimit {
                resets_at: 1300,
                ..
            })
        ));
        let with_reset = UpstreamErrorInfo {
            resets_at: Some(5000),
            ..info("usage_limit_reached")
        };
        assert!(matches!(
            classify(429, &with_reset, None, now),
            Some(Failure::UsageLimit {
                resets_at: 5000,
                ..
            })
        ));
        let hinted = UpstreamErrorInfo {
            message: Some("Please try again in 1.5s".into()),
            ..info("rate_limit_exceeded")
        };
        assert_eq!(
            classify(429, &hinted, None, now),
            Some(Failure::RateLimited(Duration::from_secs(2)))
        );
        assert_eq!(
            classify(401, &info("token_expired"), None, now),
            Some(Failure::Auth)
        );
        assert_eq!(
            classify(503, &UpstreamErrorInfo::default(), None, now),
            Some(Failure::Transient)
        );
        assert_eq!(
            classify(400, &info("invalid_request_error"), None, now),
            None
        );
    }

    #[test]
    fn pool_exhaustion_answers() {
        let limited = vec![
            Failure::UsageLimit {
                resets_at: now_unix() + 900,
                plan_type: Some("plus".into()),
            },
            Failure::UsageLimit {
                resets_at: now_unix() + 600,
                plan_type: None,
            },
        ];
        let e = exhausted_error(
            &Pick::NoneAvailable,
            &Routing::default(),
            &limited,
            true,
            None,
        )
        .unwrap();
        assert_eq!(e.status, 429);
        assert_eq!(e.kind, "usage_limit_reached");
        assert_eq!(e.extra["resets_at"], json!(now_unix() + 600));
        assert_eq!(e.extra["plan_type"], json!("plus"));
        let mixed = vec![limited[0].clone(), Failure::Transient];
        assert!(exhausted_error(
            &Pick::NoneAvailable,
            &Routing::default(),
            &mixed,
            true,
            None
        )
        .is_none());
        assert_eq!(
            exhausted_error(
                &Pick::NoAccounts {
                    paused: 1,
                    reauth: 0,
                    deactivated: 0
                },
                &Routing::default(),
                &[],
                false,
                None
            )
            .unwrap()
            .status,
            503
        );
    }

    #[test]
    fn a_key_bound_to_accounts_hears_about_those() {
        let key = |ids: &[&str]| {
            Arc::new(KeyView {
                id: Arc::from("key_1"),
                name: "k".into(),
                expires_at: None,
                revoked: false,
                paused: false,
                policy: crate::keys::KeyPolicy {
                    allowed_accounts: ids.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                },
                live: Default::default(),
                counters: Vec::new(),
            })
        };
        // No list: the key is not carried, the pool is the scope.
        assert!(bound(Some(&key(&[]))).is_none());
        let route = Routing {
            bound_key: bound(Some(&key(&["acc_gone", "acc_old"]))),
            ..Default::default()
        };
        assert_eq!(
            route.allowed(),
            Some(&["acc_gone".to_string(), "acc_old".to_string()][..])
        );
        let e = no_account_error(&Pick::NoAllowedAccounts, &route);
        assert_eq!((e.status, e.kind), (503, "server_error"));
        assert_eq!(e.code.as_deref(), Some("no_allowed_accounts"));
        assert!(e.message.contains("acc_gone, acc_old"), "{}", e.message);
        let paused = Pick::NoAccounts {
            paused: 1,
            reauth: 0,
            deactivated: 0,
        };
        let e = no_account_error(&paused, &route);
        assert_eq!(e.code.as_deref(), Some("no_accounts"));
        assert!(
            e.message.contains("to this API key (1 paused)"),
            "{}",
            e.message
        );
        let e = no_account_error(&paused, &Routing::default());
        assert!(!e.message.contains("API key"), "{}", e.message);
    }
}
