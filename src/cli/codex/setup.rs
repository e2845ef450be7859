//! `codex-lb codex setup`: writes the gateway into `$CODEX_HOME/config.toml`.
//!
//! The file is edited as a document (toml_edit), not re-serialized: only the keys listed in
//! [`apply`] change, each keeping its comment and spacing, and every other line stays byte for
//! byte. A run that would change nothing writes nothing, not even a backup.

use std::path::Path;

use clap::Args;
use toml_edit::{DocumentMut, InlineTable, Item, Table, TableLike, Value};

use super::config::{self, CONFIG_FILE};
use super::{diff, fsutil, retag, HomeArgs, BUILTIN_PROVIDER, CODEX_PATH, PROVIDER_ID};

#[derive(Debug, Args)]
pub struct SetupArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// The gateway's address; the provider's base_url becomes <gateway>/backend-api/codex.
    #[arg(long, value_name = "URL", default_value = super::DEFAULT_GATEWAY)]
    pub gateway: String,
    /// The environment variable holding your sk-clb-… key, for a gateway with key auth on
    /// (written as env_key; e.g. CODEX_LB_API_KEY). Without it an existing env_key is kept.
    #[arg(long, value_name = "NAME")]
    pub key_env: Option<String>,
    /// The model Codex asks for (written as `model`; without it an existing one is kept).
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Set supports_websockets = true in the provider block: Codex then streams over one
    /// WebSocket per session (first tokens sooner). Without it an existing setting is kept.
    #[arg(long)]
    pub websockets: bool,
    /// Write model_provider (and model) into [profiles.NAME] instead of the top level, so
    /// `codex --profile NAME` uses the gateway and plain `codex` keeps its current provider.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Also set chatgpt_base_url to the gateway, so the CLI's /status usage view shows the
    /// pool's usage (the gateway answers /api/codex/usage).
    #[arg(long)]
    pub status_via_gateway: bool,
    /// Print the change as a diff and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What a setup run writes; built from the arguments.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Normalized gateway URL, without a trailing `/`.
    pub gateway: String,
    pub key_env: Option<String>,
    pub model: Option<String>,
    pub websockets: bool,
    pub profile: Option<String>,
    pub status_via_gateway: bool,
}

pub fn run(args: SetupArgs) -> Result<(), String> {
    let home = args.home.dir()?;
    let gateway = super::normalize_gateway(&args.gateway)?;
    if let Some(k) = &args.key_env {
        if !super::valid_env_name(k) {
            return Err(format!(
                "--key-env {k:?} is not an environment variable name (letters, digits, _)"
            ));
        }
    }
    if args.profile.as_deref().is_some_and(str::is_empty) {
        return Err("--profile needs a name".into());
    }
    if args.model.as_deref().is_some_and(str::is_empty) {
        return Err("--model needs a name".into());
    }
    let plan = Plan {
        gateway,
        key_env: args.key_env,
        model: args.model,
        websockets: args.websockets,
        profile: args.profile,
        status_via_gateway: args.status_via_gateway,
    };
    let path = config::config_path(&home);
    let (old, doc) = config::load(&home)?.unwrap_or_default();
    let (new, changes) = edit(&old, doc, &plan)?;
    let doc: DocumentMut = new
        .parse()
        .map_err(|e| format!("the edited config.toml would not parse: {e}"))?;
    if new == old {
        println!(
            "{} already points Codex at {}: nothing to change, nothing written",
            path.display(),
            plan.gateway
        );
        hints(&home, &doc, &plan);
        return Ok(());
    }
    if args.dry_run {
        let shown = path.display().to_string();
        print!(
            "{}",
            diff::unified(&old, &new, &shown, &format!("{shown} (after setup)"))
        );
        println!("dry run: {} not written", path.display());
        return Ok(());
    }
    std::fs::create_dir_all(&home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
    let backup = if path.exists() {
        let (stamp, _) = fsutil::timestamp();
        let backup = home.join(format!("{CONFIG_FILE}.codex-lb-backup-{stamp}"));
        fsutil::copy_durable(&path, &backup).map_err(|e| {
            format!(
                "cannot back up {} to {}: {e}",
                path.display(),
                backup.display()
            )
        })?;
        Some(backup)
    } else {
        None
    };
    // A config.toml that links into a dotfiles repo stays a link: the file it points at changes.
    let target = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    fsutil::write_atomic(&target, new.as_bytes(), 0o600)
        .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    println!("updated {}:", path.display());
    for c in &changes {
        println!("  {c}");
    }
    match backup {
        Some(b) => println!("the previous file is at {}", b.display()),
        None => println!("(a new file: there was no config.toml before)"),
    }
    hints(&home, &doc, &plan);
    Ok(())
}

/// What the user may still have to do after setup.
fn hints(home: &Path, doc: &DocumentMut, plan: &Plan) {
    let eff = config::effective(doc, plan.profile.as_deref());
    if plan.profile.is_none() && eff.model_provider.as_deref() != Some(PROVIDER_ID) {
        if let Some(p) = &eff.profile {
            println!(
                "note: profile = {p:?} is active and sets model_provider = {:?}; Codex will not use \
                 the gateway until that changes (or run setup with --profile {p})",
                eff.model_provider.as_deref().unwrap_or("")
            );
        }
    }
    if let Some(p) = &plan.profile {
        println!("use it with `codex --profile {p}`");
    }
    if let Some(var) = eff.provider.as_ref().and_then(|p| p.env_key.as_ref()) {
        if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
            println!(
                "export {var}=sk-clb-… before starting Codex (create a key with \
                 `codex-lb keys create --name you`)"
            );
        }
    }
    let sessions = retag::count_tags(home);
    if let Some(n) = sessions.get(BUILTIN_PROVIDER).filter(|n| **n > 0) {
        println!(
            "{n} saved session(s) are tagged {BUILTIN_PROVIDER} and will not show in \
             `codex resume` under {PROVIDER_ID}: `codex-lb codex retag-sessions --dry-run` shows \
             what a retag changes"
        );
    }
    println!("check it with `codex-lb doctor`");
}

