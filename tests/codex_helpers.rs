//! The Codex CLI helpers against temporary Codex homes: `codex-lb codex setup` (config.toml edits
//! that keep every other byte), `codex-lb codex retag-sessions` (session headers and the state
//! database, backups, undo, an interrupted run) and `codex-lb doctor` against a running gateway,
//! healthy and with one fault at a time; finally the real Codex CLI through a gateway that
//! `setup` configured.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{codex_bin, Env};
use serde_json::{json, Value};

// === runners ===

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// Runs `codex-lb` with `CODEX_HOME=home` and `envs`, away from the caller's keys and data dir.
fn codex_lb(home: &Path, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_codex-lb"));
    cmd.args(args)
        .env("CODEX_HOME", home)
        .env("HOME", home)
        .env_remove("CODEX_SQLITE_HOME")
        .env_remove("CODEX_LB_API_KEY")
        .env_remove("CODEX_LB_DATA_DIR")
        .env_remove("CODEX_LB_LISTEN")
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("codex-lb runs");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every file under `dir` with its bytes, by path relative to `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// === setup ===

const HAND_WRITTEN: &str = r#"# Codex settings, kept by hand.
model = "o3"   # the old favourite
approval_policy = "on-request"

# Local models for the train.
[model_providers.ollama]
name = "Ollama"
base_url = "http://localhost:11434/v1"   # default port

[model_providers.codex-lb]
name = "codex-lb"  # what I called it
base_url = "http://127.0.0.1:9999/backend-api/codex"
supports_websockets = true

[profiles.fast]
model = "gpt-5.4-mini"

[mcp_servers.docs]
command = "docs-mcp"
args = ["--port", "7"] # trailing comment
"#;

#[test]
fn setup_on_an_empty_home_writes_the_provider_and_a_second_run_changes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let r = codex_lb(
        home.path(),
        &[
            "codex",
            "setup",
            "--gateway",
            "http://127.0.0.1:2999/",
            "--model",
            "gpt-5.5",
        ],
        &[],
    );
    assert!(r.ok, "{}", r.all());
    let text = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    assert_eq!(
        text,
        "model_provider = \"codex-lb\"\nmodel = \"gpt-5.5\"\n\n[model_providers.codex-lb]\n\
         name = \"OpenAI\"\nbase_url = \"http://127.0.0.1:2999/backend-api/codex\"\n\
         wire_api = \"responses\"\n"
    );
    assert_eq!(
        names_in(home.path()),
        ["config.toml"],
        "no backup of nothing"
    );

    let again = codex_lb(
        home.path(),
        &[
            "codex",
            "setup",
            "--gateway",
            "http://127.0.0.1:2999",
            "--model",
            "gpt-5.5",
        ],
        &[],
    );
    assert!(again.ok, "{}", again.all());
    assert!(
        again.stdout.contains("nothing to change"),
        "{}",
        again.all()
    );
    assert_eq!(
        std::fs::read_to_string(home.path().join("config.toml")).unwrap(),
        text
    );
    assert_eq!(names_in(home.path()), ["config.toml"], "no new backup");
}

#[test]
fn setup_keeps_other_providers_and_comments_byte_for_byte_after_a_backup() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("config.toml");
    std::fs::write(&path, HAND_WRITTEN).unwrap();
    let r = codex_lb(
        home.path(),
        &[
            "codex",
            "setup",
            "--gateway",
            "http://127.0.0.1:2455",
            "--key-env",
            "CODEX_LB_API_KEY",
        ],
        &[],
    );
    assert!(r.ok, "{}", r.all());
    let after = std::fs::read_to_string(&path).unwrap();

    // The backup beside it holds the old bytes.
    let backups: Vec<String> = names_in(home.path())
        .into_iter()
        .filter(|n| n.starts_with("config.toml.codex-lb-backup-"))
        .collect();
    assert_eq!(backups.len(), 1, "{:?}", names_in(home.path()));
    assert_eq!(
        std::fs::read_to_string(home.path().join(&backups[0])).unwrap(),
        HAND_WRITTEN
    );

    // Lines that setup had to change, before and after.
    let removed = [
        "name = \"codex-lb\"  # what I called it",
        "base_url = \"http://127.0.0.1:9999/backend-api/codex\"",
    ];
    let added = [
        "model_provider = \"codex-lb\"",
        "name = \"OpenAI\"  # what I called it",
        "base_url = \"http://127.0.0.1:2455/backend-api/codex\"",
        "wire_api = \"responses\"",
        "env_key = \"CODEX_LB_API_KEY\"",
    ];
    let kept_before: Vec<&str> = HAND_WRITTEN
        .split_inclusive('\n')
        .filter(|l| !removed.contains(&l.trim_end_matches('\n')))
        .collect();
    let kept_after: Vec<&str> = after
        .split_inclusive('\n')
        .filter(|l| !added.contains(&l.trim_end_matches('\n')))
        .collect();
    assert_eq!(
        kept_before, kept_after,
        "every other line, byte for byte:\n{after}"
    );
    for line in added {
        assert!(
            after
                .split_inclusive('\n')
                .any(|l| l == format!("{line}\n")),
            "{line:?} missing:\n{after}"
        );
    }
    // The provider's lines stay inside its own block.
    let block = after
        .split("[model_providers.codex-lb]\n")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap();
    assert!(block.contains("wire_api = \"responses\""), "{after}");
    assert!(block.contains("env_key = \"CODEX_LB_API_KEY\""), "{after}");
}

#[test]
fn setup_dry_run_prints_a_diff_and_writes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("config.toml");
    std::fs::write(&path, HAND_WRITTEN).unwrap();
    let r = codex_lb(
        home.path(),
        &[
            "codex",
            "setup",
            "--gateway",
            "http://127.0.0.1:2455",
            "--dry-run",
        ],
        &[],
    );
    assert!(r.ok, "{}", r.all());
    for want in [
        "--- ",
        "+++ ",
        "@@ -",
        "\n-base_url = \"http://127.0.0.1:9999/backend-api/codex\"\n",
        "\n+base_url = \"http://127.0.0.1:2455/backend-api/codex\"\n",
        "\n+model_provider = \"codex-lb\"\n",
        "\n [model_providers.codex-lb]\n",
        "not written",
    ] {
        assert!(r.stdout.contains(want), "{want:?} missing:\n{}", r.all());
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), HAND_WRITTEN);
    assert_eq!(names_in(home.path()), ["config.toml"]);

    // On an empty home it creates nothing either.
    let empty = tempfile::tempdir().unwrap();
    let r = codex_lb(empty.path(), &["codex", "setup", "--dry-run"], &[]);
    assert!(
        r.ok && r.stdout.contains("+wire_api = \"responses\""),
        "{}",
        r.all()
    );
    assert!(names_in(empty.path()).is_empty());
}

#[test]
fn setup_with_a_profile_leaves_the_top_level_alone() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("config.toml");
    let before = "model = \"gpt-5.4\"\nmodel_provider = \"openai\"\n";
    std::fs::write(&path, before).unwrap();
    let r = codex_lb(
        home.path(),
        &[
            "codex",
            "setup",
            "--profile",
            "lb",
            "--model",
            "gpt-5.5",
            "--status-via-gateway",
        ],
        &[],
    );
    assert!(r.ok, "{}", r.all());
    assert!(r.stdout.contains("codex --profile lb"), "{}", r.all());
    let after = std::fs::read_to_string(&path).unwrap();
    assert!(
        after.starts_with(before),
        "top-level keys untouched:\n{after}"
    );
    assert!(
        after.ends_with(
            "\n[profiles.lb]\nmodel_provider = \"codex-lb\"\nmodel = \"gpt-5.5\"\n\
             chatgpt_base_url = \"http://127.0.0.1:2455\"\n"
        ),
        "{after}"
    );
    assert!(
        after.contains("[model_providers.codex-lb]\nname = \"OpenAI\"\n"),
        "{after}"
    );
}

// === retag-sessions ===

/// A rollout file as Codex writes it: the session header, a user message that mentions the
/// provider in its text, and a settings event naming it too (neither of which may change).
fn rollout(id: &str, provider: &str) -> String {
    let header = json!({
        "timestamp": "2026-01-02T03:04:05.000Z", "ordinal": 0, "type": "session_meta",
        "payload": {
            "session_id": id, "id": id, "timestamp": "2026-01-02T03:04:05.000Z", "cwd": "/work",
            "originator": "codex_cli_rs", "cli_version": "0.169.0", "source": "cli",
            "model_provider": provider,
            "base_instructions": {"text": "You are Codex.\nBe brief — “quotes” \u{1F600}."},
            "git": {"commit_hash": "abc", "branch": "main"}
        }
    });
    let message = json!({
        "timestamp": "2026-01-02T03:04:06.000Z", "ordinal": 1, "type": "response_item",
        "payload": {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": format!("{{\"model_provider\":\"{provider}\"}} session_meta")}
        ]}
    });
    let settings = format!(
        "{{\"timestamp\":\"2026-01-02T03:04:06.100Z\",\"ordinal\":2,\"type\":\"event_msg\",\"payload\":{{\"type\":\"thread_settings_applied\",\"thread_settings\":{{\"model\":\"gpt-5.5\",\"model_provider_id\":\"{provider}\"}}}}}}"
    );
    format!("{header}\n{message}\n{settings}\n")
}

/// A state database shaped like Codex's `state_5.sqlite` (WAL, a threads table with a
/// model_provider column) plus a table that merely has such a column and must not change.
fn make_state_db(path: &Path, threads: &[(&str, &str)]) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE threads (
            id TEXT PRIMARY KEY, rollout_path TEXT NOT NULL, created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL, source TEXT NOT NULL, model_provider TEXT NOT NULL,
            cwd TEXT NOT NULL, title TEXT NOT NULL, archived INTEGER NOT NULL DEFAULT 0);
         CREATE INDEX idx_threads_provider ON threads(model_provider);
         CREATE TABLE external_imports (id INTEGER PRIMARY KEY, model_provider TEXT);
         INSERT INTO external_imports (model_provider) VALUES ('openai');",
    )
    .unwrap();
    for (id, provider) in threads {
        conn.execute(
            "INSERT INTO threads VALUES (?1, ?2, 1, 2, 'cli', ?3, '/work', 'a title', 0)",
            rusqlite::params![id, format!("/sessions/{id}.jsonl"), provider],
        )
        .unwrap();
    }
}

fn db_providers(path: &Path) -> (BTreeMap<String, String>, String) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, model_provider FROM threads")
        .unwrap();
    let threads = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let other: String = conn
        .query_row("SELECT model_provider FROM external_imports", [], |r| {
            r.get(0)
        })
        .unwrap();
    (threads, other)
}

/// The provider in a rollout file's header line.
fn header_provider(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let v: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    v["payload"]["model_provider"].as_str().unwrap().to_string()
}

fn write_session(home: &Path, day: &str, id: &str, provider: &str) -> PathBuf {
    let dir = home.join("sessions").join(day);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("rollout-{id}.jsonl"));
    std::fs::write(&path, rollout(id, provider)).unwrap();
    path
}

fn backups(home: &Path) -> Vec<String> {
    let dir = home.join("codex-lb-backups");
    if dir.exists() {
        names_in(&dir)
    } else {
        Vec::new()
    }
}

#[test]
fn retag_changes_only_header_lines_and_thread_rows_and_undo_restores_every_byte() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let a = write_session(h, "2025/11/03", "a", "openai");
    // A header written with spaces: re-serialized, so only its provider may differ.
    let b = write_session(h, "2025/12/24", "b", "openai");
    let b_text = std::fs::read_to_string(&b).unwrap();
    let (b_head, b_rest) = b_text.split_once('\n').unwrap();
    let spaced = b_head.replace("\",\"", "\", \"");
    std::fs::write(&b, format!("{spaced}\n{b_rest}")).unwrap();
    let c = write_session(h, "2026/01/02", "c", "codex-lb");
    let d = write_session(h, "2026/01/05", "d", "azure");
    make_state_db(
        &h.join("state_5.sqlite"),
        &[
            ("a", "openai"),
            ("b", "openai"),
            ("c", "codex-lb"),
            ("d", "azure"),
        ],
    );
    std::fs::write(h.join("config.toml"), "model_provider = \"codex-lb\"\n").unwrap();
    let original = snapshot(h);
    let db = h.join("state_5.sqlite");
    let db_before = db_providers(&db);

    // Dry run: a report, no writes.
    let r = codex_lb(h, &["codex", "retag-sessions", "--dry-run"], &[]);
    assert!(r.ok, "{}", r.all());
    assert!(
        r.stdout
            .contains("would retag 2 session(s) from openai to codex-lb"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("threads: 2 row(s) tagged openai"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("1 azure") && r.stdout.contains("1 codex-lb"),
        "{}",
        r.all()
    );
    assert_eq!(snapshot(h), original);
    assert_eq!(db_providers(&db), db_before);

    // The retag.
    let r = codex_lb(h, &["codex", "retag-sessions"], &[]);
    assert!(r.ok, "{}", r.all());
    assert!(
        r.stdout
            .contains("retagged 2 session(s) from openai to codex-lb"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("2 thread row(s) updated"), "{}", r.all());
    for (path, want) in [
        (&a, "codex-lb"),
        (&b, "codex-lb"),
        (&c, "codex-lb"),
        (&d, "azure"),
    ] {
        assert_eq!(header_provider(path), want, "{}", path.display());
    }
    for path in [&a, &b] {
        let rel = path.strip_prefix(h).unwrap();
        let old = String::from_utf8(original[rel].clone()).unwrap();
        let new = std::fs::read_to_string(path).unwrap();
        let (old_head, old_rest) = old.split_once('\n').unwrap();
        let (new_head, new_rest) = new.split_once('\n').unwrap();
        assert_eq!(
            old_rest, new_rest,
            "lines after the header are byte-identical"
        );
        let mut want: Value = serde_json::from_str(old_head).unwrap();
        want["payload"]["model_provider"] = json!("codex-lb");
        assert_eq!(serde_json::from_str::<Value>(new_head).unwrap(), want);
        assert_eq!(
            new_head,
            serde_json::to_string(&want).unwrap(),
            "the header keeps its key order"
        );
    }
    // a's header was already compact: exactly one value changed in the whole file.
    assert_eq!(
        std::fs::read_to_string(&a).unwrap(),
        String::from_utf8(original[a.strip_prefix(h).unwrap()].clone())
            .unwrap()
            .replacen(
                "\"model_provider\":\"openai\"",
                "\"model_provider\":\"codex-lb\"",
                1
            )
    );
    for path in [&c, &d] {
        assert_eq!(
            std::fs::read(path).unwrap(),
            original[path.strip_prefix(h).unwrap()]
        );
    }
    let (threads, other) = db_providers(&db);
    assert_eq!(threads["a"], "codex-lb");
    assert_eq!(threads["b"], "codex-lb");
    assert_eq!(threads["c"], "codex-lb");
    assert_eq!(threads["d"], "azure");
    assert_eq!(other, "openai", "only the threads table changes");

    // The backup: the two files, the database and a manifest.
    let taken = backups(h);
    assert_eq!(taken.len(), 1);
    let bdir = h.join("codex-lb-backups").join(&taken[0]);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(bdir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["status"], "complete");
    assert_eq!(manifest["files"].as_array().unwrap().len(), 2, "{manifest}");
    assert_eq!(
        std::fs::read(bdir.join("sessions/2025/11/03/rollout-a.jsonl")).unwrap(),
        original[a.strip_prefix(h).unwrap()]
    );
    let saved = db_providers(&bdir.join("state_5.sqlite"));
    assert_eq!(
        saved, db_before,
        "the database copy is from before the change"
    );

    // Nothing left to do: no second backup.
    let r = codex_lb(h, &["codex", "retag-sessions"], &[]);
    assert!(
        r.ok && r.stdout.contains("nothing to change"),
        "{}",
        r.all()
    );
    assert_eq!(backups(h).len(), 1);

    // Undo: every session file byte-identical again, rows back.
    let r = codex_lb(h, &["codex", "retag-sessions", "--undo"], &[]);
    assert!(r.ok, "{}", r.all());
    assert!(
        r.stdout.contains("restored 2 session file(s)"),
        "{}",
        r.all()
    );
    let now = snapshot(h);
    for (rel, bytes) in &original {
        if rel.starts_with("sessions") || rel == Path::new("config.toml") {
            assert_eq!(&now[rel], bytes, "{} restored", rel.display());
        }
    }
    assert_eq!(db_providers(&db), db_before);
    let r = codex_lb(h, &["codex", "retag-sessions", "--undo"], &[]);
    assert!(
        !r.ok && r.stderr.contains("no retag backup left"),
        "{}",
        r.all()
    );
}

/// Makes a directory refuse new entries for the guard's life: mode 0555, and where that does not
/// stop this user (root), the immutable attribute.
struct Unwritable {
    dir: PathBuf,
    immutable: bool,
}

impl Unwritable {
    fn new(dir: &Path) -> Unwritable {
        use std::os::unix::fs::PermissionsExt;
        let probe = |dir: &Path| {
            let p = dir.join(".probe");
            let ok = std::fs::write(&p, b"x").is_ok();
            let _ = std::fs::remove_file(&p);
            ok
        };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let mut guard = Unwritable {
            dir: dir.to_path_buf(),
            immutable: false,
        };
        if probe(dir) {
            let st = Command::new("chattr").arg("+i").arg(dir).status();
            guard.immutable = st.is_ok_and(|s| s.success());
            assert!(
                guard.immutable && !probe(dir),
                "cannot make {} unwritable (mode 0555 does not stop this user and chattr +i failed)",
                dir.display()
            );
        }
        guard
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.dir).status();
        }
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
    }
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_keys()
        .filter(|p| p.to_string_lossy().contains("codex-lb-tmp"))
        .collect()
}

#[test]
fn an_interrupted_retag_leaves_every_file_whole_and_can_be_finished_or_undone() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let days = ["2026/01/01", "2026/01/02", "2026/01/03", "2026/01/04"];
    let files: Vec<PathBuf> = days
        .iter()
        .enumerate()
        .map(|(i, day)| write_session(h, day, &format!("s{i}"), "openai"))
        .collect();
    make_state_db(
        &h.join("state_5.sqlite"),
        &[
            ("s0", "openai"),
            ("s1", "openai"),
            ("s2", "openai"),
            ("s3", "openai"),
        ],
    );
    let db = h.join("state_5.sqlite");
    let original = snapshot(h);
    let db_before = db_providers(&db);
    let orig = |p: &Path| original[p.strip_prefix(h).unwrap()].clone();

    // The third day's folder takes no new files: its rewrite fails after two others succeeded.
    let lock = Unwritable::new(&h.join("sessions/2026/01/03"));
    let r = codex_lb(h, &["codex", "retag-sessions"], &[]);
    assert!(!r.ok, "the run must fail: {}", r.all());
    assert!(r.stderr.contains("cannot rewrite"), "{}", r.all());
    assert!(
        r.stderr.contains("2 of 4 session(s) were retagged"),
        "{}",
        r.all()
    );
    assert!(
        r.stderr.contains("run the same command again"),
        "{}",
        r.all()
    );
    drop(lock);

    // Each file is either as it was or completely retagged; no temp file is left.
    for f in &files[..2] {
        assert_eq!(header_provider(f), "codex-lb");
        let text = std::fs::read_to_string(f).unwrap();
        assert_eq!(text.lines().count(), 3);
        for line in text.lines() {
            serde_json::from_str::<Value>(line).expect("a whole JSON line");
        }
    }
    for f in &files[2..] {
        assert_eq!(
            std::fs::read(f).unwrap(),
            orig(f),
            "{} untouched",
            f.display()
        );
    }
    assert!(temp_files(h).is_empty(), "{:?}", temp_files(h));
    assert_eq!(
        db_providers(&db),
        db_before,
        "rows change only after every file did"
    );

    // Running it again finishes the job.
    let r = codex_lb(h, &["codex", "retag-sessions"], &[]);
    assert!(r.ok, "{}", r.all());
    assert!(r.stdout.contains("retagged 2 session(s)"), "{}", r.all());
    assert!(r.stdout.contains("4 thread row(s) updated"), "{}", r.all());
    for f in &files {
        assert_eq!(header_provider(f), "codex-lb");
    }
    assert_eq!(backups(h).len(), 2);

    // Two undos walk back both runs: every file byte-identical, every row back.
    let r = codex_lb(h, &["codex", "retag-sessions", "--undo"], &[]);
    assert!(
        r.ok && r.stdout.contains("restored 2 session file(s)"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("4 thread row(s) set back to openai"),
        "{}",
        r.all()
    );
    let r = codex_lb(h, &["codex", "retag-sessions", "--undo"], &[]);
    assert!(
        r.ok && r.stdout.contains("restored 2 session file(s)"),
        "{}",
        r.all()
    );
    for f in &files {
        assert_eq!(
            std::fs::read(f).unwrap(),
            orig(f),
            "{} restored",
            f.display()
        );
    }
    assert_eq!(db_providers(&db), db_before);
    assert!(temp_files(h).is_empty());
}

#[test]
fn undo_keeps_lines_codex_appended_after_the_retag() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let f = write_session(h, "2026/02/01", "live", "openai");
    let before = std::fs::read_to_string(&f).unwrap();
    assert!(codex_lb(h, &["codex", "retag-sessions"], &[]).ok);
    let appended =
        "{\"timestamp\":\"2026-02-01T00:00:09.000Z\",\"type\":\"event_msg\",\"payload\":{}}\n";
    let mut now = std::fs::read_to_string(&f).unwrap();
    now.push_str(appended);
    std::fs::write(&f, &now).unwrap();
    let r = codex_lb(h, &["codex", "retag-sessions", "--undo"], &[]);
    assert!(r.ok, "{}", r.all());
    assert!(r.stdout.contains("got only their tag back"), "{}", r.all());
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        format!("{before}{appended}")
    );
}

// === doctor ===

/// Runs `codex-lb doctor` (always against `env`'s gateway); returns the run and its failed checks.
fn doctor(home: &Path, env: &Env, extra: &[&str], envs: &[(&str, &str)]) -> (Run, Vec<String>) {
    let gateway = format!("http://{}", env.addr);
    let mut args = vec!["doctor", "--gateway", gateway.as_str()];
    args.extend_from_slice(extra);
    let r = codex_lb(home, &args, envs);
    let failed = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("FAIL  "))
        .map(|rest| rest.split("  ").next().unwrap_or("").trim().to_string())
        .collect();
    (r, failed)
}

/// A Codex home that `setup` pointed at `env`'s gateway.
fn healthy_home(env: &Env, extra: &[&str]) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let gateway = format!("http://{}", env.addr);
    let mut args = vec![
        "codex",
        "setup",
        "--gateway",
        gateway.as_str(),
        "--model",
        "gpt-5.5",
    ];
    args.extend_from_slice(extra);
    let r = codex_lb(home.path(), &args, &[]);
    assert!(r.ok, "{}", r.all());
    home
}

fn edit_config(home: &Path, f: impl FnOnce(String) -> String) {
    let path = home.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let new = f(text.clone());
    assert_ne!(new, text, "the fault must change the config");
    std::fs::write(&path, new).unwrap();
}

#[test]
fn doctor_passes_a_healthy_setup_and_names_each_fault_with_its_fix() {
    let env = Env::start(1);
    let addr = env.addr.to_string();

    let home = healthy_home(&env, &[]);
    let (r, failed) = doctor(home.path(), &env, &["--live"], &[]);
    assert!(r.ok && failed.is_empty(), "{}", r.all());
    for check in [
        "config",
        "provider name",
        "wire_api",
        "base_url",
        "gateway",
        "api key",
        "models",
        "model",
        "websocket",
        "sessions",
        "live turn",
        "clock",
    ] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with("PASS  ") && l[6..].starts_with(check)),
            "{check} should pass:\n{}",
            r.all()
        );
    }
    assert!(!r.stdout.contains("SKIP"), "{}", r.all());
    // With WebSocket asked for, the upgrade is tried and accepted.
    let ws_home = healthy_home(&env, &["--websockets"]);
    let (r, failed) = doctor(ws_home.path(), &env, &[], &[]);
    assert!(r.ok && failed.is_empty(), "{}", r.all());
    assert!(
        r.stdout.lines().any(|l| l.starts_with("PASS  websocket")
            && l.ends_with("the gateway accepted a WebSocket upgrade")),
        "{}",
        r.all()
    );

    // One fault at a time: (what to break, the check that names it, text its fix must carry).
    type Fault = (&'static str, Box<dyn Fn(&Path)>, &'static str, String);
    let faults: Vec<Fault> = vec![
        (
            "wrong wire_api",
            Box::new(|h| {
                edit_config(h, |t| {
                    t.replace("wire_api = \"responses\"", "wire_api = \"chat\"")
                })
            }),
            "wire_api",
            "set wire_api = \"responses\" in [model_providers.codex-lb]".to_string(),
        ),
        (
            "wrong base_url",
            Box::new(|h| edit_config(h, |t| t.replace("/backend-api/codex", "/v1"))),
            "base_url",
            format!(
                "set base_url = \"http://{addr}/backend-api/codex\" in [model_providers.codex-lb]"
            ),
        ),
        (
            "model not in the catalog",
            Box::new(|h| {
                edit_config(h, |t| {
                    t.replace("model = \"gpt-5.5\"", "model = \"gpt-0-nope\"")
                })
            }),
            "model",
            "set model to one of gpt-5.5".to_string(),
        ),
        (
            "sessions tagged openai",
            Box::new(|h| {
                write_session(h, "2026/03/01", "old", "openai");
            }),
            "sessions",
            "codex-lb codex retag-sessions --from openai --to codex-lb".to_string(),
        ),
    ];
    for (what, breaks, check, fix) in faults {
        let home = healthy_home(&env, &[]);
        breaks(home.path());
        let (r, failed) = doctor(home.path(), &env, &[], &[]);
        assert!(!r.ok, "{what}: doctor must exit non-zero\n{}", r.all());
        assert_eq!(
            failed,
            [check],
            "{what}: exactly {check} fails\n{}",
            r.all()
        );
        assert!(
            r.stdout.contains(&format!("fix: {fix}")),
            "{what}: fix {fix:?} missing\n{}",
            r.all()
        );
    }
}

#[test]
fn doctor_checks_the_key_when_key_auth_is_on() {
    let env = Env::start(1);
    ureq::put(&env.url("/api/settings"))
        .send_string(r#"{"api_key_auth": true}"#)
        .unwrap();
    let created = env.post_json("/api/keys", br#"{"name": "doctor"}"#);
    let key = created["key"].as_str().unwrap().to_string();

    // No env_key at all: the gateway wants a key.
    let home = healthy_home(&env, &[]);
    let (r, failed) = doctor(home.path(), &env, &[], &[]);
    assert!(
        !r.ok && failed.contains(&"api key".to_string()),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("--key-env CODEX_LB_API_KEY"),
        "{}",
        r.all()
    );

    // env_key set, but the variable is missing.
    let home = healthy_home(&env, &["--key-env", "CODEX_LB_API_KEY"]);
    let (r, failed) = doctor(home.path(), &env, &[], &[]);
    assert!(!r.ok, "{}", r.all());
    assert_eq!(
        failed.first().map(String::as_str),
        Some("api key"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("fix: export CODEX_LB_API_KEY=sk-clb-"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("CODEX_LB_API_KEY, which is not set"),
        "{}",
        r.all()
    );

    // A wrong key is refused with the gateway's reason.
    let (r, failed) = doctor(
        home.path(),
        &env,
        &[],
        &[("CODEX_LB_API_KEY", "sk-clb-not-a-real-key")],
    );
    assert!(
        !r.ok && failed.contains(&"api key".to_string()),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("refused the key in CODEX_LB_API_KEY"),
        "{}",
        r.all()
    );

    // The right key: everything passes, including a live turn.
    let (r, failed) = doctor(
        home.path(),
        &env,
        &["--live"],
        &[("CODEX_LB_API_KEY", &key)],
    );
    assert!(r.ok && failed.is_empty(), "{}", r.all());
    assert!(r.stdout.contains("accepted (key auth on)"), "{}", r.all());
}

#[test]
fn doctor_fails_when_the_gateway_is_down_or_config_is_missing() {
    let home = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gateway = format!("http://127.0.0.1:{port}");
    let r = codex_lb(home.path(), &["doctor", "--gateway", &gateway], &[]);
    assert!(!r.ok, "{}", r.all());
    assert!(r.stdout.contains("FAIL  config"), "{}", r.all());
    assert!(
        r.stdout
            .contains(&format!("fix: codex-lb codex setup --gateway {gateway}")),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("FAIL  gateway"), "{}", r.all());
    assert!(
        r.stdout.contains("fix: start it with `codex-lb serve`"),
        "{}",
        r.all()
    );
}

// === the real Codex CLI ===

#[test]
fn the_codex_cli_completes_a_turn_after_setup_and_its_session_is_recognised() {
    let env = Env::start(1);
    let home = healthy_home(&env, &[]);
    let work = tempfile::tempdir().unwrap();
    let answer = "Configured by codex-lb codex setup.";
    let prompt = format!("Say hello. [[mock {{\"text\":\"{answer}\",\"deltas\":3}}]]");
    let mut child = Command::new(codex_bin())
        .args(["exec", "--skip-git-repo-check", &prompt])
        .env("CODEX_HOME", home.path())
        .env("HOME", home.path())
        .env_remove("OPENAI_API_KEY")
        .env_remove("CODEX_LB_API_KEY")
        .env("RUST_LOG", "error")
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("codex starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("codex exec did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(answer),
        "codex: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let rows = env.get_json("/api/requests?limit=20");
    assert!(
        rows["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["route"] == "responses"
                && r["outcome"] == "completed"
                && r["model"] == "gpt-5.5"),
        "{rows}"
    );

    // The session Codex just wrote is read as tagged codex-lb, in its file and its state database.
    let r = codex_lb(
        home.path(),
        &[
            "codex",
            "retag-sessions",
            "--from",
            "codex-lb",
            "--to",
            "openai",
            "--dry-run",
        ],
        &[],
    );
    assert!(r.ok, "{}", r.all());
    assert!(
        r.stdout
            .contains("would retag 1 session(s) from codex-lb to openai"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("table threads: 1 row(s) tagged codex-lb"),
        "{}",
        r.all()
    );
    let (r, failed) = doctor(home.path(), &env, &[], &[]);
    assert!(r.ok && failed.is_empty(), "{}", r.all());
    assert!(
        r.stdout
            .contains("all 1 saved session(s) are tagged codex-lb"),
        "{}",
        r.all()
    );
}

#[test]
fn setup_writes_through_a_symlinked_config_and_a_relative_codex_home() {
    let dotfiles = tempfile::tempdir().unwrap();
    let real = dotfiles.path().join("codex-config.toml");
    std::fs::write(&real, "# from my dotfiles\n").unwrap();
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&real, home.path().join("config.toml")).unwrap();
    let r = codex_lb(home.path(), &["codex", "setup"], &[]);
    assert!(r.ok, "{}", r.all());
    let link = std::fs::symlink_metadata(home.path().join("config.toml")).unwrap();
    assert!(link.file_type().is_symlink(), "the link is kept");
    let text = std::fs::read_to_string(&real).unwrap();
    assert!(text.starts_with("# from my dotfiles\n"), "{text}");
    assert!(text.contains("wire_api = \"responses\""), "{text}");

    // A relative CODEX_HOME is resolved, so a backup names absolute paths to restore.
    let parent = tempfile::tempdir().unwrap();
    write_session(&parent.path().join("rel"), "2026/04/01", "r", "openai");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_codex-lb"))
            .args(args)
            .env("CODEX_HOME", "rel")
            .current_dir(parent.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    run(&["codex", "retag-sessions"]);
    let base = parent.path().join("rel/codex-lb-backups");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(base.join(&names_in(&base)[0]).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert!(
        manifest["files"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with(parent.path().to_str().unwrap()),
        "{manifest}"
    );
    run(&["codex", "retag-sessions", "--undo"]);
}
