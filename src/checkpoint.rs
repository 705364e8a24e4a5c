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

use crate::error::{ExitKind, fail};
use crate::output::OutputMark;
use crate::sources::SourceKind;
use anyhow::Result;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bumped when a change would make older versions misread the file.
pub const FORMAT: u32 = 1;
pub const FILE_NAME: &str = "checkpoint.json";

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
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(fail(
                    ExitKind::Checkpoint,
                    format!("cannot read the checkpoint {}: {err}", path.display()),
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
        if version.format > FORMAT {
            return Err(fail(
                ExitKind::Checkpoint,
                format!(
                    "the checkpoint {} has format {}, written by a newer cylance-logs (this one \
                     reads format {FORMAT}); upgrade, or {}",
                    path.display(),
                    version.format,
                    recovery_hint(path)
                ),
            ));
        }
        let checkpoint: Checkpoint = serde_json::from_slice(&bytes).map_err(|err| {
            fail(
                ExitKind::Checkpoint,
                format!(
                    "the checkpoint {} is invalid ({err}); it was left as it is; {}",
                    path.display(),
                    recovery_hint(path)
                ),
            )
        })?;
        for (name, state) in &checkpoint.sources {
            if SourceKind::from_name(name).is_none() || state.covered_since > state.cursor {
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
        let mut file =
            std::fs::File::create(&temp).map_err(|e| io_error("creating the temp file", e))?;
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
        self.sources.get(kind.name())
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
