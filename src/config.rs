//! From raw options to ready-to-use settings: flag > environment > default.
//!
//! [`Settings::resolve`] resolves every setting of the command being run, once:
//! nothing downstream reads flags, the environment or defaults again. Each
//! value remembers where it came from: paths keep their [`Origin`] inside the
//! value ([`Resolved`]), and `-v` prints one line per setting with its origin
//! (the secret's value never: only where it was read from). Every error names
//! the flag or the variable that held the bad value, so that an operator
//! debugging a timer unit sees at once which line of which file to fix. All
//! errors here exit 78, except a bad backfill `--since`/`--until` or status
//! `--max-age`, which are usage errors (2) like clap's own.
//!
//! Every duration and count has a bound (the `MAX_*` constants below): a value
//! past it is a typo or an attack, and refused here, so that no later time
//! arithmetic (`now - lookback`) can overflow.

use crate::cli::{Cli, Command, GlobalOptions};
use crate::error::{ExitKind, fail};
use crate::retry::RetryPolicy;
use crate::sources::{self, Lookup, SourceKind};
use crate::timefmt::{display, display_duration, parse_duration, parse_user_time};
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::cell::RefCell;
use std::ffi::OsString;
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Farthest back a first poll may reach (`--initial-lookback`): 10 years.
pub const MAX_LOOKBACK: Duration = Duration::from_secs(3650 * 86_400);
/// Largest `--overlap`: a day.
pub const MAX_OVERLAP: Duration = Duration::from_secs(86_400);
/// The device snapshot interval's bounds: below a second, every run would
/// take one under the same whole-second time as the last.
pub const MIN_DEVICES_EVERY: Duration = Duration::from_secs(1);
pub const MAX_DEVICES_EVERY: Duration = MAX_LOOKBACK;
/// Largest `--timeout`: 10 minutes.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest `--lock-wait`: a day.
pub const MAX_LOCK_WAIT: Duration = Duration::from_secs(86_400);
/// Largest `--max-runtime`: 7 days (0 still means no limit).
pub const MAX_RUNTIME: Duration = Duration::from_secs(7 * 86_400);
/// `--concurrency` is 1 to this: pages in flight, each up to `api`'s body cap.
pub const MAX_CONCURRENCY: u32 = 16;
/// Largest secret file read; a real secret is a few dozen bytes.
pub const MAX_SECRET_FILE: u64 = 64 * 1024;
/// Largest `$CYLANCE_LOGS_BACKOFF_BASE`: the longest backoff step.
pub const MAX_BACKOFF_BASE: Duration = Duration::from_secs(60);
/// Poll's and check's default `--max-runtime`: a little under the timer's minute.
pub const POLL_MAX_RUNTIME: Duration = Duration::from_secs(50);

/// Where a resolved value came from, for debug lines and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    Env(&'static str),
    /// Why this default: empty for a fixed one, else the convention that
    /// gave it (`$STATE_DIRECTORY`, running as root...).
    Default(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "{flag}"),
            Origin::Env(var) => write!(f, "${var}"),
            Origin::Default("") => write!(f, "default"),
            Origin::Default(why) => write!(f, "default: {why}"),
        }
    }
}

