//! The opening handshake (RFC 6455 §4): the server validates an upgrade request and answers 101;
//! the client builds an upgrade request and checks the server's 101.
//!
//! Headers come in as `(name, value)` pairs in arrival order, as the request and upstream head
//! parsers hand them out, so repeated fields (`Connection`, `Sec-WebSocket-Extensions`) are all
//! seen. The HTTP version (1.1 or later, §4.1) and the request target are the caller's to check.
//! Header values written here come from the caller; they must not contain CR or LF (values read
//! by our own parsers never do).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha1::{Digest, Sha1};
use thiserror::Error;

use super::extension::{self, ExtensionError, CLIENT_OFFER};
use super::mask::random_bytes;
use super::{DeflateConfig, DeflatePolicy};
use crate::http::{has_token, name_eq, trim_ows};

/// Appended to the key before hashing (RFC 6455 §1.3).
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The only protocol version (RFC 6455 §4.1).
const VERSION: &[u8] = b"13";

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (as sent, surrounding space trimmed).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(trim_ows(key));
    sha.update(WS_GUID);
    B64.encode(sha.finalize())
}

/// True when the request asks to switch to WebSocket (`Upgrade` lists `websocket`): the route
/// should go through [`accept_upgrade`] rather than be served as plain HTTP.
pub fn is_upgrade_request<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> bool {
    headers
        .into_iter()
        .any(|(n, v)| name_eq(n, "upgrade") && has_token(v, "websocket"))
}

// === server ===

/// Why an upgrade request is refused; the caller answers [`Self::status`] with
/// [`Self::headers`] and the message as the reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UpgradeError {
    #[error("WebSocket upgrade must use GET, not {0}")]
    NotGet(String),
    #[error("Upgrade header does not ask for websocket")]
    NotWebSocket,
    #[error("Connection header does not list upgrade")]
    ConnectionNotUpgrade,
    #[error("missing Sec-WebSocket-Version")]
    MissingVersion,
    #[error("unsupported Sec-WebSocket-Version (this server speaks 13)")]
    UnsupportedVersion,
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    #[error("Sec-WebSocket-Key is not one base64 value of 16 bytes")]
    BadKey,
}

impl UpgradeError {
    /// 426 when another protocol or version would work (RFC 6455 §4.2.2, RFC 9110 §15.5.22),
    /// 400 for a malformed handshake.
    pub fn status(&self) -> u16 {
        match self {
            UpgradeError::NotWebSocket | UpgradeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    /// Headers the refusal must carry: what to upgrade to, and the version spoken (§4.4).
    pub fn headers(&self) -> &'static [(&'static str, &'static [u8])] {
        match self {
            UpgradeError::NotWebSocket | UpgradeError::UnsupportedVersion => &[
                ("upgrade", b"websocket"),
                ("sec-websocket-version", VERSION),
            ],
            _ => &[],
        }
    }
}

/// An accepted upgrade: what to answer and how the connection runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHandshake {
    accept: String,
    deflate: Option<(DeflateConfig, String)>,
}

impl ServerHandshake {
    /// permessage-deflate parameters, when negotiated.
    pub fn deflate(&self) -> Option<DeflateConfig> {
        self.deflate.as_ref().map(|(c, _)| *c)
    }

    pub fn accept(&self) -> &str {
        &self.accept
    }

    /// Writes the 101 response head. `extra` headers (e.g. `x-codex-turn-state`) must not repeat
    /// the handshake's own.
    pub fn write_response(&self, extra: &[(&str, &[u8])], out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n",
        );
        push_header(out, "sec-websocket-accept", self.accept.as_bytes());
        if let Some((_, response)) = &self.deflate {
            push_header(out, "sec-websocket-extensions", response.as_bytes());
        }
        for (n, v) in extra {
            push_header(out, n, v);
        }
        out.extend_from_slice(b"\r\n");
    }
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Validates an upgrade request (RFC 6455 §4.2.1) and negotiates compression under `policy`.
/// The checks run in a fixed order, so each request has one answer.
pub fn accept_upgrade<'a>(
    method: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    policy: &DeflatePolicy,
) -> Result<ServerHandshake, UpgradeError> {
    let mut upgrade = false;
    let mut connection = false;
    let mut versions = Vec::new();
    let mut keys = Vec::new();
    let mut extensions = Vec::new();
    for (name, value) in headers {
        if name_eq(name, "upgrade") {
            upgrade |= has_token(value, "websocket");
        } else if name_eq(name, "connection") {
            connection |= has_token(value, "upgrade");
        } else if name_eq(name, "sec-websocket-version") {
            versions.push(trim_ows(value));
        } else if name_eq(name, "sec-websocket-key") {
            keys.push(trim_ows(value));
        } else if name_eq(name, "sec-websocket-extensions") {
            extensions.push(value);
        }
    }
    if method != "GET" {
        return Err(UpgradeError::NotGet(method.to_owned()));
    }
    if !upgrade {
        return Err(UpgradeError::NotWebSocket);
    }
    if !connection {
        return Err(UpgradeError::ConnectionNotUpgrade);
    }
    match versions.as_slice() {
        [] => return Err(UpgradeError::MissingVersion),
        [v] if *v == VERSION => {}
        _ => return Err(UpgradeError::UnsupportedVersion),
    }
    let key = match keys.as_slice() {
        [] => return Err(UpgradeError::MissingKey),
        [k] => *k,
        _ => return Err(UpgradeError::BadKey),
    };
    match B64.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(UpgradeError::BadKey),
    }
    Ok(ServerHandshake {
        accept: accept_key(key),
        deflate: extension::negotiate(extensions, policy),
    })
}

