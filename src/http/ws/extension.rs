//! `Sec-WebSocket-Extensions` (RFC 6455 §9.1) and the permessage-deflate parameters (RFC 7692 §7.1).
//!
//! Only permessage-deflate is understood. The compressor always uses a 32 KiB window (15 bits; the
//! default flate2 backend offers no other), so an offer that insists on a smaller server window
//! is declined and the next offer tried; a client that limits its own window is fine, since our
//! 15-bit inflater reads any smaller window. An offer with an unknown, repeated or ill-formed
//! parameter is declined, as §7.1 requires. On the client side the server's answer is checked
//! strictly: anything we did not offer fails the handshake.

use thiserror::Error;

use super::Role;

/// The extension offer a client sends. No window parameters: we can only compress with 15 bits,
/// so we never invite the server to ask for fewer.
pub const CLIENT_OFFER: &str = "permessage-deflate";

const PERMESSAGE_DEFLATE: &str = "permessage-deflate";
const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";

/// The permessage-deflate parameters both sides agreed on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeflateConfig {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
}

impl DeflateConfig {
    /// Whether the compressor of `role` (our side) starts every message afresh.
    pub fn compressor_resets(&self, role: Role) -> bool {
        match role {
            Role::Server => self.server_no_context_takeover,
            Role::Client => self.client_no_context_takeover,
        }
    }

    /// Whether the peer of `role` (our side) starts every message afresh, so our inflater must.
    pub fn inflater_resets(&self, role: Role) -> bool {
        match role {
            Role::Server => self.client_no_context_takeover,
            Role::Client => self.server_no_context_takeover,
        }
    }
}

/// What a server accepts and asks for when a client offers permessage-deflate.
///
/// Compression costs memory per connection for as long as the socket lives: with flate2's
/// miniz_oxide backend a compressor holds about 312 KiB and an inflater about 42 KiB (measured
/// with a counting allocator), so 10 000 compressed sockets need ~3.5 GB. No context takeover
/// does not shrink that by itself (the state is reset, not freed); `enabled: false` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflatePolicy {
    /// Accept permessage-deflate at all.
    pub enabled: bool,
    /// Reset our compressor after each message even if the client did not ask.
    pub server_no_context_takeover: bool,
    /// Ask the client to reset its compressor after each message.
    pub client_no_context_takeover: bool,
}

impl Default for DeflatePolicy {
    fn default() -> Self {
        DeflatePolicy {
            enabled: true,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
        }
    }
}

/// Why a server's extension answer is refused (client side).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExtensionError {
    #[error("malformed Sec-WebSocket-Extensions header")]
    Malformed,
    #[error("server agreed to extension {0:?}, which was not offered")]
    NotOffered(String),
    #[error("server sent permessage-deflate parameter {0:?}, which is not acceptable")]
    BadParameter(String),
}

/// One element of an extension list: a name and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Extension {
    name: String,
    params: Vec<(String, Option<String>)>,
}

/// The server's choice: the config to run with and the header value to answer with.
pub(crate) fn negotiate<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    policy: &DeflatePolicy,
) -> Option<(DeflateConfig, String)> {
    if !policy.enabled {
        return None;
    }
    let mut offers = Vec::new();
    for value in values {
        // A header we cannot read is treated as no offer: the connection works uncompressed.
        offers.extend(parse_extensions(value)?);
    }
    offers
        .iter()
        .filter(|o| o.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
        .find_map(|o| accept_offer(&o.params, policy))
}

fn accept_offer(
    params: &[(String, Option<String>)],
    policy: &DeflatePolicy,
) -> Option<(DeflateConfig, String)> {
    let mut seen = [false; 4];
    let mut server_no_context_takeover = false;
    let mut echo_window = false;
    for (name, value) in params {
        let slot = param_slot(name)?;
        if std::mem::replace(seen.get_mut(slot)?, true) {
            return None;
        }
        match slot {
            0 => {
                value.is_none().then_some(())?;
                server_no_context_takeover = true;
            }
            // The client allows us to ask it to reset; whether we do is policy.
            1 => value.is_none().then_some(())?,
            2 => {
                if window_bits(value.as_deref()?)? < 15 {
                    return None;
                }
                echo_window = true;
            }
            _ => {
                if let Some(v) = value {
                    window_bits(v)?;
                }
            }
        }
    }
    let config = DeflateConfig {
        server_no_context_takeover: server_no_context_takeover || policy.server_no_context_takeover,
        client_no_context_takeover: policy.client_no_context_takeover,
    };
    let mut response = String::from(PERMESSAGE_DEFLATE);
    if config.server_no_context_takeover {
        response.push_str("; ");
        response.push_str(SERVER_NO_CONTEXT_TAKEOVER);
    }
    if config.client_no_context_takeover {
        response.push_str("; ");
        response.push_str(CLIENT_NO_CONTEXT_TAKEOVER);
    }
    if echo_window {
        // §7.1.2.1: accepting the parameter means answering it with the same or a smaller value.
        response.push_str("; server_max_window_bits=15");
    }
    Some((config, response))
}

/// Index of a known permessage-deflate parameter (for the duplicate check).
fn param_slot(name: &str) -> Option<usize> {
    [
        SERVER_NO_CONTEXT_TAKEOVER,
        CLIENT_NO_CONTEXT_TAKEOVER,
        SERVER_MAX_WINDOW_BITS,
        CLIENT_MAX_WINDOW_BITS,
    ]
    .iter()
    .position(|p| p.eq_ignore_ascii_case(name))
}

/// A window size parameter: 8 to 15, no leading zero (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// Checks the server's extension answer (client side); `offered` says whether we sent
/// [`CLIENT_OFFER`].
pub(crate) fn accept_response<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    offered: bool,
) -> Result<Option<DeflateConfig>, ExtensionError> {
    let mut agreed: Option<DeflateConfig> = None;
    for value in values {
        for ext in parse_extensions(value).ok_or(ExtensionError::Malformed)? {
            if !offered || agreed.is_some() || !ext.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
                return Err(ExtensionError::NotOffered(ext.name));
            }
            agreed = Some(read_response_params(&ext.params)?);
        }
    }
    Ok(agreed)
}

