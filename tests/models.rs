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
