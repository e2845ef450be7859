//! An HTTP egress proxy for every outbound connection (the upstream, the OAuth issuer, usage
//! polls): teams behind a corporate proxy reach `chatgpt.com` only through `CONNECT`. The tunnel
//! is opened here and then carries TLS end to end, so the proxy sees a host name and a port,
//! never a token.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::UpstreamError;

/// Longest `CONNECT` reply head read from the proxy.
const MAX_REPLY_HEAD: usize = 8 * 1024;

/// `--upstream-proxy http://[user:password@]host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct EgressProxy {
    pub host: String,
    pub port: u16,
    /// `Basic …` for `Proxy-Authorization`, from the URL's user info.
    authorization: Option<String>,
}

// The credentials stay out of logs and `--help` output.
impl std::fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressProxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("authorization", &self.authorization.as_ref().map(|_| "…"))
            .finish()
    }
}

impl EgressProxy {
    pub fn parse(url: &str) -> Result<EgressProxy, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("upstream proxy {url:?}: only http:// proxies are supported (CONNECT)")
        })?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(format!("upstream proxy {url:?}: give host:port, no path"));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>()
                    .map_err(|_| format!("upstream proxy {url:?}: bad port {p:?}"))?,
            ),
            _ => (hostport, 80),
        };
        if host.is_empty() {
            return Err(format!("upstream proxy {url:?}: missing host"));
        }
        let authorization = userinfo.map(|u| {
            let plain = percent_decode(u);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(plain)
            )
        });
        Ok(EgressProxy {
            host: host.to_string(),
            port,
            authorization,
        })
    }

    /// Resolves the proxy's addresses (blocking; at start-up and on the jobs thread only).
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        use std::net::ToSocketAddrs;
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }

    /// Asks the proxy, over `stream`, for a tunnel to `host:port`; on success the stream carries
    /// the tunnel's bytes.
    pub async fn tunnel(
        &self,
        stream: &mut TcpStream,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<(), UpstreamError> {
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut req = format!("CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n");
        if let Some(a) = &self.authorization {
            req.push_str("proxy-authorization: ");
            req.push_str(a);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let exchange = async {
            let (res, _) = stream.write_all(req.into_bytes()).await;
            res.map_err(UpstreamError::Connect)?;
            let mut head: Vec<u8> = Vec::with_capacity(512);
            loop {
                let buf = vec![0u8; 1024];
                let (res, buf) = stream.read(buf).await;
                let n = res.map_err(UpstreamError::Connect)?;
                if n == 0 {
                    return Err(UpstreamError::Proxy(
                        "closed the connection before answering CONNECT".into(),
                    ));
                }
                head.extend_from_slice(&buf[..n]);
                if let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") {
                    if end + 4 != head.len() {
                        // The tunnel carries nothing until we speak first.
                        return Err(UpstreamError::Proxy(
                            "sent bytes after its CONNECT reply".into(),
                        ));
                    }
                    return check_reply(&head);
                }
                if head.len() > MAX_REPLY_HEAD {
                    return Err(UpstreamError::Proxy("CONNECT reply head too large".into()));
                }
            }
        };
        match monoio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::ConnectTimeout),
        }
    }
}

/// The proxy with its addresses, resolved once at start (workers never block on DNS).
#[derive(Debug)]
pub struct Egress {
    pub proxy: EgressProxy,
    pub addrs: Vec<SocketAddr>,
}

impl Egress {
    pub fn resolve(proxy: &EgressProxy) -> Result<Egress, String> {
        let addrs = proxy
            .resolve()
            .map_err(|e| format!("cannot resolve the upstream proxy {}: {e}", proxy.host))?;
        if addrs.is_empty() {
            return Err(format!("the upstream proxy {} has no address", proxy.host));
        }
        Ok(Egress {
            proxy: proxy.clone(),
            addrs,
        })
    }
}

fn check_reply(head: &[u8]) -> Result<(), UpstreamError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => match resp.code {
            Some(c) if (200..300).contains(&c) => Ok(()),
            Some(407) => Err(UpstreamError::Proxy(
                "refused CONNECT: 407 proxy authentication required (check the user:password in \
                 --upstream-proxy)"
                    .into(),
            )),
            Some(c) => Err(UpstreamError::Proxy(format!("refused CONNECT with {c}"))),
            None => Err(UpstreamError::Proxy(
                "answered CONNECT without a status".into(),
            )),
        },
        _ => Err(UpstreamError::Proxy(
            "answered CONNECT with something that is not HTTP".into(),
        )),
    }
}

/// `%XX` escapes in URL user info (a password with `@` or `:` in it).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse_with_and_without_credentials() {
        let p = EgressProxy::parse("http://proxy.corp:3128").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.authorization),
            ("proxy.corp", 3128, None)
        );
        let p = EgressProxy::parse("http://me:p%40ss@10.0.0.1:8080/").unwrap();
        assert_eq!(p.port, 8080);
        // base64("me:p@ss")
        assert_eq!(p.authorization.as_deref(), Some("Basic bWU6cEBzcw=="));
        assert!(!format!("{p:?}").contains("bWU6"), "credentials in Debug");
        assert!(EgressProxy::parse("https://proxy:443").is_err());
        assert!(EgressProxy::parse("http://proxy:x").is_err());
        assert!(EgressProxy::parse("http://proxy:3128/path").is_err());
        assert_eq!(EgressProxy::parse("http://[::1]:3128").unwrap().host, "::1");
    }

    #[test]
    fn connect_replies_are_judged_by_status() {
        assert!(check_reply(b"HTTP/1.1 200 Connection established\r\n\r\n").is_ok());
        let e = check_reply(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").unwrap_err();
        assert!(e.to_string().contains("407"), "{e}");
        assert!(check_reply(b"HTTP/1.1 403 Forbidden\r\n\r\n").is_err());
        assert!(check_reply(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }
}
