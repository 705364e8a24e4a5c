//! One `poll` or `backfill` run, from lock to last commit.
//!
//! The flow: take the run lock → read the checkpoint → recover events an
//! interrupted run left in the output → for each source, walk its window in
//! slices of at most `SLICE` (poll: oldest first, moving the cursor forward;
//! backfill: newest first, moving the start of the written range back) → for
//! each slice, read every page, keep exactly the slice on the client, skip
//! keys already written, append the rest → after a slice that wrote
//! something, sync the output and commit the checkpoint. The window is fixed
//! once, at the start of the run.
//!
//! Slices bound what an interrupted run has to redo and what dedupe must hold
//! in memory; nothing is ever committed for half a slice, and what half a
//! slice wrote is found again by the output's crash recovery.

use crate::api::ApiClient;
use crate::checkpoint::{self, Checkpoint, RunRecord, SourceState};
use crate::config::{ApiSettings, RunSettings, StoreSettings};
use crate::control::RunControl;
use crate::error::{ExitKind, exit_code_of, fail};
use crate::lock::{RunLock, ensure_state_dir};
use crate::output::Output;
use crate::retry::RetryPolicy;
use crate::sources::{SourceKind, line_prefix, push_line};
use crate::timefmt::{display, to_delta};
use anyhow::Result;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// Longest window fetched before a commit.
const SLICE: TimeDelta = TimeDelta::hours(1);

#[derive(Debug, Clone, Copy)]
pub enum Job {
    Poll,
    /// `until` is `None` when the user gave none: start of the written range, else now.
    Backfill {
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    },
}

impl Job {
    fn name(self) -> &'static str {
        match self {
            Job::Poll => "poll",
            Job::Backfill { .. } => "backfill",
        }
    }
}

/// Per-source figures for the summary line.
#[derive(Debug, Default, Clone)]
struct SourceTally {
    events: u64,
    pages: u64,
}

/// Everything a run works on, so the steps below stay small.
struct Run {
    job: Job,
    settings: RunSettings,
    tenant_id: String,
    checkpoint: Checkpoint,
    checkpoint_path: PathBuf,
    output: Output,
    client: ApiClient,
    control: RunControl,
    started: DateTime<Utc>,
    tallies: Vec<(SourceKind, SourceTally)>,
}

pub fn run_job(
    job: Job,
    api: ApiSettings,
    store: StoreSettings,
    settings: RunSettings,
    retry: RetryPolicy,
    control: RunControl,
) -> Result<()> {
    let started = Utc::now();
    let clock = Instant::now();
    ensure_state_dir(&store.state_dir)?;
    let lock = RunLock::acquire(&store.state_dir, settings.lock_wait, job.name())?;
    if let Some(previous) = &lock.interrupted_run {
        crate::warn!("the previous run did not finish ({previous}); recovering its work");
    }
    let checkpoint_path = checkpoint::path_in(&store.state_dir);
    let mut checkpoint =
        Checkpoint::load(&checkpoint_path)?.unwrap_or_else(|| Checkpoint::new(&api.tenant_id));
    if checkpoint.tenant_id != api.tenant_id {
        return Err(fail(
            ExitKind::Checkpoint,
            format!(
                "the checkpoint {} belongs to tenant {}, not {}; give each tenant its own --state-dir",
                checkpoint_path.display(),
                checkpoint.tenant_id,
                api.tenant_id
            ),
        ));
    }
    let mut output = Output::open(&store.output)?;
    let recovered = output.recover(
        checkpoint.output.as_ref(),
        &api.tenant_id,
        lock.interrupted_run.is_some(),
    )?;
    if checkpoint.output.is_none() {
        // Record where the file stands before the first append, so that a
        // crash of this very first run can be recovered from.
        checkpoint.output = output.mark()?;
        if checkpoint.output.is_some() {
            checkpoint.save(&checkpoint_path)?;
        }
    }
    crate::debug!(
        "lock {}, checkpoint {}, {}",
        lock.path().display(),
        checkpoint_path.display(),
        settings.describe()
    );
    let tenant_id = api.tenant_id.clone();
    let client = ApiClient::new(api, retry, control.clone())?;
    let mut run = Run {
        job,
        tallies: settings
            .sources
            .iter()
            .map(|kind| (*kind, SourceTally::default()))
            .collect(),
        settings,
        tenant_id,
        checkpoint,
        checkpoint_path,
        output,
        client,
        control,
        started,
    };
    let result = run.sources(&recovered);
    let result = run.finish(result);
    crate::info!("{}", run.summary(clock.elapsed().as_secs_f64(), &result));
    result
}

