//! The admin API on the gateway's port: `/health`, accounts and usage under `/api/...`.
//!
//! Handlers run on a worker but never touch sled: account changes go to the control thread and
//! usage questions to the ledger thread, each over a bounded channel with a reply channel that
//! the worker polls (it must not block). Who may call what is `auth`'s to decide: every route
//! states what it needs (`Need::Read` for figures, `Need::Write` for changes and credentials).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use serde_json::json;

use crate::accounts::{now_unix, AccountStatus};
use crate::control::{AccountInfo, AccountPatch, ControlMsg, SettingsPatch};
use crate::http::error_body::ApiError;
use crate::http::request::RequestHead;
use crate::http::response::full_response;
use crate::ledger::LedgerQuery;
use crate::metrics;
use crate::proxy::client::ClientConn;
use crate::proxy::{reply_error, send};
use crate::worker::Worker;
use auth::{Caller, Need, Role};
use auth_api::AuthRoute;
use keys_api::KeysRoute;
use login_api::LoginRoute;
use usage_api::UsageRoute;

pub mod auth;
pub mod auth_api;
pub mod keys_api;
pub mod live;
pub mod login_api;
pub mod prometheus;
pub mod ui;
pub mod usage_api;

/// Largest auth.json accepted by the import endpoint.
const MAX_IMPORT_BYTES: usize = 256 * 1024;
/// How long an admin call waits for the control or ledger thread.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
const REPLY_POLL: Duration = Duration::from_millis(2);
/// Said with every export: a login refreshed by two clients ends up invalid for one of them.
pub const EXPORT_WARNING: &str = "This auth.json shares its login with codex-lb. Whichever of \
the two refreshes the tokens first invalidates the other's refresh token; use it only to move \
the account, then remove it from one side.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRoute {
    Auth(AuthRoute),
    /// `GET /api/live`: server-sent events for the overview.
    Live,
    Login(LoginRoute),
    Keys(KeysRoute),
    AccountsExport,
    AccountsList,
    AccountsImport,
    AccountsRemove,
    AccountsPause,
    AccountsResume,
    AccountsPatch,
    SettingsGet,
    SettingsPut,
    Usage(UsageRoute),
    /// `GET /api/audit`: the admin-API change log (admins only).
    Audit,
}

impl AdminRoute {
    /// `None`: not an admin path. `Some(Err)`: an admin path with the wrong method.
    pub fn parse(method: &str, path: &str) -> Option<Result<AdminRoute, ()>> {
        if let Some(r) = AuthRoute::parse(method, path) {
            return Some(r.map(AdminRoute::Auth));
        }
        if path == "/api/live" {
            return Some(if method == "GET" {
                Ok(AdminRoute::Live)
            } else {
                Err(())
            });
        }
        if let Some(r) = LoginRoute::parse(method, path) {
            return Some(r.map(AdminRoute::Login));
        }
        if let Some(r) = KeysRoute::parse(method, path) {
            return Some(r.map(AdminRoute::Keys));
        }
        if let Some(r) = UsageRoute::parse(method, path) {
            return Some(r.map(AdminRoute::Usage));
        }
        let action = account_path(path).map(|(_, action)| action);
        let r = match (method, path, action) {
            ("GET", "/api/accounts", _) => AdminRoute::AccountsList,
            ("POST", "/api/accounts/import", _) => AdminRoute::AccountsImport,
            ("GET", "/api/settings", _) => AdminRoute::SettingsGet,
            ("PUT", "/api/settings", _) => AdminRoute::SettingsPut,
            ("GET", "/api/audit", _) => AdminRoute::Audit,
            ("DELETE", _, Some(None)) => AdminRoute::AccountsRemove,
            ("PATCH", _, Some(None)) => AdminRoute::AccountsPatch,
            ("POST", _, Some(Some("pause"))) => AdminRoute::AccountsPause,
            ("POST", _, Some(Some("resume"))) => AdminRoute::AccountsResume,
            ("GET", _, Some(Some("export"))) => AdminRoute::AccountsExport,
            (_, "/api/accounts" | "/api/accounts/import" | "/api/settings" | "/api/audit", _)
            | (_, _, Some(None | Some("pause" | "resume" | "export"))) => return Some(Err(())),
            _ => return None,
        };
        Some(Ok(r))
    }
}

