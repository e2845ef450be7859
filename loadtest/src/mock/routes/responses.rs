//! `POST /backend-api/codex/responses`: the streamed model turn (PROTOCOL.md 1.5, 2, 3).
//!
//! Steps, in order: authenticate -> read and decode the body -> record it -> armed failure ->
//! validate -> resolve the scenario -> quota (429) -> hang / head delay -> stream.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{HeaderMap, Request, Response, StatusCode};
use serde_json::{Map, Value};

use super::auth::authenticated;
use super::models::model_in_plan;
use super::read_body;
use crate::mock::body::{ConnCtl, MockBody, SseBody, StreamMeta};
use crate::mock::errors;
use crate::mock::render::{plan, RequestIds, TokenUsage};
use crate::mock::reply::{fnv1a, mix};
use crate::mock::request::{decode_body, header_list, RecordedRequest};
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

pub async fn handle(
    shared: &Arc<Shared>,
    conn: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Response<MockBody> {
    let (parts, body) = req.into_parts();
    let (mut ctx, account) = match authenticated(shared, &parts.headers) {
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
    let encoding = parts
        .headers
        .get(hyper::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (body, decode_error) = match decode_body(encoding.as_deref(), &raw) {
        Ok(b) => (b, None),
        Err(e) => (raw.to_vec(), Some(e)),
    };
    let body_len = body.len() as u64;
    let parsed = if decode_error.is_none() {
        serde_json::from_slice::<Value>(&body).ok()
    } else {
        None
    };
    acct.record_request(RecordedRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |p| p.to_string()),
        headers: header_list(&parts.headers),
        body,
        content_encoding: encoding,
    });

    if let Some(status) = acct.take_failure() {
        let usage = acct.usage(shared.clock.now());
        let mut shown = usage;
        if status == 429 {
            shown.primary.used_percent = shown.primary.used_percent.max(100.0);
        }
        ctx.usage = Some(shown);
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return ctx.json(
            shared,
            code,
            &errors::injected(status, &acct.plan_type, &shown),
        );
    }

    if let Some(msg) = decode_error {
        return ctx.json(
            shared,
            StatusCode::BAD_REQUEST,
            &errors::invalid_request(&msg, None, None),
        );
    }
    let Some(Value::Object(req_body)) = parsed else {
        let msg = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)";
        return ctx.json(
            shared,
            StatusCode::BAD_REQUEST,
            &errors::invalid_request(msg, None, None),
        );
    };
    let model = match validate(&req_body, &acct.plan_type) {
        Ok(m) => m,
        Err(body) => return ctx.json(shared, StatusCode::BAD_REQUEST, &body),
    };
    ctx.model = Some(model.clone());

    let sc = match resolve_scenario(shared, &parts.headers, &req_body) {
        Ok(s) => s,
        Err(msg) => {
            return ctx.json(
                shared,
                StatusCode::BAD_REQUEST,
                &errors::invalid_request(&msg, None, Some("invalid_mock_scenario")),
            )
        }
    };
    ctx.reasoning_included = Some(sc.reasoning);

    let now = shared.clock.now();
    let usage = acct.usage(now);
    if usage.exhausted() {
        return ctx.json(
            shared,
            StatusCode::TOO_MANY_REQUESTS,
            &errors::usage_limit_reached(&acct.plan_type, &usage),
        );
    }
    ctx.usage = Some(usage);

    if sc.hang {
        // Accepted and never answered: the client's timeout is what is under test.
        std::future::pending::<()>().await;
    }
    if sc.head_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(sc.head_delay_ms)).await;
    }

    let tpl = shared.templates.get(&sc, &model);
    let input = body_len / 4;
    let cache_key = req_body.get("prompt_cache_key").and_then(Value::as_str);
    let reasoning = if sc.reasoning { sc.reasoning_tokens } else { 0 };
    let tokens = TokenUsage {
        input,
        cached: shared.cached_tokens(cache_key, input),
        output: tpl.answer_bytes / 4 + reasoning,
        reasoning,
    };
    let seed = mix(shared.next_id());
    // A client-chosen request id gives a stable response id, so two runs of one request
    // produce identical bytes (modulo created_at).
    let response_id = match parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        Some(rid) if !rid.is_empty() => format!("resp_{:016x}", fnv1a(rid)),
        _ => format!("resp_{seed:016x}"),
    };
    let ids = RequestIds {
        response_id: &response_id,
        created_at: now,
    };
    let p = plan(&tpl, &sc, &ids, &tokens);
    let meta = StreamMeta {
        account,
        request_id: ctx.request_id.clone(),
        total_tokens: tokens.total(),
    };
    let body = SseBody::new(shared.clone(), conn, meta, p, &sc, seed);
    let mut r = Response::new(MockBody::Sse(Box::new(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    ctx.apply(shared, r.headers_mut());
    r
}

/// Upstream's request checks for an account on `plan`; `Ok` carries the model slug.
fn validate(body: &Map<String, Value>, plan: &str) -> Result<String, Value> {
    for p in UNSUPPORTED_PARAMS {
        if body.contains_key(p) {
            return Err(errors::invalid_request(
                &format!("Unsupported parameter: {p}"),
                Some(p),
                Some("unsupported_parameter"),
            ));
        }
    }
    if body.get("stream") != Some(&Value::Bool(true)) {
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

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::mock::testing::{call, Reply};
    use crate::mock::{MockConfig, MockUpstream, SeedAccount};

    fn turn(m: &MockUpstream, a: &SeedAccount, model: &str) -> Reply {
        let bearer = format!("Bearer {}", a.access_token);
        let headers = [
            ("authorization", bearer.as_str()),
            ("chatgpt-account-id", a.chatgpt_account_id.as_str()),
            ("content-type", "application/json"),
        ];
        let body = json!({"model": model, "input": [], "stream": true, "store": false});
        call(
            m.addr(),
            "POST",
            super::super::RESPONSES_PATH,
            &headers,
            body.to_string().as_bytes(),
        )
    }

    fn get(m: &MockUpstream, a: &SeedAccount, path: &str) -> Reply {
        let bearer = format!("Bearer {}", a.access_token);
        let headers = [
            ("authorization", bearer.as_str()),
            ("chatgpt-account-id", a.chatgpt_account_id.as_str()),
        ];
        call(m.addr(), "GET", path, &headers, b"")
    }

    fn slugs(r: &Reply) -> Vec<String> {
        r.json()["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["slug"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn plans_are_per_account_and_restrict_models() {
        let m = MockUpstream::start(MockConfig {
            accounts: 3,
            plans: vec!["pro".into(), "plus".into()],
            plan: "team".into(),
            ..MockConfig::default()
        })
        .unwrap();
        let accts = m.accounts();
        let plans: Vec<&str> = accts.iter().map(|a| a.plan_type.as_str()).collect();
        assert_eq!(
            plans,
            ["pro", "plus", "team"],
            "missing indexes fall back to plan"
        );

        let [pro, plus, team] = [&accts[0], &accts[1], &accts[2]];
        let ok = turn(&m, pro, "gpt-5.5-pro");
        assert_eq!(ok.status, 200);
        assert_eq!(ok.header("x-codex-plan-type"), Some("pro"));
        for a in [plus, team] {
            let r = turn(&m, a, "gpt-5.5-pro");
            assert_eq!(r.status, 400);
            let err = &r.json()["error"];
            assert_eq!(
                err["message"],
                "The 'gpt-5.5-pro' model is not supported when using Codex with a ChatGPT account."
            );
            assert_eq!(err["param"], "model");
            assert_eq!(err["type"], "invalid_request_error");
            assert_eq!(r.header("x-codex-plan-type"), Some(a.plan_type.as_str()));
            assert_eq!(turn(&m, a, "gpt-5.5").status, 200);
        }

        // the catalog is per plan
        let path = "/backend-api/codex/models?client_version=0.144.0";
        assert_eq!(
            slugs(&get(&m, pro, path)),
            [
                "gpt-5.5",
                "gpt-5.3-codex",
                "gpt-5.1-codex-mini",
                "gpt-5.5-pro"
            ]
        );
        assert_eq!(
            slugs(&get(&m, plus, path)),
            ["gpt-5.5", "gpt-5.3-codex", "gpt-5.1-codex-mini"]
        );
        let pro_model = get(&m, pro, path).json()["models"][3].clone();
        assert_eq!(pro_model["available_in_plans"], json!(["pro"]));

        // usage, 429 bodies and token claims follow the account's plan
        let usage = get(&m, plus, "/backend-api/wham/usage").json();
        assert_eq!(usage["plan_type"], "plus");
        m.set_used_percent(&pro.chatgpt_account_id, 100.0, 0.0);
        let limited = turn(&m, pro, "gpt-5.5");
        assert_eq!(limited.status, 429);
        assert_eq!(limited.json()["error"]["plan_type"], "pro");
        let claims: Value = {
            use base64::Engine as _;
            let payload = team.id_token.split('.').nth(1).unwrap();
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap();
            serde_json::from_slice(&raw).unwrap()
        };
        assert_eq!(
            claims["https://api.openai.com/auth"]["chatgpt_plan_type"],
            "team"
        );
    }
}
