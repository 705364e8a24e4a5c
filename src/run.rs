//! One `poll` or `backfill` run, from lock to last commit.
//!
//! The flow: take the run lock → read the checkpoint → recover events an
//! interrupted run left in the output → for each source, its window (poll:
//! from the cursor less the overlap to the run's start; backfill: the asked
//! range before what is already written) → its pages, in order (`pager`) →
//! its lines: keep exactly the window on the client, skip keys already
//! written (the items read by their source's description, `sources`) →
//! their lookups, when `--enrich` has the source's on (`lookup`; all of a
//! page's before any of its lines) → append them (`output`) → sync the
//! output and commit the checkpoint. The
//! window is fixed once, at the start of the run. Each source's state for
//! the run is one [`SourceRun`].
//!
//! A window whose first page shows more than `MAX_PAGES_PER_SLICE` pages is
//! split in halves (poll: oldest half first, moving the cursor forward;
//! backfill: newest half first, moving the start of the written range back),
//! so a large backfill commits as it goes and an interrupted one resumes
//! where it stopped. Nothing is committed for half a slice; what half a slice
//! wrote is found again by the output's crash recovery.
//!
//! No item stops a run. One that cannot be placed (not an object, no key or
//! time, an unreadable time or one before 2000 or over a day after the run
//! started, a duplicate key) or that readers would refuse (a number beyond an
//! f64, nesting deeper than 127) is not written: it goes once to the
//! dead-letter file `rejected.jsonl` in the state directory, with a warning,
//! and the run goes on. Lone surrogate escapes are written as `\ufffd`, with
//! one warning per page. Only placed items' times end a newest-first list
//! early.

use crate::api::ApiClient;
use crate::checkpoint::{self, Checkpoint, RunRecord, SnapshotState, SourceState};
use crate::config::{ApiSettings, RunSettings, StoreSettings};
use crate::control::RunControl;
use crate::error::{ExitKind, exit_code_of, fail};
use crate::lock::{RunLock, ensure_state_dir};
use crate::lookup::{Ask, Lookups};
use crate::metrics::{self, Resources, RunFigures};
use crate::output::{Output, RecoveredEvent};
use crate::pager::{Flow, List, PageAt, Pager};
use crate::progress::Progress;
use crate::rejected::{DeadLetter, Remembered};
use crate::retry::RetryPolicy;
use crate::sources::{
    self, SERVER_WINDOW_PAD, SNAPSHOT_TIME_KEY, SourceKind, line_prefix, push_line,
    push_line_adding, rename_reserved,
};
use crate::timefmt::{display, to_delta};
use anyhow::Result;
use chrono::{DateTime, SecondsFormat, TimeDelta, Timelike, Utc};
use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// A window whose first page reports more pages than this is split in two,
/// so that a commit comes at least every this many pages.
const MAX_PAGES_PER_SLICE: u64 = 50;
/// Lines looked up, then written, at a time, per `--concurrency` slot: the
/// lookup answers held at once stay within this many per slot (each up to
/// one answer's 16 MiB), not a whole page's 200, while each slot still has
/// a second lookup to start as soon as its first is answered.
const LOOKUP_GROUP_PER_SLOT: usize = 2;
/// Windows are not split below this length.
const MIN_SLICE: TimeDelta = TimeDelta::minutes(1);
/// A snapshot's list is read again while its size changes during a
/// reading, at most this many readings in all.
const MAX_SNAPSHOT_PASSES: u32 = 3;

/// Which end of a window is fetched first.
#[derive(Debug, Clone, Copy)]
enum Direction {
    /// poll: the cursor moves forward.
    OldestFirst,
    /// backfill: the start of the written range moves back.
    NewestFirst,
}

/// Keys already written, with their event times, for dedupe.
type Seen = HashMap<String, DateTime<Utc>>;

/// Which of a page's items are written, and with what time.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// Exactly those whose time lies in `[start, end)`.
    Window {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// All, with the snapshot's time (a snapshot source).
    Snapshot(DateTime<Utc>),
}

