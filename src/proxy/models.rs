//! `GET /backend-api/codex/models` and `/backend-api/codex/v1/models`: the upstream's Codex
//! catalog for the client's `client_version`, fetched with a pooled account and cached per worker.
//! When the upstream cannot be asked, a built-in catalog answers, marked as such in a header.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};

use super::client::ClientConn;
use super::responses::account_head;
use super::{respond, Record};
use crate::accounts::{now_unix, AccountStatus, AccountView};
use crate::http::request::RequestHead;
use crate::http::response::full_response;
use crate::keys::KeyView;
use crate::ledger::Outcome;
use crate::upstream::exchange;
use crate::worker::Worker;

const MAX_CATALOG_BYTES: usize = 8 * 1024 * 1024;
/// Distinct client versions cached per worker; clients choose the key, so it is bounded.
const MAX_CACHED_VERSIONS: usize = 16;
/// Distinct plans whose catalogs are fetched for one merged catalog.
const MAX_PLANS_ASKED: usize = 8;

#[derive(Default)]
pub struct ModelsCache {
    entries: HashMap<String, (Bytes, Instant)>,
}

/// Only plain version strings are forwarded into the upstream URL.
fn sanitize_version(v: &str) -> Option<&str> {
    (!v.is_empty()
        && v.len() <= 32
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    .then_some(v)
}

/// Adds the OpenAI list members (`object`, `data`) beside the Codex `models` array, so both kinds
/// of client can read the same reply (PROTOCOL.md §7.4). The OpenAI list leaves out what the
/// Codex picker hides (`visibility: "hide"`) and what is not offered to API callers
/// (`supported_in_api: false`); Codex reads its own array, which keeps them.
fn with_list_shape(mut catalog: Value) -> Value {
    let listed = |m: &&Value| {
        m.get("visibility").and_then(Value::as_str) != Some("hide")
            && m.get("supported_in_api").and_then(Value::as_bool) != Some(false)
    };
    let data: Vec<Value> = catalog
        .get("models")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter(listed)
                .filter_map(|m| m.get("slug").and_then(Value::as_str))
                .map(|slug| json!({"id": slug, "object": "model", "owned_by": "codex-lb"}))
                .collect()
        })
        .unwrap_or_default();
    if let Some(obj) = catalog.as_object_mut() {
        obj.insert("object".into(), json!("list"));
        obj.insert("data".into(), Value::Array(data));
    }
    catalog
}

/// The catalog served when the upstream cannot be reached (no account, network down).
pub fn builtin_catalog() -> Value {
    let model = |slug: &str, name: &str, desc: &str, priority: u32| {
        json!({
            "slug": slug, "display_name": name, "description": desc,
            "default_reasoning_level": "medium",
            "supported_reasoning_levels": [
                {"effort": "low", "description": "Fast responses with lighter reasoning"},
                {"effort": "medium", "description": "Balances speed and reasoning depth"},
                {"effort": "high", "description": "Greater reasoning depth for complex problems"}
            ],
            "shell_type": "shell_command", "visibility": "list", "supported_in_api": true,
            "priority": priority, "context_window": 272000, "input_modalities": ["text", "image"],
            "supports_reasoning_summaries": true, "support_verbosity": false,
            "supports_parallel_tool_calls": true, "truncation_policy": {"mode": "tokens", "limit": 10000}
        })
    };
    with_list_shape(json!({"models": [
        model("gpt-5.5", "gpt-5.5", "Frontier model for coding and agentic work", 1),
        model("gpt-5.3-codex", "gpt-5.3-codex", "Codex-tuned model for software engineering", 2),
        model("gpt-5.1-codex-mini", "gpt-5.1-codex-mini", "Smaller, faster Codex model", 3)
    ]}))
}

pub async fn handle(
    w: &Rc<Worker>,
    client: &mut ClientConn,
    head: RequestHead,
    key: Option<Arc<KeyView>>,
    keep_alive: bool,
    mut rec: Record,
) -> bool {
    let s = &w.shared.settings;
    let version = head
        .query_param("client_version")
        .and_then(sanitize_version)
        .unwrap_or(&s.client_version)
        .to_string();
    let cached = w
        .models
        .borrow()
        .entries
        .get(&version)
        .filter(|(_, at)| at.elapsed() < s.models_cache_ttl)
        .map(|(b, _)| b.clone());
    let (body, source) = match cached {
        Some(b) => (b, "cache"),
        None => match fetch(w, &version, &mut rec).await {
            Some(b) => {
                let mut cache = w.models.borrow_mut();
                if cache.entries.len() >= MAX_CACHED_VERSIONS {
                    cache.entries.clear();
                }
                cache.entries.insert(version, (b.clone(), Instant::now()));
                (b, "upstream")
            }
            None => (
                Bytes::from(serde_json::to_vec(&builtin_catalog()).unwrap_or_default()),
                "builtin",
            ),
        },
    };
    // A key limited to some models sees only those in its picker.
    let body = match key.as_deref().map(|k| &k.policy.allowed_models) {
        Some(allowed) if !allowed.is_empty() => only_models(&body, allowed),
        _ => body,
    };
    rec.status = 200;
    rec.outcome = Outcome::Completed;
    rec.response_bytes = body.len() as u64;
    let bytes = full_response(
        200,
        "application/json",
        &[("x-codex-lb-catalog", source.as_bytes())],
        &body,
        keep_alive,
    );
    respond(w, client, Bytes::from(bytes), keep_alive, rec).await
}