impl Run {
    fn sources(&mut self, recovered: &[crate::output::RecoveredEvent]) -> Result<()> {
        for kind in self.settings.sources.clone() {
            let mut seen: HashMap<String, DateTime<Utc>> = self
                .checkpoint
                .source(kind)
                .map(SourceState::seen_map)
                .unwrap_or_default();
            for event in recovered.iter().filter(|e| e.kind == kind) {
                seen.insert(event.key.clone(), event.time);
            }
            match self.job {
                Job::Poll => self.poll_source(kind, &mut seen)?,
                Job::Backfill { since, until } => {
                    self.backfill_source(kind, since, until, &mut seen)?
                }
            }
        }
        Ok(())
    }

    fn poll_source(
        &mut self,
        kind: SourceKind,
        seen: &mut HashMap<String, DateTime<Utc>>,
    ) -> Result<()> {
        let overlap = to_delta(self.settings.overlap);
        let end = self.started;
        let start = match self.checkpoint.source(kind) {
            Some(state) => state.cursor - overlap,
            None => end - to_delta(self.settings.initial_lookback),
        };
        let mut slice_start = start;
        loop {
            let slice_end = (slice_start + SLICE).min(end);
            if slice_start >= slice_end {
                break;
            }
            self.control.check()?;
            let written = self.fetch_slice(kind, slice_start, slice_end, seen)?;
            let state = self
                .checkpoint
                .sources
                .entry(kind.name().to_string())
                .or_insert_with(|| SourceState {
                    covered_since: start,
                    cursor: start,
                    events_written: 0,
                    last_success: None,
                    seen: Vec::new(),
                });
            state.cursor = state.cursor.max(slice_end);
            self.advance(kind, written, seen)?;
            slice_start = slice_end;
        }
        Ok(())
    }

    fn backfill_source(
        &mut self,
        kind: SourceKind,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
        seen: &mut HashMap<String, DateTime<Utc>>,
    ) -> Result<()> {
        let written_range = self
            .checkpoint
            .source(kind)
            .map(|state| (state.covered_since, state.cursor));
        let end = match (until, written_range) {
            (None, None) => self.started,
            (None, Some((covered_since, _))) => covered_since,
            (Some(until), None) => until,
            (Some(until), Some((covered_since, cursor))) => {
                if until < covered_since {
                    return Err(fail(
                        ExitKind::Usage,
                        format!(
                            "--until {} would leave a hole before the {} already written from {} \
                             on; omit --until to fill in the history up to there",
                            display(until),
                            kind.name(),
                            display(covered_since)
                        ),
                    ));
                }
                if until > covered_since {
                    crate::info!(
                        "{}: {}..{} is already written; backfilling only up to {}",
                        kind.name(),
                        display(covered_since),
                        display(cursor.min(until)),
                        display(covered_since)
                    );
                }
                covered_since
            }
        };
        if since >= end {
            crate::info!(
                "{}: nothing to backfill, everything since {} is already written",
                kind.name(),
                display(since)
            );
            return Ok(());
        }
        let mut slice_end = end;
        while slice_end > since {
            let slice_start = (slice_end - SLICE).max(since);
            self.control.check()?;
            let written = self.fetch_slice(kind, slice_start, slice_end, seen)?;
            let state = self
                .checkpoint
                .sources
                .entry(kind.name().to_string())
                .or_insert_with(|| SourceState {
                    covered_since: end,
                    cursor: end,
                    events_written: 0,
                    last_success: None,
                    seen: Vec::new(),
                });
            state.covered_since = slice_start;
            self.advance(kind, written, seen)?;
            slice_end = slice_start;
        }
        Ok(())
    }

