//! What every thread of one gateway shares: settings, the published snapshots, the channels to the
//! control and ledger threads, per-worker metrics and the shutdown state.
//!
//! Workers mostly read from here (snapshots via `ArcSwap::load`) or `try_send`. The one lock on
//! the request path is a shard of `response_owners`, held for a single map operation by turns that
//! complete or continue a response.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use crossbeam_utils::CachePadded;

use crate::accounts::continuity::{ModelPlans, ResponseOwners};
use crate::accounts::AccountsSnapshot;
use crate::config::Settings;
use crate::control::ControlMsg;
use crate::keys::KeysSnapshot;
use crate::ledger::{LedgerQuery, UsageEvent};
use crate::login::LoginFlows;
use crate::metrics::CoreMetrics;

pub struct Shared {
    pub settings: Settings,
    pub accounts: ArcSwap<AccountsSnapshot>,
    /// Proxy API keys and whether they are required.
    pub keys: ArcSwap<KeysSnapshot>,
    /// Resolved upstream addresses; refreshed by the control thread (DNS never runs on a worker).
    pub upstream_addrs: ArcSwap<Vec<SocketAddr>>,
    /// Client TLS for the upstream and the OAuth issuer (whichever is https).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `--upstream-proxy` with its resolved addresses: every outbound connection tunnels through it.
    pub egress: Option<Arc<crate::upstream::egress::Egress>>,
    pub ledger_tx: Sender<Box<UsageEvent>>,
    pub ledger_queries: Sender<LedgerQuery>,
    pub control_tx: Sender<ControlMsg>,
    pub metrics: Vec<Arc<CachePadded<CoreMetrics>>>,
    /// Which account issued each recent response (`previous_response_id` routing).
    pub response_owners: ResponseOwners,
    /// Which plans offer each model, learned from the upstream catalogs fetched so far.
    pub model_plans: ModelPlans,
    /// Prices per model (embedded table, overridden by `<data dir>/prices.json`).
    pub pricing: Arc<crate::pricing::Pricing>,
    /// TLS for clients, when a certificate is configured (reloaded on change).
    pub server_tls: Option<Arc<crate::server_tls::ServerTls>>,
    /// Dashboard sessions and who may use the admin API.
    pub admin_auth: Arc<crate::dashboard::auth::AdminAuth>,
    /// Pending and recent sign-ins started through the admin API.
    pub login: Arc<LoginFlows>,
    pub shutdown: ShutdownState,
    pub started: Instant,
}

#[derive(Default)]
pub struct ShutdownState {
    requested: AtomicBool,
    deadline: OnceLock<Instant>,
    /// Listener fds of the workers, registered once at start. Shutting them down wakes every
    /// worker's pending accept at once (monoio's Ctrl-C only wakes one thread).
    listeners: Mutex<Vec<RawFd>>,
}

impl ShutdownState {
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// When in-flight streams must end; `None` until shutdown is requested.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.get().copied()
    }

    pub fn register_listener(&self, fd: RawFd) {
        // Called once per worker at start, never on the request path.
        if let Ok(mut l) = self.listeners.lock() {
            l.push(fd);
        }
    }

    /// Stops accepting on every worker and starts the grace period. Idempotent.
    pub fn request(&self, grace: std::time::Duration) {
        if self.requested.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.deadline.set(Instant::now() + grace);
        if let Ok(l) = self.listeners.lock() {
            for fd in l.iter() {
                // SAFETY: the fds belong to listeners that live until their worker exits, which
                // happens only after this call returns (workers wait for `requested`).
                unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
            }
        }
    }
}
