//! One request/response exchange on a kept-alive TCP connection: write the request, parse the
//! head with httparse, de-chunk the body, and time the first byte, the first delta, the gaps
//! between deltas and the end.
//!
//! Every timestamp is taken when a read returns, so it is when the bytes reached this process,
//! not when they were parsed. A request on a reused connection that finds it closed before a
//! single response byte is retried once on a fresh one (a server may close an idle keep-alive
//! connection at any time; RFC 9112 section 9.3.1 lets clients retry then).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::chunked::Chunked;
use super::live::Live;
use super::record::{ErrorKind, Outcome};
use super::sse::{Event, SseWatcher};

/// A response head may grow the read buffer up to this; past it the response is a protocol
/// error.
const MAX_HEAD: usize = 64 * 1024;

/// A ready-to-send request: `head` (with the body appended when it is small) and `body`.
#[derive(Debug, Clone)]
pub struct Request {
    pub head: Bytes,
    pub body: Bytes,
}

/// A client connection and its read buffer, kept across requests.
pub struct Conn {
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(read_buf: usize) -> Conn {
        Conn {
            stream: None,
            buf: vec![0; read_buf],
        }
    }

    /// Forgets the connection (after a timeout the exchange was cut off mid-way).
    pub fn reset(&mut self) {
        self.stream = None;
    }
}

enum Framing {
    Chunked(Chunked),
    Length(u64),
    Close,
}

/// Failure of one attempt; `Stale` means "the reused connection was already dead".
enum Fail {
    Stale,
    Kind(ErrorKind),
}

/// Runs one exchange; durations in the outcome are measured from `start`.
pub async fn exchange(
    conn: &mut Conn,
    addr: SocketAddr,
    req: &Request,
    start: Instant,
    live: &Live,
) -> Outcome {
    let mut out = Outcome::default();
    let reused = conn.stream.is_some();
    let mut result = attempt(conn, addr, req, start, live, &mut out, reused).await;
    if matches!(result, Err(Fail::Stale)) {
        conn.stream = None;
        out = Outcome::default();
        result = attempt(conn, addr, req, start, live, &mut out, false).await;
    }
    match result {
        Ok(()) => {}
        Err(Fail::Stale) => out.error = Some(ErrorKind::Truncated),
        Err(Fail::Kind(k)) => out.error = Some(k),
    }
    if out.error.is_some() {
        conn.stream = None;
    }
    out.total = start.elapsed();
    out
}

