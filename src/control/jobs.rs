//! The jobs thread: the control plane's network calls (token refresh, usage polling). It runs
//! one job at a time on its own small runtime and reports each result back to the control
//! thread, so the control thread itself never waits on the network.
//!
//! Single flight per account is the control thread's rule (it never queues a second refresh for
//! an account whose first has not reported back), which is what makes `refresh_token_reused`
//! impossible: a refresh token is spent once.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::Endpoint;
use super::ControlMsg;
use crate::accounts::quota::{self, QuotaReading};
use crate::accounts::{now_unix, Tokens};
use crate::config::UpstreamUrl;

/// The Codex CLI's OAuth client id (codex-lb shares it; PROTOCOL.md §5.1).
pub const OAUTH_CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
/// Network timeout of one job.
const JOB_TIMEOUT: Duration = Duration::from_secs(10);

pub enum Job {
    Refresh {
        id: String,
        refresh_token: String,
    },
    PollUsage {
        id: String,
        authorization: Bytes,
        account_header: Option<Bytes>,
    },
}

#[derive(Debug)]
pub enum RefreshOutcome {
    Refreshed(Tokens),
    /// The refresh token is spent, expired or revoked: someone must sign in again.
    Permanent(String),
    /// Network trouble before the request left, or a 5xx: try again later.
    Transient(String),
    /// The request left but no answer came back: the refresh token may be spent, and replaying
    /// it could trip the issuer's reuse detection. Never retried.
    Uncertain(String),
}

#[derive(Debug)]
pub enum UsageOutcome {
    Reading(QuotaReading),
    Unauthorized,
    Deactivated(String),
    Transient(String),
}

#[derive(Debug)]
pub enum JobResult {
    Refresh {
        id: String,
        outcome: RefreshOutcome,
    },
    Usage {
        id: String,
        token: u64,
        outcome: UsageOutcome,
    },
}

struct Endpoints {
    upstream: UpstreamUrl,
    auth: UpstreamUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    egress: Option<Arc<crate::upstream::egress::Egress>>,
}

impl Endpoints {
    fn endpoint(&self, url: &UpstreamUrl) -> Result<Endpoint, String> {
        // Resolved per job: this thread may block, and addresses change. Through a proxy the
        // proxy resolves the name.
        let addrs = match self.egress {
            Some(_) => Vec::new(),
            None => super::resolve(url).map_err(|e| format!("cannot resolve {}: {e}", url.host))?,
        };
        Ok(Endpoint {
            url: url.clone(),
            addrs,
            tls: self.tls.clone(),
            egress: self.egress.clone(),
        })
    }
}

pub fn spawn(
    upstream: UpstreamUrl,
    auth: UpstreamUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    egress: Option<Arc<crate::upstream::egress::Egress>>,
    jobs: Receiver<Job>,
    results: Sender<ControlMsg>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("codex-lb-jobs".into()).spawn(move || {
        let ep = Endpoints {
            upstream,
            auth,
            tls,
            egress,
        };
        let mut rt = match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "jobs thread cannot start a runtime; no token refresh or usage polling");
                return;
            }
        };
        for job in jobs.iter() {
            let result = rt.block_on(run(&ep, job));
            if results.send(ControlMsg::JobDone(result)).is_err() {
                break;
            }
        }
    })
}

async fn run(ep: &Endpoints, job: Job) -> JobResult {
    match job {
        Job::Refresh { id, refresh_token } => JobResult::Refresh {
            outcome: refresh(ep, &refresh_token).await,
            id,
        },
        Job::PollUsage {
            id,
            authorization,
            account_header,
        } => JobResult::Usage {
            token: super::token_hash(&authorization),
            outcome: poll_usage(ep, &authorization, account_header.as_ref()).await,
            id,
        },
    }
}

#[derive(Deserialize)]
struct TokenReply {
    id_token: Option<String>,
    access_token: Option<String>,
    refresh_token: Option<String>,
}

/// Codes after which a refresh token can never work again (PROTOCOL.md §3.5, §5.4).
const PERMANENT_CODES: &[&str] = &[
    "refresh_token_expired",
    "refresh_token_reused",
    "refresh_token_invalidated",
    "invalid_grant",
    "token_invalidated",
    "token_expired",
    "app_session_terminated",
    "account_session_expired",
    "account_auth_invalidated",
];

