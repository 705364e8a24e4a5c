//! The checkpoint: what has been written, per source, and where the output
//! file stood at the last commit.
//!
//! A readable JSON file in the state directory, replaced atomically (temp file
//! in the same directory, fsync, rename, fsync the directory) so that a crash
//! leaves either the old or the new version, never a torn one. A checkpoint
//! that cannot be read is never overwritten: the run stops with exit 65 and
//! the file stays byte for byte as it was.
//!
//! Per source the written history is one contiguous range
//! `[covered_since, cursor)`: poll moves `cursor` forward, backfill moves
//! `covered_since` back. `seen` holds the keys of written events that a later
//! run may be shown again, those at or after `cursor - overlap`, and any
//! recovered from an interrupted run outside the range, so the file stays
//! small whatever the number of runs or events.
//!
//! Formats: every format an earlier release wrote is read and upgraded, in
//! memory, to [`FORMAT`], which the next commit writes; a format no release
//! wrote (0, or newer than this one knows) is refused (65), never guessed at.
//! The temp file is created anew after removing a stale one, so a symlink
//! planted at its name is removed, never followed.

use crate::error::{ExitKind, fail};
use crate::output::OutputMark;
use crate::sources::{self, SourceKind};
use anyhow::Result;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bumped when a change would make older versions misread the file; then
/// `Checkpoint::upgrade` learns to read the format before it.
pub const FORMAT: u32 = 1;
pub const FILE_NAME: &str = "checkpoint.json";
/// Largest checkpoint read. Its size is bounded by the keys of one overlap
/// (a few hundred KiB for thousands of events in 10 minutes); past this it
/// was not written by this tool.
pub const MAX_SIZE: u64 = 64 * 1024 * 1024;
/// How far in the future a cursor may be before it is warned about: more
/// than clock skew between this host and the API.
pub const FUTURE_SLACK: TimeDelta = TimeDelta::minutes(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: u32,
    pub tenant_id: String,
    /// Where the output stood at the last commit; crash recovery reads on from here.
    #[serde(default)]
    pub output: Option<OutputMark>,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceState>,
    #[serde(default)]
    pub last_run: Option<RunRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceState {
    /// Start of the written range (inclusive).
    pub covered_since: DateTime<Utc>,
    /// End of the written range (exclusive): the next poll starts here, less the overlap.
    pub cursor: DateTime<Utc>,
    /// Events written to the output by this state directory, ever.
    pub events_written: u64,
    pub last_success: Option<DateTime<Utc>>,
    /// Keys of written events that a later window may show again.
    #[serde(default)]
    pub seen: Vec<SeenKey>,
    /// Items kept in `rejected.jsonl` (not written to the output), ever.
    #[serde(default)]
    pub rejected_total: u64,
    /// Items recently rejected, so that a later window showing them again
    /// neither warns nor keeps them twice (see `run.rs` for the bound).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedKey>,
    /// A snapshot source's (devices) latest snapshot. Its `seen` holds the
    /// keys written of that snapshot while it is incomplete. Absent for
    /// windowed sources; added after format 1's first release, which reads
    /// it as absent (no format change: no release misreads a file with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotState>,
}

/// A snapshot source's latest snapshot.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotState {
    /// The `snapshot_time` of its lines (whole seconds), committed before
    /// its first line is written, so that a run completing it uses the same.
    pub time: DateTime<Utc>,
    /// Every page was read; an incomplete one is completed by the next run.
    pub complete: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RejectedKey {
    /// SHA-256 of the item's bytes, the first 128 bits in hex.
    pub hash: String,
    pub first_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeenKey {
    pub key: String,
    pub time: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub command: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub exit_code: u8,
    /// The one-line error of a failed run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Reads at most [`MAX_SIZE`] bytes; a larger file is an error.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SIZE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB, which no cylance-logs writes",
            MAX_SIZE >> 20
        )));
    }
    Ok(bytes)
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

