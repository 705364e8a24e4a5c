//! The integration tests: the real binary against the fake API.
//!
//! One test binary (faster to build and link than one per file); each module
//! names the behaviour its tests protect.

mod support;

mod attack;
mod backfill;
mod bad_items;
mod bench_smoke;
mod commands;
mod config;
mod crash;
mod dns;
mod durability;
mod exit_codes;
mod faults;
mod hostile;
mod local_state;
mod lookups;
mod man;
mod pacing;
mod poll;
mod shared_file;
mod siem;
mod sources;
mod tls;
mod units;
