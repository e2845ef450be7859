//! Bearer-token and `ChatGPT-Account-ID` checks shared by every backend route (PROTOCOL.md 1.3,
//! 3.4).

use hyper::{HeaderMap, Response, StatusCode};
use serde_json::Value;

use crate::mock::body::MockBody;
use crate::mock::credentials::AccessDenied;
use crate::mock::errors;
use crate::mock::reply::ReplyCtx;
use crate::mock::state::Shared;

pub struct Rejection {
    pub status: StatusCode,
    pub body: Value,
    /// The account the rejection's rate-limit headers describe, when one can be named.
    pub account: Option<usize>,
}

/// The account index the request may act for.
pub fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<usize, Rejection> {
    let header_account = headers
        .get("chatgpt-account-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let token = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let checked = token.map_or(Err(AccessDenied::Unknown), |t| {
        shared.credentials().check_access(t, shared.clock.now())
    });
    let account = match checked {
        Ok(a) => a,
        Err(AccessDenied::Unknown) => {
            return Err(Rejection {
                status: StatusCode::UNAUTHORIZED,
                body: errors::invalid_api_key(),
                account: header_account.and_then(|id| shared.account_by_id(id)),
            })
        }
        Err(AccessDenied::Expired(a)) => {
            return Err(Rejection {
                status: StatusCode::UNAUTHORIZED,
                body: errors::token_expired(),
                account: Some(a),
            })
        }
    };
    if header_account != Some(shared.account_id(account)) {
        return Err(Rejection {
            status: StatusCode::FORBIDDEN,
            body: errors::account_mismatch(),
            account: Some(account),
        });
    }
    Ok(account)
}

/// The reply context of a backend request and the account it acts for, counted in the stats; a
/// refused token is answered as the upstream would.
pub fn authenticated(
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<(ReplyCtx, usize), Box<Response<MockBody>>> {
    let mut ctx = ReplyCtx::from_request(shared, headers);
    match authenticate(shared, headers) {
        Ok(account) => {
            ctx.account = Some(account);
            shared.stats.account(shared.account_id(account));
            Ok((ctx, account))
        }
        Err(rej) => {
            ctx.account = rej.account;
            Err(Box::new(ctx.json(shared, rej.status, &rej.body)))
        }
    }
}
