//! A blocking one-shot HTTP/1.1 client for control calls: the mock's `/__mock/` API, the
//! gateway's `/health`, `/api/accounts/import` and `/api/keys`. One connection per call
//! (`Connection: close`), so nothing here can disturb the pooled connections under measurement.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};

use super::chunked::Chunked;

/// Upper bound on a control response (the mock's account list with tokens is the largest).
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Sends one request; returns the status and the (de-chunked) body.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to {method} {path}"))?;
    parse_response(&raw).with_context(|| format!("{method} http://{addr}{path}"))
}

/// Like [`call`], but a non-2xx status is an error carrying the body.
pub fn call_ok(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let (status, body) = call(addr, method, path, body, timeout)?;
    if !(200..300).contains(&status) {
        bail!(
            "{method} {path}: status {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

/// Splits a complete response into status and body.
pub fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(raw)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => bail!("connection closed inside the response head"),
    };
    let status = resp.code.ok_or_else(|| anyhow!("no status code"))?;
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &raw[head_len..];
    let body = if header("transfer-encoding").is_some_and(|v| v.ends_with("chunked")) {
        let mut out = Vec::new();
        let mut d = Chunked::default();
        d.feed(rest, |s| out.extend_from_slice(s))
            .map_err(|e| anyhow!("bad chunked body: {e:?}"))?;
        out
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        rest.get(..len)
            .ok_or_else(|| anyhow!("body shorter than its content-length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_bodies() {
        let (s, b) =
            parse_response(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}extra").unwrap();
        assert_eq!((s, b.as_slice()), (201, &b"{}"[..]));
        let (s, b) = parse_response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"abc"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        assert!(parse_response(b"HTTP/1.1 200").is_err());
    }
}
