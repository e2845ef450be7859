//! Whole messages: [`MessageReader`] turns received bytes into messages (reassembling fragments,
//! inflating, checking UTF-8), [`MessageWriter`] turns messages into frames to send.
//!
//! Control frames may arrive between the fragments of a message (RFC 6455 §5.4); they are handed
//! out at once and the message goes on. The text of a fragmented message is checked as each
//! fragment arrives, so a stream of invalid text fails at the first bad fragment rather than at
//! the message's end, while a character split across fragments is accepted (§8.1). The reader
//! answers nothing itself: for a [`Message::Ping`] the caller sends [`MessageWriter::pong`] with
//! the same payload, for a [`Message::Close`] it asks its [`super::CloseState`] what to send.

use super::close::CloseFrame;
use super::deflate::{Deflater, Inflater};
use super::frame::{Frame, FrameDecoder, FrameHead};
use super::mask::{apply_mask, MaskKeys};
use super::{DeflateConfig, Opcode, Role, WsError, MAX_CONTROL_PAYLOAD};

/// Default cap on one frame's payload. [LB] caps a client frame at 15 MiB (PROTOCOL.md §6.2).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Default cap on one message, after decompression (a `response.completed` carries the whole
/// output, as `sse::DEFAULT_MAX_EVENT_BYTES` allows for SSE).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Size caps for received data; exceeding either fails the connection with 1009.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
    /// Answer with a pong carrying the same payload.
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The peer's close frame; `None` when it carried no status code (1005 locally).
    Close(Option<CloseFrame>),
}

/// What one call to [`MessageReader::feed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Bytes of the input used. Less than the input only when a message was completed: feed the
    /// rest again.
    pub consumed: usize,
    pub message: Option<Message>,
}

/// A data message in the middle of its fragments.
#[derive(Debug)]
struct Partial {
    text: bool,
    compressed: bool,
    /// The message so far, inflated when compressed.
    buf: Vec<u8>,
    /// Payload bytes received on the wire, counted against the message cap.
    wire_bytes: usize,
    /// `buf[..checked]` is known to be valid UTF-8.
    checked: usize,
}

/// Reassembles the messages `role`'s peer sends.
#[derive(Debug)]
pub struct MessageReader {
    frames: FrameDecoder,
    inflater: Option<Inflater>,
    limits: WsLimits,
    partial: Option<Partial>,
    close_received: bool,
    /// The first error; every later call returns it again.
    failed: Option<WsError>,
}

impl MessageReader {
    /// A reader for our `role`, with the compression both sides agreed on, if any.
    pub fn new(role: Role, deflate: Option<DeflateConfig>, limits: WsLimits) -> MessageReader {
        MessageReader {
            frames: FrameDecoder::new(role, deflate.is_some(), limits.max_frame_bytes),
            inflater: deflate.map(|d| Inflater::new(d.inflater_resets(role))),
            limits,
            partial: None,
            close_received: false,
            failed: None,
        }
    }

