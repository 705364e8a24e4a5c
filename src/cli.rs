//! The command line as typed: a plain clap definition, nothing resolved.
//!
//! Every option is global (it works before or after the subcommand) and is kept
//! as the raw string the user gave. Turning these into checked values, with the
//! environment and defaults filled in, is `config`'s job, so that an empty or
//! invalid value from a flag or a variable gets the same one-line error and the
//! configuration exit code (78) instead of clap's usage code (2).
//!
//! The doc comments become `--help` and the man page: each states the default
//! and the environment variable. The application secret is deliberately not an
//! option: argv is readable by every user on the host.

use clap::{Args, CommandFactory, Parser, Subcommand};

/// The clap definition, with the help text that comes from the source list
/// (a derive attribute can only hold text known at compile time). Used to
/// parse the command line and to generate the man page and completions.
pub fn command() -> clap::Command {
    let names = crate::sources::names(", ");
    let default = crate::sources::default_names(",");
    // `mut_args`, not `mut_arg`: that one moves the option to the end of
    // the help.
    let lookups = crate::sources::lookup_names(", ");
    let default_lookups = crate::sources::default_lookup_names(",");
    Cli::command().mut_args(|arg| match arg.get_id().as_str() {
        "sources" => arg.help(format!(
            "Comma-separated sources to fetch: {names}. Default: {default}. \
             [env: CYLANCE_LOGS_SOURCES]"
        )),
        "enrich" => arg.help(format!(
            "Comma-separated lookups, each a request per new line whose answer the line \
             carries: {lookups}; or none. Default: {default_lookups}. \
             [env: CYLANCE_LOGS_ENRICH]"
        )),
        _ => arg,
    })
}

#[derive(Debug, Parser)]
#[command(
    name = "cylance-logs",
    version,
    about = "Poll Cylance PROTECT threats, detections, memory protection and the device inventory into a JSON-lines log file, exactly once.",
    long_about = "Poll Cylance PROTECT threats, detections, memory protection and the device inventory into a JSON-lines log file, exactly once.\n\n\
        Meant to be run every minute by a systemd timer or cron. Each run takes a lock, reads its \
        checkpoint, fetches what changed since the last run, appends it to the output file under a \
        file lock and advances the checkpoint atomically.\n\n\
        The application secret is read from --app-secret-file, from \
        $CREDENTIALS_DIRECTORY/cylance-app-secret, or from the CYLANCE_APP_SECRET variable; it is \
        never an option."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub options: GlobalOptions,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch what changed since the last run and append it (the timer's job).
    Poll,
    /// Write the events of a past window, before what poll already wrote.
    Backfill(BackfillArgs),
    /// Check configuration, credentials and each source; write nothing.
    Check,
    /// Show per source the events written, the last success and what the next poll will ask
    /// for, and how the last run ended.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Start of the window: RFC 3339 (2024-05-01T00:00:00Z), a date (2024-05-01, midnight UTC)
    /// or an age before now (30d, 12h, 90m).
    #[arg(long, value_name = "TIME")]
    pub since: String,
    /// End of the window (exclusive), same forms as --since. Default: the start of what is
    /// already written, so backfill fills in the history with no overlap; with no checkpoint,
    /// now.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the checkpoint as JSON, for monitoring.
    #[arg(long)]
    pub json: bool,
    /// Exit 2 (CRITICAL, as Nagios plugins do) when a source's last success is older than
    /// this, or there is none. The first line is the verdict, "OK: ..." or "CRITICAL: ..."
    /// with the reason (Nagios shows only that line); the details follow. Default: no check.
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
}

#[derive(Debug, Args)]
pub struct GlobalOptions {
    /// Application ID of the Cylance API application. Required.
    /// [env: CYLANCE_APP_ID]
    #[arg(long, global = true, value_name = "ID")]
    pub app_id: Option<String>,

    /// Tenant ID. Required. Written into every output line as "tenant_id".
    /// [env: CYLANCE_TENANT_ID]
    #[arg(long, global = true, value_name = "ID")]
    pub tenant_id: Option<String>,

    /// File holding the application secret (a trailing newline is ignored): a regular file
    /// of at most 64 KiB.
    /// Default: $CREDENTIALS_DIRECTORY/cylance-app-secret when that exists, else the
    /// CYLANCE_APP_SECRET variable. [env: CYLANCE_APP_SECRET_FILE]
    #[arg(long, global = true, value_name = "PATH")]
    pub app_secret_file: Option<String>,

