//! codex-lb: a thread-per-core gateway that pools ChatGPT (Codex) accounts behind one endpoint.

pub mod http;