    /// Consumes bytes up to the end of the next message (control frames count as messages) and
    /// returns it; without one, every byte was consumed. On error, send a close frame with
    /// [`WsError::close_code`] and drop the connection.
    pub fn feed(&mut self, input: &[u8]) -> Result<ReadOutcome, WsError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.feed_inner(input);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    /// True while a fragmented message has started and not ended.
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// True once the peer's close frame has been read; nothing may follow it.
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    fn feed_inner(&mut self, input: &[u8]) -> Result<ReadOutcome, WsError> {
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            if rest.is_empty() {
                return Ok(ReadOutcome {
                    consumed: used,
                    message: None,
                });
            }
            if self.close_received {
                return Err(WsError::FrameAfterClose);
            }
            let wire = self.partial.as_ref().map_or(0, |p| p.wire_bytes);
            let room = self.limits.max_message_bytes.saturating_sub(wire);
            let decoded = self
                .frames
                .decode_within(rest, room, self.limits.max_message_bytes)?;
            used += decoded.consumed;
            if let Some(frame) = decoded.frame {
                if let Some(message) = self.on_frame(frame)? {
                    return Ok(ReadOutcome {
                        consumed: used,
                        message: Some(message),
                    });
                }
            }
        }
    }

    fn on_frame(&mut self, frame: Frame) -> Result<Option<Message>, WsError> {
        let Frame {
            fin,
            rsv1,
            opcode,
            payload,
        } = frame;
        let mut partial = match opcode {
            Opcode::Ping => return Ok(Some(Message::Ping(payload))),
            Opcode::Pong => return Ok(Some(Message::Pong(payload))),
            Opcode::Close => {
                let close = CloseFrame::parse(&payload)?;
                self.close_received = true;
                return Ok(Some(Message::Close(close)));
            }
            Opcode::Text | Opcode::Binary => {
                if self.partial.is_some() {
                    return Err(WsError::ExpectedContinuation);
                }
                if fin && !rsv1 {
                    // The common case, one frame per message: the payload is the message.
                    return finish_plain(opcode == Opcode::Text, payload).map(Some);
                }
                Partial {
                    text: opcode == Opcode::Text,
                    compressed: rsv1,
                    buf: Vec::new(),
                    wire_bytes: 0,
                    checked: 0,
                }
            }
            Opcode::Continuation => self.partial.take().ok_or(WsError::UnexpectedContinuation)?,
        };
        partial.wire_bytes += payload.len();
        let limit = self.limits.max_message_bytes;
        if partial.compressed {
            // RSV1 only passes the frame decoder when compression was negotiated.
            let inflater = self.inflater.as_mut().ok_or(WsError::ReservedBits)?;
            inflater.inflate(&payload, &mut partial.buf, limit)?;
            if fin {
                inflater.finish(&mut partial.buf, limit)?;
            }
        } else if partial.buf.is_empty() {
            partial.buf = payload;
        } else {
            partial.buf.extend_from_slice(&payload);
        }
        if !fin {
            if partial.text {
                check_utf8_prefix(&partial.buf, &mut partial.checked)?;
            }
            self.partial = Some(partial);
            return Ok(None);
        }
        finish_plain(partial.text, partial.buf).map(Some)
    }
}

fn finish_plain(text: bool, buf: Vec<u8>) -> Result<Message, WsError> {
    if text {
        String::from_utf8(buf)
            .map(Message::Text)
            .map_err(|_| WsError::InvalidUtf8)
    } else {
        Ok(Message::Binary(buf))
    }
}

/// Checks the unchecked part of a text message so far. A character cut by the end of the buffer
/// is left for the next fragment; anything else that is not UTF-8 fails now.
fn check_utf8_prefix(buf: &[u8], checked: &mut usize) -> Result<(), WsError> {
    let rest = buf.get(*checked..).unwrap_or_default();
    match std::str::from_utf8(rest) {
        Ok(_) => {
            *checked = buf.len();
            Ok(())
        }
        Err(e) if e.error_len().is_none() => {
            *checked += e.valid_up_to();
            Ok(())
        }
        Err(_) => Err(WsError::InvalidUtf8),
    }
}

// === impl MessageWriter ===

/// One frame to send: write `head` then `payload` (two buffers; the payload is not copied behind
/// the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFrame {
    pub head: FrameHead,
    /// Already compressed and masked as the connection requires.
    pub payload: Vec<u8>,
}

impl OutFrame {
    /// Header and payload in one buffer (a copy; for small frames and tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.as_bytes().len() + self.payload.len());
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Frames the messages we send: one frame per message, compressed when negotiated, masked in the
/// client role.
#[derive(Debug)]
pub struct MessageWriter {
    role: Role,
    deflater: Option<Deflater>,
    masks: MaskKeys,
}

impl MessageWriter {
    pub fn new(role: Role, deflate: Option<DeflateConfig>) -> MessageWriter {
        MessageWriter {
            role,
            deflater: deflate.map(|d| Deflater::new(d.compressor_resets(role))),
            masks: MaskKeys::new(),
        }
    }

    pub fn text(&mut self, text: String) -> Result<OutFrame, WsError> {
        self.data(Opcode::Text, text.into_bytes())
    }

    pub fn binary(&mut self, data: Vec<u8>) -> Result<OutFrame, WsError> {
        self.data(Opcode::Binary, data)
    }

    pub fn ping(&mut self, payload: &[u8]) -> Result<OutFrame, WsError> {
        self.control(Opcode::Ping, payload)
    }

    /// The answer to a ping: the same payload (RFC 6455 §5.5.3).
    pub fn pong(&mut self, payload: &[u8]) -> Result<OutFrame, WsError> {
        self.control(Opcode::Pong, payload)
    }

