//! Codex's control-plane routes (PROTOCOL.md §1.2: thread goals, analytics events, memories,
//! safety, search, agent-identity keys): the real upstream answers them with small JSON
//! documents; the mock checks the account's credentials like any backend call, records the
//! request (so a test can see which account it reached and what was forwarded), honours an
//! armed failure, and answers `200 {}` (§7, item 19).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::auth::authenticated;
use super::read_body;
use crate::mock::body::MockBody;
use crate::mock::errors;
use crate::mock::request::{header_list, RecordedRequest, Transport};
use crate::mock::state::Shared;

pub const PATHS: &[&str] = &[
    "/backend-api/codex/thread/goal/get",
    "/backend-api/codex/thread/goal/set",
    "/backend-api/codex/thread/goal/clear",
    "/backend-api/codex/analytics-events/events",
    "/backend-api/codex/memories/trace_summarize",
    "/backend-api/codex/safety/arc",
    "/backend-api/codex/alpha/search",
    "/backend-api/codex/agent-identities/jwks",
    "/backend-api/wham/agent-identities/jwks",
];

pub async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<MockBody> {
    let (parts, body) = req.into_parts();
    let (ctx, account) = match authenticated(shared, &parts.headers) {
        Ok(x) => x,
        Err(refused) => return *refused,
    };
    let acct = &shared.accounts[account];
    let raw = match read_body(body).await {
        Ok(b) => b,
        Err(msg) => {
            return ctx.json(
                shared,
                StatusCode::BAD_REQUEST,
                &errors::invalid_request(&msg, None, None),
            )
        }
    };
    acct.record_request(RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.to_string(),
        headers: header_list(&parts.headers),
        body: raw.to_vec(),
        content_encoding: None,
        transport: Transport::Http,
    });
    if let Some(status) = acct.take_failure() {
        let usage = acct.usage(shared.clock.now());
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return ctx.json(
            shared,
            code,
            &errors::injected(status, &acct.plan_type, &usage),
        );
    }
    ctx.json(shared, StatusCode::OK, &json!({}))
}
