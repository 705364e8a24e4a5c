//! The output file: locked appends of whole lines, and crash recovery.
//!
//! Several pollers (one per tenant) may append to one file, so every append
//! holds an exclusive `flock` (std's `File::lock`) and writes whole lines in one
//! `write_all`. A writer killed mid-write leaves a line without its newline;
//! shippers never ship such a line, and the next writer, holding the lock,
//! cuts it off before appending, so no torn line stays in the file.
//!
//! Exactly-once across crashes: the checkpoint records where the file stood at
//! its last commit (`OutputMark`: device, inode, size and a hash of the bytes
//! just before that size). A run that finds the same file longer than that
//! reads the uncommitted tail and treats its own tenant's events there as
//! already written. When the file was rotated or truncated since, the tail is
//! the whole new file; lines that went into the rotated file are out of reach,
//! which is the one case that degrades to at-least-once.

use crate::error::{ExitKind, fail};
use crate::sources::{LineHead, SourceKind};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How many bytes before the mark are hashed to recognise the same content:
/// several whole lines, each with its own IDs and times.
const FINGERPRINT_LEN: u64 = 4096;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputMark {
    pub path: PathBuf,
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    /// FNV-1a of the (up to) 4 KiB before `size`, in hex.
    pub tail_hash: String,
}

/// An event found in the uncommitted tail.
#[derive(Debug, Clone)]
pub struct RecoveredEvent {
    pub kind: SourceKind,
    pub key: String,
    pub time: DateTime<Utc>,
}

pub enum Output {
    Stdout,
    File(OutputFile),
}

pub struct OutputFile {
    path: PathBuf,
    file: File,
}

fn output_error(path: &Path, what: &str, err: std::io::Error) -> anyhow::Error {
    fail(
        ExitKind::Io,
        format!("cannot {what} the output file {}: {err}", path.display()),
    )
}

impl Output {
    pub fn open(target: &crate::config::OutputTarget) -> Result<Output> {
        match target {
            crate::config::OutputTarget::Stdout => Ok(Output::Stdout),
            crate::config::OutputTarget::File(path) => Ok(Output::File(OutputFile::open(path)?)),
        }
    }

    /// Appends whole lines; see the module doc.
    pub fn append(&mut self, lines: &[u8]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        match self {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(lines)
                    .and_then(|()| out.flush())
                    .map_err(|e| {
                        fail(
                            ExitKind::Io,
                            format!("cannot write to standard output: {e}"),
                        )
                    })
            }
            Output::File(file) => file.append(lines),
        }
    }

    /// Makes what was appended durable; the checkpoint may then cover it.
    pub fn sync(&mut self) -> Result<()> {
        match self {
            Output::Stdout => Ok(()),
            Output::File(file) => file
                .file
                .sync_data()
                .map_err(|e| output_error(&file.path, "sync", e)),
        }
    }

    /// Where the file stands now, for the checkpoint. `None` for stdout.
    pub fn mark(&mut self) -> Result<Option<OutputMark>> {
        match self {
            Output::Stdout => Ok(None),
            Output::File(file) => file.mark().map(Some),
        }
    }

    /// Reads what was appended since `committed` and returns this tenant's
    /// events in it. `interrupted` says whether the previous run died.
    pub fn recover(
        &mut self,
        committed: Option<&OutputMark>,
        tenant_id: &str,
        interrupted: bool,
    ) -> Result<Vec<RecoveredEvent>> {
        match self {
            Output::Stdout => Ok(Vec::new()),
            Output::File(file) => file.recover(committed, tenant_id, interrupted),
        }
    }
}

