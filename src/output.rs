//! The output file: locked appends of whole lines, and crash recovery.
//!
//! Several pollers (one per tenant) may append to one file, so every append
//! holds an exclusive `flock` (std's `File::lock`) and writes whole lines in one
//! batch. The file may also be shared with programs that do not lock, or hold
//! text from before; the tool touches only bytes it can prove are its own:
//!
//! - A batch cut short by an error (full disk, file size limit) is taken back
//!   only if the file grew by exactly the bytes written and they read back
//!   as ours; otherwise they stay, with a warning.
//! - A partial last line (no newline) is removed only if the previous run
//!   ended uncleanly and this run has not appended yet, and the line starts
//!   at or after the checkpoint's mark of the same file, begins like one of
//!   this tenant's lines and is shorter than the longest line of ours: a
//!   writer of ours died mid-line. Any other partial line is
//!   left byte for byte and the batch starts with a newline, so our lines
//!   still start on a line of their own. Bytes a newline ends are never cut.
//! - A run with nothing to append does not write, truncate or lock the file
//!   exclusively.
//!
//! Only regular files are accepted: a FIFO, device or socket is refused before
//! anything is written (a FIFO with no reader would block, `/dev/null` would
//! swallow events that the checkpoint then records as written).
//!
//! Exactly-once across crashes: the checkpoint records where the file stood at
//! its last commit (`OutputMark`: device, inode, size and a hash of the bytes
//! just before that size). Before its first append a run creates the durable
//! marker `STATE_DIR/appending`; the commit that covers its lines removes it.
//! A run that finds the marker (or the lock file's line of a run that did not
//! end) reads the tail after the mark and treats its own tenant's events there
//! as already written. After a clean end the tail is not read: what other
//! tenants appended since is none of this run's business, and reading it would
//! make every run slower as the shared file grows. When the file was rotated
//! or truncated since the mark, the tail is the whole new file; lines that
//! went into the rotated file are out of reach, which is the one case that
//! degrades to at-least-once.

use crate::control::RunControl;
use crate::error::{ExitKind, fail};
use crate::sources::{self, SourceKind, line_prefix};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fs::{File, Metadata, OpenOptions, TryLockError};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How many bytes before the mark are hashed to recognise the same content:
/// several whole lines, each with its own IDs and times.
const FINGERPRINT_LEN: u64 = 4096;

/// No line of ours is longer: an item and a lookup's value (details, or
/// devices capped at `MAX_BODY` as written), each from an answer of at most
/// `MAX_BODY` bytes and at most tripled in the line (U+0085 becomes
/// `\u0085`, a byte not UTF-8 becomes U+FFFD); the prefix and the added key
/// fit in the rest.
const MAX_OWN_LINE: usize = 2 * 3 * crate::api::MAX_BODY as usize + 4096;

/// The marker's name in the state directory.
pub const PENDING_MARKER: &str = "appending";

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
    /// The start of each of this tenant's lines, one per source.
    prefixes: Vec<(SourceKind, String)>,
    /// The last committed mark: only bytes at or after it can be ours.
    committed: Option<OutputMark>,
    pending: PendingMarker,
    /// The previous run of this state directory did not end cleanly (its
    /// marker, or the lock file, says so) and this run has not appended yet:
    /// only then can a partial line at the end be a torn line of ours. After
    /// a clean end, or once this run has appended, it is someone else's,
    /// however much it looks like ours.
    unclean_end: bool,
    /// The last mark was put before a partial line of ours, left for the
    /// next append to cut (an idle run appends nothing).
    torn_line_kept: bool,
    /// Bounds the wait for the file lock (`None` in unit tests: no bound).
    control: Option<RunControl>,
}

fn output_error(path: &Path, what: &str, err: std::io::Error) -> anyhow::Error {
    fail(
        ExitKind::Io,
        format!("cannot {what} the output file {}: {err}", path.display()),
    )
}

/// What kind of file `meta` describes, if it is one the output cannot be.
fn special_kind(meta: &Metadata) -> Option<&'static str> {
    let kind = meta.file_type();
    if kind.is_fifo() {
        Some("FIFO (named pipe)")
    } else if kind.is_char_device() {
        Some("character device")
    } else if kind.is_block_device() {
        Some("block device")
    } else if kind.is_socket() {
        Some("socket")
    } else {
        None
    }
}

fn refuse_special(path: &Path, kind: &str) -> anyhow::Error {
    fail(
        ExitKind::Config,
        format!(
            "the output {} is a {kind}, not a regular file; give the path of a regular file \
             (or --output - for standard output)",
            path.display()
        ),
    )
}

