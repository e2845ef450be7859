//! WebSocket (RFC 6455) with permessage-deflate (RFC 7692) as a pure codec over byte slices.
//!
//! This module owns the bytes of the Codex WebSocket transport (PROTOCOL.md §6): the upgrade
//! handshake on both sides, frame decoding and encoding, message reassembly with UTF-8 checks,
//! the close handshake and compression. It touches no socket, clock or shared state; the caller
//! reads into a buffer, feeds the bytes here, and writes out what it is handed back.
//!
//! - [`handshake`]: validate an upgrade request and build the 101 (server); build an upgrade request
//!   and verify the 101 (client).
//! - [`extension`]: the `Sec-WebSocket-Extensions` negotiation of permessage-deflate.
//! - [`frame`]: the incremental frame decoder and the frame header encoder.
//! - [`mask`]: payload masking (hot path) and client masking keys.
//! - [`message`]: whole messages in ([`MessageReader`]) and out ([`MessageWriter`]).
//! - [`close`]: close codes, close frame payloads and the close handshake state.
//! - [`deflate`]: per-message compression.
//!
//! Every protocol violation is a [`WsError`], which names the close code to fail the connection
//! with (RFC 6455 §7.1.7): send a close frame with [`WsError::close_code`], then drop the
//! connection.
//!
//! A server's read loop, echoing text (each [`OutFrame`] goes out as two buffers, head then
//! payload):
//!
//! ```
//! use codex_lb::http::ws::{
//!     CloseFrame, CloseReply, CloseState, Message, MessageReader, MessageWriter, Role, WsLimits,
//! };
//! let mut reader = MessageReader::new(Role::Server, None, WsLimits::default());
//! let mut writer = MessageWriter::new(Role::Server, None);
//! let mut close = CloseState::new();
//! let mut to_send = Vec::new();
//! // One socket read: a masked "Hello" (RFC 6455 §5.7), then a masked close with code 1000.
//! let read = [
//!     0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58, // text
//!     0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8, // close
//! ];
//! let mut rest = &read[..];
//! while !rest.is_empty() {
//!     let r = match reader.feed(rest) {
//!         Ok(r) => r,
//!         Err(e) => {
//!             to_send.push(writer.close(Some(&CloseFrame::new(e.close_code(), "")))?);
//!             break;
//!         }
//!     };
//!     rest = &rest[r.consumed..];
//!     match r.message {
//!         Some(Message::Text(t)) => to_send.push(writer.text(t)?),
//!         Some(Message::Ping(p)) => to_send.push(writer.pong(&p)?),
//!         Some(Message::Close(c)) => {
//!             if let CloseReply::Send(reply) = close.on_received(c.as_ref()) {
//!                 to_send.push(writer.close(reply.as_ref())?);
//!                 close.on_sent();
//!             }
//!         }
//!         _ => {}
//!     }
//! }
//! assert_eq!(to_send[0].to_vec(), b"\x81\x05Hello");
//! assert_eq!(to_send[1].to_vec(), b"\x88\x02\x03\xe8");
//! assert!(close.is_complete());
//! # Ok::<(), codex_lb::http::ws::WsError>(())
//! ```

// Every byte here comes from a client or the upstream: no panicking paths (STYLE.md habit 15).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod close;
pub mod deflate;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;

use thiserror::Error;

pub use close::{CloseCode, CloseFrame, CloseReply, CloseState};
pub use extension::{DeflateConfig, DeflatePolicy};
pub use frame::{Frame, FrameDecoder, FrameHead};
pub use handshake::{ClientHandshake, ResponseError, ServerHandshake, UpgradeError};
pub use mask::{apply_mask, MaskKeys};
pub use message::{Message, MessageReader, MessageWriter, OutFrame, ReadOutcome, WsLimits};

