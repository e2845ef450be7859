//! The OpenAI-compatible surface that is not the Responses API itself: pure translations between
//! what OpenAI clients send and the Responses requests and SSE events the ChatGPT Codex backend
//! speaks (PROTOCOL.md §7).
//!
//! Everything here is a pure function or a small state machine over `serde_json` values: no IO,
//! no clock, no shared state. The routes in `proxy` own the sockets and call into these modules.

pub mod chat;
