//! `parse_request_head` on arbitrary bytes, under the default limits and under tight ones.
//!
//! Invariants checked (beyond "never panics"):
//! - a parsed head used at most the input, at most `max_head_bytes`, and ends in a line feed;
//!   `head_len()` is the bytes used; at most `min(max_headers, MAX_HEADERS_CEILING)` headers;
//! - every accessor answers (method, target, path, query, query_param for each key and for a
//!   missing one, headers, header/header_str for each name) and agrees with the others: the path
//!   is a prefix of the target, `header(name)` finds a value for every listed name, the method is
//!   a non-empty token;
//! - framing is self-consistent: `Length(n)` has n > 0, `Chunked` only on HTTP/1.1, version ≤ 1;
//! - the head boundary does not depend on how the bytes arrived: every prefix shorter than the head
//!   is "need more bytes" (`Ok(None)`), and a longer input parses to the same head;
//! - errors carry the limit in force and format without panicking.

#![no_main]

use codex_lb::http::request::{
    parse_request_head, BodyFraming, HeadError, HeadLimits, RequestHead, MAX_HEADERS_CEILING,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tight = HeadLimits {
        max_head_bytes: data
            .len()
            .saturating_sub(usize::from(data.first().copied().unwrap_or(0) & 3)),
        max_headers: usize::from(data.last().copied().unwrap_or(0) % 6),
    };
    for limits in [
        HeadLimits::default(),
        tight,
        HeadLimits {
            max_head_bytes: 48,
            max_headers: 2,
        },
        HeadLimits {
            max_head_bytes: usize::MAX,
            max_headers: usize::MAX,
        },
    ] {
        check(data, limits);
    }
});

fn check(data: &[u8], limits: HeadLimits) {
    let result = parse_request_head(data, limits);
    match &result {
        Ok(Some((head, used))) => {
            let used = *used;
            assert!(used <= data.len(), "used {used} > input {}", data.len());
            assert!(used <= limits.max_head_bytes, "used {used} over the limit");
            assert_eq!(head.head_len(), used, "head_len is not the bytes used");
            assert_eq!(data[used - 1], b'\n', "a head ends with its blank line");
            check_accessors(head, limits);
            check_prefixes(data, used, head, limits);
        }
        Ok(None) => {}
        Err(e) => {
            let _ = e.to_string();
            match e {
                HeadError::TooLarge { limit } => assert_eq!(*limit, limits.max_head_bytes),
                HeadError::TooManyHeaders { limit } => {
                    assert_eq!(*limit, limits.max_headers.min(MAX_HEADERS_CEILING))
                }
                HeadError::Malformed(m) | HeadError::BadFraming(m) => assert!(!m.is_empty()),
                HeadError::UnsupportedVersion => {}
            }
        }
    }
}

fn check_accessors(head: &RequestHead, limits: HeadLimits) {
    let method = head.method();
    assert!(!method.is_empty(), "empty method");
    assert!(
        method.bytes().all(|b| b.is_ascii_graphic()),
        "method {method:?} is not a token"
    );
    let target = head.target();
    let path = head.path();
    assert!(
        target.starts_with(path),
        "path {path:?} not a prefix of {target:?}"
    );
    match head.query() {
        Some(q) => {
            assert_eq!(target.len(), path.len() + 1 + q.len());
            for kv in q.split('&') {
                let key = kv.split_once('=').map_or(kv, |(k, _)| k);
                let v = head.query_param(key);
                assert!(v.is_some(), "query_param({key:?}) lost in {q:?}");
            }
        }
        None => assert_eq!(path, target),
    }
    assert_eq!(head.query_param("\u{0}no-such-key\u{0}"), None);

    let max_headers = limits.max_headers.min(MAX_HEADERS_CEILING);
    let mut count = 0;
    for (name, value) in head.headers() {
        count += 1;
        assert!(!name.is_empty(), "empty header name");
        let lower = name.to_ascii_lowercase();
        assert!(
            head.header(&lower).is_some(),
            "header({lower:?}) does not find a listed header"
        );
        let first = head.header(&lower).unwrap_or_default();
        if std::str::from_utf8(first).is_ok() {
            assert!(head.header_str(&lower).is_some());
        }
        let _ = value;
    }
    assert!(
        count <= max_headers,
        "{count} headers over the limit {max_headers}"
    );

    assert!(head.version_minor <= 1, "version 1.{}", head.version_minor);
    match head.framing {
        BodyFraming::Length(n) => assert!(n > 0, "Length(0) instead of None"),
        BodyFraming::Chunked => assert_eq!(head.version_minor, 1, "chunked on HTTP/1.0"),
        BodyFraming::None => {}
    }
}

/// Where the head ends must not depend on how the bytes were split into reads.
fn check_prefixes(data: &[u8], used: usize, head: &RequestHead, limits: HeadLimits) {
    let mut cuts = vec![0, 1, used / 2, used.saturating_sub(2), used - 1];
    // A few more cut points spread by the input itself.
    cuts.extend(data.iter().take(4).map(|b| usize::from(*b) % used));
    for cut in cuts.into_iter().filter(|c| *c < used) {
        match parse_request_head(&data[..cut], limits) {
            Ok(None) => {}
            other => panic!(
                "prefix of {cut} bytes of a {used}-byte head gave {:?} instead of Ok(None)",
                other.map(|o| o.map(|(_, n)| n))
            ),
        }
    }
    if data.len() > used {
        // The same head with nothing after it parses the same way.
        match parse_request_head(&data[..used], limits) {
            Ok(Some((again, n))) => {
                assert_eq!(n, used);
                assert_eq!(again.method(), head.method());
                assert_eq!(again.target(), head.target());
                assert_eq!(again.framing, head.framing);
                assert_eq!(again.keep_alive, head.keep_alive);
                assert_eq!(again.expect_continue, head.expect_continue);
                assert!(again.headers().eq(head.headers()));
            }
            other => panic!(
                "the {used}-byte head alone gave {:?}",
                other.map(|o| o.map(|(_, n)| n))
            ),
        }
    }
}
