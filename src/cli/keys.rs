//! `codex-lb keys`: proxy API keys for the people who share the gateway. Through the running
//! gateway's admin API when it holds the data dir, else directly in the store.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{backend, call, human_secs, Backend};
use crate::accounts::now_unix;
use crate::config::TargetArgs;
use crate::control::keys::{apply, create, regenerate, KeyPatch, KeySpec};
use crate::keys::{registry, KeyRecord, LimitRule};

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key; it is printed once and only its hash is kept.
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// List keys: status, limits and (from a running gateway) their use in each window.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: every worker refuses it from its next request.
    Revoke { id: String },
    /// Pause a key: refused (401 api_key_paused) until resumed; its rules and usage are kept.
    Pause { id: String },
    /// Resume a paused key.
    Resume { id: String },
    /// Give a key a new secret, printed once: the old one stops working at once; the id, rules
    /// and usage stay.
    Regenerate { id: String },
    /// Change a key's name, expiry or limits (given options replace what the key had).
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// A budget, KIND:WINDOW:LIMIT[:MODEL]: KIND total_tokens, input_tokens, output_tokens or
    /// cost_usd; WINDOW 5h, daily, weekly or monthly (UTC calendar windows). Repeatable;
    /// `--limit none` removes all.
    #[arg(long = "limit")]
    limits: Vec<String>,
    /// A model the key may use (repeatable; `none`: any model).
    #[arg(long = "allow-model")]
    models: Vec<String>,
    /// A reasoning effort the key may ask for (repeatable; `none`: any).
    #[arg(long = "allow-effort")]
    efforts: Vec<String>,
    /// A pool account the key's requests may be served by, by its gateway id (`acc_…`, from
    /// `codex-lb accounts list`; repeatable; `none`: the whole pool).
    #[arg(long = "allow-account")]
    accounts: Vec<String>,
    /// Streams the key may have open at once (`none`: no cap).
    #[arg(long)]
    max_streams: Option<String>,
    /// Requests the key may start per minute (`none`: no cap).
    #[arg(long)]
    rpm: Option<String>,
    /// The key stops working this long from now (e.g. 30d, 12h; `none`: never).
    #[arg(long)]
    expires_in: Option<String>,
}

fn number_or_none(v: &Option<String>, what: &str) -> Result<Option<Option<u32>>, String> {
    match v.as_deref() {
        None => Ok(None),
        Some("none") => Ok(Some(None)),
        Some(s) => s
            .parse::<u32>()
            .map(|n| Some(Some(n)))
            .map_err(|_| format!("--{what} takes a whole number or `none`")),
    }
}

fn list_or_none(v: &[String]) -> Option<Vec<String>> {
    match v {
        [] => None,
        [one] if one == "none" => Some(Vec::new()),
        many => Some(many.to_vec()),
    }
}

