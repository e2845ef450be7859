//! One monoio runtime per worker thread: bind, run, supervise, drain.
//!
//! Start-up order: open the data dir (sled allows one process per dir), refuse an address another
//! process listens on (SO_REUSEPORT would silently share it), start the ledger and control threads,
//! bind one SO_REUSEPORT listener per worker, then start the workers. Shutdown is the reverse:
//! stop accepting everywhere at once, let in-flight requests finish until the grace deadline (the
//! relay ends streams still open then), stop the workers, then flush the ledger.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `CODEX_LB_DEBUG_SIZES=1` prints each connection task's size (a memory-tuning aid, tuning.md);
/// read once, not per accept.
static DEBUG_SIZES: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("CODEX_LB_DEBUG_SIZES").is_some());

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use thiserror::Error;

use crate::accounts::registry::RegistryError;
use crate::accounts::{now_unix, Tokens};
use crate::config::{DriverChoice, Settings};
use crate::control::{self, Control, ControlMsg};
use crate::ledger::{self, Ledger, LedgerError, LedgerQuery};
use crate::login::issuer::Issuer;
use crate::login::{LoginFlows, StoreAccount};
use crate::metrics::{inc, CoreMetrics};
use crate::shared::{Shared, ShutdownState};
use crate::store::{Store, StoreError};
use crate::worker::{OpenConnection, Worker};
use crossbeam_utils::CachePadded;

