//! A deliberately plain HTTP/1.1 client over std `TcpStream` for the mock's tests: it keeps the
//! raw chunk boundaries and tells a clean end (terminating chunk) from an abort. [`Conn`] is
//! generic over the byte stream so the same client runs over TLS.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use loadtest::mock::{MockConfig, MockUpstream, SeedAccount};
use serde_json::{json, Value};

pub fn start() -> MockUpstream {
    MockUpstream::start(MockConfig::default()).expect("mock starts")
}

pub struct Conn<S = TcpStream> {
    reader: BufReader<S>,
}

pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn::over(s)
    }
}

impl<S> Conn<S> {
    pub fn stream(&self) -> &S {
        self.reader.get_ref()
    }
}

impl<S: Read + Write> Conn<S> {
    /// A client over an already connected stream (e.g. a TLS session).
    pub fn over(stream: S) -> Conn<S> {
        Conn {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, method: &str, path: &str, headers: &[(String, String)], body: &[u8]) {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: mock\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let s = self.reader.get_mut();
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
    }

    pub fn read_head(&mut self) -> io::Result<Head> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {line:?}"),
                )
            })?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').expect("header line");
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        Ok(Head { status, headers })
    }

    /// One chunk of a chunked body; `Ok(None)` at the terminating chunk.
    pub fn read_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "eof before chunk",
            ));
        }
        let size = usize::from_str_radix(line.trim(), 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size {line:?}"),
            )
        })?;
        let mut data = vec![0; size];
        self.reader.read_exact(&mut data)?;
        let mut crlf = [0u8; 2];
        self.reader.read_exact(&mut crlf)?;
        if size == 0 {
            return Ok(None);
        }
        Ok(Some(data))
    }
}

pub struct Reply {
    pub head: Head,
    pub body: Vec<u8>,
    /// Sizes of the chunks as they were framed.
    pub chunks: Vec<usize>,
    /// The terminating chunk (or the full content-length) arrived.
    pub complete: bool,
    pub error: Option<io::Error>,
}

impl Reply {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("json body ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn events(&self) -> Vec<(String, Value)> {
        parse_sse(&self.body)
    }
}

pub fn read_reply<S: Read + Write>(c: &mut Conn<S>) -> Reply {
    let head = c.read_head().expect("response head");
    let mut body = Vec::new();
    let mut chunks = Vec::new();
    let mut complete = false;
    let mut error = None;
    if head.chunked() {
        loop {
            match c.read_chunk() {
                Ok(Some(data)) => {
                    chunks.push(data.len());
                    body.extend_from_slice(&data);
                }
                Ok(None) => {
                    complete = true;
                    break;
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
    } else {
        let len: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        body.resize(len, 0);
        match c.reader.read_exact(&mut body) {
            Ok(()) => complete = true,
            Err(e) => error = Some(e),
        }
    }
    Reply {
        head,
        body,
        chunks,
        complete,
        error,
    }
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Reply {
    let mut c = Conn::open(addr);
    c.send(method, path, headers, body);
    read_reply(&mut c)
}

pub fn auth(a: &SeedAccount) -> Vec<(String, String)> {
    vec![
        ("authorization".into(), format!("Bearer {}", a.access_token)),
        ("chatgpt-account-id".into(), a.chatgpt_account_id.clone()),
        ("content-type".into(), "application/json".into()),
        ("accept".into(), "text/event-stream".into()),
    ]
}

pub fn with(mut h: Vec<(String, String)>, k: &str, v: &str) -> Vec<(String, String)> {
    h.push((k.to_string(), v.to_string()));
    h
}

/// A Codex-shaped request body (PROTOCOL.md 1.5).
pub fn turn(model: &str, user_text: &str) -> Value {
    json!({
        "model": model,
        "instructions": "You are Codex, a coding agent.",
        "input": [
            {"type":"message","role":"developer","content":[{"type":"input_text","text":"<environment_context/>"}]},
            {"type":"message","role":"user","content":[{"type":"input_text","text":user_text}]}
        ],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "reasoning": {"effort":"medium","summary":"auto"},
        "store": false,
        "stream": true,
        "include": ["reasoning.encrypted_content"],
    })
}

pub fn post_turn(
    m: &MockUpstream,
    a: &SeedAccount,
    headers: &[(String, String)],
    body: &Value,
) -> Reply {
    let mut h = auth(a);
    h.extend_from_slice(headers);
    request(
        m.addr(),
        "POST",
        "/backend-api/codex/responses",
        &h,
        body.to_string().as_bytes(),
    )
}

/// Splits an SSE byte stream into (event name, data JSON); accepts LF or CRLF framing and skips
/// comment blocks.
pub fn parse_sse(bytes: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8_lossy(bytes).replace("\r\n", "\n");
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(v).expect("data line is JSON"));
                }
            }
            Some((name?, data?))
        })
        .collect()
}

pub fn control(m: &MockUpstream, method: &str, path: &str, body: &str) -> Reply {
    request(
        m.addr(),
        method,
        path,
        &[("content-type".into(), "application/json".into())],
        body.as_bytes(),
    )
}
