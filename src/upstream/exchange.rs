//! One upstream exchange: write a request on a pooled or fresh connection, read the response
//! head, and (for small replies) the whole body.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::time::timeout;

use super::io::UpstreamConn;
use super::UpstreamError;
use crate::http::chunked::ChunkedDecoder;
use crate::http::response::{parse_upstream_head, UpstreamFraming, UpstreamHead};
use crate::metrics::inc;
use crate::worker::Worker;

/// Bodies up to this size are sent in the same write as the head.
const COALESCE_BODY: usize = 16 * 1024;

pub struct Exchange {
    pub conn: UpstreamConn,
    pub head: UpstreamHead,
}

/// Sends `head` + `body` and reads the response head. A reused connection that fails before any
/// response byte is retried once on a fresh connection (the upstream closed it while idle).
pub async fn send(w: &Worker, head: &Bytes, body: &Bytes) -> Result<Exchange, UpstreamError> {
    let settings = &w.shared.settings;
    let mut allow_pooled = true;
    loop {
        let pooled = if allow_pooled {
            w.pool.borrow_mut().take(std::time::Instant::now())
        } else {
            None
        };
        let mut conn = match pooled {
            Some(c) => {
                inc(&w.metrics.upstream_reused);
                c
            }
            None => {
                inc(&w.metrics.upstream_connects);
                UpstreamConn::connect(&w.shared, settings.upstream_connect_timeout).await?
            }
        };
        match write_and_read_head(&mut conn, head, body, settings.upstream_idle_timeout).await {
            Ok(h) => return Ok(Exchange { conn, head: h }),
            Err(e) if conn.reused && e.before_response() => {
                allow_pooled = false;
                continue;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn write_and_read_head(
    conn: &mut UpstreamConn,
    head: &Bytes,
    body: &Bytes,
    idle: Duration,
) -> Result<UpstreamHead, UpstreamError> {
    if body.len() <= COALESCE_BODY {
        let mut one = BytesMut::with_capacity(head.len() + body.len());
        one.extend_from_slice(head);
        one.extend_from_slice(body);
        conn.write_all(one.freeze())
            .await
            .map_err(UpstreamError::Io)?;
    } else {
        conn.write_all(head.clone())
            .await
            .map_err(UpstreamError::Io)?;
        conn.write_all(body.clone())
            .await
            .map_err(UpstreamError::Io)?;
    }
    read_head(conn, idle).await
}

pub async fn read_head(
    conn: &mut UpstreamConn,
    idle: Duration,
) -> Result<UpstreamHead, UpstreamError> {
    loop {
        if !conn.buf.is_empty() {
            if let Some((head, used)) = parse_upstream_head(&conn.buf, false)? {
                let _ = conn.buf.split_to(used);
                return Ok(head);
            }
        }
        match timeout(idle, conn.read_more()).await {
            Ok(Ok(0)) => return Err(UpstreamError::Closed),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(UpstreamError::Io(e)),
            Err(_) => return Err(UpstreamError::IdleTimeout),
        }
    }
}

/// Reads a whole (small) body. Returns it and whether the connection may be pooled.
pub async fn read_body(
    conn: &mut UpstreamConn,
    head: &UpstreamHead,
    max: usize,
    idle: Duration,
) -> Result<(Bytes, bool), UpstreamError> {
    let mut body = BytesMut::new();
    match head.framing {
        UpstreamFraming::Empty => return Ok((Bytes::new(), !head.close)),
        UpstreamFraming::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n > max {
                return Err(UpstreamError::BodyTooLarge(max));
            }
            while conn.buf.len() < n {
                read_some(conn, idle).await?;
            }
            body.extend_from_slice(&conn.buf.split_to(n));
        }
        UpstreamFraming::Chunked => {
            let mut dec = ChunkedDecoder::new();
            loop {
                let feed = dec.feed(&conn.buf, |d| body.extend_from_slice(d))?;
                let _ = conn.buf.split_to(feed.consumed);
                if body.len() > max {
                    return Err(UpstreamError::BodyTooLarge(max));
                }
                if feed.done {
                    break;
                }
                read_some(conn, idle).await?;
            }
        }
        UpstreamFraming::UntilClose => loop {
            body.extend_from_slice(&conn.buf.split());
            if body.len() > max {
                return Err(UpstreamError::BodyTooLarge(max));
            }
            match timeout(idle, conn.read_more()).await {
                Ok(Ok(0)) => return Ok((body.freeze(), false)),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(UpstreamError::Io(e)),
                Err(_) => return Err(UpstreamError::IdleTimeout),
            }
        },
    }
    Ok((body.freeze(), !head.close))
}

async fn read_some(conn: &mut UpstreamConn, idle: Duration) -> Result<(), UpstreamError> {
    match timeout(idle, conn.read_more()).await {
        Ok(Ok(0)) => Err(UpstreamError::Closed),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(UpstreamError::Io(e)),
        Err(_) => Err(UpstreamError::IdleTimeout),
    }
}
