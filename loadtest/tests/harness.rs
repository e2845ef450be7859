//! The `loadtest` binary end to end without the gateway (which this package does not build):
//! `run --via direct` against the child mock, short and mixed, with `--check`, and the JSON it
//! writes. `.ci/run` covers `compare` with the gateway.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn loadtest(args: &[&str], out: &Path) -> (bool, String, Value) {
    let o = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("loadtest runs");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let json = std::fs::read(out)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (
        o.status.success(),
        format!("{stdout}\n{}", String::from_utf8_lossy(&o.stderr)),
        json,
    )
}

#[test]
fn short_run_direct_completes_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let (ok, text, json) = loadtest(
        &[
            "run",
            "--via",
            "direct",
            "--scenario",
            "short",
            "--concurrency",
            "2",
            "--duration",
            "1s",
            "--check",
        ],
        &out,
    );
    assert!(ok, "{text}");
    assert!(text.contains("| direct "), "{text}");
    let t = &json["targets"][0];
    assert_eq!(t["name"], "direct");
    assert_eq!(t["error_total"], 0);
    assert!(t["requests_ok"].as_u64().unwrap() > 10, "{t}");
    assert!(t["ttfd"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(t["cpu_s"].as_f64().is_some(), "the child mock is measured");
    assert_eq!(json["settings"]["concurrency"], 2);
}

#[test]
fn mixed_direct_sees_the_injected_failures_and_check_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.json");
    let (ok, text, json) = loadtest(
        &[
            "run",
            "--via",
            "direct",
            "--scenario",
            "mixed",
            "--concurrency",
            "4",
            "--duration",
            "2s",
            "--fail-every",
            "100ms",
            "--check",
        ],
        &out,
    );
    assert!(
        !ok,
        "no failover without a gateway: --check must fail\n{text}"
    );
    let t = &json["targets"][0];
    let errors = t["errors"].as_object().unwrap();
    assert!(
        errors.keys().all(|k| k.starts_with("status_")),
        "{errors:?}"
    );
    let rejected: u64 = t["upstream_rejections"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(rejected, t["error_total"].as_u64().unwrap(), "{t}");
    assert!(json["failures"][0].as_str().unwrap().starts_with("check:"));
}
