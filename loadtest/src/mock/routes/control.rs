//! The mock-only control API under `/__mock/`, mirroring the library API of
//! [`crate::mock::MockUpstream`] for harnesses that drive the mock over HTTP.
//!
//! Control calls are not counted in stats and carry no rate-limit headers.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::read_body;
use crate::mock::accounts::{UsageMode, WsClose};
use crate::mock::body::MockBody;
use crate::mock::errors;
use crate::mock::logins::DeviceFlow;
use crate::mock::reply::plain_json as json_reply;
use crate::mock::scenario::Scenario;
use crate::mock::state::Shared;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailReq {
    status: u16,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageReq {
    primary: f64,
    secondary: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountReq {
    #[serde(default = "one")]
    count: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyReq {
    ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageModeReq {
    /// `401`/`"401"`, `402`, `403`, `404`, `500`, `"deactivated"`, or `null` to answer again.
    mode: Value,
}

/// `POST /__mock/websockets`: either field may be left out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebsocketsReq {
    enabled: Option<bool>,
    max_age_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockReq {
    advance_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginAccountReq {
    index: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyLoginReq {
    error: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFlowReq {
    interval_secs: u64,
    expires_in_secs: u64,
    #[serde(default)]
    pending_polls: u32,
}

pub async fn handle(shared: &Shared, rest: &str, req: Request<Incoming>) -> Response<MockBody> {
    let method = req.method().clone();
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(msg) => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                &errors::invalid_request(&msg, None, None),
            )
        }
    };
    let result = route(shared, &method, &segments, &body);
    match result {
        Ok(Reply::Json(v)) => json_reply(StatusCode::OK, &v),
        Ok(Reply::Sse(bytes)) => {
            let mut r = Response::new(MockBody::full(bytes));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            r
        }
        Err((status, msg)) => json_reply(status, &errors::invalid_request(&msg, None, None)),
    }
}

enum Reply {
    Json(Value),
    Sse(Vec<u8>),
}

type Routed = Result<Reply, (StatusCode, String)>;

fn route(shared: &Shared, method: &Method, seg: &[&str], body: &[u8]) -> Routed {
    let ok = || Ok(Reply::Json(json!({"ok": true})));
    match (method, seg) {
        (&Method::POST, ["reset"]) => {
            shared.reset();
            ok()
        }
        (&Method::GET, ["stats"]) => Ok(Reply::Json(json!(shared.stats.snapshot()))),
        (&Method::GET, ["scenario"]) => Ok(Reply::Json(json!(*shared.scenario()))),
        (&Method::POST, ["scenario"]) => {
            let raw = std::str::from_utf8(body).map_err(|_| bad("scenario body is not UTF-8"))?;
            let s = Scenario::from_json(if raw.trim().is_empty() { "{}" } else { raw })
                .map_err(|e| bad(&e))?;
            shared.set_scenario(s);
            ok()
        }
        (&Method::GET, ["accounts"]) => {
            let creds = shared.credentials();
            let list: Vec<Value> = (0..shared.accounts.len())
                .map(|i| {
                    let mut v = json!(creds.tokens(i));
                    v["auth_json"] =
                        serde_json::from_str(&creds.auth_json(i)).unwrap_or(Value::Null);
                    v
                })
                .collect();
            Ok(Reply::Json(Value::Array(list)))
        }
        (&Method::POST, ["accounts", id, action]) => {
            let a = shared
                .account_by_id(id)
                .ok_or_else(|| unknown_account(id))?;
            let acct = &shared.accounts[a];
            match *action {
                "fail" => {
                    let f: FailReq = parse(body)?;
                    acct.arm_failure(f.status, f.count);
                }
                "usage" => {
                    let u: UsageReq = parse(body)?;
                    acct.set_used_percent(u.primary, u.secondary, shared.clock.now());
                }
                "expire" => shared.credentials_mut().expire_access(a),
                "expire-refresh" => shared.credentials_mut().expire_refresh(a),
                "revoke-refresh" => shared.credentials_mut().revoke_refresh(a),
                "fail-refresh" => {
                    let c: CountReq = parse(if body.is_empty() { b"{}" } else { body })?;
                    shared.credentials_mut().fail_refresh(a, c.count);
                }
                "refresh-latency" => {
                    let l: LatencyReq = parse(body)?;
                    shared.credentials_mut().set_refresh_latency(a, l.ms);
                }
                "ws-close" => {
                    let c: WsClose = parse(body)?;
                    acct.arm_ws_close(c);
                }
                "usage-mode" => {
                    let m: UsageModeReq = parse(body)?;
                    acct.set_usage_mode(usage_mode(&m.mode)?);
                }
                _ => return Err(not_found(method, seg)),
            }
            ok()
        }
        (&Method::POST, ["websockets"]) => {
            let r: WebsocketsReq = parse(body)?;
            if let Some(on) = r.enabled {
                shared.set_websockets(on);
            }
            if let Some(ms) = r.max_age_ms {
                shared.set_ws_max_age(std::time::Duration::from_millis(ms));
            }
            Ok(Reply::Json(json!({
                "ok": true,
                "enabled": shared.websockets(),
                "max_age_ms": shared.ws_max_age().as_millis() as u64,
            })))
        }
        (&Method::POST, ["login-account"]) => {
            let r: LoginAccountReq = parse(body)?;
            if !shared.logins().set_login_account(r.index) {
                return Err((
                    StatusCode::NOT_FOUND,
                    format!("No mock account with index {}", r.index),
                ));
            }
            ok()
        }
        (&Method::POST, ["deny-login"]) => {
            let r: DenyLoginReq = parse(body)?;
            shared.logins().deny_next(&r.error, &r.description);
            ok()
        }
        (&Method::POST, ["device-flow"]) => {
            let r: DeviceFlowReq = parse(body)?;
            shared.logins().set_device_flow(DeviceFlow {
                interval_secs: r.interval_secs,
                expires_in_secs: r.expires_in_secs,
                pending_polls: r.pending_polls,
            });
            ok()
        }
        (&Method::POST, ["expire-device-logins"]) => {
            shared.logins().expire_devices();
            ok()
        }
        (&Method::GET, ["oauth-stats"]) => Ok(Reply::Json(json!(shared.logins().stats()))),
        (&Method::POST, ["clock"]) => {
            let c: ClockReq = parse(body)?;
            shared.clock.advance(c.advance_secs);
            Ok(Reply::Json(json!({"ok": true, "now": shared.clock.now()})))
        }
        (&Method::GET, ["recorded", rid]) => {
            shared.recorded(rid).map(Reply::Sse).ok_or_else(|| {
                (
                    StatusCode::NOT_FOUND,
                    format!("No recording for request id {rid}"),
                )
            })
        }
        (&Method::GET, ["last-request", id]) => {
            let a = shared
                .account_by_id(id)
                .ok_or_else(|| unknown_account(id))?;
            let r = shared.accounts[a].last_request().ok_or_else(|| {
                (
                    StatusCode::NOT_FOUND,
                    format!("No request seen for account {id}"),
                )
            })?;
            Ok(Reply::Json(json!({
                "method": r.method,
                "path": r.path,
                "headers": r.headers,
                "body": String::from_utf8_lossy(&r.body),
                "body_base64": STANDARD.encode(&r.body),
                "content_encoding": r.content_encoding,
                "transport": r.transport,
            })))
        }
        _ => Err(not_found(method, seg)),
    }
}

fn usage_mode(v: &Value) -> Result<Option<UsageMode>, (StatusCode, String)> {
    let text = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => {
            return Err(bad(&format!(
                "usage mode must be a status, a name or null, not {other}"
            )))
        }
    };
    text.parse().map(Some).map_err(|e: String| bad(&e))
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, (StatusCode, String)> {
    serde_json::from_slice(body).map_err(|e| bad(&format!("invalid control body: {e}")))
}

fn bad(msg: &str) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, msg.to_string())
}

fn unknown_account(id: &str) -> (StatusCode, String) {
    (StatusCode::NOT_FOUND, format!("Unknown mock account {id}"))
}

fn not_found(method: &Method, seg: &[&str]) -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        format!("Unknown control route: {method} /__mock/{}", seg.join("/")),
    )
}
