//! Reading `$CODEX_HOME/config.toml` the way the Codex CLI resolves it: top-level keys, then the
//! active profile's (`profile = "…"` or `--profile`) on top, and the selected provider's block.

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item};

pub const CONFIG_FILE: &str = "config.toml";

pub fn config_path(home: &Path) -> PathBuf {
    home.join(CONFIG_FILE)
}

/// The file's text and parsed document; `None` when there is no config yet.
pub fn load(home: &Path) -> Result<Option<(String, DocumentMut)>, String> {
    let path = config_path(home);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let doc = text
        .parse::<DocumentMut>()
        .map_err(|e| format!("{} is not valid TOML: {e}", path.display()))?;
    Ok(Some((text, doc)))
}

/// What the Codex CLI will use, resolved from the document.
#[derive(Debug, Default, Clone)]
pub struct Effective {
    /// The profile whose keys apply, if any.
    pub profile: Option<String>,
    /// Set when the named profile has no table.
    pub missing_profile: bool,
    pub model_provider: Option<String>,
    pub model: Option<String>,
    pub provider: Option<Provider>,
    /// `sqlite_home`, where Codex keeps its state database when not in the Codex home.
    pub sqlite_home: Option<String>,
}

/// The keys of a `[model_providers.ID]` block that matter to the gateway.
#[derive(Debug, Default, Clone)]
pub struct Provider {
    pub id: String,
    pub name: Option<String>,
    pub base_url: Option<String>,
    pub wire_api: Option<String>,
    pub env_key: Option<String>,
    pub supports_websockets: bool,
}

fn str_of(item: Option<&Item>) -> Option<String> {
    item.and_then(Item::as_str).map(str::to_string)
}

/// Resolves the effective settings; `profile` overrides the document's `profile` key.
pub fn effective(doc: &DocumentMut, profile: Option<&str>) -> Effective {
    let root = doc.as_table();
    let profile = profile
        .map(str::to_string)
        .or_else(|| str_of(root.get("profile")));
    let mut out = Effective {
        model_provider: str_of(root.get("model_provider")),
        model: str_of(root.get("model")),
        sqlite_home: str_of(root.get("sqlite_home")),
        ..Effective::default()
    };
    if let Some(name) = &profile {
        match root
            .get("profiles")
            .and_then(Item::as_table_like)
            .and_then(|p| p.get(name))
            .and_then(Item::as_table_like)
        {
            Some(p) => {
                if let Some(v) = str_of(p.get("model_provider")) {
                    out.model_provider = Some(v);
                }
                if let Some(v) = str_of(p.get("model")) {
                    out.model = Some(v);
                }
            }
            None => out.missing_profile = true,
        }
    }
    out.profile = profile;
    if let Some(id) = &out.model_provider {
        out.provider = provider(doc, id);
    }
    out
}

/// The `[model_providers.ID]` block, if the document has one.
pub fn provider(doc: &DocumentMut, id: &str) -> Option<Provider> {
    let block = doc
        .as_table()
        .get("model_providers")
        .and_then(Item::as_table_like)?
        .get(id)
        .and_then(Item::as_table_like)?;
    Some(Provider {
        id: id.to_string(),
        name: str_of(block.get("name")),
        base_url: str_of(block.get("base_url")),
        wire_api: str_of(block.get("wire_api")),
        env_key: str_of(block.get("env_key")),
        supports_websockets: block
            .get("supports_websockets")
            .and_then(Item::as_bool)
            .unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
model = "gpt-5.4"
model_provider = "openai"
profile = "lb"

[model_providers.codex-lb]
name = "OpenAI"
base_url = "http://127.0.0.1:2455/backend-api/codex"
wire_api = "responses"
env_key = "CODEX_LB_API_KEY"
supports_websockets = true

[profiles.lb]
model_provider = "codex-lb"
model = "gpt-5.5"
"#;

    #[test]
    fn the_active_profile_wins_over_top_level_keys() {
        let doc: DocumentMut = CONFIG.parse().unwrap();
        let e = effective(&doc, None);
        assert_eq!(e.profile.as_deref(), Some("lb"));
        assert_eq!(e.model_provider.as_deref(), Some("codex-lb"));
        assert_eq!(e.model.as_deref(), Some("gpt-5.5"));
        let p = e.provider.unwrap();
        assert_eq!(p.wire_api.as_deref(), Some("responses"));
        assert_eq!(p.env_key.as_deref(), Some("CODEX_LB_API_KEY"));
        assert!(p.supports_websockets);
    }

    #[test]
    fn a_missing_profile_is_reported_and_top_level_keys_apply() {
        let doc: DocumentMut = CONFIG.parse().unwrap();
        let e = effective(&doc, Some("nope"));
        assert!(e.missing_profile);
        assert_eq!(e.model_provider.as_deref(), Some("openai"));
        assert!(e.provider.is_none());
    }

    #[test]
    fn dotted_and_inline_provider_blocks_are_read() {
        let doc: DocumentMut =
            "model_provider = \"x\"\nmodel_providers.x = { name = \"OpenAI\", wire_api = \"responses\" }\n"
                .parse()
                .unwrap();
        let p = effective(&doc, None).provider.unwrap();
        assert_eq!(p.name.as_deref(), Some("OpenAI"));
        assert_eq!(p.wire_api.as_deref(), Some("responses"));
    }
}
