//! Chunked transfer coding (RFC 9112 §7.1) as an incremental state machine.
//!
//! One decoder serves both directions: request bodies (data appended to the body buffer) and upstream
//! SSE bodies, which the relay forwards in their original framing. For the relay the decoder also
//! reports a *safe end*: the prefix of the bytes fed so far after which the receiving client's own
//! parser is in a state we can complete by ourselves (between chunks, or inside chunk data). Bytes
//! of a half-received size line and the upstream's last-chunk/trailer section are held back, so a
//! stream that breaks anywhere can still be closed with a well-formed `response.failed` chunk.

use thiserror::Error;

/// Longest chunk-extension section accepted on one size line.
pub const CHUNK_EXT_LIMIT: usize = 4096;
/// Longest trailer section accepted after the last chunk.
pub const TRAILER_LIMIT: usize = 16 * 1024;
/// Hex digits in a chunk size: 16 fill a u64.
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    BadSize,
    #[error("chunk size overflows")]
    SizeOverflow,
    #[error("chunk extensions exceed {CHUNK_EXT_LIMIT} bytes")]
    ExtensionTooLong,
    #[error("missing CRLF after chunk data")]
    BadDataEnd,
    #[error("trailer section exceeds {TRAILER_LIMIT} bytes")]
    TrailerTooLong,
    #[error("invalid trailer line ending")]
    BadTrailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a size line: between chunks.
    SizeStart,
    Size {
        digits: u8,
    },
    /// After the size digits: optional whitespace and `;ext` until CR.
    Ext {
        len: usize,
    },
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk: at the start of a trailer line (or the final CRLF).
    TrailerLineStart,
    TrailerLine,
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// What the decoder did with one slice of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feed {
    /// Bytes of the input that belong to this body (the rest belongs to the next message).
    pub consumed: usize,
    /// Input bytes `[..safe_end]` may be forwarded to a client as they are (see the module doc).
    /// Bytes held back from earlier feeds precede them.
    pub safe_end: usize,
    pub done: bool,
}

/// How to finish the framing a client has seen so far: `pad` filler bytes, then `suffix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub pad: u64,
    pub suffix: &'static [u8],
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::SizeStart,
            size: 0,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn is_safe(&self) -> bool {
        matches!(
            self.state,
            State::SizeStart | State::Data | State::DataCr | State::DataLf
        )
    }

    /// What a client that received every forwarded byte needs to end the current chunk cleanly.
    pub fn completion(&self) -> Completion {
        match self.state {
            State::Data => Completion {
                pad: self.size,
                suffix: b"\r\n",
            },
            State::DataCr => Completion {
                pad: 0,
                suffix: b"\r\n",
            },
            State::DataLf => Completion {
                pad: 0,
                suffix: b"\n",
            },
            _ => Completion {
                pad: 0,
                suffix: b"",
            },
        }
    }

    /// Decodes `input`, handing each run of chunk data to `on_data` (sub-slices of `input`).
    pub fn feed(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<Feed, ChunkError> {
        let mut i = 0;
        let mut safe_end = 0;
        while i < input.len() && self.state != State::Done {
            let Some(&b) = input.get(i) else { break };
            match self.state {
                State::SizeStart | State::Size { .. } => {
                    let digits = if let State::Size { digits } = self.state {
                        digits
                    } else {
                        0
                    };
                    if let Some(v) = hex_val(b) {
                        if digits >= MAX_SIZE_DIGITS {
                            return Err(ChunkError::SizeOverflow);
                        }
                        self.size = self.size.checked_mul(16).ok_or(ChunkError::SizeOverflow)?
                            | u64::from(v);
                        self.state = State::Size { digits: digits + 1 };
                    } else if digits == 0 {
                        return Err(ChunkError::BadSize);
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        self.state = State::Ext { len: 1 };
                    } else {
                        return Err(ChunkError::BadSize);
                    }
                    i += 1;
                }
                State::Ext { len } => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' || b < 0x20 && b != b'\t' || b == 0x7f {
                        return Err(ChunkError::BadSize);
                    } else if len >= CHUNK_EXT_LIMIT {
                        return Err(ChunkError::ExtensionTooLong);
                    } else {
                        self.state = State::Ext { len: len + 1 };
                    }
                    i += 1;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadSize);
                    }
                    i += 1;
                    if self.size == 0 {
                        self.state = State::TrailerLineStart;
                    } else {
                        self.state = State::Data;
                    }
                }
                State::Data => {
                    let avail = (input.len() - i) as u64;
                    let take = avail.min(self.size) as usize;
                    if let Some(data) = input.get(i..i + take) {
                        on_data(data);
                    }
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::BadDataEnd);
                    }
                    self.state = State::DataLf;
                    i += 1;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadDataEnd);
                    }
                    self.state = State::SizeStart;
                    i += 1;
                }
                State::TrailerLineStart | State::TrailerLine => {
                    let empty = self.state == State::TrailerLineStart;
                    if b == b'\r' {
                        self.state = State::TrailerLf { empty };
                    } else if b == b'\n' {
                        return Err(ChunkError::BadTrailer);
                    } else {
                        self.state = State::TrailerLine;
                    }
                    self.count_trailer()?;
                    i += 1;
                }
                State::TrailerLf { empty } => {
                    if b != b'\n' {
                        return Err(ChunkError::BadTrailer);
                    }
                    self.count_trailer()?;
                    i += 1;
                    self.state = if empty {
                        State::Done
                    } else {
                        State::TrailerLineStart
                    };
                }
                State::Done => break,
            }
            if self.is_safe() {
                safe_end = i;
            }
        }
        Ok(Feed {
            consumed: i,
            safe_end,
            done: self.state == State::Done,
        })
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > TRAILER_LIMIT {
            return Err(ChunkError::TrailerTooLong);
        }
        Ok(())
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Writes the framing line of one outgoing chunk of `len` bytes.
pub fn chunk_header(len: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(out, "{len:x}\r\n");
}

