//! The control thread: owns the account records, turns worker observations into pool-wide state,
//! publishes the snapshots workers route with, re-resolves the upstream host, and runs the admin
//! commands that change accounts.
//!
//! It may block (sled, DNS); it never runs on a worker. Workers reach it with `try_send` and wait
//! for replies by polling, so a slow control thread delays an admin call, never a proxied stream.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Serialize;

use crate::accounts::registry::{self, RegistryError};
use crate::accounts::{
    is_synthetic_account_id, now_unix, AccountRecord, AccountView, AccountsSnapshot, Block,
    BlockReason, Tokens,
};
use crate::config::UpstreamUrl;
use crate::shared::Shared;
use crate::store::Store;

const DNS_REFRESH: Duration = Duration::from_secs(60);

/// An account as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AccountInfo {
    #[serde(flatten)]
    pub record: AccountRecord,
    pub blocked_until: Option<u64>,
    pub block_reason: Option<BlockReason>,
}

/// What workers learned that every worker must know.
#[derive(Debug, Clone)]
pub enum Observation {
    Blocked { id: Arc<str>, block: Block },
}

pub enum ControlMsg {
    Import {
        body: Vec<u8>,
        reply: Sender<Result<(AccountInfo, bool), String>>,
    },
    List {
        reply: Sender<Vec<AccountInfo>>,
    },
    Remove {
        id: String,
        reply: Sender<Result<bool, String>>,
    },
    Observe(Observation),
    Shutdown,
}

struct Entry {
    record: AccountRecord,
    tokens: Tokens,
    block: Option<Block>,
}

pub struct Control {
    store: Store,
    shared: Arc<Shared>,
    entries: BTreeMap<String, Entry>,
    version: u64,
}

impl Control {
    /// Loads the accounts and publishes the first snapshot (before any worker starts).
    pub fn load(store: Store, shared: Arc<Shared>) -> Result<Control, RegistryError> {
        let entries = registry::load_all(&store)?
            .into_iter()
            .map(|(record, tokens)| {
                (
                    record.id.clone(),
                    Entry {
                        record,
                        tokens,
                        block: None,
                    },
                )
            })
            .collect();
        let mut c = Control {
            store,
            shared,
            entries,
            version: 0,
        };
        c.publish();
        Ok(c)
    }

    fn publish(&mut self) {
        self.version += 1;
        let accounts = self
            .entries
            .values()
            .map(|e| {
                let r = &e.record;
                Arc::new(AccountView {
                    id: Arc::from(r.id.as_str()),
                    email: r.email.clone(),
                    plan: r.plan.clone(),
                    status: r.status,
                    authorization: Bytes::from(format!("Bearer {}", e.tokens.access_token)),
                    account_header: (!is_synthetic_account_id(&r.chatgpt_account_id))
                        .then(|| Bytes::from(r.chatgpt_account_id.clone())),
                    block: e.block,
                })
            })
            .collect();
        self.shared.accounts.store(Arc::new(AccountsSnapshot {
            version: self.version,
            accounts,
        }));
    }

    fn info(e: &Entry) -> AccountInfo {
        let live = e.block.filter(|b| b.until_unix > now_unix());
        AccountInfo {
            record: e.record.clone(),
            blocked_until: live.map(|b| b.until_unix),
            block_reason: live.map(|b| b.reason),
        }
    }

    fn handle(&mut self, msg: ControlMsg) -> bool {
        match msg {
            ControlMsg::Import { body, reply } => {
                let res = registry::import(&self.store, &body).map(|(record, tokens, created)| {
                    let id = record.id.clone();
                    tracing::info!(account = %id, email = ?record.email, created, "account imported");
                    self.entries.insert(id.clone(), Entry { record, tokens, block: None });
                    self.publish();
                    let info = self.entries.get(&id).map(Self::info);
                    (info, created)
                });
                let _ = reply.send(match res {
                    Ok((Some(info), created)) => Ok((info, created)),
                    Ok((None, _)) => Err("account vanished during import".into()),
                    Err(e) => Err(e.to_string()),
                });
            }
            ControlMsg::List { reply } => {
                let _ = reply.send(self.entries.values().map(Self::info).collect());
            }
            ControlMsg::Remove { id, reply } => {
                let res = registry::remove(&self.store, &id).map_err(|e| e.to_string());
                if matches!(res, Ok(true)) {
                    self.entries.remove(&id);
                    self.publish();
                    tracing::info!(account = %id, "account removed");
                }
                let _ = reply.send(res);
            }
            ControlMsg::Observe(Observation::Blocked { id, block }) => {
                if let Some(e) = self.entries.get_mut(&*id) {
                    // Keep the later of two blocks: a second worker's report must not shorten it.
                    if e.block
                        .is_none_or(|b| b.until_unix < block.until_unix || b.reason != block.reason)
                    {
                        tracing::warn!(account = %id, reason = ?block.reason, until = block.until_unix, "account blocked");
                        e.block = Some(block);
                        self.publish();
                    }
                }
            }
            ControlMsg::Shutdown => return false,
        }
        true
    }

    pub fn run(mut self, rx: Receiver<ControlMsg>) {
        let upstream = self.shared.settings.upstream.clone();
        let mut last_dns = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(msg) => {
                    if !self.handle(msg) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_dns.elapsed() >= DNS_REFRESH {
                last_dns = Instant::now();
                if let Ok(addrs) = resolve(&upstream) {
                    if **self.shared.upstream_addrs.load() != addrs {
                        self.shared.upstream_addrs.store(Arc::new(addrs));
                    }
                }
            }
        }
    }
}

/// Resolves the upstream host (blocking; control thread and start-up only).
pub fn resolve(u: &UpstreamUrl) -> std::io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (u.host.as_str(), u.port).to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "upstream host has no addresses",
        ));
    }
    Ok(addrs)
}

pub fn spawn(control: Control, rx: Receiver<ControlMsg>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("codex-lb-control".into())
        .spawn(move || control.run(rx))
}