/// Listen backlog per worker.
const BACKLOG: i32 = 1024;
/// io_uring submission queue entries per worker.
const URING_ENTRIES: u32 = 1024;
/// Extra time, past the grace deadline, for streams to write their closing event.
const DRAIN_SLACK: Duration = Duration::from_secs(2);
const CONTROL_CHANNEL: usize = 4096;
const LEDGER_QUERY_CHANNEL: usize = 256;
const JOBS_CHANNEL: usize = 4096;
/// Dashboard logins and password changes queued for the auth thread; past it, 503.
const AUTH_CHANNEL: usize = 256;
/// How long start-up waits for a data dir still held by a gateway that just stopped.
const STORE_LOCK_WAIT: Duration = Duration::from_secs(3);
/// How long a finished sign-in waits for the control thread to store its account.
const LOGIN_STORE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{0} is already in use by another process; stop it or choose another --listen address"
    )]
    AddressInUse(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream TLS setup failed: {0}")]
    Tls(#[from] crate::upstream::tls::TlsSetupError),
    #[error("cannot read accounts: {0}")]
    Accounts(#[from] RegistryError),
    #[error("cannot read the usage ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Pricing(#[from] crate::pricing::PricingError),
    #[error(
        "refusing to listen on non-loopback address {0} without a dashboard password: set one first \
         with `codex-lb dashboard set-password` (or start on loopback and set it in the dashboard), \
         or pass --insecure-allow-remote to set it from afar with the one-time bootstrap token the \
         gateway then writes to <data dir>/dashboard-bootstrap.token"
    )]
    RemoteWithoutPassword(SocketAddr),
    #[error("client TLS: {0}")]
    ServerTls(#[from] crate::server_tls::ServerTlsError),
    #[error("cannot read or create the admin token file in the data dir: {0}")]
    AdminToken(std::io::Error),
    #[error("cannot write the dashboard's bootstrap token file in the data dir: {0}")]
    BootstrapToken(std::io::Error),
    #[error("{0}")]
    UpstreamProxy(String),
    #[error("cannot read the dashboard's credentials: {0}")]
    AuthStore(#[from] sled::Error),
}

pub struct Gateway {
    shared: Arc<Shared>,
    addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
    ledger: Option<JoinHandle<Result<(), LedgerError>>>,
    control: Option<JoinHandle<()>>,
    jobs: Option<JoinHandle<()>>,
    auth: Option<JoinHandle<()>>,
}

/// Triggers a graceful shutdown from anywhere (signal thread, tests).
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Shared>);

impl ShutdownHandle {
    pub fn trigger(&self) {
        self.0.shutdown.request(self.0.settings.shutdown_grace);
    }
}

/// Sign-ins through the admin API store their account the way an import does: through the
/// control thread, which owns the account records.
fn login_flows(
    settings: &Settings,
    tls: Option<Arc<rustls::ClientConfig>>,
    egress: Option<Arc<crate::upstream::egress::Egress>>,
    control_tx: crossbeam_channel::Sender<ControlMsg>,
) -> LoginFlows {
    let issuer = Issuer {
        url: settings.auth_base.clone(),
        base: settings.auth_base_url.clone(),
        tls,
        egress,
    };
    let store: StoreAccount = Box::new(move |tokens: &Tokens| {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let body = crate::accounts::auth_file::to_auth_json(tokens, None, Some(now_unix()));
        control_tx
            .send_timeout(
                ControlMsg::Import {
                    body: body.to_string().into_bytes(),
                    reply,
                },
                LOGIN_STORE_WAIT,
            )
            .map_err(|_| "the gateway is shutting down".to_string())?;
        let (info, created) = answer
            .recv_timeout(LOGIN_STORE_WAIT)
            .map_err(|_| "the gateway did not store the account in time".to_string())??;
        Ok((serde_json::to_value(info).unwrap_or_default(), created))
    });
    LoginFlows::new(
        issuer,
        settings.oauth_callback_port,
        settings.login_timeout,
        store,
    )
}

impl Gateway {
    pub fn start(settings: Settings) -> Result<Gateway, StartError> {
        let store = Store::open_waiting(
            &settings.data_dir,
            STORE_LOCK_WAIT,
            settings.allow_open_data_dir,
        )?;
        if settings.listen.port() != 0 {
            // A bind without SO_REUSEPORT fails if anyone listens here, reuse-port or not.
            match std::net::TcpListener::bind(settings.listen) {
                Ok(probe) => drop(probe),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    return Err(StartError::AddressInUse(settings.listen))
                }
                Err(source) => {
                    return Err(StartError::Bind {
                        addr: settings.listen,
                        source,
                    })
                }
            }
        }
        // One client TLS configuration serves the upstream (workers) and the OAuth issuer (jobs).
        let tls = if settings.upstream.tls || settings.auth_base.tls {
            Some(crate::upstream::tls::client_config(
                settings.upstream_ca_file.as_deref(),
            )?)
        } else {
            None
        };
        let egress = match &settings.upstream_proxy {
            Some(p) => Some(Arc::new(
                crate::upstream::egress::Egress::resolve(p).map_err(StartError::UpstreamProxy)?,
            )),
            None => None,
        };
        // Through a proxy the proxy resolves the upstream's name (this machine may not).
        let addrs = match (&egress, control::resolve(&settings.upstream)) {
            (Some(_), _) => Vec::new(),
            (None, Ok(a)) => a,
            (None, Err(e)) => {
                tracing::warn!(host = %settings.upstream.host, error = %e, "cannot resolve the upstream yet; retrying in the background");
                Vec::new()
            }
        };
        let (ledger_tx, ledger_rx) = crossbeam_channel::bounded(settings.ledger_channel_capacity);
        let (query_tx, query_rx) = crossbeam_channel::bounded(LEDGER_QUERY_CHANNEL);
        let (control_tx, control_rx) = crossbeam_channel::bounded(CONTROL_CHANNEL);
        let workers_n = settings.workers;
        let login = Arc::new(login_flows(
            &settings,
            tls.clone(),
            egress.clone(),
            control_tx.clone(),
        ));
        let pricing = Arc::new(crate::pricing::Pricing::load(&settings.data_dir)?);
        let server_tls = match &settings.tls {
            Some((cert, key)) => Some(Arc::new(crate::server_tls::ServerTls::load(cert, key)?)),
            None => None,
        };
        let admin_token = crate::dashboard::auth::load_or_create_admin_token(&settings.data_dir)
            .map_err(StartError::AdminToken)?;
        let (auth_tx, auth_rx) = crossbeam_channel::bounded(AUTH_CHANNEL);
        let admin_auth = Arc::new(crate::dashboard::auth::AdminAuth::new(
            &admin_token,
            settings.dashboard_session_ttl,
            server_tls.is_some(),
            auth_tx,
        ));
        let mut auth_service = crate::dashboard::auth::service::AuthService::load(
            store.db.open_tree("admin")?,
            store.sealer.clone(),
            Arc::clone(&admin_auth),
        )?;
        if !settings.listen.ip().is_loopback()
            && !settings.insecure_allow_remote
            && !auth_service.password_set()
        {
            return Err(StartError::RemoteWithoutPassword(settings.listen));
        }
        let bootstrap_file = settings
            .data_dir
            .join(crate::dashboard::auth::BOOTSTRAP_TOKEN_FILE);
        if settings.listen.ip().is_loopback() || auth_service.password_set() {
            // Only a stale file from an earlier run could be there.
            let _ = std::fs::remove_file(&bootstrap_file);
        } else {
            // Needed once, for the first password from another machine; useless afterwards.
            auth_service
                .keep_bootstrap_file(bootstrap_file.clone())
                .map_err(StartError::BootstrapToken)?;
            tracing::warn!(
                file = %bootstrap_file.display(),
                "no dashboard password is set: open the dashboard and set one with the \
                 bootstrap token in this file (or set it from the gateway's own machine)"
            );
        }
        let auth = auth_service.spawn(auth_rx).map_err(StartError::Thread)?;
        let shared = Arc::new(Shared {
            accounts: ArcSwap::from_pointee(Default::default()),
            keys: ArcSwap::from_pointee(Default::default()),
            upstream_addrs: ArcSwap::from_pointee(addrs),
            tls,
            egress,
            ledger_tx,
            ledger_queries: query_tx,
            control_tx,
            metrics: (0..workers_n).map(|_| Arc::default()).collect(),
            login,
            admin_auth,
            server_tls,
            pricing,
            response_owners: Default::default(),
            model_plans: Default::default(),
            shutdown: ShutdownState::default(),
            started: Instant::now(),
            settings,
        });

        if let Some(tls) = &shared.server_tls {
            let watcher = Arc::downgrade(&shared);
            // Stops with the gateway: once shutdown is asked for, or the gateway is gone.
            tls.spawn_watcher(move || watcher.upgrade().is_none_or(|s| s.shutdown.is_requested()))
                .map_err(StartError::Thread)?;
        }
        let ledger = Ledger::open(store.clone(), shared.settings.ledger_flush_interval)?
            .with_retention(ledger::retention::Retention {
                log: shared.settings.log_retention,
                rollups: shared.settings.rollup_retention,
            });
        let ledger = ledger::spawn(ledger, ledger_rx, query_rx).map_err(StartError::Thread)?;
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(JOBS_CHANNEL);
        let jobs = control::jobs::spawn(
            shared.settings.upstream.clone(),
            shared.settings.auth_base.clone(),
            shared.tls.clone(),
            shared.egress.clone(),
            jobs_rx,
            shared.control_tx.clone(),
        )
        .map_err(StartError::Thread)?;
        let control = Control::load(store, Arc::clone(&shared))?.with_jobs(jobs_tx);
        let control = control::spawn(control, control_rx).map_err(StartError::Thread)?;

        let mut listeners = Vec::with_capacity(workers_n);
        let first = bind_listener(shared.settings.listen)?;
        let addr = first.local_addr().map_err(|source| StartError::Bind {
            addr: shared.settings.listen,
            source,
        })?;
        listeners.push(first);
        for _ in 1..workers_n {
            listeners.push(bind_listener(addr)?);
        }

        let use_uring = match shared.settings.driver {
            DriverChoice::Legacy => false,
            DriverChoice::Uring => true,
            DriverChoice::Auto => {
                let ok = monoio::utils::detect_uring();
                if !ok {
                    tracing::info!("io_uring is not available here; workers use the epoll driver");
                }
                ok
            }
        };
        let mut workers = Vec::with_capacity(workers_n);
        for (index, l) in listeners.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let h = std::thread::Builder::new()
                .name(format!("codex-lb-w{index}"))
                .spawn(move || run_worker(index, shared, l, use_uring))
                .map_err(StartError::Thread)?;
            workers.push(h);
        }
        tracing::info!(%addr, workers = workers_n, upstream = %format!("{}://{}{}", if shared.settings.upstream.tls { "https" } else { "http" }, shared.settings.upstream.authority, shared.settings.upstream.base_path), "codex-lb listening");
        Ok(Gateway {
            shared,
            addr,
            workers,
            ledger: Some(ledger),
            control: Some(control),
            jobs: Some(jobs),
            auth: Some(auth),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.shared))
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// True when a worker thread ended although no shutdown was asked for (it crashed).
    pub fn worker_died(&self) -> bool {
        !self.shared.shutdown.is_requested() && self.workers.iter().any(|h| h.is_finished())
    }

    /// Waits for the workers to drain, then flushes and stops the ledger and control threads.
    pub fn wait(mut self) -> Result<(), String> {
        let mut worker_panicked = false;
        for h in self.workers.drain(..) {
            worker_panicked |= h.join().is_err();
        }
        let _ = self.shared.ledger_queries.send(LedgerQuery::Shutdown);
        let ledger_res = self.ledger.take().map(|h| h.join());
        let _ = self.shared.control_tx.send(ControlMsg::Shutdown);
        if let Some(h) = self.control.take() {
            let _ = h.join();
        }
        if self
            .shared
            .admin_auth
            .submit(crate::dashboard::auth::AuthJob::Stop)
        {
            if let Some(h) = self.auth.take() {
                let _ = h.join();
            }
        }
        // The jobs thread ends once the control thread (its only job sender) is gone; a job in
        // flight finishes within its timeout.
        if let Some(h) = self.jobs.take() {
            let _ = h.join();
        }
        match ledger_res {
            Some(Ok(Ok(()))) | None => {}
            Some(Ok(Err(e))) => return Err(format!("ledger failed to flush: {e}")),
            Some(Err(_)) => return Err("ledger thread panicked".into()),
        }
        if worker_panicked {
            return Err("a worker thread panicked".into());
        }
        Ok(())
    }

    /// Graceful shutdown: stop accepting, drain, flush.
    pub fn shutdown(self) -> Result<(), String> {
        self.shutdown_handle().trigger();
        self.wait()
    }
}

