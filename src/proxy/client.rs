//! The client side of one connection: reading request heads and bodies under their limits and
//! timeouts, writing responses, and noticing a client that went away.

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::time::timeout_at;
use thiserror::Error;

use crate::http::chunked::{ChunkError, ChunkedDecoder};
use crate::http::error_body::ApiError;
use crate::http::request::{parse_request_head, BodyFraming, HeadError, HeadLimits, RequestHead};

/// Read buffer of a connection: small, since an idle keep-alive connection holds it; it grows
/// for large bodies and is dropped again once it is idle and large.
const READ_RESERVE: usize = 4 * 1024;
const SHRINK_ABOVE: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum ReadHeadError {
    /// The connection closed or idled out between requests: nothing to answer.
    #[error("connection closed")]
    Closed,
    #[error("request head not received within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Head(#[from] HeadError),
}

#[derive(Debug, Error)]
pub enum BodyError {
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("request body paused for longer than {0:?}")]
    Stalled(Duration),
    #[error("request body not received within {0:?}")]
    TooSlow(Duration),
    #[error("client closed the connection mid-body")]
    Closed,
    #[error("bad chunked body: {0}")]
    Chunk(#[from] ChunkError),
    #[error("cannot decode {encoding} body: {reason}")]
    Encoding { encoding: String, reason: String },
    #[error("unsupported Content-Encoding {0:?}")]
    UnsupportedEncoding(String),
}

impl BodyError {
    /// The envelope a client gets. Oversize is 400, not 413: the Codex CLI retries a 413 five times
    /// with the same payload (PROTOCOL.md §8).
    pub fn to_api_error(&self) -> Option<ApiError> {
        Some(match self {
            BodyError::TooLarge(_) => {
                ApiError::invalid_request("payload_too_large", self.to_string())
            }
            BodyError::Stalled(_) | BodyError::TooSlow(_) => ApiError::new(
                408,
                "invalid_request_error",
                "request_timeout",
                self.to_string(),
            ),
            BodyError::Closed => return None,
            BodyError::Chunk(_) => {
                ApiError::invalid_request("invalid_chunked_body", self.to_string())
            }
            BodyError::Encoding { .. } => {
                ApiError::invalid_request("invalid_content_encoding", self.to_string())
            }
            BodyError::UnsupportedEncoding(_) => ApiError::new(
                415,
                "invalid_request_error",
                "unsupported_content_encoding",
                self.to_string(),
            ),
        })
    }
}

/// The socket: plain TCP, or TLS terminated here (`server_tls`).
enum Io {
    Plain(TcpStream),
    Tls(Box<monoio_rustls::ServerTlsStream<TcpStream>>),
}

/// How long a request body may take.
struct BodyWait {
    pause: Duration,
    total: Duration,
    deadline: Instant,
}

pub struct ClientConn {
    io: Io,
    /// The TCP socket's fd (under TLS too): for peeking whether the client went away.
    raw_fd: RawFd,
    pub peer: SocketAddr,
    /// Who the current request is from: the peer, or the client a trusted proxy forwarded for
    /// (`access::client_ip`), set as each head is read.
    pub origin: crate::access::Origin,
    rbuf: BytesMut,
}

impl ClientConn {
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Self {
        ClientConn {
            raw_fd: stream.as_raw_fd(),
            io: Io::Plain(stream),
            peer,
            origin: crate::access::Origin {
                ip: peer.ip(),
                forwarded: false,
            },
            rbuf: BytesMut::with_capacity(READ_RESERVE),
        }
    }

    /// A connection whose TLS handshake is done; `raw_fd` is its TCP socket's.
    pub fn new_tls(
        stream: monoio_rustls::ServerTlsStream<TcpStream>,
        raw_fd: RawFd,
        peer: SocketAddr,
    ) -> Self {
        ClientConn {
            raw_fd,
            io: Io::Tls(Box::new(stream)),
            peer,
            origin: crate::access::Origin {
                ip: peer.ip(),
                forwarded: false,
            },
            rbuf: BytesMut::with_capacity(READ_RESERVE),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.io, Io::Tls(_))
    }

    pub fn fd(&self) -> RawFd {
        self.raw_fd
    }

