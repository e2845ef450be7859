//! Usage questions, answered by the ledger thread: `/api/usage/summary` (all-time totals),
//! `/api/requests` (the request log: filters, cursor pages, CSV) and `/api/usage` (hourly or daily
//! rollups per account, key or model, CSV).

use std::collections::HashMap;

use bytes::Bytes;
use crossbeam_channel::bounded;
use serde_json::{json, Value};

use super::{await_reply, busy, json_reply};
use crate::http::error_body::ApiError;
use crate::http::request::RequestHead;
use crate::http::response::full_response;
use crate::ledger::rollups::{Dim, Granularity, UsageRow};
use crate::ledger::search::{self, RequestFilter};
use crate::ledger::{LedgerQuery, UsageEvent};
use crate::proxy::client::ClientConn;
use crate::proxy::{reply_error, send};
use crate::worker::Worker;

const DEFAULT_REQUESTS_LIMIT: usize = 50;
/// Rows one request-log export holds (about 15 MB of CSV); `x-codex-lb-next-cursor` continues.
const CSV_MAX_ROWS: usize = 50_000;
/// Ledger queries one export may make (each scans at most `search::MAX_SCAN` rows), and how long
/// it may take: a filter that matches little must not scan the whole log in one request.
const CSV_MAX_PAGES: usize = 20;
const CSV_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(15);
/// The longest range one rollup report covers.
const MAX_RANGE_SECS: u64 = 90 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageRoute {
    Summary,
    Requests,
    Rollups,
}

impl UsageRoute {
    pub fn parse(method: &str, path: &str) -> Option<Result<UsageRoute, ()>> {
        let r = match path {
            "/api/usage/summary" => UsageRoute::Summary,
            "/api/requests" => UsageRoute::Requests,
            "/api/usage" => UsageRoute::Rollups,
            _ => return None,
        };
        Some(if method == "GET" { Ok(r) } else { Err(()) })
    }
}

/// The query string, percent-decoded.
fn params(head: &RequestHead) -> HashMap<String, String> {
    url::form_urlencoded::parse(head.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// A time parameter: unix seconds or RFC 3339 (`2026-11-26T00:00:00Z`).
fn time_param(p: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(v) = p.get(name).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(n) = v.parse::<u64>() {
        return Ok(Some(n));
    }
    humantime::parse_rfc3339(v)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| Some(d.as_secs()))
        .ok_or_else(|| {
            ApiError::invalid_request(
                "invalid_value",
                format!("{name}: unix seconds or RFC 3339 (2026-11-26T00:00:00Z), not {v:?}"),
            )
            .with_param(name)
        })
}

async fn ask<T>(
    w: &Worker,
    make: impl FnOnce(crossbeam_channel::Sender<T>) -> LedgerQuery,
) -> Option<T> {
    let (tx, rx) = bounded(1);
    w.shared.ledger_queries.try_send(make(tx)).ok()?;
    await_reply(rx).await
}

fn wants_csv(p: &HashMap<String, String>, head: &RequestHead) -> bool {
    p.get("format").is_some_and(|f| f == "csv")
        || head
            .header_str("accept")
            .is_some_and(|a| a.contains("text/csv"))
}

async fn csv_reply(
    w: &Worker,
    client: &mut ClientConn,
    body: Vec<u8>,
    name: &str,
    rest: Option<&str>,
    keep_alive: bool,
) -> bool {
    let disposition = format!("attachment; filename=\"{name}\"");
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("cache-control", b"no-store"),
        ("content-disposition", disposition.as_bytes()),
    ];
    if let Some(c) = rest {
        headers.push(("x-codex-lb-next-cursor", c.as_bytes()));
    }
    let bytes = full_response(200, "text/csv; charset=utf-8", &headers, &body, keep_alive);
    send(w, client, Bytes::from(bytes), keep_alive).await
}

pub async fn handle(
    w: &Worker,
    client: &mut ClientConn,
    head: &RequestHead,
    route: UsageRoute,
    keep_alive: bool,
) -> bool {
    let answer = match route {
        UsageRoute::Summary => summary(w).await,
        UsageRoute::Requests => requests(w, head).await,
        UsageRoute::Rollups => rollups(w, head).await,
    };
    match answer {
        Ok(Answer::Json(v)) => json_reply(w, client, 200, v, keep_alive).await,
        Ok(Answer::Csv(body, name, rest)) => {
            csv_reply(w, client, body, name, rest.as_deref(), keep_alive).await
        }
        Err(e) => reply_error(w, client, &e, keep_alive).await,
    }
}