/// The new text of a config whose text is `old` and whose parsed document is `doc`, and one line
/// per key that changed.
pub fn edit(old: &str, mut doc: DocumentMut, plan: &Plan) -> Result<(String, Vec<String>), String> {
    if doc.as_table().is_empty() {
        // Only comments (if anything): the document would keep them as trailing text, after
        // the new keys. Keep them on top, where the user wrote them.
        let mut fresh = DocumentMut::new();
        let changes = apply(&mut fresh, plan)?;
        let mut text = old.to_string();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&fresh.to_string());
        return Ok((text, changes));
    }
    let changes = apply(&mut doc, plan)?;
    Ok((doc.to_string(), changes))
}

/// Edits the document in place; returns one line per key it changed.
fn apply(doc: &mut DocumentMut, plan: &Plan) -> Result<Vec<String>, String> {
    let mut changes = Vec::new();
    let base_url = format!("{}{CODEX_PATH}", plan.gateway);
    {
        let block_path = format!("[model_providers.{PROVIDER_ID}]");
        let (providers, inline) = child_table(doc.as_table_mut(), false, "model_providers", true)?;
        let (block, _) = child_table(providers, inline, PROVIDER_ID, false)?;
        let mut set = |key: &str, v: Value| {
            if set_value(block, key, v.clone()) {
                changes.push(format!("{block_path} {key} = {}", v.to_string().trim()));
            }
        };
        set("name", Value::from("OpenAI"));
        set("base_url", Value::from(base_url.as_str()));
        set("wire_api", Value::from("responses"));
        if let Some(k) = &plan.key_env {
            set("env_key", Value::from(k.as_str()));
        }
        if plan.websockets {
            set("supports_websockets", Value::from(true));
        }
    }
    let (target, label): (&mut dyn TableLike, String) = match &plan.profile {
        Some(p) => {
            let (profiles, inline) = child_table(doc.as_table_mut(), false, "profiles", true)?;
            (
                child_table(profiles, inline, p, false)?.0,
                format!("[profiles.{p}] "),
            )
        }
        None => (doc.as_table_mut(), String::new()),
    };
    let mut set = |key: &str, v: Value| {
        if set_value(target, key, v.clone()) {
            changes.push(format!("{label}{key} = {}", v.to_string().trim()));
        }
    };
    set("model_provider", Value::from(PROVIDER_ID));
    if let Some(m) = &plan.model {
        set("model", Value::from(m.as_str()));
    }
    if plan.status_via_gateway {
        set("chatgpt_base_url", Value::from(plan.gateway.as_str()));
    }
    Ok(changes)
}

/// The table-like child `key` of `parent` and whether it is an inline table. A missing child (or
/// one that is not a table) is created: inline inside an inline table, else a `[table]`, implicit
/// when `implicit` so that it prints no header of its own.
fn child_table<'a>(
    parent: &'a mut dyn TableLike,
    parent_inline: bool,
    key: &str,
    implicit: bool,
) -> Result<(&'a mut dyn TableLike, bool), String> {
    if !parent.get(key).is_some_and(Item::is_table_like) {
        let fresh = if parent_inline {
            Item::Value(Value::InlineTable(InlineTable::new()))
        } else {
            let mut t = Table::new();
            t.set_implicit(implicit);
            Item::Table(t)
        };
        parent.insert(key, fresh);
    }
    let item = parent
        .get_mut(key)
        .ok_or_else(|| format!("cannot add {key} to config.toml"))?;
    let inline = item.is_inline_table();
    item.as_table_like_mut()
        .map(|t| (t, inline))
        .ok_or_else(|| format!("{key} in config.toml is not a table"))
}