// === client ===

/// Why the server's answer to our upgrade is refused. [`ResponseError::NotSwitching`] is the usual
/// one: an HTTP error (401, 429, 426...) whose body the caller reads as for any request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResponseError {
    #[error("server answered {0} instead of 101")]
    NotSwitching(u16),
    #[error("101 response lacks Upgrade: websocket")]
    NotWebSocket,
    #[error("101 response Connection header does not list upgrade")]
    ConnectionNotUpgrade,
    #[error("101 response lacks Sec-WebSocket-Accept")]
    MissingAccept,
    #[error("Sec-WebSocket-Accept does not match our key")]
    WrongAccept,
    #[error("server chose subprotocol {0:?}, none was offered")]
    UnexpectedProtocol(String),
    #[error(transparent)]
    Extension(#[from] ExtensionError),
}

/// Our side of an upgrade to the upstream: the key we sent and what we offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandshake {
    key: String,
    offer_deflate: bool,
}

impl ClientHandshake {
    /// A handshake with a fresh random key.
    pub fn new(offer_deflate: bool) -> ClientHandshake {
        let mut raw = [0u8; 16];
        random_bytes(&mut raw);
        Self::with_key(raw, offer_deflate)
    }

    /// A handshake with a given key (tests, replay).
    pub fn with_key(raw: [u8; 16], offer_deflate: bool) -> ClientHandshake {
        ClientHandshake {
            key: B64.encode(raw),
            offer_deflate,
        }
    }

