//! The integration tests: the real binary against the fake API.
//!
//! One test binary (faster to build and link than one per file); each module
//! names the behaviour its tests protect.

#[path = "../support/mod.rs"]
mod support;
// The benchmark's scenarios, for their smoke test (which uses only some of
// them); they name the fake as a sibling module.
#[path = "../../benches/poller/scenarios.rs"]
#[allow(dead_code)]
mod scenarios;
use support::fake_api;

mod backfill;
mod bad_items;
mod bench_smoke;
mod commands;
mod config;
mod crash;
mod dns;
mod exit_codes;
mod faults;
mod hostile;
mod local_state;
mod man;
mod pacing;
mod poll;
mod siem;
mod tls;
mod units;
