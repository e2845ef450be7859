//! The model catalog routes: the upstream's catalog for the client's version, cached, with the
//! OpenAI list shape beside it; a built-in catalog when no account can ask the upstream.

mod common;

use common::Env;

fn slugs(v: &serde_json::Value) -> Vec<String> {
    v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["slug"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn catalog_comes_from_upstream_for_the_client_version_and_is_cached() {
    let env = Env::start(1);
    let get = |path: &str| ureq::get(&env.url(path)).call().unwrap();
    let first = get("/backend-api/codex/models?client_version=0.169.0");
    assert_eq!(first.header("x-codex-lb-catalog"), Some("upstream"));
    let v: serde_json::Value = first.into_json().unwrap();
    let s = slugs(&v);
    assert!(s.contains(&"gpt-5.5".to_string()), "{s:?}");
    assert!(
        !s.contains(&"gpt-6-preview".to_string()),
        "a model needing a newer client is withheld: {s:?}"
    );
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), s.len());
    // The same version again is served from this worker's cache or fetched once more by the
    // other worker: the upstream is asked at most once per worker.
    for _ in 0..6 {
        let r = get("/backend-api/codex/v1/models?client_version=0.169.0");
        assert_ne!(r.header("x-codex-lb-catalog"), Some("builtin"));
    }
    let asked = env
        .mock
        .stats()
        .requests_by_route
        .get("GET /backend-api/codex/models")
        .copied()
        .unwrap_or(0);
    assert!((1..=2).contains(&asked), "upstream asked {asked} times");
    // A newer client sees the newer model.
    let newer: serde_json::Value = get("/backend-api/codex/models?client_version=99.1.0")
        .into_json()
        .unwrap();
    assert!(slugs(&newer).contains(&"gpt-6-preview".to_string()));
}

#[test]
fn builtin_catalog_when_no_account_can_ask() {
    let env = Env::start(0);
    let r = ureq::get(&env.url("/backend-api/codex/models"))
        .call()
        .unwrap();
    assert_eq!(r.header("x-codex-lb-catalog"), Some("builtin"));
    let v: serde_json::Value = r.into_json().unwrap();
    assert!(slugs(&v).len() >= 3);
}

#[test]
fn a_plan_only_model_is_listed_and_routed_to_accounts_on_that_plan() {
    let env = Env::start_custom(
        loadtest::mock::MockConfig {
            accounts: 3,
            plans: vec!["plus".into(), "pro".into(), "plus".into()],
            ..Default::default()
        },
        |_| {},
    );
    let pro_id = env.mock.accounts()[1].chatgpt_account_id.clone();
    // The pool's catalog is the union of its plans' catalogs.
    let v: serde_json::Value = ureq::get(&env.url("/backend-api/codex/models"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert!(slugs(&v).contains(&"gpt-5.5-pro".to_string()), "{v}");
    env.mock.reset();
    let pro_turn = |text: &str| {
        common::turn_body(text).replace("\"model\":\"gpt-5.5\"", "\"model\":\"gpt-5.5-pro\"")
    };
    for i in 0..12 {
        let r = env.turn(&pro_turn(&format!("pro {i}")), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let used: Vec<(String, u64)> = env
        .turns_by_account()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(
        used,
        vec![(pro_id.clone(), 12)],
        "only the pro account serves it"
    );
    // With the pro account paused nobody can: a 503 that says why, not an upstream 400 per try.
    let list = env.get_json("/api/accounts");
    let gw_id = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["chatgpt_account_id"] == pro_id.as_str())
        .map(|a| a["id"].as_str().unwrap().to_string())
        .unwrap();
    env.post_json(&format!("/api/accounts/{gw_id}/pause"), b"{}");
    let r = env.turn(&pro_turn("no pro left"), &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["code"], "no_plan_support_for_model");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("gpt-5.5-pro") && msg.contains("pro") && msg.contains("plus"),
        "{msg}"
    );
    // Other models still flow.
    assert_eq!(env.turn(&common::turn_body("plain"), &[]).status, 200);
}