/// Which end of the connection this codec plays; it decides who masks (RFC 6455 §5.3) and which
/// side's context-takeover parameters apply to compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We accepted the upgrade: frames we receive must be masked, frames we send must not be.
    Server,
    /// We opened the connection: frames we send are masked, frames we receive must not be.
    Client,
}

/// Frame opcodes defined by RFC 6455 §5.2; the reserved ones are refused at decode time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    /// The opcode for the low nibble of the first header byte, `None` for reserved values.
    pub fn from_bits(bits: u8) -> Option<Opcode> {
        match bits {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Control frames (close, ping, pong) carry at most 125 bytes and are never fragmented.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// Largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Why the connection must fail. Each variant maps to the close code to send
/// ([`WsError::close_code`]); none of them is recoverable on the same connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WsError {
    #[error("frame from the client is not masked")]
    UnmaskedFrame,
    #[error("frame from the server is masked")]
    MaskedFrame,
    #[error("reserved header bits set without an extension that defines them")]
    ReservedBits,
    #[error("compression bit set on a control or continuation frame")]
    MisplacedCompressionBit,
    #[error("reserved opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("control frame payload of {0} bytes exceeds {MAX_CONTROL_PAYLOAD}")]
    ControlTooLong(u64),
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("64-bit payload length with the most significant bit set")]
    LengthOverflow,
    #[error("frame payload of {len} bytes exceeds {limit}")]
    FrameTooBig { len: u64, limit: usize },
    #[error("message exceeds {limit} bytes")]
    MessageTooBig { limit: usize },
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    #[error("close frame payload of one byte")]
    CloseTooShort,
    #[error("close code {0} is not allowed on the wire")]
    BadCloseCode(u16),
    #[error("close reason is not valid UTF-8")]
    CloseReasonNotUtf8,
    #[error("compressed message does not inflate")]
    BadDeflate,
    #[error("frame received after the peer's close frame")]
    FrameAfterClose,
    #[error("compressing an outgoing message failed")]
    CompressFailed,
}

impl WsError {
    /// The close code to fail the connection with (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> CloseCode {
        match self {
            WsError::FrameTooBig { .. } | WsError::MessageTooBig { .. } => CloseCode::TOO_BIG,
            // The compressed bytes are inconsistent with the message type (§7.4.1, 1007).
            WsError::InvalidUtf8 | WsError::BadDeflate => CloseCode::INVALID_PAYLOAD,
            WsError::CompressFailed => CloseCode::INTERNAL_ERROR,
            WsError::UnmaskedFrame
            | WsError::MaskedFrame
            | WsError::ReservedBits
            | WsError::MisplacedCompressionBit
            | WsError::UnknownOpcode(_)
            | WsError::ControlTooLong(_)
            | WsError::FragmentedControl
            | WsError::LengthOverflow
            | WsError::UnexpectedContinuation
            | WsError::ExpectedContinuation
            | WsError::CloseTooShort
            | WsError::BadCloseCode(_)
            | WsError::CloseReasonNotUtf8
            | WsError::FrameAfterClose => CloseCode::PROTOCOL_ERROR,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_round_trip_and_reserved_ones_are_refused() {
        for bits in 0u8..16 {
            match Opcode::from_bits(bits) {
                Some(op) => assert_eq!(op.bits(), bits),
                None => assert!(matches!(bits, 3..=7 | 0xB..=0xF), "{bits}"),
            }
        }
        assert!(Opcode::Ping.is_control() && !Opcode::Continuation.is_control());
    }

    #[test]
    fn errors_name_their_close_codes() {
        assert_eq!(WsError::InvalidUtf8.close_code().0, 1007);
        assert_eq!(WsError::MessageTooBig { limit: 1 }.close_code().0, 1009);
        assert_eq!(
            WsError::FrameTooBig { len: 2, limit: 1 }.close_code().0,
            1009
        );
        assert_eq!(WsError::UnmaskedFrame.close_code().0, 1002);
        assert_eq!(WsError::CompressFailed.close_code().0, 1011);
    }
}
