//! `POST /backend-api/codex/responses`: the streamed model turn (PROTOCOL.md 1.5, 2, 3).
//!
//! Steps, in order: authenticate -> read and decode the body -> record it -> armed failure ->
//! validate -> resolve the scenario -> quota (429) -> hang / head delay -> stream. The steps from
//! the armed failure to the plan of events live in [`super::turn`], shared with the WebSocket
//! transport; this module owns the HTTP framing around them.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

use super::auth::authenticated;
use super::read_body;
use super::turn::{admit, armed_failure, plan_turn, StreamField};
use crate::mock::body::{ConnCtl, MockBody, SseBody, StreamMeta};
use crate::mock::errors;
use crate::mock::request::{decode_body, header_list, RecordedRequest, Transport};
use crate::mock::state::Shared;

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
        transport: Transport::Http,
    });

    if let Some(refused) = armed_failure(shared, account, &mut ctx) {
        return ctx.json(shared, refused.status, &refused.body);
    }

    if let Some(msg) = decode_error {
        return ctx.json(
            shared,
            StatusCode::BAD_REQUEST,
            &errors::invalid_request(&msg, None, None),
        );
    }
    let Some(Value::Object(req_body)) = parsed else {
        return ctx.json(
            shared,
            StatusCode::BAD_REQUEST,
            &errors::invalid_request(errors::UNPARSABLE_JSON, None, None),
        );
    };
    let admitted = match admit(
        shared,
        account,
        &mut ctx,
        &parts.headers,
        &req_body,
        StreamField::Required,
    ) {
        Ok(a) => a,
        Err(refused) => return ctx.json(shared, refused.status, &refused.body),
    };
    let sc = &admitted.sc;

    if sc.hang {
        // Accepted and never answered: the client's timeout is what is under test.
        std::future::pending::<()>().await;
    }
    if sc.head_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(sc.head_delay_ms)).await;
    }

    let stable_key = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok());
    let turn = plan_turn(shared, &admitted, &req_body, body_len, stable_key, true);
    let meta = StreamMeta {
        account,
        request_id: ctx.request_id.clone(),
        total_tokens: turn.total_tokens,
    };
    let body = SseBody::new(shared.clone(), conn, meta, turn.plan, sc, turn.seed);
    let mut r = Response::new(MockBody::Sse(Box::new(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    ctx.apply(shared, r.headers_mut());
    r
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
