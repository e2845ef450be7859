//! The request path, named once. For each request on a client connection:
//!
//! 1. read head (httparse, limits)
//! 2. route
//! 3. authenticate (proxy API keys for proxy routes, `auth`; loopback rule for the admin API)
//! 4. admit (connection cap, at accept)
//! 5. read body
//! 6. choose account
//! 7. forward
//! 8. fail over or relay
//! 9. record
//!
//! Steps 5–9 live in the route handlers (`responses`, `models`); this file owns the connection
//! loop, routing, and the answer/record helpers every handler ends with.

pub mod auth;
pub mod client;
pub mod deliver;
pub mod events;
pub mod events_in;
pub mod key_usage;
pub mod models;
pub mod observe;
pub mod passthrough;
pub mod pool_usage;
pub mod relay;
pub mod responses;
pub mod v1;
pub mod ws;

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::net::TcpStream;

use self::client::{ClientConn, ReadHeadError};
use self::events::Usage;
use crate::http::error_body::ApiError;
use crate::http::request::{HeadError, RequestHead};
use crate::http::response::full_response;
use crate::ledger::{Outcome, UsageEvent};
use crate::metrics::inc;
use crate::worker::{InFlight, Worker};

/// The routes that spend the pool: authenticated by key, recorded in the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyRoute {
    /// `POST /backend-api/codex/responses`: the Codex turn, SSE spliced.
    CodexResponses,
    /// `GET /backend-api/codex/responses` with `Upgrade: websocket`: turns as messages (`ws`).
    ResponsesWebSocket,
    /// The model catalog (Codex and OpenAI list shapes).
    Models,
    /// `POST /v1/responses`.
    V1Responses,
    /// `POST /v1/chat/completions`.
    V1Chat,
    /// `POST /backend-api/codex/responses/compact`, `/v1/responses/compact`: remote compaction.
    Compact,
    /// The usage view the Codex CLI's `/status` reads (`/backend-api/wham/usage`,
    /// `/api/codex/usage`): the pool's state, not recorded as a request.
    PoolUsage,
    /// Codex's control routes (thread goals, analytics events, ...): relayed as they are.
    Control,
    /// `GET /v1/usage`: the calling key's own limits and use, not recorded as a request.
    KeyUsage,
    /// `POST /backend-api/transcribe`, `/v1/audio/transcriptions`: relayed to `/transcribe`.
    Transcribe,
}

impl ProxyRoute {
    /// The route's name in the request log and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ProxyRoute::CodexResponses | ProxyRoute::ResponsesWebSocket => "responses",
            ProxyRoute::Models => "models",
            ProxyRoute::V1Responses => "v1/responses",
            ProxyRoute::V1Chat => "v1/chat/completions",
            ProxyRoute::Compact => "compact",
            ProxyRoute::PoolUsage => "usage",
            ProxyRoute::Control => "control",
            ProxyRoute::Transcribe => "transcribe",
            ProxyRoute::KeyUsage => "key_usage",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Proxy(ProxyRoute),
    /// `/health` and the orchestrator probes (`/health/live`, `/health/startup`, `/health/ready`).
    Health(crate::dashboard::Probe),
    /// `GET /metrics`: Prometheus text, loopback callers only.
    Metrics,
    Admin(crate::dashboard::AdminRoute),
    /// `GET` of the web UI: `/`, its assets, and client-side routes.
    Ui,
    NotFound,
    MethodNotAllowed,
}