/// A value with where it came from. Derefs to the value, so that code
/// which only uses the value (a path) does not see the wrapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> Deref for Resolved<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// The application secret. Deliberately has no `Display`, and its `Debug`
/// hides the value, so it cannot end up in a log line by accident.
#[derive(Clone)]
pub struct Secret {
    value: String,
    /// The file it was read from; `None`: `$CYLANCE_APP_SECRET`.
    file: Option<Resolved<PathBuf>>,
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where the secret came from, for `-v`; never the value.
    fn source(&self) -> String {
        match &self.file {
            Some(file) => format!("the file {}, given by {}", file.display(), file.origin),
            None => "$CYLANCE_APP_SECRET".to_string(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub app_id: String,
    pub tenant_id: String,
    pub secret: Secret,
    /// Base URL without a trailing slash.
    pub base_url: String,
    pub ca_file: Option<Resolved<PathBuf>>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub state_dir: Resolved<PathBuf>,
    pub output: Resolved<OutputTarget>,
    /// Prometheus textfile written at the end of each run.
    pub metrics_file: Option<Resolved<PathBuf>>,
}

#[derive(Debug, Clone)]
pub struct RunSettings {
    pub sources: Vec<SourceKind>,
    /// The lookups on (`--enrich`), in the order of `sources::lookups()`.
    pub enrich: Vec<Lookup>,
    pub initial_lookback: Duration,
    pub overlap: Duration,
    /// At most one device snapshot per this interval.
    pub devices_every: Duration,
    pub lock_wait: Duration,
    /// `None`: no limit.
    pub max_runtime: Option<Duration>,
    /// List pages fetched at once within a window (backfills, long polls).
    pub concurrency: u32,
    /// Requests per second at most, across threads; 0: no limit.
    pub max_rps: u32,
}

/// Regions and their hosts, from the API notes.
pub const REGIONS: &[(&str, &str)] = &[
    ("na", "https://protectapi.cylance.com"),
    ("us-gov", "https://protectapi.us.cylance.com"),
    ("apne1", "https://protectapi-apne1.cylance.com"),
    ("au", "https://protectapi-au.cylance.com"),
    ("euc1", "https://protectapi-euc1.cylance.com"),
    ("sae1", "https://protectapi-sae1.cylance.com"),
];

/// Reads the process environment; tests substitute their own.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// Everything one command needs, resolved.
#[derive(Debug)]
pub enum CommandSettings {
    Poll {
        api: ApiSettings,
        store: StoreSettings,
        run: RunSettings,
        retry: RetryPolicy,
    },
    Backfill {
        since: DateTime<Utc>,
        /// `None`: the start of what is written, else now (see `run`).
        until: Option<DateTime<Utc>>,
        api: ApiSettings,
        store: StoreSettings,
        run: RunSettings,
        retry: RetryPolicy,
    },
    Check {
        api: ApiSettings,
        run: RunSettings,
        retry: RetryPolicy,
    },
    Status {
        store: StoreSettings,
        run: RunSettings,
        json: bool,
        max_age: Option<Duration>,
    },
}

/// The settings of the command being run, and one line per setting saying
/// what it is and where it came from (for `-v`).
#[derive(Debug)]
pub struct Settings {
    pub command: CommandSettings,
    shown: Vec<String>,
}

impl Settings {
    /// Resolves every setting the command uses, in a fixed order, so that
    /// of several bad values the same one is always reported.
    pub fn resolve(cli: &Cli, env: EnvLookup) -> Result<Settings> {
        let r = Resolver::new(&cli.options, env);
        let command = match &cli.command {
            Command::Poll => CommandSettings::Poll {
                retry: RetryPolicy {
                    again_next_run: true,
                    ..r.retry()?
                },
                api: r.api()?,
                store: r.store()?,
                run: r.run(Some(POLL_MAX_RUNTIME))?,
            },
            Command::Backfill(args) => {
                let retry = r.retry()?;
                let (since, until) = r.backfill_window(&args.since, args.until.as_deref())?;
                CommandSettings::Backfill {
                    since,
                    until,
                    retry,
                    api: r.api()?,
                    store: r.store()?,
                    run: r.run(None)?,
                }
            }
            Command::Check => CommandSettings::Check {
                retry: r.retry()?,
                api: r.api()?,
                run: r.run(Some(POLL_MAX_RUNTIME))?,
            },
            Command::Status(args) => {
                let max_age = r.max_age(args.max_age.as_deref())?;
                CommandSettings::Status {
                    json: args.json,
                    max_age,
                    run: r.run(None)?,
                    store: r.store()?,
                }
            }
        };
        Ok(Settings {
            command,
            shown: r.shown.into_inner(),
        })
    }

    /// `-v`: one debug line per setting with its origin.
    pub fn log(&self) {
        for line in &self.shown {
            crate::debug!("setting {line}");
        }
    }
}

/// Resolves options against the environment, noting each value it settles.
struct Resolver<'a> {
    options: &'a GlobalOptions,
    env: EnvLookup<'a>,
    /// `name = value (from origin)`, in resolution order.
    shown: RefCell<Vec<String>>,
}

fn config_error(message: String) -> anyhow::Error {
    fail(ExitKind::Config, message)
}

fn usage_error(message: String) -> anyhow::Error {
    fail(ExitKind::Usage, message)
}

/// `$CYLANCE_LOGS_BACKOFF_BASE` also takes milliseconds (`500ms`), which
/// tests use to keep retries fast; otherwise a duration like any other.
fn parse_backoff(text: &str) -> Result<Duration, String> {
    match text.trim().strip_suffix("ms") {
        Some(ms) => ms
            .parse()
            .map(Duration::from_millis)
            .map_err(|_| format!("'{}' is not a duration", text.trim())),
        None => parse_duration(text),
    }
}

impl<'a> Resolver<'a> {
    fn new(options: &'a GlobalOptions, env: EnvLookup<'a>) -> Self {
        Resolver {
            options,
            env,
            shown: RefCell::new(Vec::new()),
        }
    }

    fn note(&self, name: &str, value: impl fmt::Display, origin: impl fmt::Display) {
        self.shown
            .borrow_mut()
            .push(format!("{name} = {value} (from {origin})"));
    }

    /// The value of an environment variable; set-but-empty is an error, so a
    /// typo in an env file does not silently fall back to a default.
    fn env_value(&self, var: &'static str) -> Result<Option<(String, Origin)>> {
        match (self.env)(var) {
            None => Ok(None),
            Some(value) => {
                let value = value
                    .into_string()
                    .map_err(|_| config_error(format!("${var} is not valid UTF-8")))?;
                if value.trim().is_empty() {
                    return Err(config_error(format!("${var} is set but empty")));
                }
                Ok(Some((value, Origin::Env(var))))
            }
        }
    }

    /// Flag first, then variable; `None` when neither is given.
    fn lookup(
        &self,
        flag_value: &Option<String>,
        flag: &'static str,
        var: &'static str,
    ) -> Result<Option<(String, Origin)>> {
        if let Some(value) = flag_value {
            if value.trim().is_empty() {
                return Err(config_error(format!("{flag} is empty")));
            }
            return Ok(Some((value.clone(), Origin::Flag(flag))));
        }
        self.env_value(var)
    }

    fn required(
        &self,
        flag_value: &Option<String>,
        flag: &'static str,
        var: &'static str,
    ) -> Result<String> {
        match self.lookup(flag_value, flag, var)? {
            Some((value, origin)) => {
                let value = value.trim().to_string();
                self.note(flag, &value, origin);
                Ok(value)
            }
            None => Err(config_error(format!(
                "missing {flag} (or ${var}): it is required"
            ))),
        }
    }

    /// A duration of at most `max`, parsed by `parse`.
    fn bounded(
        &self,
        name: &str,
        found: Option<(String, Origin)>,
        default: Duration,
        max: Duration,
        parse: fn(&str) -> Result<Duration, String>,
    ) -> Result<Duration> {
        let Some((text, origin)) = found else {
            self.note(name, display_duration(default), Origin::Default(""));
            return Ok(default);
        };
        let value = parse(&text).map_err(|why| config_error(format!("{origin}: {why}")))?;
        if value > max {
            return Err(config_error(format!(
                "{origin}: '{}' is more than the largest accepted, {}",
                text.trim(),
                display_duration(max)
            )));
        }
        self.note(name, display_duration(value), origin);
        Ok(value)
    }

    fn duration(
        &self,
        flag_value: &Option<String>,
        flag: &'static str,
        var: &'static str,
        default: Duration,
        max: Duration,
    ) -> Result<Duration> {
        let found = self.lookup(flag_value, flag, var)?;
        self.bounded(flag, found, default, max, parse_duration)
    }

    fn count(
        &self,
        flag_value: &Option<String>,
        flag: &'static str,
        var: &'static str,
        default: u32,
    ) -> Result<u32> {
        match self.lookup(flag_value, flag, var)? {
            None => {
                self.note(flag, default, Origin::Default(""));
                Ok(default)
            }
            Some((text, origin)) => {
                let value = text.trim().parse().map_err(|_| {
                    config_error(format!("{origin}: '{text}' is not a whole number"))
                })?;
                self.note(flag, value, origin);
                Ok(value)
            }
        }
    }

    /// The retry policy's first backoff step (default 2s, at most 1m). An
    /// environment-only knob: tests shorten it, and an operator may lengthen
    /// it for a fragile proxy.
    fn retry(&self) -> Result<RetryPolicy> {
        const VAR: &str = "CYLANCE_LOGS_BACKOFF_BASE";
        let found = self.env_value(VAR)?;
        let base = self.bounded(
            &format!("${VAR}"),
            found,
            Duration::from_secs(2),
            MAX_BACKOFF_BASE,
            parse_backoff,
        )?;
        Ok(RetryPolicy::new(base))
    }

    /// Backfill's `--since` and `--until`; `until` must be later.
    fn backfill_window(
        &self,
        since: &str,
        until: Option<&str>,
    ) -> Result<(DateTime<Utc>, Option<DateTime<Utc>>)> {
        let now = Utc::now();
        let parse = |flag: &str, text: &str| {
            parse_user_time(text, now).map_err(|why| usage_error(format!("{flag}: {why}")))
        };
        let since = parse("--since", since)?;
        let until = until.map(|u| parse("--until", u)).transpose()?;
        if until.is_some_and(|until| until <= since) {
            return Err(usage_error("--until must be later than --since".into()));
        }
        self.note("--since", display(since), Origin::Flag("--since"));
        match until {
            Some(until) => self.note("--until", display(until), Origin::Flag("--until")),
            None => self.note(
                "--until",
                "the start of what is written, else now",
                Origin::Default(""),
            ),
        }
        Ok((since, until))
    }

    /// Status's `--max-age`; `None`: no freshness check.
    fn max_age(&self, text: Option<&str>) -> Result<Option<Duration>> {
        let Some(text) = text else {
            self.note("--max-age", "none, no freshness check", Origin::Default(""));
            return Ok(None);
        };
        let age = parse_duration(text).map_err(|why| usage_error(format!("--max-age: {why}")))?;
        self.note(
            "--max-age",
            display_duration(age),
            Origin::Flag("--max-age"),
        );
        Ok(Some(age))
    }

    fn api(&self) -> Result<ApiSettings> {
        let o = self.options;
        let app_id = self.required(&o.app_id, "--app-id", "CYLANCE_APP_ID")?;
        let tenant_id = self.required(&o.tenant_id, "--tenant-id", "CYLANCE_TENANT_ID")?;
        let secret = self.secret()?;
        let base_url = self.base_url()?;
        let ca_file = self
            .lookup(&o.ca_file, "--ca-file", "CYLANCE_LOGS_CA_FILE")?
            .map(|(path, origin)| Resolved {
                value: PathBuf::from(path),
                origin,
            });
        match &ca_file {
            Some(file) => self.note("--ca-file", file.display(), &file.origin),
            None => self.note("--ca-file", "none, the bundled roots", Origin::Default("")),
        }
        let timeout = self.duration(
            &o.timeout,
            "--timeout",
            "CYLANCE_LOGS_TIMEOUT",
            Duration::from_secs(30),
            MAX_TIMEOUT,
        )?;
        if timeout.is_zero() {
            return Err(config_error(
                "--timeout (or $CYLANCE_LOGS_TIMEOUT) must be more than 0".into(),
            ));
        }
        Ok(ApiSettings {
            app_id,
            tenant_id,
            secret,
            base_url,
            ca_file,
            timeout,
        })
    }

    /// The secret: --app-secret-file, $CYLANCE_APP_SECRET_FILE,
    /// $CREDENTIALS_DIRECTORY/cylance-app-secret (systemd LoadCredential=), then
    /// $CYLANCE_APP_SECRET. Never a flag value, and never shown.
    fn secret(&self) -> Result<Secret> {
        let file = match self.lookup(
            &self.options.app_secret_file,
            "--app-secret-file",
            "CYLANCE_APP_SECRET_FILE",
        )? {
            Some((path, origin)) => Some(Resolved {
                value: PathBuf::from(path),
                origin,
            }),
            None => (self.env)("CREDENTIALS_DIRECTORY")
                .map(|dir| PathBuf::from(dir).join("cylance-app-secret"))
                .filter(|path| path.exists())
                .map(|path| Resolved {
                    value: path,
                    origin: Origin::Default("$CREDENTIALS_DIRECTORY/cylance-app-secret"),
                }),
        };
        let value = match &file {
            Some(file) => read_secret_file(file, &file.origin)?,
            None => match (self.env)("CYLANCE_APP_SECRET") {
                Some(value) => value
                    .into_string()
                    .map_err(|_| config_error("$CYLANCE_APP_SECRET is not valid UTF-8".into()))?,
                None => {
                    return Err(config_error(
                        "missing application secret: give --app-secret-file (or \
                         $CYLANCE_APP_SECRET_FILE), a systemd credential named \
                         cylance-app-secret, or $CYLANCE_APP_SECRET"
                            .into(),
                    ));
                }
            },
        };
        if value.trim().is_empty() {
            return Err(config_error("the application secret is empty".into()));
        }
        let secret = Secret { value, file };
        self.note("application secret", "(not shown)", secret.source());
        Ok(secret)
    }

    fn base_url(&self) -> Result<String> {
        let o = self.options;
        if let Some((url, origin)) = self.lookup(&o.api_url, "--api-url", "CYLANCE_API_URL")? {
            let url = check_base_url(url.trim(), &origin)?;
            self.note("--api-url", &url, origin);
            return Ok(url);
        }
        let region = match self.lookup(&o.region, "--region", "CYLANCE_REGION")? {
            Some((code, origin)) => (code.trim().to_ascii_lowercase(), origin),
            None => ("na".to_string(), Origin::Default("")),
        };
        let url = REGIONS
            .iter()
            .find(|(code, _)| *code == region.0)
            .map(|(_, host)| host.to_string())
            .ok_or_else(|| {
                let known: Vec<&str> = REGIONS.iter().map(|(code, _)| *code).collect();
                config_error(format!(
                    "{}: unknown region '{}' (known: {})",
                    region.1,
                    region.0,
                    known.join(", ")
                ))
            })?;
        self.note("--region", format!("{} ({url})", region.0), region.1);
        Ok(url)
    }

    fn store(&self) -> Result<StoreSettings> {
        let o = self.options;
        let state_dir = match self.lookup(&o.state_dir, "--state-dir", "CYLANCE_LOGS_STATE_DIR")? {
            Some((dir, origin)) => Resolved {
                value: PathBuf::from(dir),
                origin,
            },
            None => self.default_dir("STATE_DIRECTORY", "/var/lib/cylance-logs", "--state-dir")?,
        };
        self.note("--state-dir", state_dir.display(), &state_dir.origin);
        let output = match self.lookup(&o.output, "--output", "CYLANCE_LOGS_OUTPUT")? {
            Some((path, origin)) if path == "-" => Resolved {
                value: OutputTarget::Stdout,
                origin,
            },
            Some((path, origin)) => Resolved {
                value: OutputTarget::File(PathBuf::from(path)),
                origin,
            },
            None => {
                let dir = self.default_dir("LOGS_DIRECTORY", "/var/log", "--output")?;
                Resolved {
                    value: OutputTarget::File(dir.join("cylance-protect.log")),
                    origin: dir.origin,
                }
            }
        };
        match &output.value {
            OutputTarget::Stdout => self.note("--output", "standard output", &output.origin),
            OutputTarget::File(path) => self.note("--output", path.display(), &output.origin),
        }
        let metrics_file = self
            .lookup(
                &o.metrics_file,
                "--metrics-file",
                "CYLANCE_LOGS_METRICS_FILE",
            )?
            .map(|(path, origin)| Resolved {
                value: PathBuf::from(path),
                origin,
            });
        match &metrics_file {
            Some(file) => self.note("--metrics-file", file.display(), &file.origin),
            None => self.note("--metrics-file", "none", Origin::Default("")),
        }
        Ok(StoreSettings {
            state_dir,
            output,
            metrics_file,
        })
    }

    /// systemd's directory variable (first entry of a colon list), else the
    /// system path for root, else the user's XDG state directory.
    fn default_dir(
        &self,
        systemd_var: &'static str,
        root_dir: &str,
        flag: &str,
    ) -> Result<Resolved<PathBuf>> {
        if let Some(dirs) = (self.env)(systemd_var)
            && let Some(first) = dirs.to_string_lossy().split(':').find(|d| !d.is_empty())
        {
            return Ok(Resolved {
                value: PathBuf::from(first),
                origin: Origin::Env(systemd_var),
            });
        }
        if running_as_root() {
            return Ok(Resolved {
                value: PathBuf::from(root_dir),
                origin: Origin::Default("running as root"),
            });
        }
        directories::ProjectDirs::from("", "", "cylance-logs")
            .and_then(|dirs| dirs.state_dir().map(Path::to_path_buf))
            .map(|dir| Resolved {
                value: dir,
                origin: Origin::Default("the user's state directory"),
            })
            .ok_or_else(|| {
                config_error(format!(
                    "no default for {flag}: ${systemd_var} is unset and there is no home \
                     directory; give {flag}"
                ))
            })
    }

    fn run(&self, max_runtime_default: Option<Duration>) -> Result<RunSettings> {
        let o = self.options;
        let sources = match self.lookup(&o.sources, "--sources", "CYLANCE_LOGS_SOURCES")? {
            None => (sources::defaults(), Origin::Default("")),
            Some((list, origin)) => (
                parse_sources(&list).map_err(|why| config_error(format!("{origin}: {why}")))?,
                origin,
            ),
        };
        let names: Vec<&str> = sources.0.iter().map(|s| s.name).collect();
        self.note("--sources", names.join(","), sources.1);
        let sources = sources.0;
        let enrich = match self.lookup(&o.enrich, "--enrich", "CYLANCE_LOGS_ENRICH")? {
            None => (
                sources::lookups()
                    .filter(|lookup| lookup.on_by_default())
                    .collect(),
                Origin::Default(""),
            ),
            Some((list, origin)) => (
                parse_enrich(&list).map_err(|why| config_error(format!("{origin}: {why}")))?,
                origin,
            ),
        };
        let names: Vec<&str> = enrich.0.iter().map(|l| l.name()).collect();
        let shown = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(",")
        };
        self.note("--enrich", shown, enrich.1);
        let enrich = enrich.0;
        let initial_lookback = self.duration(
            &o.initial_lookback,
            "--initial-lookback",
            "CYLANCE_LOGS_INITIAL_LOOKBACK",
            Duration::from_secs(24 * 3600),
            MAX_LOOKBACK,
        )?;
        let overlap = self.duration(
            &o.overlap,
            "--overlap",
            "CYLANCE_LOGS_OVERLAP",
            Duration::from_secs(600),
            MAX_OVERLAP,
        )?;
        let devices_every = self.duration(
            &o.devices_every,
            "--devices-every",
            "CYLANCE_LOGS_DEVICES_EVERY",
            Duration::from_secs(24 * 3600),
            MAX_DEVICES_EVERY,
        )?;
        if devices_every < MIN_DEVICES_EVERY {
            return Err(config_error(format!(
                "--devices-every (or $CYLANCE_LOGS_DEVICES_EVERY) must be at least {}, not {}",
                display_duration(MIN_DEVICES_EVERY),
                display_duration(devices_every)
            )));
        }
        let lock_wait = self.duration(
            &o.lock_wait,
            "--lock-wait",
            "CYLANCE_LOGS_LOCK_WAIT",
            Duration::ZERO,
            MAX_LOCK_WAIT,
        )?;
        let max_runtime =
            match self.lookup(&o.max_runtime, "--max-runtime", "CYLANCE_LOGS_MAX_RUNTIME")? {
                None => {
                    let shown = max_runtime_default.map_or("no limit".into(), display_duration);
                    self.note("--max-runtime", shown, Origin::Default(""));
                    max_runtime_default
                }
                found => {
                    let d = self.bounded(
                        "--max-runtime",
                        found,
                        Duration::ZERO,
                        MAX_RUNTIME,
                        parse_duration,
                    )?;
                    (!d.is_zero()).then_some(d)
                }
            };
        let concurrency = self.count(
            &o.concurrency,
            "--concurrency",
            "CYLANCE_LOGS_CONCURRENCY",
            4,
        )?;
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(config_error(format!(
                "--concurrency (or $CYLANCE_LOGS_CONCURRENCY) must be 1 to {MAX_CONCURRENCY}, \
                 not {concurrency}"
            )));
        }
        let max_rps = self.count(&o.max_rps, "--max-rps", "CYLANCE_LOGS_MAX_RPS", 10)?;
        Ok(RunSettings {
            sources,
            enrich,
            initial_lookback,
            overlap,
            devices_every,
            lock_wait,
            max_runtime,
            concurrency,
            max_rps,
        })
    }
}

