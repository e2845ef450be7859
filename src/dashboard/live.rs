//! `GET /api/live`: the dashboard's live feed, as server-sent events. Every tick carries the
//! gateway's counters and the request-log rows recorded since the previous tick, so the overview
//! updates without polling the whole log.
//!
//! Rows come from the ledger thread (a small search per tick), so a request shows once the
//! ledger has written it: within its flush interval.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::await_reply;
use crate::http::response::{write_head, OutFraming};
use crate::ledger::search::RequestFilter;
use crate::ledger::LedgerQuery;
use crate::metrics;
use crate::proxy::client::ClientConn;
use crate::worker::Worker;

const TICK: Duration = Duration::from_secs(2);
/// Rows in the first tick (the recent past), and the most in any later one.
const FIRST_ROWS: usize = 20;
const MAX_ROWS: usize = 100;
/// Ids already sent, remembered to skip rows of the same millisecond seen twice.
const SEEN: usize = 512;

pub async fn stream(w: &Worker, client: &mut ClientConn) -> bool {
    let mut head = Vec::with_capacity(256);
    write_head(
        &mut head,
        200,
        &[
            ("content-type", b"text/event-stream"),
            ("cache-control", b"no-store"),
            // Proxies in front must not hold events back.
            ("x-accel-buffering", b"no"),
        ],
        OutFraming::Close,
        false,
    );
    if client
        .write(Bytes::from(head), w.shared.settings.client_write_timeout)
        .await
        .is_err()
    {
        return false;
    }
    let mut since_ms: Option<u64> = None;
    let mut seen: HashSet<String> = HashSet::new();
    let mut order: VecDeque<String> = VecDeque::new();
    loop {
        let limit = if since_ms.is_none() {
            FIRST_ROWS
        } else {
            MAX_ROWS
        };
        let filter = RequestFilter {
            since_ms,
            limit,
            ..RequestFilter::default()
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let rows = match w.shared.ledger_queries.try_send(LedgerQuery::Search {
            filter: Box::new(filter),
            reply: tx,
        }) {
            Ok(()) => await_reply(rx)
                .await
                .and_then(Result::ok)
                .map(|p| p.requests)
                .unwrap_or_default(),
            // A busy ledger skips a tick of rows; the counters still go out.
            Err(_) => Vec::new(),
        };
        let fresh: Vec<_> = rows
            .into_iter()
            .filter(|r| !seen.contains(&r.request_id))
            .collect();
        for r in &fresh {
            since_ms = Some(since_ms.map_or(r.ts_ms, |s| s.max(r.ts_ms)));
            seen.insert(r.request_id.clone());
            order.push_back(r.request_id.clone());
            if order.len() > SEEN {
                if let Some(old) = order.pop_front() {
                    seen.remove(&old);
                }
            }
        }
        if since_ms.is_none() {
            // An empty log: start from now, not from the beginning of time.
            since_ms = Some(crate::accounts::now_unix() * 1000);
        }
        let tick = json!({
            "ts_ms": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            "metrics": metrics::sum(&w.shared.metrics),
            "requests": fresh,
        });
        let mut event = b"event: tick\ndata: ".to_vec();
        event.extend_from_slice(&serde_json::to_vec(&tick).unwrap_or_default());
        event.extend_from_slice(b"\n\n");
        if client
            .write(Bytes::from(event), w.shared.settings.client_write_timeout)
            .await
            .is_err()
        {
            return false;
        }
        if w.shared.shutdown.is_requested() {
            return false;
        }
        monoio::time::sleep(TICK).await;
        if w.shared.shutdown.is_requested() {
            return false;
        }
    }
}