enum Answer {
    Json(Value),
    /// The CSV, its file name, and where an export stopped when it hit `CSV_MAX_ROWS`.
    Csv(Vec<u8>, &'static str, Option<String>),
}

async fn summary(w: &Worker) -> Result<Answer, ApiError> {
    let summary = ask(w, LedgerQuery::Summary).await.ok_or_else(busy)?;
    // Accounts by email and keys by name, from the snapshots the worker already holds.
    let snap = w.shared.accounts.load();
    let keys = w.shared.keys.load();
    let named = |t: &crate::ledger::Totals, field: &str, name: Option<String>| {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert(field.into(), json!(name));
        }
        v
    };
    let by_account: serde_json::Map<String, Value> = summary
        .by_account
        .iter()
        .map(|(id, t)| {
            let email = snap.find(id).and_then(|a| a.email.clone());
            (id.clone(), named(t, "email", email))
        })
        .collect();
    let by_key: serde_json::Map<String, Value> = summary
        .by_key
        .iter()
        .map(|(id, t)| {
            let name = keys
                .by_hash
                .values()
                .find(|k| &*k.id == id)
                .map(|k| k.name.clone());
            (id.clone(), named(t, "name", name))
        })
        .collect();
    Ok(Answer::Json(json!({
        "totals": summary.totals,
        "by_account": by_account,
        "by_model": summary.by_model,
        "by_key": by_key,
    })))
}

async fn requests(w: &Worker, head: &RequestHead) -> Result<Answer, ApiError> {
    let p = params(head);
    let text = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned();
    let cursor = match text("cursor") {
        Some(c) => Some(search::parse_cursor(&c).ok_or_else(|| {
            ApiError::invalid_request("invalid_value", "cursor: pass back a next_cursor unchanged")
                .with_param("cursor")
        })?),
        None => None,
    };
    let mut filter = RequestFilter {
        since_ms: time_param(&p, "since")?.map(|s| s * 1000),
        until_ms: time_param(&p, "until")?.map(|s| s * 1000),
        key: text("key"),
        account: text("account"),
        model: text("model"),
        status: text("status"),
        effort: text("effort"),
        route: text("route"),
        text: text("q"),
        limit: p
            .get("limit")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_REQUESTS_LIMIT),
        cursor,
    };
    let csv = wants_csv(&p, head);
    if csv {
        filter.limit = search::MAX_LIMIT;
    }
    let mut page = ask(w, |reply| LedgerQuery::Search {
        filter: Box::new(filter.clone()),
        reply,
    })
    .await
    .ok_or_else(busy)?
    .map_err(|e| ApiError::new(500, "server_error", "store_error", e))?;
    if !csv {
        return Ok(Answer::Json(json!(page)));
    }
    // An export is every matching row, page after page, up to a bound; past it the reply says
    // where it stopped (`x-codex-lb-next-cursor`) instead of pretending to be complete.
    let mut rows = std::mem::take(&mut page.requests);
    let mut next = page.next_cursor.take();
    let started = std::time::Instant::now();
    let mut pages = 1;
    while rows.len() < CSV_MAX_ROWS && pages < CSV_MAX_PAGES && started.elapsed() < CSV_MAX_TIME {
        pages += 1;
        let Some(c) = next.as_deref().and_then(search::parse_cursor) else {
            break;
        };
        filter.cursor = Some(c);
        let more = ask(w, |reply| LedgerQuery::Search {
            filter: Box::new(filter.clone()),
            reply,
        })
        .await
        .ok_or_else(busy)?
        .map_err(|e| ApiError::new(500, "server_error", "store_error", e))?;
        rows.extend(more.requests);
        next = more.next_cursor;
    }
    Ok(Answer::Csv(requests_csv(&rows), "requests.csv", next))
}

