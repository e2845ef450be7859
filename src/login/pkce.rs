//! The secrets of one authorization-code sign-in (PROTOCOL.md §5.2): the PKCE verifier and its
//! S256 challenge, the `state` that ties the callback to this sign-in, and the authorize URL.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;
use sha2::{Digest, Sha256};

use crate::control::jobs::OAUTH_CLIENT_ID;

/// Scopes codex-lb asks for: enough to refresh and read the account's identity.
pub const SCOPE: &str = "openid profile email offline_access";
/// `originator` sent on the authorize URL.
const ORIGINATOR: &str = "codex_cli_rs";

/// URL-safe random text of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    B64URL.encode(buf)
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    /// A fresh verifier (64 random bytes) and its challenge.
    pub fn generate() -> Pkce {
        let verifier = random_token(64);
        let challenge = challenge_of(&verifier);
        Pkce {
            verifier,
            challenge,
        }
    }
}

pub fn challenge_of(verifier: &str) -> String {
    B64URL.encode(Sha256::digest(verifier.as_bytes()))
}

/// `{issuer}/oauth/authorize?…` for a browser sign-in.
pub fn authorize_url(issuer: &str, redirect_uri: &str, challenge: &str, state: &str) -> String {
    let base = format!("{}/oauth/authorize", issuer.trim_end_matches('/'));
    let params = [
        ("response_type", "code"),
        ("client_id", OAUTH_CLIENT_ID),
        ("redirect_uri", redirect_uri),
        ("scope", SCOPE),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("id_token_add_organizations", "true"),
        ("codex_cli_simplified_flow", "true"),
        ("state", state),
        ("originator", ORIGINATOR),
    ];
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    format!("{base}?{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_is_s256_of_the_verifier() {
        // Expected value computed independently (Python hashlib + urlsafe_b64encode, unpadded).
        assert_eq!(
            challenge_of("codex-lb verifier"),
            "rodgsMJQfaDhMAkyByWtdKNPtem7iu-Eca2SEXxe9Mw"
        );
        let p = Pkce::generate();
        assert_eq!(p.verifier.len(), 86);
        assert_eq!(challenge_of(&p.verifier), p.challenge);
        assert_ne!(Pkce::generate().verifier, p.verifier);
    }

    #[test]
    fn authorize_url_carries_every_parameter_encoded() {
        let u = authorize_url(
            "https://auth.example/",
            "http://localhost:1455/auth/callback",
            "ch",
            "st",
        );
        let parsed = url::Url::parse(&u).unwrap();
        assert_eq!(parsed.path(), "/oauth/authorize");
        let q: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(q["redirect_uri"], "http://localhost:1455/auth/callback");
        assert_eq!(q["scope"], SCOPE);
        assert_eq!(q["client_id"], OAUTH_CLIENT_ID);
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["state"], "st");
    }
}
