//! permessage-deflate (RFC 7692 §7.2): raw DEFLATE per message, sync-flushed, with the final
//! `00 00 ff ff` left off the wire.
//!
//! The inflater takes a message's fragments as they arrive and writes into the message buffer,
//! stopping as soon as the output passes the cap: a few kilobytes of deflate can claim gigabytes,
//! so the cap is enforced on the output, never on the compressed size. With context takeover the
//! LZ77 window carries over between messages; without it each message starts from a fresh state.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::WsError;

/// What a sender strips and a receiver appends (RFC 7692 §7.2.1, §7.2.2).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The smallest output step while inflating; steps then double with the buffer.
const MIN_INFLATE_STEP: usize = 16 * 1024;

/// Decompresses received messages.
///
/// miniz_oxide does not reject a back-reference to data before the start of the stream: a peer
/// that promised no context takeover and broke it yields zeros in place of the missing bytes
/// rather than [`WsError::BadDeflate`].
pub struct Inflater {
    inner: Decompress,
    reset_each_message: bool,
    /// The peer ended the DEFLATE stream (a block with BFINAL set) inside this message: the
    /// rest of the message, tail included, is ignored and the next message starts a new stream.
    ended: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("reset_each_message", &self.reset_each_message)
            .finish_non_exhaustive()
    }
}

impl Inflater {
    /// `reset_each_message` when the peer compresses without context takeover.
    pub fn new(reset_each_message: bool) -> Inflater {
        Inflater {
            inner: Decompress::new(false),
            reset_each_message,
            ended: false,
        }
    }

    /// Inflates one fragment of a compressed message onto `out`. Fails with 1009 as soon as `out`
    /// would hold more than `limit` bytes.
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), WsError> {
        self.run(input, out, limit)
    }

    /// Ends a message: inflates the stripped tail, then resets the window if it does not carry
    /// over to the next message.
    pub fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), WsError> {
        self.run(&TAIL, out, limit)?;
        if self.reset_each_message || self.ended {
            self.reset();
        }
        Ok(())
    }

    /// Forgets the current message (and the window); for a connection that goes on after an
    /// abandoned message, which ours never do, and for tests.
    pub fn reset(&mut self) {
        self.inner.reset(false);
        self.ended = false;
    }

    fn run(&mut self, mut input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), WsError> {
        loop {
            if self.ended {
                return Ok(());
            }
            if out.len() == out.capacity() {
                // Double as the message grows, but never reserve past the cap (+1 byte, to see
                // that there is more).
                let room = limit.saturating_sub(out.len()).saturating_add(1);
                out.reserve_exact(out.len().max(MIN_INFLATE_STEP).min(room));
            }
            let (in_before, out_before) = (self.inner.total_in(), self.inner.total_out());
            let status = self
                .inner
                .decompress_vec(input, out, FlushDecompress::None)
                .map_err(|_| WsError::BadDeflate)?;
            let used = (self.inner.total_in() - in_before) as usize;
            let made = self.inner.total_out() - out_before;
            input = input.get(used..).unwrap_or_default();
            if out.len() > limit {
                return Err(WsError::MessageTooBig { limit });
            }
            if status == Status::StreamEnd {
                self.ended = true;
                return Ok(());
            }
            if out.len() < out.capacity() {
                // The inflater stopped with room to spare: it wants more input, or it is stuck.
                if input.is_empty() {
                    return Ok(());
                }
                if used == 0 && made == 0 {
                    return Err(WsError::BadDeflate);
                }
            }
        }
    }
}

/// Compresses messages we send.
pub struct Deflater {
    inner: Compress,
    reset_each_message: bool,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("reset_each_message", &self.reset_each_message)
            .finish_non_exhaustive()
    }
}

impl Deflater {
    /// `reset_each_message` when we agreed to compress without context takeover. The fast level:
    /// this runs per message on a core that also relays, and JSON compresses well at any level.
    pub fn new(reset_each_message: bool) -> Deflater {
        Deflater {
            inner: Compress::new(Compression::fast(), false),
            reset_each_message,
        }
    }