async fn attempt(
    conn: &mut Conn,
    addr: SocketAddr,
    req: &Request,
    start: Instant,
    live: &Live,
    out: &mut Outcome,
    reused: bool,
) -> Result<(), Fail> {
    let stream = match &mut conn.stream {
        Some(s) => s,
        None => {
            let s = TcpStream::connect(addr)
                .await
                .map_err(|_| Fail::Kind(ErrorKind::Connect))?;
            // Requests and events are small; Nagle would add up to 40 ms to each.
            let _ = s.set_nodelay(true);
            conn.stream.insert(s)
        }
    };
    let stale_or = |k| if reused { Fail::Stale } else { Fail::Kind(k) };
    stream
        .write_all(&req.head)
        .await
        .map_err(|_| stale_or(ErrorKind::Io))?;
    if !req.body.is_empty() {
        stream
            .write_all(&req.body)
            .await
            .map_err(|_| Fail::Kind(ErrorKind::Io))?;
    }
    out.sent = (req.head.len() + req.body.len()) as u64;

    // Head.
    let buf = &mut conn.buf;
    let mut filled = 0;
    let (status, mut framing, keep_alive, head_len) = loop {
        if filled == buf.len() {
            if buf.len() >= MAX_HEAD {
                return Err(Fail::Kind(ErrorKind::Protocol));
            }
            buf.resize((buf.len() * 2).min(MAX_HEAD), 0);
        }
        let n = match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) if filled == 0 => return Err(stale_or(ErrorKind::Truncated)),
            Ok(0) | Err(_) => return Err(Fail::Kind(ErrorKind::Truncated)),
            Ok(n) => n,
        };
        if filled == 0 {
            out.ttfb = Some(start.elapsed());
        }
        filled += n;
        out.bytes += n as u64;
        match parse_head(&buf[..filled]) {
            Ok(Some(h)) => break h,
            Ok(None) => continue,
            Err(()) => return Err(Fail::Kind(ErrorKind::Protocol)),
        }
    };

    // Body.
    let _open = (status == 200).then(|| live.open_stream());
    let mut body = BodyWatch {
        start,
        sse: (status == 200).then(SseWatcher::default),
        last_delta: None,
        terminal: None,
    };
    let mut finished = body.feed(&mut framing, &buf[head_len..filled], out)?;
    while !finished {
        let n = match stream.read(&mut buf[..]).await {
            Ok(0) if matches!(framing, Framing::Close) => break,
            Ok(0) | Err(_) => return Err(Fail::Kind(ErrorKind::Truncated)),
            Ok(n) => n,
        };
        out.bytes += n as u64;
        finished = body.feed(&mut framing, &buf[..n], out)?;
    }
    if !keep_alive || matches!(framing, Framing::Close) {
        conn.stream = None;
    }
    if status != 200 {
        return Err(Fail::Kind(ErrorKind::Status(status)));
    }
    match body.terminal {
        Some(Event::Completed) => Ok(()),
        Some(_) => Err(Fail::Kind(ErrorKind::FailedEvent)),
        None => Err(Fail::Kind(ErrorKind::Truncated)),
    }
}

/// Status, framing, keep-alive and head length of a complete head; `Ok(None)` if partial.
#[allow(clippy::type_complexity)]
fn parse_head(raw: &[u8]) -> Result<Option<(u16, Framing, bool, usize)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let status = resp.code.ok_or(())?;
    let mut framing = Framing::Close;
    let mut keep_alive = resp.version == Some(1);
    for h in resp.headers.iter() {
        let v = h.value;
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if v.len() >= 7 && v[v.len() - 7..].eq_ignore_ascii_case(b"chunked") {
                framing = Framing::Chunked(Chunked::default());
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            if !matches!(framing, Framing::Chunked(_)) {
                let n = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                framing = Framing::Length(n.ok_or(())?);
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(v).to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        }
    }
    // 1xx, 204 and 304 have no body (RFC 9112 section 6.3).
    if status < 200 || status == 204 || status == 304 {
        framing = Framing::Length(0);
    }
    Ok(Some((status, framing, keep_alive, len)))
}

struct BodyWatch {
    start: Instant,
    sse: Option<SseWatcher>,
    last_delta: Option<Instant>,
    terminal: Option<Event>,
}

impl BodyWatch {
    /// Feeds received body bytes; returns whether the body is complete.
    fn feed(
        &mut self,
        framing: &mut Framing,
        bytes: &[u8],
        out: &mut Outcome,
    ) -> Result<bool, Fail> {
        let now = Instant::now();
        match framing {
            Framing::Chunked(d) => {
                d.feed(bytes, |s| self.data(s, now, out))
                    .map_err(|_| Fail::Kind(ErrorKind::Protocol))?;
                Ok(d.is_done())
            }
            Framing::Length(left) => {
                let take = (bytes.len() as u64).min(*left) as usize;
                self.data(&bytes[..take], now, out);
                *left -= take as u64;
                Ok(*left == 0)
            }
            Framing::Close => {
                self.data(bytes, now, out);
                Ok(false)
            }
        }
    }

