//! What a worker tells the control thread about accounts, throttled so that thousands of replies
//! a second become a few messages: quota readings (sent when they move, or at most once a second
//! per account) and refused tokens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::accounts::now_unix;
use crate::accounts::quota::QuotaReading;
use crate::control::{ControlMsg, Observation};
use crate::worker::Worker;

/// A reading that moved less than this is not worth a message...
const MIN_CHANGE_PERCENT: f64 = 1.0;
/// ...unless the last one sent is this old.
const MAX_SILENCE: Duration = Duration::from_secs(1);

pub fn quota(w: &Worker, id: &Arc<str>, reading: QuotaReading) {
    let used = reading.max_used().unwrap_or(0.0);
    let now = Instant::now();
    {
        let mut sent = w.quota_sent.borrow_mut();
        if let Some((at, last)) = sent.get(id) {
            let moved =
                (used - last).abs() >= MIN_CHANGE_PERCENT || (used >= 100.0) != (*last >= 100.0);
            if !moved && now.duration_since(*at) < MAX_SILENCE {
                return;
            }
        }
        sent.insert(Arc::clone(id), (now, used));
    }
    if used >= 100.0 {
        // This worker stops sending there at once; the others learn it from the snapshot.
        let reset = [reading.primary, reading.secondary]
            .into_iter()
            .flatten()
            .filter(|w| w.used_percent >= 100.0)
            .filter_map(|w| w.reset_at)
            .max();
        if let Some(reset) = reset {
            let wait = Duration::from_secs(reset.saturating_sub(now_unix()).max(1));
            w.accounts
                .borrow_mut()
                .cool_down(id, now + wait, Some(reset));
        }
    }
    send(
        w,
        Observation::Quota {
            id: Arc::clone(id),
            reading,
        },
    );
}

/// The upstream refused `authorization` for this account.
pub fn auth_failed(w: &Worker, id: &Arc<str>, authorization: &[u8]) {
    let token = crate::control::token_hash(authorization);
    send(
        w,
        Observation::AuthFailed {
            id: Arc::clone(id),
            token,
        },
    );
}

pub fn send(w: &Worker, obs: Observation) {
    if w.shared
        .control_tx
        .try_send(ControlMsg::Observe(obs))
        .is_err()
    {
        tracing::warn!("control channel full; an account observation was dropped");
    }
}
