//! Seeded accounts and the tokens minted for them: JWTs with the PROTOCOL.md 5.5 claims and the
//! Codex `auth.json` (5.6) that imports them.
//!
//! Nobody verifies signatures (the CLI and codex-lb decode the payload only), so the signature is
//! a fixed non-empty tag: the CLI rejects a token whose third segment is empty.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use serde_json::json;

use super::clock::rfc3339;

/// OAuth client id the CLI and codex-lb share (PROTOCOL.md 5.1); tokens are issued "for" it.
pub const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
const ISSUER: &str = "https://auth.openai.com";
const AUTH_CLAIM: &str = "https://api.openai.com/auth";
const PROFILE_CLAIM: &str = "https://api.openai.com/profile";

/// One seeded ChatGPT account as a test sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SeedAccount {
    pub chatgpt_account_id: String,
    pub email: String,
    pub plan_type: String,
    pub access_token: String,
    pub refresh_token: String,
    pub id_token: String,
}

/// Everything minted for account `index`; `exp` is what the mock enforces for the access token.
#[derive(Clone, Debug)]
pub struct Minted {
    pub seed: SeedAccount,
    pub exp: u64,
}

pub fn account_id(index: usize) -> String {
    // uuid-shaped (8-4-4-4-12 would need hex; 4-4-4-4-12 keeps "acct" readable in logs)
    format!("acct-0000-4000-8000-{index:012}")
}

/// The e-mail address account `index` signs in with (`login_hint` matches it).
pub fn email(index: usize) -> String {
    format!("user{index}@example.com")
}

/// The seeded tokens of account `index`.
pub fn mint_account(index: usize, plan: &str, issued_at: u64, ttl_secs: u64) -> Minted {
    mint(index, plan, issued_at, ttl_secs, String::new())
}

/// The tokens a refresh or a new sign-in hands out. `serial` is unique per mint: two refreshes
/// within the same second must still yield different tokens, or the old ones would stay valid.
pub fn mint_rotated(
    index: usize,
    plan: &str,
    issued_at: u64,
    ttl_secs: u64,
    serial: u64,
) -> Minted {
    mint(index, plan, issued_at, ttl_secs, format!("-r{serial}"))
}

fn mint(index: usize, plan: &str, issued_at: u64, ttl_secs: u64, suffix: String) -> Minted {
    let chatgpt_account_id = account_id(index);
    let email = email(index);
    let user_id = format!("user-mock{index:06}");
    let exp = issued_at + ttl_secs;
    let auth = json!({
        "chatgpt_account_id": chatgpt_account_id,
        "chatgpt_plan_type": plan,
        "chatgpt_user_id": user_id,
        "user_id": user_id,
        "organizations": [{"id": format!("org-mock{index:06}"), "is_default": true, "role": "owner", "title": "Personal"}],
    });
    let id_claims = json!({
        "iss": ISSUER,
        "aud": [CLIENT_ID],
        "sub": format!("mock-oauth2|{index}"),
        "email": email,
        "email_verified": true,
        "iat": issued_at,
        "exp": exp,
        "jti": format!("id-mock-{index}-{issued_at}{suffix}"),
        AUTH_CLAIM: auth,
        PROFILE_CLAIM: {"email": email, "email_verified": true},
    });
    // The access token carries the same auth claim (the CLI reads the plan from it); a
    // different audience and `jti` keep it distinct from the id_token.
    let access_claims = json!({
        "iss": ISSUER,
        "aud": ["https://api.openai.com/v1"],
        "client_id": CLIENT_ID,
        "sub": format!("mock-oauth2|{index}"),
        "email": email,
        "iat": issued_at,
        "exp": exp,
        "jti": format!("at-mock-{index}-{issued_at}{suffix}"),
        "scp": ["openid", "profile", "email", "offline_access"],
        AUTH_CLAIM: auth,
        PROFILE_CLAIM: {"email": email, "email_verified": true},
    });
    Minted {
        seed: SeedAccount {
            chatgpt_account_id,
            email,
            plan_type: plan.to_string(),
            access_token: encode_jwt(&access_claims),
            refresh_token: format!("rt_mock_{index}_{issued_at}{suffix}"),
            id_token: encode_jwt(&id_claims),
        },
        exp,
    }
}

fn encode_jwt(claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = URL_SAFE_NO_PAD.encode(b"codex-lb-mock-upstream-signature");
    format!("{header}.{payload}.{signature}")
}

/// The `~/.codex/auth.json` a Codex CLI would hold after logging in to this account.
pub fn auth_json(seed: &SeedAccount, last_refresh_unix: u64) -> String {
    let v = json!({
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": null,
        "tokens": {
            "id_token": seed.id_token,
            "access_token": seed.access_token,
            "refresh_token": seed.refresh_token,
            "account_id": seed.chatgpt_account_id,
        },
        "last_refresh": rfc3339(last_refresh_unix),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(token: &str) -> serde_json::Value {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| !p.is_empty()));
        let raw = URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url payload");
        serde_json::from_slice(&raw).expect("json payload")
    }

    #[test]
    fn tokens_carry_the_claims_codex_reads() {
        let m = mint_account(3, "pro", 1_000, 60);
        for token in [&m.seed.access_token, &m.seed.id_token] {
            let p = payload(token);
            assert_eq!(p["exp"], 1_060);
            assert_eq!(p["email"], "user3@example.com");
            assert_eq!(
                p[AUTH_CLAIM]["chatgpt_account_id"],
                m.seed.chatgpt_account_id
            );
            assert_eq!(p[AUTH_CLAIM]["chatgpt_plan_type"], "pro");
            assert_eq!(p[AUTH_CLAIM]["chatgpt_user_id"], "user-mock000003");
        }
        assert_ne!(m.seed.access_token, m.seed.id_token);
    }

    #[test]
    fn rotated_tokens_differ_within_one_second() {
        let seed = mint_account(1, "plus", 1_000, 60).seed;
        let a = mint_rotated(1, "plus", 1_000, 60, 7).seed;
        let b = mint_rotated(1, "plus", 1_000, 60, 8).seed;
        for (x, y) in [(&seed, &a), (&a, &b)] {
            assert_ne!(x.access_token, y.access_token);
            assert_ne!(x.refresh_token, y.refresh_token);
            assert_ne!(x.id_token, y.id_token);
        }
        assert_eq!(
            payload(&a.access_token)[AUTH_CLAIM]["chatgpt_account_id"],
            a.chatgpt_account_id
        );
        assert_eq!(a.chatgpt_account_id, seed.chatgpt_account_id);
    }

    #[test]
    fn auth_json_has_tokens_and_account() {
        let m = mint_account(0, "plus", 1_764_100_000, 60);
        let v: serde_json::Value =
            serde_json::from_str(&auth_json(&m.seed, 1_764_100_000)).unwrap();
        assert_eq!(v["auth_mode"], "chatgpt");
        assert_eq!(v["tokens"]["account_id"], m.seed.chatgpt_account_id);
        assert_eq!(v["tokens"]["access_token"], m.seed.access_token);
        assert_eq!(v["last_refresh"], "2025-11-25T19:46:40.000000Z");
    }
}