    /// API region: na, us-gov, apne1, au, euc1 or sae1. Default: na. [env: CYLANCE_REGION]
    #[arg(long, global = true, value_name = "CODE")]
    pub region: Option<String>,

    /// Base URL of the API, instead of the region's host (proxies, tests). http:// is
    /// accepted only for loopback addresses; credentials (user:password@), a query or a
    /// fragment are refused. Redirects are never followed. [env: CYLANCE_API_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub api_url: Option<String>,

    /// PEM file of the CA certificates to trust instead of the bundled Mozilla roots, for
    /// TLS-inspecting proxies. Default: the bundled roots. [env: CYLANCE_LOGS_CA_FILE]
    #[arg(long, global = true, value_name = "PATH")]
    pub ca_file: Option<String>,

    /// Output file, appended to; "-" is standard output. Default:
    /// $LOGS_DIRECTORY/cylance-protect.log, as root /var/log/cylance-protect.log, else
    /// cylance-protect.log in the user's state directory. [env: CYLANCE_LOGS_OUTPUT]
    #[arg(long, global = true, value_name = "PATH")]
    pub output: Option<String>,

    /// Directory for the checkpoint and the run lock. Default: $STATE_DIRECTORY, as root
    /// /var/lib/cylance-logs, else the user's state directory. [env: CYLANCE_LOGS_STATE_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<String>,

    // The help names the sources of `sources::ALL`: see `command()`.
    #[arg(long, global = true, value_name = "LIST")]
    pub sources: Option<String>,

    // The help names the lookups of the sources' descriptions, and the
    // default (threat-devices) from them: see `command()`.
    // [env: CYLANCE_LOGS_ENRICH]
    #[arg(long, global = true, value_name = "LIST")]
    pub enrich: Option<String>,

    /// How far back the first poll without a checkpoint reaches. Default: 24h; at most
    /// 3650d.
    /// [env: CYLANCE_LOGS_INITIAL_LOOKBACK]
    #[arg(long, global = true, value_name = "DURATION")]
    pub initial_lookback: Option<String>,

    /// Take a device inventory snapshot (source `devices`) at most this often; the first
    /// poll with the source enabled takes one. Default: 24h; 1s to 3650d.
    /// [env: CYLANCE_LOGS_DEVICES_EVERY]
    #[arg(long, global = true, value_name = "DURATION")]
    pub devices_every: Option<String>,

    /// How far before the cursor each poll looks again, for late arrivals. Default: 10m; at
    /// most 1d.
    /// [env: CYLANCE_LOGS_OVERLAP]
    #[arg(long, global = true, value_name = "DURATION")]
    pub overlap: Option<String>,

    /// Timeout of each HTTP request; shorter when --max-runtime leaves less time. Default:
    /// 30s; at most 10m. [env: CYLANCE_LOGS_TIMEOUT]
    #[arg(long, global = true, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// Wait this long for another run on the same state directory to finish, instead of
    /// exiting 75 at once. Default: 0s; at most 1d. [env: CYLANCE_LOGS_LOCK_WAIT]
    #[arg(long, global = true, value_name = "DURATION")]
    pub lock_wait: Option<String>,

    /// Stop fetching after this long, commit what was written and exit 75; 0 means no limit.
    /// No request outlives it. Default: 50s for poll (under the timer's minute), no limit for
    /// backfill; at most 7d.
    /// [env: CYLANCE_LOGS_MAX_RUNTIME]
    #[arg(long, global = true, value_name = "DURATION")]
    pub max_runtime: Option<String>,

    /// List pages fetched at once within a window; pages are still written in order.
    /// Default: 4; 1 to 16. [env: CYLANCE_LOGS_CONCURRENCY]
    #[arg(long, global = true, value_name = "N")]
    pub concurrency: Option<String>,

    /// Requests per second at most (all threads together), so that a backfill stays under
    /// the API's rate limit; 0 means no limit. Default: 10. [env: CYLANCE_LOGS_MAX_RPS]
    #[arg(long, global = true, value_name = "N")]
    pub max_rps: Option<String>,

    /// Write run metrics for Prometheus's node_exporter textfile collector to this file
    /// (replaced atomically at the end of each poll or backfill): last success per source,
    /// events written, last exit code, duration, requests, retries. Default: none.
    /// [env: CYLANCE_LOGS_METRICS_FILE]
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_file: Option<String>,

    /// More detail on stderr: -v shows each setting and where it came from (flag, variable or
    /// default; never the secret, only where it was read from) and each request, -vv adds
    /// response sizes.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}
