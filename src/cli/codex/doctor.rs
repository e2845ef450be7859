//! `codex-lb doctor`: why the Codex CLI cannot use the gateway, one check at a time.
//!
//! Each check prints PASS, FAIL (with the fix) or SKIP (when an earlier failure makes it
//! meaningless, e.g. no gateway to ask). The checks read `$CODEX_HOME/config.toml` as Codex
//! resolves it and ask the gateway over HTTP; only `--live` spends a (one-token) turn. The exit
//! code is non-zero when any check fails.

use std::time::{Duration, SystemTime};

use clap::Args;
use serde_json::Value;

use super::config::{self, Effective, Provider};
use super::{
    retag, HomeArgs, BUILTIN_PROVIDER, CODEX_PATH, DEFAULT_GATEWAY, DEFAULT_KEY_ENV, PROVIDER_ID,
};

/// Largest clock difference to the gateway's `Date` that still passes.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Connect and read limit for each check's request.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for the `--live` turn, which waits for the upstream.
const LIVE_TIMEOUT: Duration = Duration::from_secs(120);
/// The model a live turn asks for when config.toml names none and the catalog is unknown.
const FALLBACK_MODEL: &str = "gpt-5.5";

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// The gateway to check (default: where config.toml's provider points, else
    /// http://127.0.0.1:2455).
    #[arg(long, value_name = "URL")]
    pub gateway: Option<String>,
    /// Check what `codex --profile NAME` would use instead of the active settings.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Also send a one-token test turn through the gateway (it uses a pooled account).
    #[arg(long)]
    pub live: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Fail,
    Skip,
}

struct Check {
    name: &'static str,
    status: Status,
    detail: String,
    fix: Option<String>,
}

fn pass(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Pass,
        detail: detail.into(),
        fix: None,
    }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn skip(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Skip,
        detail: detail.into(),
        fix: None,
    }
}

/// One HTTP answer, whatever its status.
struct Reply {
    status: u16,
    date: Option<String>,
    body: String,
}

impl Reply {
    fn error_message(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("HTTP {}", self.status))
    }
}

