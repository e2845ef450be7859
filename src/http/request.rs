//! Request heads: httparse into a bounded stack array, then the framing decision of RFC 9112 §6.
//!
//! Offsets are recorded first and the head is frozen once, so the path and header values are views
//! into the received bytes, not copies. Every ambiguity a smuggling attack relies on (Content-Length
//! together with Transfer-Encoding, duplicate or malformed Content-Length, codings other than a lone
//! `chunked`) is rejected here; the caller answers 400 and closes the connection. So is a second
//! `Host` line (RFC 9112 §3.2: a server MUST answer 400), which a front proxy and the gateway could
//! otherwise read differently.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::Bytes;

use super::{has_token, name_eq, trim_ows};

/// Default cap on request-line + headers. Codex heads are about 2 KiB; turn metadata can grow.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 64 * 1024;
/// Default cap on the number of header fields.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Hard ceiling for the header-count setting: the parser's stack array.
pub const MAX_HEADERS_CEILING: usize = 256;

#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Why a head was refused. Each maps to a 4xx envelope; all of them close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("request head exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("request has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    #[error("ambiguous request framing: {0}")]
    BadFraming(&'static str),
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
}

/// A parsed request head; strings are views into `raw`.
#[derive(Debug, Clone)]
pub struct RequestHead {
    raw: Bytes,
    method: Range<usize>,
    target: Range<usize>,
    headers: Vec<(Range<usize>, Range<usize>)>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl RequestHead {
    pub fn method(&self) -> &str {
        self.str_at(&self.method)
    }

    /// The request target as sent (path and query).
    pub fn target(&self) -> &str {
        self.str_at(&self.target)
    }

    /// The path without the query string.
    pub fn path(&self) -> &str {
        let t = self.target();
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, q)| q)
    }

    /// Value of a query parameter, undecoded (the values we read are plain tokens).
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query()?
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + Clone {
        self.headers
            .iter()
            .map(move |(n, v)| (self.str_at(n), self.raw.get(v.clone()).unwrap_or_default()))
    }

    /// First value of a header (names compared case-insensitively).
    pub fn header(&self, lower_name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| name_eq(n, lower_name))
            .map(|(_, v)| v)
    }

    pub fn header_str(&self, lower_name: &str) -> Option<&str> {
        self.header(lower_name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn head_len(&self) -> usize {
        self.raw.len()
    }

    fn str_at(&self, r: &Range<usize>) -> &str {
        // The parser only accepted token / visible ASCII bytes here, so this never fails in
        // practice; an empty string is the harmless answer if it did.
        self.raw
            .get(r.clone())
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }
}

/// Parses a request head at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, or the head and the number of bytes it used. The
/// head is copied into one `Bytes` (heads are small; bodies are never copied here).
pub fn parse_request_head(
    buf: &[u8],
    limits: HeadLimits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line.
    let skip = leading_crlf(buf);
    // A head is complete only once a blank line arrived; until then a full parse would be wasted
    // (heads that trickle in would be re-parsed on every read).
    let rest = buf.get(skip..).unwrap_or_default();
    if memchr::memmem::find(rest, b"\n\r\n").is_none()
        && memchr::memmem::find(rest, b"\n\n").is_none()
    {
        if buf.len() >= limits.max_head_bytes {
            return Err(HeadError::TooLarge {
                limit: limits.max_head_bytes,
            });
        }
        if httparse::Request::new(&mut [])
            .parse(rest)
            .is_err_and(|e| e != httparse::Error::TooManyHeaders)
        {
            // Garbage is refused as soon as it is seen, not when the limit is reached.
            return Err(HeadError::Malformed("invalid request line"));
        }
        return Ok(None);
    }
    let buf_rest = buf.get(skip..).unwrap_or_default();
    let max_headers = limits.max_headers.min(MAX_HEADERS_CEILING);
    let mut storage: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_CEILING] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_CEILING];
    let slots = storage.get_mut(..max_headers).unwrap_or_default();
    let mut req = httparse::Request::new(&mut []);
    let status = match req.parse_with_uninit_headers(buf_rest, slots) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooManyHeaders { limit: max_headers })
        }
        Err(httparse::Error::Version) => return Err(HeadError::UnsupportedVersion),
        Err(e) => {
            if buf.len() > limits.max_head_bytes {
                return Err(HeadError::TooLarge {
                    limit: limits.max_head_bytes,
                });
            }
            return Err(HeadError::Malformed(httparse_reason(e)));
        }
    };
    let used = match status {
        httparse::Status::Partial => {
            if buf.len() >= limits.max_head_bytes {
                return Err(HeadError::TooLarge {
                    limit: limits.max_head_bytes,
                });
            }
            return Ok(None);
        }
        httparse::Status::Complete(n) => n + skip,
    };
    if used > limits.max_head_bytes {
        return Err(HeadError::TooLarge {
            limit: limits.max_head_bytes,
        });
    }
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let method = offset(req.method.unwrap_or_default().as_bytes());
    let target = offset(req.path.unwrap_or_default().as_bytes());
    let version_minor = req.version.unwrap_or(1);
    if version_minor > 1 {
        return Err(HeadError::UnsupportedVersion);
    }
    let mut headers = Vec::with_capacity(req.headers.len());
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expect_continue = false;
    let mut host_seen = false;
    for h in req.headers.iter() {
        headers.push((offset(h.name.as_bytes()), offset(h.value)));
        let name = h.name;
        if name_eq(name, "content-length") {
            if content_length.is_some() {
                return Err(HeadError::BadFraming("duplicate Content-Length"));
            }
            content_length = Some(parse_content_length(h.value)?);
        } else if name_eq(name, "transfer-encoding") {
            if transfer_encoding.is_some() {
                return Err(HeadError::BadFraming("duplicate Transfer-Encoding"));
            }
            transfer_encoding = Some(h.value);
        } else if name_eq(name, "host") {
            if host_seen {
                return Err(HeadError::Malformed("more than one Host header"));
            }
            host_seen = true;
        } else if name_eq(name, "connection") {
            connection_close |= has_token(h.value, "close");
            connection_keep_alive |= has_token(h.value, "keep-alive");
        } else if name_eq(name, "expect") {
            if trim_ows(h.value).eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(HeadError::Malformed("unsupported Expect value"));
            }
        }
    }
    let framing = match (transfer_encoding, content_length) {
        (Some(_), Some(_)) => {
            return Err(HeadError::BadFraming(
                "both Content-Length and Transfer-Encoding",
            ))
        }
        (Some(te), None) => {
            if version_minor == 0 {
                return Err(HeadError::BadFraming(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            if !trim_ows(te).eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::BadFraming(
                    "Transfer-Encoding other than a lone chunked",
                ));
            }
            BodyFraming::Chunked
        }
        (None, Some(0)) | (None, None) => BodyFraming::None,
        (None, Some(n)) => BodyFraming::Length(n),
    };
    let keep_alive = if version_minor == 0 {
        connection_keep_alive && !connection_close
    } else {
        !connection_close
    };
    let raw = Bytes::copy_from_slice(buf.get(..used).unwrap_or_default());
    Ok(Some((
        RequestHead {
            raw,
            method,
            target,
            headers,
            version_minor,
            framing,
            keep_alive,
            expect_continue,
        },
        used,
    )))
}

