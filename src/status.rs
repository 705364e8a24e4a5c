//! `cylance-logs status`: the checkpoint, for people or (`--json`) monitoring,
//! and with `--max-age` a Nagios-style freshness check.
//!
//! Reads without taking the run lock: the checkpoint is replaced by rename, so
//! a reader always sees a whole version.
//!
//! The human form speaks of what an operator can check: per source, the
//! events written and the time range they cover, the last success (when and
//! how long ago), and what the next poll will ask the API for (the end of
//! what is written less `--overlap`, up to now) and look up for each new
//! line (`--enrich`, a request per line). Internal details (dedupe
//! keys, the output offset) are only in `--json`, whose shape is stable.
//!
//! With `--max-age` the verdict (`OK: ...` or `CRITICAL: ...`) is the first
//! line, as Nagios shows only that one; the details follow. Every string read
//! from the checkpoint is shown through `untrusted::shown`: an older release
//! stored server messages raw.

use crate::checkpoint::{self, Checkpoint};
use crate::config::{RunSettings, StoreSettings};
use crate::error::{Classify, ExitKind};
use crate::sources::SourceKind;
use crate::timefmt::{display, display_duration, to_delta};
use crate::untrusted::{needs_escape, shown, shown_up_to};
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::io::Write;
use std::time::Duration;

/// Prints the status; returns false when `max_age` is given and a source's
/// last success is older (or missing).
pub fn show(
    store: &StoreSettings,
    json: bool,
    max_age: Option<Duration>,
    settings: &RunSettings,
) -> Result<bool> {
    let sources = &settings.sources;
    let path = checkpoint::path_in(&store.state_dir);
    let rejected_path = crate::rejected::path_in(&store.state_dir);
    let checkpoint = Checkpoint::load(&path)?;
    let stale =
        max_age.map(|age| stale_sources(checkpoint.as_ref(), sources, age, settings.devices_every));
    let now = Utc::now();
    let future = checkpoint
        .as_ref()
        .map_or(Vec::new(), |c| c.future_cursors(now));
    let text = if json {
        let future: Vec<String> = future
            .iter()
            .map(|(name, cursor)| format!("{name}: cursor {} is in the future", display(*cursor)))
            .collect();
        let doc = serde_json::json!({
            "checkpoint_path": path,
            "rejected_path": rejected_path,
            "checkpoint": checkpoint,
            "stale": stale,
            "future_cursors": future,
        });
        terminal_safe_json(&serde_json::to_string_pretty(&doc).expect("serializes")) + "\n"
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
            Some(checkpoint) => for_people(checkpoint, &path, &rejected_path, settings, now),
        };
        for (name, end) in &future {
            text += &format!(
                "warning: {}: what is written reaches {}, in the future: check the clock; polls \
                 fetch nothing until then\n",
                shown(name),
                display(*end)
            );
        }
        text
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .classify(ExitKind::Io, "writing to standard output")?;
    Ok(stale.is_none_or(|s| s.is_empty()))
}

