//! From raw options to ready-to-use settings: flag > environment > default.
//!
//! Nothing downstream reads flags, the environment or defaults again. Each
//! value remembers where it came from, and every error names the flag or the
//! variable that held the bad value, so that an operator debugging a timer unit
//! sees at once which line of which file to fix. All errors here exit 78.
//!
//! Every duration and count has a bound (the `MAX_*` constants below): a value
//! past it is a typo or an attack, and refused here, so that no later time
//! arithmetic (`now - lookback`) can overflow.

use crate::cli::GlobalOptions;
use crate::error::{ExitKind, fail};
use crate::sources::SourceKind;
use crate::timefmt::{display_duration, parse_duration};
use anyhow::Result;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Farthest back a first poll may reach (`--initial-lookback`): 10 years.
pub const MAX_LOOKBACK: Duration = Duration::from_secs(3650 * 86_400);
/// Largest `--overlap`: a day.
pub const MAX_OVERLAP: Duration = Duration::from_secs(86_400);
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

/// Where a resolved value came from, for debug lines and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    Env(&'static str),
    Default(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "{flag}"),
            Origin::Env(var) => write!(f, "${var}"),
            Origin::Default(why) => write!(f, "default ({why})"),
        }
    }
}

/// The application secret. Deliberately has no `Display`, and its `Debug`
/// hides the value, so it cannot end up in a log line by accident.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
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
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub state_dir: PathBuf,
    pub output: OutputTarget,
    /// Prometheus textfile written at the end of each run.
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct RunSettings {
    pub sources: Vec<SourceKind>,
    pub initial_lookback: Duration,
    pub overlap: Duration,
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

/// Resolves options against the environment.
pub struct Resolver<'a> {
    options: &'a GlobalOptions,
    env: EnvLookup<'a>,
}

fn config_error(message: String) -> anyhow::Error {
    fail(ExitKind::Config, message)
}

impl<'a> Resolver<'a> {
    pub fn new(options: &'a GlobalOptions, env: EnvLookup<'a>) -> Self {
        Resolver { options, env }
    }