    /// A close frame; `None` sends no status code. Codes that may not be sent (1005, 1006, ...)
    /// are refused.
    pub fn close(&mut self, frame: Option<&CloseFrame>) -> Result<OutFrame, WsError> {
        match frame {
            None => self.control(Opcode::Close, &[]),
            Some(f) if !f.code.is_valid_on_wire() => Err(WsError::BadCloseCode(f.code.0)),
            Some(f) => self.control(Opcode::Close, &f.payload()),
        }
    }

    fn data(&mut self, opcode: Opcode, payload: Vec<u8>) -> Result<OutFrame, WsError> {
        match &mut self.deflater {
            Some(deflater) => {
                let mut compressed = Vec::new();
                deflater.compress(&payload, &mut compressed)?;
                Ok(self.frame(opcode, true, compressed))
            }
            None => Ok(self.frame(opcode, false, payload)),
        }
    }

    fn control(&mut self, opcode: Opcode, payload: &[u8]) -> Result<OutFrame, WsError> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(WsError::ControlTooLong(payload.len() as u64));
        }
        Ok(self.frame(opcode, false, payload.to_vec()))
    }

    fn frame(&mut self, opcode: Opcode, rsv1: bool, mut payload: Vec<u8>) -> OutFrame {
        let mask = match self.role {
            Role::Server => None,
            Role::Client => {
                let key = self.masks.next_key();
                apply_mask(&mut payload, key);
                Some(key)
            }
        };
        OutFrame {
            head: FrameHead::new(opcode, true, rsv1, payload.len(), mask),
            payload,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::super::close::CloseCode;
    use super::super::frame::encode_frame;
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    type Outcome = (Vec<Message>, Option<WsError>);

    /// Feeds `input` in pieces of `step` bytes to a fresh reader until the first error.
    fn read_steps(reader: &mut MessageReader, input: &[u8], step: usize) -> Outcome {
        let mut messages = Vec::new();
        for piece in input.chunks(step.max(1)) {
            let mut rest = piece;
            while !rest.is_empty() {
                match reader.feed(rest) {
                    Ok(r) => {
                        assert!(r.consumed <= rest.len());
                        assert!(r.message.is_some() || r.consumed == rest.len());
                        rest = &rest[r.consumed..];
                        messages.extend(r.message);
                    }
                    Err(e) => return (messages, Some(e)),
                }
            }
        }
        (messages, None)
    }

    /// Reads `input` as a server would, whole, one byte at a time, and split at every position;
    /// all must agree.
    fn read_as(
        role: Role,
        deflate: Option<DeflateConfig>,
        limits: WsLimits,
        input: &[u8],
    ) -> Outcome {
        let fresh = || MessageReader::new(role, deflate, limits);
        let whole = read_steps(&mut fresh(), input, input.len());
        assert_eq!(read_steps(&mut fresh(), input, 1), whole, "byte by byte");
        for split in 1..input.len() {
            let mut r = fresh();
            let (mut a, e) = read_steps(&mut r, &input[..split], split);
            let outcome = if e.is_some() {
                (a, e)
            } else {
                let (b, e) = read_steps(&mut r, &input[split..], input.len());
                a.extend(b);
                (a, e)
            };
            assert_eq!(outcome, whole, "split at {split}");
        }
        whole
    }

    fn read(input: &[u8]) -> Outcome {
        read_as(Role::Server, None, WsLimits::default(), input)
    }

    fn masked(opcode: Opcode, fin: bool, payload: &[u8]) -> Vec<u8> {
        encode_frame(opcode, fin, false, payload, Some(KEY))
    }

    fn text(s: &str) -> Message {
        Message::Text(s.to_owned())
    }

    #[test]
    fn fragmented_message_with_a_ping_in_the_middle() {
        let mut input = masked(Opcode::Text, false, b"Hel");
        input.extend(masked(Opcode::Ping, true, b"are you there"));
        input.extend(masked(Opcode::Continuation, false, b""));
        input.extend(masked(Opcode::Pong, true, b""));
        input.extend(masked(Opcode::Continuation, true, b"lo"));
        input.extend(masked(Opcode::Binary, true, &[0, 159, 146, 150]));
        assert_eq!(
            read(&input),
            (
                vec![
                    Message::Ping(b"are you there".to_vec()),
                    Message::Pong(vec![]),
                    text("Hello"),
                    Message::Binary(vec![0, 159, 146, 150]),
                ],
                None
            )
        );
    }

    #[test]
    fn reader_reports_message_progress() {
        let mut r = MessageReader::new(Role::Server, None, WsLimits::default());
        let first = masked(Opcode::Text, false, b"a");
        assert_eq!(r.feed(&first).unwrap().message, None);
        assert!(r.in_message());
        let last = masked(Opcode::Continuation, true, b"b");
        assert_eq!(r.feed(&last).unwrap().message, Some(text("ab")));
        assert!(!r.in_message());
    }

    #[test]
    fn sequencing_errors() {
        let lone = masked(Opcode::Continuation, true, b"x");
        assert_eq!(read(&lone).1, Some(WsError::UnexpectedContinuation));
        let mut interleaved = masked(Opcode::Text, false, b"a");
        interleaved.extend(masked(Opcode::Binary, true, b"b"));
        assert_eq!(read(&interleaved).1, Some(WsError::ExpectedContinuation));
        for e in [
            WsError::UnexpectedContinuation,
            WsError::ExpectedContinuation,
        ] {
            assert_eq!(e.close_code(), CloseCode::PROTOCOL_ERROR);
        }
    }

    #[test]
    fn frame_cap_gives_1009() {
        let limits = WsLimits {
            max_frame_bytes: 100,
            max_message_bytes: 1000,
        };
        let at = masked(Opcode::Binary, true, &[1; 100]);
        assert_eq!(read_as(Role::Server, None, limits, &at).1, None);
        let past = masked(Opcode::Binary, true, &[1; 101]);
        let err = read_as(Role::Server, None, limits, &past).1.unwrap();
        assert_eq!(err.close_code(), CloseCode::TOO_BIG);
    }

    #[test]
    fn message_cap_across_fragments_gives_1009() {
        let limits = WsLimits {
            max_frame_bytes: 100,
            max_message_bytes: 250,
        };
        let fragments = |last: usize| {
            let mut v = masked(Opcode::Text, false, &[b'a'; 100]);
            v.extend(masked(Opcode::Ping, true, b"control frames do not count"));
            v.extend(masked(Opcode::Continuation, false, &[b'b'; 100]));
            v.extend(masked(Opcode::Continuation, true, &vec![b'c'; last]));
            v
        };
        let (messages, err) = read_as(Role::Server, None, limits, &fragments(50));
        assert_eq!(err, None);
        assert_eq!(messages.len(), 2);
        let (_, err) = read_as(Role::Server, None, limits, &fragments(51));
        assert_eq!(err, Some(WsError::MessageTooBig { limit: 250 }));
        assert_eq!(err.unwrap().close_code(), CloseCode::TOO_BIG);
    }

    #[test]
    fn invalid_utf8_gives_1007() {
        let bad = masked(Opcode::Text, true, b"caf\xc3");
        let err = read(&bad).1.unwrap();
        assert_eq!(err, WsError::InvalidUtf8);
        assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD);
        // Surrogates and overlong forms are not UTF-8 either.
        for bytes in [&b"\xed\xa0\x80"[..], b"\xc0\xaf", b"\xf4\x90\x80\x80"] {
            assert_eq!(
                read(&masked(Opcode::Text, true, bytes)).1,
                Some(WsError::InvalidUtf8)
            );
        }
        // Binary messages are not checked.
        assert_eq!(read(&masked(Opcode::Binary, true, b"\xff")).1, None);
    }

    #[test]
    fn a_character_split_across_fragments_is_valid() {
        // U+1F600 (f0 9f 98 80) cut after each of its first three bytes.
        let smiley = "\u{1F600}".as_bytes();
        for cut in 1..4 {
            let mut input = masked(
                Opcode::Text,
                false,
                &[b"x".as_slice(), &smiley[..cut]].concat(),
            );
            input.extend(masked(Opcode::Ping, true, b""));
            input.extend(masked(Opcode::Continuation, false, &smiley[cut..cut + 1]));
            input.extend(masked(Opcode::Continuation, true, &smiley[cut + 1..]));
            let (messages, err) = read(&input);
            assert_eq!(err, None, "cut {cut}");
            assert_eq!(messages.last(), Some(&text("x\u{1F600}")), "cut {cut}");
        }
    }

    #[test]
    fn invalid_text_fails_at_the_fragment_that_breaks_it() {
        // f0 followed by a non-continuation byte in the next fragment.
        let mut input = masked(Opcode::Text, false, b"ok \xf0");
        input.extend(masked(Opcode::Continuation, false, b"("));
        let mut r = MessageReader::new(Role::Server, None, WsLimits::default());
        // No final fragment was sent: the error comes from the second fragment itself.
        assert_eq!(
            read_steps(&mut r, &input, input.len()).1,
            Some(WsError::InvalidUtf8)
        );
        assert_eq!(read(&input).1, Some(WsError::InvalidUtf8));
        // An invalid byte in the first fragment fails before any other fragment.
        let first = masked(Opcode::Text, false, b"\xff");
        assert_eq!(read(&first).1, Some(WsError::InvalidUtf8));
        // A text message that ends inside a character.
        let mut cut = masked(Opcode::Text, false, b"ok");
        cut.extend(masked(Opcode::Continuation, true, b"\xe2\x82"));
        assert_eq!(read(&cut).1, Some(WsError::InvalidUtf8));
    }

    #[test]
    fn protocol_errors_give_1002() {
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            (
                encode_frame(Opcode::Text, true, false, b"hi", None),
                WsError::UnmaskedFrame,
            ),
            (
                encode_frame(Opcode::Text, true, true, b"hi", Some(KEY)),
                WsError::ReservedBits,
            ),
            (
                masked(Opcode::Ping, true, &[0; 126]),
                WsError::ControlTooLong(126),
            ),
            (masked(Opcode::Ping, false, b""), WsError::FragmentedControl),
            (
                masked(Opcode::Close, true, &1005u16.to_be_bytes()),
                WsError::BadCloseCode(1005),
            ),
            (
                masked(Opcode::Close, true, &1006u16.to_be_bytes()),
                WsError::BadCloseCode(1006),
            ),
            (
                masked(Opcode::Close, true, &999u16.to_be_bytes()),
                WsError::BadCloseCode(999),
            ),
            (
                masked(Opcode::Close, true, b"\x03\xe8\xc3\x28"),
                WsError::CloseReasonNotUtf8,
            ),
            (masked(Opcode::Close, true, b"\x03"), WsError::CloseTooShort),
        ];
        for (input, expected) in cases {
            let (_, err) = read(&input);
            assert_eq!(err.as_ref(), Some(&expected));
            assert_eq!(
                expected.close_code(),
                CloseCode::PROTOCOL_ERROR,
                "{expected}"
            );
        }
    }

    #[test]
    fn close_ends_the_stream() {
        let mut input = masked(Opcode::Close, true, b"\x03\xe9going");
        assert_eq!(
            read(&input),
            (
                vec![Message::Close(Some(CloseFrame::new(
                    CloseCode::GOING_AWAY,
                    "going"
                )))],
                None
            )
        );
        assert_eq!(
            read(&masked(Opcode::Close, true, b"")),
            (vec![Message::Close(None)], None)
        );
        // Anything after the close frame is an error; the close itself was handed out first.
        input.extend(masked(Opcode::Text, true, b"late"));
        let (messages, err) = read(&input);
        assert_eq!(messages.len(), 1);
        assert_eq!(err, Some(WsError::FrameAfterClose));
    }

    #[test]
    fn errors_stick() {
        let mut r = MessageReader::new(Role::Server, None, WsLimits::default());
        let bad = encode_frame(Opcode::Text, true, false, b"hi", None);
        assert_eq!(r.feed(&bad), Err(WsError::UnmaskedFrame));
        let good = masked(Opcode::Text, true, b"hi");
        assert_eq!(r.feed(&good), Err(WsError::UnmaskedFrame));
    }

    #[test]
    fn rfc_7692_compressed_frames() {
        let deflate = Some(DeflateConfig::default());
        // §7.2.3.1: one unmasked compressed frame from the server.
        let one = [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(
            read_as(Role::Client, deflate, WsLimits::default(), &one),
            (vec![text("Hello")], None)
        );
        // The same message fragmented: RSV1 on the first frame only.
        let two = [
            0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(
            read_as(Role::Client, deflate, WsLimits::default(), &two),
            (vec![text("Hello")], None)
        );
        // §7.2.3.2: a second message referring back into the first.
        let mut both = one.to_vec();
        both.extend([0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00]);
        assert_eq!(
            read_as(Role::Client, deflate, WsLimits::default(), &both),
            (vec![text("Hello"), text("Hello")], None)
        );
        // The compression bit on a continuation frame is refused.
        let bad = [
            0x41, 0x03, 0xf2, 0x48, 0xcd, 0xc0, 0x04, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(
            read_as(Role::Client, deflate, WsLimits::default(), &bad).1,
            Some(WsError::MisplacedCompressionBit)
        );
    }

    fn round_trip(config: DeflateConfig) {
        let mut client = MessageWriter::new(Role::Client, Some(config));
        let messages = vec![
            text(r#"{"type":"response.create","model":"gpt-5"}"#),
            Message::Binary((0..5000u32).map(|i| (i % 7) as u8).collect()),
            text(""),
            text(r#"{"type":"response.create","model":"gpt-5"}"#),
            text(&"é".repeat(40_000)),
        ];
        let mut wire = Vec::new();
        for m in &messages {
            let frame = match m.clone() {
                Message::Text(t) => client.text(t).unwrap(),
                Message::Binary(b) => client.binary(b).unwrap(),
                _ => unreachable!(),
            };
            // Compressed and masked: the payload is neither the text nor plain deflate.
            assert_eq!(frame.head.as_bytes()[0] & 0x40, 0x40);
            assert_eq!(frame.head.as_bytes()[1] & 0x80, 0x80);
            wire.extend(frame.to_vec());
        }
        let mut r = MessageReader::new(Role::Server, Some(config), WsLimits::default());
        assert_eq!(
            read_steps(&mut r, &wire, wire.len()),
            (messages.clone(), None)
        );
        let mut r = MessageReader::new(Role::Server, Some(config), WsLimits::default());
        assert_eq!(read_steps(&mut r, &wire, 7), (messages, None));
    }

    #[test]
    fn compressed_round_trips_with_context_takeover() {
        round_trip(DeflateConfig::default());
    }

    #[test]
    fn compressed_round_trips_without_context_takeover() {
        round_trip(DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
        });
    }

    #[test]
    fn compressed_bomb_gives_1009() {
        let config = Some(DeflateConfig::default());
        let mut server = MessageWriter::new(Role::Server, config);
        let frame = server.binary(vec![0; 4 << 20]).unwrap();
        assert!(frame.payload.len() < 40_000, "{}", frame.payload.len());
        let limits = WsLimits {
            max_frame_bytes: 1 << 20,
            max_message_bytes: 1 << 20,
        };
        let mut r = MessageReader::new(Role::Client, config, limits);
        let (_, err) = read_steps(&mut r, &frame.to_vec(), usize::MAX);
        assert_eq!(err, Some(WsError::MessageTooBig { limit: 1 << 20 }));
        assert_eq!(err.unwrap().close_code(), CloseCode::TOO_BIG);
    }

    #[test]
    fn writer_frames() {
        let mut server = MessageWriter::new(Role::Server, None);
        let f = server.text("Hello".into()).unwrap();
        assert_eq!(f.to_vec(), [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(
            server.pong(b"Hello").unwrap().to_vec(),
            [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(
            server
                .close(Some(&CloseFrame::new(CloseCode::NORMAL, "")))
                .unwrap()
                .to_vec(),
            [0x88, 0x02, 0x03, 0xe8]
        );
        assert_eq!(server.close(None).unwrap().to_vec(), [0x88, 0x00]);
        assert_eq!(
            server.close(Some(&CloseFrame::new(CloseCode::ABNORMAL, ""))),
            Err(WsError::BadCloseCode(1006))
        );
        assert_eq!(server.ping(&[0; 126]), Err(WsError::ControlTooLong(126)));
        assert!(server.ping(&[0; 125]).is_ok());
        // Client frames are masked and the server side reads them back.
        let mut client = MessageWriter::new(Role::Client, None);
        let mut wire = client.text("Hello".into()).unwrap().to_vec();
        wire.extend(client.ping(b"p").unwrap().to_vec());
        wire.extend(
            client
                .close(Some(&CloseFrame::new(CloseCode::GOING_AWAY, "bye")))
                .unwrap()
                .to_vec(),
        );
        assert_eq!(wire[1] & 0x80, 0x80);
        assert_eq!(
            read(&wire),
            (
                vec![
                    text("Hello"),
                    Message::Ping(b"p".to_vec()),
                    Message::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "bye")))
                ],
                None
            )
        );
    }
}
