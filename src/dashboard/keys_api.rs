//! `/api/keys`: proxy API keys over the admin API. The control thread owns the records; these
//! handlers only translate HTTP to its commands.

use serde_json::{json, Value};

use super::{ask, busy};
use crate::control::keys::{KeyCmd, KeyPatch, KeySpec};
use crate::control::ControlMsg;
use crate::http::error_body::ApiError;
use crate::worker::Worker;

const LIST_PATH: &str = "/api/keys";
const ONE_PREFIX: &str = "/api/keys/";
const REGENERATE_SUFFIX: &str = "/regenerate";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysRoute {
    List,
    Create,
    Update,
    Revoke,
    /// `POST /api/keys/{id}/regenerate`: a new secret, shown once.
    Regenerate,
}

impl KeysRoute {
    /// `Some(Err)` is a key path with the wrong method.
    pub fn parse(method: &str, path: &str) -> Option<Result<KeysRoute, ()>> {
        if path == LIST_PATH {
            return Some(match method {
                "GET" => Ok(KeysRoute::List),
                "POST" => Ok(KeysRoute::Create),
                _ => Err(()),
            });
        }
        let rest = path.strip_prefix(ONE_PREFIX)?;
        if let Some(id) = rest.strip_suffix(REGENERATE_SUFFIX) {
            if id.is_empty() || id.contains('/') {
                return None;
            }
            return Some(if method == "POST" {
                Ok(KeysRoute::Regenerate)
            } else {
                Err(())
            });
        }
        if rest.is_empty() || rest.contains('/') {
            return None;
        }
        Some(match method {
            "PATCH" => Ok(KeysRoute::Update),
            "DELETE" => Ok(KeysRoute::Revoke),
            _ => Err(()),
        })
    }
}

fn key_error(msg: String, id: &str) -> ApiError {
    if msg.starts_with("no key") {
        ApiError::new(
            404,
            "invalid_request_error",
            "key_not_found",
            format!("no key {id}"),
        )
    } else {
        ApiError::invalid_request("invalid_value", msg)
    }
}

pub async fn answer(
    w: &Worker,
    route: KeysRoute,
    path: &str,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    let rest = path.strip_prefix(ONE_PREFIX).unwrap_or_default();
    let id = match route {
        KeysRoute::Regenerate => rest.strip_suffix(REGENERATE_SUFFIX).unwrap_or(rest),
        _ => rest,
    }
    .to_string();
    let invalid = |what: &str, e: serde_json::Error| {
        ApiError::invalid_request("invalid_json", format!("expected {what}: {e}"))
    };
    match route {
        KeysRoute::List => ask(w, |reply| ControlMsg::Keys(KeyCmd::List { reply }))
            .await
            .map(|keys| (200, json!({ "keys": keys })))
            .ok_or_else(busy),
        KeysRoute::Create => {
            let spec: KeySpec = serde_json::from_slice(body).map_err(|e| {
                invalid(
                    "{\"name\", \"expires_at\"?, \"limits\"?, \"allowed_models\"?, \"allowed_efforts\"?, \"allowed_accounts\"?, \"max_streams\"?, \"requests_per_minute\"?}",
                    e,
                )
            })?;
            match ask(w, |reply| ControlMsg::Keys(KeyCmd::Create { spec, reply })).await {
                // The only time the key itself is shown.
                Some(Ok((secret, info))) => Ok((201, json!({ "key": secret, "api_key": info }))),
                Some(Err(msg)) => Err(ApiError::invalid_request("invalid_value", msg)),
                None => Err(busy()),
            }
        }
        KeysRoute::Update => {
            let patch: KeyPatch =
                serde_json::from_slice(body).map_err(|e| invalid("the key fields to change", e))?;
            let target = id.clone();
            match ask(w, |reply| {
                ControlMsg::Keys(KeyCmd::Update {
                    id: target,
                    patch,
                    reply,
                })
            })
            .await
            {
                Some(Ok(info)) => Ok((200, json!({ "api_key": info }))),
                Some(Err(msg)) => Err(key_error(msg, &id)),
                None => Err(busy()),
            }
        }
        KeysRoute::Regenerate => {
            let target = id.clone();
            match ask(w, |reply| {
                ControlMsg::Keys(KeyCmd::Regenerate { id: target, reply })
            })
            .await
            {
                // The only time the new key is shown.
                Some(Ok((secret, info))) => Ok((200, json!({ "key": secret, "api_key": info }))),
                Some(Err(msg)) => Err(key_error(msg, &id)),
                None => Err(busy()),
            }
        }
        KeysRoute::Revoke => {
            let target = id.clone();
            match ask(w, |reply| {
                ControlMsg::Keys(KeyCmd::Revoke { id: target, reply })
            })
            .await
            {
                Some(Ok(info)) => Ok((200, json!({ "api_key": info }))),
                Some(Err(msg)) => Err(key_error(msg, &id)),
                None => Err(busy()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            KeysRoute::parse("GET", "/api/keys"),
            Some(Ok(KeysRoute::List))
        );
        assert_eq!(
            KeysRoute::parse("POST", "/api/keys"),
            Some(Ok(KeysRoute::Create))
        );
        assert_eq!(KeysRoute::parse("PUT", "/api/keys"), Some(Err(())));
        assert_eq!(
            KeysRoute::parse("DELETE", "/api/keys/key_1"),
            Some(Ok(KeysRoute::Revoke))
        );
        assert_eq!(
            KeysRoute::parse("PATCH", "/api/keys/key_1"),
            Some(Ok(KeysRoute::Update))
        );
        assert_eq!(KeysRoute::parse("GET", "/api/keys/key_1/x"), None);
        assert_eq!(
            KeysRoute::parse("POST", "/api/keys/key_1/regenerate"),
            Some(Ok(KeysRoute::Regenerate))
        );
        for method in ["GET", "PATCH", "DELETE"] {
            assert_eq!(
                KeysRoute::parse(method, "/api/keys/key_1/regenerate"),
                Some(Err(()))
            );
        }
        // A key whose id is `regenerate` is still a key; no id, or a nested path, is no route.
        assert_eq!(
            KeysRoute::parse("PATCH", "/api/keys/regenerate"),
            Some(Ok(KeysRoute::Update))
        );
        assert_eq!(KeysRoute::parse("POST", "/api/keys//regenerate"), None);
        assert_eq!(KeysRoute::parse("POST", "/api/keys/a/b/regenerate"), None);
        assert_eq!(
            KeysRoute::parse("POST", "/api/keys/key_1/regenerate/"),
            None
        );
    }
}