/// What one page did.
#[derive(Debug, Default)]
struct PageOutcome {
    written: u64,
    /// Newest-first list reached items older than the window.
    stop: bool,
    /// An item lay outside even the padded window: the server ignores the
    /// time filter, so splitting the window would not shrink it.
    outside_window: bool,
}

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
    /// Items first rejected by this run.
    rejected: u64,
    /// Lookup requests made for its lines (further pages of a device list
    /// included, retries not).
    lookups: u64,
}

/// A line a page will write, before its lookup.
struct Chosen<'a> {
    /// The item as it came.
    item: &'a str,
    /// The item as written when that differs: its lone surrogate escapes
    /// replaced, its reserved keys renamed.
    rewritten: Option<String>,
    /// What a lookup names (the key field's text as sent).
    id: Cow<'a, str>,
    time: DateTime<Utc>,
    /// The dedupe key, when it enters `seen` only once the line is written
    /// (with a lookup); `None` when it entered at once.
    key: Option<String>,
    /// Written with U+FFFD for bytes that were not UTF-8.
    replaced_utf8: bool,
    /// Written with `\ufffd` for lone surrogate escapes.
    replaced_surrogates: bool,
}

/// One source's state for the run.
struct SourceRun {
    kind: SourceKind,
    /// In `--sources`: fetched, summed up and measured. The others are here
    /// for the keys the output's recovery found of theirs.
    fetched: bool,
    /// The keys written (or found written) that dedupe must know.
    seen: Seen,
    /// The rejected items met lately, so that each is reported once.
    rejected: Remembered,
    tally: SourceTally,
    /// Backfill progress: the page count of the source's whole window, from
    /// its first page, to measure against.
    expected_pages: Option<u64>,
}

/// Everything a run works on, so the steps below stay small.
struct Run {
    job: Job,
    settings: RunSettings,
    tenant_id: String,
    checkpoint: Checkpoint,
    checkpoint_path: PathBuf,
    output: Output,
    /// For the request figures; lists are read through `pager`.
    client: Arc<ApiClient>,
    pager: Pager,
    /// The lookups of new lines (`--enrich`), sharing the client.
    lookups: Lookups,
    started: DateTime<Utc>,
    /// The sources fetched, in `--sources` order, then every other source.
    sources: Vec<SourceRun>,
    /// Backfill only: progress on stderr.
    progress: Option<Progress>,
    /// Set when recovered lines belong to a source that has no state yet and
    /// is not fetched now: the mark must not move past them.
    keep_output_mark: bool,
    /// Set when an append failed: `seen` may then hold keys of lines not
    /// written, so `finish` commits nothing.
    append_failed: bool,
    /// The lines of the page being written, reused.
    line_buffer: Vec<u8>,
    /// Scratch space for `Source::scan`, reused.
    key_names: Vec<u64>,
    /// Items that cannot be placed, for `rejected.jsonl`.
    dead_letter: DeadLetter,
}

pub fn run_job(
    job: Job,
    api: ApiSettings,
    store: StoreSettings,
    settings: RunSettings,
    retry: RetryPolicy,
    control: RunControl,
) -> Result<()> {
    let clock = Instant::now();
    ensure_state_dir(&store.state_dir)?;
    // Before the lock: a run that gets it writes the metrics file whatever
    // happens, and that must not be the output or a state file.
    if let Some(metrics) = &store.metrics_file {
        crate::output::refuse_metrics_clash(metrics, &store.output, &store.state_dir)?;
    }
    let lock = RunLock::acquire(&store.state_dir, settings.lock_wait, job.name(), &control)?;
    let tenant_id = api.tenant_id.clone();
    let metrics_file = store.metrics_file.clone();
    let (result, run) = run_locked(job, api, store, settings, retry, control, &lock);
    let figures = RunFigures {
        finished: Utc::now(),
        duration_seconds: clock.elapsed().as_secs_f64(),
        exit_code: result.as_ref().map_or_else(exit_code_of, |()| 0),
        requests: run.as_ref().map_or(0, |r| r.client.stats.requests()),
        retries: run.as_ref().map_or(0, |r| r.client.stats.retries()),
        rate_limited: run.as_ref().map_or(0, |r| r.client.stats.rate_limited()),
        events: run
            .as_ref()
            .map_or_else(Vec::new, |r| r.figures(|tally| tally.events)),
        rejected: run
            .as_ref()
            .map_or_else(Vec::new, |r| r.figures(|tally| tally.rejected)),
        lookups: run
            .as_ref()
            .map_or_else(Vec::new, |r| r.figures(|tally| tally.lookups)),
        resources: Resources::of_this_process(),
    };
    if let Some(run) = &run {
        crate::info!("{}", run.summary(&figures, &result));
    }
    if let Some(resources) = figures.resources {
        crate::debug!("{}", resources.describe());
    }
    if let Some(path) = metrics_file {
        let checkpoint = run.as_ref().map(|r| &r.checkpoint);
        if let Err(err) = metrics::write(&path, &tenant_id, checkpoint, &figures) {
            crate::warn!("{err:#}");
        }
    }
    result
}

