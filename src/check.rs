//! `cylance-logs check`: configuration, credentials, one page per source and
//! one call of each lookup `--enrich` has on.
//!
//! Writes nothing (no state directory, no lock, no output), so it is safe to
//! run beside the timer. Says per step what worked and what did not, on
//! standard output: the configuration, the access token, then the first page
//! of each source (a source that fails does not stop the others: an operator
//! fixing privileges wants to see all that are missing), then each lookup of
//! an enabled source with the privilege it needs, tried on the first item
//! its source's page gave. Fails with the exit
//! code and the one-line error a poll would give for the first failed step.

use crate::api::ApiClient;
use crate::config::{ApiSettings, RunSettings};
use crate::control::RunControl;
use crate::error::{Classify, ExitKind};
use crate::lookup::{Ask, Lookups};
use crate::pager::Slots;
use crate::retry::RetryPolicy;
use crate::timefmt::display;
use anyhow::Result;
use std::io::Write;
use std::sync::Arc;

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
    let client = ApiClient::new(api, retry, settings.max_rps, control.clone())?;
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
    // Per source, the first item's key and time, for its lookup; `None` when
    // its page failed.
    let mut firsts = Vec::new();
    for &kind in &settings.sources {
        match client.fetch_page(&kind.list_request(&[]), 1) {
            Ok(page) => {
                let first = page.items().next().map(|item| {
                    kind.scan(item, &mut Vec::new())
                        .map(|scan| (scan.id.into_owned(), scan.meta.time))
                });
                firsts.push((kind, Some(first)));
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
                firsts.push((kind, None));
            }
        }
    }
    let client = Arc::new(client);
    let lookups = Lookups::new(Arc::clone(&client), control, Arc::new(Slots::new(1)), 1);
    let mut lookups_failed = 0;
    for (kind, first) in firsts {
        let Some(lookup) = kind.lookup.filter(|l| settings.enrich.contains(l)) else {
            continue;
        };
        let head = format!("{} lookup (needs {})", lookup.name(), lookup.privilege());
        let (id, time) = match first {
            None => {
                say(&format!("{head}: not tried, the {} list failed", kind.name))?;
                continue;
            }
            Some(None) => {
                say(&format!("{head}: not tried: no item to look up"))?;
                continue;
            }
            Some(Some(Err(why))) => {
                say(&format!(
                    "{head}: not tried: the first {} item cannot be read ({why})",
                    kind.name
                ))?;
                continue;
            }
            Some(Some(Ok(first))) => first,
        };
        match lookups.answers(lookup, kind, &[Ask { id: &id, time }]) {
            Ok(_) => say(&format!(
                "{head}: ok, GET answered for {} {}",
                kind.name,
                crate::untrusted::shown(&id)
            ))?,
            Err(err) => {
                say(&format!("{head}: FAILED: {err:#}"))?;
                lookups_failed += 1;
                first_failure.get_or_insert(err);
            }
        }
    }
    match first_failure {
        None => say("check passed"),
        Some(err) => {
            let lookups = if lookups_failed > 0 {
                format!(", {lookups_failed} lookups failed")
            } else {
                String::new()
            };
            say(&format!(
                "check failed: {failed} of {} sources failed{lookups} (see above); nothing was \
                 written",
                names.len()
            ))?;
            Err(err)
        }
    }
}
