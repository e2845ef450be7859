//! Incremental decoder for HTTP/1.1 chunked bodies (RFC 9112 section 7.1), fed the bytes of
//! whatever reads the socket returned.
//!
//! The harness must see data at the moment it arrives (time to first delta, gaps between
//! events), so the decoder hands out borrowed slices of the input as it goes instead of
//! collecting a body. Chunk extensions and trailers are skipped; a bare LF is accepted where
//! CRLF is expected, as most servers' readers do.

/// Why a chunked body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// The size line has no hex digits, a stray byte, or a size past 16 hex digits.
    BadSize,
    /// Chunk data was not followed by CRLF.
    BadDelimiter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    /// Skipping a chunk extension up to the end of the size line.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty one.
    Trailer,
    Done,
}

/// One chunked body in progress.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u32,
    /// Bytes of the current trailer line other than CR.
    trailer_line: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size,
            size: 0,
            digits: 0,
            trailer_line: 0,
        }
    }
}

impl Chunked {
    /// Whether the terminating chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, calling `data` with each run of body bytes. Returns how many bytes of
    /// `input` belong to this body (less than its length only once the body is done).
    pub fn feed<'a>(
        &mut self,
        input: &'a [u8],
        mut data: impl FnMut(&'a [u8]),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok(i),
                State::Size => {
                    if let Some(v) = hex_value(b) {
                        self.digits += 1;
                        if self.digits > 16 {
                            return Err(ChunkError::BadSize);
                        }
                        self.size = (self.size << 4) | u64::from(v);
                    } else if self.digits == 0 {
                        return Err(ChunkError::BadSize);
                    } else {
                        match b {
                            b';' | b' ' | b'\t' => self.state = State::Extension,
                            b'\r' => self.state = State::SizeLf,
                            b'\n' => self.end_size_line(),
                            _ => return Err(ChunkError::BadSize),
                        }
                    }
                    i += 1;
                }
                State::Extension => {
                    if b == b'\n' {
                        self.end_size_line();
                    }
                    i += 1;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadSize);
                    }
                    self.end_size_line();
                    i += 1;
                }
                State::Data => {
                    let take =
                        (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    data(&input[i..i + take]);
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                }
                State::DataCr => {
                    match b {
                        b'\r' => self.state = State::DataLf,
                        b'\n' => self.next_chunk(),
                        _ => return Err(ChunkError::BadDelimiter),
                    }
                    i += 1;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadDelimiter);
                    }
                    self.next_chunk();
                    i += 1;
                }
                State::Trailer => {
                    match b {
                        b'\n' if self.trailer_line == 0 => self.state = State::Done,
                        b'\n' => self.trailer_line = 0,
                        b'\r' => {}
                        _ => self.trailer_line += 1,
                    }
                    i += 1;
                }
            }
        }
        Ok(i)
    }

    fn end_size_line(&mut self) {
        self.state = if self.size == 0 {
            State::Trailer
        } else {
            State::Data
        };
    }

    fn next_chunk(&mut self) {
        self.state = State::Size;
        self.size = 0;
        self.digits = 0;
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` split into pieces of `step` bytes; returns (body, consumed, done).
    fn decode(wire: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = Chunked::default();
        let mut body = Vec::new();
        let mut consumed = 0;
        for piece in wire.chunks(step) {
            let n = d.feed(piece, |s| body.extend_from_slice(s))?;
            consumed += n;
            if n < piece.len() {
                break;
            }
        }
        Ok((body, consumed, d.is_done()))
    }

    #[test]
    fn decodes_at_every_split() {
        let wire =
            b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for step in 1..=wire.len() {
            let (body, consumed, done) = decode(wire, step).unwrap();
            assert_eq!(body, b"hello 0123456789", "step {step}");
            assert!(done);
            assert_eq!(&wire[consumed..], b"NEXT", "step {step}");
        }
    }

    #[test]
    fn accepts_bare_lf_and_reports_unfinished() {
        let (body, _, done) = decode(b"3\nabc\n0\n\n", 2).unwrap();
        assert_eq!((body.as_slice(), done), (&b"abc"[..], true));
        let (body, _, done) = decode(b"3\r\nabc\r\n", 4).unwrap();
        assert_eq!((body.as_slice(), done), (&b"abc"[..], false));
    }

    #[test]
    fn rejects_bad_framing() {
        assert_eq!(decode(b"zz\r\n", 1), Err(ChunkError::BadSize));
        assert_eq!(decode(b"\r\n", 1), Err(ChunkError::BadSize));
        assert_eq!(decode(b"2\r\nabX", 1), Err(ChunkError::BadDelimiter));
        assert_eq!(
            decode(b"11111111111111111\r\n", 3),
            Err(ChunkError::BadSize)
        );
    }
}
