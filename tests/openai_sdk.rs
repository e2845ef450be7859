//! The official OpenAI Python SDK (installed by `scripts/test.sh` into `.e2e/venv`) through the
//! gateway's `/v1` routes: Responses streamed and not, Chat Completions streamed and not, a tool
//! call round trip, the model list; then what the gateway recorded for them.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Env;

fn python() -> PathBuf {
    let path = std::env::var_os("CODEX_LB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".e2e/venv/bin/python"));
    assert!(
        path.exists(),
        "Python with the openai package not found at {}: run scripts/test.sh, which installs it",
        path.display()
    );
    path
}

#[test]
fn the_openai_python_sdk_works_through_v1() {
    let env = Env::start(2);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_sdk.py");
    let out = Command::new(python())
        .arg(&script)
        .env("CODEX_LB_BASE_URL", env.url("/v1"))
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK script failed:\n{stdout}\n{stderr}"
    );
    for line in [
        "responses.create ok",
        "responses.stream ok",
        "chat.completions.create ok",
        "chat.completions stream ok",
        "tool round trip ok",
        "streamed tool call ok",
        "models.list ok",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // Every turn was recorded with its route, model and usage.
    let rows = env.get_json("/api/requests?limit=100");
    let rows = rows["requests"].as_array().unwrap();
    let by_route = |route: &str| {
        rows.iter()
            .filter(|r| r["route"] == route)
            .collect::<Vec<_>>()
    };
    assert_eq!(by_route("v1/responses").len(), 2, "{rows:?}");
    assert_eq!(by_route("v1/chat/completions").len(), 5);
    for r in by_route("v1/responses")
        .into_iter()
        .chain(by_route("v1/chat/completions"))
    {
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["outcome"], "completed", "{r}");
        assert!(r["total_tokens"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["user_agent"], "openai/python", "{r}");
    }
}
