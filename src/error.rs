//! Failure classes and their exit codes.
//!
//! Code deep in the run attaches a [`Failure`] to an error at the point where it
//! knows *what kind* of failure it is (the API answered garbage, the checkpoint is
//! corrupt...). `anyhow` context layered on top names the file, variable or
//! endpoint. [`exit_code_of`] is the one place that turns an error into an exit
//! code, by walking the chain for the innermost classification, as ripgrep does.
//!
//! The codes are sysexits(3), so systemd and monitoring can name them. A
//! failure nobody classified is 70 (EX_SOFTWARE), a bug to report: so every
//! failure to write the output, the checkpoint, the lock or the state
//! directory is classified as [`ExitKind::Io`] where it happens, never by
//! guessing from the error's type.

use std::fmt;

/// What kind of failure ended a run; each maps to one documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// 2: the command line could not be parsed (clap reports these itself).
    Usage,
    /// 2 as well, from `status --max-age` only: a source's last success is
    /// too old (Nagios plugins' CRITICAL). Never an error: `status` returns
    /// it as its exit code after printing the verdict.
    Critical,
    /// 65 (EX_DATAERR): the checkpoint is unreadable or invalid.
    Checkpoint,
    /// 70 (EX_SOFTWARE): a failure no code path classified, so a bug.
    Software,
    /// 74 (EX_IOERR): the output, the checkpoint, the lock or the state
    /// directory cannot be written.
    Io,
    /// 75 (EX_TEMPFAIL): try again next time: network, timeout, 429 or 5xx
    /// after retries, lock held, interrupted, out of run time.
    Temporary,
    /// 76 (EX_PROTOCOL): the API answered something we cannot use.
    Protocol,
    /// 77 (EX_NOPERM): credentials or privileges rejected (401/403).
    Auth,
    /// 78 (EX_CONFIG): configuration missing or invalid.
    Config,
}

impl ExitKind {
    /// Every kind, for documentation (the man page's EXIT STATUS).
    pub const ALL: [ExitKind; 9] = [
        ExitKind::Usage,
        ExitKind::Critical,
        ExitKind::Checkpoint,
        ExitKind::Software,
        ExitKind::Io,
        ExitKind::Temporary,
        ExitKind::Protocol,
        ExitKind::Auth,
        ExitKind::Config,
    ];

    /// What the code means to an operator.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitKind::Usage => "usage error: a mistyped option or TIME",
            ExitKind::Critical => {
                "from status --max-age: CRITICAL, a source's last success is older than the \
                 given age, or there is none"
            }
            ExitKind::Checkpoint => "the checkpoint is unreadable or invalid; it is left as it was",
            ExitKind::Software => {
                "unexpected failure, a bug in cylance-logs: the message says what failed; \
                 please report it"
            }
            ExitKind::Io => {
                "the output, the checkpoint, the lock or the state directory cannot be written; \
                 the checkpoint did not advance"
            }
            ExitKind::Temporary => {
                "temporary: network, timeout, 429 or 5xx after retries, lock held, \
                 interrupted or --max-runtime reached; what was fetched is kept, try again \
                 next run"
            }
            ExitKind::Protocol => {
                "the API answered something unusable: a redirect (never followed), an unusable \
                 token, a body that is not the JSON expected"
            }
            ExitKind::Auth => "credentials or privileges rejected (HTTP 401/403)",
            ExitKind::Config => "configuration missing or invalid",
        }
    }

    pub fn code(self) -> u8 {
        match self {
            ExitKind::Usage | ExitKind::Critical => 2,
            ExitKind::Checkpoint => 65,
            ExitKind::Software => 70,
            ExitKind::Io => 74,
            ExitKind::Temporary => 75,
            ExitKind::Protocol => 76,
            ExitKind::Auth => 77,
            ExitKind::Config => 78,
        }
    }
}

/// An error that carries its classification. Create with [`fail`].
#[derive(Debug)]
pub(crate) struct Failure {
    kind: ExitKind,
    message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// A classified error with a message, ready for `return Err(...)` or `bail!`-like use.
pub(crate) fn fail(kind: ExitKind, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        kind,
        message: message.into(),
    })
}

/// Extension to classify an error that came from elsewhere (std, serde) while
/// adding the context that names what was being done: the message is
/// `{context}: {err}`.
pub(crate) trait Classify<T> {
    fn classify(self, kind: ExitKind, context: impl fmt::Display) -> anyhow::Result<T>;
}

impl<T, E> Classify<T> for Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn classify(self, kind: ExitKind, context: impl fmt::Display) -> anyhow::Result<T> {
        self.map_err(|err| {
            let message = format!("{context}: {err}");
            fail(kind, message)
        })
    }
}

/// The exit code for an error: the first classification found in its chain
/// (outermost first, so a caller may re-classify), else 70: nothing is
/// guessed from the error's type, as a bare I/O error may come from anywhere.
pub(crate) fn exit_code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Failure>())
        .map_or(ExitKind::Software, |failure| failure.kind)
        .code()
}

/// Whether the error is classified as `kind`.
pub(crate) fn is_kind(err: &anyhow::Error, kind: ExitKind) -> bool {
    exit_code_of(err) == kind.code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn outer_context_keeps_the_inner_classification() {
        let err = Err::<(), _>(fail(ExitKind::Checkpoint, "bad json"))
            .context("reading /x/checkpoint.json")
            .unwrap_err();
        assert_eq!(exit_code_of(&err), 65);
        assert_eq!(format!("{err:#}"), "reading /x/checkpoint.json: bad json");
    }

    #[test]
    fn unclassified_errors_are_70_even_bare_io_errors() {
        let io = anyhow::Error::new(std::io::Error::other("disk"));
        assert_eq!(exit_code_of(&io), 70);
        let with_context = Err::<(), _>(std::io::Error::other("denied"))
            .context("writing somewhere")
            .unwrap_err();
        assert_eq!(exit_code_of(&with_context), 70);
        assert_eq!(exit_code_of(&anyhow::anyhow!("bug")), 70);
    }

    #[test]
    fn classify_names_what_was_done_and_keeps_the_kind() {
        let err = Err::<(), _>(std::io::Error::other("No space left on device"))
            .classify(ExitKind::Io, "writing /x/out.prom")
            .unwrap_err();
        assert_eq!(exit_code_of(&err), 74);
        assert_eq!(
            format!("{err:#}"),
            "writing /x/out.prom: No space left on device"
        );
    }
}
