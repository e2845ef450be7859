//! Frames (RFC 6455 §5.2): an incremental decoder fed byte slices split anywhere, and the header
//! encoder for frames we send.
//!
//! The decoder enforces every rule that one frame header can break (reserved bits and opcodes,
//! masking direction, control frame size and fragmentation, the 64-bit length's top bit, the
//! frame size cap) as soon as the bytes that break it have arrived, in a fixed order, so the error
//! for a stream never depends on how it was split. Rules that span frames (continuations, UTF-8,
//! message size) belong to [`super::message`].
//!
//! Non-minimal length encodings (a 5-byte payload in the 16-bit form) are accepted: RFC 6455
//! §5.2 says "the minimal number of bytes MUST be used" of the sender, and refusing them buys
//! nothing.

use super::mask::{apply_mask, key_at};
use super::{Opcode, Role, WsError, MAX_CONTROL_PAYLOAD};

/// Longest frame header: 2 bytes, a 64-bit length, a 4-byte masking key.
pub const MAX_HEAD_LEN: usize = 14;
/// Payload capacity reserved up front. A header may announce up to the frame cap; memory follows
/// the bytes that actually arrive rather than the announcement.
const PAYLOAD_PREALLOC: usize = 64 * 1024;

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const RSV2_3: u8 = 0x30;
const MASKED: u8 = 0x80;

/// One decoded frame, payload already unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    /// Set on the first frame of a compressed message (permessage-deflate).
    pub rsv1: bool,
    pub opcode: Opcode,
    pub payload: Vec<u8>,
}

/// What one call to [`FrameDecoder::decode`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used; the rest belongs to the next frame (feed it again).
    pub consumed: usize,
    /// A frame completed by these bytes, if any.
    pub frame: Option<Frame>,
}

#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    len: usize,
}

/// Decodes frames from bytes fed in any pieces.
#[derive(Debug)]
pub struct FrameDecoder {
    role: Role,
    /// permessage-deflate was negotiated, so RSV1 has a meaning.
    compression: bool,
    max_frame_bytes: usize,
    head: [u8; MAX_HEAD_LEN],
    head_len: usize,
    header: Option<Header>,
    payload: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder for the frames `role`'s peer sends; `compression` when permessage-deflate was
    /// negotiated; frames announcing more than `max_frame_bytes` of payload fail with 1009.
    pub fn new(role: Role, compression: bool, max_frame_bytes: usize) -> FrameDecoder {
        FrameDecoder {
            role,
            compression,
            max_frame_bytes,
            head: [0; MAX_HEAD_LEN],
            head_len: 0,
            header: None,
            payload: Vec::new(),
        }
    }

