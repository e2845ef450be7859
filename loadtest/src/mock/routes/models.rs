//! `GET /backend-api/codex/models?client_version=X.Y.Z`: the model catalog (PROTOCOL.md 1.6).
//! Models whose `minimal_client_version` is above the caller's version are withheld, as
//! upstream does; a missing version counts as 0.0.0. The catalog is per plan, as codex-lb
//! expects (it asks once per plan and unions the answers): a model whose `available_in_plans`
//! lacks the calling account's plan is withheld too, and `/responses` refuses it.

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ETAG};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::auth::authenticate;
use crate::mock::body::MockBody;
use crate::mock::reply::{ReplyCtx, MODELS_ETAG};
use crate::mock::state::Shared;

/// Every slug the mock knows, in catalog order; `/responses` accepts exactly these, each for
/// the plans in [`plans_of`].
pub const MODEL_SLUGS: [&str; 5] = [
    "gpt-5.5",
    "gpt-5.3-codex",
    "gpt-5.1-codex-mini",
    "gpt-6-preview",
    "gpt-5.5-pro",
];

/// The paid plans that have every general model.
const PAID_PLANS: &[&str] = &["plus", "pro", "team", "business", "enterprise", "edu"];
/// Models only the `pro` plan has.
const PRO_ONLY: &[&str] = &["pro"];

/// A model's `available_in_plans`; `None` for a slug the mock does not know.
pub fn plans_of(slug: &str) -> Option<&'static [&'static str]> {
    match slug {
        "gpt-5.5-pro" => Some(PRO_ONLY),
        s if MODEL_SLUGS.contains(&s) => Some(PAID_PLANS),
        _ => None,
    }
}

/// Whether an account on `plan` may use `slug` (plan names compare case-insensitively).
pub fn model_in_plan(slug: &str, plan: &str) -> bool {
    plans_of(slug).is_some_and(|plans| plans.iter().any(|p| p.eq_ignore_ascii_case(plan)))
}

pub fn handle(shared: &Shared, req: Request<Incoming>) -> Response<MockBody> {
    let mut ctx = ReplyCtx::from_request(shared, req.headers());
    let account = match authenticate(shared, req.headers()) {
        Ok(a) => a,
        Err(rej) => {
            ctx.account = rej.account;
            return ctx.json(shared, rej.status, &rej.body);
        }
    };
    ctx.account = Some(account);
    shared.stats.account(shared.account_id(account));
    let plan = &shared.accounts[account].plan_type;
    let client = client_version(req.uri().query());
    let models: Vec<Value> = catalog()
        .into_iter()
        .filter(|m| {
            parse_version(m["minimal_client_version"].as_str().unwrap_or("0.0.0")) <= client
                && model_in_plan(m["slug"].as_str().unwrap_or(""), plan)
        })
        .collect();
    let mut r = ctx.json(shared, StatusCode::OK, &json!({ "models": models }));
    r.headers_mut()
        .insert(ETAG, HeaderValue::from_static(MODELS_ETAG));
    r
}

fn client_version(query: Option<&str>) -> (u64, u64, u64) {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "client_version")
        .map_or((0, 0, 0), |(_, v)| parse_version(v))
}

/// `0.144.0`, `0.144.0-alpha.2`: leading digits of the first three dot-separated parts.
fn parse_version(v: &str) -> (u64, u64, u64) {
    let mut parts = v.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u64>().unwrap_or(0)
    });
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn reasoning_levels(levels: &[&str]) -> Value {
    Value::Array(
        levels
            .iter()
            .map(|e| json!({"effort": e, "description": format!("{e} reasoning effort")}))
            .collect(),
    )
}

fn model(
    slug: &str,
    display: &str,
    description: &str,
    context: u64,
    levels: &[&str],
    priority: u32,
    min_version: &str,
) -> Value {
    json!({
        "slug": slug,
        "display_name": display,
        "description": description,
        "base_instructions": "You are Codex, a coding agent.",
        "context_window": context,
        "max_context_window": context,
        "input_modalities": ["text", "image"],
        "supported_reasoning_levels": reasoning_levels(levels),
        "default_reasoning_level": "medium",
        "supports_reasoning_summaries": true,
        "support_verbosity": true,
        "default_verbosity": "low",
        "prefer_websockets": false,
        "supports_parallel_tool_calls": true,
        "supported_in_api": true,
        "minimal_client_version": min_version,
        "priority": priority,
        "available_in_plans": plans_of(slug).unwrap_or_default(),
        "visibility": "list",
        "shell_type": "shell_command",
        "apply_patch_tool_type": "freeform",
        "truncation_policy": {"mode": "tokens", "limit": 10000},
        "experimental_supported_tools": [],
    })
}

fn catalog() -> Vec<Value> {
    vec![
        model(
            "gpt-5.5",
            "GPT-5.5",
            "Latest frontier agentic coding model.",
            272_000,
            &["low", "medium", "high", "xhigh"],
            1,
            "0.0.0",
        ),
        model(
            "gpt-5.3-codex",
            "GPT-5.3-Codex",
            "Codex-optimized coding model.",
            272_000,
            &["low", "medium", "high", "xhigh"],
            2,
            "0.0.0",
        ),
        model(
            "gpt-5.1-codex-mini",
            "GPT-5.1-Codex-Mini",
            "Smaller, faster, cheaper coding model.",
            128_000,
            &["medium", "high"],
            3,
            "0.0.0",
        ),
        model(
            "gpt-6-preview",
            "GPT-6 Preview",
            "Preview model for future clients.",
            400_000,
            &["low", "medium", "high"],
            4,
            "99.0.0",
        ),
        model(
            "gpt-5.5-pro",
            "GPT-5.5 Pro",
            "GPT-5.5 with extended reasoning, for the Pro plan.",
            272_000,
            &["medium", "high", "xhigh"],
            5,
            "0.0.0",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("0.144.0-alpha.2"), (0, 144, 0));
        assert!(parse_version("99.0.0") > parse_version("0.144.0"));
        assert_eq!(client_version(Some("a=1&client_version=1.2.3")), (1, 2, 3));
        assert_eq!(client_version(None), (0, 0, 0));
    }

    #[test]
    fn catalog_slugs_match_accepted_models() {
        let catalog = catalog();
        let slugs: Vec<String> = catalog
            .iter()
            .map(|m| m["slug"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(slugs, MODEL_SLUGS);
        // what the catalog advertises is what `/responses` enforces
        for m in &catalog {
            let slug = m["slug"].as_str().unwrap();
            let advertised: Vec<&str> = m["available_in_plans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            assert!(!advertised.is_empty(), "{slug}");
            assert_eq!(Some(&advertised[..]), plans_of(slug), "{slug}");
            for plan in ["free", "plus", "pro", "team"] {
                assert_eq!(
                    model_in_plan(slug, plan),
                    advertised.contains(&plan),
                    "{slug} on {plan}"
                );
            }
        }
        assert!(plans_of("gpt-4o").is_none());
        assert!(!model_in_plan("gpt-4o", "pro"));
    }

    #[test]
    fn the_pro_model_is_pro_only() {
        assert_eq!(plans_of("gpt-5.5-pro"), Some(&["pro"][..]));
        assert!(model_in_plan("gpt-5.5-pro", "pro"));
        assert!(model_in_plan("gpt-5.5-pro", "PRO"));
        assert!(!model_in_plan("gpt-5.5-pro", "plus"));
        assert!(model_in_plan("gpt-5.5", "plus"));
    }
}