    /// Compresses a whole message, tail stripped, onto `out`.
    pub fn compress(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), WsError> {
        let start = out.len();
        // Deflate's worst case is a few bytes per 16 KiB stored block over the input.
        out.reserve(input.len() + input.len() / 64 + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let in_before = self.inner.total_in();
            self.inner
                .compress_vec(input, out, FlushCompress::Sync)
                .map_err(|_| WsError::CompressFailed)?;
            let used = (self.inner.total_in() - in_before) as usize;
            input = input.get(used..).unwrap_or_default();
            // A sync flush is complete once it returns with output room to spare.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        if out.len() < start + TAIL.len() || !out.ends_with(&TAIL) {
            return Err(WsError::CompressFailed);
        }
        out.truncate(out.len() - TAIL.len());
        if self.reset_each_message {
            self.inner.reset();
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    fn inflate_whole(inf: &mut Inflater, msg: &[u8], limit: usize) -> Result<Vec<u8>, WsError> {
        let mut out = Vec::new();
        inf.inflate(msg, &mut out, limit)?;
        inf.finish(&mut out, limit)?;
        Ok(out)
    }

    #[test]
    fn rfc_7692_hello() {
        // §7.2.3.1: "Hello" in one compressed message.
        let wire = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut inf = Inflater::new(false);
        assert_eq!(inflate_whole(&mut inf, &wire, LIMIT).unwrap(), b"Hello");
        // §7.2.3.2: the same message again with the window carried over.
        let again = [0xf2, 0x00, 0x11, 0x00, 0x00];
        assert_eq!(inflate_whole(&mut inf, &again, LIMIT).unwrap(), b"Hello");
        // Our compressor produces the RFC's bytes for a fresh context.
        let mut def = Deflater::new(false);
        let mut out = Vec::new();
        def.compress(b"Hello", &mut out).unwrap();
        assert_eq!(out, wire);
    }

    #[test]
    fn rfc_7692_fragments_and_final_blocks() {
        // §7.2.3.1 split over two frames: "Hello" inflated fragment by fragment.
        let mut inf = Inflater::new(false);
        let mut out = Vec::new();
        inf.inflate(&[0xf2, 0x48, 0xcd], &mut out, LIMIT).unwrap();
        inf.inflate(&[0xc9, 0xc9, 0x07, 0x00], &mut out, LIMIT)
            .unwrap();
        inf.finish(&mut out, LIMIT).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.3: a stored (uncompressed) block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate_whole(&mut inf, &stored, LIMIT).unwrap(), b"Hello");
        // §7.2.3.5: a block with BFINAL set; the next message starts a new stream.
        let final_block = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(
            inflate_whole(&mut inf, &final_block, LIMIT).unwrap(),
            b"Hello"
        );
        assert_eq!(
            inflate_whole(&mut inf, &final_block, LIMIT).unwrap(),
            b"Hello"
        );
        // §7.2.3.6: an empty message.
        assert_eq!(inflate_whole(&mut inf, &[0x00], LIMIT).unwrap(), b"");
    }

    fn round_trip(reset: bool) {
        let mut def = Deflater::new(reset);
        let mut inf = Inflater::new(reset);
        let messages: Vec<Vec<u8>> = vec![
            br#"{"type":"response.output_text.delta","delta":"Hel"}"#.to_vec(),
            br#"{"type":"response.output_text.delta","delta":"lo"}"#.to_vec(),
            Vec::new(),
            br#"{"type":"response.output_text.delta","delta":"Hel"}"#.to_vec(),
            (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect(),
            br#"{"type":"response.output_text.delta","delta":"lo"}"#.to_vec(),
        ];
        let mut sizes = Vec::new();
        for m in &messages {
            let mut wire = Vec::new();
            def.compress(m, &mut wire).unwrap();
            sizes.push(wire.len());
            assert_eq!(&inflate_whole(&mut inf, &wire, LIMIT).unwrap(), m);
        }
        // With the window carried over, a repeated message costs a back-reference; without it, the
        // same as the first time.
        if reset {
            assert_eq!(sizes[3], sizes[0]);
        } else {
            assert!(sizes[3] < sizes[0] / 2, "{sizes:?}");
        }
    }

    #[test]
    fn round_trips_with_context_takeover() {
        round_trip(false);
    }

    #[test]
    fn round_trips_without_context_takeover() {
        round_trip(true);
    }

    #[test]
    fn bomb_stops_at_the_cap() {
        let mut def = Deflater::new(false);
        let zeros = vec![0u8; 10 << 20];
        let mut wire = Vec::new();
        def.compress(&zeros, &mut wire).unwrap();
        // The fast level manages ~220:1 on zeros (deflate's best is ~1030:1).
        assert!(wire.len() < zeros.len() / 100, "{}", wire.len());
        let limit = 1 << 20;
        let mut inf = Inflater::new(false);
        let mut out = Vec::new();
        let err = inf.inflate(&wire, &mut out, limit).unwrap_err();
        assert_eq!(err, WsError::MessageTooBig { limit });
        assert_eq!(err.close_code().0, 1009);
        // Memory stays near the cap, not the claimed size.
        assert!(out.capacity() <= limit + 1, "{}", out.capacity());
    }

    #[test]
    fn cap_at_and_past_the_limit() {
        let msg = vec![b'a'; 5000];
        let mut def = Deflater::new(true);
        let mut wire = Vec::new();
        def.compress(&msg, &mut wire).unwrap();
        let mut inf = Inflater::new(true);
        assert_eq!(inflate_whole(&mut inf, &wire, 5000).unwrap(), msg);
        let mut inf = Inflater::new(true);
        assert_eq!(
            inflate_whole(&mut inf, &wire, 4999),
            Err(WsError::MessageTooBig { limit: 4999 })
        );
    }

    #[test]
    fn garbage_is_bad_deflate() {
        let mut inf = Inflater::new(false);
        // BTYPE 11 is reserved.
        assert_eq!(
            inflate_whole(&mut inf, &[0xff, 0xff], LIMIT),
            Err(WsError::BadDeflate)
        );
        assert_eq!(WsError::BadDeflate.close_code().0, 1007);
    }
}