/// Sets `key` to `v` unless it already holds that value; an existing value's comment and
/// spacing are kept. Returns whether anything changed.
fn set_value(table: &mut dyn TableLike, key: &str, mut v: Value) -> bool {
    match table.get_mut(key) {
        Some(Item::Value(old)) => {
            if same(old, &v) {
                return false;
            }
            *v.decor_mut() = old.decor().clone();
            *old = v;
        }
        Some(other) => *other = Item::Value(v),
        None => {
            table.insert(key, Item::Value(v));
        }
    }
    true
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.value() == y.value(),
        (Value::Boolean(x), Value::Boolean(y)) => x.value() == y.value(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            gateway: "http://127.0.0.1:2455".into(),
            key_env: None,
            model: Some("gpt-5.5".into()),
            websockets: false,
            profile: None,
            status_via_gateway: false,
        }
    }

    fn run_on(text: &str, plan: &Plan) -> (String, Vec<String>) {
        edit(text, text.parse().unwrap(), plan).unwrap()
    }

    #[test]
    fn an_empty_config_gets_the_readme_block() {
        let (text, changes) = run_on("", &plan());
        assert_eq!(
            text,
            "model_provider = \"codex-lb\"\nmodel = \"gpt-5.5\"\n\n[model_providers.codex-lb]\n\
             name = \"OpenAI\"\nbase_url = \"http://127.0.0.1:2455/backend-api/codex\"\n\
             wire_api = \"responses\"\n"
        );
        assert_eq!(changes.len(), 5, "{changes:?}");
    }

    #[test]
    fn a_comment_only_config_keeps_its_comments_on_top() {
        let (out, _) = run_on("# mine\n\n# more", &plan());
        assert!(
            out.starts_with("# mine\n\n# more\nmodel_provider = \"codex-lb\"\n"),
            "{out}"
        );
        let (again, changes) = run_on(&out, &plan());
        assert_eq!(again, out);
        assert!(changes.is_empty());
    }

    #[test]
    fn a_second_run_changes_nothing() {
        let (once, _) = run_on("", &plan());
        let (twice, changes) = run_on(&once, &plan());
        assert_eq!(once, twice);
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn changed_values_keep_their_comments_and_other_lines_stay() {
        let text = "# top\nmodel = \"o3\" # mine\n\n[model_providers.codex-lb]\n\
                    base_url = \"http://old:1/backend-api/codex\"  # here\nsupports_websockets = true\n\n\
                    [model_providers.other]\nname = \"x\"\n";
        let (out, changes) = run_on(text, &plan());
        assert!(
            out.starts_with("# top\nmodel = \"gpt-5.5\" # mine\nmodel_provider = \"codex-lb\"\n"),
            "{out}"
        );
        assert!(
            out.contains("base_url = \"http://127.0.0.1:2455/backend-api/codex\"  # here\n"),
            "{out}"
        );
        // WebSocket is served: a setting the owner chose stays.
        assert!(out.contains("supports_websockets = true\n"), "{out}");
        assert!(
            out.ends_with("\n[model_providers.other]\nname = \"x\"\n"),
            "{out}"
        );
        assert!(!changes.iter().any(|c| c.contains("supports_websockets")));
    }

    #[test]
    fn options_write_their_keys() {
        let p = Plan {
            key_env: Some("CODEX_LB_API_KEY".into()),
            websockets: true,
            status_via_gateway: true,
            profile: Some("lb".into()),
            ..plan()
        };
        let (out, _) = run_on("model = \"o3\"\n", &p);
        assert!(
            out.starts_with("model = \"o3\"\n"),
            "top level untouched: {out}"
        );
        assert!(
            out.contains("env_key = \"CODEX_LB_API_KEY\"\nsupports_websockets = true\n"),
            "{out}"
        );
        assert!(
            out.contains("[profiles.lb]\nmodel_provider = \"codex-lb\"\nmodel = \"gpt-5.5\"\nchatgpt_base_url = \"http://127.0.0.1:2455\"\n"),
            "{out}"
        );
        assert!(
            !out.contains("[profiles]\n"),
            "no bare parent header: {out}"
        );
    }

    #[test]
    fn inline_and_dotted_provider_tables_are_edited_in_place() {
        let (out, _) = run_on(
            "model_providers = { codex-lb = { name = \"x\" } }\n",
            &Plan {
                model: None,
                ..plan()
            },
        );
        let doc: DocumentMut = out.parse().unwrap();
        let p = super::config::provider(&doc, PROVIDER_ID).unwrap();
        assert_eq!(p.name.as_deref(), Some("OpenAI"));
        assert_eq!(p.wire_api.as_deref(), Some("responses"));
        let (out, _) = run_on(
            "model_providers.codex-lb.name = \"x\"\n",
            &Plan {
                model: None,
                ..plan()
            },
        );
        assert!(
            out.contains("model_providers.codex-lb.name = \"OpenAI\"\n"),
            "{out}"
        );
        assert!(
            out.contains("model_providers.codex-lb.wire_api = \"responses\"\n"),
            "{out}"
        );
    }
}
