//! Close codes, close frame payloads and the close handshake (RFC 6455 §5.5.1, §7).
//!
//! The handshake state says what may still be sent: after our close frame went out nothing
//! else may follow it; after the peer's close arrived we answer with one close frame (echoing
//! its code) and stop. Which side drops the TCP connection is the caller's concern: the server
//! closes first once both close frames have passed (§7.1.1).

use super::{WsError, MAX_CONTROL_PAYLOAD};

/// A close status code (RFC 6455 §7.4). Holds any value so that the codes which must never be
/// sent (1005 "no status", 1006 "abnormal") can still describe what happened locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// Local only: the close frame carried no code.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// Local only: the connection ended without a close frame.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY: CloseCode = CloseCode(1008);
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// True for codes a close frame may carry: the defined ones, those IANA registered since
    /// (1012-1014), and the ranges for libraries and applications (3000-4999). 1004-1006 and
    /// 1015 are reserved or local-only; below 1000 and 1016-2999 are unassigned.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// Room for the reason after the two code bytes.
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// The body of a close frame that carried a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: CloseCode,
    pub reason: String,
}

impl CloseFrame {
    /// A close frame whose reason is cut (at a character boundary) to fit a control frame.
    pub fn new(code: CloseCode, reason: &str) -> CloseFrame {
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        CloseFrame {
            code,
            reason: reason.get(..end).unwrap_or_default().to_owned(),
        }
    }

    /// Parses a received close payload: `None` when it is empty (no status code), an error for a
    /// lone byte, a code that may not be sent, or a reason that is not UTF-8.
    pub fn parse(payload: &[u8]) -> Result<Option<CloseFrame>, WsError> {
        let (code, reason) = match payload {
            [] => return Ok(None),
            [_] => return Err(WsError::CloseTooShort),
            [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
        };
        let code = CloseCode(code);
        if !code.is_valid_on_wire() {
            return Err(WsError::BadCloseCode(code.0));
        }
        let reason = std::str::from_utf8(reason).map_err(|_| WsError::CloseReasonNotUtf8)?;
        Ok(Some(CloseFrame {
            code,
            reason: reason.to_owned(),
        }))
    }

    /// The close payload: the code big-endian, then as much of the reason as fits.
    pub fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.reason.len().min(MAX_CLOSE_REASON));
        out.extend_from_slice(&self.code.0.to_be_bytes());
        let mut end = self.reason.len().min(MAX_CLOSE_REASON);
        while !self.reason.is_char_boundary(end) {
            end -= 1;
        }
        out.extend_from_slice(self.reason.get(..end).unwrap_or_default().as_bytes());
        out
    }
}

/// What to do after the peer's close frame arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReply {
    /// Send this close frame back (the peer's code echoed, or none when it sent none), then end.
    Send(Option<CloseFrame>),
    /// Our close frame had already gone out: the handshake is complete.
    Complete,
}

/// The close handshake of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloseState {
    sent: bool,
    received: bool,
}

impl CloseState {
    pub fn new() -> CloseState {
        CloseState::default()
    }

    /// Records that our close frame was written. Nothing may be sent after it.
    pub fn on_sent(&mut self) {
        self.sent = true;
    }

    /// Records the peer's close frame and says how to answer it (RFC 6455 §5.5.1: echo its code).
    pub fn on_received(&mut self, frame: Option<&CloseFrame>) -> CloseReply {
        self.received = true;
        if self.sent {
            return CloseReply::Complete;
        }
        CloseReply::Send(frame.map(|f| CloseFrame::new(f.code, "")))
    }

    /// Data and control frames may be sent until our close frame is out. After the peer's close
    /// the message being written may still be finished before the reply (§5.5.1).
    pub fn may_send(&self) -> bool {
        !self.sent
    }

    pub fn sent(&self) -> bool {
        self.sent
    }

    pub fn received(&self) -> bool {
        self.received
    }

    /// Both close frames have passed: the TCP connection can be closed.
    pub fn is_complete(&self) -> bool {
        self.sent && self.received
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn parses_codes_and_reasons() {
        assert_eq!(CloseFrame::parse(b""), Ok(None));
        assert_eq!(
            CloseFrame::parse(b"\x03\xe8bye"),
            Ok(Some(CloseFrame {
                code: CloseCode::NORMAL,
                reason: "bye".into()
            }))
        );
        for code in [1000u16, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999] {
            let p = code.to_be_bytes();
            assert!(CloseFrame::parse(&p).is_ok(), "{code}");
        }
    }

    #[test]
    fn refuses_codes_that_may_not_be_sent() {
        for code in [
            0u16,
            999,
            1004,
            1005,
            1006,
            1015,
            1016,
            2999,
            5000,
            u16::MAX,
        ] {
            assert_eq!(
                CloseFrame::parse(&code.to_be_bytes()),
                Err(WsError::BadCloseCode(code)),
                "{code}"
            );
        }
        assert_eq!(CloseFrame::parse(b"\x03"), Err(WsError::CloseTooShort));
        assert_eq!(
            CloseFrame::parse(b"\x03\xe8\xff\xfe"),
            Err(WsError::CloseReasonNotUtf8)
        );
        // A valid code followed by a reason cut inside a character.
        assert_eq!(
            CloseFrame::parse(b"\x03\xe8\xc3"),
            Err(WsError::CloseReasonNotUtf8)
        );
        for e in [
            WsError::BadCloseCode(1005),
            WsError::CloseTooShort,
            WsError::CloseReasonNotUtf8,
        ] {
            assert_eq!(e.close_code(), CloseCode::PROTOCOL_ERROR);
        }
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        // 62 two-byte characters = 124 bytes: one byte too many, and the cut falls mid-character.
        let reason = "é".repeat(62);
        let f = CloseFrame::new(CloseCode::GOING_AWAY, &reason);
        assert_eq!(f.reason.len(), 122);
        let p = f.payload();
        assert!(p.len() <= MAX_CONTROL_PAYLOAD);
        assert_eq!(CloseFrame::parse(&p), Ok(Some(f)));
        // Exactly at the limit nothing is cut.
        let at = "a".repeat(MAX_CLOSE_REASON);
        assert_eq!(CloseFrame::new(CloseCode::NORMAL, &at).payload().len(), 125);
        // A frame built by hand with a long reason still encodes within the limit.
        let by_hand = CloseFrame {
            code: CloseCode::NORMAL,
            reason: "x".repeat(300),
        };
        assert_eq!(by_hand.payload().len(), MAX_CONTROL_PAYLOAD);
    }

    #[test]
    fn close_handshake_from_either_side() {
        // Peer closes first: echo its code, then the handshake is complete once ours is out.
        let mut s = CloseState::new();
        let peer = CloseFrame::new(CloseCode::GOING_AWAY, "restart");
        assert_eq!(
            s.on_received(Some(&peer)),
            CloseReply::Send(Some(CloseFrame::new(CloseCode::GOING_AWAY, "")))
        );
        assert!(s.may_send() && !s.is_complete());
        s.on_sent();
        assert!(!s.may_send() && s.is_complete());

        // No code received: the reply carries none either.
        let mut s = CloseState::new();
        assert_eq!(s.on_received(None), CloseReply::Send(None));

        // We close first: nothing more may be sent; the peer's reply completes it.
        let mut s = CloseState::new();
        s.on_sent();
        assert!(!s.may_send() && !s.is_complete());
        assert_eq!(s.on_received(None), CloseReply::Complete);
        assert!(s.is_complete());
    }
}