/// Raises the open-file limit as far as allowed (the kernel ceiling when privileged, else the
/// hard limit): every stream holds two sockets (client and upstream), and the common default of
/// 1024 caps a gateway at ~500 streams. Returns the (old, new) soft limits.
pub fn raise_fd_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let old = lim.rlim_cur;
    // A privileged process may lift the hard limit too, up to the kernel's per-process ceiling.
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if ceiling > lim.rlim_max {
        let lifted = libc::rlimit {
            rlim_cur: ceiling,
            rlim_max: ceiling,
        };
        // SAFETY: as above; failure (no privilege) leaves the limits unchanged.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lifted) } == 0 {
            return Ok((old, ceiling));
        }
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((old, lim.rlim_cur))
}

fn bind_listener(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| StartError::Bind { addr, source };
    let sock =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    sock.set_reuse_address(true).map_err(err)?;
    sock.set_reuse_port(true).map_err(err)?;
    sock.set_nonblocking(true).map_err(err)?;
    sock.bind(&addr.into()).map_err(err)?;
    sock.listen(BACKLOG).map_err(err)?;
    Ok(sock.into())
}

fn run_worker(index: usize, shared: Arc<Shared>, listener: std::net::TcpListener, use_uring: bool) {
    let metrics = shared.metrics.get(index).cloned().unwrap_or_default();
    if use_uring {
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .build()
        {
            Ok(mut rt) => {
                let _ = metrics.driver.set("io_uring");
                rt.block_on(worker_main(index, shared, listener));
                return;
            }
            Err(e) if shared.settings.driver == DriverChoice::Auto => {
                tracing::warn!(worker = index, error = %e, "io_uring refused; this worker uses the epoll driver");
            }
            Err(e) => {
                tracing::error!(worker = index, error = %e, "io_uring runtime failed to start (--driver uring)");
                shared.shutdown.request(Duration::ZERO);
                return;
            }
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => {
            let _ = metrics.driver.set("epoll");
            rt.block_on(worker_main(index, shared, listener));
        }
        Err(e) => {
            tracing::error!(worker = index, error = %e, "worker runtime failed to start");
            shared.shutdown.request(Duration::ZERO);
        }
    }
}

async fn worker_main(index: usize, shared: Arc<Shared>, listener: std::net::TcpListener) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot register the listener");
            shared.shutdown.request(Duration::ZERO);
            return;
        }
    };
    shared.shutdown.register_listener(listener.as_raw_fd());
    let w = Rc::new(Worker::new(index, Arc::clone(&shared)));
    let max_conns = shared.settings.max_connections_per_worker;
    while !shared.shutdown.is_requested() {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if shared.shutdown.is_requested() {
                    break;
                }
                inc(&w.metrics.connections_accepted);
                let settings = &shared.settings;
                let refusal = if !crate::access::allowed(&settings.allow_cidrs, peer.ip()) {
                    Some(crate::access::Refusal::Forbidden)
                } else if w.open_connections.get() >= max_conns {
                    Some(crate::access::Refusal::WorkerFull)
                } else if !w
                    .clients
                    .borrow_mut()
                    .admit(peer.ip(), settings.max_connections_per_client)
                {
                    Some(crate::access::Refusal::ClientFull)
                } else {
                    None
                };
                if let Some(why) = refusal {
                    inc(&w.metrics.connections_refused);
                    spawn_guarded(&w, refuse(Rc::clone(&w), stream, why));
                    continue;
                }
                let conn_guard = OpenConnection::new(Rc::clone(&w), peer.ip());
                let wc = Rc::clone(&w);
                let fut = async move {
                    let _guard = conn_guard;
                    crate::proxy::serve_connection(wc, stream, peer).await;
                };
                if *DEBUG_SIZES {
                    eprintln!("connection future: {} bytes", std::mem::size_of_val(&fut));
                }
                spawn_guarded(&w, fut);
            }
            Err(e) => {
                if shared.shutdown.is_requested() {
                    break;
                }
                // Out of fds and the like: back off instead of spinning.
                tracing::warn!(worker = index, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let hard_deadline = shared.shutdown.deadline().unwrap_or_else(Instant::now) + DRAIN_SLACK;
    while w.in_flight.get() > 0 && Instant::now() < hard_deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if w.in_flight.get() > 0 {
        tracing::warn!(
            worker = index,
            in_flight = w.in_flight.get(),
            "closing requests still running past the grace period"
        );
    }
    // Returning drops the runtime and with it every idle keep-alive connection.
}

/// Runs a connection task so that a panic ends only that connection, counted and logged.
fn spawn_guarded<F: Future<Output = ()> + 'static>(w: &Rc<Worker>, fut: F) {
    spawn_counted(Arc::clone(&w.metrics), w.index, fut);
}

