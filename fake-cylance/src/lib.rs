//! Test support for cylance-logs, shared by its tests (`tests/it`), its
//! benchmark (`benches/poller`) and its demo (`examples/demo.rs`):
//!
//! - [`FakeApi`]: a strict fake of the Cylance PROTECT API on loopback ([`fake`]);
//! - [`sample`]: realistic items for every endpoint, and a small varied tenant;
//! - [`TestEnv`]: a fresh directory and fake tenant, and a runner for the real
//!   binary that checks every run for leaked secrets ([`env`](mod@env));
//! - [`scenarios`]: the benchmark's scenarios, also run at tiny sizes by a test;
//! - [`time`]: the API's time forms.
//!
//! The crate never names the cylance-logs binary itself: Cargo tells only the
//! root package's tests and benches where it is (`CARGO_BIN_EXE_cylance-logs`),
//! so they pass its path to [`TestEnv::new`].

#![forbid(unsafe_code)]

pub mod env;
pub mod fake;
pub mod sample;
pub mod scenarios;
pub mod time;

pub use env::{
    Outcome, TestEnv, assert_each_once, count_type, detections, devices, memory_protection_events,
    read_lines, require_tool, set_mode, skip, threats,
};
pub use fake::{Credentials, FakeApi, Fault, Recorded};
pub use sample::{
    detection, device, memory_protection_event, sample_tenant, threat, threat_device,
};
pub use time::{detection_time, minutes_ago, threat_time};