impl RunSettings {
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.sources.iter().map(|s| s.name).collect();
        format!(
            "sources {}, overlap {}, max runtime {}",
            names.join(","),
            display_duration(self.overlap),
            self.max_runtime
                .map_or("unlimited".to_string(), display_duration)
        )
    }
}

fn parse_sources(list: &str) -> Result<Vec<SourceKind>, String> {
    let mut sources = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind = sources::from_name(name)
            .ok_or_else(|| format!("unknown source '{name}' (known: {})", sources::names(", ")))?;
        if !sources.contains(&kind) {
            sources.push(kind);
        }
    }
    if sources.is_empty() {
        return Err("no source named".into());
    }
    Ok(sources)
}

/// `--enrich`: lookup names, or `none` alone for no lookup. Kept in the
/// order of `sources::lookups()`, once each.
fn parse_enrich(list: &str) -> Result<Vec<Lookup>, String> {
    let names: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    let known = || format!("known: {}, or none", sources::lookup_names(", "));
    if names.is_empty() {
        return Err(format!("no lookup named ({})", known()));
    }
    if names.iter().any(|n| n.eq_ignore_ascii_case("none")) {
        if names.len() > 1 {
            return Err(format!(
                "'none' cannot be combined with lookups ({})",
                known()
            ));
        }
        return Ok(Vec::new());
    }
    let mut chosen = Vec::new();
    for name in names {
        let lookup = sources::lookup_from_name(name)
            .ok_or_else(|| format!("unknown lookup '{name}' ({})", known()))?;
        chosen.push(lookup);
    }
    Ok(sources::lookups()
        .filter(|lookup| chosen.contains(lookup))
        .collect())
}