impl AdminRoute {
    /// What a caller needs for this route; `None` for the auth routes, which check for themselves.
    fn need(self, method: &str) -> Option<Need> {
        match self {
            AdminRoute::Auth(r) => r.need(),
            // Credentials: whoever holds them can spend the account (or the key).
            AdminRoute::AccountsExport | AdminRoute::Keys(KeysRoute::Regenerate) => {
                Some(Need::Write)
            }
            // Who signed in from where is for admins.
            AdminRoute::Audit => Some(Need::Write),
            _ if method == "GET" => Some(Need::Read),
            _ => Some(Need::Write),
        }
    }
}

/// The dashboard's own network allow-list (`--dashboard-allow-cidr`), beside the port's.
pub fn dashboard_reachable(w: &Worker, client: crate::access::Origin) -> Result<(), ApiError> {
    if crate::access::origin_allowed(&w.shared.settings.dashboard_allow_cidrs, client) {
        return Ok(());
    }
    Err(ApiError::new(
        403,
        "access_error",
        "dashboard_ip_forbidden",
        "this address may not use the dashboard (see --dashboard-allow-cidr)",
    ))
}

/// `/api/accounts/{id}` → (id, None); `/api/accounts/{id}/{action}` → (id, Some(action)).
fn account_path(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix("/api/accounts/")?;
    let (id, action) = match rest.split_once('/') {
        Some((id, action)) => (id, Some(action)),
        None => (rest, None),
    };
    (!id.is_empty()
        && id != "import"
        && id != "login"
        && action.is_none_or(|a| !a.is_empty() && !a.contains('/')))
    .then_some((id, action))
}

/// Sends a command to the control thread and waits (without blocking) for its answer.
async fn ask<T>(w: &Worker, make: impl FnOnce(Sender<T>) -> ControlMsg) -> Option<T> {
    let (tx, rx) = bounded(1);
    w.shared.control_tx.try_send(make(tx)).ok()?;
    await_reply(rx).await
}

/// Waits for a reply from an off-core thread without blocking the worker.
pub(crate) async fn await_reply<T>(rx: Receiver<T>) -> Option<T> {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if Instant::now() >= deadline => return None,
            Err(TryRecvError::Empty) => monoio::time::sleep(REPLY_POLL).await,
        }
    }
}

async fn json_reply(
    w: &Worker,
    client: &mut ClientConn,
    status: u16,
    body: serde_json::Value,
    keep_alive: bool,
) -> bool {
    let body = serde_json::to_vec(&body).unwrap_or_default();
    // A clock to compare with (`codex-lb doctor`); admin replies are off the hot path.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let bytes = full_response(
        status,
        "application/json",
        &[("cache-control", b"no-store"), ("date", date.as_bytes())],
        &body,
        keep_alive,
    );
    send(w, client, Bytes::from(bytes), keep_alive).await
}

pub(crate) fn busy() -> ApiError {
    ApiError::new(
        503,
        "server_error",
        "control_unavailable",
        "the gateway's control thread did not answer in time",
    )
}

/// Which health answer: the full report, or an orchestrator's probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Full,
    /// The process answers (liveness, and startup: it only listens once started).
    Live,
    /// It can serve a turn now: not draining, every worker up, an account that can take one.
    Ready,
}

