//! When a run must stop early: SIGINT/SIGTERM, or `--max-runtime` spent
//! (and SIGXFSZ, which must not stop it: see `install`).
//!
//! Signals only set a flag (signal-hook); the run checks it between pages and
//! while waiting, so a page being written is always finished and committed
//! state stays consistent. Waits sleep in short steps for the same reason.

use crate::error::{ExitKind, fail};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct RunControl {
    interrupted: Arc<AtomicBool>,
    deadline: Option<(Instant, Duration)>,
}

impl RunControl {
    /// Installs the SIGINT/SIGTERM flag; `max_runtime` counts from now.
    pub fn install(max_runtime: Option<Duration>) -> Result<RunControl> {
        let interrupted = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Not an I/O failure of ours: unclassified, so 70 with this message.
            signal_hook::flag::register(signal, Arc::clone(&interrupted))
                .context("installing the SIGINT/SIGTERM handler")?;
        }
        // A write past RLIMIT_FSIZE raises SIGXFSZ, which kills by default;
        // with a handler the write fails with EFBIG instead (setrlimit(2)),
        // so a file that cannot grow ends the run with exit 74 and its
        // partial batch taken back. Nothing needs to read the flag.
        signal_hook::flag::register(
            signal_hook::consts::SIGXFSZ,
            Arc::new(AtomicBool::new(false)),
        )?;
        Ok(RunControl {
            interrupted,
            deadline: max_runtime.map(|limit| (Instant::now() + limit, limit)),
        })
    }

    /// Errors with exit 75 if the run was interrupted or is out of time.
    pub fn check(&self) -> Result<()> {
        if self.interrupted.load(Ordering::Relaxed) {
            return Err(fail(
                ExitKind::Temporary,
                "interrupted by a signal; stopped after the current page, what was written is kept",
            ));
        }
        if let Some((deadline, limit)) = self.deadline
            && Instant::now() >= deadline
        {
            return Err(fail(
                ExitKind::Temporary,
                format!(
                    "--max-runtime {} reached; stopped, what was written is kept",
                    crate::timefmt::display_duration(limit)
                ),
            ));
        }
        Ok(())
    }

    /// Time left before the deadline, if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|(deadline, _)| deadline.saturating_duration_since(Instant::now()))
    }

    /// Sleeps, waking early (with the `check` error) on a signal.
    pub fn sleep(&self, duration: Duration) -> Result<()> {
        let end = Instant::now() + duration;
        loop {
            self.check()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}