impl PolicyArgs {
    fn patch(&self, name: Option<String>) -> Result<KeyPatch, String> {
        let limits = match self.limits.as_slice() {
            [] => None,
            [one] if one == "none" => Some(Vec::new()),
            many => Some(
                many.iter()
                    .map(|s| LimitRule::parse(s))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let expires_at = match self.expires_in.as_deref() {
            None => None,
            Some("none") => Some(None),
            Some(d) => {
                let d: Duration = humantime::parse_duration(d)
                    .map_err(|e| format!("--expires-in {d:?}: {e} (e.g. 30d, 12h)"))?;
                Some(Some(now_unix() + d.as_secs()))
            }
        };
        Ok(KeyPatch {
            name,
            expires_at,
            limits,
            allowed_models: list_or_none(&self.models),
            allowed_efforts: list_or_none(&self.efforts),
            allowed_accounts: list_or_none(&self.accounts),
            max_streams: number_or_none(&self.max_streams, "max-streams")?,
            requests_per_minute: number_or_none(&self.rpm, "rpm")?,
            paused: None,
        })
    }
}

pub fn run(target: TargetArgs, action: KeysAction) -> Result<(), String> {
    let backend = backend(&target)?;
    match action {
        KeysAction::Create { name, policy } => {
            let patch = policy.patch(None)?;
            let (secret, info) = match &backend {
                Backend::Direct(store) => {
                    let (secret, record) = create(KeySpec {
                        name: name.clone(),
                        ..Default::default()
                    })?;
                    let record = apply(record, patch)?;
                    registry::put(store, &record).map_err(|e| e.to_string())?;
                    (secret, stored_json(&record, &pool_ids(store)))
                }
                Backend::Gateway(base) => {
                    let mut body = patch_json(&patch);
                    body["name"] = json!(name);
                    let v = call(
                        "POST",
                        &format!("{base}/api/keys"),
                        Some(body.to_string().as_bytes()),
                    )?;
                    (
                        v["key"].as_str().unwrap_or_default().to_string(),
                        v["api_key"].clone(),
                    )
                }
            };
            println!("{secret}");
            eprintln!(
                "created {} ({}). This is the only time the key is shown: give it to its user, \
                 who sets it as CODEX_LB_API_KEY (env_key in Codex's config.toml).",
                info["id"].as_str().unwrap_or("?"),
                info["name"].as_str().unwrap_or("?"),
            );
            note_unknown(&info);
            Ok(())
        }
        KeysAction::List { json } => {
            let keys: Vec<Value> = match &backend {
                Backend::Direct(store) => {
                    let pool = pool_ids(store);
                    registry::load_all(store)
                        .map_err(|e| e.to_string())?
                        .iter()
                        .map(|r| stored_json(r, &pool))
                        .collect()
                }
                Backend::Gateway(base) => call("GET", &format!("{base}/api/keys"), None)?["keys"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&keys).unwrap_or_default()
                );
                return Ok(());
            }
            if keys.is_empty() {
                println!("no keys; create one with `codex-lb keys create --name alice`");
                return Ok(());
            }
            println!(
                "{:<18} {:<16} {:<16} {:<8} {:<10} LIMITS",
                "ID", "NAME", "PREFIX", "STATUS", "EXPIRES"
            );
            let now = now_unix();
            for k in keys {
                let expires = match k["expires_at"].as_u64() {
                    Some(t) if t > now => human_secs(t - now),
                    Some(_) => "past".into(),
                    None => "never".into(),
                };
                println!(
                    "{:<18} {:<16} {:<16} {:<8} {:<10} {}",
                    k["id"].as_str().unwrap_or("?"),
                    k["name"].as_str().unwrap_or("?"),
                    k["prefix"].as_str().unwrap_or("?"),
                    k["status"].as_str().unwrap_or("?"),
                    expires,
                    limits_text(&k),
                );
            }
            Ok(())
        }
        KeysAction::Revoke { id } => {
            match &backend {
                Backend::Direct(store) => {
                    let mut r = registry::get(store, &id)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("no key {id}"))?;
                    r.revoked_at.get_or_insert(now_unix());
                    registry::put(store, &r).map_err(|e| e.to_string())?;
                }
                Backend::Gateway(base) => {
                    call("DELETE", &format!("{base}/api/keys/{id}"), None)?;
                }
            }
            println!("revoked {id}");
            Ok(())
        }
        KeysAction::Pause { id } => {
            let info = update(&backend, &id, paused(true))?;
            println!("paused {id}");
            eprintln!(
                "{} is refused (401 api_key_paused) until `codex-lb keys resume {id}`",
                info["name"].as_str().unwrap_or("?"),
            );
            Ok(())
        }
        KeysAction::Resume { id } => {
            let info = update(&backend, &id, paused(false))?;
            println!("resumed {id}");
            if info["status"] != "active" {
                eprintln!(
                    "note: the key is {}, so it is still refused",
                    info["status"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
        KeysAction::Regenerate { id } => {
            let (secret, info) = match &backend {
                Backend::Direct(store) => {
                    let r = registry::get(store, &id)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("no key {id}"))?;
                    let (secret, record) = regenerate(r)?;
                    registry::put(store, &record).map_err(|e| e.to_string())?;
                    (secret, record_json(&record))
                }
                Backend::Gateway(base) => {
                    let v = call("POST", &format!("{base}/api/keys/{id}/regenerate"), None)?;
                    (
                        v["key"].as_str().unwrap_or_default().to_string(),
                        v["api_key"].clone(),
                    )
                }
            };
            println!("{secret}");
            eprintln!(
                "new secret for {} ({}); the old one no longer works. This is the only time the \
                 key is shown: give it to its user, who replaces CODEX_LB_API_KEY with it.",
                info["id"].as_str().unwrap_or("?"),
                info["name"].as_str().unwrap_or("?"),
            );
            Ok(())
        }
        KeysAction::Update { id, name, policy } => {
            let info = update(&backend, &id, policy.patch(name)?)?;
            println!("updated {id}");
            note_unknown(&info);
            Ok(())
        }
    }
}

/// Says which of a key's accounts the pool does not have (they never serve it).
fn note_unknown(info: &Value) {
    if let Some(unknown) = info["unknown_accounts"]
        .as_array()
        .filter(|u| !u.is_empty())
    {
        let ids: Vec<&str> = unknown.iter().filter_map(Value::as_str).collect();
        eprintln!(
            "note: the pool has no account {}: it never serves this key (ids as `codex-lb \
             accounts list` shows them)",
            ids.join(", ")
        );
    }
}

fn paused(on: bool) -> KeyPatch {
    KeyPatch {
        paused: Some(on),
        ..Default::default()
    }
}

/// Applies a patch to a key, in the store or through the gateway; the key as listed after it.
fn update(backend: &Backend, id: &str, patch: KeyPatch) -> Result<Value, String> {
    match backend {
        Backend::Direct(store) => {
            let r = registry::get(store, id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no key {id}"))?;
            let r = apply(r, patch)?;
            registry::put(store, &r).map_err(|e| e.to_string())?;
            Ok(stored_json(&r, &pool_ids(store)))
        }
        Backend::Gateway(base) => {
            let body = patch_json(&patch).to_string();
            let v = call(
                "PATCH",
                &format!("{base}/api/keys/{id}"),
                Some(body.as_bytes()),
            )?;
            Ok(v["api_key"].clone())
        }
    }
}

/// A patch as the admin API takes it: only the fields that change.
fn patch_json(p: &KeyPatch) -> Value {
    let mut v = serde_json::Map::new();
    if let Some(n) = &p.name {
        v.insert("name".into(), json!(n));
    }
    if let Some(e) = p.expires_at {
        v.insert("expires_at".into(), json!(e));
    }
    if let Some(l) = &p.limits {
        v.insert("limits".into(), json!(l));
    }
    if let Some(m) = &p.allowed_models {
        v.insert("allowed_models".into(), json!(m));
    }
    if let Some(e) = &p.allowed_efforts {
        v.insert("allowed_efforts".into(), json!(e));
    }
    if let Some(a) = &p.allowed_accounts {
        v.insert("allowed_accounts".into(), json!(a));
    }
    if let Some(s) = p.max_streams {
        v.insert("max_streams".into(), json!(s));
    }
    if let Some(r) = p.requests_per_minute {
        v.insert("requests_per_minute".into(), json!(r));
    }
    if let Some(on) = p.paused {
        v.insert("paused".into(), json!(on));
    }
    Value::Object(v)
}

/// A stored record shown like the gateway lists keys (without live use).
fn record_json(r: &KeyRecord) -> Value {
    let status = r.status(now_unix());
    let mut v = json!({
        "id": r.id, "name": r.name, "prefix": r.prefix, "created_at": r.created_at,
        "expires_at": r.expires_at, "revoked_at": r.revoked_at, "paused_at": r.paused_at,
        "status": status,
        "allowed_models": r.policy.allowed_models, "allowed_efforts": r.policy.allowed_efforts,
        "allowed_accounts": r.policy.allowed_accounts,
        "max_streams": r.policy.max_streams, "requests_per_minute": r.policy.requests_per_minute,
    });
    v["limits"] = json!(r.policy.limits);
    v
}

/// The ids of the accounts in the store (none when they cannot be read: then every listed
/// account shows as unknown, which errs on the side of saying so).
fn pool_ids(store: &crate::store::Store) -> Vec<String> {
    crate::accounts::registry::ids(store).unwrap_or_default()
}

/// `record_json` with the key's accounts the pool does not have, as the gateway lists them.
fn stored_json(r: &KeyRecord, pool: &[String]) -> Value {
    let mut v = record_json(r);
    v["unknown_accounts"] = json!(r
        .policy
        .allowed_accounts
        .iter()
        .filter(|id| !pool.contains(id))
        .collect::<Vec<_>>());
    v
}

fn limits_text(k: &Value) -> String {
    let mut parts: Vec<String> = k["limits"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    let used = l["used"]
                        .as_f64()
                        .map(|u| format!("{u}/"))
                        .unwrap_or_default();
                    let model = l["model"]
                        .as_str()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default();
                    format!(
                        "{} {}{} {}{model}",
                        l["kind"].as_str().unwrap_or("?"),
                        used,
                        l["limit"],
                        l["window"].as_str().unwrap_or("?"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(r) = k["requests_per_minute"].as_u64() {
        parts.push(format!("{r} rpm"));
    }
    if let Some(s) = k["max_streams"].as_u64() {
        parts.push(format!("{s} streams"));
    }
    if let Some(models) = k["allowed_models"].as_array().filter(|m| !m.is_empty()) {
        let names: Vec<&str> = models.iter().filter_map(Value::as_str).collect();
        parts.push(format!("models {}", names.join(" ")));
    }
    if let Some(accounts) = k["allowed_accounts"].as_array().filter(|a| !a.is_empty()) {
        let unknown = k["unknown_accounts"].as_array();
        let ids: Vec<String> = accounts
            .iter()
            .filter_map(Value::as_str)
            .map(|id| {
                // An id the pool does not have serves nothing: marked.
                if unknown.is_some_and(|u| u.iter().any(|x| x == id)) {
                    format!("{id}(unknown)")
                } else {
                    id.to_string()
                }
            })
            .collect();
        parts.push(format!("accounts {}", ids.join(" ")));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}