pub async fn health(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    probe: Probe,
    keep_alive: bool,
) -> bool {
    let shared = &w.shared;
    let snap = shared.accounts.load();
    let now = now_unix();
    match probe {
        Probe::Full => {}
        Probe::Live => {
            return json_reply(w, client, 200, json!({"status": "ok"}), keep_alive).await
        }
        Probe::Ready => {
            let workers_up = shared
                .metrics
                .iter()
                .filter(|c| c.driver.get().is_some())
                .count();
            let can_serve = snap
                .accounts
                .iter()
                .filter(|a| {
                    a.status == AccountStatus::Active
                        && a.blocked_at(now).is_none()
                        && !a.over_cap()
                })
                .count();
            let mut not_ready = Vec::new();
            if shared.shutdown.is_requested() {
                not_ready.push("draining".to_string());
            }
            if workers_up < shared.settings.workers {
                not_ready.push(format!(
                    "{workers_up} of {} workers up",
                    shared.settings.workers
                ));
            }
            if can_serve == 0 {
                not_ready.push(
                    "no account can serve (none active, unblocked and under its cap)".to_string(),
                );
            }
            let (status, body) = if not_ready.is_empty() {
                (
                    200,
                    json!({"status": "ready", "accounts_can_serve": can_serve}),
                )
            } else {
                (503, json!({"status": "not_ready", "reasons": not_ready}))
            };
            return json_reply(w, client, status, body, keep_alive).await;
        }
    }
    let active = snap
        .accounts
        .iter()
        .filter(|a| a.status == AccountStatus::Active)
        .count();
    let blocked = snap
        .accounts
        .iter()
        .filter(|a| a.blocked_at(now).is_some())
        .count();
    let m = metrics::sum(&shared.metrics);
    let drivers: Vec<&str> = shared
        .metrics
        .iter()
        .filter_map(|c| c.driver.get().copied())
        .collect();
    let body = json!({
        "status": if shared.shutdown.is_requested() { "draining" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": shared.started.elapsed().as_secs(),
        "workers": shared.settings.workers,
        "drivers": drivers,
        "accounts": { "total": snap.accounts.len(), "active": active, "blocked": blocked },
        "ledger": { "queued": shared.ledger_tx.len(), "dropped_events": m.ledger_dropped },
        "panics": m.panics,
        "metrics": m,
    });
    json_reply(w, client, 200, body, keep_alive).await
}

pub async fn handle(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    head: RequestHead,
    route: AdminRoute,
) -> bool {
    let keep_alive = head.keep_alive && !w.shared.shutdown.is_requested();
    if let Err(err) = dashboard_reachable(w, client.origin) {
        return reply_error(w, client, &err, false).await;
    }
    let caller = w.shared.admin_auth.identify(&head, client.peer);
    if let Some(need) = route.need(head.method()) {
        if let Err(err) = w.shared.admin_auth.check(&caller, &head, need) {
            audit(w, &caller, client, &head, err.status, err.code.clone());
            // The body is not read: the connection cannot be reused when there is one.
            let reuse = keep_alive && head.framing == crate::http::request::BodyFraming::None;
            return reply_error(w, client, &err, reuse).await;
        }
    }
    let body = match client
        .read_body(
            &head,
            MAX_IMPORT_BYTES,
            w.shared.settings.client_body_timeout,
            w.shared.settings.client_body_deadline,
        )
        .await
    {
        Ok(b) => b,
        Err(e) => {
            let Some(err) = crate::proxy::body_error(w, &e) else {
                return false;
            };
            return reply_error(w, client, &err, false).await;
        }
    };
    let id = account_path(head.path())
        .map(|(id, _)| id.to_string())
        .unwrap_or_default();
    let invalid = |code: &str, msg: String| ApiError::invalid_request(code, msg);
    // Each arm produces the answer: a status and body, or an error envelope.
    let answer: Result<(u16, serde_json::Value), ApiError> = match route {
        AdminRoute::Auth(r) => {
            let (open, status, code) =
                auth_api::handle(w, client, &head, r, &caller, &body, keep_alive).await;
            audit(w, &caller, client, &head, status, code);
            return open;
        }
        AdminRoute::Audit => audit_list(w, &head).await,
        AdminRoute::Live => return live::stream(w, client).await,
        AdminRoute::Login(r) => login_api::answer(w, r, head.path(), &body).await,
        AdminRoute::Keys(r) => keys_api::answer(w, r, head.path(), &body).await,
        AdminRoute::AccountsExport => control_answer(
            ask(w, |reply| ControlMsg::Export {
                id: id.clone(),
                reply,
            })
            .await,
            &id,
            // Whoever holds these tokens can spend the account; the one who asked is warned.
            |auth| json!({ "auth_json": auth, "warning": EXPORT_WARNING }),
        ),
        AdminRoute::AccountsList => ask(w, |reply| ControlMsg::List { reply })
            .await
            .map(|list| (200, json!({ "accounts": list })))
            .ok_or_else(busy),
        AdminRoute::AccountsImport => match ask(w, |reply| ControlMsg::Import {
            body: body.to_vec(),
            reply,
        })
        .await
        {
            Some(Ok((info, created))) => Ok((
                if created { 201 } else { 200 },
                json!({ "account": info, "created": created }),
            )),
            Some(Err(msg)) => Err(invalid("invalid_auth_json", msg)),
            None => Err(busy()),
        },
        AdminRoute::AccountsRemove => match ask(w, |reply| ControlMsg::Remove {
            id: id.clone(),
            reply,
        })
        .await
        {
            Some(Ok(true)) => Ok((200, json!({ "removed": id }))),
            Some(Ok(false)) => Err(not_found(&id)),
            Some(Err(msg)) => Err(ApiError::new(500, "server_error", "store_error", msg)),
            None => Err(busy()),
        },
        AdminRoute::AccountsPause | AdminRoute::AccountsResume => {
            let paused = route == AdminRoute::AccountsPause;
            account_answer(
                ask(w, |reply| ControlMsg::SetStatus {
                    id: id.clone(),
                    paused,
                    reply,
                })
                .await,
                &id,
            )
        }
        AdminRoute::AccountsPatch => match serde_json::from_slice::<AccountPatch>(&body) {
            Ok(patch) => match patch.validate() {
                Ok(()) => account_answer(
                    ask(w, |reply| ControlMsg::Patch {
                        id: id.clone(),
                        patch,
                        reply,
                    })
                    .await,
                    &id,
                ),
                Err(msg) => Err(invalid("invalid_value", msg)),
            },
            Err(e) => Err(invalid(
                "invalid_json",
                format!("expected {{priority, cap_primary_percent, cap_secondary_percent}}: {e}"),
            )),
        },
        AdminRoute::SettingsGet => ask(w, |reply| ControlMsg::GetSettings { reply })
            .await
            .map(|s| {
                let mut v = json!(s);
                v["server"] = server_facts(w);
                (200, v)
            })
            .ok_or_else(busy),
        AdminRoute::SettingsPut => match serde_json::from_slice::<SettingsPatch>(&body) {
            Ok(patch) => ask(w, |reply| ControlMsg::SetSettings { patch, reply })
                .await
                .map(|s| {
                    let mut v = json!(s);
                    v["server"] = server_facts(w);
                    (200, v)
                })
                .ok_or_else(busy),
            Err(e) => Err(invalid(
                "invalid_json",
                format!(
                    "expected {{\"strategy\", \"api_key_auth\", \"hide_quota_headers\"}} (any of them): {e}"
                ),
            )),
        },
        AdminRoute::Usage(r) => return usage_api::handle(w, client, &head, r, keep_alive).await,
    };
    match answer {
        Ok((status, body)) => {
            audit(w, &caller, client, &head, status, None);
            json_reply(w, client, status, body, keep_alive).await
        }
        Err(err) => {
            audit(w, &caller, client, &head, err.status, err.code.clone());
            reply_error(w, client, &err, keep_alive).await
        }
    }
}

/// Records an admin-API change (any method but GET) in the audit log: who, from where, what, and
/// how it ended. The body is never recorded.
fn audit(
    w: &Worker,
    caller: &Caller,
    client: &ClientConn,
    head: &RequestHead,
    status: u16,
    error_code: Option<String>,
) {
    // Changes, and the one read that hands out credentials (an account export).
    if head.method() == "GET" && !head.path().ends_with("/export") {
        return;
    }
    let actor = match caller {
        Caller::Token => "cli".to_string(),
        Caller::Open => "local".to_string(),
        Caller::Anonymous { .. } => "anonymous".to_string(),
        Caller::Session { hash, session } => format!(
            "{} session {}",
            match session.role {
                Role::Admin => "admin",
                Role::Viewer => "viewer",
            },
            hex::encode(&hash[..4])
        ),
    };
    let entry = crate::ledger::audit::AuditEntry {
        ts_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        actor,
        client_ip: client.origin.ip.to_string(),
        method: head.method().to_string(),
        path: head.path().to_string(),
        status,
        error_code,
    };
    if w.shared
        .ledger_queries
        .try_send(LedgerQuery::Audit(Box::new(entry)))
        .is_err()
    {
        tracing::warn!("ledger busy; an audit entry was dropped");
    }
}

/// `GET /api/audit?limit=`: the newest admin-API changes, newest first.
async fn audit_list(w: &Worker, head: &RequestHead) -> Result<(u16, serde_json::Value), ApiError> {
    let limit = head
        .query_param("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (tx, rx) = bounded(1);
    w.shared
        .ledger_queries
        .try_send(LedgerQuery::AuditList { limit, reply: tx })
        .map_err(|_| busy())?;
    match await_reply(rx).await {
        Some(Ok(entries)) => Ok((200, json!({ "entries": entries }))),
        Some(Err(e)) => Err(ApiError::new(500, "server_error", "store_error", e)),
        None => Err(busy()),
    }
}

/// The settings fixed at start (flags, environment), shown read-only beside the run-time ones.
fn server_facts(w: &Worker) -> serde_json::Value {
    let s = &w.shared.settings;
    let days = |d: Option<Duration>| d.map(|d| d.as_secs() / 86_400);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "listen": s.listen.to_string(),
        "workers": s.workers,
        "upstream": format!(
            "{}://{}{}",
            if s.upstream.tls { "https" } else { "http" },
            s.upstream.authority,
            s.upstream.base_path
        ),
        "log_retention_days": days(s.log_retention),
        "rollup_retention_days": days(s.rollup_retention),
        "max_body_bytes": s.max_body_bytes,
        "max_connections_per_worker": s.max_connections_per_worker,
        "max_connections_per_client": s.max_connections_per_client,
        "account_max_streams": s.account_max_streams,
        "failover_attempts": s.failover_attempts,
        "dashboard_session_ttl_secs": s.dashboard_session_ttl.as_secs(),
        "allow_cidrs": s.allow_cidrs.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "dashboard_allow_cidrs": s.dashboard_allow_cidrs.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "trusted_proxies": s.trusted_proxies.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "trusted_proxy_header": clap::ValueEnum::to_possible_value(&s.trusted_proxy_header)
            .map(|v| v.get_name().to_string()),
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        404,
        "invalid_request_error",
        "account_not_found",
        format!("no account {id}"),
    )
}

fn account_answer(
    r: Option<Result<AccountInfo, String>>,
    id: &str,
) -> Result<(u16, serde_json::Value), ApiError> {
    control_answer(r, id, |info| json!({ "account": info }))
}

/// The admin answer for a control-thread reply about account `id`.
fn control_answer<T>(
    r: Option<Result<T, String>>,
    id: &str,
    body: impl FnOnce(T) -> serde_json::Value,
) -> Result<(u16, serde_json::Value), ApiError> {
    match r {
        Some(Ok(v)) => Ok((200, body(v))),
        Some(Err(msg)) if msg.starts_with("no account") => Err(not_found(id)),
        Some(Err(msg)) => Err(ApiError::new(
            409,
            "invalid_request_error",
            "account_state",
            msg,
        )),
        None => Err(busy()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_and_new_secrets_need_write() {
        let need = |method: &str, path: &str| {
            AdminRoute::parse(method, path)
                .and_then(Result::ok)
                .and_then(|r| r.need(method))
        };
        assert_eq!(need("GET", "/api/keys"), Some(Need::Read));
        assert_eq!(
            need("POST", "/api/keys/key_1/regenerate"),
            Some(Need::Write)
        );
        assert_eq!(need("PATCH", "/api/keys/key_1"), Some(Need::Write));
        assert_eq!(need("DELETE", "/api/keys/key_1"), Some(Need::Write));
        assert_eq!(need("GET", "/api/accounts/acc_1/export"), Some(Need::Write));
    }
}