    /// The `Sec-WebSocket-Key` value.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Writes the upgrade request head: `GET path`, `Host`, the handshake headers, then `extra`
    /// (authorization, `OpenAI-Beta`, ...), which must not repeat the handshake's own.
    pub fn write_request(
        &self,
        host: &str,
        path: &str,
        extra: &[(&str, &[u8])],
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        push_header(out, "host", host.as_bytes());
        out.extend_from_slice(b"upgrade: websocket\r\nconnection: Upgrade\r\n");
        push_header(out, "sec-websocket-key", self.key.as_bytes());
        push_header(out, "sec-websocket-version", VERSION);
        if self.offer_deflate {
            push_header(out, "sec-websocket-extensions", CLIENT_OFFER.as_bytes());
        }
        for (n, v) in extra {
            push_header(out, n, v);
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Checks the server's response head (RFC 6455 §4.2.2 step 5, §4.1 client requirements) and
    /// returns the compression parameters the server agreed to.
    pub fn verify_response<'a>(
        &self,
        status: u16,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Option<DeflateConfig>, ResponseError> {
        if status != 101 {
            return Err(ResponseError::NotSwitching(status));
        }
        let mut upgrade = false;
        let mut connection = false;
        let mut accepts = Vec::new();
        let mut extensions = Vec::new();
        let mut protocol = None;
        for (name, value) in headers {
            if name_eq(name, "upgrade") {
                upgrade |= has_token(value, "websocket");
            } else if name_eq(name, "connection") {
                connection |= has_token(value, "upgrade");
            } else if name_eq(name, "sec-websocket-accept") {
                accepts.push(trim_ows(value));
            } else if name_eq(name, "sec-websocket-extensions") {
                extensions.push(value);
            } else if name_eq(name, "sec-websocket-protocol") {
                protocol = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
        if !upgrade {
            return Err(ResponseError::NotWebSocket);
        }
        if !connection {
            return Err(ResponseError::ConnectionNotUpgrade);
        }
        match accepts.as_slice() {
            [] => return Err(ResponseError::MissingAccept),
            [a] if *a == accept_key(self.key.as_bytes()).as_bytes() => {}
            _ => return Err(ResponseError::WrongAccept),
        }
        if let Some(p) = protocol {
            return Err(ResponseError::UnexpectedProtocol(p));
        }
        Ok(extension::accept_response(extensions, self.offer_deflate)?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    type Headers = Vec<(&'static str, &'static [u8])>;

    fn good_request() -> Headers {
        vec![
            ("Host", b"server.example.com"),
            ("Upgrade", b"websocket"),
            ("Connection", b"Upgrade"),
            ("Sec-WebSocket-Key", SAMPLE_KEY.as_bytes()),
            ("Sec-WebSocket-Version", b"13"),
        ]
    }

    fn accept(headers: &[(&'static str, &'static [u8])]) -> Result<ServerHandshake, UpgradeError> {
        accept_upgrade("GET", headers.iter().copied(), &DeflatePolicy::default())
    }

    fn with(name: &'static str, value: &'static [u8]) -> Headers {
        let mut h: Vec<_> = good_request()
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
            .collect();
        h.push((name, value));
        h
    }

    fn without(name: &str) -> Headers {
        good_request()
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
            .collect()
    }

    /// RFC 6455 §1.3 and §4.2.2: the sample key's accept value is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`
    /// (base64 of SHA-1 over the key and the GUID, which Python's hashlib agrees with).
    #[test]
    fn rfc_sample_key() {
        assert_eq!(
            accept_key(SAMPLE_KEY.as_bytes()),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let hs = accept(&good_request()).unwrap();
        assert_eq!(hs.accept(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(hs.deflate(), None);
    }

    #[test]
    fn writes_the_101() {
        let mut h = good_request();
        h.push((
            "Sec-WebSocket-Extensions",
            b"permessage-deflate; client_max_window_bits",
        ));
        let hs = accept(&h).unwrap();
        let mut out = Vec::new();
        hs.write_response(&[("x-codex-turn-state", b"ts_1")], &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             sec-websocket-extensions: permessage-deflate\r\n\
             x-codex-turn-state: ts_1\r\n\r\n"
        );
        assert_eq!(hs.deflate(), Some(DeflateConfig::default()));
    }

    #[test]
    fn tokens_are_matched_in_lists_and_case_insensitively() {
        let mut h = with("Connection", b"keep-alive, UPGRADE");
        h.retain(|(n, _)| *n != "Upgrade");
        h.push(("upgrade", b"h2c, WebSocket"));
        assert!(accept(&h).is_ok());
        // Connection split over two fields.
        let mut h = with("Connection", b"keep-alive");
        h.push(("connection", b"upgrade"));
        assert!(accept(&h).is_ok());
        assert!(is_upgrade_request(h.iter().copied()));
        assert!(!is_upgrade_request(without("Upgrade").iter().copied()));
    }

    #[test]
    fn each_bad_upgrade_has_its_error() {
        assert_eq!(
            accept_upgrade("POST", good_request(), &DeflatePolicy::default()),
            Err(UpgradeError::NotGet("POST".into()))
        );
        let cases: Vec<(Headers, UpgradeError)> = vec![
            (without("Upgrade"), UpgradeError::NotWebSocket),
            (with("Upgrade", b"h2c"), UpgradeError::NotWebSocket),
            (without("Connection"), UpgradeError::ConnectionNotUpgrade),
            (
                with("Connection", b"keep-alive"),
                UpgradeError::ConnectionNotUpgrade,
            ),
            (
                without("Sec-WebSocket-Version"),
                UpgradeError::MissingVersion,
            ),
            (
                with("Sec-WebSocket-Version", b"8"),
                UpgradeError::UnsupportedVersion,
            ),
            (
                with("Sec-WebSocket-Version", b"13, 8"),
                UpgradeError::UnsupportedVersion,
            ),
            (without("Sec-WebSocket-Key"), UpgradeError::MissingKey),
            (with("Sec-WebSocket-Key", b""), UpgradeError::BadKey),
            (
                with("Sec-WebSocket-Key", b"not base64!"),
                UpgradeError::BadKey,
            ),
            // 15 and 17 bytes.
            (
                with("Sec-WebSocket-Key", b"AAAAAAAAAAAAAAAAAAAA"),
                UpgradeError::BadKey,
            ),
            (
                with("Sec-WebSocket-Key", b"AAAAAAAAAAAAAAAAAAAAAAA="),
                UpgradeError::BadKey,
            ),
        ];
        for (headers, expected) in cases {
            assert_eq!(accept(&headers), Err(expected.clone()), "{expected}");
        }
        let mut two_keys = good_request();
        two_keys.push(("sec-websocket-key", SAMPLE_KEY.as_bytes()));
        assert_eq!(accept(&two_keys), Err(UpgradeError::BadKey));
        let mut two_versions = good_request();
        two_versions.push(("sec-websocket-version", b"13"));
        assert_eq!(accept(&two_versions), Err(UpgradeError::UnsupportedVersion));
    }

    #[test]
    fn refusals_carry_status_and_headers() {
        assert_eq!(UpgradeError::UnsupportedVersion.status(), 426);
        assert!(UpgradeError::UnsupportedVersion
            .headers()
            .contains(&("sec-websocket-version", &b"13"[..])));
        assert_eq!(UpgradeError::NotWebSocket.status(), 426);
        assert_eq!(UpgradeError::BadKey.status(), 400);
        assert!(UpgradeError::BadKey.headers().is_empty());
    }

    #[test]
    fn client_request_and_response() {
        let hs = ClientHandshake::with_key(*b"the sample nonce", true);
        assert_eq!(hs.key(), SAMPLE_KEY);
        let mut req = Vec::new();
        hs.write_request(
            "chatgpt.com",
            "/backend-api/codex/responses",
            &[("openai-beta", b"responses_websockets=2026-02-06")],
            &mut req,
        );
        // The server side of this module accepts what the client side writes.
        let mut storage = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Request::new(&mut storage);
        assert!(parsed.parse(&req).unwrap().is_complete());
        assert_eq!(parsed.path, Some("/backend-api/codex/responses"));
        let server = accept_upgrade(
            parsed.method.unwrap(),
            parsed.headers.iter().map(|h| (h.name, h.value)),
            &DeflatePolicy::default(),
        )
        .unwrap();
        let mut resp = Vec::new();
        server.write_response(&[], &mut resp);
        let mut storage = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Response::new(&mut storage);
        assert!(parsed.parse(&resp).unwrap().is_complete());
        assert_eq!(
            hs.verify_response(
                parsed.code.unwrap(),
                parsed.headers.iter().map(|h| (h.name, h.value))
            ),
            Ok(Some(DeflateConfig::default()))
        );
    }

    #[test]
    fn client_refuses_bad_responses() {
        let hs = ClientHandshake::with_key(*b"the sample nonce", false);
        let good: Vec<(&str, &[u8])> = vec![
            ("Upgrade", b"websocket"),
            ("Connection", b"Upgrade"),
            ("Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ];
        assert_eq!(hs.verify_response(101, good.clone()), Ok(None));
        assert_eq!(
            hs.verify_response(426, good.clone()),
            Err(ResponseError::NotSwitching(426))
        );
        let drop = |name: &str| -> Vec<(&str, &[u8])> {
            good.iter().copied().filter(|(n, _)| *n != name).collect()
        };
        assert_eq!(
            hs.verify_response(101, drop("Upgrade")),
            Err(ResponseError::NotWebSocket)
        );
        assert_eq!(
            hs.verify_response(101, drop("Connection")),
            Err(ResponseError::ConnectionNotUpgrade)
        );
        assert_eq!(
            hs.verify_response(101, drop("Sec-WebSocket-Accept")),
            Err(ResponseError::MissingAccept)
        );
        let mut wrong = drop("Sec-WebSocket-Accept");
        wrong.push(("Sec-WebSocket-Accept", b"AAAAAAAAAAAAAAAAAAAAAAAAAAA="));
        assert_eq!(
            hs.verify_response(101, wrong),
            Err(ResponseError::WrongAccept)
        );
        let mut proto = good.clone();
        proto.push(("Sec-WebSocket-Protocol", b"chat"));
        assert_eq!(
            hs.verify_response(101, proto),
            Err(ResponseError::UnexpectedProtocol("chat".into()))
        );
        // Compression we did not offer.
        let mut ext = good.clone();
        ext.push(("Sec-WebSocket-Extensions", b"permessage-deflate"));
        assert_eq!(
            hs.verify_response(101, ext),
            Err(ResponseError::Extension(ExtensionError::NotOffered(
                "permessage-deflate".into()
            )))
        );
    }

    #[test]
    fn random_keys_are_fresh_and_valid() {
        let a = ClientHandshake::new(false);
        let b = ClientHandshake::new(false);
        assert_ne!(a.key(), b.key());
        assert_eq!(B64.decode(a.key()).unwrap().len(), 16);
    }
}