fn recovery_hint(path: &Path) -> String {
    format!(
        "restore {} from a backup, or move it away and run `cylance-logs backfill --since TIME` \
         to rebuild it",
        path.display()
    )
}

impl Checkpoint {
    pub fn new(tenant_id: &str) -> Checkpoint {
        Checkpoint {
            format: FORMAT,
            tenant_id: tenant_id.to_string(),
            output: None,
            sources: BTreeMap::new(),
            last_run: None,
        }
    }

    /// Reads the checkpoint; `Ok(None)` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>> {
        let bytes = match read_bounded(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(fail(
                    ExitKind::Checkpoint,
                    format!(
                        "cannot read the checkpoint {}: {err}; it was left as it is",
                        path.display()
                    ),
                ));
            }
        };
        // Read the version first, so a newer format gets a clear message
        // rather than a field error.
        #[derive(Deserialize)]
        struct Version {
            format: u32,
        }
        let version: Version = serde_json::from_slice(&bytes).map_err(|err| {
            fail(
                ExitKind::Checkpoint,
                format!(
                    "the checkpoint {} is corrupt or truncated ({err}); it was left as it is; {}",
                    path.display(),
                    recovery_hint(path)
                ),
            )
        })?;
        let checkpoint = Checkpoint::upgrade(version.format, &bytes, path)?;
        // Times outside any real history are refused, not acted on; at
        // chrono's limits, window arithmetic (`cursor - overlap`) panics.
        let (earliest, latest) = (
            DateTime::<Utc>::UNIX_EPOCH,
            DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
                .expect("a valid constant")
                .with_timezone(&Utc),
        );
        for (name, state) in &checkpoint.sources {
            if sources::from_name(name).is_none()
                || state.covered_since > state.cursor
                || state.covered_since < earliest
                || state.cursor > latest
            {
                return Err(fail(
                    ExitKind::Checkpoint,
                    format!(
                        "the checkpoint {} has an invalid entry for source '{name}'; {}",
                        path.display(),
                        recovery_hint(path)
                    ),
                ));
            }
        }
        Ok(Some(checkpoint))
    }

    /// Reads a checkpoint of format `format` as the current one. Each format
    /// a release wrote has its arm; the next commit writes [`FORMAT`].
    fn upgrade(format: u32, bytes: &[u8], path: &Path) -> Result<Checkpoint> {
        let invalid = |err: serde_json::Error| {
            fail(
                ExitKind::Checkpoint,
                format!(
                    "the checkpoint {} is invalid ({err}); it was left as it is; {}",
                    path.display(),
                    recovery_hint(path)
                ),
            )
        };
        match format {
            // The current format, written since the first release.
            1 => serde_json::from_slice(bytes).map_err(invalid),
            newer if newer > FORMAT => Err(fail(
                ExitKind::Checkpoint,
                format!(
                    "the checkpoint {} has format {newer}, written by a newer cylance-logs (this \
                     one reads format {FORMAT}); upgrade, or {}",
                    path.display(),
                    recovery_hint(path)
                ),
            )),
            never => Err(fail(
                ExitKind::Checkpoint,
                format!(
                    "the checkpoint {} has format {never}, which no cylance-logs ever wrote; it \
                     was left as it is; {}",
                    path.display(),
                    recovery_hint(path)
                ),
            )),
        }
    }

    /// Sources whose cursor lies more than [`FUTURE_SLACK`] after `now`:
    /// polls fetch nothing for them until the clock gets there.
    pub fn future_cursors(&self, now: DateTime<Utc>) -> Vec<(&str, DateTime<Utc>)> {
        self.sources
            .iter()
            .filter(|(_, state)| state.cursor > now + FUTURE_SLACK)
            .map(|(name, state)| (name.as_str(), state.cursor))
            .collect()
    }

    /// Warns, one line per source, about cursors in the future; every run
    /// does, since such a source is silently fetching nothing.
    pub fn warn_about_future_cursors(&self, now: DateTime<Utc>) {
        for (name, cursor) in self.future_cursors(now) {
            crate::warn!(
                "the checkpoint's {name} cursor {} is in the future (now {}); polls fetch \
                 nothing for {name} until then: check the clock, or move the checkpoint away \
                 and backfill",
                crate::timefmt::display(cursor),
                crate::timefmt::display(now)
            );
        }
    }

    /// Replaces the file atomically and durably.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io_error = |what: &str, err: std::io::Error| {
            fail(
                ExitKind::Io,
                format!(
                    "cannot write the checkpoint {}: {what}: {err}",
                    path.display()
                ),
            )
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let temp = path.with_extension("json.tmp");
        let mut bytes = serde_json::to_vec_pretty(self).expect("a checkpoint serializes");
        bytes.push(b'\n');
        // A stale temp (a crash) or a planted symlink is removed itself,
        // never written through; create_new then refuses anything that
        // appears there meanwhile.
        match std::fs::remove_file(&temp) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_error("removing a stale temp file", err));
            }
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| io_error("creating the temp file", e))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("writing the temp file", e))?;
        drop(file);
        std::fs::rename(&temp, path).map_err(|e| io_error("renaming the temp file", e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("syncing the directory", e))?;
        Ok(())
    }

    pub fn source(&self, kind: SourceKind) -> Option<&SourceState> {
        self.sources.get(kind.name)
    }
}