/// The last-chunk and empty trailer section that end a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns (data, consumed, forwarded bytes).
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, Vec<u8>), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut forwarded = Vec::new();
        let mut held = Vec::new();
        let mut pos = 0;
        while pos < input.len() && !d.is_done() {
            let end = (pos + step).min(input.len());
            let piece = &input[pos..end];
            let f = d.feed(piece, |s| data.extend_from_slice(s))?;
            if f.safe_end > 0 {
                forwarded.append(&mut held);
            }
            forwarded.extend_from_slice(&piece[..f.safe_end]);
            held.extend_from_slice(&piece[f.safe_end..f.consumed]);
            pos += f.consumed;
            if f.done {
                break;
            }
        }
        Ok((data, pos, forwarded))
    }

    const BODY: &[u8] =
        b"5\r\nhello\r\n1;ext=1\r\n \r\nB\r\nworld, more\r\n0\r\nX-T: 1\r\n\r\nNEXT";

    #[test]
    fn decodes_at_every_split() {
        for step in 1..BODY.len() {
            let (data, consumed, forwarded) = decode_in_steps(BODY, step).unwrap();
            assert_eq!(data, b"hello world, more", "step {step}");
            assert_eq!(consumed, BODY.len() - 4, "step {step}");
            // Everything up to the last chunk is forwarded; the last chunk and trailers are held.
            let last = BODY.windows(3).position(|w| w == b"0\r\n").unwrap();
            assert_eq!(forwarded, &BODY[..last], "step {step}");
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        for bad in [
            &b"z\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"11111111111111111\r\n",
            b"5\nhello",
            b"5\r\nhelloXX",
        ] {
            let mut d = ChunkedDecoder::new();
            assert!(
                d.feed(bad, |_| {}).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn extension_limit_at_and_past() {
        let mut ok = b"1;".to_vec();
        ok.extend(std::iter::repeat_n(b'a', CHUNK_EXT_LIMIT - 1));
        ok.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        let mut d = ChunkedDecoder::new();
        assert!(d.feed(&ok, |_| {}).unwrap().done);
        let mut over = b"1;".to_vec();
        over.extend(std::iter::repeat_n(b'a', CHUNK_EXT_LIMIT));
        over.extend_from_slice(b"\r\n");
        let mut d = ChunkedDecoder::new();
        assert_eq!(
            d.feed(&over, |_| {}).unwrap_err(),
            ChunkError::ExtensionTooLong
        );
    }

    #[test]
    fn completion_finishes_open_chunks() {
        let mut d = ChunkedDecoder::new();
        d.feed(b"a\r\nabc", |_| {}).unwrap();
        assert_eq!(
            d.completion(),
            Completion {
                pad: 7,
                suffix: b"\r\n"
            }
        );
        d.feed(b"defghij\r", |_| {}).unwrap();
        assert_eq!(
            d.completion(),
            Completion {
                pad: 0,
                suffix: b"\n"
            }
        );
        d.feed(b"\n1", |_| {}).unwrap();
        // Mid size line: the "1" was held back, so the client is at a boundary.
        assert_eq!(
            d.completion(),
            Completion {
                pad: 0,
                suffix: b""
            }
        );
    }
}
