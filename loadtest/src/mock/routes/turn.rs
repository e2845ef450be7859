//! The steps of a `/responses` turn that both transports share (PROTOCOL.md 1.5, 2, 3, 6): the
//! armed failure, upstream's request checks, the scenario layers, the quota check and the plan
//! of events. The POST route turns a refusal into an HTTP reply and streams the plan as SSE; the
//! WebSocket route turns a refusal into an error message and sends the plan's events as text
//! messages. Neither transport decides anything this module decides.

use hyper::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use super::models::model_in_plan;
use crate::mock::accounts::Usage;
use crate::mock::errors;
use crate::mock::render::{plan, plan_empty, Plan, RequestIds, TokenUsage};
use crate::mock::reply::{fnv1a, mix, ReplyCtx};
use crate::mock::scenario::{directive_patch, parse_patch, Scenario};
use crate::mock::state::Shared;

/// Fields the ChatGPT backend refuses (PROTOCOL.md 1.5); codex-lb must strip them.
const UNSUPPORTED_PARAMS: [&str; 8] = [
    "temperature",
    "top_p",
    "max_output_tokens",
    "metadata",
    "truncation",
    "user",
    "safety_identifier",
    "prompt_cache_retention",
];

/// A turn refused before its first event: the HTTP status and the JSON body upstream sends.
pub struct Refused {
    pub status: StatusCode,
    pub body: Value,
}

impl Refused {
    fn new(status: StatusCode, body: Value) -> Refused {
        Refused { status, body }
    }

    fn bad_request(body: Value) -> Refused {
        Refused::new(StatusCode::BAD_REQUEST, body)
    }
}

/// What `stream` may be: the POST body must say `true`; a WebSocket `response.create` may also
/// leave it out (codex-lb removes it, the CLI keeps it: PROTOCOL.md 6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamField {
    Required,
    Optional,
}

/// A request that passed every check.
pub struct Admitted {
    pub model: String,
    pub sc: Scenario,
}

/// The events of one admitted turn and what its end charges.
pub struct TurnPlan {
    pub plan: Plan,
    pub response_id: String,
    /// Charged to the account's windows when `response.completed` went out.
    pub total_tokens: u64,
    /// Seeds the pacing jitter.
    pub seed: u64,
}

/// Consumes the account's next `fail_next` failure, if one is armed. A 429 shows a saturated
/// primary window in the reply's rate-limit headers (`ctx.usage`).
pub fn armed_failure(shared: &Shared, account: usize, ctx: &mut ReplyCtx) -> Option<Refused> {
    let acct = &shared.accounts[account];
    let status = acct.take_failure()?;
    let mut shown = acct.usage(shared.clock.now());
    if status == 429 {
        shown.primary.used_percent = shown.primary.used_percent.max(100.0);
    }
    ctx.usage = Some(shown);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some(Refused::new(
        code,
        errors::injected(status, &acct.plan_type, &shown),
    ))
}

/// A usage-limit refusal when a window of the account is full; `ctx.usage` is set either way.
pub fn quota(shared: &Shared, account: usize, ctx: &mut ReplyCtx) -> Result<Usage, Refused> {
    let acct = &shared.accounts[account];
    let usage = acct.usage(shared.clock.now());
    ctx.usage = Some(usage);
    if usage.exhausted() {
        return Err(Refused::new(
            StatusCode::TOO_MANY_REQUESTS,
            errors::usage_limit_reached(&acct.plan_type, &usage),
        ));
    }
    Ok(usage)
}

/// Upstream's request checks, the scenario layers (global < `x-mock-scenario` in `headers` <
/// `[[mock]]` directive) and the quota, in that order. Fills `ctx.model`,
/// `ctx.reasoning_included` and `ctx.usage` as far as it gets, so a refusal carries the same
/// headers whichever transport sends it.
pub fn admit(
    shared: &Shared,
    account: usize,
    ctx: &mut ReplyCtx,
    headers: &HeaderMap,
    body: &Map<String, Value>,
    stream: StreamField,
) -> Result<Admitted, Refused> {
    let acct = &shared.accounts[account];
    let model = validate(body, &acct.plan_type, stream).map_err(Refused::bad_request)?;
    ctx.model = Some(model.clone());
    let sc = resolve_scenario(shared, headers, body).map_err(|msg| {
        Refused::bad_request(errors::invalid_request(
            &msg,
            None,
            Some("invalid_mock_scenario"),
        ))
    })?;
    ctx.reasoning_included = Some(sc.reasoning);
    quota(shared, account, ctx)?;
    Ok(Admitted { model, sc })
}

