//! `cylance-logs check`: configuration, credentials and one page per source.
//!
//! Writes nothing (no state directory, no lock, no output), so it is safe to
//! run beside the timer. Says per step what worked and what did not, on
//! standard output: the configuration, the access token, then the first page
//! of each source (a source that fails does not stop the others: an operator
//! fixing privileges wants to see all that are missing). Fails with the exit
//! code and the one-line error a poll would give for the first failed step.

use crate::api::ApiClient;
use crate::config::{ApiSettings, RunSettings};
use crate::control::RunControl;
use crate::error::{Classify, ExitKind};
use crate::retry::RetryPolicy;
use crate::timefmt::display;
use anyhow::Result;
use std::io::Write;

/// One step's line; a closed standard output is an I/O failure (74), not a panic.
fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .classify(ExitKind::Io, "writing to standard output")
}

/// The configuration step, when resolving the settings failed; the error
/// itself is then reported as any command's would be.
pub fn configuration_failed(err: &anyhow::Error) {
    // A failure to say so is no reason to hide the error that follows.
    let _ = say(&format!("configuration: FAILED: {err:#}"));
}

pub fn check(
    api: ApiSettings,
    settings: &RunSettings,
    retry: RetryPolicy,
    control: RunControl,
) -> Result<()> {
    let names: Vec<&str> = settings.sources.iter().map(|kind| kind.name).collect();
    say(&format!(
        "configuration: ok, API {} (tenant {}, app {}), sources {}",
        api.base_url,
        api.tenant_id,
        api.app_id,
        names.join(", ")
    ))?;
    let client = ApiClient::new(api, retry, settings.max_rps, control)?;
    if let Err(err) = client.authenticate() {
        say(&format!("token: FAILED: {err:#}"))?;
        for name in &names {
            say(&format!("{name}: not tried, no access token"))?;
        }
        say("check failed: no access token; nothing was written")?;
        return Err(err);
    }
    say("token: ok, the API gave an access token for these credentials")?;
    let (mut failed, mut first_failure) = (0, None);
    for &kind in &settings.sources {
        match client.fetch_page(&kind.list_request(&[]), 1) {
            Ok(page) => {
                // A snapshot's items have no time of their own.
                let newest = if kind.is_snapshot() {
                    String::new()
                } else {
                    let newest = page
                        .items()
                        .filter_map(|item| kind.meta(item).ok())
                        .map(|meta| meta.time)
                        .max();
                    format!(
                        ", newest {} {}",
                        kind.time_field(),
                        newest.map_or("(none)".to_string(), display)
                    )
                };
                say(&format!(
                    "{} ({}): ok, {} items in all{newest}",
                    kind.name,
                    kind.privilege,
                    page.total_number_of_items
                        .map_or("an unknown number of".to_string(), |n| n.to_string()),
                ))?;
            }
            Err(err) => {
                say(&format!(
                    "{} ({}): FAILED: {err:#}",
                    kind.name, kind.privilege
                ))?;
                failed += 1;
                first_failure.get_or_insert(err);
            }
        }
    }
    match first_failure {
        None => say("check passed"),
        Some(err) => {
            say(&format!(
                "check failed: {failed} of {} sources failed (see above); nothing was written",
                names.len()
            ))?;
            Err(err)
        }
    }
}
