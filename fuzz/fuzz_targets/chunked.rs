//! `ChunkedDecoder` on an arbitrary body, fed whole and fed in pieces (see `common::split_input`
//! for how the first bytes choose the pieces).
//!
//! Invariants checked (beyond "never panics"):
//! - per feed: `safe_end <= consumed <= piece.len()`, and a feed that is not `done` consumed its
//!   whole piece; `done` agrees with `is_done()`; the data handed out is no more than the bytes
//!   consumed;
//! - one piece vs pieces: the same data bytes (including those handed out before an error), the
//!   same outcome (done with the same total consumed, needs more, or the same error);
//! - the relay's view (src/proxy/relay.rs): what it forwarded (held bytes released when a later
//!   feed reaches a safe point), then the completion captured before the failing or last feed
//!   (`pad` filler bytes and `suffix`), one injected chunk and `LAST_CHUNK` form a complete,
//!   valid chunked body whose data is exactly the forwarded data, the filler and the injected
//!   chunk.

#![no_main]

mod common;

use codex_lb::http::chunked::{chunk_header, ChunkError, ChunkedDecoder, LAST_CHUNK};
use libfuzzer_sys::fuzz_target;

/// Larger completions are not rebuilt here (the relay also gives up past a cap).
const MAX_PAD: u64 = 1 << 16;
const INJECTED: &[u8] = b"event: response.failed\ndata: {}\n\n";

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done { consumed: usize },
    NeedMore,
    Failed(ChunkError),
}

fuzz_target!(|data: &[u8]| {
    let (body, pieces) = common::split_input(data);

    // Whole.
    let mut whole = ChunkedDecoder::new();
    let mut whole_data = Vec::new();
    let whole_outcome = match whole.feed(body, |d| whole_data.extend_from_slice(d)) {
        Ok(f) => {
            check_feed(body, &f, &whole);
            assert!(whole_data.len() <= f.consumed);
            if f.done {
                Outcome::Done {
                    consumed: f.consumed,
                }
            } else {
                Outcome::NeedMore
            }
        }
        Err(e) => Outcome::Failed(e),
    };

    // In pieces, the way the relay does it.
    let mut dec = ChunkedDecoder::new();
    let mut all_data = Vec::new(); // every data byte handed out, failing feed included
    let mut forwarded = Vec::new(); // bytes a client has been sent
    let mut forwarded_data = Vec::new(); // data bytes inside `forwarded`'s feeds
    let mut held = Vec::new();
    let mut total = 0usize;
    let mut completion = dec.completion();
    let mut outcome = Outcome::NeedMore;
    for piece in &pieces {
        completion = dec.completion();
        let mut piece_data = Vec::new();
        match dec.feed(piece, |d| piece_data.extend_from_slice(d)) {
            Ok(f) => {
                check_feed(piece, &f, &dec);
                assert!(piece_data.len() <= f.consumed);
                all_data.extend_from_slice(&piece_data);
                forwarded_data.extend_from_slice(&piece_data);
                if f.safe_end > 0 {
                    forwarded.append(&mut held);
                    forwarded.extend_from_slice(&piece[..f.safe_end]);
                }
                held.extend_from_slice(&piece[f.safe_end..f.consumed]);
                total += f.consumed;
                completion = dec.completion();
                if f.done {
                    outcome = Outcome::Done { consumed: total };
                    break;
                }
            }
            Err(e) => {
                all_data.extend_from_slice(&piece_data);
                outcome = Outcome::Failed(e);
                break;
            }
        }
    }

    assert_eq!(outcome, whole_outcome, "split feeding changed the outcome");
    assert_eq!(all_data, whole_data, "split feeding changed the data");
    if let Outcome::NeedMore = outcome {
        assert_eq!(total, body.len());
    }

    // The relay closes what the client saw: pad, suffix, a failure chunk, the last chunk.
    if completion.pad <= MAX_PAD {
        let mut client = forwarded;
        client.resize(client.len() + completion.pad as usize, b'\n');
        client.extend_from_slice(completion.suffix);
        chunk_header(INJECTED.len(), &mut client);
        client.extend_from_slice(INJECTED);
        client.extend_from_slice(b"\r\n");
        client.extend_from_slice(LAST_CHUNK);

        let mut expected = forwarded_data;
        expected.resize(expected.len() + completion.pad as usize, b'\n');
        expected.extend_from_slice(INJECTED);

        let mut check = ChunkedDecoder::new();
        let mut got = Vec::new();
        let f = check
            .feed(&client, |d| got.extend_from_slice(d))
            .unwrap_or_else(|e| panic!("completed client body is invalid: {e} ({client:?})"));
        assert!(f.done, "completed client body does not end");
        assert_eq!(
            f.consumed,
            client.len(),
            "completed client body has leftovers"
        );
        assert_eq!(got, expected, "completed client body carries other data");
    }
});

fn check_feed(input: &[u8], f: &codex_lb::http::chunked::Feed, dec: &ChunkedDecoder) {
    assert!(
        f.consumed <= input.len(),
        "consumed {} > {}",
        f.consumed,
        input.len()
    );
    assert!(
        f.safe_end <= f.consumed,
        "safe_end {} > consumed {}",
        f.safe_end,
        f.consumed
    );
    assert!(
        f.done || f.consumed == input.len(),
        "stopped early without being done"
    );
    assert_eq!(f.done, dec.is_done());
}