/// The run proper, under the lock. Returns the run's state when it got as
/// far as starting, for the summary and the metrics.
fn run_locked(
    job: Job,
    api: ApiSettings,
    store: StoreSettings,
    settings: RunSettings,
    retry: RetryPolicy,
    control: RunControl,
    lock: &RunLock,
) -> (Result<()>, Option<Run>) {
    let started = Utc::now();
    if let Some(previous) = &lock.interrupted_run {
        crate::warn!("the previous run did not finish ({previous}); recovering its work");
    }
    let prepared = (|| {
        let checkpoint_path = checkpoint::path_in(&store.state_dir);
        let mut checkpoint =
            Checkpoint::load(&checkpoint_path)?.unwrap_or_else(|| Checkpoint::new(&api.tenant_id));
        checkpoint.warn_about_future_cursors(started);
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
        let mut output = Output::open(
            &store.output,
            &store.state_dir,
            &api.tenant_id,
            control.clone(),
        )?;
        let recovered =
            output.recover(checkpoint.output.as_ref(), lock.interrupted_run.is_some())?;
        if checkpoint.output.is_none() {
            // Record where the file stands before the first append, so that a
            // crash of this very first run can be recovered from.
            checkpoint.output = output.mark()?;
            if let Some(mark) = &checkpoint.output {
                checkpoint.save(&checkpoint_path)?;
                output.committed(mark);
            }
        }
        crate::debug!(
            "lock {}, checkpoint {}, {}",
            lock.path().display(),
            checkpoint_path.display(),
            settings.describe()
        );
        let tenant_id = api.tenant_id.clone();
        let client = Arc::new(ApiClient::new(
            api,
            retry,
            settings.max_rps,
            control.clone(),
        )?);
        let pager = Pager::new(Arc::clone(&client), control.clone(), settings.concurrency);
        // Lookups share the pager's slots: --concurrency bounds both together.
        let lookups = Lookups::new(
            Arc::clone(&client),
            control,
            pager.slots(),
            settings.concurrency,
        );
        let sources = source_runs(&settings.sources, &checkpoint, &recovered);
        // No state to keep recovered keys of a source in when it has none
        // yet and is not fetched now: leave the output mark where it is, so
        // the next run reads those lines again.
        let keep_output_mark = sources.iter().any(|source| {
            !source.fetched
                && checkpoint.source(source.kind).is_none()
                && recovered.iter().any(|event| event.kind == source.kind)
        });
        let run = Run {
            job,
            sources,
            settings,
            tenant_id,
            checkpoint,
            checkpoint_path,
            output,
            client,
            pager,
            lookups,
            started,
            progress: matches!(job, Job::Backfill { .. }).then(Progress::new),
            keep_output_mark,
            append_failed: false,
            line_buffer: Vec::new(),
            key_names: Vec::new(),
            dead_letter: DeadLetter::new(&store.state_dir),
        };
        Ok(run)
    })();
    match prepared {
        Err(err) => (Err(err), None),
        Ok(mut run) => {
            let result = run.fetch_sources();
            let result = run.finish(result);
            (result, Some(run))
        }
    }
}

