//! Request routing and the steps every backend request shares: count it, authenticate it,
//! read its body, and (last, on every path) count the reply.
//!
//! Backend routes live under `/backend-api` like upstream's; the OAuth endpoints (token,
//! authorize, device login) sit at the origin, as the issuer's do; the mock-only control API
//! lives under `/__mock/`. New upstream endpoints get a module here and a line in [`handle`].
//! `responses` (SSE) and `websocket` share the turn's steps in `turn`.

mod auth;
mod codex_control;
mod compact;
mod control;
mod login;
mod models;
mod oauth;
mod responses;
mod transcribe;
mod turn;
mod usage;
mod websocket;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use super::body::{ConnCtl, MockBody};
use super::errors;
use super::reply::ReplyCtx;
use super::request::MAX_BODY_BYTES;
use super::state::Shared;

pub const RESPONSES_PATH: &str = "/backend-api/codex/responses";
pub const MODELS_PATH: &str = "/backend-api/codex/models";

pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/__mock/") {
        return Ok(control::handle(&shared, rest, req).await);
    }
    let route = match (req.method(), path.as_str()) {
        (&Method::POST, RESPONSES_PATH) => "POST /backend-api/codex/responses",
        (&Method::GET, RESPONSES_PATH) if websocket::is_upgrade(req.headers()) => {
            "GET /backend-api/codex/responses"
        }
        (&Method::POST, compact::COMPACT_PATH) => "POST /backend-api/codex/responses/compact",
        (&Method::GET, MODELS_PATH) => "GET /backend-api/codex/models",
        (&Method::GET, usage::USAGE_PATH) => "GET /backend-api/wham/usage",
        (&Method::POST, oauth::TOKEN_PATH) => "POST /oauth/token",
        (&Method::GET, login::AUTHORIZE_PATH) => "GET /oauth/authorize",
        (&Method::POST, login::USERCODE_PATH) => "POST /api/accounts/deviceauth/usercode",
        (&Method::POST, login::DEVICE_TOKEN_PATH) => "POST /api/accounts/deviceauth/token",
        (&Method::GET, login::DEVICE_PAGE_PATH) => "GET /codex/device",
        (&Method::GET | &Method::POST, p) if codex_control::PATHS.contains(&p) => "control",
        (&Method::POST, transcribe::TRANSCRIBE_PATH) => "POST /backend-api/transcribe",
        _ => "not_found",
    };
    shared.stats.request(route);
    let resp = match route {
        "POST /backend-api/codex/responses" => responses::handle(&shared, conn, req).await,
        "GET /backend-api/codex/responses" => websocket::handle(&shared, conn, req).await,
        "POST /backend-api/codex/responses/compact" => compact::handle(&shared, req).await,
        "GET /backend-api/codex/models" => models::handle(&shared, req),
        "GET /backend-api/wham/usage" => usage::handle(&shared, req),
        "POST /oauth/token" => oauth::handle(&shared, req).await,
        "GET /oauth/authorize" => login::authorize(&shared, &req),
        "POST /api/accounts/deviceauth/usercode" => login::usercode(&shared, req).await,
        "POST /api/accounts/deviceauth/token" => login::device_token(&shared, req).await,
        "GET /codex/device" => login::device_page(),
        "control" => codex_control::handle(&shared, req).await,
        "POST /backend-api/transcribe" => transcribe::handle(&shared, req).await,
        _ => {
            let ctx = ReplyCtx::from_request(&shared, req.headers());
            let body = errors::not_found(req.method().as_str(), &path);
            ctx.json(&shared, StatusCode::NOT_FOUND, &body)
        }
    };
    // A sign-in redirect (302) is an answer, not a rejection.
    if resp.status().is_client_error() || resp.status().is_server_error() {
        shared.stats.rejected(resp.status().as_u16());
    }
    if let Some(n) = resp.body().size_hint().exact() {
        shared.stats.bytes(n as usize);
    }
    Ok(resp)
}

/// Reads a whole request body, capped at [`MAX_BODY_BYTES`].
pub async fn read_body(body: Incoming) -> Result<Bytes, String> {
    Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| format!("Could not read request body: {e}"))
}

/// A unary backend call after the steps every one of them takes: the account's credentials
/// checked, the whole body read, the request recorded for tests, and a failure armed for the
/// account answered in its place (`Err` is the answer to send).
pub struct Unary {
    pub ctx: ReplyCtx,
    pub account: usize,
    pub parts: hyper::http::request::Parts,
    pub body: Bytes,
}

pub async fn unary(shared: &Shared, req: Request<Incoming>) -> Result<Unary, Response<MockBody>> {
    let (parts, body) = req.into_parts();
    let (ctx, account) = auth::authenticated(shared, &parts.headers).map_err(|r| *r)?;
    let acct = &shared.accounts[account];
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(msg) => {
            return Err(ctx.json(
                shared,
                StatusCode::BAD_REQUEST,
                &errors::invalid_request(&msg, None, None),
            ))
        }
    };
    acct.record_request(super::request::RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.to_string(),
        headers: super::request::header_list(&parts.headers),
        body: body.to_vec(),
        content_encoding: None,
        transport: super::request::Transport::Http,
    });
    if let Some(status) = acct.take_failure() {
        let usage = acct.usage(shared.clock.now());
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(ctx.json(
            shared,
            code,
            &errors::injected(status, &acct.plan_type, &usage),
        ));
    }
    Ok(Unary {
        ctx,
        account,
        parts,
        body,
    })
}