pub fn route(method: &str, path: &str) -> Route {
    use crate::dashboard::AdminRoute;
    // HEAD is not offered: every GET here answers with a body.
    let get = method == "GET";
    let post = |r: ProxyRoute| {
        if method == "POST" {
            Route::Proxy(r)
        } else {
            Route::MethodNotAllowed
        }
    };
    match path {
        // GET: the WebSocket transport (an upgrade; anything else is refused by the handshake).
        "/backend-api/codex/responses" | "/v1/responses" if get => {
            Route::Proxy(ProxyRoute::ResponsesWebSocket)
        }
        "/backend-api/codex/responses" => post(ProxyRoute::CodexResponses),
        "/v1/responses" => post(ProxyRoute::V1Responses),
        p if crate::proxy::passthrough::is_transcribe_path(p) => post(ProxyRoute::Transcribe),
        p if crate::proxy::passthrough::is_control_path(p) => {
            if get || method == "POST" {
                Route::Proxy(ProxyRoute::Control)
            } else {
                Route::MethodNotAllowed
            }
        }
        "/v1/chat/completions" => post(ProxyRoute::V1Chat),
        "/backend-api/codex/responses/compact" | "/v1/responses/compact" => {
            post(ProxyRoute::Compact)
        }
        "/backend-api/wham/usage" | "/api/codex/usage" => {
            if get {
                Route::Proxy(ProxyRoute::PoolUsage)
            } else {
                Route::MethodNotAllowed
            }
        }
        "/v1/usage" => {
            if get {
                Route::Proxy(ProxyRoute::KeyUsage)
            } else {
                Route::MethodNotAllowed
            }
        }
        "/backend-api/codex/models" | "/backend-api/codex/v1/models" | "/v1/models" => {
            if get {
                Route::Proxy(ProxyRoute::Models)
            } else {
                Route::MethodNotAllowed
            }
        }
        "/health" | "/health/live" | "/health/startup" | "/health/ready" => {
            if get {
                Route::Health(match path {
                    "/health/ready" => crate::dashboard::Probe::Ready,
                    "/health/live" | "/health/startup" => crate::dashboard::Probe::Live,
                    _ => crate::dashboard::Probe::Full,
                })
            } else {
                Route::MethodNotAllowed
            }
        }
        "/metrics" => {
            if get {
                Route::Metrics
            } else {
                Route::MethodNotAllowed
            }
        }
        _ => match AdminRoute::parse(method, path) {
            Some(Ok(r)) => Route::Admin(r),
            Some(Err(())) => Route::MethodNotAllowed,
            None if get && crate::dashboard::ui::is_ui_path(path) => Route::Ui,
            None => Route::NotFound,
        },
    }
}

/// What is recorded about one proxied request (step 9), filled in as the steps run.
#[derive(Debug, Clone)]
pub struct Record {
    pub started: Instant,
    pub request_id: String,
    pub route: &'static str,
    /// `http` (WebSocket turns will say `websocket`).
    pub transport: &'static str,
    pub client_ip: std::net::IpAddr,
    /// The client's product, from `User-Agent` (`codex_cli_rs`, `openai-python`, …).
    pub user_agent: Option<String>,
    /// The conversation the turn belongs to (`prompt_cache_key`, else the session header).
    pub conversation: Option<String>,
    pub effort: Option<String>,
    /// The tier the turn ran at (`priority`, `flex`), as reported, else as asked.
    pub service_tier: Option<String>,
    pub key_id: Option<String>,
    pub account_id: Option<String>,
    pub model: Option<String>,
    pub status: u16,
    pub outcome: Outcome,
    pub error_code: Option<String>,
    pub usage: Usage,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub ttfb: Option<Duration>,
    pub attempts: u32,
    /// Set once the usage is final (`priced`); `None` means unknown.
    pub cost_micro_usd: Option<u64>,
}

impl Record {
    fn new(
        w: &Worker,
        head: &RequestHead,
        route: &'static str,
        client_ip: std::net::IpAddr,
    ) -> Record {
        Record {
            started: Instant::now(),
            request_id: head
                .header_str("x-request-id")
                .map_or_else(|| w.new_request_id(), str::to_string),
            route,
            transport: "http",
            client_ip,
            user_agent: head.header_str("user-agent").and_then(user_agent_family),
            conversation: None,
            effort: None,
            service_tier: None,
            key_id: None,
            account_id: None,
            model: None,
            status: 0,
            outcome: Outcome::Completed,
            error_code: None,
            usage: Usage::default(),
            request_bytes: 0,
            response_bytes: 0,
            ttfb: None,
            attempts: 0,
            cost_micro_usd: None,
        }
    }

    /// Prices the request's final usage with the gateway's table.
    pub fn priced(&mut self, w: &Worker) -> Option<u64> {
        if self.cost_micro_usd.is_none() {
            self.cost_micro_usd = self.model.as_deref().and_then(|m| {
                w.shared.pricing.cost_micro_usd(
                    m,
                    crate::pricing::ServiceTier::from_name(self.service_tier.as_deref()),
                    self.usage.input_tokens,
                    self.usage.cached(),
                    self.usage.output_tokens,
                )
            });
        }
        self.cost_micro_usd
    }
}