impl SourceState {
    /// Nothing written yet; the range starts empty at `at`.
    pub fn empty_at(at: DateTime<Utc>) -> SourceState {
        SourceState {
            covered_since: at,
            cursor: at,
            events_written: 0,
            last_success: None,
            seen: Vec::new(),
            rejected_total: 0,
            rejected: Vec::new(),
            snapshot: None,
        }
    }

    /// Keys to skip as already written, by key.
    pub fn seen_map(&self) -> HashMap<String, DateTime<Utc>> {
        self.seen.iter().map(|s| (s.key.clone(), s.time)).collect()
    }

    /// Whether a written event's key must be kept for dedupe: a later run
    /// may still meet it at or after `cursor - overlap` (the next poll looks
    /// again there) or before `covered_since` (a later backfill gets there).
    /// Everything else lies in a range no run fetches again.
    pub fn keeps(&self, time: DateTime<Utc>, overlap: TimeDelta) -> bool {
        time >= self.cursor - overlap || time < self.covered_since
    }

    /// Stores the keys to remember, sorted for a stable file. The caller
    /// prunes them with [`SourceState::keeps`].
    pub fn set_seen(&mut self, seen: &HashMap<String, DateTime<Utc>>) {
        let mut kept: Vec<SeenKey> = seen
            .iter()
            .map(|(key, time)| SeenKey {
                key: key.clone(),
                time: *time,
            })
            .collect();
        kept.sort_by(|a, b| (a.time, &a.key).cmp(&(b.time, &b.key)));
        self.seen = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn keeps_only_keys_a_later_window_can_meet() {
        let state = SourceState {
            covered_since: t("2024-05-14T00:00:00Z"),
            cursor: t("2024-05-14T12:00:00Z"),
            ..SourceState::empty_at(t("2024-05-14T00:00:00Z"))
        };
        let overlap = TimeDelta::minutes(10);
        assert!(
            state.keeps(t("2024-05-14T11:55:00Z"), overlap),
            "inside the overlap"
        );
        assert!(
            state.keeps(t("2024-05-14T12:30:00Z"), overlap),
            "after the cursor"
        );
        assert!(
            state.keeps(t("2024-05-13T23:00:00Z"), overlap),
            "before the written range"
        );
        assert!(
            !state.keeps(t("2024-05-14T06:00:00Z"), overlap),
            "inside, never fetched again"
        );
        assert!(!state.keeps(t("2024-05-14T11:49:59Z"), overlap));
    }
}
