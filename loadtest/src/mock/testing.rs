//! Test support for the mock's own end-to-end unit tests: a blocking one-request HTTP/1.1
//! client (`Connection: close`) that keeps the status, the headers and the de-chunked body.
//! Test-only; the crate's integration tests have their own richer client in `tests/common`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::harness::chunked::Chunked;

/// Per-call socket timeout: the mock answers these tests in milliseconds.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one request and reads the whole reply; panics on I/O or framing errors.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect to the mock");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the reply");

    let mut parsed = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut parsed);
    let httparse::Status::Complete(head_len) = resp.parse(&raw).expect("a valid head") else {
        panic!("incomplete response head");
    };
    let status = resp.code.expect("a status");
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let rest = &raw[head_len..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut out = Vec::new();
        let mut d = Chunked::default();
        d.feed(rest, |b| out.extend_from_slice(b))
            .expect("a valid chunked body");
        out
    } else {
        rest.to_vec()
    };
    Reply {
        status,
        headers,
        body,
    }
}
