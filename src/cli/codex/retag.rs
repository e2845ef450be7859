//! `codex-lb codex retag-sessions`: moves saved Codex sessions from one provider to another.
//!
//! `codex resume` lists only the sessions of the current provider. Codex records the provider in
//! two places: the header line of each rollout file (`sessions/YYYY/MM/DD/rollout-*.jsonl`, a
//! JSON line `{"type":"session_meta","payload":{…,"model_provider":"openai",…}}`; very old files
//! carried `model_provider` at the top level of their first line) and the `model_provider`
//! column of the `threads` table in its state database (`state_5.sqlite`). Only those change:
//! the header line is parsed and re-serialized, every other line keeps its bytes.
//!
//! Order of work, so that an interruption at any point loses nothing: plan every change in
//! memory; copy each file to change (and the database) into
//! `$CODEX_HOME/codex-lb-backups/<time>/` with a manifest of before/after hashes and the database
//! rows; then replace each file atomically and update the rows in one transaction. `--undo`
//! reads the newest manifest not yet undone and puts back what that run changed: a file still as
//! the run left it gets its old bytes back; one Codex has written to since only gets its header's
//! provider back; rows go back by rowid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};

use super::{config, fsutil, HomeArgs, BUILTIN_PROVIDER, PROVIDER_ID};

/// Where backups go, inside the Codex home.
pub const BACKUP_DIR: &str = "codex-lb-backups";
const MANIFEST: &str = "manifest.json";
const MANIFEST_KIND: &str = "codex-lb retag-sessions";
/// Folders of the Codex home that hold rollout files (archived sessions are kept consistent with
/// the state database, which lists them too).
const SESSION_DIRS: [&str; 2] = ["sessions", "archived_sessions"];
/// Lines and bytes read from the top of a rollout file to find its header when only counting.
const HEAD_LINES: usize = 4;
const HEAD_LIMIT: u64 = 8 * 1024 * 1024;
/// How long to wait for a running Codex to release the state database.
const DB_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct RetagArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// The provider the sessions are tagged with now.
    #[arg(long, default_value = BUILTIN_PROVIDER, value_name = "ID")]
    pub from: String,
    /// The provider to tag them with (the one config.toml selects).
    #[arg(long, default_value = PROVIDER_ID, value_name = "ID")]
    pub to: String,
    /// Show what would change and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Put back what the newest retag changed (again to go one further back).
    #[arg(long, conflicts_with_all = ["dry_run", "from", "to"])]
    pub undo: bool,
}

pub fn run(args: RetagArgs) -> Result<(), String> {
    let home = args.home.dir()?;
    if args.undo {
        return undo(&home);
    }
    if args.from.is_empty() || args.to.is_empty() || args.from == args.to {
        return Err("--from and --to must be two different provider ids".into());
    }
    let plan = plan(&home, &args.from, &args.to)?;
    print_plan(&plan, &args, &home);
    if args.dry_run {
        println!("dry run: nothing written");
        return Ok(());
    }
    if plan.files.is_empty() && plan.dbs.iter().all(|d| d.rows() == 0) {
        println!("nothing to change");
        return Ok(());
    }
    apply(&home, &plan, &args.from, &args.to)
}

// === scanning ===

/// A session header line's provider and JSON, or `None` for any other line. A header is
/// `{"type":"session_meta","payload":{…}}`, or on the first line an object with a top-level
/// `model_provider` and no `type`.
fn header(line: &[u8], first: bool) -> Option<(Option<String>, Value)> {
    // Cheap test first: most lines are long transcript items.
    if memchr::memmem::find(line, b"session_meta").is_none()
        && !(first && memchr::memmem::find(line, b"model_provider").is_some())
    {
        return None;
    }
    let v = serde_json::from_slice::<Value>(line).ok()?;
    let provider = |o: &Value| {
        o.get("model_provider")
            .and_then(Value::as_str)
            .map(String::from)
    };
    if v.get("type").and_then(Value::as_str) == Some("session_meta") {
        let p = v.get("payload").and_then(provider).or_else(|| provider(&v));
        return Some((p, v));
    }
    if first && v.get("type").is_none() && v.get("model_provider").is_some() {
        return Some((provider(&v), v));
    }
    None
}

