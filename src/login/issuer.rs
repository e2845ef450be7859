//! The OAuth issuer's sign-in endpoints (PROTOCOL.md §5.2–5.3), called from sign-in threads.
//! Each call runs on a small runtime of its own over the same connection and TLS code as the
//! gateway's other control-plane calls.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::accounts::Tokens;
use crate::config::UpstreamUrl;
use crate::control::http::{Endpoint, Reply};
use crate::control::jobs::OAUTH_CLIENT_ID;

const CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct Issuer {
    pub url: UpstreamUrl,
    /// The issuer URL as given (`https://auth.openai.com`), for links shown to people.
    pub base: String,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `--upstream-proxy`, when sign-ins must leave through it.
    pub egress: Option<Arc<crate::upstream::egress::Egress>>,
}

/// What the device-code endpoint handed out.
#[derive(Debug, Clone)]
pub struct DeviceCode {
    pub device_auth_id: String,
    pub user_code: String,
    pub interval: Duration,
    pub expires_in: Duration,
}

/// One poll of a device sign-in.
#[derive(Debug)]
pub enum DevicePoll {
    Pending,
    Approved {
        authorization_code: String,
        code_verifier: String,
    },
    /// The code expired or was refused; the text says why.
    Failed(String),
}

impl Issuer {
    fn call(&self, path: &str, content_type: &str, body: &[u8]) -> Result<Reply, String> {
        let addrs = match self.egress {
            Some(_) => Vec::new(),
            None => crate::control::resolve(&self.url)
                .map_err(|e| format!("cannot resolve {}: {e}", self.url.host))?,
        };
        let ep = Endpoint {
            url: self.url.clone(),
            addrs,
            tls: self.tls.clone(),
            egress: self.egress.clone(),
        };
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let headers: [(&str, &[u8]); 2] = [
            ("content-type", content_type.as_bytes()),
            ("accept", b"application/json"),
        ];
        rt.block_on(ep.request("POST", path, &headers, body, CALL_TIMEOUT))
            .map_err(|e| format!("issuer unreachable: {e}"))
    }

    /// `{issuer}/deviceauth/callback`: the redirect URI a device sign-in's code is bound to.
    pub fn device_redirect_uri(&self) -> String {
        format!("{}/deviceauth/callback", self.base.trim_end_matches('/'))
    }

    /// `{issuer}/codex/device`: where the person types the code.
    pub fn device_verification_url(&self) -> String {
        format!("{}/codex/device", self.base.trim_end_matches('/'))
    }

    /// Exchanges an authorization code for tokens (`grant_type=authorization_code`).
    pub fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Tokens, String> {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("client_id", OAUTH_CLIENT_ID),
                ("code_verifier", verifier),
            ])
            .finish();
        let reply = self.call(
            "/oauth/token",
            "application/x-www-form-urlencoded",
            form.as_bytes(),
        )?;
        if reply.status != 200 {
            return Err(format!(
                "the issuer refused the sign-in code ({}): {}",
                reply.status,
                error_text(&reply.body)
            ));
        }
        #[derive(Deserialize)]
        struct TokenReply {
            id_token: Option<String>,
            access_token: Option<String>,
            refresh_token: Option<String>,
        }
        let t: TokenReply = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("the issuer's token reply is not JSON: {e}"))?;
        let need = |v: Option<String>, name: &str| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| format!("the issuer's token reply has no {name}"))
        };
        Ok(Tokens {
            id_token: need(t.id_token, "id_token")?,
            access_token: need(t.access_token, "access_token")?,
            refresh_token: need(t.refresh_token, "refresh_token")?,
        })
    }

    /// Asks for a device code (`/api/accounts/deviceauth/usercode`).
    pub fn device_code(&self) -> Result<DeviceCode, String> {
        let body = json!({ "client_id": OAUTH_CLIENT_ID }).to_string();
        let reply = self.call(
            "/api/accounts/deviceauth/usercode",
            "application/json",
            body.as_bytes(),
        )?;
        if reply.status == 404 {
            return Err("the issuer does not offer device sign-in".into());
        }
        if reply.status != 200 {
            return Err(format!(
                "the issuer refused a device code ({}): {}",
                reply.status,
                error_text(&reply.body)
            ));
        }
        let v: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("the device-code reply is not JSON: {e}"))?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        // Numbers arrive as strings or integers depending on the issuer's version.
        let secs = |k: &str| {
            v.get(k).and_then(|x| {
                x.as_u64()
                    .or_else(|| x.as_str().and_then(|s| s.trim().parse().ok()))
            })
        };
        Ok(DeviceCode {
            device_auth_id: text("device_auth_id").ok_or("the device-code reply has no id")?,
            user_code: text("user_code")
                .or_else(|| text("usercode"))
                .ok_or("the device-code reply has no user code")?,
            interval: Duration::from_secs(secs("interval").unwrap_or(5).clamp(1, 60)),
            expires_in: Duration::from_secs(secs("expires_in").unwrap_or(900).clamp(1, 3600)),
        })
    }

    pub fn device_poll(&self, code: &DeviceCode) -> DevicePoll {
        let body = json!({
            "device_auth_id": code.device_auth_id,
            "user_code": code.user_code,
        })
        .to_string();
        let reply = match self.call(
            "/api/accounts/deviceauth/token",
            "application/json",
            body.as_bytes(),
        ) {
            Ok(r) => r,
            // A network hiccup is not the person's answer: poll again.
            Err(_) => return DevicePoll::Pending,
        };
        let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let code_of = |v: &Value| {
            v.pointer("/error/code")
                .or_else(|| v.get("error"))
                .or_else(|| v.get("status"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match reply.status {
            200 => {
                let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
                match (text("authorization_code"), text("code_verifier")) {
                    (Some(authorization_code), Some(code_verifier)) => DevicePoll::Approved {
                        authorization_code,
                        code_verifier,
                    },
                    _ if code_of(&v).contains("pending") => DevicePoll::Pending,
                    _ => DevicePoll::Failed("the device sign-in reply has no code".into()),
                }
            }
            // Not yet approved, asked to slow down, or the issuer is briefly unwell: ask again.
            403 | 404 | 429 | 500..=599 => DevicePoll::Pending,
            _ => {
                let c = code_of(&v);
                if c.contains("pending") || c == "slow_down" {
                    DevicePoll::Pending
                } else {
                    DevicePoll::Failed(format!(
                        "the device sign-in ended ({}): {}",
                        reply.status,
                        error_text(&reply.body)
                    ))
                }
            }
        }
    }
}

/// The most telling part of an issuer error body.
fn error_text(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let pick = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    pick("/error_description")
        .or_else(|| pick("/error/message"))
        .or_else(|| pick("/error/code"))
        .or_else(|| pick("/error"))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}