    /// The value of an environment variable; set-but-empty is an error, so a
    /// typo in an env file does not silently fall back to a default.
    fn env_value(&self, var: &'static str) -> Result<Option<String>> {
        match (self.env)(var) {
            None => Ok(None),
            Some(value) => {
                let value = value
                    .into_string()
                    .map_err(|_| config_error(format!("${var} is not valid UTF-8")))?;
                if value.trim().is_empty() {
                    return Err(config_error(format!("${var} is set but empty")));
                }
                Ok(Some(value))
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
        Ok(self.env_value(var)?.map(|v| (v, Origin::Env(var))))
    }

    fn required(
        &self,
        flag_value: &Option<String>,
        flag: &'static str,
        var: &'static str,
    ) -> Result<String> {
        match self.lookup(flag_value, flag, var)? {
            Some((value, _)) => Ok(value.trim().to_string()),
            None => Err(config_error(format!(
                "missing {flag} (or ${var}): it is required"
            ))),
        }
    }

    /// A duration of at most `max`.
    fn duration(
        &self,
        flag_value: &Option<String>,
        flag: &'static str,
        var: &'static str,
        default: Duration,
        max: Duration,
    ) -> Result<Duration> {
        match self.lookup(flag_value, flag, var)? {
            None => Ok(default),
            Some((text, origin)) => {
                let value = parse_duration(&text)
                    .map_err(|why| config_error(format!("{origin}: {why}")))?;
                if value > max {
                    return Err(config_error(format!(
                        "{origin}: '{}' is more than the largest accepted, {}",
                        text.trim(),
                        display_duration(max)
                    )));
                }
                Ok(value)
            }
        }
    }

    fn count(
        &self,
        flag_value: &Option<String>,
        flag: &'static str,
        var: &'static str,
        default: u32,
    ) -> Result<u32> {
        match self.lookup(flag_value, flag, var)? {
            None => Ok(default),
            Some((text, origin)) => text
                .trim()
                .parse()
                .map_err(|_| config_error(format!("{origin}: '{text}' is not a whole number"))),
        }
    }

    pub fn api(&self) -> Result<ApiSettings> {
        let o = self.options;
        let app_id = self.required(&o.app_id, "--app-id", "CYLANCE_APP_ID")?;
        let tenant_id = self.required(&o.tenant_id, "--tenant-id", "CYLANCE_TENANT_ID")?;
        let secret = self.secret()?;
        let base_url = self.base_url()?;
        let ca_file = self
            .lookup(&o.ca_file, "--ca-file", "CYLANCE_LOGS_CA_FILE")?
            .map(|(path, _)| PathBuf::from(path));
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
    /// $CYLANCE_APP_SECRET. Never a flag value.
    fn secret(&self) -> Result<Secret> {
        let file = match self.lookup(
            &self.options.app_secret_file,
            "--app-secret-file",
            "CYLANCE_APP_SECRET_FILE",
        )? {
            Some((path, origin)) => Some((PathBuf::from(path), origin)),
            None => (self.env)("CREDENTIALS_DIRECTORY")
                .map(|dir| PathBuf::from(dir).join("cylance-app-secret"))
                .filter(|path| path.exists())
                .map(|path| {
                    (
                        path,
                        Origin::Default("$CREDENTIALS_DIRECTORY/cylance-app-secret"),
                    )
                }),
        };
        let secret = match file {
            Some((path, origin)) => read_secret_file(&path, &origin)?,
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
        if secret.trim().is_empty() {
            return Err(config_error("the application secret is empty".into()));
        }
        Ok(Secret(secret))
    }

    fn base_url(&self) -> Result<String> {
        let o = self.options;
        if let Some((url, origin)) = self.lookup(&o.api_url, "--api-url", "CYLANCE_API_URL")? {
            return check_base_url(url.trim(), &origin);
        }
        let region = match self.lookup(&o.region, "--region", "CYLANCE_REGION")? {
            Some((code, origin)) => (code.trim().to_ascii_lowercase(), origin),
            None => ("na".to_string(), Origin::Default("na")),
        };
        REGIONS
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
            })
    }

    pub fn store(&self) -> Result<StoreSettings> {
        let o = self.options;
        let state_dir = match self.lookup(&o.state_dir, "--state-dir", "CYLANCE_LOGS_STATE_DIR")? {
            Some((dir, _)) => PathBuf::from(dir),
            None => self.default_dir("STATE_DIRECTORY", "/var/lib/cylance-logs", "--state-dir")?,
        };
        let output = match self.lookup(&o.output, "--output", "CYLANCE_LOGS_OUTPUT")? {
            Some((path, _)) if path == "-" => OutputTarget::Stdout,
            Some((path, _)) => OutputTarget::File(PathBuf::from(path)),
            None => {
                let dir = self.default_dir("LOGS_DIRECTORY", "/var/log", "--output")?;
                OutputTarget::File(dir.join("cylance-protect.log"))
            }
        };
        let metrics_file = self
            .lookup(
                &o.metrics_file,
                "--metrics-file",
                "CYLANCE_LOGS_METRICS_FILE",
            )?
            .map(|(path, _)| PathBuf::from(path));
        Ok(StoreSettings {
            state_dir,
            output,
            metrics_file,
        })
    }

    /// systemd's directory variable (first entry of a colon list), else the
    /// system path for root, else the user's XDG state directory.
    fn default_dir(&self, systemd_var: &str, root_dir: &str, flag: &str) -> Result<PathBuf> {
        if let Some(dirs) = (self.env)(systemd_var)
            && let Some(first) = dirs.to_string_lossy().split(':').find(|d| !d.is_empty())
        {
            return Ok(PathBuf::from(first));
        }
        if running_as_root() {
            return Ok(PathBuf::from(root_dir));
        }
        directories::ProjectDirs::from("", "", "cylance-logs")
            .and_then(|dirs| dirs.state_dir().map(Path::to_path_buf))
            .ok_or_else(|| {
                config_error(format!(
                    "no default for {flag}: ${systemd_var} is unset and there is no home \
                     directory; give {flag}"
                ))
            })
    }

    pub fn run(&self, max_runtime_default: Option<Duration>) -> Result<RunSettings> {
        let o = self.options;
        let sources = match self.lookup(&o.sources, "--sources", "CYLANCE_LOGS_SOURCES")? {
            None => SourceKind::ALL.to_vec(),
            Some((list, origin)) => {
                parse_sources(&list).map_err(|why| config_error(format!("{origin}: {why}")))?
            }
        };
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
        let lock_wait = self.duration(
            &o.lock_wait,
            "--lock-wait",
            "CYLANCE_LOGS_LOCK_WAIT",
            Duration::ZERO,
            MAX_LOCK_WAIT,
        )?;
        let max_runtime =
            match self.lookup(&o.max_runtime, "--max-runtime", "CYLANCE_LOGS_MAX_RUNTIME")? {
                None => max_runtime_default,
                Some(_) => {
                    let d = self.duration(
                        &o.max_runtime,
                        "--max-runtime",
                        "CYLANCE_LOGS_MAX_RUNTIME",
                        Duration::ZERO,
                        MAX_RUNTIME,
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
            initial_lookback,
            overlap,
            lock_wait,
            max_runtime,
            concurrency,
            max_rps,
        })
    }
}

impl RunSettings {
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.sources.iter().map(|s| s.name()).collect();
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
        let kind = SourceKind::from_name(name)
            .ok_or_else(|| format!("unknown source '{name}' (known: threats, detections)"))?;
        if !sources.contains(&kind) {
            sources.push(kind);
        }
    }
    if sources.is_empty() {
        return Err("no source named".into());
    }
    Ok(sources)
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
