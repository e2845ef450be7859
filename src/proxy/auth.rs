//! Step 3: who is calling a proxy route. With key auth on, every call needs a live key
//! (`Authorization: Bearer sk-clb-…`); with it off, loopback callers need none and others are
//! refused unless the owner opted into an open gateway. A valid key always names the caller, so
//! its rules and its usage apply even when keys are optional. A paused key is refused either way:
//! its holder is told so rather than served on the pool without the key's rules.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::accounts::now_unix;
use crate::http::error_body::ApiError;
use crate::http::request::RequestHead;
use crate::keys::{KeyView, KEY_PREFIX};
use crate::worker::Worker;

/// A refused caller: the answer, and the key it presented when that key exists (so the refusal
/// is recorded against it).
pub struct Refused {
    pub err: ApiError,
    pub key_id: Option<Arc<str>>,
}

fn unauthorized(message: &str) -> Box<Refused> {
    Box::new(Refused {
        err: ApiError::new(401, "authentication_error", "invalid_api_key", message),
        key_id: None,
    })
}

/// A known key its owner paused: refused (and recorded against it) until resumed.
fn paused(key: &KeyView) -> Box<Refused> {
    Box::new(Refused {
        err: ApiError::new(
            401,
            "authentication_error",
            "api_key_paused",
            "API key is paused",
        ),
        key_id: Some(Arc::clone(&key.id)),
    })
}

/// The bearer token of the request, if any.
fn bearer(head: &RequestHead) -> Option<&str> {
    let v = head.header_str("authorization")?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub fn authenticate(
    w: &Worker,
    head: &RequestHead,
    peer: SocketAddr,
) -> Result<Option<Arc<KeyView>>, Box<Refused>> {
    let snap = w.shared.keys.load();
    let now = now_unix();
    let presented = bearer(head);
    if !snap.auth_required {
        if !crate::access::from_this_machine(peer, head) && !w.shared.settings.insecure_allow_remote
        {
            return Err(unauthorized(
                "Proxy authentication must be configured before remote access is allowed: turn \
                 on API key auth (`codex-lb serve --api-key-auth`, or PUT /api/settings \
                 {\"api_key_auth\": true}) and give each user a key (`codex-lb keys create`)",
            ));
        }
        let key = presented
            .filter(|k| k.starts_with(KEY_PREFIX))
            .and_then(|k| snap.find(k))
            .filter(|v| !v.revoked && v.expires_at.is_none_or(|t| t > now));
        if let Some(k) = key.filter(|k| k.paused) {
            return Err(paused(k));
        }
        return Ok(key.cloned());
    }
    let Some(presented) = presented else {
        return Err(unauthorized(
            "Missing API key in Authorization header: send `Authorization: Bearer sk-clb-…` \
             (for Codex, set env_key = \"CODEX_LB_API_KEY\" in the provider and export the key)",
        ));
    };
    let Some(key) = snap.find(presented) else {
        return Err(unauthorized("Invalid API key"));
    };
    let refuse = |message: &str| {
        let mut r = unauthorized(message);
        r.key_id = Some(Arc::clone(&key.id));
        r
    };
    if key.revoked {
        return Err(refuse("API key has been revoked"));
    }
    if key.expires_at.is_some_and(|t| t <= now) {
        return Err(refuse("API key has expired"));
    }
    if key.paused {
        return Err(paused(key));
    }
    Ok(Some(Arc::clone(key)))
}
