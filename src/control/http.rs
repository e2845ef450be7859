//! One-shot HTTP requests for the control plane (token refresh, usage polling), on the same
//! connection code, TLS configuration and codec as the workers' upstream. Runs inside the jobs
//! thread's own monoio runtime; never on a worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::config::UpstreamUrl;
use crate::upstream::exchange::{read_body, read_head};
use crate::upstream::io::UpstreamConn;
use crate::upstream::UpstreamError;

/// Largest reply body read (usage payloads and token replies are a few KB).
const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// Where requests go: a base URL, its resolved addresses, and TLS when it is https.
pub struct Endpoint {
    pub url: UpstreamUrl,
    pub addrs: Vec<SocketAddr>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `--upstream-proxy`: every connection is a tunnel through it (and `addrs` goes unused).
    pub egress: Option<Arc<crate::upstream::egress::Egress>>,
}

pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Endpoint {
    /// `path` is appended to the base URL's path and must start with `/`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Reply, UpstreamError> {
        let tls = if self.url.tls {
            self.tls.as_ref()
        } else {
            None
        };
        let mut conn = UpstreamConn::connect_to(
            &self.addrs,
            &self.url.host,
            self.url.port,
            tls,
            timeout,
            self.egress.as_deref(),
        )
        .await?;
        let mut head = BytesMut::with_capacity(512 + body.len());
        head.put_slice(method.as_bytes());
        head.put_slice(b" ");
        head.put_slice(self.url.base_path.as_bytes());
        head.put_slice(path.as_bytes());
        head.put_slice(b" HTTP/1.1\r\nhost: ");
        head.put_slice(self.url.authority.as_bytes());
        head.put_slice(b"\r\nconnection: close\r\ncontent-length: ");
        head.put_slice(body.len().to_string().as_bytes());
        head.put_slice(b"\r\n");
        for (n, v) in headers {
            head.put_slice(n.as_bytes());
            head.put_slice(b": ");
            head.put_slice(v);
            head.put_slice(b"\r\n");
        }
        head.put_slice(b"\r\n");
        head.put_slice(body);
        let exchange = async {
            conn.write_all(head.freeze())
                .await
                .map_err(UpstreamError::Io)?;
            let h = read_head(&mut conn, timeout).await?;
            let (body, _) = read_body(&mut conn, &h, MAX_REPLY_BYTES, timeout).await?;
            Ok(Reply {
                status: h.status,
                body,
            })
        };
        match monoio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::IdleTimeout),
        }
    }
}