/// The product part of a `User-Agent` (`codex_cli_rs/0.169.0 (Linux …)` → `codex_cli_rs`;
/// `OpenAI/Python 1.99.0` → `openai/python`), lower-cased and bounded: a family to group by,
/// without versions or platform details.
pub fn user_agent_family(ua: &str) -> Option<String> {
    let ua = ua.trim();
    let product = match ua.split_once(' ') {
        // `OpenAI/Python 1.2.3`: the SDKs put their language after a slash and the version apart.
        Some((first, rest))
            if first.contains('/') && rest.starts_with(|c: char| c.is_ascii_digit()) =>
        {
            first
        }
        _ => ua.split([' ', '/']).next().unwrap_or_default(),
    };
    let family: String = product
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        .take(40)
        .collect::<String>()
        .to_ascii_lowercase();
    (!family.is_empty()).then_some(family)
}

/// Sends the usage event to the ledger without ever waiting: a full channel is counted. The
/// worker's request metrics (`/metrics`) count the same request first.
pub fn record(w: &Worker, mut r: Record) {
    let cost_micro_usd = r.priced(w);
    let latency = r.started.elapsed();
    observe(w, &r, cost_micro_usd, latency);
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let ev = Box::new(UsageEvent {
        ts_ms,
        request_id: r.request_id,
        route: r.route.to_string(),
        transport: Some(r.transport.to_string()),
        client_ip: Some(r.client_ip.to_string()),
        user_agent: r.user_agent,
        conversation: r.conversation,
        effort: r.effort,
        service_tier: r.service_tier,
        key_id: r.key_id,
        account_id: r.account_id,
        model: r.model,
        status: r.status,
        outcome: r.outcome,
        error_code: r.error_code,
        input_tokens: r.usage.input_tokens,
        cached_tokens: r.usage.cached(),
        output_tokens: r.usage.output_tokens,
        reasoning_tokens: r.usage.reasoning(),
        total_tokens: r.usage.total_tokens,
        cost_micro_usd,
        request_bytes: r.request_bytes,
        response_bytes: r.response_bytes,
        latency_ms: latency.as_millis() as u64,
        ttfb_ms: r.ttfb.map(|d| d.as_millis() as u64),
        attempts: r.attempts,
    });
    if let Err(crossbeam_channel::TrySendError::Full(_)) = w.shared.ledger_tx.try_send(ev) {
        inc(&w.metrics.ledger_dropped);
    }
}

/// Counts a finished request in this worker's request metrics (labels, tokens, latency).
fn observe(w: &Worker, r: &Record, cost_micro_usd: Option<u64>, latency: Duration) {
    w.metrics.recorded.record(&crate::metrics::RequestSample {
        route: r.route,
        status: r.status,
        account: r.account_id.as_deref(),
        model: r.model.as_deref(),
        completed: r.outcome == Outcome::Completed,
        error_code: r.error_code.as_deref(),
        input_tokens: r.usage.input_tokens,
        cached_tokens: r.usage.cached(),
        output_tokens: r.usage.output_tokens,
        reasoning_tokens: r.usage.reasoning(),
        cost_micro_usd,
        duration: latency,
        ttfb: r.ttfb,
    });
}

/// Writes a complete response; records `rec` when given. Returns whether the connection stays open.
pub async fn respond(
    w: &Worker,
    client: &mut ClientConn,
    bytes: Bytes,
    keep_alive: bool,
    rec: Record,
) -> bool {
    let open = send(w, client, bytes, keep_alive).await;
    record(w, rec);
    open
}

/// Answers with an OpenAI error envelope and records the request as refused or failed.
pub async fn respond_error(
    w: &Worker,
    client: &mut ClientConn,
    err: ApiError,
    keep_alive: bool,
    mut rec: Record,
) -> bool {
    rec.status = err.status;
    rec.outcome = if err.status >= 500 || err.status == 429 {
        Outcome::UpstreamError
    } else {
        Outcome::Rejected
    };
    if err.status == 429 {
        rec.outcome = Outcome::Failed;
    }
    rec.error_code = err.code.clone();
    if err.status < 500 && err.status != 429 {
        inc(&w.metrics.client_errors);
    } else if err.status >= 500 {
        tracing::warn!(status = err.status, code = ?err.code, message = %err.message, request = %rec.request_id, "answered with a gateway error");
    }
    let body = err.to_json();
    rec.response_bytes = body.len() as u64;
    let retry = err.retry_after.map(|s| s.to_string());
    let headers: Vec<(&str, &[u8])> = retry
        .as_deref()
        .map(|r| ("retry-after", r.as_bytes()))
        .into_iter()
        .collect();
    let bytes = full_response(err.status, "application/json", &headers, &body, keep_alive);
    respond(w, client, Bytes::from(bytes), keep_alive, rec).await
}

