//! One worker's context: everything a connection task on this core may touch without locks.
//!
//! Built once per worker thread and shared by `Rc` among its connection tasks. Interior
//! mutability is `Cell`/`RefCell` only: a worker is single-threaded, and no borrow is held across
//! an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_utils::CachePadded;

use crate::accounts::selection::CoreAccounts;
use crate::metrics::{dec, inc, CoreMetrics};
use crate::proxy::models::ModelsCache;
use crate::shared::Shared;
use crate::upstream::pool::Pool;

pub struct Worker {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub metrics: Arc<CachePadded<CoreMetrics>>,
    pub pool: RefCell<Pool>,
    pub accounts: RefCell<CoreAccounts>,
    pub models: RefCell<ModelsCache>,
    /// Last quota reading sent to the control thread per account (time, max used percent).
    pub quota_sent: RefCell<HashMap<Arc<str>, (Instant, f64)>>,
    pub open_connections: Cell<usize>,
    /// Open connections per client address (`--max-connections-per-client`).
    pub clients: RefCell<crate::access::ClientCounts>,
    pub in_flight: Cell<usize>,
    next_request: Cell<u64>,
}

impl Worker {
    pub fn new(index: usize, shared: Arc<Shared>) -> Worker {
        let metrics = shared.metrics.get(index).cloned().unwrap_or_default();
        Worker {
            index,
            shared,
            metrics,
            pool: RefCell::new(Pool::default()),
            accounts: RefCell::new(CoreAccounts::new(index as u64)),
            models: RefCell::new(ModelsCache::default()),
            quota_sent: RefCell::new(HashMap::new()),
            open_connections: Cell::new(0),
            clients: RefCell::new(Default::default()),
            in_flight: Cell::new(0),
            next_request: Cell::new(0),
        }
    }

    /// A request id unique within this process run: worker index and a per-worker counter.
    pub fn new_request_id(&self) -> String {
        let n = self.next_request.get();
        self.next_request.set(n + 1);
        format!(
            "req_{:x}_{}_{n}",
            self.shared.started.elapsed().as_millis() as u64 ^ 0x5eed,
            self.index
        )
    }
}

/// Counts a request in flight for as long as it lives (also through a panic's unwinding).
pub struct InFlight<'a>(&'a Worker);

impl<'a> InFlight<'a> {
    pub fn new(w: &'a Worker) -> Self {
        w.in_flight.set(w.in_flight.get() + 1);
        inc(&w.metrics.requests);
        inc(&w.metrics.requests_in_flight);
        InFlight(w)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .set(self.0.in_flight.get().saturating_sub(1));
        dec(&self.0.metrics.requests_in_flight);
    }
}

/// Counts an open client connection for as long as it lives.
pub struct OpenConnection(std::rc::Rc<Worker>, std::net::IpAddr);

impl OpenConnection {
    /// Counts a connection from `peer` that `access::ClientCounts::admit` let in.
    pub fn new(w: std::rc::Rc<Worker>, peer: std::net::IpAddr) -> Self {
        w.open_connections.set(w.open_connections.get() + 1);
        inc(&w.metrics.connections_open);
        OpenConnection(w, peer)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.clients.borrow_mut().release(self.1);
        self.0
            .open_connections
            .set(self.0.open_connections.get().saturating_sub(1));
        dec(&self.0.metrics.connections_open);
    }
}