/// One usable account per plan in the pool: the upstream lists for each account only the models
/// its plan offers, so the pool's catalog is the union of one catalog per plan.
fn one_per_plan(w: &Worker) -> Vec<Arc<AccountView>> {
    let snap = w.shared.accounts.load();
    let now = now_unix();
    let mut seen: Vec<Option<String>> = Vec::new();
    let mut out = Vec::new();
    for a in snap.accounts.iter() {
        if a.status != AccountStatus::Active || a.blocked_at(now).is_some() {
            continue;
        }
        let plan = a.plan.as_ref().map(|p| p.to_ascii_lowercase());
        if !seen.contains(&plan) {
            seen.push(plan);
            out.push(Arc::clone(a));
        }
    }
    out
}

async fn fetch(w: &Worker, version: &str, rec: &mut Record) -> Option<Bytes> {
    let accounts = one_per_plan(w);
    let mut merged: Option<Value> = None;
    for account in accounts.iter().take(MAX_PLANS_ASKED) {
        if rec.account_id.is_none() {
            rec.account_id = Some(account.id.to_string());
        }
        rec.attempts += 1;
        let Some(catalog) = fetch_from(w, version, account, rec).await else {
            continue;
        };
        merged = Some(match merged {
            None => catalog,
            Some(m) => merge_catalogs(m, catalog),
        });
    }
    let catalog = merged?;
    w.shared.model_plans.learn(&catalog);
    serde_json::to_vec(&with_list_shape(catalog))
        .ok()
        .map(Bytes::from)
}

/// The catalog with only the `allowed` models (both the Codex and the OpenAI list).
fn only_models(body: &Bytes, allowed: &[String]) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    let keep = |m: &Value, field: &str| {
        m.get(field)
            .and_then(Value::as_str)
            .is_some_and(|s| allowed.iter().any(|a| a.eq_ignore_ascii_case(s)))
    };
    if let Some(list) = v.get_mut("models").and_then(Value::as_array_mut) {
        list.retain(|m| keep(m, "slug"));
    }
    if let Some(list) = v.get_mut("data").and_then(Value::as_array_mut) {
        list.retain(|m| keep(m, "id"));
    }
    serde_json::to_vec(&v).map_or_else(|_| body.clone(), Bytes::from)
}

/// Adds the models of `more` that `base` lacks, in their order.
fn merge_catalogs(mut base: Value, more: Value) -> Value {
    let Some(extra) = more.get("models").and_then(Value::as_array) else {
        return base;
    };
    if let Some(list) = base.get_mut("models").and_then(Value::as_array_mut) {
        for m in extra {
            let slug = m.get("slug");
            if slug.is_some() && !list.iter().any(|x| x.get("slug") == slug) {
                list.push(m.clone());
            }
        }
    }
    base
}

async fn fetch_from(
    w: &Worker,
    version: &str,
    account: &AccountView,
    rec: &mut Record,
) -> Option<Value> {
    let s = &w.shared.settings;
    let mut prefix = BytesMut::with_capacity(256);
    prefix.put_slice(b"GET ");
    prefix.put_slice(s.upstream.base_path.as_bytes());
    prefix.put_slice(b"/codex/models?client_version=");
    prefix.put_slice(version.as_bytes());
    prefix.put_slice(b" HTTP/1.1\r\nhost: ");
    prefix.put_slice(s.upstream.authority.as_bytes());
    prefix.put_slice(b"\r\naccept: application/json\r\n");
    let head = account_head(&prefix, account);
    let mut ex = match exchange::send(w, &head, &Bytes::new()).await {
        Ok(ex) => ex,
        Err(e) => {
            tracing::warn!(account = %account.id, error = %e, "model catalog fetch failed");
            rec.error_code = Some(e.code().into());
            return None;
        }
    };
    let (body, reusable) = exchange::read_body(
        &mut ex.conn,
        &ex.head,
        MAX_CATALOG_BYTES,
        s.upstream_idle_timeout,
    )
    .await
    .ok()?;
    if reusable {
        w.pool.borrow_mut().put(ex.conn, Instant::now());
    }
    if ex.head.status != 200 {
        tracing::warn!(
            status = ex.head.status,
            account = %account.id,
            "upstream refused the model catalog"
        );
        rec.error_code = Some(format!("upstream_{}", ex.head.status));
        return None;
    }
    let catalog: Value = serde_json::from_slice(&body).ok()?;
    catalog.get("models")?.as_array()?;
    Some(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_shape_and_version_filter() {
        let v = with_list_shape(json!({"models":[
            {"slug":"a"},{"no_slug":1},
            {"slug":"hidden","visibility":"hide"},{"slug":"not-api","supported_in_api":false}
        ]}));
        assert_eq!(v["object"], "list");
        assert_eq!(
            v["data"],
            json!([{"id":"a","object":"model","owned_by":"codex-lb"}])
        );
        assert_eq!(v["models"].as_array().unwrap().len(), 4);
        assert_eq!(sanitize_version("0.169.0"), Some("0.169.0"));
        assert_eq!(sanitize_version("1&x=2"), None);
        assert!(builtin_catalog()["models"].as_array().unwrap().len() >= 3);
    }
}