impl OutputFile {
    fn open(path: &Path) -> Result<OutputFile> {
        let file = OpenOptions::new()
            .append(true)
            .read(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| output_error(path, "open", e))?;
        let meta = file.metadata().map_err(|e| output_error(path, "stat", e))?;
        if meta.is_dir() {
            return Err(fail(
                ExitKind::Io,
                format!("the output {} is a directory", path.display()),
            ));
        }
        Ok(OutputFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// If logrotate moved or deleted the file during this run, continue in
    /// the new file at the path rather than in the renamed one.
    fn follow_rotation(&mut self) -> Result<()> {
        let ours = self
            .file
            .metadata()
            .map_err(|e| output_error(&self.path, "stat", e))?;
        let moved = match std::fs::metadata(&self.path) {
            Ok(now) => now.ino() != ours.ino() || now.dev() != ours.dev(),
            Err(_) => true,
        };
        if moved {
            crate::info!(
                "the output {} was rotated; continuing in the new file",
                self.path.display()
            );
            *self = OutputFile::open(&self.path)?;
        }
        Ok(())
    }

    fn append(&mut self, lines: &[u8]) -> Result<()> {
        self.follow_rotation()?;
        let path = self.path.clone();
        self.file
            .lock()
            .map_err(|e| output_error(&path, "lock", e))?;
        let result = (|| {
            let size = self.cut_torn_line()?;
            if let Err(err) = self.file.write_all(lines) {
                // A short write (full disk) must not leave half a line behind.
                let _ = self.file.set_len(size);
                return Err(output_error(&path, "append to", err));
            }
            Ok(())
        })();
        let _ = self.file.unlock();
        result
    }

    /// With the lock held: if the file does not end in a newline, a writer
    /// died mid-line; cut the file back to its last whole line. Returns the
    /// size afterwards.
    fn cut_torn_line(&mut self) -> Result<u64> {
        let size = self
            .file
            .metadata()
            .map_err(|e| output_error(&self.path, "stat", e))?
            .len();
        if size == 0 || !self.file.metadata().map(|m| m.is_file()).unwrap_or(false) {
            return Ok(size);
        }
        let mut last = [0u8; 1];
        self.file
            .read_exact_at(&mut last, size - 1)
            .map_err(|e| output_error(&self.path, "read", e))?;
        if last[0] == b'\n' {
            return Ok(size);
        }
        let keep = self.last_line_end(size)?;
        crate::warn!(
            "the output {} ended in a partial line ({} bytes, from an interrupted writer); removed it",
            self.path.display(),
            size - keep
        );
        self.file
            .set_len(keep)
            .map_err(|e| output_error(&self.path, "truncate", e))?;
        Ok(keep)
    }

    /// Offset just after the last newline before `size`, 0 if none.
    fn last_line_end(&self, size: u64) -> Result<u64> {
        let mut end = size;
        let mut chunk = vec![0u8; 64 * 1024];
        while end > 0 {
            let start = end.saturating_sub(chunk.len() as u64);
            let part = &mut chunk[..(end - start) as usize];
            self.file
                .read_exact_at(part, start)
                .map_err(|e| output_error(&self.path, "read", e))?;
            if let Some(pos) = part.iter().rposition(|b| *b == b'\n') {
                return Ok(start + pos as u64 + 1);
            }
            end = start;
        }
        Ok(0)
    }

    fn fingerprint(&self, size: u64) -> Result<String> {
        let start = size.saturating_sub(FINGERPRINT_LEN);
        let mut bytes = vec![0u8; (size - start) as usize];
        self.file
            .read_exact_at(&mut bytes, start)
            .map_err(|e| output_error(&self.path, "read", e))?;
        Ok(format!("{:016x}", fnv1a(&bytes)))
    }

    fn mark(&mut self) -> Result<OutputMark> {
        self.follow_rotation()?;
        self.file
            .lock_shared()
            .map_err(|e| output_error(&self.path, "lock", e))?;
        let result = (|| {
            let meta = self
                .file
                .metadata()
                .map_err(|e| output_error(&self.path, "stat", e))?;
            Ok(OutputMark {
                path: self.path.clone(),
                device: meta.dev(),
                inode: meta.ino(),
                size: meta.len(),
                tail_hash: if meta.is_file() {
                    self.fingerprint(meta.len())?
                } else {
                    String::new()
                },
            })
        })();
        let _ = self.file.unlock();
        result
    }

    fn recover(
        &mut self,
        committed: Option<&OutputMark>,
        tenant_id: &str,
        interrupted: bool,
    ) -> Result<Vec<RecoveredEvent>> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| output_error(&self.path, "stat", e))?;
        if !meta.is_file() {
            return Ok(Vec::new());
        }
        self.file
            .lock()
            .map_err(|e| output_error(&self.path, "lock", e))?;
        let result = (|| {
            let size = self.cut_torn_line()?;
            let from = match committed {
                // First run with this state: nothing of ours can be uncommitted.
                None => return Ok(Vec::new()),
                Some(mark) => {
                    let same_file = mark.path == self.path
                        && mark.device == meta.dev()
                        && mark.inode == meta.ino()
                        && size >= mark.size
                        && self.fingerprint(mark.size)? == mark.tail_hash;
                    if same_file {
                        mark.size
                    } else {
                        if interrupted {
                            crate::warn!(
                                "the output {} was rotated or truncated after an interrupted run; \
                                 events of that run already in the rotated file may be written \
                                 again (at-least-once for that window)",
                                self.path.display()
                            );
                        }
                        0
                    }
                }
            };
            self.scan_tail(from, size, tenant_id)
        })();
        let _ = self.file.unlock();
        result
    }