/// JSON text with the characters a terminal may act on written as `\u`
/// escapes: those [`shown`] escapes in every other message. serde_json
/// escapes C0 controls itself but writes DEL, C1 controls (U+0080 to U+009F,
/// among them CSI), the line separators and the bidirectional overrides as
/// they are; the checkpoint can hold such server text (a key, or an error
/// recorded by a release that did not escape it), and `status --json` is
/// often read on a terminal. Inside JSON strings (where serde_json leaves
/// no raw `\n`) the escape is the same value; the pretty form's own newlines
/// between tokens stay.
fn terminal_safe_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c != '\n' && needs_escape(c) {
            out += &format!("\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// One reason per source whose last success is missing or older than
/// `max_age`; for a snapshot source, than `max_age` after its next snapshot
/// was due (`devices_every` after the last).
fn stale_sources(
    checkpoint: Option<&Checkpoint>,
    sources: &[SourceKind],
    max_age: Duration,
    devices_every: Duration,
) -> Vec<String> {
    let now = Utc::now();
    sources
        .iter()
        .filter_map(|&kind| {
            let last = checkpoint
                .and_then(|c| c.source(kind))
                .and_then(|s| s.last_success);
            match last {
                None => Some(format!("{}: no successful run yet", kind.name)),
                Some(at) => {
                    let age = (now - at).to_std().unwrap_or(Duration::ZERO);
                    let allowed = if kind.is_snapshot() {
                        max_age + devices_every
                    } else {
                        max_age
                    };
                    (age > allowed).then(|| {
                        format!(
                            "{}: last success {} ago, at {} (--max-age {})",
                            kind.name,
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
    settings: &RunSettings,
    now: DateTime<Utc>,
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
    let ago = |at: DateTime<Utc>| {
        let age = (now - at).to_std().unwrap_or(Duration::ZERO);
        format!("{} ({} ago)", display(at), whole_seconds(age))
    };
    // The configured sources first, in their order, then any other the
    // checkpoint knows (fetched before, not now).
    let others = checkpoint
        .sources
        .keys()
        .filter(|name| !settings.sources.iter().any(|kind| kind.name == *name));
    let names = settings
        .sources
        .iter()
        .map(|kind| kind.name)
        .chain(others.map(String::as_str));
    for name in names {
        let polled = settings.sources.iter().any(|kind| kind.name == name);
        let snapshot_source =
            crate::sources::from_name(name).is_some_and(|kind| kind.is_snapshot());
        let Some(state) = checkpoint.sources.get(name) else {
            out += &if snapshot_source {
                format!("{name}: no snapshot yet; the first poll with it in --sources takes one\n")
            } else {
                format!(
                    "{name}: nothing written yet; the first poll asks for the last {} \
                     (--initial-lookback)\n",
                    display_duration(settings.initial_lookback)
                )
            };
            continue;
        };
        if let (true, Some(snapshot)) = (snapshot_source, state.snapshot) {
            out += &snapshot_status(name, state, snapshot, polled, settings, &ago);
            continue;
        }
        out += &format!(
            "{}: written from {} to {}, {} events written\n",
            shown(name),
            display(state.covered_since),
            display(state.cursor),
            state.events_written
        );
        out += &format!(
            "  last success: {}\n",
            state.last_success.map_or("never".to_string(), ago)
        );
        out += &if polled {
            format!(
                "  next poll asks for: {} to now ({} before the end of what is written, for \
                 late arrivals)\n",
                display(state.cursor - to_delta(settings.overlap)),
                display_duration(settings.overlap)
            )
        } else {
            "  next poll: not fetched (not in --sources)\n".to_string()
        };
    }
    out += &lookups_line(settings);
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
            "output: {} ({} bytes at the last commit)\n",
            shown(&mark.path.to_string_lossy()),
            mark.size
        );
    }
    out
}

/// What the next poll looks up for each new line (`--enrich`): a request
/// per line, so it is said with what it costs.
fn lookups_line(settings: &RunSettings) -> String {
    if settings.enrich.is_empty() {
        return "lookups: none (--enrich none): lines carry only what the lists give\n".into();
    }
    let each: Vec<String> = settings
        .enrich
        .iter()
        .map(|&lookup| {
            let polled = settings
                .sources
                .iter()
                .any(|source| source.lookup == Some(lookup));
            format!(
                "{} (adds `{}`{})",
                lookup.name(),
                lookup.added_key(),
                if polled {
                    ""
                } else {
                    "; its source is not polled"
                }
            )
        })
        .collect();
    format!(
        "lookups: {}, one request per new line of its source\n",
        each.join(", ")
    )
}

/// A snapshot source's status: its last snapshot, and when the next is due.
fn snapshot_status(
    name: &str,
    state: &crate::checkpoint::SourceState,
    snapshot: crate::checkpoint::SnapshotState,
    polled: bool,
    settings: &RunSettings,
    ago: &dyn Fn(DateTime<Utc>) -> String,
) -> String {
    let every = settings.devices_every;
    let (last, next) = if snapshot.complete {
        (
            "complete",
            format!(
                "due at {} (--devices-every {})",
                display(snapshot.time + to_delta(every)),
                display_duration(every)
            ),
        )
    } else {
        (
            "incomplete",
            "the next poll completes it, under the same snapshot_time".to_string(),
        )
    };
    let next = if polled {
        next
    } else {
        "not fetched (not in --sources)".to_string()
    };
    format!(
        "{}: last snapshot {} ({last}), {} lines written\n  last success: {}\n  next \
         snapshot: {next}\n",
        shown(name),
        display(snapshot.time),
        state.events_written,
        state.last_success.map_or("never".to_string(), ago)
    )
}

/// An age for people, in whole seconds (`display_duration` would show
/// milliseconds below a second).
fn whole_seconds(d: Duration) -> String {
    match d.as_secs() {
        0 => "0s".to_string(),
        secs => display_duration(Duration::from_secs(secs)),
    }
}
