//! `POST /backend-api/codex/responses/compact`: remote compaction, v1 unary (PROTOCOL.md §1.7).
//! Answers one JSON object whose `output` is the replacement history: the user messages kept as
//! they were, then one `compaction` item with opaque `encrypted_content`; usage is charged to the
//! account like a turn's.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::models::model_in_plan;
use crate::mock::body::MockBody;
use crate::mock::errors;
use crate::mock::reply::mix;
use crate::mock::state::Shared;

pub const COMPACT_PATH: &str = "/backend-api/codex/responses/compact";

/// Output tokens a compaction "costs" in the mock.
const SUMMARY_TOKENS: u64 = 120;

pub async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<MockBody> {
    let super::Unary {
        mut ctx,
        account,
        body: raw,
        ..
    } = match super::unary(shared, req).await {
        Ok(call) => call,
        Err(answer) => return answer,
    };
    let acct = &shared.accounts[account];
    let Ok(Value::Object(req_body)) = serde_json::from_slice::<Value>(&raw) else {
        return ctx.json(
            shared,
            StatusCode::BAD_REQUEST,
            &errors::invalid_request(
                "We could not parse the JSON body of your request.",
                None,
                None,
            ),
        );
    };
    if req_body.contains_key("stream") {
        return ctx.json(
            shared,
            StatusCode::BAD_REQUEST,
            &errors::invalid_request(
                "Unsupported parameter: stream",
                Some("stream"),
                Some("unsupported_parameter"),
            ),
        );
    }
    let model = req_body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !model_in_plan(model, &acct.plan_type) {
        let msg = format!(
            "The '{model}' model is not supported when using Codex with a ChatGPT account."
        );
        return ctx.json(
            shared,
            StatusCode::BAD_REQUEST,
            &errors::invalid_request(&msg, Some("model"), None),
        );
    }
    ctx.model = Some(model.to_string());
    let input = req_body
        .get("input")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let kept: Vec<Value> = input
        .iter()
        .filter(|i| i.get("role").and_then(Value::as_str) == Some("user"))
        .cloned()
        .collect();
    let seed = mix(shared.next_id());
    let summary = format!("compacted {} items of history", input.len());
    let mut output = kept;
    output.push(json!({
        "type": "compaction",
        "id": format!("cmp_{seed:016x}"),
        "encrypted_content": B64.encode(summary.as_bytes()),
    }));
    let input_tokens = raw.len() as u64 / 4;
    let total = input_tokens + SUMMARY_TOKENS;
    shared.stream_completed(account, total);
    let now = shared.clock.now();
    ctx.usage = Some(acct.usage(now));
    let body = json!({
        "id": format!("resp_{seed:016x}"),
        "object": "response.compaction",
        "created_at": now,
        "model": model,
        "output": output,
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": SUMMARY_TOKENS,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": total
        }
    });
    ctx.json(shared, StatusCode::OK, &body)
}
