//! One upstream connection: plain TCP or rustls over TCP, with the bytes read past the last
//! parsed item kept in `buf`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio_rustls::{ClientTlsStream, TlsConnector};
use rustls::pki_types::ServerName;

use super::egress::Egress;
use super::UpstreamError;
use crate::shared::Shared;

/// Bounds of one read from the upstream. A stream that is waiting holds one read buffer in the
/// kernel's hands, so it starts small (SSE deltas are a few hundred bytes) and grows only while
/// reads come back full (a large `response.completed`, a catalog).
pub const MIN_READ: usize = 2 * 1024;
pub const MAX_READ: usize = 64 * 1024;

enum Io {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
}

pub struct UpstreamConn {
    io: Io,
    /// Received bytes not consumed yet (read past a head).
    pub buf: BytesMut,
    pub reused: bool,
    /// Size of the next body read, adapted to what the last reads returned.
    read_size: usize,
}

impl UpstreamConn {
    /// Connects to the gateway's upstream (addresses resolved by the control thread).
    pub async fn connect(
        shared: &Shared,
        timeout: Duration,
    ) -> Result<UpstreamConn, UpstreamError> {
        let addrs = shared.upstream_addrs.load_full();
        let tls = shared.tls.as_ref().filter(|_| shared.settings.upstream.tls);
        let up = &shared.settings.upstream;
        Self::connect_to(
            &addrs,
            &up.host,
            up.port,
            tls,
            timeout,
            shared.egress.as_deref(),
        )
        .await
    }

    /// Connects to the first of `addrs` that answers — or, through `egress`, tunnels to
    /// `host:port` from the first proxy address that answers — with TLS for `host` when `tls` is
    /// given.
    pub async fn connect_to(
        addrs: &[std::net::SocketAddr],
        host: &str,
        port: u16,
        tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
        timeout: Duration,
        egress: Option<&Egress>,
    ) -> Result<UpstreamConn, UpstreamError> {
        let mut last = UpstreamError::NoAddress;
        let targets = egress.map_or(addrs, |e| e.addrs.as_slice());
        for addr in targets {
            let stream = match monoio::time::timeout(timeout, TcpStream::connect_addr(*addr)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    last = UpstreamError::Connect(e);
                    continue;
                }
                Err(_) => {
                    last = UpstreamError::ConnectTimeout;
                    continue;
                }
            };
            let mut stream = stream;
            let _ = stream.set_nodelay(true);
            if let Some(e) = egress {
                // A refusal is the proxy's answer for every address: no point trying the next.
                e.proxy.tunnel(&mut stream, host, port, timeout).await?;
            }
            let io = match tls {
                None => Io::Plain(stream),
                Some(cfg) => {
                    let name = ServerName::try_from(host.to_string())
                        .map_err(|e| UpstreamError::Tls(e.to_string()))?;
                    let connector = TlsConnector::from(cfg.clone());
                    match monoio::time::timeout(timeout, connector.connect(name, stream)).await {
                        Ok(Ok(s)) => Io::Tls(Box::new(s)),
                        Ok(Err(e)) => return Err(UpstreamError::Tls(e.to_string())),
                        Err(_) => return Err(UpstreamError::ConnectTimeout),
                    }
                }
            };
            return Ok(UpstreamConn {
                io,
                buf: BytesMut::with_capacity(MIN_READ),
                read_size: MIN_READ,
                reused: false,
            });
        }
        Err(last)
    }

    /// Reads more bytes, appended to `buf`. Returns the number read (0 = EOF).
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < MIN_READ / 2 {
            self.buf.reserve(MIN_READ.max(self.buf.len()));
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let cap = buf.capacity();
        let slice = buf.slice_mut(len..cap);
        let (res, slice) = match &mut self.io {
            Io::Plain(s) => s.read(slice).await,
            Io::Tls(s) => s.read(slice).await,
        };
        self.buf = slice.into_inner();
        res
    }

    /// The next bytes of the body: what is left in `buf` first, else one fresh read. An empty
    /// result means EOF.
    pub async fn next_bytes(&mut self) -> std::io::Result<Bytes> {
        if !self.buf.is_empty() {
            // Hand over the leftover and drop the head's buffer, so a long stream does not keep it.
            return Ok(std::mem::take(&mut self.buf).freeze());
        }
        let buf = BytesMut::with_capacity(self.read_size);
        let (res, buf) = match &mut self.io {
            Io::Plain(s) => s.read(buf).await,
            Io::Tls(s) => s.read(buf).await,
        };
        let n = res?;
        self.read_size = if n == self.read_size {
            (self.read_size * 2).min(MAX_READ)
        } else if n < self.read_size / 4 {
            (self.read_size / 2).max(MIN_READ)
        } else {
            self.read_size
        };
        Ok(buf.freeze())
    }

    pub async fn write_all(&mut self, data: Bytes) -> std::io::Result<()> {
        let (res, _) = match &mut self.io {
            Io::Plain(s) => s.write_all(data).await,
            Io::Tls(s) => {
                let r = s.write_all(data).await;
                if r.0.is_ok() {
                    // rustls buffers records; push them out now.
                    s.flush().await?;
                }
                r
            }
        };
        res.map(|_| ())
    }
}
