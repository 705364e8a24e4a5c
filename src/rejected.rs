//! The dead-letter file `rejected.jsonl` in the state directory: items the
//! API sent that cannot be placed (no key, no valid time, not an object...).
//!
//! Such an item is not written to the output and does not stop the run: it
//! is kept here once, one JSON line (`rejected_at`, `source`, `page`,
//! `reason`, the item as it came), with one warning. Items are remembered by
//! a hash of their bytes for [`MEMORY`] (at most [`MAX_REMEMBERED`] per
//! source, in the checkpoint), so a poll whose overlap shows the same item
//! again stays quiet. Lines are held for the commit and appended, synced,
//! before the checkpoint that remembers them; a window full of bad items is
//! appended early rather than held in memory.

use crate::checkpoint::{RejectedKey, SourceState};
use crate::error::{ExitKind, fail};
use crate::sources::{SourceKind, push_one_line};
use anyhow::Result;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The file's name in the state directory.
pub const FILE_NAME: &str = "rejected.jsonl";
/// A rejected item is remembered this long after it was first met; a
/// backfill meeting it later reports it again.
const MEMORY: TimeDelta = TimeDelta::days(7);
/// At most this many rejected items are remembered per source, newest kept.
const MAX_REMEMBERED: usize = 10_000;
/// Dead-letter lines held in memory for the next commit, at most (bytes).
const MAX_HELD: usize = 4 << 20;

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// One source's rejected items met lately: hash of the bytes, first met.
#[derive(Debug, Default)]
pub struct Remembered(HashMap<String, DateTime<Utc>>);

impl Remembered {
    pub fn from_state(state: Option<&SourceState>) -> Remembered {
        Remembered(state.map_or_else(HashMap::new, |state| {
            state
                .rejected
                .iter()
                .map(|r| (r.hash.clone(), r.first_seen))
                .collect()
        }))
    }

    /// Whether `item` is met for the first time lately (and now remembered).
    fn first_time(&mut self, item: &str, now: DateTime<Utc>) -> bool {
        let digest = Sha256::digest(item.as_bytes());
        let hash: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        match self.0.entry(hash) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(now);
                true
            }
        }
    }

    /// What the checkpoint keeps: bounded by [`MEMORY`] and
    /// [`MAX_REMEMBERED`], oldest first for a stable file.
    pub fn to_keep(&self, now: DateTime<Utc>) -> Vec<RejectedKey> {
        let mut kept: Vec<RejectedKey> = self
            .0
            .iter()
            .filter(|(_, first_seen)| now - **first_seen < MEMORY)
            .map(|(hash, first_seen)| RejectedKey {
                hash: hash.clone(),
                first_seen: *first_seen,
            })
            .collect();
        kept.sort_by(|a, b| (a.first_seen, &a.hash).cmp(&(b.first_seen, &b.hash)));
        let excess = kept.len().saturating_sub(MAX_REMEMBERED);
        kept.drain(..excess);
        kept
    }
}

/// The dead-letter lines of this run not yet in the file.
pub struct DeadLetter {
    path: PathBuf,
    held: Vec<u8>,
}

impl DeadLetter {
    pub fn new(state_dir: &Path) -> DeadLetter {
        DeadLetter {
            path: path_in(state_dir),
            held: Vec::new(),
        }
    }

    /// Keeps `item` (page `page` of `kind`, not placed because `why`) and
    /// warns, unless `remembered` says it was met lately: then it was
    /// reported already. Returns whether it was kept.
    pub fn keep(
        &mut self,
        remembered: &mut Remembered,
        kind: SourceKind,
        page: u32,
        why: &str,
        item: &str,
    ) -> bool {
        let now = Utc::now();
        if !remembered.first_time(item, now) {
            return false;
        }
        crate::warn!(
            "{} page {page}: an item was not written ({why}); it is kept in {}",
            kind.name,
            self.path.display()
        );
        let head = format!(
            "{{\"rejected_at\":\"{}\",\"source\":\"{}\",\"page\":{page},\"reason\":{},\"item\":",
            now.to_rfc3339_opts(SecondsFormat::Secs, true),
            kind.name,
            serde_json::to_string(why).expect("a string serializes")
        );
        push_one_line(&mut self.held, head.as_bytes());
        // Items are valid JSON (the page parsed), so the item goes in as it came.
        push_one_line(&mut self.held, item.trim().as_bytes());
        self.held.extend_from_slice(b"}\n");
        true
    }

    /// Appends early when more than [`MAX_HELD`] wait, so a window of bad
    /// items does not pile up in memory (after a crash before the commit,
    /// the next run appends them again).
    pub fn append_if_large(&mut self) -> Result<()> {
        if self.held.len() > MAX_HELD {
            self.append()?;
        }
        Ok(())
    }

    /// Appends what is held, durably: before the checkpoint that stops these
    /// items from being reported again. Owner-only, as items may be
    /// sensitive, and not through a symlink or a hard link planted in the
    /// state directory.
    pub fn append(&mut self) -> Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            // O_NONBLOCK: a FIFO planted at the name must not hang the run
            // (no effect on a regular file's writes).
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&self.path)
            .and_then(|mut file| {
                let meta = file.metadata()?;
                if !meta.is_file() {
                    return Err(std::io::Error::other(
                        "it is not a regular file; refused, move it away",
                    ));
                }
                // Items may be sensitive: not into another file's bytes
                // through a second name (a hard link).
                if meta.nlink() > 1 {
                    return Err(std::io::Error::other(
                        "it has other names (hard links); refused, move it away",
                    ));
                }
                file.write_all(&self.held)?;
                file.sync_all()
            })
            .map_err(|err| {
                // A FIFO without a reader fails the open itself (ENXIO).
                let special = std::fs::symlink_metadata(&self.path)
                    .is_ok_and(|meta| !meta.is_file() && !meta.is_symlink());
                let why = if special {
                    "it is not a regular file; refused, move it away".to_string()
                } else {
                    err.to_string()
                };
                fail(
                    ExitKind::Io,
                    format!(
                        "cannot append rejected items to {}: {why}",
                        self.path.display()
                    ),
                )
            })?;
        self.held.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_items_are_remembered_a_week_at_most_newest_ten_thousand() {
        let now = Utc::now();
        let week = Remembered(HashMap::from([
            ("old".to_string(), now - MEMORY),
            ("young".to_string(), now - MEMORY + TimeDelta::seconds(1)),
        ]));
        let kept = week.to_keep(now);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].hash, "young", "a week old is forgotten");
        let many = Remembered(
            (0..MAX_REMEMBERED as i64 + 5)
                .map(|i| (format!("h{i}"), now - TimeDelta::seconds(i)))
                .collect(),
        );
        let kept = many.to_keep(now);
        assert_eq!(kept.len(), MAX_REMEMBERED);
        assert!(
            kept.iter().all(|k| k.hash != "h10004"),
            "the oldest go first over the cap"
        );
        assert_eq!(kept.last().unwrap().hash, "h0", "oldest first, newest last");
    }

    #[test]
    fn the_same_item_is_kept_once() {
        let mut remembered = Remembered::default();
        let now = Utc::now();
        assert!(remembered.first_time("{\"a\":1}", now));
        assert!(!remembered.first_time("{\"a\":1}", now));
        assert!(remembered.first_time("{\"a\":2}", now));
    }
}
