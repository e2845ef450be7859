//! Reading a Codex `auth.json` (PROTOCOL.md §5.6) and the JWT claims inside its tokens (§5.5).
//!
//! Tokens are decoded without verifying signatures, as the Codex CLI does: the gateway is not the
//! audience of these tokens, it only needs the account id, email, plan and expiry they carry.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Tokens;
use thiserror::Error;

const AUTH_CLAIM: &str = "https://api.openai.com/auth";
const PROFILE_CLAIM: &str = "https://api.openai.com/profile";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthFileError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("auth.json has no ChatGPT tokens (API-key mode files cannot be pooled)")]
    NoTokens,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("{0} is not a JWT")]
    NotJwt(&'static str),
    #[error("no ChatGPT account id in the file or its id_token")]
    NoAccountId,
}

#[derive(Debug, Deserialize)]
struct RawFile {
    #[serde(default)]
    tokens: Option<RawTokens>,
    #[serde(default, alias = "lastRefresh", alias = "lastRefreshAt")]
    last_refresh: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawTokens {
    #[serde(default, alias = "idToken")]
    id_token: Option<String>,
    #[serde(default, alias = "accessToken")]
    access_token: Option<String>,
    #[serde(default, alias = "refreshToken")]
    refresh_token: Option<String>,
    #[serde(default, alias = "accountId")]
    account_id: Option<String>,
}

/// What an import yields: identity from the claims, and the three tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedAuth {
    pub chatgpt_account_id: String,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub plan: Option<String>,
    pub access_token: String,
    pub refresh_token: String,
    pub id_token: String,
    /// `exp` of the access token, unix seconds.
    pub access_expires_at: Option<u64>,
    pub last_refresh: Option<String>,
}

pub fn parse_auth_json(body: &[u8]) -> Result<ImportedAuth, AuthFileError> {
    let raw: RawFile =
        serde_json::from_slice(body).map_err(|e| AuthFileError::Json(e.to_string()))?;
    let t = raw.tokens.ok_or(AuthFileError::NoTokens)?;
    let id_token = t
        .id_token
        .filter(|s| !s.is_empty())
        .ok_or(AuthFileError::Missing("tokens.id_token"))?;
    let access_token = t
        .access_token
        .filter(|s| !s.is_empty())
        .ok_or(AuthFileError::Missing("tokens.access_token"))?;
    let refresh_token = t.refresh_token.unwrap_or_default();
    let id_claims = jwt_claims(&id_token).ok_or(AuthFileError::NotJwt("id_token"))?;
    let access_claims = jwt_claims(&access_token);
    let auth = id_claims.get(AUTH_CLAIM);
    let auth_str = |k: &str| {
        auth.and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    // `account_id` in the file wins over the claim (PROTOCOL.md §5.6).
    let chatgpt_account_id = t
        .account_id
        .filter(|s| !s.is_empty())
        .or_else(|| auth_str("chatgpt_account_id"))
        .ok_or(AuthFileError::NoAccountId)?;
    let email = id_claims
        .get("email")
        .and_then(Value::as_str)
        .or_else(|| {
            id_claims
                .get(PROFILE_CLAIM)
                .and_then(|p| p.get("email"))
                .and_then(Value::as_str)
        })
        .map(str::to_string);
    let plan = auth_str("chatgpt_plan_type").or_else(|| {
        access_claims.as_ref().and_then(|c| {
            c.get(AUTH_CLAIM)?
                .get("chatgpt_plan_type")?
                .as_str()
                .map(str::to_string)
        })
    });
    let user_id = auth_str("chatgpt_user_id")
        .or_else(|| auth_str("user_id"))
        .or_else(|| {
            id_claims
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    let access_expires_at = access_claims
        .as_ref()
        .and_then(|c| c.get("exp"))
        .and_then(Value::as_u64);
    Ok(ImportedAuth {
        chatgpt_account_id,
        user_id,
        email,
        plan,
        access_token,
        refresh_token,
        id_token,
        access_expires_at,
        last_refresh: raw.last_refresh,
    })
}

/// A Codex `auth.json` (PROTOCOL.md §5.6) for these tokens: what `export` writes and what a
/// finished sign-in is imported as. `account_id` defaults to the id token's claim on import.
pub fn to_auth_json(tokens: &Tokens, account_id: Option<&str>, last_refresh: Option<u64>) -> Value {
    let last_refresh = last_refresh.map(|t| {
        humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
            .to_string()
    });
    json!({
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": null,
        "tokens": {
            "id_token": tokens.id_token,
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "account_id": account_id,
        },
        "last_refresh": last_refresh,
    })
}

/// Decodes the payload segment of a JWT. All three segments must be non-empty.
pub fn jwt_claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || p.is_empty() || s.is_empty() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(payload: Value) -> String {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        format!("{}.{}.sig", enc(&json!({"alg":"none"})), enc(&payload))
    }

    #[test]
    fn reads_identity_from_claims_snake_and_camel() {
        let id = jwt(json!({"email":"dev@example.com","sub":"s1",
            AUTH_CLAIM: {"chatgpt_account_id":"acct-1","chatgpt_plan_type":"plus","chatgpt_user_id":"user-1"}}));
        let access = jwt(json!({"exp": 1_900_000_000u64}));
        let snake = json!({"tokens":{"id_token":id,"access_token":access,"refresh_token":"rt"},"last_refresh":"x"});
        let a = parse_auth_json(snake.to_string().as_bytes()).unwrap();
        assert_eq!(a.chatgpt_account_id, "acct-1");
        assert_eq!(a.email.as_deref(), Some("dev@example.com"));
        assert_eq!(a.plan.as_deref(), Some("plus"));
        assert_eq!(a.user_id.as_deref(), Some("user-1"));
        assert_eq!(a.access_expires_at, Some(1_900_000_000));
        let camel = json!({"tokens":{"idToken":id,"accessToken":access,"refreshToken":"rt","accountId":"acct-override"}});
        let b = parse_auth_json(camel.to_string().as_bytes()).unwrap();
        assert_eq!(b.chatgpt_account_id, "acct-override");
    }

    #[test]
    fn refuses_what_cannot_be_pooled() {
        assert_eq!(
            parse_auth_json(br#"{"OPENAI_API_KEY":"sk-x"}"#),
            Err(AuthFileError::NoTokens)
        );
        assert!(matches!(
            parse_auth_json(b"{nope"),
            Err(AuthFileError::Json(_))
        ));
        let bad = json!({"tokens":{"id_token":"abc","access_token":"x.y.z"}});
        assert_eq!(
            parse_auth_json(bad.to_string().as_bytes()),
            Err(AuthFileError::NotJwt("id_token"))
        );
        let no_acct = json!({"tokens":{"id_token":jwt(json!({})),"access_token":"a.b.c"}});
        assert_eq!(
            parse_auth_json(no_acct.to_string().as_bytes()),
            Err(AuthFileError::NoAccountId)
        );
    }
}
