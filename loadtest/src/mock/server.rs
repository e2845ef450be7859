//! The accept loop and per-connection HTTP/1 serving.
//!
//! Each connection's socket is wrapped in [`ConnIo`] so a body can ask for the connection to
//! end with an RST (`fail_mode: "reset"`): the wrapper sets a zero linger just before the socket
//! is closed. `half_close` stays off, so hyper treats a peer FIN during a streamed response as
//! the end of the exchange and drops the body at once; that is what makes cancellation visible
//! even while the body is sleeping between deltas.
//!
//! With TLS configured, the wrapped socket goes through a rustls server handshake first (in the
//! connection's own task, so a slow handshake never stalls the accept loop); a failed or stalled
//! handshake just closes that connection. The HTTP serving after it is identical.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use super::body::ConnCtl;
use super::routes;
use super::state::Shared;

/// Listen backlog: the load harness opens thousands of connections at once.
pub const LISTEN_BACKLOG: u32 = 4096;
/// Back-off after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);
/// A peer that has not finished the TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, tls.clone(), shared.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "mock-upstream accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    // Events are small and latency is what the gateway measures: no Nagle delay.
    let _ = stream.set_nodelay(true);
    let ctl = Arc::new(ConnCtl::default());
    let conn = ConnIo {
        stream,
        ctl: ctl.clone(),
    };
    match tls {
        None => serve_http(conn, ctl, shared).await,
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
                Ok(Ok(tls_stream)) => serve_http(tls_stream, ctl, shared).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "mock-upstream TLS handshake failed"),
                Err(_) => tracing::debug!("mock-upstream TLS handshake timed out"),
            }
        }
    }
}

/// Serves HTTP/1.1 on an established (plain or TLS) connection until either side ends it.
async fn serve_http<I>(io: I, ctl: Arc<ConnCtl>, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let svc = service_fn(move |req| routes::handle(shared.clone(), ctl.clone(), req));
    let mut builder = http1::Builder::new();
    // No head-read timeout: idle pooled gateway connections stay open until the gateway closes
    // them, so tests do not see surprise closes.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    // Upgrades: a WebSocket handshake on `/responses` takes the connection over after its 101.
    if let Err(e) = builder.serve_connection(io, svc).with_upgrades().await {
        tracing::debug!(error = %e, "mock-upstream connection ended with an error");
    }
}

/// A TCP stream that can be closed with an RST on request.
struct ConnIo {
    stream: TcpStream,
    ctl: Arc<ConnCtl>,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.ctl.reset_requested() {
            // Zero linger turns close() into an RST: the "connection reset" a gateway must survive.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