impl Output {
    /// Opens the output; `state_dir` holds the marker of uncommitted appends.
    pub fn open(
        target: &crate::config::OutputTarget,
        state_dir: &Path,
        tenant_id: &str,
        control: RunControl,
    ) -> Result<Output> {
        match target {
            crate::config::OutputTarget::Stdout => Ok(Output::Stdout),
            crate::config::OutputTarget::File(path) => {
                refuse_state_file(path, state_dir)?;
                let mut file = OutputFile::open(path, PendingMarker::in_dir(state_dir), tenant_id)?;
                file.control = Some(control);
                Ok(Output::File(file))
            }
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

    /// A checkpoint holding `mark` and covering every line appended so far
    /// is saved: nothing of ours is uncommitted, the marker goes.
    pub fn committed(&mut self, mark: &OutputMark) {
        if let Output::File(file) = self {
            file.committed = Some(mark.clone());
            if !file.torn_line_kept {
                file.pending.clear();
            }
        }
    }

    /// After an unclean end (the marker, or `interrupted`: the lock file
    /// says the previous run did not finish), reads what was appended since
    /// `committed` and returns this tenant's events in it. After a clean end
    /// returns nothing without reading.
    pub fn recover(
        &mut self,
        committed: Option<&OutputMark>,
        interrupted: bool,
    ) -> Result<Vec<RecoveredEvent>> {
        match self {
            Output::Stdout => Ok(Vec::new()),
            Output::File(file) => file.recover(committed, interrupted),
        }
    }
}

/// Refuses an output that is one of the state directory's own files (also
/// through a symlink, also before it exists): the checkpoint's rename would
/// replace the lines, the lock's reset would empty them, while the
/// checkpoint records them as written.
fn refuse_state_file(path: &Path, state_dir: &Path) -> Result<()> {
    let own = state_files(state_dir);
    match resolved(path) {
        Some(target) if own.contains(&target) => Err(fail(
            ExitKind::Config,
            format!(
                "the output {} is the state directory's own {}; give the output a path of \
                 its own",
                path.display(),
                target.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// The files the tool keeps in the state directory, as real paths.
fn state_files(state_dir: &Path) -> Vec<PathBuf> {
    let Ok(state_dir) = state_dir.canonicalize() else {
        return Vec::new();
    };
    let checkpoint = crate::checkpoint::path_in(&state_dir);
    vec![
        checkpoint.with_extension("json.tmp"),
        checkpoint,
        state_dir.join(crate::lock::LOCK_FILE),
        state_dir.join(PENDING_MARKER),
        crate::rejected::path_in(&state_dir),
    ]
}

/// Refuses a `--metrics-file` that is the output or one of the state
/// directory's files: the metrics file is replaced by rename at the end of
/// every run, which would replace the log (or the checkpoint) with metrics.
pub fn refuse_metrics_clash(
    metrics: &Path,
    target: &crate::config::OutputTarget,
    state_dir: &Path,
) -> Result<()> {
    let Some(real) = resolved(metrics) else {
        return Ok(());
    };
    let output = match target {
        crate::config::OutputTarget::File(path) => resolved(path),
        crate::config::OutputTarget::Stdout => None,
    };
    if output.as_ref() == Some(&real) || state_files(state_dir).contains(&real) {
        return Err(fail(
            ExitKind::Config,
            format!(
                "--metrics-file {} is {}; the metrics file is replaced at the end of every \
                 run, so give it a path of its own",
                metrics.display(),
                if output.as_ref() == Some(&real) {
                    "the output".to_string()
                } else {
                    format!("the state directory's own {}", real.display())
                }
            ),
        ));
    }
    Ok(())
}

/// Where `path` leads: through symlinks, also to a file not there yet.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(real) = path.canonicalize() {
        return Some(real);
    }
    // A dangling symlink (or no file yet): its target, in its real directory.
    let target = match std::fs::read_link(path) {
        Ok(link) => path.parent().unwrap_or(Path::new(".")).join(link),
        Err(_) => path.to_path_buf(),
    };
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Some(dir.canonicalize().ok()?.join(target.file_name()?))
}

/// Opens `path` for appending, refusing anything but a regular file.
fn open_regular(path: &Path) -> Result<File> {
    // Checked before opening, so that a FIFO or device is never opened at all.
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_dir() {
            return Err(fail(
                ExitKind::Io,
                format!("the output {} is a directory", path.display()),
            ));
        }
        if let Some(kind) = special_kind(&meta) {
            return Err(refuse_special(path, kind));
        }
    }
    let file = OpenOptions::new()
        .append(true)
        .read(true)
        .create(true)
        .mode(0o640)
        // Should the path become a FIFO or device between the check above
        // and this open: O_NONBLOCK keeps the open from waiting for a reader
        // or a modem's carrier, O_NOCTTY keeps a terminal from becoming ours
        // (open(2)). Neither changes how a regular file is written.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| output_error(path, "open", e))?;
    let meta = file.metadata().map_err(|e| output_error(path, "stat", e))?;
    if let Some(kind) = special_kind(&meta) {
        return Err(refuse_special(path, kind));
    }
    Ok(file)
}

impl OutputFile {
    fn open(path: &Path, pending: PendingMarker, tenant_id: &str) -> Result<OutputFile> {
        Ok(OutputFile {
            path: path.to_path_buf(),
            file: open_regular(path)?,
            prefixes: sources::ALL
                .iter()
                .map(|&kind| (kind, line_prefix(kind, tenant_id)))
                .collect(),
            committed: None,
            pending,
            unclean_end: false,
            torn_line_kept: false,
            control: None,
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
            self.file = open_regular(&self.path)?;
        }
        Ok(())
    }

    fn append(&mut self, lines: &[u8]) -> Result<()> {
        self.follow_rotation()?;
        // Durable before the first byte: whatever ends this run, even a power
        // loss, the next run knows to look for these lines.
        self.pending.set()?;
        self.lock(Lock::Exclusive)?;
        let result = self.append_locked(lines);
        let _ = self.file.unlock();
        if result.is_ok() {
            // Whatever partial line of ours the unclean end left was cut
            // before this batch, and this run's batches are whole: a partial
            // line met from now on is someone else's.
            self.unclean_end = false;
        }
        result
    }

    /// Takes the file lock. Another program may hold it for as long as it
    /// likes: the wait ends, like the run, at `--max-runtime` or a signal
    /// (exit 75), never later.
    fn lock(&self, kind: Lock) -> Result<()> {
        let Some(control) = &self.control else {
            let locked = match kind {
                Lock::Exclusive => self.file.lock(),
                Lock::Shared => self.file.lock_shared(),
            };
            return locked.map_err(|e| output_error(&self.path, "lock", e));
        };
        // flock(2) has no timeout: try, and sleep in growing steps.
        let mut step = Duration::from_millis(1);
        loop {
            let tried = match kind {
                Lock::Exclusive => self.file.try_lock(),
                Lock::Shared => self.file.try_lock_shared(),
            };
            match tried {
                Ok(()) => return Ok(()),
                Err(TryLockError::Error(err)) => return Err(output_error(&self.path, "lock", err)),
                Err(TryLockError::WouldBlock) => {
                    control.sleep(step).map_err(|err| {
                        fail(
                            ExitKind::Temporary,
                            format!(
                                "waiting for the lock on the output file {} (another process \
                                 holds it): {err:#}",
                                self.path.display()
                            ),
                        )
                    })?;
                    step = (step * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    /// With the lock held. Sizes and bytes are read here, after taking the
    /// lock: a size read before it may be stale by a whole batch.
    fn append_locked(&mut self, lines: &[u8]) -> Result<()> {
        let (start, new_line) = self.where_to_start()?;
        let batch = if new_line {
            Cow::Owned([b"\n".as_slice(), lines].concat())
        } else {
            Cow::Borrowed(lines)
        };
        // write_all would hide how much of a short write got through.
        let mut written = 0;
        while written < batch.len() {
            let err = match self.file.write(&batch[written..]) {
                Ok(0) => std::io::Error::from(std::io::ErrorKind::WriteZero),
                Ok(n) => {
                    written += n;
                    continue;
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => err,
            };
            self.take_back(start, &batch[..written]);
            return Err(output_error(&self.path, "append to", err));
        }
        Ok(())
    }

    /// Where the batch goes, and whether it must start with a newline: a
    /// partial last line of ours is cut (see `own_partial_line`), any other
    /// is kept and ended by the batch's leading newline.
    fn where_to_start(&mut self) -> Result<(u64, bool)> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| output_error(&self.path, "stat", e))?;
        let size = meta.len();
        if self.ends_whole(size)? {
            return Ok((size, false));
        }
        if let Some(start) = self.own_partial_line(&meta)? {
            // An append-only file (chattr +a) cannot be cut: the partial
            // line then stays like anyone else's, rather than every run
            // failing on it.
            match self.file.set_len(start) {
                Ok(()) => {
                    crate::warn!(
                        "the output {} ended in a partial line of this tenant's ({} bytes, from \
                         an interrupted run); removed it",
                        self.path.display(),
                        size - start
                    );
                    return Ok((start, false));
                }
                Err(err) => {
                    crate::warn!(
                        "the output {} ends in a partial line of this tenant's ({} bytes, from \
                         an interrupted run) that cannot be removed ({err}); left it, the new \
                         lines start on a line of their own",
                        self.path.display(),
                        size - start
                    );
                    return Ok((size, true));
                }
            }
        }
        crate::warn!(
            "the output {} does not end in a newline and its last bytes were not written by \
             this run's tenant after its last commit; left them as they are, the new lines \
             start on a line of their own",
            self.path.display()
        );
        Ok((size, true))
    }

    /// Whether the first `size` bytes are empty or end in a newline.
    fn ends_whole(&self, size: u64) -> Result<bool> {
        if size == 0 {
            return Ok(true);
        }
        let mut last = [0u8; 1];
        self.file
            .read_exact_at(&mut last, size - 1)
            .map_err(|e| output_error(&self.path, "read", e))?;
        Ok(last[0] == b'\n')
    }

    /// Where the partial last line starts, if it is provably ours: the
    /// previous run ended uncleanly (a clean end leaves no torn line), and
    /// it starts at or after the committed mark of this very file and begins
    /// like one of this tenant's lines (`{"event_type":"<type>","tenant_id":
    /// <tenant>`, or as much of that as there is). Reads no further back than
    /// the mark.
    fn own_partial_line(&self, meta: &Metadata) -> Result<Option<u64>> {
        let Some(mark) = self.committed.as_ref().filter(|_| self.unclean_end) else {
            return Ok(None);
        };
        let size = meta.len();
        let same_file = mark.path == self.path
            && mark.device == meta.dev()
            && mark.inode == meta.ino()
            && size >= mark.size
            && self.fingerprint(mark.size)? == mark.tail_hash;
        if !same_file {
            return Ok(None);
        }
        // A newline at `mark.size - 1` or later ends what came before the
        // mark; without one, the partial line began before it. A torn line
        // of ours is shorter than our longest line: without a newline that
        // close to the end the partial line is someone else's (and it is
        // not read back to its start, which may be gigabytes away).
        let from = mark
            .size
            .saturating_sub(1)
            .max(size.saturating_sub(MAX_OWN_LINE as u64 + 1));
        let start = match self.last_newline(from, size)? {
            Some(pos) => pos + 1,
            None if mark.size == 0 && from == 0 => 0,
            None => return Ok(None),
        };
        let longest = self
            .prefixes
            .iter()
            .map(|(_, p)| p.len())
            .max()
            .unwrap_or(0) as u64;
        let mut head = vec![0u8; longest.min(size - start) as usize];
        self.file
            .read_exact_at(&mut head, start)
            .map_err(|e| output_error(&self.path, "read", e))?;
        // A kill may tear a line anywhere, also inside its first bytes: a
        // partial line shorter than the prefix is ours if all of it agrees.
        let ours = self.prefixes.iter().any(|(_, prefix)| {
            head.starts_with(prefix.as_bytes()) || prefix.as_bytes().starts_with(&head)
        });
        Ok(ours.then_some(start))
    }

    /// After a failed write, removes the `written` bytes of the batch that
    /// started at `start`, but only if the file grew by exactly them and they
    /// read back as written: a program appending without the lock may have
    /// written meanwhile, and its bytes are not ours to cut.
    fn take_back(&mut self, start: u64, written: &[u8]) {
        if written.is_empty() {
            return;
        }
        let len = written.len() as u64;
        let ours = self
            .file
            .metadata()
            .is_ok_and(|meta| meta.len() == start + len)
            && {
                let mut back = vec![0u8; written.len()];
                self.file.read_exact_at(&mut back, start).is_ok() && back == written
            };
        if ours && self.file.set_len(start).is_ok() {
            return;
        }
        crate::warn!(
            "could not take back the {len} bytes written to {} before the error (the file \
             changed meanwhile); a partial line may remain there",
            self.path.display()
        );
    }

    /// Offset of the last newline in `[from, to)`, read backwards in chunks.
    fn last_newline(&self, from: u64, to: u64) -> Result<Option<u64>> {
        let mut end = to;
        let mut chunk = vec![0u8; 64 * 1024];
        while end > from {
            let start = end.saturating_sub(chunk.len() as u64).max(from);
            let part = &mut chunk[..(end - start) as usize];
            self.file
                .read_exact_at(part, start)
                .map_err(|e| output_error(&self.path, "read", e))?;
            if let Some(pos) = part.iter().rposition(|b| *b == b'\n') {
                return Ok(Some(start + pos as u64));
            }
            end = start;
        }
        Ok(None)
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
        self.lock(Lock::Shared)?;
        let result = (|| -> Result<(OutputMark, bool)> {
            let meta = self
                .file
                .metadata()
                .map_err(|e| output_error(&self.path, "stat", e))?;
            // A partial line of ours stays after the mark, where the next
            // append can still prove it ours and cut it.
            let own_partial = if self.ends_whole(meta.len())? {
                None
            } else {
                self.own_partial_line(&meta)?
            };
            let size = own_partial.unwrap_or(meta.len());
            let mark = OutputMark {
                path: self.path.clone(),
                device: meta.dev(),
                inode: meta.ino(),
                size,
                tail_hash: self.fingerprint(size)?,
            };
            Ok((mark, own_partial.is_some()))
        })();
        let _ = self.file.unlock();
        let (mark, torn_line_kept) = result?;
        // The line is provably ours only while the unclean end is on record:
        // a commit at this mark keeps the marker for the next append.
        self.torn_line_kept = torn_line_kept;
        Ok(mark)
    }

    fn recover(
        &mut self,
        committed: Option<&OutputMark>,
        interrupted: bool,
    ) -> Result<Vec<RecoveredEvent>> {
        self.committed = committed.cloned();
        // First run with this state: nothing of ours can be uncommitted (a
        // run saves its first mark before it appends), so whatever comes
        // after the mark this run saves is someone else's.
        let Some(mark) = committed else {
            return Ok(Vec::new());
        };
        self.unclean_end = interrupted || self.pending.present;
        if !interrupted && !self.pending.present {
            crate::debug!(
                "the previous run ended cleanly; the output's tail after the last commit is not read"
            );
            return Ok(Vec::new());
        }
        // What is found here stays uncommitted until a commit covers it;
        // until then every run must read it again.
        self.pending.set()?;
        // Shared: appends hold the lock exclusively, so only whole batches are seen.
        self.lock(Lock::Shared)?;
        let result = (|| {
            let meta = self
                .file
                .metadata()
                .map_err(|e| output_error(&self.path, "stat", e))?;
            let size = meta.len();
            let same_file = mark.path == self.path
                && mark.device == meta.dev()
                && mark.inode == meta.ino()
                && size >= mark.size
                && self.fingerprint(mark.size)? == mark.tail_hash;
            let from = if same_file {
                mark.size
            } else {
                crate::warn!(
                    "the output {} was rotated or truncated after an interrupted run; events of \
                     that run already in the rotated file may be written again (at-least-once \
                     for that window)",
                    self.path.display()
                );
                0
            };
            self.scan_tail(from, size)
        })();
        let _ = self.file.unlock();
        result
    }

    /// This tenant's events in the whole lines of `[from, to)`: a last line
    /// without its newline is not a written event (the append cuts it if it
    /// is ours).
    fn scan_tail(&mut self, from: u64, to: u64) -> Result<Vec<RecoveredEvent>> {
        crate::debug!(
            "the previous run did not end cleanly; reading {} bytes of the output {} from \
             offset {from} to recover its lines",
            to.saturating_sub(from),
            self.path.display()
        );
        let mut found = Vec::new();
        if from >= to {
            return Ok(found);
        }
        let mut file = &self.file;
        file.seek(SeekFrom::Start(from))
            .map_err(|e| output_error(&self.path, "read", e))?;
        let mut reader = BufReader::new(Watched {
            inner: file.take(to - from),
            control: self.control.as_ref(),
            unchecked: 0,
            stopped: None,
        });
        let mut line = Vec::new();
        // Only a line that may be ours is kept in memory: other tenants' and
        // programs' lines (a blob of any size) are skipped as they are read.
        let may_be_ours = |line: &[u8]| {
            line.len() <= MAX_OWN_LINE
                && self.prefixes.iter().any(|(_, prefix)| {
                    let common = line.len().min(prefix.len());
                    line[..common] == prefix.as_bytes()[..common]
                })
        };
        loop {
            let whole = match next_line(&mut reader, &mut line, may_be_ours) {
                Ok(Some(whole)) => whole,
                Ok(None) => break,
                Err(err) => {
                    return Err(match reader.get_mut().stopped.take() {
                        Some(why) => fail(
                            ExitKind::Temporary,
                            format!(
                                "stopped reading the {} bytes of the output {} appended since \
                                 the last commit (after an unclean end): {why:#}; nothing was \
                                 written, the next run reads them again",
                                to - from,
                                self.path.display()
                            ),
                        ),
                        None => output_error(&self.path, "read", err),
                    });
                }
            };
            if whole && let Some(event) = self.own_event(&line) {
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

    /// The event a line holds, if it is one of this tenant's lines: they
    /// all start with one of its prefixes, so other lines are skipped unparsed.
    fn own_event(&self, line: &[u8]) -> Option<RecoveredEvent> {
        let &(kind, _) = self
            .prefixes
            .iter()
            .find(|(_, prefix)| line.starts_with(prefix.as_bytes()))?;
        let meta = kind.meta(std::str::from_utf8(line).ok()?).ok()?;
        Some(RecoveredEvent {
            kind,
            key: meta.key,
            time: meta.time,
        })
    }
}

#[derive(Clone, Copy)]
enum Lock {
    Exclusive,
    Shared,
}

/// Reads `inner`, asking `control` every [`WATCH_EVERY`] bytes whether the
/// run must stop (a signal, `--max-runtime`): after a long unclean end the
/// tail to read may be gigabytes of other programs' lines, and the run ends
/// at either, also then. The reason is kept here; the read fails meanwhile.
struct Watched<'c, R> {
    inner: R,
    control: Option<&'c RunControl>,
    unchecked: usize,
    stopped: Option<anyhow::Error>,
}

/// How much of the tail is read between two looks at the run's control.
const WATCH_EVERY: usize = 16 * 1024 * 1024;

impl<R: Read> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.unchecked >= WATCH_EVERY {
            self.unchecked = 0;
            if let Some(Err(why)) = self.control.map(RunControl::check) {
                self.stopped = Some(why);
                return Err(std::io::Error::other("the run must stop"));
            }
        }
        let read = self.inner.read(buf)?;
        self.unchecked += read;
        Ok(read)
    }
}

/// Reads the next line into `line`, keeping its bytes only while `keep`
/// says the start read so far may be wanted (else `line` is left empty and
/// the rest of the line skipped unread into memory). `None` at the end;
/// else whether `line` holds the whole line, newline included.
fn next_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    keep: impl Fn(&[u8]) -> bool,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let (mut keeping, mut any) = (true, false);
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if buf.is_empty() {
            return Ok(any.then_some(false));
        }
        any = true;
        let (used, ended) = match buf.iter().position(|b| *b == b'\n') {
            Some(pos) => (pos + 1, true),
            None => (buf.len(), false),
        };
        if keeping {
            line.extend_from_slice(&buf[..used]);
            if !keep(line) {
                keeping = false;
                line.clear();
            }
        }
        reader.consume(used);
        if ended {
            return Ok(Some(keeping));
        }
    }
}

/// `STATE_DIR/appending`: present while lines of this state directory's
/// tenant may sit in the output after the checkpoint's mark without a
/// checkpoint that covers them. Created (and made durable) before a run's
/// first append, removed by the commit that covers every line so far.
struct PendingMarker {
    path: PathBuf,
    present: bool,
}

impl PendingMarker {
    fn in_dir(state_dir: &Path) -> PendingMarker {
        let path = state_dir.join(PENDING_MARKER);
        PendingMarker {
            present: path.symlink_metadata().is_ok(),
            path,
        }
    }

    fn set(&mut self) -> Result<()> {
        if self.present {
            return Ok(());
        }
        let error = |err: std::io::Error| {
            fail(
                ExitKind::Io,
                format!("cannot create the marker {}: {err}", self.path.display()),
            )
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            // Never written through a symlink someone put in its place.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
            .map_err(error)?;
        file.write_all(
            b"a run is appending; lines after the checkpoint's output mark are looked for by the next run\n",
        )
        .and_then(|()| file.sync_all())
        .map_err(error)?;
        // The new name is durable only once its directory is.
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(error)?;
        }
        self.present = true;
        Ok(())
    }

    /// Not synced: a marker that comes back after a power loss costs one
    /// read of the tail, nothing else.
    fn clear(&mut self) {
        if !self.present {
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => self.present = false,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => self.present = false,
            Err(err) => crate::warn!(
                "cannot remove the marker {}: {err}; the next run reads the output's tail again",
                self.path.display()
            ),
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory per test: the output and the state directory.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("cl-output-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn out(&self) -> PathBuf {
            self.0.join("out.log")
        }

        fn open(&self, tenant: &str) -> OutputFile {
            OutputFile::open(&self.out(), PendingMarker::in_dir(&self.0), tenant).unwrap()
        }

        fn bytes(&self) -> String {
            std::fs::read_to_string(self.out()).unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const LINE_A: &str = "{\"event_type\":\"detection\",\"tenant_id\":\"A\",\"Id\":\"x1\",\"ReceivedTime\":\"2024-05-14T09:00:00.000Z\"}\n";
    const LINE_A2: &str = "{\"event_type\":\"detection\",\"tenant_id\":\"A\",\"Id\":\"x2\",\"ReceivedTime\":\"2024-05-14T09:00:00.000Z\"}\n";
    const LINE_B: &str = "{\"event_type\":\"detection\",\"tenant_id\":\"B\",\"Id\":\"x1\",\"ReceivedTime\":\"2024-05-14T09:00:00.000Z\"}\n";

    /// Opens the file as a run does: recover from `mark`, as after a kill.
    fn committed_at(scratch: &Scratch, mark: &OutputMark) -> OutputFile {
        let mut out = scratch.open("A");
        out.recover(Some(mark), true).unwrap();
        out
    }

    #[test]
    fn own_torn_line_after_the_mark_is_cut_before_appending() {
        let scratch = Scratch::new("own-torn");
        std::fs::write(scratch.out(), LINE_A).unwrap();
        let mark = scratch.open("A").mark().unwrap();
        let torn = &LINE_A2[..LINE_A2.len() - 20];
        std::fs::write(scratch.out(), format!("{LINE_A}{torn}")).unwrap();
        committed_at(&scratch, &mark)
            .append(LINE_A2.as_bytes())
            .unwrap();
        assert_eq!(scratch.bytes(), format!("{LINE_A}{LINE_A2}"));
    }

    #[test]
    fn own_line_torn_inside_its_prefix_is_cut_too() {
        let scratch = Scratch::new("own-torn-short");
        std::fs::write(scratch.out(), LINE_A).unwrap();
        let mark = scratch.open("A").mark().unwrap();
        std::fs::write(scratch.out(), format!("{LINE_A}{{\"event_ty")).unwrap();
        committed_at(&scratch, &mark)
            .append(LINE_A2.as_bytes())
            .unwrap();
        assert_eq!(scratch.bytes(), format!("{LINE_A}{LINE_A2}"));
    }

    /// After an unclean end only the first append can meet a torn line of
    /// ours: once this run has appended, a partial line that comes later is
    /// another program's, however much it looks like ours, and is kept; the
    /// commit then clears the marker.
    #[test]
    fn after_this_runs_first_append_a_partial_line_is_someone_elses() {
        let scratch = Scratch::new("later-partial");
        std::fs::write(scratch.out(), LINE_A).unwrap();
        let mark = scratch.open("A").mark().unwrap();
        PendingMarker::in_dir(&scratch.0).set().unwrap();
        let mut output = Output::File(committed_at(&scratch, &mark));
        output.append(LINE_A2.as_bytes()).unwrap();
        let mark = output.mark().unwrap().unwrap();
        output.committed(&mark);
        assert!(!scratch.0.join(PENDING_MARKER).exists());
        // Another program's line, torn inside the start all tenants share.
        let foreign = "{\"event_ty";
        let before = scratch.bytes();
        std::fs::write(scratch.out(), format!("{before}{foreign}")).unwrap();
        // The commit's mark goes past it, not before it as before a line of ours.
        let mark = output.mark().unwrap().unwrap();
        assert_eq!(mark.size, (before.len() + foreign.len()) as u64);
        output.committed(&mark);
        output.append(LINE_B.as_bytes()).unwrap();
        assert_eq!(scratch.bytes(), format!("{before}{foreign}\n{LINE_B}"));
    }

    /// A run killed before its first checkpoint (the lock file says so)
    /// appended nothing: the next run, the first with a mark, cuts no
    /// partial line that comes after that mark.
    #[test]
    fn without_a_checkpoint_an_unclean_end_left_no_line_of_ours() {
        let scratch = Scratch::new("first-unclean");
        std::fs::write(scratch.out(), LINE_A).unwrap();
        let mut output = Output::File(scratch.open("A"));
        assert!(output.recover(None, true).unwrap().is_empty());
        let mark = output.mark().unwrap().unwrap();
        output.committed(&mark);
        let foreign = "{\"event_ty";
        std::fs::write(scratch.out(), format!("{LINE_A}{foreign}")).unwrap();
        output.append(LINE_A2.as_bytes()).unwrap();
        assert_eq!(scratch.bytes(), format!("{LINE_A}{foreign}\n{LINE_A2}"));
    }

    /// A torn line of ours is shorter than the longest line we write: a
    /// partial line that begins like ours but is longer (here with a sparse
    /// hole) is someone else's, kept, and not read back to its start.
    #[test]
    fn a_partial_line_longer_than_any_of_ours_is_kept() {
        let scratch = Scratch::new("long-partial");
        std::fs::write(scratch.out(), LINE_A).unwrap();
        let mark = scratch.open("A").mark().unwrap();
        let start = &LINE_A2[..60];
        std::fs::write(scratch.out(), format!("{LINE_A}{start}")).unwrap();
        let size = (LINE_A.len() + MAX_OWN_LINE + 1) as u64;
        File::options()
            .write(true)
            .open(scratch.out())
            .unwrap()
            .set_len(size)
            .unwrap();
        committed_at(&scratch, &mark)
            .append(LINE_A2.as_bytes())
            .unwrap();
        let file = File::open(scratch.out()).unwrap();
        assert_eq!(
            file.metadata().unwrap().len(),
            size + 1 + LINE_A2.len() as u64
        );
        let mut head = vec![0u8; LINE_A.len() + start.len()];
        file.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(head, format!("{LINE_A}{start}").as_bytes());
    }

    #[test]
    fn other_tenants_torn_line_after_the_mark_is_kept_and_ended_by_a_newline() {
        let scratch = Scratch::new("foreign-torn");
        std::fs::write(scratch.out(), LINE_A).unwrap();
        let mark = scratch.open("A").mark().unwrap();
        let torn = &LINE_B[..LINE_B.len() - 20];
        std::fs::write(scratch.out(), format!("{LINE_A}{torn}")).unwrap();
        committed_at(&scratch, &mark)
            .append(LINE_A2.as_bytes())
            .unwrap();
        assert_eq!(scratch.bytes(), format!("{LINE_A}{torn}\n{LINE_A2}"));
    }

    #[test]
    fn own_looking_partial_line_before_the_mark_is_kept() {
        let scratch = Scratch::new("before-mark");
        let torn = &LINE_A2[..LINE_A2.len() - 20];
        std::fs::write(scratch.out(), format!("{LINE_A}{torn}")).unwrap();
        let mark = scratch.open("A").mark().unwrap();
        committed_at(&scratch, &mark)
            .append(LINE_A2.as_bytes())
            .unwrap();
        assert_eq!(scratch.bytes(), format!("{LINE_A}{torn}\n{LINE_A2}"));
    }

    #[test]
    fn without_a_mark_no_partial_line_is_cut() {
        let scratch = Scratch::new("no-mark");
        let torn = &LINE_A2[..LINE_A2.len() - 20];
        std::fs::write(scratch.out(), torn).unwrap();
        scratch.open("A").append(LINE_A.as_bytes()).unwrap();
        assert_eq!(scratch.bytes(), format!("{torn}\n{LINE_A}"));
    }

    #[test]
    fn a_failed_write_takes_back_only_its_own_bytes() {
        let scratch = Scratch::new("take-back");
        std::fs::write(scratch.out(), LINE_A).unwrap();
        let start = LINE_A.len() as u64;
        let partial = &LINE_A2.as_bytes()[..50];
        let mut out = scratch.open("A");
        // Alone in the file: the partial batch goes.
        out.file.write_all(partial).unwrap();
        out.take_back(start, partial);
        assert_eq!(scratch.bytes(), LINE_A);
        // A writer without the lock appended after it: nothing is cut.
        out.file.write_all(partial).unwrap();
        out.file.write_all(LINE_B.as_bytes()).unwrap();
        out.take_back(start, partial);
        let kept = format!("{LINE_A}{}{LINE_B}", &LINE_A2[..50]);
        assert_eq!(scratch.bytes(), kept);
        // Same size but other bytes (not ours): nothing is cut either.
        std::fs::write(scratch.out(), format!("{LINE_A}{}", &LINE_B[..50])).unwrap();
        out.take_back(start, partial);
        assert_eq!(scratch.bytes(), format!("{LINE_A}{}", &LINE_B[..50]));
    }

    #[test]
    fn recovery_counts_only_this_tenants_whole_lines_after_the_mark() {
        let scratch = Scratch::new("recover");
        std::fs::write(scratch.out(), LINE_A).unwrap();
        let mut out = scratch.open("A");
        let mark = out.mark().unwrap();
        // The last one lacks its newline: not a written event.
        let unended = LINE_A2.trim_end();
        out.append(format!("{LINE_B}{LINE_A}{unended}").as_bytes())
            .unwrap();
        let found = out.recover(Some(&mark), true).unwrap();
        assert_eq!(found.len(), 1, "only A's whole line after the mark");
        assert_eq!(found[0].key, "x1");
        let mut other = scratch.open("C");
        assert!(other.recover(Some(&mark), true).unwrap().is_empty());
    }

    /// The longest line the tool writes (an item and a detection's details,
    /// each a whole answer of U+0085, which the line spells `\u0085`) is
    /// still recognised as ours after a kill, not written again.
    #[test]
    fn the_longest_own_line_is_recovered() {
        let scratch = Scratch::new("longest");
        std::fs::write(scratch.out(), LINE_A).unwrap();
        let mark = scratch.open("A").mark().unwrap();
        let kind = *sources::ALL
            .iter()
            .find(|kind| kind.event_type == "detection")
            .unwrap();
        let filler = "\u{85}".repeat((crate::api::MAX_BODY as usize - 100) / 2);
        let item = format!(
            "{{\"Id\":\"x9\",\"ReceivedTime\":\"2024-05-14T09:00:00.000Z\",\"m\":\"{filler}\"}}"
        );
        let mut details = Vec::new();
        sources::push_compact(&mut details, format!("{{\"d\":\"{filler}\"}}").as_bytes());
        let mut line = Vec::new();
        sources::push_line_adding(
            &mut line,
            &line_prefix(kind, "A"),
            &item,
            "details",
            &details,
        );
        assert!(
            line.len() > 5 * crate::api::MAX_BODY as usize,
            "{}",
            line.len()
        );
        scratch.open("A").append(&line).unwrap();
        let found = scratch.open("A").recover(Some(&mark), true).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, "x9");
    }

    #[test]
    fn after_a_clean_end_the_tail_is_not_read() {
        let scratch = Scratch::new("clean");
        std::fs::write(scratch.out(), "").unwrap();
        let mark = scratch.open("A").mark().unwrap();
        std::fs::write(scratch.out(), LINE_A).unwrap();
        assert!(
            scratch
                .open("A")
                .recover(Some(&mark), false)
                .unwrap()
                .is_empty()
        );
        // The marker a run leaves before appending makes the next one read it.
        PendingMarker::in_dir(&scratch.0).set().unwrap();
        let found = scratch.open("A").recover(Some(&mark), false).unwrap();
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn the_marker_is_set_by_an_append_and_cleared_by_the_commit() {
        let scratch = Scratch::new("marker");
        let marker = scratch.0.join(PENDING_MARKER);
        let mut out = scratch.open("A");
        out.append(LINE_A.as_bytes()).unwrap();
        assert!(marker.exists());
        let mark = out.mark().unwrap();
        let mut output = Output::File(out);
        output.committed(&mark);
        assert!(!marker.exists());
    }

    #[test]
    fn truncated_file_is_read_from_the_start() {
        let scratch = Scratch::new("copytruncate");
        let other = LINE_B.replace("x1", "x2");
        std::fs::write(scratch.out(), format!("{LINE_B}{other}")).unwrap();
        let mark = scratch.open("A").mark().unwrap();
        // copytruncate, then enough new lines to grow past the old size.
        std::fs::write(scratch.out(), format!("{LINE_A}{LINE_B}{LINE_B}")).unwrap();
        let found = scratch.open("A").recover(Some(&mark), true).unwrap();
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn special_files_are_refused_as_configuration_errors() {
        let err = OutputFile::open(
            Path::new("/dev/null"),
            PendingMarker::in_dir(Path::new("/nonexistent")),
            "A",
        )
        .err()
        .unwrap();
        assert_eq!(crate::error::exit_code_of(&err), 78);
        assert!(format!("{err:#}").contains("/dev/null is a character device"));
    }
}
