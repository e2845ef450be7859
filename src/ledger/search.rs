//! Reading the request log: filters and cursor pages, newest first. Log rows are keyed by
//! `(time ms, sequence)` big-endian, so a time range is one reverse range scan and a cursor is
//! the key of the last row a page returned.

use serde::Serialize;

use super::UsageEvent;

/// Rows looked at per page at most: a filter that matches rarely returns fewer rows and a cursor
/// to go on, rather than holding the ledger thread.
const MAX_SCAN: usize = 100_000;
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Unix milliseconds, inclusive.
    pub since_ms: Option<u64>,
    /// Unix milliseconds, exclusive.
    pub until_ms: Option<u64>,
    pub key: Option<String>,
    pub account: Option<String>,
    pub model: Option<String>,
    /// An exact status (`429`), or a class (`4xx`, `5xx`, `error` for any non-2xx).
    pub status: Option<String>,
    pub effort: Option<String>,
    pub route: Option<String>,
    /// Case-insensitive text found in the request id, conversation, error code or client.
    pub text: Option<String>,
    pub limit: usize,
    /// Continue below this row key (from a previous page's `next_cursor`).
    pub cursor: Option<[u8; 16]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub requests: Vec<UsageEvent>,
    /// Pass back as `cursor` for the next (older) page; `None` at the end of the range.
    pub next_cursor: Option<String>,
}

pub fn parse_cursor(s: &str) -> Option<[u8; 16]> {
    hex::decode(s).ok()?.try_into().ok()
}

fn status_matches(want: &str, status: u16) -> bool {
    match want {
        "error" => !(200..300).contains(&status),
        "2xx" | "3xx" | "4xx" | "5xx" => {
            want.as_bytes()[0].wrapping_sub(b'0') as u16 == status / 100
        }
        exact => exact.parse::<u16>().is_ok_and(|s| s == status),
    }
}

impl RequestFilter {
    fn matches(&self, ev: &UsageEvent) -> bool {
        let eq = |want: &Option<String>, got: &Option<String>| {
            want.as_deref().is_none_or(|w| got.as_deref() == Some(w))
        };
        let found = |text: &str| {
            let text = text.to_lowercase();
            [
                Some(&ev.request_id),
                ev.conversation.as_ref(),
                ev.error_code.as_ref(),
                ev.user_agent.as_ref(),
                ev.client_ip.as_ref(),
            ]
            .into_iter()
            .flatten()
            .any(|field| field.to_lowercase().contains(&text))
        };
        eq(&self.key, &ev.key_id)
            && eq(&self.account, &ev.account_id)
            && eq(&self.model, &ev.model)
            && eq(&self.effort, &ev.effort)
            && self.route.as_deref().is_none_or(|r| r == ev.route)
            && self
                .status
                .as_deref()
                .is_none_or(|s| status_matches(s, ev.status))
            && self.text.as_deref().is_none_or(found)
    }
}

pub fn search(tree: &sled::Tree, f: &RequestFilter) -> Result<Page, sled::Error> {
    let limit = f.limit.clamp(1, MAX_LIMIT);
    let mut low = [0u8; 16];
    low[..8].copy_from_slice(&f.since_ms.unwrap_or(0).to_be_bytes());
    let mut high = [0xffu8; 16];
    if let Some(u) = f.until_ms {
        high = [0u8; 16];
        high[..8].copy_from_slice(&u.to_be_bytes());
    }
    if let Some(c) = f.cursor {
        high = high.min(c);
    }
    let mut requests = Vec::new();
    let mut last_key: Option<[u8; 16]> = None;
    let mut scanned = 0;
    let mut exhausted = true;
    for kv in tree.range(low..high).rev() {
        let (k, v) = kv?;
        scanned += 1;
        last_key = <[u8; 16]>::try_from(k.as_ref()).ok();
        if let Ok(ev) = serde_json::from_slice::<UsageEvent>(&v) {
            if f.matches(&ev) {
                requests.push(ev);
            }
        }
        if requests.len() >= limit || scanned >= MAX_SCAN {
            exhausted = false;
            break;
        }
    }
    Ok(Page {
        requests,
        next_cursor: if exhausted {
            None
        } else {
            last_key.map(hex::encode)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(events: &[UsageEvent]) -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let t = db.open_tree("requests").unwrap();
        for (i, ev) in events.iter().enumerate() {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&ev.ts_ms.to_be_bytes());
            k[8..].copy_from_slice(&(i as u64).to_be_bytes());
            t.insert(k, serde_json::to_vec(ev).unwrap()).unwrap();
        }
        t
    }

    #[test]
    fn filters_and_pages_return_exactly_the_matching_rows() {
        let events: Vec<UsageEvent> = (0..250u64)
            .map(|i| UsageEvent {
                ts_ms: 1_000 + i,
                request_id: format!("r{i}"),
                account_id: Some(format!("acc_{}", i % 3)),
                model: Some(if i % 2 == 0 { "a" } else { "b" }.into()),
                status: if i % 10 == 0 { 429 } else { 200 },
                ..Default::default()
            })
            .collect();
        let t = tree_with(&events);
        let want: Vec<&str> = events
            .iter()
            .rev()
            .filter(|e| e.account_id.as_deref() == Some("acc_1") && e.model.as_deref() == Some("b"))
            .filter(|e| (1_050..1_200).contains(&e.ts_ms))
            .map(|e| e.request_id.as_str())
            .collect();
        let mut got: Vec<String> = Vec::new();
        let mut f = RequestFilter {
            since_ms: Some(1_050),
            until_ms: Some(1_200),
            account: Some("acc_1".into()),
            model: Some("b".into()),
            limit: 7,
            ..Default::default()
        };
        loop {
            let page = search(&t, &f).unwrap();
            assert!(page.requests.len() <= 7);
            got.extend(page.requests.iter().map(|e| e.request_id.clone()));
            match page.next_cursor {
                Some(c) => f.cursor = parse_cursor(&c),
                None => break,
            }
        }
        assert_eq!(got, want);
        let errors = search(
            &t,
            &RequestFilter {
                status: Some("4xx".into()),
                limit: 1000,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(errors.requests.len(), 25);
        assert!(errors.next_cursor.is_none());
    }
}
