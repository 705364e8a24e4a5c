//! One run at a time per state directory.
//!
//! The lock is an exclusive `flock` on `STATE_DIR/lock` (std's `File::try_lock`;
//! the kernel drops it when the process dies, even by `kill -9`, so there are
//! no stale locks and cron needs no `flock` wrapper). The lock file also says
//! whether the previous run ended: a run writes a line into it on start and
//! empties it on exit, so a line found there means that run was killed.
//! Locks belong on local disk: flock over NFS can hang or silently not lock.
//! The lock file is opened with O_NOFOLLOW and must be a regular file with
//! one name: a symlink or a hard link planted at its name would otherwise
//! have its target emptied.

use crate::control::RunControl;
use crate::error::{ExitKind, fail};
use anyhow::Result;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "lock";

pub struct RunLock {
    file: File,
    path: PathBuf,
    /// What the previous run wrote if it did not end (killed, machine crash).
    pub interrupted_run: Option<String>,
}

/// Creates the state directory (mode 0700) if needed.
pub fn ensure_state_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|err| {
            fail(
                ExitKind::Io,
                format!("cannot create the state directory {}: {err}", dir.display()),
            )
        })
}

impl RunLock {
    /// Takes the lock, waiting up to `wait` for another run to finish; the
    /// wait also ends on a signal or at `--max-runtime` (`control`), since
    /// the signal handler only sets a flag that someone must look at.
    pub fn acquire(
        state_dir: &Path,
        wait: Duration,
        command: &str,
        control: &RunControl,
    ) -> Result<RunLock> {
        let path = state_dir.join(LOCK_FILE);
        let io_error = |err: std::io::Error| {
            fail(
                ExitKind::Io,
                format!("cannot open the lock file {}: {err}", path.display()),
            )
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|err| match err.raw_os_error() {
                Some(libc::ELOOP) => fail(
                    ExitKind::Io,
                    format!(
                        "the lock file {} is a symlink; refused (remove it, the next run makes \
                         a new one)",
                        path.display()
                    ),
                ),
                _ => io_error(err),
            })?;
        let meta = file.metadata().map_err(io_error)?;
        if !meta.is_file() {
            return Err(fail(
                ExitKind::Io,
                format!(
                    "the lock file {} is not a regular file; refused",
                    path.display()
                ),
            ));
        }
        // Emptied on every exit: through a second name it would empty
        // another file (the output, say).
        if meta.nlink() > 1 {
            return Err(fail(
                ExitKind::Io,
                format!(
                    "the lock file {} has other names (hard links); refused, since it is \
                     emptied on exit (remove it, the next run makes a new one)",
                    path.display()
                ),
            ));
        }
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    control.sleep(
                        Duration::from_millis(100)
                            .min(deadline.saturating_duration_since(Instant::now())),
                    )?;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(fail(
                        ExitKind::Temporary,
                        format!(
                            "another run holds the lock file {}; this run exits (use --lock-wait to wait)",
                            path.display()
                        ),
                    ));
                }
                Err(std::fs::TryLockError::Error(err)) => return Err(io_error(err)),
            }
        }
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        let previous = previous.trim().to_string();
        let line = format!(
            "pid {} {} started {}\n",
            std::process::id(),
            command,
            crate::timefmt::display(chrono::Utc::now())
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(line.as_bytes()))
            .map_err(io_error)?;
        Ok(RunLock {
            file,
            path,
            interrupted_run: (!previous.is_empty()).then_some(previous),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    /// A run that ends, well or badly, says so; only a killed one leaves its line.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}