fn spawn_counted<F: Future<Output = ()> + 'static>(
    metrics: Arc<CachePadded<CoreMetrics>>,
    index: usize,
    fut: F,
) {
    monoio::spawn(async move {
        if let Err(panic) = AssertUnwindSafe(fut).catch_unwind().await {
            inc(&metrics.panics);
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(worker = index, panic = %msg, "connection task panicked; connection closed, worker continues");
        }
    });
}

async fn refuse(w: Rc<Worker>, stream: monoio::net::TcpStream, why: crate::access::Refusal) {
    use monoio::io::AsyncWriteRentExt;
    let (status, kind, code, message) = why.answer();
    let err = crate::http::error_body::ApiError::new(status, kind, code, message);
    let retry: &[(&str, &[u8])] = if status == 503 {
        &[("retry-after", b"1")]
    } else {
        &[]
    };
    let bytes = crate::http::response::full_response(
        status,
        "application/json",
        retry,
        &err.to_json(),
        false,
    );
    let mut stream = stream;
    let _ = monoio::time::timeout(
        w.shared.settings.client_write_timeout,
        stream.write_all(bytes),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn a_panicking_task_is_counted_and_the_worker_keeps_running() {
        let metrics: Arc<CachePadded<CoreMetrics>> = Arc::default();
        let after = Rc::new(Cell::new(false));
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let m = Arc::clone(&metrics);
        let flag = Rc::clone(&after);
        rt.block_on(async move {
            spawn_counted(Arc::clone(&m), 0, async { panic!("bad client bytes") });
            monoio::time::sleep(Duration::from_millis(10)).await;
            spawn_counted(m, 0, async move { flag.set(true) });
            monoio::time::sleep(Duration::from_millis(10)).await;
        });
        assert_eq!(metrics.panics.load(Relaxed), 1);
        assert!(after.get(), "the worker ran the next task after the panic");
    }
}
