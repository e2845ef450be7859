//! Codex's control-plane routes (PROTOCOL.md §1.2: thread goals, analytics events, memories,
//! safety, search, agent-identity keys): the real upstream answers them with small JSON
//! documents; the mock checks the account's credentials like any backend call, records the
//! request (so a test can see which account it reached and what was forwarded), honours an
//! armed failure, and answers `200 {}` (§7, item 19).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use crate::mock::body::MockBody;
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
    match super::unary(shared, req).await {
        Ok(call) => call.ctx.json(shared, StatusCode::OK, &json!({})),
        Err(answer) => answer,
    }
}
