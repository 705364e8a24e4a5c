//! cylance-logs: poll Cylance PROTECT threats and detections into a JSON-lines
//! file, exactly once.
//!
//! The flow of a run, one module each: `cli` (flags as typed) → `config`
//! (resolved settings) → `lock` (one run per state dir) → `checkpoint` (what is
//! written) → `output` (crash recovery, locked appends) → `run` (windows,
//! slices, dedupe, commits) over `sources` (what differs per endpoint) →
//! `api` (auth, pages, pacing) with `retry` (the retry policy) and `control`
//! (signals, run time) → `metrics` and `progress` (what operators watch).
//! `check` and `status` are the two commands that write nothing. `untrusted`
//! escapes and caps every text from the server before it is shown or stored. `error` maps
//! every failure to one exit code, here in `main_with_args`.

#![forbid(unsafe_code)]

pub mod api;
pub mod check;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod control;
pub mod error;
pub mod lock;
pub mod metrics;
#[macro_use]
pub mod log;
pub mod output;
pub mod progress;
pub mod retry;
pub mod run;
pub mod sources;
pub mod status;
pub mod timefmt;
pub mod untrusted;

use anyhow::Result;
use clap::Parser;
use cli::{Cli, Command};
use config::Resolver;
use error::{ExitKind, exit_code_of, fail};
use retry::RetryPolicy;
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

/// Poll's default `--max-runtime`: a little under the timer's minute.
const POLL_MAX_RUNTIME: Duration = Duration::from_secs(50);

/// Runs the program with these arguments (`args[0]` is the program name) and
/// the process environment; returns the exit code. `main` is just this.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(err.exit_code() as u8);
        }
    };
    log::init(cli.options.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            crate::error!("{err:#}");
            ExitCode::from(exit_code_of(&err))
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let env = config::process_env;
    let resolver = Resolver::new(&cli.options, &env);
    let retry = RetryPolicy::new(backoff_base(&env)?);
    match cli.command {
        Command::Poll => {
            let (api, store, settings) = (
                resolver.api()?,
                resolver.store()?,
                resolver.run(Some(POLL_MAX_RUNTIME))?,
            );
            let control = control::RunControl::install(settings.max_runtime)?;
            run::run_job(run::Job::Poll, api, store, settings, retry, control)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill(args) => {
            let now = chrono::Utc::now();
            let parse = |flag: &str, text: &str| {
                timefmt::parse_user_time(text, now)
                    .map_err(|why| fail(ExitKind::Usage, format!("{flag}: {why}")))
            };
            let since = parse("--since", &args.since)?;
            let until = args
                .until
                .as_deref()
                .map(|u| parse("--until", u))
                .transpose()?;
            if until.is_some_and(|until| until <= since) {
                return Err(fail(ExitKind::Usage, "--until must be later than --since"));
            }
            let (api, store, settings) = (resolver.api()?, resolver.store()?, resolver.run(None)?);
            let control = control::RunControl::install(settings.max_runtime)?;
            run::run_job(
                run::Job::Backfill { since, until },
                api,
                store,
                settings,
                retry,
                control,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            let (api, settings) = (resolver.api()?, resolver.run(Some(POLL_MAX_RUNTIME))?);
            let control = control::RunControl::install(settings.max_runtime)?;
            check::check(api, &settings, retry, control)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => {
            let max_age = args
                .max_age
                .as_deref()
                .map(|text| {
                    timefmt::parse_duration(text)
                        .map_err(|why| fail(ExitKind::Usage, format!("--max-age: {why}")))
                })
                .transpose()?;
            let settings = resolver.run(None)?;
            let healthy = status::show(&resolver.store()?, args.json, max_age, &settings.sources)?;
            Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(ExitKind::Critical.code())
            })
        }
    }
}

/// First backoff step (default 2s, at most 60s, the longest step). An
/// environment-only knob: tests shorten it, and an operator may lengthen it
/// for a fragile proxy.
fn backoff_base(env: config::EnvLookup) -> Result<Duration> {
    const MAX: Duration = Duration::from_secs(60);
    let Some(value) = env("CYLANCE_LOGS_BACKOFF_BASE") else {
        return Ok(Duration::from_secs(2));
    };
    let text = value.to_string_lossy();
    let base = match text.strip_suffix("ms") {
        Some(ms) => ms
            .parse()
            .map(Duration::from_millis)
            .map_err(|_| format!("'{text}' is not a duration")),
        None => timefmt::parse_duration(&text),
    }
    .map_err(|why| {
        fail(
            ExitKind::Config,
            format!("$CYLANCE_LOGS_BACKOFF_BASE: {why}"),
        )
    })?;
    if base > MAX {
        return Err(fail(
            ExitKind::Config,
            format!("$CYLANCE_LOGS_BACKOFF_BASE: '{text}' is more than the largest accepted, 1m"),
        ));
    }
    Ok(base)
}
