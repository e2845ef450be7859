//! The load harness behind the `loadtest` binary: drives Codex-shaped streaming load at the
//! mock upstream directly, at codex-lb and at nginx (and any other gateway), and reports
//! throughput, latency percentiles, added latency, errors by kind and the target's CPU and
//! memory.
//!
//! Module map: `cli` (flags), `session` (a run or compare, end to end), `setup` (settings and
//! the processes under test), `upstream` (the mock, as a child or over `--upstream`),
//! `gateway` (codex-lb as a child), `nginx` (config and child), `target` (URLs, loopback
//! check), `scenario` and `body` (what is sent), `driver` (closed loop, open loop, hold),
//! `ws` (the `ws` scenario: turns over the Codex WebSocket transport), `client` (one HTTP/1.1
//! exchange), `chunked` and `sse` (response decoding), `live`, `record`, `hist` (what is
//! measured), `procstat` (CPU and RSS from /proc), `limits` (open files), `progress`, `report`
//! (math and tables), `plot` (SVG), `machine`, `ctl` (blocking control calls).

pub mod body;
pub mod chunked;
pub mod cli;
pub mod client;
pub mod ctl;
pub mod driver;
pub mod gateway;
pub mod hist;
pub mod limits;
pub mod live;
pub mod machine;
pub mod nginx;
pub mod plot;
pub mod procstat;
pub mod progress;
pub mod record;
pub mod report;
pub mod scenario;
pub mod session;
pub mod setup;
pub mod sse;
pub mod target;
pub mod upstream;
pub mod ws;