/// An error envelope for a request that is not recorded (bad heads, unknown routes).
pub async fn reply_error(
    w: &Worker,
    client: &mut ClientConn,
    err: &ApiError,
    keep_alive: bool,
) -> bool {
    if err.status < 500 {
        inc(&w.metrics.client_errors);
    }
    let bytes = full_response(
        err.status,
        "application/json",
        &[],
        &err.to_json(),
        keep_alive,
    );
    send(w, client, Bytes::from(bytes), keep_alive).await
}

/// Writes a complete response. Returns whether the connection stays open.
pub async fn send(w: &Worker, client: &mut ClientConn, bytes: Bytes, keep_alive: bool) -> bool {
    let written = client
        .write(bytes, w.shared.settings.client_write_timeout)
        .await;
    written.is_ok() && keep_alive
}

/// The envelope for a body that could not be read (`None`: the client is gone), counted.
pub fn body_error(w: &Worker, e: &client::BodyError) -> Option<ApiError> {
    if matches!(
        e,
        client::BodyError::Stalled(_) | client::BodyError::TooSlow(_)
    ) {
        inc(&w.metrics.timeouts);
    }
    e.to_api_error()
}

fn head_error(e: &HeadError) -> ApiError {
    match e {
        HeadError::TooLarge { .. } => ApiError::new(
            431,
            "invalid_request_error",
            "request_header_too_large",
            e.to_string(),
        ),
        HeadError::TooManyHeaders { .. } => ApiError::new(
            431,
            "invalid_request_error",
            "too_many_headers",
            e.to_string(),
        ),
        HeadError::Malformed(_) => ApiError::invalid_request("malformed_request", e.to_string()),
        HeadError::BadFraming(_) => ApiError::invalid_request("invalid_framing", e.to_string()),
        HeadError::UnsupportedVersion => {
            ApiError::invalid_request("unsupported_http_version", e.to_string())
        }
    }
}

/// The TLS handshake of a new connection, within the head timeout. Loopback clients may still
/// speak plain HTTP: a TLS client's first byte is a handshake record (0x16), an HTTP request's a
/// letter.
async fn accept_tls(
    w: &Worker,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    tls: &crate::server_tls::ServerTls,
) -> Option<ClientConn> {
    use std::os::fd::AsRawFd;
    let s = &w.shared.settings;
    let fd = stream.as_raw_fd();
    if peer.ip().is_loopback() {
        match monoio::time::timeout(s.head_read_timeout, stream.readable(false)).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
        let mut first = [0u8; 1];
        // SAFETY: a valid fd owned by `stream`, a 1-byte buffer on the stack; MSG_PEEK consumes
        // nothing and MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recv(
                fd,
                first.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n == 0 {
            return None;
        }
        if n == 1 && first[0] != 0x16 {
            return Some(ClientConn::new(stream, peer));
        }
    }
    let acceptor = monoio_rustls::TlsAcceptor::from(tls.current());
    match monoio::time::timeout(s.head_read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(t)) => Some(ClientConn::new_tls(t, fd, peer)),
        Ok(Err(e)) => {
            inc(&w.metrics.client_errors);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            inc(&w.metrics.timeouts);
            None
        }
    }
}