fn requests_csv(rows: &[UsageEvent]) -> Vec<u8> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let _ = out.write_record([
        "time",
        "request_id",
        "route",
        "transport",
        "key",
        "account",
        "model",
        "effort",
        "service_tier",
        "status",
        "outcome",
        "error_code",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "reasoning_tokens",
        "total_tokens",
        "cost_usd",
        "ttfb_ms",
        "latency_ms",
        "request_bytes",
        "response_bytes",
        "client_ip",
        "user_agent",
        "conversation",
    ]);
    for r in rows {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let time = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.ts_ms),
        )
        .to_string();
        let outcome = serde_json::to_value(r.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = out.write_record([
            time,
            r.request_id.clone(),
            r.route.clone(),
            opt(&r.transport),
            opt(&r.key_id),
            opt(&r.account_id),
            opt(&r.model),
            opt(&r.effort),
            opt(&r.service_tier),
            r.status.to_string(),
            outcome,
            opt(&r.error_code),
            r.input_tokens.to_string(),
            r.cached_tokens.to_string(),
            r.output_tokens.to_string(),
            r.reasoning_tokens.to_string(),
            r.total_tokens.to_string(),
            r.cost_micro_usd
                .map(|c| format!("{:.6}", c as f64 / 1e6))
                .unwrap_or_default(),
            r.ttfb_ms.map(|t| t.to_string()).unwrap_or_default(),
            r.latency_ms.to_string(),
            r.request_bytes.to_string(),
            r.response_bytes.to_string(),
            opt(&r.client_ip),
            opt(&r.user_agent),
            opt(&r.conversation),
        ]);
    }
    out.into_inner().unwrap_or_default()
}

async fn rollups(w: &Worker, head: &RequestHead) -> Result<Answer, ApiError> {
    let p = params(head);
    let granularity = match p.get("granularity").map(String::as_str) {
        None | Some("hour") => Granularity::Hour,
        Some("day") => Granularity::Day,
        Some(other) => {
            return Err(ApiError::invalid_request(
                "invalid_value",
                format!("granularity {other:?}: hour or day"),
            )
            .with_param("granularity"))
        }
    };
    let dim = match p.get("group_by") {
        None => Dim::All,
        Some(g) => Dim::parse(g).ok_or_else(|| {
            ApiError::invalid_request(
                "invalid_value",
                format!("group_by {g:?}: all, account, key or model"),
            )
            .with_param("group_by")
        })?,
    };
    let now = crate::accounts::now_unix();
    let until = time_param(&p, "until")?.unwrap_or(now + 1);
    let default_span = match granularity {
        Granularity::Hour => 86_400,
        Granularity::Day => 30 * 86_400,
    };
    let since = time_param(&p, "since")?.unwrap_or(until.saturating_sub(default_span));
    if since >= until || until - since > MAX_RANGE_SECS {
        return Err(ApiError::invalid_request(
            "invalid_value",
            "since must be before until, at most 90 days apart",
        )
        .with_param("since"));
    }
    let rows = ask(w, |reply| LedgerQuery::Usage {
        granularity,
        dim,
        since,
        until,
        reply,
    })
    .await
    .ok_or_else(busy)?
    .map_err(|e| ApiError::new(500, "server_error", "store_error", e))?;
    if wants_csv(&p, head) {
        return Ok(Answer::Csv(rollups_csv(&rows, dim), "usage.csv", None));
    }
    Ok(Answer::Json(json!({
        "granularity": granularity,
        "group_by": dim,
        "since": since,
        "until": until,
        "rows": rows,
    })))
}

fn rollups_csv(rows: &[UsageRow], dim: Dim) -> Vec<u8> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let _ = out.write_record([
        "bucket_start",
        dim.as_str(),
        "requests",
        "completed",
        "failed",
        "cancelled",
        "errors",
        "input_tokens",
        "cached_tokens",
        "cache_hit_rate",
        "output_tokens",
        "reasoning_tokens",
        "total_tokens",
        "cost_usd",
        "unpriced_requests",
    ]);
    for r in rows {
        let t = &r.totals;
        let start = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(r.bucket_start),
        )
        .to_string();
        let _ = out.write_record([
            start,
            r.group.clone(),
            t.requests.to_string(),
            t.completed.to_string(),
            t.failed.to_string(),
            t.cancelled.to_string(),
            t.errors.to_string(),
            t.input_tokens.to_string(),
            t.cached_tokens.to_string(),
            r.cache_hit_rate
                .map(|c| format!("{c:.4}"))
                .unwrap_or_default(),
            t.output_tokens.to_string(),
            t.reasoning_tokens.to_string(),
            t.total_tokens.to_string(),
            format!("{:.6}", r.cost_usd),
            t.unpriced_requests.to_string(),
        ]);
    }
    out.into_inner().unwrap_or_default()
}