fn error_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    e.get("code")
        .and_then(Value::as_str)
        .or_else(|| e.as_str())
        .or_else(|| v.get("code").and_then(Value::as_str))
        .map(str::to_string)
}

async fn refresh(ep: &Endpoints, refresh_token: &str) -> RefreshOutcome {
    let endpoint = match ep.endpoint(&ep.auth) {
        Ok(e) => e,
        Err(e) => return RefreshOutcome::Transient(e),
    };
    let body = json!({
        "client_id": OAUTH_CLIENT_ID,
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "scope": "openid profile email",
    })
    .to_string();
    let headers: [(&str, &[u8]); 2] = [
        ("content-type", b"application/json"),
        ("accept", b"application/json"),
    ];
    let reply = match endpoint
        .request(
            "POST",
            "/oauth/token",
            &headers,
            body.as_bytes(),
            JOB_TIMEOUT,
        )
        .await
    {
        Ok(r) => r,
        Err(e) if e.before_sending() => return RefreshOutcome::Transient(e.to_string()),
        // Once sent, a refresh is never replayed blindly: the old token may already be spent.
        Err(e) => return RefreshOutcome::Uncertain(e.to_string()),
    };
    if reply.status == 200 {
        return match serde_json::from_slice::<TokenReply>(&reply.body) {
            Ok(TokenReply {
                id_token: Some(i),
                access_token: Some(a),
                refresh_token: Some(r),
            }) => RefreshOutcome::Refreshed(Tokens {
                access_token: a,
                refresh_token: r,
                id_token: i,
            }),
            _ => RefreshOutcome::Transient("token reply is missing tokens".into()),
        };
    }
    let code = error_code(&reply.body);
    if reply.status == 401
        || code
            .as_deref()
            .is_some_and(|c| PERMANENT_CODES.contains(&c))
    {
        return RefreshOutcome::Permanent(code.unwrap_or_else(|| format!("http_{}", reply.status)));
    }
    RefreshOutcome::Transient(code.unwrap_or_else(|| format!("http_{}", reply.status)))
}

async fn poll_usage(
    ep: &Endpoints,
    authorization: &Bytes,
    account_header: Option<&Bytes>,
) -> UsageOutcome {
    let endpoint = match ep.endpoint(&ep.upstream) {
        Ok(e) => e,
        Err(e) => return UsageOutcome::Transient(e),
    };
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("authorization", authorization),
        ("accept", b"application/json"),
    ];
    if let Some(h) = account_header {
        headers.push(("chatgpt-account-id", h));
    }
    // The reading is as of the asking: a refusal seen while the poll was on its way is newer.
    let asked_ms = quota::now_ms();
    let reply = match endpoint
        .request("GET", "/wham/usage", &headers, b"", JOB_TIMEOUT)
        .await
    {
        Ok(r) => r,
        Err(e) => return UsageOutcome::Transient(e.to_string()),
    };
    let text = String::from_utf8_lossy(&reply.body).to_ascii_lowercase();
    match reply.status {
        200 => match quota::from_usage_payload(&reply.body, now_unix()) {
            Some(r) => UsageOutcome::Reading(quota::QuotaReading {
                observed_ms: asked_ms,
                ..r
            }),
            None => UsageOutcome::Transient("usage payload without windows".into()),
        },
        401 | 403 => UsageOutcome::Unauthorized,
        // 402 is the upstream's "no plan for this"; a 404 may be an account that is gone, but also
        // an upstream without this endpoint (a proxy, a mock): only an explicit message counts.
        402 => UsageOutcome::Deactivated("usage endpoint answered 402 (no active plan)".into()),
        _ if text.contains("account has been deactivated")
            || text.contains("account_deactivated") =>
        {
            UsageOutcome::Deactivated("account has been deactivated".into())
        }
        s => UsageOutcome::Transient(format!("usage endpoint answered {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_in_every_shape() {
        assert_eq!(
            error_code(br#"{"error":{"code":"refresh_token_reused"}}"#).as_deref(),
            Some("refresh_token_reused")
        );
        assert_eq!(
            error_code(br#"{"error":"invalid_grant","error_description":"x"}"#).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(
            error_code(br#"{"error":{"message":"m"},"code":"c"}"#).as_deref(),
            Some("c")
        );
        assert_eq!(error_code(b"<html>"), None);
    }
}