/// Serves one client connection until it closes, errs, idles out or the gateway drains.
pub async fn serve_connection(w: Rc<Worker>, stream: TcpStream, peer: std::net::SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut client = match &w.shared.server_tls {
        None => ClientConn::new(stream, peer),
        // Boxed like the routes: the handshake's state is not kept for the connection's life.
        Some(tls) => match Box::pin(accept_tls(&w, stream, peer, tls)).await {
            Some(c) => c,
            None => return,
        },
    };
    let s = &w.shared.settings;
    loop {
        let head = match client
            .read_head(s.head_limits, s.idle_keepalive_timeout, s.head_read_timeout)
            .await
        {
            Ok(h) => h,
            Err(ReadHeadError::Closed) => return,
            Err(ReadHeadError::Timeout(t)) => {
                inc(&w.metrics.timeouts);
                let err = ApiError::new(
                    408,
                    "invalid_request_error",
                    "request_timeout",
                    format!("request head not received within {t:?}"),
                );
                reply_error(&w, &mut client, &err, false).await;
                return;
            }
            Err(ReadHeadError::Head(e)) => {
                tracing::debug!(%peer, error = %e, "bad request head");
                reply_error(&w, &mut client, &head_error(&e), false).await;
                return;
            }
        };
        client.origin = crate::access::client_ip(
            &s.trusted_proxies,
            s.trusted_proxy_header,
            peer.ip(),
            head.headers(),
        );
        // A trusted proxy's connection was let in at accept; the client it forwards for is
        // checked against the same allow-list here.
        if client.origin.forwarded && !crate::access::origin_allowed(&s.allow_cidrs, client.origin)
        {
            let (status, kind, code, message) = crate::access::Refusal::Forbidden.answer();
            reply_error(
                &w,
                &mut client,
                &ApiError::new(status, kind, code, message),
                false,
            )
            .await;
            return;
        }
        // A dashboard's live feed is a connection that stays open, not a request in flight.
        let _in_flight = (head.path() != "/api/live").then(|| InFlight::new(&w));
        if !handle_request(&w, &mut client, head).await || w.shared.shutdown.is_requested() {
            return;
        }
    }
}