fn leading_crlf(buf: &[u8]) -> usize {
    let mut i = 0;
    while let (Some(b'\r'), Some(b'\n')) = (buf.get(i), buf.get(i + 1)) {
        i += 2;
    }
    i
}

fn parse_content_length(v: &[u8]) -> Result<u64, HeadError> {
    let v = trim_ows(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::BadFraming("invalid Content-Length"));
    }
    v.iter()
        .try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(HeadError::BadFraming("invalid Content-Length"))
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_request_head(input, HeadLimits::default())
    }

    #[test]
    fn parses_codex_post_and_is_partial_at_every_split() {
        let req = b"POST /backend-api/codex/responses?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nSession-Id: s1\r\n\r\nhello";
        let head_len = req.len() - 5;
        for cut in 0..head_len {
            assert!(parse_all(&req[..cut]).unwrap().is_none(), "cut {cut}");
        }
        let (head, used) = parse_all(req).unwrap().unwrap();
        assert_eq!(used, head_len);
        assert_eq!(head.method(), "POST");
        assert_eq!(head.path(), "/backend-api/codex/responses");
        assert_eq!(head.query_param("x"), Some("1"));
        assert_eq!(head.header("session-id"), Some(&b"s1"[..]));
        assert_eq!(head.framing, BodyFraming::Length(5));
        assert!(head.keep_alive);
    }

    #[test]
    fn rejects_smuggling_shapes() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ];
        for c in cases {
            assert!(
                matches!(parse_all(c), Err(HeadError::BadFraming(_))),
                "{}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn rejects_a_second_host_line() {
        assert_eq!(
            parse_all(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nhost: b\r\n\r\n").unwrap_err(),
            HeadError::Malformed("more than one Host header")
        );
        assert_eq!(
            parse_all(b"GET / HTTP/1.1\r\nHost: a\r\nHOST: a\r\n\r\n").unwrap_err(),
            HeadError::Malformed("more than one Host header")
        );
        // One Host, or none (HTTP/1.0 and local tools), is fine.
        assert!(parse_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .is_some());
        assert!(parse_all(b"GET / HTTP/1.1\r\n\r\n").unwrap().is_some());
    }

    #[test]
    fn rejects_malformed_and_versions() {
        assert!(matches!(
            parse_all(b"GARBAGE\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse_all(b"GET / HTTP/2.0\r\n\r\n"),
            Err(HeadError::UnsupportedVersion)
        ));
        assert!(matches!(
            parse_all(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn head_size_limit_at_and_past() {
        let limits = HeadLimits {
            max_head_bytes: 64,
            max_headers: 10,
        };
        let mut exact = b"GET / HTTP/1.1\r\nX: ".to_vec();
        while exact.len() < 60 {
            exact.push(b'a');
        }
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exact.len(), 64);
        assert!(parse_request_head(&exact, limits).unwrap().is_some());
        let mut over = exact.clone();
        over.insert(20, b'a');
        assert_eq!(
            parse_request_head(&over, limits).unwrap_err(),
            HeadError::TooLarge { limit: 64 }
        );
        // A partial head that already fills the limit is refused without waiting for more.
        assert_eq!(
            parse_request_head(&[b'G'; 64], limits).unwrap_err(),
            HeadError::TooLarge { limit: 64 }
        );
    }

    #[test]
    fn header_count_limit_at_and_past() {
        let limits = HeadLimits {
            max_head_bytes: 4096,
            max_headers: 3,
        };
        let ok = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert!(parse_request_head(ok, limits).unwrap().is_some());
        let over = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert_eq!(
            parse_request_head(over, limits).unwrap_err(),
            HeadError::TooManyHeaders { limit: 3 }
        );
    }

    #[test]
    fn keep_alive_rules_and_expect() {
        let (h, _) = parse_all(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let (h, _) = parse_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let (h, _) = parse_all(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let (h, _) = parse_all(
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.expect_continue);
        assert_eq!(h.framing, BodyFraming::Chunked);
    }

    #[test]
    fn skips_leading_empty_lines() {
        let (h, used) = parse_all(b"\r\nGET /health HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.path(), "/health");
        assert_eq!(used, 2 + 24);
    }
}
