//! End to end with the official Codex CLI (`@openai/codex`, installed by `scripts/test.sh`):
//! `codex exec` through the gateway gets the mock's answer, and the gateway records the turn.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{codex_bin, Env};

/// Runs `codex exec` with a fresh home whose provider is the gateway; `provider_extra` is added
/// to the provider block, `envs` to the environment. Returns the exit status, stdout and stderr.
fn codex_exec(
    env: &Env,
    prompt: &str,
    provider_extra: &str,
    envs: &[(&str, &str)],
) -> (std::process::ExitStatus, String, String) {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "model = \"gpt-5.5\"\nmodel_provider = \"codex-lb\"\n\n[model_providers.codex-lb]\nname = \"OpenAI\"\nbase_url = \"http://{}/backend-api/codex\"\nwire_api = \"responses\"\n{provider_extra}",
            env.addr
        ),
    )
    .unwrap();
    let mut cmd = Command::new(codex_bin());
    cmd.args(["exec", "--skip-git-repo-check", prompt])
        .env("CODEX_HOME", home.path())
        .env("HOME", home.path())
        .env_remove("OPENAI_API_KEY")
        .env_remove("CODEX_LB_API_KEY")
        .env("RUST_LOG", "error")
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("codex starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("codex exec did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn codex_exec_answers_through_the_gateway_and_usage_is_recorded() {
    let env = Env::start(2);
    let answer = "Hello from the mock upstream, through codex-lb.";
    let prompt = format!("Say hello. [[mock {{\"text\":\"{answer}\",\"deltas\":6}}]]");
    let (status, stdout, stderr) = codex_exec(&env, &prompt, "", &[]);
    assert!(
        status.success(),
        "codex failed: {status}\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains(answer),
        "answer missing from stdout: {stdout}\nstderr: {stderr}"
    );

    let rows = env.get_json("/api/requests?limit=20");
    let turn = rows["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "responses")
        .cloned()
        .unwrap_or_else(|| panic!("no turn recorded: {rows}"));
    assert_eq!(turn["outcome"], "completed", "{turn}");
    assert_eq!(turn["model"], "gpt-5.5");
    let summary = env.summary();
    let tokens = summary["by_model"]["gpt-5.5"]["total_tokens"]
        .as_u64()
        .unwrap_or(0);
    assert!(tokens > 0, "{summary}");
    assert_eq!(tokens, turn["total_tokens"].as_u64().unwrap());
    // The CLI's own count of the turn matches what the gateway recorded.
    let shown = tokens.to_string();
    let with_commas = {
        let s = shown.as_bytes();
        let mut out = String::new();
        for (i, c) in s.iter().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(*c as char);
        }
        out
    };
    let printed = format!("{stdout}{stderr}");
    assert!(
        printed.contains(&shown) || printed.contains(&with_commas),
        "CLI did not print {tokens} tokens used:\n{printed}"
    );
}

#[test]
fn codex_with_env_key_works_with_a_valid_key_and_says_why_with_a_wrong_one() {
    let env = Env::start(1);
    let on = ureq::put(&env.url("/api/settings"))
        .send_string(r#"{"api_key_auth": true}"#)
        .unwrap()
        .into_json::<serde_json::Value>()
        .unwrap();
    assert_eq!(on["api_key_auth"], true);
    let created = env.post_json("/api/keys", br#"{"name": "codex-user"}"#);
    let key = created["key"].as_str().unwrap().to_string();
    let key_id = created["api_key"]["id"].as_str().unwrap().to_string();
    let provider = "env_key = \"CODEX_LB_API_KEY\"\n";
    let answer = "Keyed hello through codex-lb.";
    let prompt = format!("Say hello. [[mock {{\"text\":\"{answer}\",\"deltas\":3}}]]");
    let (status, stdout, stderr) =
        codex_exec(&env, &prompt, provider, &[("CODEX_LB_API_KEY", &key)]);
    assert!(
        status.success() && stdout.contains(answer),
        "codex with a valid key: {status}\nstdout: {stdout}\nstderr: {stderr}"
    );
    let rows = env.get_json("/api/requests?limit=5");
    assert!(
        rows["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["key_id"] == key_id.as_str() && r["outcome"] == "completed"),
        "{rows}"
    );
    let (status, stdout, stderr) = codex_exec(
        &env,
        &prompt,
        provider,
        &[("CODEX_LB_API_KEY", "sk-clb-not-a-real-key")],
    );
    let printed = format!("{stdout}{stderr}");
    assert!(!status.success(), "a wrong key must fail: {printed}");
    assert!(
        printed.contains("Invalid API key"),
        "the CLI shows the gateway's reason:\n{printed}"
    );
}

#[test]
fn codex_exec_over_websocket_is_served_by_an_upgrade_not_a_fallback() {
    let env = Env::start(2);
    let answer = "Hello over a WebSocket, through codex-lb.";
    let prompt = format!("Say hello. [[mock {{\"text\":\"{answer}\",\"deltas\":5}}]]");
    let (status, stdout, stderr) = codex_exec(&env, &prompt, "supports_websockets = true\n", &[]);
    assert!(
        status.success(),
        "codex failed: {status}\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains(answer),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    // The turn came over the socket: the gateway accepted an upgrade and recorded the turn as a
    // WebSocket one, and no HTTP turn reached it.
    let health = env.get_json("/health");
    assert!(
        health["metrics"]["websocket_upgrades"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{health}"
    );
    let rows = env.get_json("/api/requests?limit=50");
    let turns: Vec<_> = rows["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["route"] == "responses")
        .collect();
    assert!(!turns.is_empty(), "{rows}");
    for t in &turns {
        assert_eq!(t["transport"], "websocket", "{t}");
    }
    assert!(
        turns
            .iter()
            .any(|t| t["outcome"] == "completed" && t["total_tokens"].as_u64().unwrap_or(0) > 0),
        "{rows}"
    );
}