    /// Consumes bytes up to the end of the next frame. Returns the frame when these bytes complete
    /// it; otherwise every byte was consumed and more are needed. After an error the decoder's
    /// state is undefined: fail the connection.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, WsError> {
        self.decode_within(input, usize::MAX, usize::MAX)
    }

    /// True between frames (no partial header or payload held).
    pub fn at_frame_boundary(&self) -> bool {
        self.head_len == 0 && self.header.is_none()
    }

    /// As [`Self::decode`], with data frames limited to `data_room` payload bytes (what is left of
    /// the message size cap, `message_limit`) so an oversized message fails at its header, before
    /// it is buffered.
    pub(crate) fn decode_within(
        &mut self,
        input: &[u8],
        data_room: usize,
        message_limit: usize,
    ) -> Result<Decoded, WsError> {
        let mut used = 0;
        let header = match self.header {
            Some(h) => h,
            None => {
                while self.head_len < self.head_needed() {
                    let Some(&b) = input.get(used) else {
                        return Ok(Decoded {
                            consumed: used,
                            frame: None,
                        });
                    };
                    if let Some(slot) = self.head.get_mut(self.head_len) {
                        *slot = b;
                    }
                    self.head_len += 1;
                    used += 1;
                    if self.head_len == 2 {
                        self.check_start()?;
                    }
                    if self.head_len >= 2 && self.head_len == 2 + self.ext_len() {
                        self.check_length(data_room, message_limit)?;
                    }
                }
                let h = self.parse_head();
                self.payload = Vec::with_capacity(h.len.min(PAYLOAD_PREALLOC));
                self.header = Some(h);
                h
            }
        };

        let have = self.payload.len();
        let take = (header.len - have).min(input.len() - used);
        self.payload
            .extend_from_slice(input.get(used..used + take).unwrap_or_default());
        if let (Some(key), Some(fresh)) = (header.mask, self.payload.get_mut(have..)) {
            apply_mask(fresh, key_at(key, have));
        }
        used += take;
        if self.payload.len() < header.len {
            return Ok(Decoded {
                consumed: used,
                frame: None,
            });
        }
        self.head_len = 0;
        self.header = None;
        Ok(Decoded {
            consumed: used,
            frame: Some(Frame {
                fin: header.fin,
                rsv1: header.rsv1,
                opcode: header.opcode,
                payload: std::mem::take(&mut self.payload),
            }),
        })
    }

    fn b0(&self) -> u8 {
        self.head[0]
    }

    fn b1(&self) -> u8 {
        self.head[1]
    }

    /// Bytes of extended length after the first two.
    fn ext_len(&self) -> usize {
        match self.b1() & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        }
    }

    fn head_needed(&self) -> usize {
        if self.head_len < 2 {
            return 2;
        }
        let mask = if self.b1() & MASKED != 0 { 4 } else { 0 };
        2 + self.ext_len() + mask
    }

    /// The rules the first two bytes decide, in a fixed order.
    fn check_start(&self) -> Result<(), WsError> {
        let (b0, b1) = (self.b0(), self.b1());
        if b0 & RSV2_3 != 0 || (b0 & RSV1 != 0 && !self.compression) {
            return Err(WsError::ReservedBits);
        }
        let opcode = Opcode::from_bits(b0 & 0x0f).ok_or(WsError::UnknownOpcode(b0 & 0x0f))?;
        // RFC 7692 §6: RSV1 marks a compressed message on its first frame only.
        if b0 & RSV1 != 0 && (opcode.is_control() || opcode == Opcode::Continuation) {
            return Err(WsError::MisplacedCompressionBit);
        }
        if opcode.is_control() {
            if b0 & FIN == 0 {
                return Err(WsError::FragmentedControl);
            }
            if usize::from(b1 & 0x7f) > MAX_CONTROL_PAYLOAD {
                return Err(WsError::ControlTooLong(self.raw_len7_hint()));
            }
        }
        match (self.role, b1 & MASKED != 0) {
            (Role::Server, false) => Err(WsError::UnmaskedFrame),
            (Role::Client, true) => Err(WsError::MaskedFrame),
            _ => Ok(()),
        }
    }

    /// For the control-frame error: the 7-bit length field (126/127 mean "longer").
    fn raw_len7_hint(&self) -> u64 {
        u64::from(self.b1() & 0x7f)
    }

    fn payload_len(&self) -> u64 {
        let h = &self.head;
        match self.ext_len() {
            2 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            8 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            _ => u64::from(self.b1() & 0x7f),
        }
    }

    fn check_length(&self, data_room: usize, message_limit: usize) -> Result<(), WsError> {
        let len = self.payload_len();
        if len >> 63 != 0 {
            return Err(WsError::LengthOverflow);
        }
        if len > self.max_frame_bytes as u64 {
            return Err(WsError::FrameTooBig {
                len,
                limit: self.max_frame_bytes,
            });
        }
        let control = self.b0() & 0x08 != 0;
        if !control && len > data_room as u64 {
            return Err(WsError::MessageTooBig {
                limit: message_limit,
            });
        }
        Ok(())
    }

    /// Reads the complete, already checked header.
    fn parse_head(&self) -> Header {
        let b0 = self.b0();
        let ext = self.ext_len();
        let mask = if self.b1() & MASKED != 0 {
            self.head
                .get(2 + ext..2 + ext + 4)
                .and_then(|k| <[u8; 4]>::try_from(k).ok())
        } else {
            None
        };
        Header {
            fin: b0 & FIN != 0,
            rsv1: b0 & RSV1 != 0,
            // check_start refused reserved opcodes; Continuation is never reached.
            opcode: Opcode::from_bits(b0 & 0x0f).unwrap_or(Opcode::Continuation),
            mask,
            // check_length capped it at max_frame_bytes, a usize.
            len: usize::try_from(self.payload_len()).unwrap_or(usize::MAX),
        }
    }
}

/// The header of a frame we send. Written before the payload as a separate buffer, so the
/// payload is never copied to sit behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    bytes: [u8; MAX_HEAD_LEN],
    len: u8,
}

