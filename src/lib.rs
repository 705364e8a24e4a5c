//! cylance-logs: poll Cylance PROTECT threats, detections, memory protection and
//! the device inventory into a JSON-lines file, exactly once.
//!
//! This file only parses and dispatches: `main_with_args` parses the flags
//! (`cli`), resolves the settings of the one command being run (`config`,
//! each with its origin; `-v` shows them), calls the command, and turns a
//! failure into its exit code (`error`).
//!
//! The flow of a run, one module each: `lock` (one run per state dir) →
//! `checkpoint` (what is written) → `output` (crash recovery, locked
//! appends) → `run` (per source: window or snapshot, slices, dedupe,
//! commits) → `pager` (the pages of one window, in order) and `lookup` (what
//! a new line carries from a request of its own: a threat's devices, a
//! detection's details) → `api` (auth, requests, pacing) with `retry` (the
//! retry policy) and `control` (signals, run time). A page's items become
//! lines through `sources` (what each source says about itself, and the list
//! of all of them; one small module per source). `rejected` keeps the items
//! that cannot be placed (the dead-letter file); `untrusted` escapes and caps
//! every text from the server before it is shown or stored. `metrics` and
//! `progress` are what operators watch; `check` and `status` are the two
//! commands that write nothing.

#![forbid(unsafe_code)]

// Private unless the binary's tests need them: the man-page generator reads
// the clap definition (`cli`) and the exit codes (`error::ExitKind`).
// Everything else is private, so the compiler reports dead code.
mod api;
mod check;
mod checkpoint;
pub mod cli;
mod config;
mod control;
pub mod error;
mod lock;
mod log;
mod lookup;
mod metrics;
mod output;
mod pager;
mod progress;
mod rejected;
mod retry;
mod run;
mod sources;
mod status;
mod timefmt;
mod untrusted;

// The log macros, as `crate::warn!(...)` and the like in every module.
use log::{debug, error, info, trace, warn};

use anyhow::Result;
use clap::FromArgMatches;
use cli::Cli;
use config::{CommandSettings, Settings};
use error::{ExitKind, exit_code_of};
use std::ffi::OsString;
use std::process::ExitCode;

/// Runs the program with these arguments (`args[0]` is the program name) and
/// the process environment; returns the exit code. `main` is just this.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let parsed = cli::command()
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(err.exit_code() as u8);
        }
    };
    log::init(cli.options.verbose);
    exit_code_of_run(|| run(&cli))
}

/// The exit code of a command, with its error logged. A panic is a bug:
/// like any unexpected failure it exits 70 with a message, not Rust's 101
/// (the standard hook has printed where). What was committed stays, as
/// after a kill.
fn exit_code_of_run(run: impl FnOnce() -> Result<ExitCode>) -> ExitCode {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(code)) => code,
        Ok(Err(err)) => {
            crate::error!("{err:#}");
            ExitCode::from(exit_code_of(&err))
        }
        Err(_) => {
            crate::error!(
                "stopped by an internal error (a bug; the line above says where); what was \
                 committed is kept, the next run goes on from there"
            );
            ExitCode::from(error::ExitKind::Software.code())
        }
    }
}

/// Resolves the command's settings, then runs it.
fn run(cli: &Cli) -> Result<ExitCode> {
    let settings = Settings::resolve(cli, &config::process_env).inspect_err(|err| {
        if matches!(cli.command, cli::Command::Check) {
            check::configuration_failed(err);
        }
    })?;
    settings.log();
    match settings.command {
        CommandSettings::Poll {
            api,
            store,
            run,
            retry,
        } => {
            let control = control::RunControl::install(run.max_runtime)?;
            run::run_job(run::Job::Poll, api, store, run, retry, control)?;
        }
        CommandSettings::Backfill {
            since,
            until,
            api,
            store,
            run,
            retry,
        } => {
            let control = control::RunControl::install(run.max_runtime)?;
            let job = run::Job::Backfill { since, until };
            run::run_job(job, api, store, run, retry, control)?;
        }
        CommandSettings::Check { api, run, retry } => {
            let control = control::RunControl::install(run.max_runtime)?;
            check::check(api, &run, retry, control)?;
        }
        CommandSettings::Status {
            store,
            run,
            json,
            max_age,
        } => {
            if !status::show(&store, json, max_age, &run)? {
                return Ok(ExitCode::from(ExitKind::Critical.code()));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_exits_70_and_an_error_its_own_code() {
        assert_eq!(exit_code_of_run(|| panic!("a bug")), ExitCode::from(70));
        let failed = || Err(error::fail(error::ExitKind::Protocol, "odd answer"));
        assert_eq!(exit_code_of_run(failed), ExitCode::from(76));
        assert_eq!(
            exit_code_of_run(|| Ok(ExitCode::from(0))),
            ExitCode::from(0)
        );
    }
}
