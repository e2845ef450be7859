//! codex-lb: a thread-per-core gateway that pools ChatGPT (Codex) accounts behind one endpoint.
//!
//! Hot path (per worker, no locks, no blocking): `cores` → `proxy` → `upstream`, with `http` as the
//! pure codec. Control plane (own threads, may block): `control` (accounts, snapshots), `ledger`
//! (sled writer), `login` (sign-in flows), `store`. `dashboard` answers the admin API by asking the control plane.

pub mod access;
pub mod accounts;
pub mod alloc;
pub mod cli;
pub mod config;
pub mod control;
pub mod cores;
pub mod dashboard;
pub mod http;
pub mod keys;
pub mod ledger;
pub mod login;
pub mod metrics;
pub mod openai;
pub mod pricing;
pub mod proxy;
pub mod server_tls;
pub mod shared;
pub mod store;
pub mod upstream;
pub mod worker;

pub use cores::{Gateway, ShutdownHandle, StartError};