/// Reads a regular file of at most [`MAX_SECRET_FILE`] bytes. Opened
/// non-blocking, so that a FIFO without a writer is refused rather than
/// waited on forever; a device or a huge file is refused too.
fn read_secret_file(path: &Path, origin: &Origin) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |why: String| {
        config_error(format!(
            "cannot read the secret file {} (from {origin}): {why}",
            path.display()
        ))
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| refuse(err.to_string()))?;
    let meta = file.metadata().map_err(|err| refuse(err.to_string()))?;
    if !meta.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| refuse(err.to_string()))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(refuse(format!(
            "larger than {} KiB; a secret is a few dozen bytes",
            MAX_SECRET_FILE / 1024
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| refuse("not valid UTF-8".into()))?;
    warn_if_shared(path);
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o044 != 0 {
            crate::warn!(
                "the secret file {} is readable by group or others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
}

/// Accepts https anywhere, http only to loopback (tests, a local proxy).
/// A URL with credentials (`user:password@`) is refused without echoing it;
/// a query or fragment is refused too, as every path is appended to it.
fn check_base_url(url: &str, origin: &Origin) -> Result<String> {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("");
    if authority.contains('@') {
        return Err(config_error(format!(
            "{origin}: the URL holds credentials (user:password@...); they are refused and not \
             shown: give the host only"
        )));
    }
    if url.contains(['?', '#']) {
        return Err(config_error(format!(
            "{origin}: '{url}' has a query or a fragment; give the base URL only"
        )));
    }
    let parsed: ureq::http::Uri = url
        .parse()
        .map_err(|err| config_error(format!("{origin}: '{url}' is not a URL: {err}")))?;
    let host = parsed.host().unwrap_or("");
    match parsed.scheme_str() {
        Some("https") if !host.is_empty() => {}
        Some("http") if is_loopback(host) => {}
        Some("http") => {
            return Err(config_error(format!(
                "{origin}: plain http:// is refused for '{host}' (only loopback addresses); use https://"
            )));
        }
        _ => {
            return Err(config_error(format!(
                "{origin}: '{url}' must start with https://"
            )));
        }
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The effective user is the owner of /proc/self; this avoids `unsafe` geteuid.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn resolve_with<T>(
        args: &[&str],
        env: &[(&str, &str)],
        f: impl FnOnce(&Resolver) -> Result<T>,
    ) -> Result<T> {
        let cli = crate::cli::Cli::try_parse_from(
            std::iter::once("cylance-logs").chain(args.iter().copied()),
        )
        .unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        };
        f(&Resolver::new(&cli.options, &lookup))
    }

    /// As secret files should be, so the tests print no warning.
    fn private(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn message(err: anyhow::Error) -> String {
        assert_eq!(crate::error::exit_code_of(&err), 78, "{err:#}");
        format!("{err:#}")
    }

    #[test]
    fn flag_beats_environment_beats_default() {
        let run = resolve_with(
            &["poll", "--overlap", "5m"],
            &[
                ("CYLANCE_LOGS_OVERLAP", "20m"),
                ("CYLANCE_LOGS_TIMEOUT", "1m"),
            ],
            |r| r.run(None),
        )
        .unwrap();
        assert_eq!(run.overlap, Duration::from_secs(300));
        assert_eq!(run.initial_lookback, Duration::from_secs(86_400));
        let from_env = resolve_with(&["poll"], &[("CYLANCE_LOGS_OVERLAP", "20m")], |r| {
            r.run(None)
        })
        .unwrap();
        assert_eq!(from_env.overlap, Duration::from_secs(1200));
    }

    #[test]
    fn empty_or_invalid_values_name_their_variable_or_flag() {
        let err = resolve_with(&["poll"], &[("CYLANCE_LOGS_OVERLAP", "")], |r| r.run(None));
        assert!(message(err.unwrap_err()).contains("$CYLANCE_LOGS_OVERLAP is set but empty"));
        let err = resolve_with(&["poll", "--overlap", "10"], &[], |r| r.run(None));
        assert!(message(err.unwrap_err()).contains("--overlap: '10' lacks a unit"));
        let err = resolve_with(
            &["poll"],
            &[("CYLANCE_LOGS_SOURCES", "threats,alerts")],
            |r| r.run(None),
        );
        assert!(
            message(err.unwrap_err()).contains("$CYLANCE_LOGS_SOURCES: unknown source 'alerts'")
        );
    }

    #[test]
    fn missing_required_value_names_flag_and_variable() {
        let err = resolve_with(&["poll"], &[("CYLANCE_APP_SECRET", "s")], |r| r.api());
        assert_eq!(
            message(err.unwrap_err()),
            "missing --app-id (or $CYLANCE_APP_ID): it is required"
        );
    }

    #[test]
    fn plain_http_only_for_loopback() {
        let env = [
            ("CYLANCE_APP_ID", "a"),
            ("CYLANCE_TENANT_ID", "t"),
            ("CYLANCE_APP_SECRET", "s"),
        ];
        for ok in [
            "http://127.0.0.1:8080/",
            "http://localhost:1",
            "http://[::1]:9",
            "https://proxy.example",
        ] {
            let api = resolve_with(&["check", "--api-url", ok], &env, |r| r.api()).unwrap();
            assert!(!api.base_url.ends_with('/'));
        }
        let err = resolve_with(&["check", "--api-url", "http://10.0.0.1"], &env, |r| {
            r.api()
        });
        assert!(message(err.unwrap_err()).contains("plain http:// is refused"));
        let region = resolve_with(&["check", "--region", "EUC1"], &env, |r| r.api()).unwrap();
        assert_eq!(region.base_url, "https://protectapi-euc1.cylance.com");
        let err = resolve_with(&["check", "--region", "mars"], &env, |r| r.api());
        assert!(message(err.unwrap_err()).contains("--region: unknown region 'mars'"));
    }

    #[test]
    fn secret_file_loses_its_trailing_newline_and_empty_secret_is_refused() {
        let dir = std::env::temp_dir().join(format!("cl-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        private(&file);
        let env = [("CYLANCE_APP_ID", "a"), ("CYLANCE_TENANT_ID", "t")];
        let path = file.to_str().unwrap();
        let api = resolve_with(&["poll", "--app-secret-file", path], &env, |r| r.api()).unwrap();
        assert_eq!(api.secret.expose(), "s3cret");
        assert_eq!(format!("{:?}", api.secret), "Secret(<redacted>)");
        std::fs::write(&file, "\n").unwrap();
        let err = resolve_with(&["poll", "--app-secret-file", path], &env, |r| r.api());
        assert!(message(err.unwrap_err()).contains("secret is empty"));
        // The systemd credential is found without any flag.
        std::fs::write(dir.join("cylance-app-secret"), "from-credential").unwrap();
        private(&dir.join("cylance-app-secret"));
        let mut env_cred = env.to_vec();
        env_cred.push(("CREDENTIALS_DIRECTORY", dir.to_str().unwrap()));
        let api = resolve_with(&["poll"], &env_cred, |r| r.api()).unwrap();
        assert_eq!(api.secret.expose(), "from-credential");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
