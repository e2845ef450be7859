//! Response heads: writing ours to clients and parsing the upstream's (httparse), plus the
//! framing decision for an upstream body (RFC 9112 §6.3).

use std::io::Write;
use std::ops::Range;

use bytes::Bytes;

use super::{has_token, name_eq, trim_ows};

/// Cap on an upstream response head.
pub const MAX_UPSTREAM_HEAD_BYTES: usize = 64 * 1024;
const MAX_UPSTREAM_HEADERS: usize = 128;

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// How a response body we send is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFraming {
    Length(usize),
    Chunked,
    /// Body ends when the connection closes (HTTP/1.0 clients of a stream).
    Close,
    /// A status that never has a body (204, 304): no framing header at all.
    NoBody,
}

/// Writes a response head. `headers` must not contain framing or `connection` headers.
pub fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &[u8])],
    framing: OutFraming,
    keep_alive: bool,
) {
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", status, reason(status));
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        OutFraming::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        OutFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        OutFraming::Close | OutFraming::NoBody => {}
    }
    let keep = keep_alive && framing != OutFraming::Close;
    out.extend_from_slice(if keep {
        b"connection: keep-alive\r\n\r\n"
    } else {
        b"connection: close\r\n\r\n"
    });
}

/// A complete response with a body.
pub fn full_response(
    status: u16,
    content_type: &str,
    extra: &[(&str, &[u8])],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(extra.len() + 1);
    headers.push(("content-type", content_type.as_bytes()));
    headers.extend_from_slice(extra);
    write_head(
        &mut out,
        status,
        &headers,
        OutFraming::Length(body.len()),
        keep_alive,
    );
    out.extend_from_slice(body);
    out
}

/// How the upstream delimits its response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFraming {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// An upstream response head: one copy of the head bytes, header fields as ranges into it (one
/// allocation per head instead of two per field).
#[derive(Debug, Clone)]
pub struct UpstreamHead {
    pub status: u16,
    raw: Bytes,
    fields: Vec<(Range<usize>, Range<usize>)>,
    pub framing: UpstreamFraming,
    /// The upstream asked to close (or spoke HTTP/1.0): do not pool this connection.
    pub close: bool,
}

impl UpstreamHead {
    /// Header fields in arrival order, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter().map(move |(n, v)| {
            let name = self
                .raw
                .get(n.clone())
                .and_then(|b| std::str::from_utf8(b).ok());
            (
                name.unwrap_or_default(),
                self.raw.get(v.clone()).unwrap_or_default(),
            )
        })
    }

    pub fn header(&self, lower_name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| name_eq(n, lower_name))
            .map(|(_, v)| v)
    }

    pub fn header_str(&self, lower_name: &str) -> Option<&str> {
        self.header(lower_name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamHeadError {
    #[error("upstream response head exceeds {MAX_UPSTREAM_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("malformed upstream response head")]
    Malformed,
    #[error("upstream response has ambiguous framing")]
    BadFraming,
}

/// Parses an upstream response head; `Ok(None)` means more bytes are needed.
pub fn parse_upstream_head(
    buf: &[u8],
    request_was_head: bool,
) -> Result<Option<(UpstreamHead, usize)>, UpstreamHeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_UPSTREAM_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    let used = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_UPSTREAM_HEAD_BYTES {
                return Err(UpstreamHeadError::TooLarge);
            }
            return Ok(None);
        }
        Err(_) => return Err(UpstreamHeadError::Malformed),
    };
    let status = resp.code.ok_or(UpstreamHeadError::Malformed)?;
    let http10 = resp.version == Some(0);
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let mut fields = Vec::with_capacity(resp.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = http10;
    for h in resp.headers.iter() {
        if name_eq(h.name, "content-length") {
            let v = std::str::from_utf8(trim_ows(h.value))
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            match (v, length) {
                (Some(v), None) => length = Some(v),
                (Some(v), Some(prev)) if v == prev => {}
                _ => return Err(UpstreamHeadError::BadFraming),
            }
        } else if name_eq(h.name, "transfer-encoding") {
            chunked = has_token(h.value, "chunked");
            if !chunked {
                return Err(UpstreamHeadError::BadFraming);
            }
        } else if name_eq(h.name, "connection") && has_token(h.value, "close") {
            close = true;
        }
        fields.push((offset(h.name.as_bytes()), offset(h.value)));
    }
    let framing =
        if request_was_head || status == 204 || status == 304 || (100..200).contains(&status) {
            UpstreamFraming::Empty
        } else if chunked {
            UpstreamFraming::Chunked
        } else if let Some(n) = length {
            if n == 0 {
                UpstreamFraming::Empty
            } else {
                UpstreamFraming::Length(n)
            }
        } else {
            close = true;
            UpstreamFraming::UntilClose
        };
    Ok(Some((
        UpstreamHead {
            status,
            raw: Bytes::copy_from_slice(buf.get(..used).unwrap_or_default()),
            fields,
            framing,
            close,
        },
        used,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sse_head_at_every_split() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nx-codex-primary-used-percent: 12\r\n\r\n5\r\n";
        let head_len = raw.len() - 3;
        for cut in 0..head_len {
            assert!(parse_upstream_head(&raw[..cut], false).unwrap().is_none());
        }
        let (h, used) = parse_upstream_head(raw, false).unwrap().unwrap();
        assert_eq!(used, head_len);
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, UpstreamFraming::Chunked);
        assert_eq!(h.header_str("x-codex-primary-used-percent"), Some("12"));
        assert!(!h.close);
    }

    #[test]
    fn framing_rules() {
        let (h, _) = parse_upstream_head(
            b"HTTP/1.1 429 Too Many\r\nContent-Length: 10\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, UpstreamFraming::Length(10));
        let (h, _) = parse_upstream_head(b"HTTP/1.0 200 OK\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, UpstreamFraming::UntilClose);
        assert!(h.close);
        assert!(parse_upstream_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false
        )
        .is_err());
        assert!(
            parse_upstream_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false)
                .is_err()
        );
    }

    #[test]
    fn writes_heads() {
        let r = full_response(404, "application/json", &[("x-a", b"1")], b"{}", true);
        assert_eq!(
            r,
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nx-a: 1\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n{}"
                .to_vec()
        );
    }
}