fn read_response_params(
    params: &[(String, Option<String>)],
) -> Result<DeflateConfig, ExtensionError> {
    let mut seen = [false; 4];
    let mut config = DeflateConfig::default();
    for (name, value) in params {
        let bad = || ExtensionError::BadParameter(name.clone());
        let slot = param_slot(name).ok_or_else(bad)?;
        if std::mem::replace(seen.get_mut(slot).ok_or_else(bad)?, true) {
            return Err(bad());
        }
        match slot {
            0 if value.is_none() => config.server_no_context_takeover = true,
            1 if value.is_none() => config.client_no_context_takeover = true,
            // The server compresses with at most this window; our inflater reads any.
            2 if value.as_deref().and_then(window_bits).is_some() => {}
            // client_max_window_bits was not offered (§7.1.2.2: the client must fail), and a
            // smaller window is one our compressor cannot honour anyway.
            _ => return Err(bad()),
        }
    }
    Ok(config)
}

// === parsing ===

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        let t = self.s.get(start..self.i)?;
        if t.is_empty() {
            return None;
        }
        std::str::from_utf8(t).ok().map(str::to_owned)
    }

    /// A quoted-string (RFC 9110 §5.6.4) after its opening quote, unescaped.
    fn quoted(&mut self) -> Option<String> {
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    out.push(self.peek()?);
                    self.i += 1;
                }
                _ => out.push(b),
            }
        }
    }
}

