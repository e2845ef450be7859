//! What the mock keeps of a received request, and request-body decoding (`Content-Encoding`,
//! `application/x-www-form-urlencoded`).

use std::io::Read as _;

use hyper::HeaderMap;
use serde::Serialize;

/// Upper bound on a decoded request body; Codex bodies are tens of KB, this only stops a
/// decompression bomb from eating the test machine.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// How a request reached the mock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// An HTTP request; `body` is its (decoded) body.
    #[default]
    Http,
    /// A WebSocket: the upgrade request itself (empty `body`), then each `response.create` /
    /// `response.append` message, `body` being the message text as received and `method`/`path`/
    /// `headers` those of the upgrade request.
    #[serde(rename = "websocket")]
    WebSocket,
}

/// A request as the mock received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    /// Path with query.
    pub path: String,
    /// In received order; names lower-cased by the HTTP parser, repeated names grouped.
    pub headers: Vec<(String, String)>,
    /// Decoded when `Content-Encoding` was zstd, gzip or deflate.
    pub body: Vec<u8>,
    pub content_encoding: Option<String>,
    pub transport: Transport,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

pub fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Decodes `raw` per `Content-Encoding`; `Err` carries a client-facing message.
pub fn decode_body(encoding: Option<&str>, raw: &[u8]) -> Result<Vec<u8>, String> {
    let enc = encoding.map(|e| e.trim().to_ascii_lowercase());
    match enc.as_deref() {
        None | Some("") | Some("identity") => Ok(raw.to_vec()),
        Some("zstd") => read_capped(
            zstd::stream::read::Decoder::new(raw).map_err(|e| e.to_string())?,
            "zstd",
        ),
        Some("gzip") | Some("x-gzip") => read_capped(flate2::read::GzDecoder::new(raw), "gzip"),
        Some("deflate") => read_capped(flate2::read::ZlibDecoder::new(raw), "deflate"),
        Some(other) => Err(format!("Unsupported Content-Encoding: {other}")),
    }
}

/// `a=1&b=x%20y+z` as (name, value) pairs in order. Malformed escapes are kept literally:
/// the token endpoint then fails on the value, which is what a test of bad input wants to see.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let mut it = kv.splitn(2, |&b| b == b'=');
            let k = percent_decode(it.next().unwrap_or_default());
            let v = percent_decode(it.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

/// The form-encoding of RFC 1866 8.2.1 / WHATWG: `+` is a space, `%XX` a byte.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let escaped = (b == b'%')
            .then(|| raw.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (_, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3986 section 2.3: everything but the unreserved characters as `%XX`, for query values
/// the mock writes into a `Location`.
pub fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

fn read_capped(r: impl std::io::Read, name: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("Could not decode {name} request body: {e}"))?;
    if out.len() > MAX_BODY_BYTES {
        return Err(format!(
            "Decoded request body exceeds {MAX_BODY_BYTES} bytes"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn parses_forms() {
        let f = parse_form(b"grant_type=refresh_token&refresh_token=rt_a%2Bb%3D&scope=openid+profile&&flag&bad=%zz%4");
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("grant_type"), Some("refresh_token"));
        assert_eq!(get("refresh_token"), Some("rt_a+b="));
        assert_eq!(get("scope"), Some("openid profile"));
        assert_eq!(get("flag"), Some(""));
        assert_eq!(get("bad"), Some("%zz%4"));
        assert_eq!(f.len(), 5);
        assert!(parse_form(b"").is_empty());
    }

    #[test]
    fn percent_encoding_round_trips_through_the_form_parser() {
        let raw = "a b&c=d/é?~._-+%";
        let enc = percent_encode(raw);
        assert_eq!(enc, "a%20b%26c%3Dd%2F%C3%A9%3F~._-%2B%25");
        let f = parse_form(format!("k={enc}").as_bytes());
        assert_eq!(f, [("k".to_string(), raw.to_string())]);
    }

    #[test]
    fn decodes_zstd_and_gzip() {
        let plain = br#"{"model":"gpt-5.5"}"#;
        let z = zstd::encode_all(&plain[..], 3).unwrap();
        assert_eq!(decode_body(Some("zstd"), &z).unwrap(), plain);
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        g.write_all(plain).unwrap();
        assert_eq!(
            decode_body(Some("GZIP"), &g.finish().unwrap()).unwrap(),
            plain
        );
        assert_eq!(decode_body(None, plain).unwrap(), plain);
        assert!(decode_body(Some("zstd"), b"not zstd").is_err());
        assert!(decode_body(Some("br"), plain).is_err());
    }
}
