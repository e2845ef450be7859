//! The load-test side of codex-lb: a mock ChatGPT Codex upstream (`mock`) that the gateway's
//! integration tests and the load harness point the gateway at, and the load harness itself
//! (`harness`, run as the `loadtest` binary).
//!
//! This crate never links the gateway: it is an independent reading of PROTOCOL.md, so that a
//! misreading in one side shows up as a test failure instead of cancelling out.

pub mod harness;
pub mod mock;