/// Parses one header value into its extensions; `None` when it does not follow the grammar.
fn parse_extensions(value: &[u8]) -> Option<Vec<Extension>> {
    let mut c = Cursor { s: value, i: 0 };
    let mut out = Vec::new();
    loop {
        c.skip_ows();
        match c.peek() {
            None => return Some(out),
            // Empty list elements are allowed (RFC 9110 §5.6.1).
            Some(b',') => {
                c.i += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = c.token()?;
        let mut params = Vec::new();
        loop {
            c.skip_ows();
            match c.peek() {
                None => break,
                Some(b',') => {
                    c.i += 1;
                    break;
                }
                Some(b';') => {
                    c.i += 1;
                    c.skip_ows();
                    let pname = c.token()?;
                    c.skip_ows();
                    let mut pvalue = None;
                    if c.peek() == Some(b'=') {
                        c.i += 1;
                        c.skip_ows();
                        pvalue = Some(if c.peek() == Some(b'"') {
                            c.i += 1;
                            // §9.1: a quoted value must still be a token once unquoted.
                            let v = c.quoted()?;
                            (!v.is_empty() && v.bytes().all(is_tchar)).then_some(v)?
                        } else {
                            c.token()?
                        });
                    }
                    params.push((pname, pvalue));
                }
                Some(_) => return None,
            }
        }
        out.push(Extension { name, params });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn offer(v: &str) -> Option<(DeflateConfig, String)> {
        negotiate([v.as_bytes()], &DeflatePolicy::default())
    }

    #[test]
    fn parses_extension_lists() {
        let v = b" foo , permessage-deflate; client_max_window_bits ;server_max_window_bits=\"10\",, bar;x=y";
        let exts = parse_extensions(v).unwrap();
        assert_eq!(exts.len(), 3);
        assert_eq!(exts[0].name, "foo");
        assert_eq!(
            exts[1].params,
            vec![
                ("client_max_window_bits".to_string(), None),
                ("server_max_window_bits".to_string(), Some("10".to_string()))
            ]
        );
        assert_eq!(
            exts[2].params,
            vec![("x".to_string(), Some("y".to_string()))]
        );
        for bad in [
            &b"a;"[..],
            b";a",
            b"a b",
            b"a;b=",
            b"a;b=\"x",
            b"a;b=\"\"",
            b"a;b=\"x y\"",
        ] {
            assert_eq!(
                parse_extensions(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_extensions(b""), Some(vec![]));
    }

    #[test]
    fn plain_offer_is_accepted_with_context_takeover() {
        let (config, response) = offer("permessage-deflate").unwrap();
        assert_eq!(config, DeflateConfig::default());
        assert_eq!(response, "permessage-deflate");
        // What browsers and most clients send.
        let (config, response) = offer("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(config, DeflateConfig::default());
        assert_eq!(response, "permessage-deflate");
    }

    #[test]
    fn context_takeover_parameters() {
        let (config, response) =
            offer("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
                .unwrap();
        assert!(config.server_no_context_takeover && !config.client_no_context_takeover);
        assert_eq!(response, "permessage-deflate; server_no_context_takeover");
        assert!(config.compressor_resets(Role::Server) && config.inflater_resets(Role::Client));
        assert!(!config.inflater_resets(Role::Server));

        let policy = DeflatePolicy {
            client_no_context_takeover: true,
            ..DeflatePolicy::default()
        };
        let (config, response) = negotiate([&b"permessage-deflate"[..]], &policy).unwrap();
        assert!(config.client_no_context_takeover);
        assert_eq!(response, "permessage-deflate; client_no_context_takeover");

        let off = DeflatePolicy {
            enabled: false,
            ..DeflatePolicy::default()
        };
        assert_eq!(negotiate([&b"permessage-deflate"[..]], &off), None);
    }

    #[test]
    fn window_bits() {
        let (_, response) = offer("permessage-deflate; server_max_window_bits=15").unwrap();
        assert_eq!(response, "permessage-deflate; server_max_window_bits=15");
        // A smaller server window is declined...
        assert_eq!(offer("permessage-deflate; server_max_window_bits=10"), None);
        // ...unless a later offer is acceptable.
        let (_, response) = offer(
            "permessage-deflate; server_max_window_bits=10, permessage-deflate; client_max_window_bits",
        )
        .unwrap();
        assert_eq!(response, "permessage-deflate");
        // The client limiting its own window does not concern our inflater.
        assert!(offer("permessage-deflate; client_max_window_bits=9").is_some());
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=015",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
    }

    #[test]
    fn other_extensions_and_several_headers() {
        assert_eq!(offer("x-webkit-deflate-frame"), None);
        let (_, response) = negotiate(
            [
                &b"x-foo"[..],
                b"permessage-deflate; server_no_context_takeover",
            ],
            &DeflatePolicy::default(),
        )
        .unwrap();
        assert_eq!(response, "permessage-deflate; server_no_context_takeover");
        // An unreadable header declines compression instead of failing the upgrade.
        assert_eq!(offer("permessage-deflate;;"), None);
    }

    #[test]
    fn client_checks_the_answer() {
        let ok = |v: &str| accept_response([v.as_bytes()], true);
        assert_eq!(accept_response(Vec::<&[u8]>::new(), true), Ok(None));
        assert_eq!(ok("permessage-deflate"), Ok(Some(DeflateConfig::default())));
        assert_eq!(
            ok("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"),
            Ok(Some(DeflateConfig {
                server_no_context_takeover: true,
                client_no_context_takeover: true
            }))
        );
        assert_eq!(
            ok("permessage-deflate; client_max_window_bits=15"),
            Err(ExtensionError::BadParameter(
                "client_max_window_bits".into()
            ))
        );
        assert_eq!(
            ok("permessage-deflate; server_max_window_bits=7"),
            Err(ExtensionError::BadParameter(
                "server_max_window_bits".into()
            ))
        );
        assert_eq!(
            ok("permessage-deflate, permessage-deflate"),
            Err(ExtensionError::NotOffered("permessage-deflate".into()))
        );
        assert_eq!(ok("x-foo"), Err(ExtensionError::NotOffered("x-foo".into())));
        assert_eq!(ok("permessage-deflate;"), Err(ExtensionError::Malformed));
        assert_eq!(
            accept_response([&b"permessage-deflate"[..]], false),
            Err(ExtensionError::NotOffered("permessage-deflate".into()))
        );
    }
}
