//! Pure HTTP/1.1 codec over byte slices: request heads, body framing (length and chunked), response
//! heads both ways, the SSE event scanner, OpenAI error bodies and the WebSocket codec.
//!
//! Nothing in here touches a socket, a clock or shared state, so every piece is unit-tested with its
//! input split at every byte. The proxy owns the IO; this module owns the bytes.

pub mod chunked;
pub mod error_body;
pub mod request;
pub mod response;
pub mod sse;
pub mod ws;

/// Case-insensitive ASCII comparison of a header name against a lowercase literal.
#[inline]
pub fn name_eq(name: &str, lower: &str) -> bool {
    name.len() == lower.len()
        && name
            .bytes()
            .zip(lower.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b)
}

/// Trims optional whitespace (SP / HTAB) around a header value, RFC 9110 §5.5.
pub fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |p| p + 1);
    v.get(start..end).unwrap_or_default()
}

/// True when a comma-separated header value lists `token` (case-insensitive), as `Connection` does.
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|part| trim_ows(part).eq_ignore_ascii_case(token.as_bytes()))
}