    /// After a slice: count, prune dedupe keys, and commit if lines were
    /// written (an empty slice is redone cheaply if the run dies).
    fn advance(
        &mut self,
        kind: SourceKind,
        written: u64,
        seen: &mut HashMap<String, DateTime<Utc>>,
    ) -> Result<()> {
        let overlap = to_delta(self.settings.overlap);
        let state = self
            .checkpoint
            .sources
            .get_mut(kind.name())
            .expect("the caller created the state");
        state.events_written += written;
        state.last_success = Some(Utc::now());
        state.set_seen(seen, overlap);
        let horizon = state.cursor - overlap;
        let covered_since = state.covered_since;
        seen.retain(|_, time| *time >= horizon || *time < covered_since);
        if written > 0 {
            self.commit()?;
        }
        Ok(())
    }

    /// Reads every page of `[start, end)` and appends the events not yet written.
    fn fetch_slice(
        &mut self,
        kind: SourceKind,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        seen: &mut HashMap<String, DateTime<Utc>>,
    ) -> Result<u64> {
        let window = kind.window_query(start, end);
        let prefix = line_prefix(kind, &self.tenant_id);
        let mut written = 0;
        let mut page = 1u32;
        loop {
            if page > 1 {
                self.control.check()?;
            }
            let mut lines = Vec::new();
            let (more, all_older) = self.client.list_page(kind, &window, page, |parsed| {
                let mut all_older = !parsed.page_items.is_empty();
                for item in &parsed.page_items {
                    let meta = kind.meta(item).map_err(|why| {
                        fail(
                            ExitKind::Protocol,
                            format!("GET {} page {page}: {why}", kind.path()),
                        )
                    })?;
                    if meta.time >= start {
                        all_older = false;
                    }
                    if meta.time < start || meta.time >= end || seen.contains_key(&meta.key) {
                        continue;
                    }
                    seen.insert(meta.key, meta.time);
                    push_line(&mut lines, &prefix, item);
                    written += 1;
                }
                let more = !parsed.page_items.is_empty()
                    && parsed
                        .total_pages
                        .is_none_or(|total| u64::from(page) < total);
                Ok((more, all_older))
            })?;
            self.output.append(&lines)?;
            self.tally(kind).pages += 1;
            if !more || (kind.newest_first() && all_older) {
                break;
            }
            page += 1;
        }
        self.tally(kind).events += written;
        Ok(written)
    }

    fn tally(&mut self, kind: SourceKind) -> &mut SourceTally {
        &mut self
            .tallies
            .iter_mut()
            .find(|(k, _)| *k == kind)
            .expect("every source has a tally")
            .1
    }

    /// Output durable first, then the checkpoint that covers it.
    fn commit(&mut self) -> Result<()> {
        self.output.sync()?;
        if let Some(mark) = self.output.mark()? {
            self.checkpoint.output = Some(mark);
        }
        self.checkpoint.save(&self.checkpoint_path)
    }

    /// The last commit, also after a failure: what the finished slices did
    /// is kept, and `status` can tell how the run ended.
    fn finish(&mut self, result: Result<()>) -> Result<()> {
        if result.as_ref().is_err_and(|err| {
            crate::error::is_kind(err, ExitKind::Checkpoint)
                || crate::error::is_kind(err, ExitKind::Io)
        }) {
            return result;
        }
        self.checkpoint.last_run = Some(RunRecord {
            command: self.job.name().to_string(),
            started: self.started,
            finished: Utc::now(),
            exit_code: result.as_ref().map_or_else(exit_code_of, |()| 0),
            error: result.as_ref().err().map(|err| format!("{err:#}")),
        });
        let committed = self.commit();
        match (result, committed) {
            (Err(err), _) => Err(err),
            (Ok(()), committed) => committed,
        }
    }

    fn summary(&self, seconds: f64, result: &Result<()>) -> String {
        let sources: Vec<String> = self
            .tallies
            .iter()
            .map(|(kind, tally)| {
                format!(
                    "{} {} new ({} pages)",
                    kind.name(),
                    tally.events,
                    tally.pages
                )
            })
            .collect();
        let stats = &self.client.stats;
        format!(
            "{} {}: {}; {} requests, {} retries, {} rate-limited, {seconds:.2}s",
            self.job.name(),
            if result.is_ok() { "done" } else { "stopped" },
            sources.join(", "),
            stats.requests,
            stats.retries,
            stats.rate_limited
        )
    }
}