    /// Reads more bytes into `rbuf` before `deadline`. `Ok(0)` is EOF.
    async fn fill(&mut self, deadline: Instant) -> Result<usize, FillError> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_RESERVE / 2 {
            self.rbuf.reserve(READ_RESERVE.max(self.rbuf.len()));
        }
        let buf = std::mem::take(&mut self.rbuf);
        let (len, cap) = (buf.len(), buf.capacity());
        let read = async {
            match &mut self.io {
                Io::Plain(s) => s.read(buf.slice_mut(len..cap)).await,
                Io::Tls(s) => s.read(buf.slice_mut(len..cap)).await,
            }
        };
        match timeout_at(deadline.into(), read).await {
            Ok((res, slice)) => {
                self.rbuf = slice.into_inner();
                res.map_err(|_| FillError::Io)
            }
            // The buffer went with the cancelled read; the connection is closed after a timeout.
            Err(_) => Err(FillError::Timeout),
        }
    }

    /// Reads the next request head. Waits up to `idle` for its first byte, then up to
    /// `head_timeout` for the rest (slow-loris protection).
    pub async fn read_head(
        &mut self,
        limits: HeadLimits,
        idle: Duration,
        head_timeout: Duration,
    ) -> Result<RequestHead, ReadHeadError> {
        if self.rbuf.is_empty() && self.rbuf.capacity() > SHRINK_ABOVE {
            // A large body went through here: do not keep its buffer for an idle connection.
            self.rbuf = BytesMut::with_capacity(READ_RESERVE);
        }
        let mut started: Option<Instant> = if self.rbuf.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        loop {
            if !self.rbuf.is_empty() {
                if let Some((head, used)) = parse_request_head(&self.rbuf, limits)? {
                    let _ = self.rbuf.split_to(used);
                    return Ok(head);
                }
            }
            let deadline = match started {
                Some(t) => t + head_timeout,
                None => Instant::now() + idle,
            };
            match self.fill(deadline).await {
                Ok(0) | Err(FillError::Io) => return Err(ReadHeadError::Closed),
                Ok(_) => {
                    started.get_or_insert_with(Instant::now);
                }
                Err(FillError::Timeout) if started.is_some() => {
                    return Err(ReadHeadError::Timeout(head_timeout))
                }
                Err(FillError::Timeout) => return Err(ReadHeadError::Closed),
            }
        }
    }

    /// Reads the body `head` announces, decoding `Content-Encoding` (zstd, gzip, deflate), capped
    /// at `max` bytes before and after decoding. Answers `Expect: 100-continue` first.
    /// Reads the whole body: at most `max` bytes, no pause longer than `pause`, and all of it
    /// within `total` of now — a pause cap alone would let a client drip a byte per pause and
    /// hold the connection for days.
    pub async fn read_body(
        &mut self,
        head: &RequestHead,
        max: usize,
        pause: Duration,
        total: Duration,
    ) -> Result<Bytes, BodyError> {
        let wait = BodyWait {
            pause,
            total,
            deadline: Instant::now() + total,
        };
        let raw = match head.framing {
            BodyFraming::None => Bytes::new(),
            BodyFraming::Length(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > max {
                    return Err(BodyError::TooLarge(max));
                }
                self.continue_if_expected(head).await?;
                while self.rbuf.len() < n {
                    if self.rbuf.capacity() < n {
                        self.rbuf.reserve(n - self.rbuf.len());
                    }
                    self.fill_body(&wait).await?;
                }
                self.rbuf.split_to(n).freeze()
            }
            BodyFraming::Chunked => {
                self.continue_if_expected(head).await?;
                let mut dec = ChunkedDecoder::new();
                let mut body = BytesMut::new();
                loop {
                    let feed = dec.feed(&self.rbuf, |d| body.extend_from_slice(d))?;
                    let _ = self.rbuf.split_to(feed.consumed);
                    if body.len() > max {
                        return Err(BodyError::TooLarge(max));
                    }
                    if feed.done {
                        break;
                    }
                    self.fill_body(&wait).await?;
                }
                body.freeze()
            }
        };
        decode_content(head, raw, max)
    }

    async fn fill_body(&mut self, wait: &BodyWait) -> Result<(), BodyError> {
        let paused = Instant::now() + wait.pause;
        match self.fill(paused.min(wait.deadline)).await {
            Ok(0) | Err(FillError::Io) => Err(BodyError::Closed),
            Ok(_) => Ok(()),
            Err(FillError::Timeout) if paused < wait.deadline => {
                Err(BodyError::Stalled(wait.pause))
            }
            Err(FillError::Timeout) => Err(BodyError::TooSlow(wait.total)),
        }
    }

    async fn continue_if_expected(&mut self, head: &RequestHead) -> Result<(), BodyError> {
        if head.expect_continue && self.rbuf.is_empty() {
            self.write(
                Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"),
                Duration::from_secs(10),
            )
            .await
            .map_err(|_| BodyError::Closed)?;
        }
        Ok(())
    }

    /// Writes all of `data` within `limit`.
    pub async fn write(&mut self, data: Bytes, limit: Duration) -> Result<(), WriteError> {
        let write = async {
            match &mut self.io {
                Io::Plain(s) => s.write_all(data).await.0.map(drop),
                Io::Tls(s) => {
                    s.write_all(data).await.0?;
                    // rustls holds records until flushed.
                    s.flush().await
                }
            }
        };
        match monoio::time::timeout(limit, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WriteError::Closed),
            Err(_) => Err(WriteError::Timeout),
        }
    }

    /// True when the client has closed its side (EOF or reset). Pipelined bytes are left unread.
    pub fn peer_closed(&self) -> bool {
        let mut b = [0u8; 1];
        // SAFETY: a valid fd owned by `stream`, a 1-byte buffer on the stack; MSG_PEEK consumes
        // nothing and MSG_DONTWAIT never blocks, whatever mode the driver set on the socket.
        let n = unsafe {
            libc::recv(
                self.fd(),
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n == 0 {
            return true;
        }
        if n < 0 {
            let err = std::io::Error::last_os_error().raw_os_error();
            return !matches!(err, Some(libc::EAGAIN) | Some(libc::EINTR));
        }
        false
    }

    /// Frees the read buffer when it holds nothing (a long stream then keeps no buffer here; the
    /// next request allocates a fresh one).
    pub fn release_buffer(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
    }

    /// Bytes received and not yet consumed (a WebSocket's frames read past its upgrade).
    pub fn buffered(&self) -> &[u8] {
        &self.rbuf
    }

    /// Drops the first `n` buffered bytes (they were decoded).
    pub fn consume(&mut self, n: usize) {
        let _ = self.rbuf.split_to(n.min(self.rbuf.len()));
    }

    /// Reads more bytes into the buffer before `deadline`: `Ok(0)` is EOF, `Err(true)` the
    /// deadline, `Err(false)` a broken connection.
    pub async fn read_more(&mut self, deadline: Instant) -> Result<usize, bool> {
        match self.fill(deadline).await {
            Ok(n) => Ok(n),
            Err(FillError::Timeout) => Err(true),
            Err(FillError::Io) => Err(false),
        }
    }

    /// Bytes of a following request already received (pipelining).
    pub fn has_buffered(&self) -> bool {
        !self.rbuf.is_empty()
    }
}

#[derive(Debug)]
enum FillError {
    Io,
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WriteError {
    #[error("client closed the connection")]
    Closed,
    #[error("client stopped reading")]
    Timeout,
}

fn decode_content(head: &RequestHead, raw: Bytes, max: usize) -> Result<Bytes, BodyError> {
    let Some(enc) = head
        .header_str("content-encoding")
        .map(|s| s.trim().to_ascii_lowercase())
    else {
        return Ok(raw);
    };
    let err = |reason: std::io::Error| BodyError::Encoding {
        encoding: enc.clone(),
        reason: reason.to_string(),
    };
    // Decoders are read through `take(max + 1)` so a compression bomb stops at the cap.
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(max));
    let limit = max as u64 + 1;
    match enc.as_str() {
        "" | "identity" => return Ok(raw),
        "zstd" => {
            let d = zstd::stream::read::Decoder::new(&raw[..]).map_err(err)?;
            d.take(limit).read_to_end(&mut out).map_err(err)?;
        }
        "gzip" | "x-gzip" => {
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit)
                .read_to_end(&mut out)
                .map_err(err)?;
        }
        "deflate" => {
            flate2::read::ZlibDecoder::new(&raw[..])
                .take(limit)
                .read_to_end(&mut out)
                .map_err(err)?;
        }
        other => return Err(BodyError::UnsupportedEncoding(other.to_string())),
    }
    if out.len() > max {
        return Err(BodyError::TooLarge(max));
    }
    Ok(Bytes::from(out))
}
