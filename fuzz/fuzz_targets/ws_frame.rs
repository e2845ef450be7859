//! `ws::MessageReader` (frame decoder, reassembly, UTF-8 checks, permessage-deflate) on arbitrary
//! bytes, fed whole, split in two, and one byte at a time.
//!
//! Input layout: byte 0 is the configuration (bit 0: permessage-deflate negotiated; bit 1: no
//! context takeover either way; bit 2: small limits, 64-byte frames and 200-byte messages, so
//! the 1009 paths are reached; bit 3: read as the client, i.e. the peer is a server and must not
//! mask), bytes 1-2 the split position (big-endian, modulo the body length + 1), the rest the
//! body. With bit 3 clear the reader is the server role the gateway plays towards the Codex CLI.
//!
//! Invariants checked (beyond "never panics"):
//! - per feed: `consumed <= input`, and a feed that hands out no message consumed everything;
//! - whole vs split vs byte by byte: the same messages in the same order and the same error (or
//!   none), and a reader that failed keeps returning that error;
//! - every message respects the protocol: control payloads fit 125 bytes, data messages fit the
//!   message cap, nothing is handed out after a close;
//! - every error maps to a close code the writer may send;
//! - the messages survive a round trip: written by a `MessageWriter` of the opposite role with
//!   the same compression and read back by a fresh reader, they come out identical.

#![no_main]

use codex_lb::http::ws::{
    DeflateConfig, Message, MessageReader, MessageWriter, OutFrame, Role, WsError, WsLimits,
};
use libfuzzer_sys::fuzz_target;

/// Byte-at-a-time feeding costs a call per byte; beyond this the whole/split pair suffices.
const BYTEWISE_MAX: usize = 1 << 16;

#[derive(Clone, Copy)]
struct Config {
    role: Role,
    deflate: Option<DeflateConfig>,
    limits: WsLimits,
}

impl Config {
    fn reader(&self) -> MessageReader {
        MessageReader::new(self.role, self.deflate, self.limits)
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    messages: Vec<Message>,
    error: Option<WsError>,
}

/// Feeds `pieces` in turn, each until it is used up, stopping at the first error.
fn read(config: &Config, pieces: &[&[u8]]) -> Outcome {
    let mut reader = config.reader();
    let mut messages = Vec::new();
    for piece in pieces {
        let mut rest = *piece;
        while !rest.is_empty() {
            match reader.feed(rest) {
                Ok(r) => {
                    assert!(r.consumed <= rest.len(), "consumed past the input");
                    assert!(
                        r.message.is_some() || r.consumed == rest.len(),
                        "stopped early without a message"
                    );
                    rest = &rest[r.consumed..];
                    messages.extend(r.message);
                }
                Err(e) => {
                    assert_eq!(
                        reader.feed(b"\x81").err(),
                        Some(e.clone()),
                        "error not kept"
                    );
                    return Outcome {
                        messages,
                        error: Some(e),
                    };
                }
            }
        }
    }
    Outcome {
        messages,
        error: None,
    }
}

fn check_messages(config: &Config, messages: &[Message]) {
    for (i, m) in messages.iter().enumerate() {
        match m {
            Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125),
            Message::Text(t) => assert!(t.len() <= config.limits.max_message_bytes),
            Message::Binary(b) => assert!(b.len() <= config.limits.max_message_bytes),
            Message::Close(c) => {
                assert_eq!(i + 1, messages.len(), "message after a close");
                if let Some(c) = c {
                    assert!(c.code.is_valid_on_wire());
                    assert!(c.reason.len() <= 123);
                }
            }
        }
    }
}

/// Writes the messages as the peer would and reads them back.
fn round_trip(config: &Config, messages: &[Message]) {
    let peer_role = match config.role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    };
    let mut writer = MessageWriter::new(peer_role, config.deflate);
    let mut wire = Vec::new();
    for m in messages {
        let frame: OutFrame = match m.clone() {
            Message::Text(t) => writer.text(t),
            Message::Binary(b) => writer.binary(b),
            Message::Ping(p) => writer.ping(&p),
            Message::Pong(p) => writer.pong(&p),
            Message::Close(c) => writer.close(c.as_ref()),
        }
        .unwrap_or_else(|e| panic!("writer refused {m:?}: {e}"));
        wire.extend_from_slice(frame.head.as_bytes());
        wire.extend_from_slice(&frame.payload);
    }
    // Compressed data may legitimately grow past the wire caps; read back without them.
    let unlimited = Config {
        limits: WsLimits {
            max_frame_bytes: usize::MAX >> 1,
            max_message_bytes: usize::MAX >> 1,
        },
        ..*config
    };
    let back = read(&unlimited, &[&wire]);
    assert_eq!(back.error, None, "written messages do not read back");
    assert_eq!(back.messages, messages, "round trip changed the messages");
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (split, body) = match rest {
        [hi, lo, body @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), body),
        _ => (0, &[][..]),
    };
    let split = split % (body.len() + 1);
    let no_takeover = flags & 2 != 0;
    let config = Config {
        role: if flags & 8 != 0 {
            Role::Client
        } else {
            Role::Server
        },
        deflate: (flags & 1 != 0).then_some(DeflateConfig {
            server_no_context_takeover: no_takeover,
            client_no_context_takeover: no_takeover,
        }),
        limits: if flags & 4 != 0 {
            WsLimits {
                max_frame_bytes: 64,
                max_message_bytes: 200,
            }
        } else {
            WsLimits::default()
        },
    };

    let whole = read(&config, &[body]);
    let (a, b) = body.split_at(split);
    assert_eq!(
        read(&config, &[a, b]),
        whole,
        "split at {split} changed the result"
    );
    if body.len() <= BYTEWISE_MAX {
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(
            read(&config, &bytes),
            whole,
            "byte-by-byte feeding changed the result"
        );
    }

    check_messages(&config, &whole.messages);
    if let Some(e) = &whole.error {
        assert!(
            e.close_code().is_valid_on_wire(),
            "{e} has no sendable close code"
        );
    }
    round_trip(&config, &whole.messages);
});