impl Run {
    /// Per source in `--sources`: its window (`poll_source`,
    /// `backfill_source`) → its pages and slices (`walk`) → its lines
    /// (`process_page`) → a commit per slice (`slice_done`).
    fn fetch_sources(&mut self) -> Result<()> {
        for at in 0..self.sources.len() {
            if !self.sources[at].fetched {
                continue;
            }
            let kind = self.sources[at].kind;
            match (self.job, kind.is_snapshot()) {
                (Job::Poll, false) => self.poll_source(at)?,
                (Job::Backfill { since, until }, false) => {
                    self.backfill_source(at, since, until)?;
                }
                (Job::Poll, true) => self.snapshot_source(at)?,
                (Job::Backfill { .. }, true) => crate::info!(
                    "{}: a snapshot has no time window, so backfill skips it; polls take one \
                     every --devices-every",
                    kind.name
                ),
            }
        }
        Ok(())
    }

    /// Per fetched source, one figure of its tally, for the metrics.
    fn figures(&self, figure: impl Fn(&SourceTally) -> u64) -> Vec<(SourceKind, u64)> {
        self.sources
            .iter()
            .filter(|source| source.fetched)
            .map(|source| (source.kind, figure(&source.tally)))
            .collect()
    }

    fn poll_source(&mut self, at: usize) -> Result<()> {
        let kind = self.sources[at].kind;
        let end = self.started;
        let start = match self.checkpoint.source(kind) {
            Some(state) => state.cursor - to_delta(self.settings.overlap),
            None => end - to_delta(self.settings.initial_lookback),
        };
        if start >= end {
            return Ok(());
        }
        // A new source's written range starts empty where its first window starts.
        self.ensure_state(kind, start);
        self.walk(at, start, end, Direction::OldestFirst)
    }