    /// This tenant's events in `[from, to)` of the file.
    fn scan_tail(&mut self, from: u64, to: u64, tenant_id: &str) -> Result<Vec<RecoveredEvent>> {
        let mut found = Vec::new();
        if from >= to {
            return Ok(found);
        }
        let mut file = &self.file;
        file.seek(SeekFrom::Start(from))
            .map_err(|e| output_error(&self.path, "read", e))?;
        let mut reader = BufReader::new(file.take(to - from));
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| output_error(&self.path, "read", e))?;
            if read == 0 {
                break;
            }
            if let Some(event) = own_event(&line, tenant_id) {
                found.push(event);
            }
        }
        if !found.is_empty() {
            crate::info!(
                "found {} event(s) of an interrupted run in {}; they will not be written again",
                found.len(),
                self.path.display()
            );
        }
        Ok(found)
    }
}

/// The event a line holds, if it is one of this tenant's lines.
fn own_event(line: &[u8], tenant_id: &str) -> Option<RecoveredEvent> {
    let head: LineHead = serde_json::from_slice(line).ok()?;
    if head.tenant_id.as_deref() != Some(tenant_id) {
        return None;
    }
    let kind = SourceKind::from_event_type(head.event_type.as_deref()?)?;
    let meta = kind.meta(std::str::from_utf8(line).ok()?).ok()?;
    Some(RecoveredEvent {
        kind,
        key: meta.key,
        time: meta.time,
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `out.log` in a fresh directory, which goes away with this value
    /// (kept when the test fails, to look at).
    struct TempPath(PathBuf);

    impl std::ops::Deref for TempPath {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    impl AsRef<Path> for TempPath {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            if let (false, Some(dir)) = (std::thread::panicking(), self.0.parent()) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn temp_path(name: &str) -> TempPath {
        let dir = std::env::temp_dir().join(format!("cl-output-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempPath(dir.join("out.log"))
    }

    const LINE_A: &str = "{\"event_type\":\"detection\",\"tenant_id\":\"A\",\"Id\":\"x1\",\"ReceivedTime\":\"2024-05-14T09:00:00.000Z\"}\n";
    const LINE_B: &str = "{\"event_type\":\"detection\",\"tenant_id\":\"B\",\"Id\":\"x1\",\"ReceivedTime\":\"2024-05-14T09:00:00.000Z\"}\n";

    #[test]
    fn append_cuts_a_torn_line_left_by_a_killed_writer() {
        let path = temp_path("torn");
        std::fs::write(&path, format!("{LINE_A}{{\"event_type\":\"thr")).unwrap();
        let mut out = OutputFile::open(&path).unwrap();
        out.append(LINE_B.as_bytes()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{LINE_A}{LINE_B}")
        );
    }

    #[test]
    fn recovery_counts_only_this_tenants_lines_after_the_mark() {
        let path = temp_path("recover");
        std::fs::write(&path, LINE_A).unwrap();
        let mut out = OutputFile::open(&path).unwrap();
        let mark = out.mark().unwrap();
        out.append(format!("{LINE_B}{LINE_A}").as_bytes()).unwrap();
        let found = out.recover(Some(&mark), "A", true).unwrap();
        assert_eq!(found.len(), 1, "only A's line after the mark");
        assert_eq!(found[0].key, "x1");
        assert!(out.recover(Some(&mark), "C", true).unwrap().is_empty());
    }

    #[test]
    fn truncated_file_is_read_from_the_start() {
        let path = temp_path("copytruncate");
        let other = LINE_B.replace("x1", "x2");
        std::fs::write(&path, format!("{LINE_B}{other}")).unwrap();
        let mut out = OutputFile::open(&path).unwrap();
        let mark = out.mark().unwrap();
        // copytruncate, then enough new lines to grow past the old size.
        std::fs::write(&path, format!("{LINE_A}{LINE_B}{LINE_B}")).unwrap();
        let found = out.recover(Some(&mark), "A", false).unwrap();
        assert_eq!(found.len(), 1);
    }
}