/// Each route's work is boxed: a connection's task is then only as large as reading a head (an
/// idle keep-alive connection, the common case), and a request allocates what its own route
/// needs, not what the largest route (a WebSocket session) would.
async fn handle_request(w: &Rc<Worker>, client: &mut ClientConn, head: RequestHead) -> bool {
    let keep_alive = head.keep_alive && !w.shared.shutdown.is_requested();
    let has_body = head.framing != crate::http::request::BodyFraming::None;
    match route(head.method(), head.path()) {
        Route::Proxy(p) => {
            let mut rec = Record::new(w, &head, p.name(), client.origin.ip);
            if p == ProxyRoute::ResponsesWebSocket {
                rec.transport = "websocket";
            }
            let key = match auth::authenticate(w, &head, client.peer) {
                Ok(key) => key,
                // The body is not read: the connection cannot be reused.
                Err(r) => {
                    rec.key_id = r.key_id.map(|k| k.to_string());
                    let refused = respond_error(w, client, r.err, keep_alive && !has_body, rec);
                    return Box::pin(refused).await;
                }
            };
            rec.key_id = key.as_ref().map(|k| k.id.to_string());
            match p {
                ProxyRoute::CodexResponses => {
                    Box::pin(responses::handle(w, client, head, key, rec)).await
                }
                ProxyRoute::ResponsesWebSocket => {
                    // The socket ends with its session.
                    Box::pin(ws::serve(w, client, head, rec)).await;
                    false
                }
                ProxyRoute::Models => {
                    Box::pin(models::handle(
                        w,
                        client,
                        head,
                        key,
                        keep_alive && !has_body,
                        rec,
                    ))
                    .await
                }
                ProxyRoute::V1Responses => Box::pin(v1::responses(w, client, head, key, rec)).await,
                ProxyRoute::V1Chat => {
                    Box::pin(v1::chat_completions(w, client, head, key, rec)).await
                }
                ProxyRoute::Compact => Box::pin(v1::compact(w, client, head, key, rec)).await,
                ProxyRoute::PoolUsage => {
                    Box::pin(pool_usage::handle(w, client, keep_alive && !has_body)).await
                }
                ProxyRoute::Control => {
                    let relay = passthrough::Relay::Control;
                    Box::pin(passthrough::handle(w, client, head, relay, key, rec)).await
                }
                ProxyRoute::Transcribe => {
                    let relay = passthrough::Relay::Transcribe;
                    Box::pin(passthrough::handle(w, client, head, relay, key, rec)).await
                }
                ProxyRoute::KeyUsage => {
                    Box::pin(key_usage::handle(
                        w,
                        client,
                        key.as_deref(),
                        keep_alive && !has_body,
                    ))
                    .await
                }
            }
        }
        Route::Health(probe) => {
            Box::pin(crate::dashboard::health(
                w,
                client,
                probe,
                keep_alive && !has_body,
            ))
            .await
        }
        Route::Metrics => {
            Box::pin(crate::dashboard::prometheus::handle(
                w,
                client,
                &head,
                keep_alive && !has_body,
            ))
            .await
        }
        Route::Admin(r) => Box::pin(crate::dashboard::handle(w, client, head, r)).await,
        Route::Ui => {
            Box::pin(crate::dashboard::ui::serve(
                w,
                client,
                head.path(),
                keep_alive && !has_body,
            ))
            .await
        }
        Route::NotFound => {
            let err = ApiError::not_found(head.path());
            Box::pin(reply_error(w, client, &err, keep_alive && !has_body)).await
        }
        Route::MethodNotAllowed => {
            let err = ApiError::new(
                405,
                "invalid_request_error",
                "method_not_allowed",
                format!("{} is not allowed on {}", head.method(), head.path()),
            );
            Box::pin(reply_error(w, client, &err, keep_alive && !has_body)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("POST", "/backend-api/codex/responses"),
            Route::Proxy(ProxyRoute::CodexResponses)
        );
        assert_eq!(
            route("POST", "/v1/chat/completions"),
            Route::Proxy(ProxyRoute::V1Chat)
        );
        assert_eq!(
            route("GET", "/v1/responses"),
            Route::Proxy(ProxyRoute::ResponsesWebSocket)
        );
        assert_eq!(route("PUT", "/v1/responses"), Route::MethodNotAllowed);
        assert_eq!(
            route("POST", "/backend-api/codex/analytics-events/events"),
            Route::Proxy(ProxyRoute::Control)
        );
        assert_eq!(
            route("GET", "/backend-api/wham/agent-identities/jwks"),
            Route::Proxy(ProxyRoute::Control)
        );
        assert_eq!(
            route("DELETE", "/backend-api/codex/thread/goal/clear"),
            Route::MethodNotAllowed
        );
        assert_eq!(route("GET", "/v1/models"), Route::Proxy(ProxyRoute::Models));
        assert_eq!(
            route("GET", "/backend-api/codex/responses"),
            Route::Proxy(ProxyRoute::ResponsesWebSocket)
        );
        assert_eq!(
            route("PUT", "/backend-api/codex/responses"),
            Route::MethodNotAllowed
        );
        assert_eq!(
            route("GET", "/backend-api/codex/v1/models"),
            Route::Proxy(ProxyRoute::Models)
        );
        assert_eq!(
            route("GET", "/health"),
            Route::Health(crate::dashboard::Probe::Full)
        );
        assert_eq!(
            route("GET", "/health/ready"),
            Route::Health(crate::dashboard::Probe::Ready)
        );
        assert_eq!(route("GET", "/metrics"), Route::Metrics);
        assert_eq!(route("POST", "/metrics"), Route::MethodNotAllowed);
        assert_eq!(route("HEAD", "/metrics"), Route::MethodNotAllowed);
        assert_eq!(route("GET", "/api/nope"), Route::NotFound);
        assert_eq!(route("POST", "/nope"), Route::NotFound);
        assert_eq!(route("GET", "/v1/nope"), Route::NotFound);
        // Client-side routes of the web UI.
        assert_eq!(route("GET", "/nope"), Route::Ui);
        assert_eq!(route("GET", "/"), Route::Ui);
    }

    #[test]
    fn every_recorded_route_has_its_own_metrics_label() {
        use ProxyRoute::*;
        for r in [
            CodexResponses,
            Models,
            V1Responses,
            V1Chat,
            Compact,
            Control,
            Transcribe,
        ] {
            assert!(
                crate::metrics::ROUTES.contains(&r.name()),
                "{} would be counted as `other` in /metrics",
                r.name()
            );
        }
    }

    #[test]
    fn user_agent_families() {
        let f = |s: &str| user_agent_family(s);
        assert_eq!(
            f("codex_cli_rs/0.169.0 (Ubuntu 24.4.0; x86_64) xterm").as_deref(),
            Some("codex_cli_rs")
        );
        assert_eq!(f("OpenAI/Python 1.99.1").as_deref(), Some("openai/python"));
        assert_eq!(f("curl/8.5.0").as_deref(), Some("curl"));
        assert_eq!(f("   "), None);
    }
}