    fn backfill_source(
        &mut self,
        at: usize,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let kind = self.sources[at].kind;
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
                            kind.name,
                            display(covered_since)
                        ),
                    ));
                }
                if until > covered_since {
                    crate::info!(
                        "{}: {}..{} is already written; backfilling only up to {}",
                        kind.name,
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
                kind.name,
                display(since)
            );
            return Ok(());
        }
        // With no state, the range grows back from `end`, which becomes the cursor.
        self.ensure_state(kind, end);
        self.walk(at, since, end, Direction::NewestFirst)
    }

    /// Gives a source with no checkpoint entry an empty one at `at`, so that
    /// every slice has a state to record itself in.
    fn ensure_state(&mut self, kind: SourceKind, at: DateTime<Utc>) {
        self.checkpoint
            .sources
            .entry(kind.name.to_string())
            .or_insert_with(|| SourceState::empty_at(at));
    }

    /// Fetches `[start, end)` as one slice, or, when its first page shows it
    /// is too big to fetch between two commits, as two halves in `direction`.
    /// The first page is written either way (dedupe keeps the halves from
    /// writing it again), so splitting costs no request.
    fn walk(
        &mut self,
        at: usize,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        direction: Direction,
    ) -> Result<()> {
        let kind = self.sources[at].kind;
        let list = List {
            source: kind,
            query: kind.window_query(start, end),
        };
        let (mut written, mut split_at) = (0, None);
        self.pager.clone().read(&list, |at_page| {
            let (number, more, total_pages) = (at_page.number, at_page.more, at_page.total_pages);
            let outcome = self.process_page(at, Place::Window { start, end }, at_page)?;
            written += outcome.written;
            let too_big = number == 1
                && more
                && total_pages > MAX_PAGES_PER_SLICE
                && end - start > MIN_SLICE
                && !outcome.outside_window;
            if too_big {
                split_at = Some(total_pages);
                return Ok(Flow::Stop);
            }
            Ok(if outcome.stop { Flow::Stop } else { Flow::Next })
        })?;
        if let Some(total_pages) = split_at {
            let middle = start + (end - start) / 2;
            crate::debug!(
                "{}: {} pages between {} and {}; splitting at {}",
                kind.name,
                total_pages,
                display(start),
                display(end),
                display(middle)
            );
            let halves = match direction {
                Direction::OldestFirst => [(start, middle), (middle, end)],
                Direction::NewestFirst => [(middle, end), (start, middle)],
            };
            for (from, to) in halves {
                self.walk(at, from, to, direction)?;
            }
            return Ok(());
        }
        self.slice_done(at, start, end, written)
    }

    /// Records a finished slice; commits when it wrote lines (an empty slice
    /// is redone cheaply if the run dies).
    fn slice_done(
        &mut self,
        at: usize,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        written: u64,
    ) -> Result<()> {
        let overlap = to_delta(self.settings.overlap);
        let source = &mut self.sources[at];
        // Borrowing the two fields apart: the state is updated, then decides
        // which dedupe keys to keep.
        let state = self
            .checkpoint
            .sources
            .get_mut(source.kind.name)
            .expect("poll_source and backfill_source create the state first");
        // Slices are contiguous with the written range: poll extends it
        // forward, backfill backward.
        state.cursor = state.cursor.max(end);
        state.covered_since = state.covered_since.min(start);
        state.last_success = Some(Utc::now());
        source.seen.retain(|_, time| state.keeps(*time, overlap));
        if written > 0 {
            self.commit()?;
        }
        Ok(())
    }

    /// A snapshot source (devices), in a poll: a snapshot when one is due
    /// (none yet, or the last one complete and `--devices-every` old), or
    /// the completion of one a run left incomplete, under its time.
    ///
    /// The snapshot's time is committed before its first line, and the keys
    /// written (`id@time`) at each page that wrote: after a crash, those and
    /// the keys the output's recovery finds past the commit are skipped, so
    /// each item is written once per snapshot. The list is read to its end;
    /// an item shifted to a later page by a newer one (the list is newest
    /// registration first) is met twice and written once. When the list's
    /// size changes during a reading (an item removed shifts later ones to
    /// pages already read), it is read again, dedupe skipping what is written.
    fn snapshot_source(&mut self, at: usize) -> Result<()> {
        let kind = self.sources[at].kind;
        let every = to_delta(self.settings.devices_every);
        let previous = self
            .checkpoint
            .source(kind)
            .and_then(|state| state.snapshot);
        let time = match previous {
            Some(snapshot) if !snapshot.complete => {
                crate::info!(
                    "{}: completing the snapshot of {}, which an earlier run left incomplete",
                    kind.name,
                    display(snapshot.time)
                );
                snapshot.time
            }
            Some(snapshot) if self.started < snapshot.time + every => {
                crate::debug!(
                    "{}: the last snapshot is of {}; the next is due at {}",
                    kind.name,
                    display(snapshot.time),
                    display(snapshot.time + every)
                );
                return Ok(());
            }
            _ => {
                let time = self
                    .started
                    .with_nanosecond(0)
                    .expect("zero nanoseconds is valid");
                let state = self
                    .checkpoint
                    .sources
                    .entry(kind.name.to_string())
                    .or_insert_with(|| SourceState::empty_at(time));
                state.cursor = state.cursor.max(time);
                state.snapshot = Some(SnapshotState {
                    time,
                    complete: false,
                });
                self.sources[at].seen.clear();
                // Before the first line: a run completing this snapshot
                // must know its time.
                self.commit()?;
                time
            }
        };
        // Keys of other snapshots never come again.
        self.sources[at].seen.retain(|_, seen_at| *seen_at == time);
        for pass in 1..=MAX_SNAPSHOT_PASSES {
            if self.snapshot_pass(at, time)? {
                break;
            }
            if pass == MAX_SNAPSHOT_PASSES {
                crate::warn!(
                    "{}: the list kept changing while it was read {MAX_SNAPSHOT_PASSES} times; \
                     the snapshot of {} may lack an item added or removed meanwhile",
                    kind.name,
                    display(time)
                );
            } else {
                crate::debug!(
                    "{}: the list changed while it was read; reading it again",
                    kind.name
                );
            }
        }
        let state = self.checkpoint_state(kind);
        state.snapshot = Some(SnapshotState {
            time,
            complete: true,
        });
        state.last_success = Some(Utc::now());
        self.sources[at].seen.clear();
        self.commit()
    }

    /// One reading of a snapshot's whole list; commits after each page that
    /// wrote. Whether the list's size stayed the same throughout.
    fn snapshot_pass(&mut self, at: usize, time: DateTime<Utc>) -> Result<bool> {
        let kind = self.sources[at].kind;
        let list = List {
            source: kind,
            query: Vec::new(),
        };
        let (mut first_size, mut stable) = (None, true);
        self.pager.clone().read(&list, |at_page| {
            let size = (at_page.page.total_number_of_items, at_page.total_pages);
            stable &= *first_size.get_or_insert(size) == size;
            let outcome = self.process_page(at, Place::Snapshot(time), at_page)?;
            if outcome.written > 0 {
                self.commit()?;
            }
            Ok(Flow::Next)
        })?;
        Ok(stable)
    }

    fn checkpoint_state(&mut self, kind: SourceKind) -> &mut SourceState {
        self.checkpoint
            .sources
            .get_mut(kind.name)
            .expect("poll_source and backfill_source create the state first")
    }

    /// Keeps exactly `[start, end)` of one page, skips keys already written,
    /// looks up what the source's lookup adds to those lines (when
    /// `--enrich` has it on), then appends them in one locked write (with a
    /// lookup, one per group of lines).
    ///
    /// Keys enter `seen` only once every lookup of their group is in, just
    /// before its append: a lookup that fails (75) leaves them out of `seen`,
    /// so the commit `finish` makes after a 75 cannot record a key whose
    /// line was not written. If the append fails (74, or 75 when the wait
    /// for the output's lock ends), `finish` commits nothing, so no key of
    /// an unwritten line can reach the checkpoint either.
    fn process_page(
        &mut self,
        at: usize,
        place: Place,
        at_page: PageAt<'_>,
    ) -> Result<PageOutcome> {
        let PageAt {
            number,
            page,
            total_pages,
            ..
        } = at_page;
        let source = &mut self.sources[at];
        let kind = source.kind;
        let lookup = kind
            .lookup
            .filter(|lookup| self.settings.enrich.contains(lookup));
        let prefix = line_prefix(kind, &self.tenant_id);
        // A snapshot's lines end with its time; a window's with the lookup's
        // answer, if any (no source has both).
        let snapshot_time = match place {
            Place::Window { .. } => None,
            Place::Snapshot(time) => Some(
                serde_json::to_string(&time.to_rfc3339_opts(SecondsFormat::Secs, true))
                    .expect("a string serializes"),
            ),
        };
        // With a lookup, a line's key enters `seen` only once its group's
        // lookups are answered: a lookup can fail (75), and `finish` commits after a
        // 75. Without one, at once (one map entry per item, as cheap as it
        // gets): nothing but the append can fail before the lines are
        // written, and after a failed append nothing is committed.
        let deferred = lookup.is_some();
        let seen = &mut source.seen;
        let mut outcome = PageOutcome::default();
        let started = self.started;
        // Items that cannot be placed, with why; kept aside after the page.
        let mut rejects: Vec<(String, &str)> = Vec::new();
        // The lines to write: the item (rewritten if it had reserved keys or
        // lone surrogates) and what a lookup needs, with the key that enters
        // `seen` once written.
        let mut chosen: Vec<Chosen<'_>> = Vec::new();
        // With a lookup, the keys chosen on this page, not yet in `seen`: an
        // item twice on one page is written once.
        let mut page_keys: HashSet<String> = HashSet::new();
        for item in page.items() {
            let scanned = match place {
                Place::Window { .. } => kind.scan(item, &mut self.key_names),
                Place::Snapshot(time) => kind.scan_at(item, &mut self.key_names, time),
            };
            let scan = match scanned {
                Ok(scan) => scan,
                Err(why) => {
                    rejects.push((why, item));
                    continue;
                }
            };
            let (key, time) = (scan.meta.key, scan.meta.time);
            if let Place::Window { start, end } = place {
                if let Some(why) = kind.implausible_time(time, started) {
                    rejects.push((why, item));
                    continue;
                }
                outcome.outside_window |=
                    time < start - SERVER_WINDOW_PAD || time >= end + SERVER_WINDOW_PAD;
                // Newest first: once an item is older than the window, so is
                // everything after it.
                outcome.stop |= kind.newest_first() && time < start;
                if time < start || time >= end {
                    continue;
                }
            }
            let slot = match seen.entry(key) {
                Entry::Occupied(_) => continue,
                Entry::Vacant(slot) => slot,
            };
            let had_lone_surrogates = scan.repaired.is_some();
            let rewritten = if scan.reserved {
                match rename_reserved(scan.repaired.as_deref().unwrap_or(item)) {
                    Ok(renamed) => Some(renamed),
                    Err(why) => {
                        rejects.push((why, item));
                        continue;
                    }
                }
            } else {
                scan.repaired
            };
            let key = if deferred {
                let key = slot.into_key();
                // An item twice on one page is written once.
                if !page_keys.insert(key.clone()) {
                    continue;
                }
                Some(key)
            } else {
                slot.insert(time);
                None
            };
            chosen.push(Chosen {
                item,
                rewritten,
                id: scan.id,
                time,
                key,
                replaced_utf8: page.replaced_invalid_utf8 && item.contains('\u{FFFD}'),
                replaced_surrogates: had_lone_surrogates,
            });
        }
        // With a lookup, a group of lines at a time: its lookups, then its
        // lines, appended before the next group is looked up, so the answers
        // held at once are a group's (each up to one answer's size), not a
        // page's. A failed lookup writes nothing of its group.
        let group_len = match lookup {
            Some(_) => LOOKUP_GROUP_PER_SLOT * self.settings.concurrency.max(1) as usize,
            None => chosen.len().max(1),
        };
        // Repairs are reported for the lines appended, also when a later
        // group's lookup fails: the next run skips those lines as written.
        let (mut replaced_utf8, mut replaced_surrogates) = (0u64, 0u64);
        let groups_done = (|| -> Result<()> {
            for group in chosen.chunks_mut(group_len) {
                let answers = match lookup {
                    None => None,
                    Some(lookup) => {
                        let asks: Vec<Ask<'_>> = group
                            .iter()
                            .map(|c| Ask {
                                id: &c.id,
                                time: c.time,
                            })
                            .collect();
                        let answers = self.lookups.answers(lookup, kind, &asks)?;
                        self.sources[at].tally.lookups += answers.requests;
                        Some((lookup, answers))
                    }
                };
                // One buffer for the whole run, for the reason `ApiClient::recycle` gives.
                let mut lines = std::mem::take(&mut self.line_buffer);
                lines.clear();
                let source = &mut self.sources[at];
                for (i, chosen) in group.iter_mut().enumerate() {
                    let item = chosen.rewritten.as_deref().unwrap_or(chosen.item);
                    match (&answers, &snapshot_time) {
                        (Some((lookup, answers)), _) => push_line_adding(
                            &mut lines,
                            &prefix,
                            item,
                            lookup.added_key(),
                            &answers.values[i],
                        ),
                        (None, Some(time)) => push_line_adding(
                            &mut lines,
                            &prefix,
                            item,
                            SNAPSHOT_TIME_KEY,
                            time.as_bytes(),
                        ),
                        (None, None) => push_line(&mut lines, &prefix, item),
                    }
                    if let Some(key) = chosen.key.take() {
                        source.seen.insert(key, chosen.time);
                    }
                }
                if let Err(err) = self.output.append(&lines) {
                    self.append_failed = true;
                    return Err(err);
                }
                self.line_buffer = lines;
                // Counted as appended, not once the page or slice is done: after
                // a failure in a later group (75), `finish` commits these lines'
                // keys, so no later run writes or counts them again.
                let count = group.len() as u64;
                outcome.written += count;
                self.sources[at].tally.events += count;
                self.checkpoint_state(kind).events_written += count;
                replaced_utf8 += group.iter().filter(|c| c.replaced_utf8).count() as u64;
                replaced_surrogates +=
                    group.iter().filter(|c| c.replaced_surrogates).count() as u64;
            }
            Ok(())
        })();
        if replaced_utf8 > 0 {
            crate::warn!(
                "{} page {number}: the answer held bytes that are not UTF-8; {replaced_utf8} \
                 item(s) were written with U+FFFD in their place",
                kind.name
            );
        }
        if replaced_surrogates > 0 {
            crate::warn!(
                "{} page {number}: {replaced_surrogates} item(s) held lone surrogate escapes \
                 (\\ud800 to \\udfff alone), which readers refuse; they were written with \
                 \\ufffd (U+FFFD) in their place",
                kind.name
            );
        }
        groups_done?;
        let source = &mut self.sources[at];
        for (why, item) in rejects {
            if self
                .dead_letter
                .keep(&mut source.rejected, kind, number, &why, item)
            {
                source.tally.rejected += 1;
                if let Some(state) = self.checkpoint.sources.get_mut(kind.name) {
                    state.rejected_total += 1;
                }
            }
        }
        self.dead_letter.append_if_large()?;
        let source = &mut self.sources[at];
        let expected = *source.expected_pages.get_or_insert(total_pages);
        source.tally.pages += 1;
        let (pages, events, lookups) = (
            source.tally.pages,
            source.tally.events,
            source.tally.lookups,
        );
        if let Some(progress) = &mut self.progress {
            progress.page(kind, pages, expected, events, lookups);
        }
        Ok(outcome)
    }

    /// Output durable first, then the checkpoint that covers it, with every
    /// key written so far that a later run may meet (also those of a slice
    /// still in progress, whose lines the new output mark moves past).
    fn commit(&mut self) -> Result<()> {
        let now = Utc::now();
        for source in &self.sources {
            if let Some(state) = self.checkpoint.sources.get_mut(source.kind.name) {
                state.set_seen(&source.seen);
                state.rejected = source.rejected.to_keep(now);
            }
        }
        self.dead_letter.append()?;
        self.output.sync()?;
        if self.keep_output_mark {
            // The recovered lines stay past the mark, uncovered: the marker
            // stays too, so that the next run reads them again.
            return self.checkpoint.save(&self.checkpoint_path);
        }
        let mark = self.output.mark()?;
        if let Some(mark) = &mark {
            self.checkpoint.output = Some(mark.clone());
        }
        self.checkpoint.save(&self.checkpoint_path)?;
        if let Some(mark) = &mark {
            self.output.committed(mark);
        }
        Ok(())
    }

    /// The last commit, also after a failure: what the finished slices did
    /// is kept, and `status` can tell how the run ended. Not after a failure
    /// to write (74) or a failed append (also 75, the wait for the output's
    /// lock): the output may lack lines whose keys are in `seen` by then (see
    /// `process_page`), and the checkpoint may be what failed.
    fn finish(&mut self, result: Result<()>) -> Result<()> {
        if let Some(progress) = &mut self.progress {
            progress.end_line();
        }
        if self.append_failed {
            return result;
        }
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

    fn summary(&self, figures: &RunFigures, result: &Result<()>) -> String {
        let sources: Vec<String> = self
            .sources
            .iter()
            .filter(|source| source.fetched)
            .map(|SourceRun { kind, tally, .. }| {
                let rejected = if tally.rejected > 0 {
                    format!(", {} rejected", tally.rejected)
                } else {
                    String::new()
                };
                let lookups = if self.settings.enrich.iter().any(|l| kind.lookup == Some(*l)) {
                    format!(", {} lookups", tally.lookups)
                } else {
                    String::new()
                };
                format!(
                    "{} {} new ({} pages{lookups}{rejected})",
                    kind.name, tally.events, tally.pages
                )
            })
            .collect();
        format!(
            "{} {}: {}; {} requests, {} retries, {} rate-limited, {:.2}s",
            self.job.name(),
            if result.is_ok() { "done" } else { "stopped" },
            sources.join(", "),
            figures.requests,
            figures.retries,
            figures.rate_limited,
            figures.duration_seconds
        )
    }
}

/// Each source's state at the start of a run: the sources in `--sources`
/// first, in their order, then every other one. Each knows the keys its
/// checkpoint entry and the output's recovery found, also those not fetched
/// now: once the output mark moves past their lines, only `seen` remembers them.
fn source_runs(
    fetched: &[SourceKind],
    checkpoint: &Checkpoint,
    recovered: &[RecoveredEvent],
) -> Vec<SourceRun> {
    let others = sources::ALL.iter().filter(|kind| !fetched.contains(kind));
    fetched
        .iter()
        .chain(others)
        .map(|&kind| {
            let state = checkpoint.source(kind);
            let mut seen: Seen = state.map(SourceState::seen_map).unwrap_or_default();
            seen.extend(
                recovered
                    .iter()
                    .filter(|event| event.kind == kind)
                    .map(|event| (event.key.clone(), event.time)),
            );
            SourceRun {
                kind,
                fetched: fetched.contains(&kind),
                seen,
                rejected: Remembered::from_state(state),
                tally: SourceTally::default(),
                expected_pages: None,
            }
        })
        .collect()
}
