//! The admin API on the gateway's port: `/health`, accounts and usage under `/api/...`.
//!
//! Handlers run on a worker but never touch sled: account changes go to the control thread and
//! usage questions to the ledger thread, each over a bounded channel with a reply channel that
//! the worker polls (it must not block). Until dashboard passwords land, `/api` answers loopback
//! callers only.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, TryRecvError};
use serde_json::json;

use crate::accounts::{now_unix, AccountStatus};
use crate::control::ControlMsg;
use crate::http::error_body::ApiError;
use crate::http::request::RequestHead;
use crate::http::response::full_response;
use crate::ledger::LedgerQuery;
use crate::metrics;
use crate::proxy::client::ClientConn;
use crate::proxy::{reply_error, send};
use crate::worker::Worker;

/// Largest auth.json accepted by the import endpoint.
const MAX_IMPORT_BYTES: usize = 256 * 1024;
/// How long an admin call waits for the control or ledger thread.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
const REPLY_POLL: Duration = Duration::from_millis(2);
const DEFAULT_REQUESTS_LIMIT: usize = 50;
const MAX_REQUESTS_LIMIT: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRoute {
    AccountsList,
    AccountsImport,
    AccountsRemove,
    UsageSummary,
    Requests,
}

impl AdminRoute {
    /// `None`: not an admin path. `Some(Err)`: an admin path with the wrong method.
    pub fn parse(method: &str, path: &str) -> Option<Result<AdminRoute, ()>> {
        let r = match (method, path) {
            ("GET", "/api/accounts") => AdminRoute::AccountsList,
            ("POST", "/api/accounts/import") => AdminRoute::AccountsImport,
            ("DELETE", p) if account_id_in(p).is_some() => AdminRoute::AccountsRemove,
            ("GET", "/api/usage/summary") => AdminRoute::UsageSummary,
            ("GET", "/api/requests") => AdminRoute::Requests,
            (
                _,
                "/api/accounts" | "/api/accounts/import" | "/api/usage/summary" | "/api/requests",
            ) => return Some(Err(())),
            (_, p) if account_id_in(p).is_some() => return Some(Err(())),
            _ => return None,
        };
        Some(Ok(r))
    }
}

fn account_id_in(path: &str) -> Option<&str> {
    path.strip_prefix("/api/accounts/")
        .filter(|id| !id.is_empty() && !id.contains('/') && *id != "import")
}

/// Waits for a reply from an off-core thread without blocking the worker.
async fn await_reply<T>(rx: Receiver<T>) -> Option<T> {
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
    let bytes = full_response(
        status,
        "application/json",
        &[("cache-control", b"no-store")],
        &body,
        keep_alive,
    );
    send(w, client, Bytes::from(bytes), keep_alive).await
}

fn busy() -> ApiError {
    ApiError::new(
        503,
        "server_error",
        "control_unavailable",
        "the gateway's control thread did not answer in time",
    )
}

pub async fn health(w: &Rc<Worker>, client: &mut ClientConn, keep_alive: bool) -> bool {
    let shared = &w.shared;
    let snap = shared.accounts.load();
    let now = now_unix();
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
    if !client.peer.ip().is_loopback() {
        let err = ApiError::new(
            403,
            "permission_error",
            "admin_loopback_only",
            "the admin API only answers loopback clients",
        );
        return reply_error(w, client, &err, false).await;
    }
    let body = match client
        .read_body(
            &head,
            MAX_IMPORT_BYTES,
            w.shared.settings.client_body_timeout,
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
    let control = &w.shared.control_tx;
    match route {
        AdminRoute::AccountsList => {
            let (tx, rx) = bounded(1);
            if control.try_send(ControlMsg::List { reply: tx }).is_err() {
                return reply_error(w, client, &busy(), keep_alive).await;
            }
            match await_reply(rx).await {
                Some(list) => {
                    json_reply(w, client, 200, json!({ "accounts": list }), keep_alive).await
                }
                None => reply_error(w, client, &busy(), keep_alive).await,
            }
        }
        AdminRoute::AccountsImport => {
            let (tx, rx) = bounded(1);
            if control
                .try_send(ControlMsg::Import {
                    body: body.to_vec(),
                    reply: tx,
                })
                .is_err()
            {
                return reply_error(w, client, &busy(), keep_alive).await;
            }
            match await_reply(rx).await {
                Some(Ok((info, created))) => {
                    let status = if created { 201 } else { 200 };
                    json_reply(
                        w,
                        client,
                        status,
                        json!({ "account": info, "created": created }),
                        keep_alive,
                    )
                    .await
                }
                Some(Err(msg)) => {
                    reply_error(
                        w,
                        client,
                        &ApiError::invalid_request("invalid_auth_json", msg),
                        keep_alive,
                    )
                    .await
                }
                None => reply_error(w, client, &busy(), keep_alive).await,
            }
        }
        AdminRoute::AccountsRemove => {
            let id = account_id_in(head.path()).unwrap_or_default().to_string();
            let (tx, rx) = bounded(1);
            if control
                .try_send(ControlMsg::Remove {
                    id: id.clone(),
                    reply: tx,
                })
                .is_err()
            {
                return reply_error(w, client, &busy(), keep_alive).await;
            }
            match await_reply(rx).await {
                Some(Ok(true)) => {
                    json_reply(w, client, 200, json!({ "removed": id }), keep_alive).await
                }
                Some(Ok(false)) => {
                    let err = ApiError::new(
                        404,
                        "invalid_request_error",
                        "account_not_found",
                        format!("no account {id}"),
                    );
                    reply_error(w, client, &err, keep_alive).await
                }
                Some(Err(msg)) => {
                    reply_error(
                        w,
                        client,
                        &ApiError::new(500, "server_error", "store_error", msg),
                        keep_alive,
                    )
                    .await
                }
                None => reply_error(w, client, &busy(), keep_alive).await,
            }
        }
        AdminRoute::UsageSummary => {
            let (tx, rx) = bounded(1);
            if w.shared
                .ledger_queries
                .try_send(LedgerQuery::Summary(tx))
                .is_err()
            {
                return reply_error(w, client, &busy(), keep_alive).await;
            }
            let Some(summary) = await_reply(rx).await else {
                return reply_error(w, client, &busy(), keep_alive).await;
            };
            // Name accounts by email too, from the snapshot the worker already holds.
            let snap = w.shared.accounts.load();
            let by_account: serde_json::Map<String, serde_json::Value> = summary
                .by_account
                .iter()
                .map(|(id, t)| {
                    let email = snap.find(id).and_then(|a| a.email.clone());
                    let mut v = serde_json::to_value(t).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.insert("email".into(), json!(email));
                    }
                    (id.clone(), v)
                })
                .collect();
            let body = json!({ "totals": summary.totals, "by_account": by_account, "by_model": summary.by_model });
            json_reply(w, client, 200, body, keep_alive).await
        }
        AdminRoute::Requests => {
            let limit = head
                .query_param("limit")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(DEFAULT_REQUESTS_LIMIT)
                .clamp(1, MAX_REQUESTS_LIMIT);
            let (tx, rx) = bounded(1);
            if w.shared
                .ledger_queries
                .try_send(LedgerQuery::Recent { limit, reply: tx })
                .is_err()
            {
                return reply_error(w, client, &busy(), keep_alive).await;
            }
            match await_reply(rx).await {
                Some(rows) => {
                    json_reply(w, client, 200, json!({ "requests": rows }), keep_alive).await
                }
                None => reply_error(w, client, &busy(), keep_alive).await,
            }
        }
    }
}