/// Sets the provider of a header line's JSON.
fn retag_value(v: &mut Value, to: &str) {
    let target = match v.get_mut("payload") {
        Some(p) if p.get("model_provider").is_some() => p,
        _ => v,
    };
    if let Some(obj) = target.as_object_mut() {
        obj.insert("model_provider".into(), Value::from(to));
    }
}

/// The file's provider (its first header's) and, when any header is tagged `from`, the file with
/// those headers retagged `to`; every other byte is unchanged.
fn retag_bytes(bytes: &[u8], from: &str, to: &str) -> (Option<String>, Option<Vec<u8>>) {
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len() + 16);
    let mut provider = None;
    let mut seen_meta = false;
    let mut changed = false;
    let mut first = true;
    for raw in bytes.split_inclusive(|b| *b == b'\n') {
        let body = raw.strip_suffix(b"\n").unwrap_or(raw);
        let (body, cr) = match body.strip_suffix(b"\r") {
            Some(b) => (b, true),
            None => (body, false),
        };
        let is_first = first && !body.iter().all(u8::is_ascii_whitespace);
        if is_first {
            first = false;
        }
        if let Some((p, mut v)) = header(body, is_first) {
            if !seen_meta {
                provider = p.clone();
                seen_meta = true;
            }
            if p.as_deref() == Some(from) {
                retag_value(&mut v, to);
                if let Ok(text) = serde_json::to_string(&v) {
                    out.extend_from_slice(text.as_bytes());
                    if cr {
                        out.push(b'\r');
                    }
                    if raw.ends_with(b"\n") {
                        out.push(b'\n');
                    }
                    changed = true;
                    continue;
                }
            }
        }
        out.extend_from_slice(raw);
    }
    (provider, changed.then_some(out))
}

/// Rollout files under the session folders, sorted.
fn session_files(home: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = SESSION_DIRS.iter().map(|d| home.join(d)).collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let Ok(kind) = e.file_type() else {
                continue;
            };
            let p = e.path();
            if kind.is_dir() {
                stack.push(p);
            } else if kind.is_file() && p.extension().is_some_and(|x| x == "jsonl") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Sessions per provider (the provider of each rollout file's header), for `doctor` and `setup`.
pub fn count_tags(home: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for f in session_files(home) {
        let Ok(head) = read_head(&f) else {
            continue;
        };
        if let (Some(p), _) = retag_bytes(&head, "", "") {
            *counts.entry(p).or_insert(0) += 1;
        }
    }
    counts
}

/// The first lines of a rollout file, where its header is, without reading the transcript.
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{BufRead, Read};
    let mut r = std::io::BufReader::new(std::fs::File::open(path)?).take(HEAD_LIMIT);
    let mut out = Vec::new();
    for _ in 0..HEAD_LINES {
        if r.read_until(b'\n', &mut out)? == 0 {
            break;
        }
    }
    Ok(out)
}

/// Rows of one table to retag.
struct TableChange {
    table: String,
    rowids: Vec<i64>,
}

struct DbChange {
    path: PathBuf,
    tables: Vec<TableChange>,
    /// Why the database could not be read, if it could not.
    error: Option<String>,
}

impl DbChange {
    fn rows(&self) -> usize {
        self.tables.iter().map(|t| t.rowids.len()).sum()
    }
}

struct Plan {
    /// Session files with a header tagged `from` (read again when applied, one at a time).
    files: Vec<PathBuf>,
    /// Sessions per provider before the change.
    tags: BTreeMap<String, usize>,
    /// Rollout files with no session header.
    untagged: usize,
    unreadable: Vec<(PathBuf, String)>,
    dbs: Vec<DbChange>,
}

fn plan(home: &Path, from: &str, to: &str) -> Result<Plan, String> {
    if !home.is_dir() {
        return Err(format!(
            "{} does not exist (set CODEX_HOME?)",
            home.display()
        ));
    }
    let mut plan = Plan {
        files: Vec::new(),
        tags: BTreeMap::new(),
        untagged: 0,
        unreadable: Vec::new(),
        dbs: Vec::new(),
    };
    for path in session_files(home) {
        if path.to_str().is_none() {
            // The manifest could not name it to restore it.
            plan.unreadable
                .push((path, "its path is not UTF-8; left as it is".into()));
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                plan.unreadable.push((path, e.to_string()));
                continue;
            }
        };
        let (provider, after) = retag_bytes(&bytes, from, to);
        match provider {
            Some(p) => *plan.tags.entry(p).or_insert(0) += 1,
            None => plan.untagged += 1,
        }
        if after.is_some() {
            plan.files.push(path);
        }
    }
    for db in state_dbs(home) {
        plan.dbs.push(match db_plan(&db, from) {
            Ok(tables) => DbChange {
                path: db,
                tables,
                error: None,
            },
            Err(e) => DbChange {
                path: db,
                tables: Vec::new(),
                error: Some(e),
            },
        });
    }
    Ok(plan)
}