    fn data(&mut self, bytes: &[u8], now: Instant, out: &mut Outcome) {
        let Some(sse) = self.sse.as_mut() else {
            return;
        };
        let (start, last_delta, terminal) = (self.start, &mut self.last_delta, &mut self.terminal);
        sse.feed(bytes, |ev| {
            out.events += 1;
            match ev {
                Event::Delta => {
                    match *last_delta {
                        None => out.ttfd = Some(now - start),
                        Some(prev) => out.gaps_us.push((now - prev).as_micros() as u64),
                    }
                    *last_delta = Some(now);
                }
                Event::Completed | Event::Failed => {
                    terminal.get_or_insert(ev);
                }
                Event::Other => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_framing_and_keep_alive() {
        let (s, f, ka, len) =
            parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nrest")
                .unwrap()
                .unwrap();
        assert!((s, ka, len) == (200, true, 47) && matches!(f, Framing::Chunked(_)));
        let (s, f, ka, _) =
            parse_head(b"HTTP/1.1 503 x\r\ncontent-length: 12\r\nconnection: close\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!((s, ka) == (503, false) && matches!(f, Framing::Length(12)));
        let (_, f, ka, _) = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(!ka && matches!(f, Framing::Close));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
    }

    /// A scripted server: answers each request on a connection with the next reply, written
    /// in 7-byte pieces, then keeps the connection (or closes it).
    async fn serve(replies: Vec<Vec<u8>>, close_after_each: bool) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut replies = replies.into_iter();
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = vec![0; 65536];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let Some(r) = replies.next() else { return };
                    for piece in r.chunks(7) {
                        let _ = s.write_all(piece).await;
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                    if close_after_each {
                        break;
                    }
                }
            }
        });
        addr
    }

    fn chunked(events: &[&str]) -> Vec<u8> {
        let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for e in events {
            let block = format!("event: {e}\ndata: {{}}\n\n");
            out.extend_from_slice(format!("{:x}\r\n{block}\r\n", block.len()).as_bytes());
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    fn ok() -> Vec<u8> {
        chunked(&[
            "response.created",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.completed",
        ])
    }

    fn length(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn req() -> Request {
        Request {
            head: Bytes::from_static(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"),
            body: Bytes::new(),
        }
    }

    #[tokio::test]
    async fn measures_a_stream_and_reuses_the_connection() {
        let failed = length("200 OK", "event: response.failed\ndata: {}\n\n");
        let addr = serve(vec![ok(), ok(), failed], false).await;
        let live = Live::new();
        let mut c = Conn::new(16);
        for _ in 0..2 {
            let o = exchange(&mut c, addr, &req(), Instant::now(), &live).await;
            assert_eq!(o.error, None);
            assert_eq!((o.events, o.gaps_us.len()), (4, 1));
            assert!(o.ttfb.unwrap() <= o.ttfd.unwrap() && o.ttfd.unwrap() <= o.total);
            assert_eq!(o.bytes as usize, ok().len());
            assert_eq!(o.sent as usize, req().head.len());
            assert!(c.stream.is_some());
        }
        let o = exchange(&mut c, addr, &req(), Instant::now(), &live).await;
        assert_eq!(o.error, Some(ErrorKind::FailedEvent));
        assert_eq!(live.open_peak.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(live.open.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn statuses_truncation_and_stale_connections() {
        let busy = length("503 Busy", "{}");
        let mut cut = ok();
        cut.truncate(cut.len() - 40);
        // Each connection answers once and closes: the second request on a kept connection
        // finds it dead and must retry on a new one.
        let addr = serve(vec![ok(), ok(), busy, cut], true).await;
        let live = Live::new();
        let mut c = Conn::new(4096);
        let o = exchange(&mut c, addr, &req(), Instant::now(), &live).await;
        assert_eq!(o.error, None);
        let o = exchange(&mut c, addr, &req(), Instant::now(), &live).await;
        assert_eq!(o.error, None, "stale connection is retried");
        let o = exchange(&mut c, addr, &req(), Instant::now(), &live).await;
        assert_eq!(o.error, Some(ErrorKind::Status(503)));
        let o = exchange(&mut c, addr, &req(), Instant::now(), &live).await;
        assert_eq!(o.error, Some(ErrorKind::Truncated));
        let dead: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let o = exchange(&mut Conn::new(64), dead, &req(), Instant::now(), &live).await;
        assert_eq!(o.error, Some(ErrorKind::Connect));
    }
}