/// Renders the turn's events. `body_len` is the request's size (input tokens are a quarter of
/// it); a `stable_key` (the client's `x-request-id`) gives a stable response id, so two runs of
/// one request produce identical bytes modulo `created_at`. `generate: false` plans the empty
/// pre-warm response.
pub fn plan_turn(
    shared: &Shared,
    a: &Admitted,
    body: &Map<String, Value>,
    body_len: u64,
    stable_key: Option<&str>,
    generate: bool,
) -> TurnPlan {
    let tpl = shared.templates.get(&a.sc, &a.model);
    let input = body_len / 4;
    let cache_key = body.get("prompt_cache_key").and_then(Value::as_str);
    let reasoning = if a.sc.reasoning && generate {
        a.sc.reasoning_tokens
    } else {
        0
    };
    let tokens = TokenUsage {
        input,
        cached: shared.cached_tokens(cache_key, input),
        output: if generate {
            tpl.answer_bytes / 4 + reasoning
        } else {
            0
        },
        reasoning,
    };
    let seed = mix(shared.next_id());
    let response_id = match stable_key {
        Some(k) if !k.is_empty() => format!("resp_{:016x}", fnv1a(k)),
        _ => format!("resp_{seed:016x}"),
    };
    let ids = RequestIds {
        response_id: &response_id,
        created_at: shared.clock.now(),
        service_tier: body
            .get("service_tier")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && *t != "auto")
            .unwrap_or("default"),
    };
    let plan = if generate {
        plan(&tpl, &a.sc, &ids, &tokens)
    } else {
        plan_empty(&tpl, &ids, &tokens)
    };
    TurnPlan {
        plan,
        total_tokens: tokens.total(),
        response_id,
        seed,
    }
}

/// Upstream's request checks for an account on `plan`; `Ok` carries the model slug.
fn validate(body: &Map<String, Value>, plan: &str, stream: StreamField) -> Result<String, Value> {
    for p in UNSUPPORTED_PARAMS {
        if body.contains_key(p) {
            return Err(errors::invalid_request(
                &format!("Unsupported parameter: {p}"),
                Some(p),
                Some("unsupported_parameter"),
            ));
        }
    }
    let stream_ok = match body.get("stream") {
        Some(Value::Bool(true)) => true,
        None => stream == StreamField::Optional,
        Some(_) => false,
    };
    if !stream_ok {
        return Err(errors::invalid_request(
            "Stream must be set to true",
            Some("stream"),
            None,
        ));
    }
    if body.get("store") == Some(&Value::Bool(true)) {
        return Err(errors::invalid_request(
            "Store must be set to false",
            Some("store"),
            None,
        ));
    }
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return Err(errors::invalid_request(
            "Missing required parameter: 'model'.",
            Some("model"),
            None,
        ));
    };
    // An unknown model and one outside the account's plan get the same answer upstream.
    if !model_in_plan(model, plan) {
        let msg = format!(
            "The '{model}' model is not supported when using Codex with a ChatGPT account."
        );
        return Err(errors::invalid_request(&msg, Some("model"), None));
    }
    Ok(model.to_string())
}

/// Global default < `x-mock-scenario` header < `[[mock {...}]]` directive.
fn resolve_scenario(
    shared: &Shared,
    headers: &HeaderMap,
    body: &Map<String, Value>,
) -> Result<Scenario, String> {
    let base = shared.scenario();
    let header = match headers.get("x-mock-scenario") {
        Some(v) => {
            Some(parse_patch(v.to_str().map_err(|_| {
                "invalid scenario: header is not UTF-8".to_string()
            })?)?)
        }
        None => None,
    };
    let directive = directive_patch(body.get("input"))?;
    let mut patch = header.unwrap_or_default();
    if let Some(d) = directive {
        patch.extend(d);
    }
    if patch.is_empty() {
        return Ok((*base).clone());
    }
    base.overlay(&patch)
}