/// Codex's state databases (`state_5.sqlite`, …): in the Codex home, `$CODEX_SQLITE_HOME` and the
/// config's `sqlite_home`.
fn state_dbs(home: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![home.to_path_buf()];
    if let Some(d) = std::env::var_os("CODEX_SQLITE_HOME").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(Some((_, doc))) = config::load(home) {
        if let Some(d) = config::effective(&doc, None).sqlite_home {
            dirs.push(PathBuf::from(d));
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("state")
                && name.ends_with(".sqlite")
                && e.path().is_file()
                && e.path().to_str().is_some()
            {
                let p = e.path();
                let canon = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
                if !out
                    .iter()
                    .any(|o: &PathBuf| std::fs::canonicalize(o).ok().as_ref() == Some(&canon))
                {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn open_db(path: &Path) -> Result<Connection, String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    conn.busy_timeout(DB_BUSY_TIMEOUT)
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Thread tables (a name containing `thread`) that have a `model_provider` column, read from
/// the schema rather than assumed.
fn thread_tables(conn: &Connection) -> Result<Vec<String>, rusqlite::Error> {
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
    let names: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for name in names {
        if !name.to_ascii_lowercase().contains("thread") {
            continue;
        }
        let mut info = conn.prepare(&format!("PRAGMA table_info({})", quote_ident(&name)))?;
        let columns: Vec<String> = info
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<Result<_, _>>()?;
        if columns.iter().any(|c| c == "model_provider") {
            out.push(name);
        }
    }
    Ok(out)
}

fn db_plan(path: &Path, from: &str) -> Result<Vec<TableChange>, String> {
    let conn = open_db(path)?;
    let read = || -> Result<Vec<TableChange>, rusqlite::Error> {
        let mut out = Vec::new();
        for table in thread_tables(&conn)? {
            let mut stmt = conn.prepare(&format!(
                "SELECT rowid FROM {} WHERE model_provider = ?1 ORDER BY rowid",
                quote_ident(&table)
            ))?;
            let rowids: Vec<i64> = stmt
                .query_map([from], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            out.push(TableChange { table, rowids });
        }
        Ok(out)
    };
    read().map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn print_plan(plan: &Plan, args: &RetagArgs, home: &Path) {
    let would = if args.dry_run {
        "would retag"
    } else {
        "retagging"
    };
    let tags: Vec<String> = plan.tags.iter().map(|(p, n)| format!("{n} {p}")).collect();
    println!(
        "{}: {} session file(s) ({})",
        home.display(),
        plan.tags.values().sum::<usize>() + plan.untagged,
        if tags.is_empty() {
            "none tagged".to_string()
        } else {
            format!("tagged {}", tags.join(", "))
        }
    );
    for (p, e) in &plan.unreadable {
        println!("  cannot read {}: {e}", p.display());
    }
    if args.dry_run {
        for path in &plan.files {
            println!("  {}", path.display());
        }
    }
    println!(
        "{would} {} session(s) from {} to {}",
        plan.files.len(),
        args.from,
        args.to
    );
    for db in &plan.dbs {
        match &db.error {
            Some(e) => println!("  {e}: its threads are left as they are"),
            None if db.tables.is_empty() => println!(
                "  {}: no threads table with a model_provider column",
                db.path.display()
            ),
            None => {
                for t in &db.tables {
                    println!(
                        "  {} table {}: {} row(s) tagged {}",
                        db.path.display(),
                        t.table,
                        t.rowids.len(),
                        args.from
                    );
                }
            }
        }
    }
}

// === applying ===

/// The backup's name for a file: its path inside the Codex home, else `external/<name>`.
fn backup_name(home: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix(home) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => PathBuf::from("external").join(path.file_name().unwrap_or_default()),
    }
}

fn apply(home: &Path, plan: &Plan, from: &str, to: &str) -> Result<(), String> {
    let (stamp, ms) = fsutil::timestamp();
    let dir = fsutil::fresh_dir(&home.join(BACKUP_DIR), &stamp)
        .map_err(|e| format!("cannot create a backup folder in {}: {e}", home.display()))?;
    let mut manifest = json!({
        "kind": MANIFEST_KIND,
        "version": 1,
        "created_at": stamp,
        "created_unix_ms": ms as u64,
        "from": from,
        "to": to,
        "status": "started",
        "files": [],
        "databases": [],
    });
    // 1. Copies first: nothing changes until every one is on disk.
    let backed_up = (|| -> Result<(), String> {
        let mut files = Vec::new();
        for path in &plan.files {
            let before =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let after = retag_bytes(&before, from, to).1;
            let name = backup_name(home, path);
            fsutil::write_durable(&dir.join(&name), &before)
                .map_err(|e| format!("cannot back up {}: {e}", path.display()))?;
            files.push(json!({
                "path": path.to_string_lossy(),
                "backup": name.to_string_lossy(),
                "sha256_before": fsutil::sha256_hex(&before),
                "sha256_after": fsutil::sha256_hex(after.as_deref().unwrap_or(&before)),
            }));
        }
        manifest["files"] = Value::Array(files);
        let mut dbs = Vec::new();
        for db in plan.dbs.iter().filter(|d| d.rows() > 0) {
            let name = backup_name(home, &db.path);
            let copy = dir.join(&name);
            if let Some(parent) = copy.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            // VACUUM INTO makes a consistent copy, including pages still in the WAL.
            open_db(&db.path)?
                .execute("VACUUM INTO ?1", [copy.to_string_lossy()])
                .map_err(|e| format!("cannot back up {}: {e}", db.path.display()))?;
            dbs.push(json!({
                "path": db.path.to_string_lossy(),
                "backup": name.to_string_lossy(),
                "tables": db.tables.iter().filter(|t| !t.rowids.is_empty()).map(|t| json!({
                    "table": t.table,
                    "rowids": t.rowids,
                })).collect::<Vec<_>>(),
            }));
        }
        manifest["databases"] = Value::Array(dbs);
        write_manifest(&dir, &manifest)?;
        fsutil::sync_dir(&dir).map_err(|e| e.to_string())
    })();
    if let Err(e) = backed_up {
        // Nothing was changed yet: the partial backup is of no use.
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!("{e}; nothing was changed"));
    }
    println!("backup: {}", dir.display());

    // 2. Files, each replaced whole.
    let mut done = 0;
    for path in &plan.files {
        if let Err(e) = replace_file(path, from, to) {
            return Err(format!(
                "{e}\n{done} of {} session(s) were retagged before this; each file is either \
                 as it was or fully retagged. Fix the cause and run the same command again to \
                 finish, or `codex-lb codex retag-sessions --undo` to put back what changed",
                plan.files.len()
            ));
        }
        done += 1;
    }
    // 3. Database rows, one transaction per database.
    let mut rows = 0;
    for db in plan.dbs.iter().filter(|d| d.rows() > 0) {
        rows += update_rows(&db.path, &db.tables, from, to).map_err(|e| {
            format!(
                "{e}\nall {done} session file(s) were retagged; this database is unchanged: run \
                 the same command again to finish, or --undo"
            )
        })?;
    }
    manifest["status"] = json!("complete");
    write_manifest(&dir, &manifest)?;
    println!(
        "retagged {done} session(s) from {from} to {to}; {rows} thread row(s) updated \
         (undo with `codex-lb codex retag-sessions --undo`)"
    );
    Ok(())
}

/// Rewrites a file with its headers retagged. The file is read again here, so lines Codex
/// appended since the backup are kept (a retag only touches header lines).
fn replace_file(path: &Path, from: &str, to: &str) -> Result<(), String> {
    let now = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match retag_bytes(&now, from, to).1 {
        Some(after) => fsutil::write_atomic(path, &after, 0o644)
            .map_err(|e| format!("cannot rewrite {}: {e}", path.display())),
        None => Ok(()),
    }
}

fn update_rows(path: &Path, tables: &[TableChange], from: &str, to: &str) -> Result<usize, String> {
    let mut conn = open_db(path)?;
    let mut run = || -> Result<usize, rusqlite::Error> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut n = 0;
        for t in tables {
            let sql = format!(
                "UPDATE {} SET model_provider = ?1 WHERE rowid = ?2 AND model_provider = ?3",
                quote_ident(&t.table)
            );
            let mut stmt = tx.prepare(&sql)?;
            for id in &t.rowids {
                n += stmt.execute(rusqlite::params![to, id, from])?;
            }
        }
        tx.commit()?;
        Ok(n)
    };
    run().map_err(|e| format!("cannot update {}: {e}", path.display()))
}

fn write_manifest(dir: &Path, manifest: &Value) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(manifest).unwrap_or_default();
    fsutil::write_atomic(&dir.join(MANIFEST), &text, 0o600)
        .map_err(|e| format!("cannot write the backup manifest in {}: {e}", dir.display()))
}

// === undo ===

/// The newest retag backup not yet undone.
fn latest_backup(home: &Path) -> Result<(PathBuf, Value), String> {
    let base = home.join(BACKUP_DIR);
    let entries = std::fs::read_dir(&base)
        .map_err(|_| format!("no retag backups in {}: nothing to undo", base.display()))?;
    let mut best: Option<(u64, String, PathBuf, Value)> = None;
    for e in entries.filter_map(Result::ok) {
        let dir = e.path();
        let Ok(text) = std::fs::read(dir.join(MANIFEST)) else {
            continue;
        };
        let Ok(m) = serde_json::from_slice::<Value>(&text) else {
            continue;
        };
        if m["kind"] != MANIFEST_KIND || m["status"] == "undone" {
            continue;
        }
        let key = (
            m["created_unix_ms"].as_u64().unwrap_or(0),
            e.file_name().to_string_lossy().into_owned(),
        );
        if best
            .as_ref()
            .is_none_or(|(ms, name, _, _)| key > (*ms, name.clone()))
        {
            best = Some((key.0, key.1, dir, m));
        }
    }
    best.map(|(_, _, d, m)| (d, m))
        .ok_or_else(|| format!("no retag backup left to undo in {}", base.display()))
}

fn undo(home: &Path) -> Result<(), String> {
    let (dir, mut manifest) = latest_backup(home)?;
    let from = manifest["from"].as_str().unwrap_or_default().to_string();
    let to = manifest["to"].as_str().unwrap_or_default().to_string();
    println!("undoing the retag of {} ({from} to {to})", dir.display());
    let (mut restored, mut headers_only, mut untouched) = (0, 0, 0);
    let mut errors = Vec::new();
    for f in manifest["files"].as_array().cloned().unwrap_or_default() {
        let (Some(path), Some(name)) = (f["path"].as_str(), f["backup"].as_str()) else {
            continue;
        };
        let path = PathBuf::from(path);
        let outcome = (|| -> Result<&'static str, String> {
            let now = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok("gone"),
                Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
            };
            let hash = fsutil::sha256_hex(&now);
            if f["sha256_before"] == hash.as_str() {
                return Ok("untouched");
            }
            if f["sha256_after"] == hash.as_str() {
                let old = std::fs::read(dir.join(name))
                    .map_err(|e| format!("cannot read the backup of {}: {e}", path.display()))?;
                fsutil::write_atomic(&path, &old, 0o644)
                    .map_err(|e| format!("cannot restore {}: {e}", path.display()))?;
                return Ok("restored");
            }
            // Codex wrote to it after the retag: keep its new lines, put the tag back.
            if let (_, Some(back)) = retag_bytes(&now, &to, &from) {
                fsutil::write_atomic(&path, &back, 0o644)
                    .map_err(|e| format!("cannot restore {}: {e}", path.display()))?;
                return Ok("header");
            }
            Ok("untouched")
        })();
        match outcome {
            Ok("restored") => restored += 1,
            Ok("header") => headers_only += 1,
            Ok(_) => untouched += 1,
            Err(e) => errors.push(e),
        }
    }
    let mut rows = 0;
    for db in manifest["databases"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let Some(path) = db["path"].as_str() else {
            continue;
        };
        let tables: Vec<TableChange> = db["tables"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| {
                        Some(TableChange {
                            table: t["table"].as_str()?.to_string(),
                            rowids: t["rowids"]
                                .as_array()?
                                .iter()
                                .filter_map(Value::as_i64)
                                .collect(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        match update_rows(Path::new(path), &tables, &to, &from) {
            Ok(n) => rows += n,
            Err(e) => errors.push(format!(
                "{e} (a full copy from before the retag is {})",
                dir.join(db["backup"].as_str().unwrap_or_default())
                    .display()
            )),
        }
    }
    if !errors.is_empty() {
        return Err(format!(
            "undo did not finish:\n  {}\nrun --undo again once the cause is fixed",
            errors.join("\n  ")
        ));
    }
    manifest["status"] = json!("undone");
    write_manifest(&dir, &manifest)?;
    println!(
        "restored {restored} session file(s) byte for byte{}{}; {rows} thread row(s) set back to {from}",
        if headers_only > 0 {
            format!(", {headers_only} written to since got only their tag back")
        } else {
            String::new()
        },
        if untouched > 0 {
            format!(", {untouched} needed nothing")
        } else {
            String::new()
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = r#"{"timestamp":"2026-01-02T03:04:05.000Z","type":"session_meta","payload":{"id":"a","cwd":"/w","originator":"codex_exec","cli_version":"0.169.0","source":"exec","model_provider":"openai","base_instructions":{"text":"x\ny ’"}}}"#;
    const ITEM: &str = r#"{"timestamp":"2026-01-02T03:04:06.000Z","type":"response_item","payload":{"type":"message","role":"user","content":[{"type":"input_text","text":"model_provider openai  1.50"}]}}"#;

    #[test]
    fn only_the_header_line_changes() {
        let file = format!("{META}\n{ITEM}\n");
        let (p, out) = retag_bytes(file.as_bytes(), "openai", "codex-lb");
        assert_eq!(p.as_deref(), Some("openai"));
        let out = String::from_utf8(out.unwrap()).unwrap();
        let expected_meta = META.replace(
            r#""model_provider":"openai""#,
            r#""model_provider":"codex-lb""#,
        );
        assert_eq!(out, format!("{expected_meta}\n{ITEM}\n"));
    }

    #[test]
    fn other_providers_and_already_retagged_files_are_left() {
        let file = format!("{META}\n{ITEM}\n");
        assert_eq!(retag_bytes(file.as_bytes(), "azure", "codex-lb").1, None);
        let tagged = file.replace(
            r#""model_provider":"openai""#,
            r#""model_provider":"codex-lb""#,
        );
        let (p, out) = retag_bytes(tagged.as_bytes(), "openai", "codex-lb");
        assert_eq!(p.as_deref(), Some("codex-lb"));
        assert_eq!(out, None);
    }

    #[test]
    fn legacy_top_level_headers_crlf_and_a_missing_final_newline() {
        let file = "{\"id\":\"x\",\"model_provider\":\"openai\"}\r\n{\"type\":\"event_msg\",\"payload\":{}}";
        let (p, out) = retag_bytes(file.as_bytes(), "openai", "codex-lb");
        assert_eq!(p.as_deref(), Some("openai"));
        assert_eq!(
            String::from_utf8(out.unwrap()).unwrap(),
            "{\"id\":\"x\",\"model_provider\":\"codex-lb\"}\r\n{\"type\":\"event_msg\",\"payload\":{}}"
        );
        // A top-level model_provider on a later line is not a header.
        let later = "{\"type\":\"event_msg\"}\n{\"model_provider\":\"openai\"}\n";
        assert_eq!(
            retag_bytes(later.as_bytes(), "openai", "codex-lb"),
            (None, None)
        );
    }

    #[test]
    fn broken_lines_are_kept() {
        let file = format!("{META}\nnot json model_provider\n\u{0}\u{ff}\n");
        let (_, out) = retag_bytes(file.as_bytes(), "openai", "codex-lb");
        let out = out.unwrap();
        assert!(out.ends_with(b"\nnot json model_provider\n\x00\xc3\xbf\n"));
    }
}