impl FrameHead {
    /// The header for a frame of `payload_len` bytes. With `mask` (client role), the payload must
    /// be masked with the same key ([`apply_mask`]) before it is written.
    pub fn new(
        opcode: Opcode,
        fin: bool,
        rsv1: bool,
        payload_len: usize,
        mask: Option<[u8; 4]>,
    ) -> FrameHead {
        let mut head = FrameHead {
            bytes: [0; MAX_HEAD_LEN],
            len: 0,
        };
        head.push(&[opcode.bits() | if fin { FIN } else { 0 } | if rsv1 { RSV1 } else { 0 }]);
        let masked = if mask.is_some() { MASKED } else { 0 };
        if payload_len < 126 {
            head.push(&[masked | payload_len as u8]);
        } else if let Ok(short) = u16::try_from(payload_len) {
            head.push(&[masked | 126]);
            head.push(&short.to_be_bytes());
        } else {
            head.push(&[masked | 127]);
            head.push(&(payload_len as u64).to_be_bytes());
        }
        if let Some(key) = mask {
            head.push(&key);
        }
        head
    }

    /// Appends header bytes; at most 14 are ever pushed, the size of `bytes`.
    fn push(&mut self, b: &[u8]) {
        let start = usize::from(self.len);
        if let Some(dst) = self.bytes.get_mut(start..start + b.len()) {
            dst.copy_from_slice(b);
            self.len += b.len() as u8;
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

/// A whole frame in one buffer (header, then the payload masked when `mask` is given). Copies the
/// payload: for small frames and tests; large ones go out as [`FrameHead`] + payload.
pub fn encode_frame(
    opcode: Opcode,
    fin: bool,
    rsv1: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let head = FrameHead::new(opcode, fin, rsv1, payload.len(), mask);
    let mut out = Vec::with_capacity(head.as_bytes().len() + payload.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(payload);
    if let (Some(key), Some(body)) = (mask, out.get_mut(head.as_bytes().len()..)) {
        apply_mask(body, key);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const BIG: usize = 1 << 20;

    type Outcome = (Vec<Frame>, Option<WsError>);

    /// Decodes `input` fed in pieces of `step` bytes until the first error.
    fn decode_steps(
        role: Role,
        compression: bool,
        max: usize,
        input: &[u8],
        step: usize,
    ) -> Outcome {
        let mut d = FrameDecoder::new(role, compression, max);
        let mut frames = Vec::new();
        for piece in input.chunks(step.max(1)) {
            let mut rest = piece;
            loop {
                match d.decode(rest) {
                    Ok(r) => {
                        assert!(r.consumed <= rest.len());
                        rest = &rest[r.consumed..];
                        match r.frame {
                            Some(f) => frames.push(f),
                            None => {
                                assert!(rest.is_empty(), "stopped early without a frame");
                                break;
                            }
                        }
                        if rest.is_empty() {
                            break;
                        }
                    }
                    Err(e) => return (frames, Some(e)),
                }
            }
        }
        (frames, None)
    }

    /// Decodes `input` split in two at `split`.
    fn decode_split(role: Role, input: &[u8], split: usize) -> Outcome {
        let mut d = FrameDecoder::new(role, true, BIG);
        let mut frames = Vec::new();
        for piece in [&input[..split], &input[split..]] {
            let mut rest = piece;
            while !rest.is_empty() {
                match d.decode(rest) {
                    Ok(r) => {
                        rest = &rest[r.consumed..];
                        frames.extend(r.frame);
                    }
                    Err(e) => return (frames, Some(e)),
                }
            }
        }
        (frames, None)
    }

    fn decode(role: Role, input: &[u8]) -> Outcome {
        decode_steps(role, false, BIG, input, input.len())
    }

    fn frame(fin: bool, opcode: Opcode, payload: &[u8]) -> Frame {
        Frame {
            fin,
            rsv1: false,
            opcode,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn rfc_examples_decode() {
        // RFC 6455 §5.7.
        let unmasked_hello = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(
            decode(Role::Client, &unmasked_hello),
            (vec![frame(true, Opcode::Text, b"Hello")], None)
        );
        let masked_hello = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode(Role::Server, &masked_hello),
            (vec![frame(true, Opcode::Text, b"Hello")], None)
        );
        let fragmented = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        assert_eq!(
            decode(Role::Client, &fragmented),
            (
                vec![
                    frame(false, Opcode::Text, b"Hel"),
                    frame(true, Opcode::Continuation, b"lo")
                ],
                None
            )
        );
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(
            decode(Role::Client, &ping),
            (vec![frame(true, Opcode::Ping, b"Hello")], None)
        );
        let masked_pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode(Role::Server, &masked_pong),
            (vec![frame(true, Opcode::Pong, b"Hello")], None)
        );
        for (len, head) in [
            (256usize, vec![0x82, 0x7e, 0x01, 0x00]),
            (65536, vec![0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut bytes = head.clone();
            bytes.extend_from_slice(&payload);
            assert_eq!(
                decode(Role::Client, &bytes),
                (vec![frame(true, Opcode::Binary, &payload)], None),
                "{len}"
            );
        }
    }

    #[test]
    fn rfc_examples_encode() {
        assert_eq!(
            encode_frame(Opcode::Text, true, false, b"Hello", None),
            [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(
            encode_frame(Opcode::Text, true, false, b"Hello", Some(KEY)),
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        assert_eq!(
            encode_frame(Opcode::Text, false, false, b"Hel", None),
            [0x01, 0x03, 0x48, 0x65, 0x6c]
        );
        assert_eq!(
            encode_frame(Opcode::Continuation, true, false, b"lo", None),
            [0x80, 0x02, 0x6c, 0x6f]
        );
        assert_eq!(
            encode_frame(Opcode::Ping, true, false, b"Hello", None),
            [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(
            FrameHead::new(Opcode::Binary, true, false, 256, None).as_bytes(),
            [0x82, 0x7e, 0x01, 0x00]
        );
        assert_eq!(
            FrameHead::new(Opcode::Binary, true, false, 65536, None).as_bytes(),
            [0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]
        );
        // The length forms switch at 126 and 65536.
        assert_eq!(
            FrameHead::new(Opcode::Binary, true, false, 125, None).as_bytes(),
            [0x82, 125]
        );
        assert_eq!(
            FrameHead::new(Opcode::Binary, true, false, 126, None).as_bytes(),
            [0x82, 126, 0, 126]
        );
        assert_eq!(
            FrameHead::new(Opcode::Binary, true, true, 65535, Some(KEY)).as_bytes(),
            [0xc2, 0xfe, 0xff, 0xff, 0x37, 0xfa, 0x21, 0x3d]
        );
    }

    /// Frames of every length form, masked, with control frames between fragments.
    fn sample_stream() -> (Vec<u8>, Vec<Frame>) {
        let mut bytes = Vec::new();
        let mut frames = Vec::new();
        let keys = [KEY, [0, 0, 0, 0], [0xff, 1, 0x80, 7]];
        let specs: [(bool, Opcode, usize); 8] = [
            (false, Opcode::Text, 3),
            (true, Opcode::Ping, 0),
            (false, Opcode::Continuation, 125),
            (true, Opcode::Pong, 125),
            (true, Opcode::Continuation, 126),
            (true, Opcode::Binary, 0),
            (true, Opcode::Binary, 70_000),
            (true, Opcode::Close, 2),
        ];
        for (i, (fin, opcode, len)) in specs.into_iter().enumerate() {
            let payload: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
            bytes.extend(encode_frame(
                opcode,
                fin,
                false,
                &payload,
                Some(keys[i % keys.len()]),
            ));
            frames.push(frame(fin, opcode, &payload));
        }
        (bytes, frames)
    }

    #[test]
    fn same_frames_at_every_split() {
        let (bytes, expected) = sample_stream();
        let whole = decode_steps(Role::Server, false, BIG, &bytes, bytes.len());
        assert_eq!(whole, (expected.clone(), None));
        // Two pieces, split at every position (the stream is ~70 KB; every 7th position past the
        // headers keeps this quick while still crossing each header byte).
        for split in 0..=bytes.len() {
            if split > 600 && split % 7 != 0 && split + 600 < bytes.len() {
                continue;
            }
            assert_eq!(
                decode_split(Role::Server, &bytes, split),
                whole,
                "split {split}"
            );
        }
        for step in [1, 2, 3, 5, 13, 4096] {
            assert_eq!(
                decode_steps(Role::Server, false, BIG, &bytes, step),
                whole,
                "step {step}"
            );
        }
    }

    #[test]
    fn decoder_stops_at_the_end_of_each_frame() {
        let mut bytes = encode_frame(Opcode::Text, true, false, b"one", Some(KEY));
        bytes.extend(encode_frame(Opcode::Text, true, false, b"two", Some(KEY)));
        let mut d = FrameDecoder::new(Role::Server, false, BIG);
        let r = d.decode(&bytes).unwrap();
        assert_eq!(r.consumed, 9);
        assert_eq!(r.frame.unwrap().payload, b"one");
        assert!(d.at_frame_boundary());
        let r = d.decode(&bytes[9..]).unwrap();
        assert_eq!(r.consumed, 9);
        assert_eq!(r.frame.unwrap().payload, b"two");
        let r = d.decode(&[0x81]).unwrap();
        assert_eq!((r.consumed, r.frame), (1, None));
        assert!(!d.at_frame_boundary());
    }

    fn first_error(role: Role, compression: bool, max: usize, bytes: &[u8]) -> Option<WsError> {
        let whole = decode_steps(role, compression, max, bytes, bytes.len());
        for step in 1..bytes.len().min(16) {
            assert_eq!(
                decode_steps(role, compression, max, bytes, step),
                whole,
                "step {step}"
            );
        }
        whole.1
    }

    #[test]
    fn masking_direction_is_enforced() {
        let unmasked = encode_frame(Opcode::Text, true, false, b"hi", None);
        assert_eq!(
            first_error(Role::Server, false, BIG, &unmasked),
            Some(WsError::UnmaskedFrame)
        );
        let masked = encode_frame(Opcode::Text, true, false, b"hi", Some(KEY));
        assert_eq!(
            first_error(Role::Client, false, BIG, &masked),
            Some(WsError::MaskedFrame)
        );
        assert_eq!(WsError::UnmaskedFrame.close_code().0, 1002);
    }

    #[test]
    fn reserved_bits_need_deflate_and_only_rsv1_on_first_frames() {
        let rsv1 = encode_frame(Opcode::Text, true, true, b"x", Some(KEY));
        assert_eq!(
            first_error(Role::Server, false, BIG, &rsv1),
            Some(WsError::ReservedBits)
        );
        assert_eq!(first_error(Role::Server, true, BIG, &rsv1), None);
        for bit in [0x20u8, 0x10] {
            let mut f = encode_frame(Opcode::Text, true, false, b"x", Some(KEY));
            f[0] |= bit;
            assert_eq!(
                first_error(Role::Server, true, BIG, &f),
                Some(WsError::ReservedBits)
            );
        }
        for op in [Opcode::Continuation, Opcode::Ping] {
            let f = encode_frame(op, true, true, b"x", Some(KEY));
            assert_eq!(
                first_error(Role::Server, true, BIG, &f),
                Some(WsError::MisplacedCompressionBit),
                "{op:?}"
            );
        }
        assert_eq!(WsError::ReservedBits.close_code().0, 1002);
    }

    #[test]
    fn reserved_opcodes_are_refused() {
        for op in [3u8, 7, 0xb, 0xf] {
            let f = [0x80 | op, 0x80, 1, 2, 3, 4];
            assert_eq!(
                first_error(Role::Server, false, BIG, &f),
                Some(WsError::UnknownOpcode(op))
            );
        }
    }

    #[test]
    fn control_frames_are_short_and_whole() {
        let at_limit = encode_frame(Opcode::Ping, true, false, &[7; 125], Some(KEY));
        assert_eq!(first_error(Role::Server, false, BIG, &at_limit), None);
        let over = encode_frame(Opcode::Ping, true, false, &[7; 126], Some(KEY));
        assert_eq!(
            first_error(Role::Server, false, BIG, &over),
            Some(WsError::ControlTooLong(126))
        );
        let fragmented = encode_frame(Opcode::Close, false, false, b"", Some(KEY));
        assert_eq!(
            first_error(Role::Server, false, BIG, &fragmented),
            Some(WsError::FragmentedControl)
        );
        assert_eq!(WsError::ControlTooLong(126).close_code().0, 1002);
        assert_eq!(WsError::FragmentedControl.close_code().0, 1002);
    }

    #[test]
    fn length_top_bit_is_refused() {
        let f = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(
            first_error(Role::Server, false, BIG, &f),
            Some(WsError::LengthOverflow)
        );
        // Just below: a frame too big for any cap, not an overflow.
        let f = [0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            first_error(Role::Server, false, BIG, &f),
            Some(WsError::FrameTooBig { .. })
        ));
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        let f = [0x82, 0xfe, 0x00, 0x02, 1, 2, 3, 4, 0xaa, 0xbb];
        let (frames, err) = decode(Role::Server, &f);
        assert_eq!(err, None);
        assert_eq!(frames[0].payload, [0xab, 0xb9]);
    }

    #[test]
    fn frame_cap_at_and_past_the_limit() {
        let max = 1000;
        let at = encode_frame(Opcode::Binary, true, false, &vec![1; max], Some(KEY));
        assert_eq!(first_error(Role::Server, false, max, &at), None);
        let past = encode_frame(Opcode::Binary, true, false, &vec![1; max + 1], Some(KEY));
        let err = first_error(Role::Server, false, max, &past).unwrap();
        assert_eq!(
            err,
            WsError::FrameTooBig {
                len: max as u64 + 1,
                limit: max
            }
        );
        assert_eq!(err.close_code().0, 1009);
        // Refused at the header: only the header bytes were needed.
        let mut d = FrameDecoder::new(Role::Server, false, max);
        assert!(d.decode(&past[..4]).is_err());
    }
}
