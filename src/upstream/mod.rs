//! The worker's side of the upstream: TLS client config, connections (plain or rustls), the
//! per-worker keep-alive pool, and one request/response exchange.
//!
//! Owns sockets to the upstream and nothing else: which account to use, what to forward and how
//! to relay the answer are decided in `proxy`.

pub mod egress;
pub mod exchange;
pub mod io;
pub mod pool;
pub mod tls;

use thiserror::Error;

use crate::http::chunked::ChunkError;
use crate::http::response::UpstreamHeadError;

#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("no upstream address resolved")]
    NoAddress,
    #[error("connecting to the upstream failed: {0}")]
    Connect(std::io::Error),
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    #[error("TLS handshake with the upstream failed: {0}")]
    Tls(String),
    #[error("upstream IO error: {0}")]
    Io(std::io::Error),
    #[error("upstream went silent past the idle timeout")]
    IdleTimeout,
    #[error("upstream closed the connection before a complete response")]
    Closed,
    #[error(transparent)]
    Head(#[from] UpstreamHeadError),
    #[error("upstream body framing: {0}")]
    Chunk(#[from] ChunkError),
    #[error("upstream body exceeds {0} bytes")]
    BodyTooLarge(usize),
    /// The upstream WebSocket broke its protocol or closed before the turn's first event.
    #[error("upstream websocket: {0}")]
    WebSocket(String),
    /// The egress proxy (`--upstream-proxy`) would not open a tunnel.
    #[error("upstream proxy {0}")]
    Proxy(String),
}

impl UpstreamError {
    /// Failures that happened before the upstream sent any byte of a response: on a reused
    /// connection they usually mean the upstream closed it while idle, so a fresh one is tried.
    pub fn before_response(&self) -> bool {
        matches!(self, UpstreamError::Io(_) | UpstreamError::Closed)
    }

    /// Failures that happened before any byte of the request left (no server saw it).
    pub fn before_sending(&self) -> bool {
        matches!(
            self,
            UpstreamError::NoAddress
                | UpstreamError::Connect(_)
                | UpstreamError::ConnectTimeout
                | UpstreamError::Tls(_)
                | UpstreamError::Proxy(_)
        )
    }

    /// A short code for logs and the request log.
    pub fn code(&self) -> &'static str {
        match self {
            UpstreamError::NoAddress | UpstreamError::Connect(_) => "upstream_connect_error",
            UpstreamError::ConnectTimeout => "upstream_connect_timeout",
            UpstreamError::Tls(_) => "upstream_tls_error",
            UpstreamError::Io(_) | UpstreamError::Closed => "upstream_connection_error",
            UpstreamError::IdleTimeout => "upstream_timeout",
            UpstreamError::Head(_) | UpstreamError::Chunk(_) | UpstreamError::WebSocket(_) => {
                "upstream_protocol_error"
            }
            UpstreamError::BodyTooLarge(_) => "upstream_body_too_large",
            UpstreamError::Proxy(_) => "upstream_proxy_error",
        }
    }
}