fn send(req: ureq::Request, body: Option<&str>) -> Result<Reply, String> {
    let res = match body {
        Some(b) => req.set("content-type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let date = resp.header("date").map(str::to_string);
    let body = if status == 101 {
        String::new()
    } else {
        resp.into_string().map_err(|e| e.to_string())?
    };
    Ok(Reply { status, date, body })
}

fn with_key(req: ureq::Request, key: Option<&str>) -> ureq::Request {
    match key {
        Some(k) => req.set("authorization", &format!("Bearer {k}")),
        None => req,
    }
}

/// `scheme://host:port/path` with loopback names made equal, for comparing URLs.
fn url_key(raw: &str) -> Option<(String, String, u16, String)> {
    let u = url::Url::parse(raw.trim()).ok()?;
    let host = match u.host_str()? {
        "localhost" | "127.0.0.1" | "[::1]" | "::1" => "loopback".to_string(),
        h => h.to_ascii_lowercase(),
    };
    Some((
        u.scheme().to_string(),
        host,
        u.port_or_known_default()?,
        u.path().trim_end_matches('/').to_string(),
    ))
}

pub fn run(args: DoctorArgs) -> Result<(), String> {
    let home = args.home.dir()?;
    let loaded = config::load(&home);
    let eff = match &loaded {
        Ok(Some((_, doc))) => config::effective(doc, args.profile.as_deref()),
        _ => Effective::default(),
    };
    let gateway = match &args.gateway {
        Some(g) => super::normalize_gateway(g)?,
        None => eff
            .provider
            .as_ref()
            .and_then(|p| p.base_url.as_deref())
            .and_then(|u| u.trim_end_matches('/').strip_suffix(CODEX_PATH))
            .map_or_else(|| DEFAULT_GATEWAY.to_string(), str::to_string),
    };
    println!(
        "codex-lb doctor: Codex home {}, gateway {gateway}{}\n",
        home.display(),
        eff.profile
            .as_deref()
            .map(|p| format!(", profile {p}"))
            .unwrap_or_default()
    );
    let ctx = Ctx {
        setup_cmd: match &eff.profile {
            Some(p) => format!("codex-lb codex setup --gateway {gateway} --profile {p}"),
            None => format!("codex-lb codex setup --gateway {gateway}"),
        },
        agent: ureq::AgentBuilder::new()
            .timeout_connect(CHECK_TIMEOUT)
            .timeout(CHECK_TIMEOUT)
            .build(),
        gateway,
    };

    let mut checks = vec![config_check(&ctx, &home, &loaded, &eff)];
    let provider = match &loaded {
        Ok(Some(_)) => eff.provider.as_ref(),
        _ => None,
    };
    checks.extend(provider_checks(&ctx, provider));
    let mut dates: Vec<String> = Vec::new();
    let health = gateway_check(&ctx, &mut dates);
    let up = health.status == Status::Pass;
    checks.push(health);
    let key_var = provider.and_then(|p| p.env_key.as_deref());
    let key = key_var
        .and_then(|v| std::env::var(v).ok())
        .filter(|k| !k.trim().is_empty());
    let models_url = format!("{}{CODEX_PATH}/models", ctx.gateway);
    let probe = |key: Option<&str>| send(with_key(ctx.agent.get(&models_url), key), None);
    let without_key = up.then(|| probe(None));
    let keyed = key.as_deref().filter(|_| up).map(|k| probe(Some(k)));
    checks.push(key_check(
        &ctx,
        up,
        key_var,
        key.is_some(),
        &without_key,
        &keyed,
    ));
    let (listed, slugs) = models_check(&models_url, keyed.as_ref().or(without_key.as_ref()));
    if listed.status == Status::Pass {
        for r in keyed.iter().chain(without_key.iter()).flatten() {
            dates.extend(r.date.clone());
        }
    }
    checks.push(listed);
    checks.push(model_check(&ctx, eff.model.as_deref(), &slugs));
    checks.push(websocket_check(&ctx, provider, up, key.as_deref()));
    checks.push(sessions_check(&home, &eff));
    if args.live {
        checks.push(if up {
            let model = eff
                .model
                .clone()
                .or_else(|| slugs.first().cloned())
                .unwrap_or_else(|| FALLBACK_MODEL.to_string());
            live_turn(&ctx.gateway, &model, key.as_deref(), &mut dates)
        } else {
            skip("live turn", "no gateway to ask")
        });
    }
    checks.push(clock_check(up, &dates, args.live));
    report(&checks)
}

/// What every check may need.
struct Ctx {
    gateway: String,
    /// The setup command that fixes config.toml for this gateway (and profile).
    setup_cmd: String,
    agent: ureq::Agent,
}

type Loaded = Result<Option<(String, toml_edit::DocumentMut)>, String>;

/// config.toml exists, parses, and selects a provider that has a block.
fn config_check(ctx: &Ctx, home: &std::path::Path, loaded: &Loaded, eff: &Effective) -> Check {
    let path = config::config_path(home);
    let fix = ctx.setup_cmd.clone();
    match (loaded, &eff.model_provider, &eff.provider) {
        (Err(e), _, _) => fail(
            "config",
            e.clone(),
            "fix the file, or move it away and run setup",
        ),
        (Ok(None), _, _) => fail("config", format!("{} does not exist", path.display()), fix),
        _ if eff.missing_profile => fail(
            "config",
            format!(
                "profile {:?} has no [profiles.{0}] table in {}",
                eff.profile.as_deref().unwrap_or_default(),
                path.display()
            ),
            fix,
        ),
        (_, None, _) => fail(
            "config",
            format!(
                "{} sets no model_provider: Codex talks to ChatGPT directly",
                path.display()
            ),
            fix,
        ),
        (_, Some(id), None) if id == BUILTIN_PROVIDER => fail(
            "config",
            format!("model_provider = \"{id}\": Codex talks to ChatGPT directly"),
            fix,
        ),
        (_, Some(id), None) => fail(
            "config",
            format!("model_provider = {id:?}, but there is no [model_providers.{id}] block"),
            fix,
        ),
        (_, Some(id), Some(_)) => pass(
            "config",
            format!("{} selects provider {id}", path.display()),
        ),
    }
}

fn block(p: &Provider) -> String {
    format!("[model_providers.{}]", p.id)
}

/// The provider block's name, wire_api and base_url.
fn provider_checks(ctx: &Ctx, provider: Option<&Provider>) -> Vec<Check> {
    let Some(p) = provider else {
        return ["provider name", "wire_api", "base_url"]
            .into_iter()
            .map(|name| skip(name, "no provider block to check"))
            .collect();
    };
    let name = match p.name.as_deref() {
        Some("OpenAI") => pass("provider name", "name = \"OpenAI\""),
        other => fail(
            "provider name",
            format!(
                "name is {}; the gateway speaks for OpenAI's backend",
                other.map_or("not set".to_string(), |n| format!("{n:?}"))
            ),
            format!("set name = \"OpenAI\" in {}", block(p)),
        ),
    };
    let wire = match p.wire_api.as_deref() {
        Some("responses") => pass("wire_api", "wire_api = \"responses\""),
        None => pass("wire_api", "not set (Codex defaults to \"responses\")"),
        Some(other) => fail(
            "wire_api",
            format!("wire_api = {other:?}: the gateway serves only the Responses API"),
            format!("set wire_api = \"responses\" in {}", block(p)),
        ),
    };
    let want = format!("{}{CODEX_PATH}", ctx.gateway);
    let base = match p.base_url.as_deref() {
        Some(u) if url_key(u).is_some() && url_key(u) == url_key(&want) => {
            pass("base_url", format!("base_url = {u:?}"))
        }
        other => fail(
            "base_url",
            format!(
                "base_url is {}, not the gateway's {want}",
                other.map_or("not set".to_string(), |u| format!("{u:?}"))
            ),
            format!("set base_url = \"{want}\" in {}", block(p)),
        ),
    };
    vec![name, wire, base]
}

/// `GET /health`: the gateway is there and is codex-lb.
fn gateway_check(ctx: &Ctx, dates: &mut Vec<String>) -> Check {
    let gateway = &ctx.gateway;
    match send(ctx.agent.get(&format!("{gateway}/health")), None) {
        Ok(r) if r.status == 200 => {
            let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            dates.extend(r.date);
            pass(
                "gateway",
                format!(
                    "{gateway}/health answered ({} active account(s) of {})",
                    v["accounts"]["active"].as_u64().unwrap_or(0),
                    v["accounts"]["total"].as_u64().unwrap_or(0)
                ),
            )
        }
        Ok(r) => fail(
            "gateway",
            format!(
                "{gateway}/health answered HTTP {}: is this codex-lb?",
                r.status
            ),
            "pass the gateway's address with --gateway URL",
        ),
        Err(e) => fail(
            "gateway",
            format!("cannot reach {gateway}: {e}"),
            "start it with `codex-lb serve` (or pass --gateway URL)",
        ),
    }
}

/// The key named by the provider's env_key is set and accepted, or no key is needed.
fn key_check(
    ctx: &Ctx,
    up: bool,
    key_var: Option<&str>,
    key_set: bool,
    without_key: &Option<Result<Reply, String>>,
    keyed: &Option<Result<Reply, String>>,
) -> Check {
    let key_required = matches!(without_key, Some(Ok(r)) if r.status == 401);
    match (key_var, keyed) {
        (Some(var), _) if !key_set => fail(
            "api key",
            format!("the provider reads its key from {var}, which is not set here"),
            format!("export {var}=sk-clb-… (create a key with `codex-lb keys create --name you`)"),
        ),
        _ if !up => skip("api key", "no gateway to ask"),
        (Some(var), Some(Ok(r))) if r.status == 401 => fail(
            "api key",
            format!(
                "the gateway refused the key in {var}: {}",
                r.error_message()
            ),
            format!(
                "export {var} with a live key (`codex-lb keys list`; `codex-lb keys create` \
                 makes a new one)"
            ),
        ),
        (Some(var), Some(Ok(_))) => pass(
            "api key",
            format!(
                "the key in {var} is accepted (key auth {})",
                if key_required { "on" } else { "off" }
            ),
        ),
        (Some(_), Some(Err(e))) => fail(
            "api key",
            format!("the request failed: {e}"),
            "check the gateway's log",
        ),
        (_, _) if key_required => fail(
            "api key",
            "the gateway requires an API key, and the provider has no env_key",
            format!(
                "{} --key-env {DEFAULT_KEY_ENV}, then export {DEFAULT_KEY_ENV}=sk-clb-…",
                ctx.setup_cmd
            ),
        ),
        (_, _) => pass("api key", "key auth is off: no key needed"),
    }
}

/// `GET /backend-api/codex/models` lists models; returns the check and the slugs.
fn models_check(url: &str, reply: Option<&Result<Reply, String>>) -> (Check, Vec<String>) {
    let accounts_fix = "check the gateway's accounts (`codex-lb accounts list`)";
    let r = match reply {
        None => return (skip("models", "no gateway to ask"), Vec::new()),
        Some(Err(e)) => {
            let c = fail(
                "models",
                format!("GET {url} failed: {e}"),
                "check the gateway's log",
            );
            return (c, Vec::new());
        }
        Some(Ok(r)) => r,
    };
    if r.status == 401 {
        let c = fail(
            "models",
            format!("GET {url} needs a valid key: {}", r.error_message()),
            "see the api key check",
        );
        return (c, Vec::new());
    }
    if r.status != 200 {
        let c = fail(
            "models",
            format!(
                "GET {url} answered HTTP {}: {}",
                r.status,
                r.error_message()
            ),
            accounts_fix,
        );
        return (c, Vec::new());
    }
    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    let slugs: Vec<String> = v["models"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["slug"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let c = if slugs.is_empty() {
        fail(
            "models",
            "the gateway's catalog lists no models",
            accounts_fix,
        )
    } else {
        pass(
            "models",
            format!("{} listed: {}", slugs.len(), slugs.join(", ")),
        )
    };
    (c, slugs)
}

/// The configured model is in the gateway's catalog.
fn model_check(ctx: &Ctx, model: Option<&str>, slugs: &[String]) -> Check {
    let Some(first) = slugs.first() else {
        return skip("model", "no catalog to look in");
    };
    match model {
        None => skip(
            "model",
            "config.toml names no model: Codex uses its built-in default",
        ),
        Some(m) if slugs.iter().any(|s| s == m) => pass("model", format!("{m} is in the catalog")),
        Some(m) => fail(
            "model",
            format!("model = {m:?} is not in the gateway's catalog"),
            format!(
                "set model to one of {} (`{} --model {first}`)",
                slugs.join(", "),
                ctx.setup_cmd
            ),
        ),
    }
}

/// With `supports_websockets = true`, Codex first tries a WebSocket upgrade on the responses
/// path; a gateway that refuses it costs every session several retries before HTTP.
fn websocket_check(ctx: &Ctx, provider: Option<&Provider>, up: bool, key: Option<&str>) -> Check {
    let Some(p) = provider else {
        return skip("websocket", "no provider block to check");
    };
    if !p.supports_websockets {
        return pass("websocket", "not requested: Codex streams over HTTP");
    }
    let fix = format!(
        "update the gateway to one that serves WebSocket, or remove supports_websockets from {}",
        block(p)
    );
    if !up {
        return fail(
            "websocket",
            "supports_websockets = true, and the gateway cannot be reached to try an upgrade",
            fix,
        );
    }
    let url = format!("{}{CODEX_PATH}/responses", ctx.gateway);
    let req = with_key(ctx.agent.get(&url), key)
        .set("connection", "Upgrade")
        .set("upgrade", "websocket")
        .set("sec-websocket-version", "13")
        .set("sec-websocket-key", &websocket_nonce());
    match send(req, None) {
        Ok(r) if r.status == 101 => pass("websocket", "the gateway accepted a WebSocket upgrade"),
        Ok(r) => fail(
            "websocket",
            format!(
                "supports_websockets = true, but the gateway answered HTTP {} to a WebSocket \
                 upgrade, so Codex retries on every session before falling back to HTTP",
                r.status
            ),
            fix,
        ),
        Err(e) => fail(
            "websocket",
            format!("the WebSocket upgrade failed: {e}"),
            fix,
        ),
    }
}

/// Saved sessions tagged with another provider are hidden from `codex resume`.
fn sessions_check(home: &std::path::Path, eff: &Effective) -> Check {
    let current = eff.model_provider.as_deref().unwrap_or(PROVIDER_ID);
    let tags = retag::count_tags(home);
    let total: usize = tags.values().sum();
    let others: Vec<(&String, &usize)> = tags.iter().filter(|(p, _)| *p != current).collect();
    if others.is_empty() {
        return pass(
            "sessions",
            if total == 0 {
                "no saved sessions".to_string()
            } else {
                format!("all {total} saved session(s) are tagged {current}")
            },
        );
    }
    let list: Vec<String> = others
        .iter()
        .map(|(p, n)| format!("{n} tagged {p}"))
        .collect();
    let cmds: Vec<String> = others
        .iter()
        .map(|(p, _)| format!("codex-lb codex retag-sessions --from {p} --to {current}"))
        .collect();
    fail(
        "sessions",
        format!(
            "{}: `codex resume` lists only sessions of the current provider ({current})",
            list.join(", ")
        ),
        format!(
            "{} (--dry-run first to see what changes; --undo puts it back)",
            cmds.join("; ")
        ),
    )
}

/// This machine's clock against the first `Date` header seen.
fn clock_check(up: bool, dates: &[String], live: bool) -> Check {
    if !up {
        return skip("clock", "no gateway to ask");
    }
    let Some(d) = dates.first() else {
        let hint = if live {
            ""
        } else {
            " (--live compares with the upstream's)"
        };
        return skip(
            "clock",
            format!("the gateway's replies carried no Date header{hint}"),
        );
    };
    let Ok(theirs) = httpdate::parse_http_date(d) else {
        return skip("clock", format!("cannot read the Date header {d:?}"));
    };
    let now = SystemTime::now();
    let skew = now
        .duration_since(theirs)
        .or_else(|_| theirs.duration_since(now))
        .unwrap_or_default();
    if skew > MAX_CLOCK_SKEW {
        fail(
            "clock",
            format!(
                "this machine's clock and the gateway's Date ({d}) differ by {} s",
                skew.as_secs()
            ),
            "sync the clocks of both machines (NTP, e.g. `timedatectl set-ntp true`): tokens \
             and usage windows depend on the time",
        )
    } else {
        pass(
            "clock",
            format!("within {} s of the gateway's Date", skew.as_secs()),
        )
    }
}

/// A `Sec-WebSocket-Key`: 16 bytes, base64 (RFC 6455 §4.1); only has to differ per request.
fn websocket_nonce() -> String {
    use base64::Engine;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    base64::engine::general_purpose::STANDARD.encode(nanos.to_le_bytes())
}

fn live_turn(gateway: &str, model: &str, key: Option<&str>, dates: &mut Vec<String>) -> Check {
    let body = serde_json::json!({
        "model": model,
        "instructions": "Reply with the single word OK.",
        "input": [{"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": "Say OK."}]}],
        "tools": [], "tool_choice": "auto", "parallel_tool_calls": false,
        "store": false, "stream": true, "include": [],
        "prompt_cache_key": format!("codex-lb-doctor-{}", std::process::id()),
    })
    .to_string();
    let url = format!("{gateway}{CODEX_PATH}/responses");
    let req =
        with_key(ureq::post(&url).timeout(LIVE_TIMEOUT), key).set("accept", "text/event-stream");
    match send(req, Some(&body)) {
        Err(e) => fail(
            "live turn",
            format!("POST {url} failed: {e}"),
            "check the gateway's log",
        ),
        Ok(r) => {
            dates.extend(r.date.clone());
            if r.status != 200 {
                return fail(
                    "live turn",
                    format!(
                        "POST {url} answered HTTP {}: {}",
                        r.status,
                        r.error_message()
                    ),
                    "the message says why; `codex-lb accounts list` shows the accounts' state",
                );
            }
            let events: Vec<Value> = r
                .body
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str(d.trim()).ok())
                .collect();
            let last = events.iter().rev().find(|e| {
                matches!(
                    e["type"].as_str(),
                    Some("response.completed" | "response.failed" | "response.incomplete")
                )
            });
            match last {
                Some(e) if e["type"] == "response.completed" => pass(
                    "live turn",
                    format!(
                        "{model} answered ({} tokens)",
                        e["response"]["usage"]["total_tokens"].as_u64().unwrap_or(0)
                    ),
                ),
                Some(e) => fail(
                    "live turn",
                    format!(
                        "the turn ended with {}: {}",
                        e["type"].as_str().unwrap_or("?"),
                        e["response"]["error"]["message"]
                            .as_str()
                            .unwrap_or("no message")
                    ),
                    "the message says why; `codex-lb accounts list` shows the accounts' state",
                ),
                None => fail(
                    "live turn",
                    "the stream ended without response.completed",
                    "check the gateway's log for this request",
                ),
            }
        }
    }
}

/// Prints the checks; fails when any check failed.
fn report(checks: &[Check]) -> Result<(), String> {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        let tag = match c.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        println!("{tag}  {:<width$}  {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            println!("      {:<width$}  fix: {fix}", "");
        }
    }
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name)
        .collect();
    let ran = checks.iter().filter(|c| c.status != Status::Skip).count();
    println!();
    if failed.is_empty() {
        println!("all {ran} checks that ran are fine");
        Ok(())
    } else {
        println!(
            "{} of {ran} checks failed: {}",
            failed.len(),
            failed.join(", ")
        );
        Err(format!("{} check(s) failed", failed.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_compare_equal() {
        assert_eq!(
            url_key("http://localhost:2455/backend-api/codex/"),
            url_key("http://127.0.0.1:2455/backend-api/codex")
        );
        assert_ne!(
            url_key("http://127.0.0.1:2456/backend-api/codex"),
            url_key("http://127.0.0.1:2455/backend-api/codex")
        );
        assert_ne!(
            url_key("http://127.0.0.1:2455/v1"),
            url_key("http://127.0.0.1:2455/backend-api/codex")
        );
    }
}
