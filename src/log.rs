//! Diagnostics on stderr, never in the output file.
//!
//! Under systemd (`JOURNAL_STREAM` set) each line starts with an sd-daemon
//! priority prefix (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug, see
//! sd-daemon(3)) so the journal files it at the right level; elsewhere lines read
//! `cylance-logs: warning: ...`. Nothing logged here may contain a secret: the
//! HTTP layer logs method, path, query, status and time, never headers.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warning,
    Info,
    /// `-v`: one line per request.
    Debug,
    /// `-vv`: adds response sizes.
    Trace,
}

struct Logger {
    journal: bool,
    max_level: Level,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Sets up logging once per process; later calls are ignored.
pub fn init(verbosity: u8) {
    let max_level = match verbosity {
        0 => Level::Info,
        1 => Level::Debug,
        _ => Level::Trace,
    };
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = LOGGER.set(Logger { journal, max_level });
}

pub fn enabled(level: Level) -> bool {
    LOGGER
        .get()
        .map_or(level <= Level::Info, |l| level <= l.max_level)
}

pub fn write(level: Level, message: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let journal = LOGGER.get().is_some_and(|l| l.journal);
    let line = if journal {
        let priority = match level {
            Level::Error => 3,
            Level::Warning => 4,
            Level::Info => 6,
            Level::Debug | Level::Trace => 7,
        };
        format!("<{priority}>{message}\n")
    } else {
        let label = match level {
            Level::Error => "error: ",
            Level::Warning => "warning: ",
            Level::Info => "",
            Level::Debug | Level::Trace => "debug: ",
        };
        format!("cylance-logs: {label}{message}\n")
    };
    // Unit tests: through the test harness's capture, shown only on failure.
    #[cfg(test)]
    eprint!("{line}");
    // One write per line so lines from concurrent threads never interleave;
    // a closed stderr must not turn into a failed run.
    #[cfg(not(test))]
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
}

// Crate-private macros, used as `crate::warn!(...)` through the re-export
// at the crate root (lib.rs); `$crate::log` keeps them working in any module.
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($arg)*)) };
}
macro_rules! warning {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warning, format_args!($($arg)*)) };
}
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($arg)*)) };
}
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($arg)*)) };
}
macro_rules! trace {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Trace, format_args!($($arg)*)) };
}
// `warn` is also a built-in attribute, which a plain `use warn` cannot
// tell apart; hence the other name and the alias.
pub(crate) use {debug, error, info, trace, warning as warn};
