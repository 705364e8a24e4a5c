//! `cylance-logs status`: the checkpoint, for people or (`--json`) monitoring,
//! and with `--max-age` a Nagios-style freshness check.
//!
//! Reads without taking the run lock: the checkpoint is replaced by rename, so
//! a reader always sees a whole version.
//!
//! With `--max-age` the verdict (`OK: ...` or `CRITICAL: ...`) is the first
//! line, as Nagios shows only that one; the details follow. Every string read
//! from the checkpoint is shown through `untrusted::shown`: an older release
//! stored server messages raw.

use crate::checkpoint::{self, Checkpoint};
use crate::config::StoreSettings;
use crate::error::{ExitKind, fail};
use crate::sources::SourceKind;
use crate::timefmt::{display, display_duration};
use crate::untrusted::{shown, shown_up_to};
use anyhow::Result;
use chrono::Utc;
use std::io::Write;
use std::time::Duration;

/// Prints the status; returns false when `max_age` is given and a source's
/// last success is older (or missing).
pub fn show(
    store: &StoreSettings,
    json: bool,
    max_age: Option<Duration>,
    sources: &[SourceKind],
) -> Result<bool> {
    let path = checkpoint::path_in(&store.state_dir);
    let rejected_path = crate::run::rejected_path(&store.state_dir);
    let checkpoint = Checkpoint::load(&path)?;
    let stale = max_age.map(|age| stale_sources(checkpoint.as_ref(), sources, age));
    let now = Utc::now();
    let future: Vec<String> = checkpoint.as_ref().map_or(Vec::new(), |c| {
        c.future_cursors(now)
            .into_iter()
            .map(|(name, cursor)| format!("{name}: cursor {} is in the future", display(cursor)))
            .collect()
    });
    let text = if json {
        // JSON escapes control characters itself.
        let doc = serde_json::json!({
            "checkpoint_path": path,
            "rejected_path": rejected_path,
            "checkpoint": checkpoint,
            "stale": stale,
            "future_cursors": future,
        });
        serde_json::to_string_pretty(&doc).expect("serializes") + "\n"
    } else {
        let mut text = String::new();
        if let (Some(stale), Some(age)) = (&stale, max_age) {
            text += &if stale.is_empty() {
                format!(
                    "OK: every source succeeded within {}\n",
                    display_duration(age)
                )
            } else {
                format!("CRITICAL: {}\n", stale.join("; "))
            };
        }
        text += &match &checkpoint {
            None => format!(
                "no checkpoint yet in {} (no run has committed there)\n",
                store.state_dir.display()
            ),
            Some(checkpoint) => for_people(checkpoint, &path, &rejected_path),
        };
        for warning in &future {
            text +=
                &format!("warning: {warning}: check the clock; polls fetch nothing until then\n");
        }
        text
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| fail(ExitKind::Io, format!("writing to standard output: {e}")))?;
    Ok(stale.is_none_or(|s| s.is_empty()))
}

/// One reason per source whose last success is missing or older than `max_age`.
fn stale_sources(
    checkpoint: Option<&Checkpoint>,
    sources: &[SourceKind],
    max_age: Duration,
) -> Vec<String> {
    let now = Utc::now();
    sources
        .iter()
        .filter_map(|kind| {
            let last = checkpoint
                .and_then(|c| c.source(*kind))
                .and_then(|s| s.last_success);
            match last {
                None => Some(format!("{}: no successful run yet", kind.name())),
                Some(at) => {
                    let age = (now - at).to_std().unwrap_or(Duration::ZERO);
                    (age > max_age).then(|| {
                        format!(
                            "{}: last success {} ago, at {} (--max-age {})",
                            kind.name(),
                            display_duration(Duration::from_secs(age.as_secs())),
                            display(at),
                            display_duration(max_age)
                        )
                    })
                }
            }
        })
        .collect()
}

fn for_people(
    checkpoint: &Checkpoint,
    path: &std::path::Path,
    rejected_path: &std::path::Path,
) -> String {
    let mut out = format!(
        "checkpoint {} (tenant {})\n",
        path.display(),
        shown(&checkpoint.tenant_id)
    );
    if let Some(run) = &checkpoint.last_run {
        out += &format!(
            "last run: {} started {}, finished {}, exit {}{}\n",
            shown(&run.command),
            display(run.started),
            display(run.finished),
            run.exit_code,
            run.error
                .as_ref()
                .map_or(String::new(), |e| format!(": {}", shown_up_to(e, 2000)))
        );
    }
    for (name, state) in &checkpoint.sources {
        out += &format!(
            "{name}: written from {} to {} (cursor), {} events written, last success {}, {} keys kept\n",
            display(state.covered_since),
            display(state.cursor),
            state.events_written,
            state.last_success.map_or("never".to_string(), display),
            state.seen.len()
        );
    }
    let rejected: u64 = checkpoint.sources.values().map(|s| s.rejected_total).sum();
    if rejected > 0 {
        let per_source: Vec<String> = checkpoint
            .sources
            .iter()
            .filter(|(_, state)| state.rejected_total > 0)
            .map(|(name, state)| format!("{name} {}", state.rejected_total))
            .collect();
        out += &format!(
            "rejected: {rejected} item(s) not written ({}), kept in {}\n",
            per_source.join(", "),
            rejected_path.display()
        );
    }
    if let Some(mark) = &checkpoint.output {
        out += &format!(
            "output: {} at byte {}\n",
            shown(&mark.path.to_string_lossy()),
            mark.size
        );
    }
    out
}
