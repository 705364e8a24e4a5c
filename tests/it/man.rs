//! The man page and shell completions are generated from the clap definition,
//! so `--help`, the page and the completions cannot disagree. The checked-in
//! copies must equal what the code generates; refresh them with
//!
//!     CYLANCE_LOGS_REGENERATE=1 cargo test --test it man::
//!
//! (packagers install man/cylance-logs.1 and man/completions/*).

use clap_mangen::roff::{Inline, Roff, bold, italic, roman};
use cylance_logs::cli;
use cylance_logs::error::ExitKind;
use std::path::{Path, PathBuf};

const REGENERATE: &str = "CYLANCE_LOGS_REGENERATE";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Compares a checked-in file with what the code generates now, or rewrites
/// it when regeneration is asked for.
fn check_generated(relative: &str, generated: &[u8]) {
    let path = repo_path(relative);
    if std::env::var_os(REGENERATE).is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{relative} differs from what the clap definition generates; refresh it with\n  \
         {REGENERATE}=1 cargo test --test it man::"
    );
}

/// Variables read outside the options' own `[env: ...]`.
const MORE_ENVIRONMENT: &[(&str, &str)] = &[
    (
        "CYLANCE_APP_SECRET",
        "The application secret, when no secret file is given. Prefer a file or a systemd credential: the environment of a process can be read by root and by the same user.",
    ),
    (
        "CREDENTIALS_DIRECTORY",
        "Set by systemd for LoadCredential=; the secret is read from cylance-app-secret in it.",
    ),
    (
        "STATE_DIRECTORY",
        "Set by systemd for StateDirectory=; the default --state-dir.",
    ),
    (
        "LOGS_DIRECTORY",
        "Set by systemd for LogsDirectory=; the default output is cylance-protect.log in it.",
    ),
    (
        "JOURNAL_STREAM",
        "Set by systemd; diagnostics then carry sd-daemon priority prefixes (<3> error, <4> warning, <6> info, <7> debug).",
    ),
    (
        "HTTPS_PROXY, NO_PROXY",
        "Proxy to use for the API, and hosts to reach directly.",
    ),
    (
        "CYLANCE_LOGS_BACKOFF_BASE",
        "First step of the retry backoff, doubled on each retry up to 60s: a duration like 2s, or milliseconds like 500ms (default 2s, at most 1m).",
    ),
];

const OUTPUT: &str = "One JSON object per line: the API item exactly as it came, with two keys \
put in front: \"event_type\" (\"threat\" or \"detection\") and \"tenant_id\" (the configured \
tenant ID), so that several tenants can share one file. A threat is identified by sha256 and \
last_found, a detection by Id; each is written exactly once. Nothing else goes into the file; \
diagnostics go to standard error.";

const FILES: &[(&str, &str)] = &[
    (
        "STATE_DIR/checkpoint.json",
        "What has been written, per source, and where the output stood at the last commit. Replaced atomically. If it is corrupt, restore it or move it away and run backfill.",
    ),
    (
        "STATE_DIR/lock",
        "The run lock; one run at a time per state directory.",
    ),
    (
        "STATE_DIR/appending",
        "Present while a run has appended lines its checkpoint does not cover yet, or a line it was writing when it was killed still ends the output; the next run then reads the output's tail to recover them, and its next append removes the torn line. Do not delete it by hand.",
    ),
    (
        "STATE_DIR/rejected.jsonl",
        "Items the API sent that could not be placed (no key, no valid time, not an object...), one JSON line each with source, page and reason; only ever appended to.",
    ),
    (
        "/var/log/cylance-logs/cylance-protect.log",
        "The output under the systemd units (LogsDirectory=cylance-logs).",
    ),
    (
        "/etc/cylance-logs/cylance-logs.env",
        "Settings for the systemd units and the cron example.",
    ),
    (
        "/etc/cylance-logs/app-secret",
        "The application secret, mode 600, passed to the service with LoadCredential=.",
    ),
];

const EXAMPLES: &[(&str, &str)] = &[
    (
        "cylance-logs check",
        "Check the configuration, the credentials and one page of each source; write nothing.",
    ),
    (
        "cylance-logs poll",
        "One incremental run, as the timer does it.",
    ),
    (
        "cylance-logs backfill --since 30d",
        "Write the last 30 days before what poll already wrote.",
    ),
    (
        "cylance-logs status --json",
        "The checkpoint, for monitoring.",
    ),
];

fn environment_of_options(cmd: &clap::Command) -> Vec<(String, String)> {
    cmd.get_arguments()
        .filter_map(|arg| {
            let help = arg.get_help()?.to_string();
            let start = help.find("[env: ")? + "[env: ".len();
            let var = help[start..].split(']').next()?.to_string();
            Some((var, format!("Same as --{}.", arg.get_long()?)))
        })
        .collect()
}

/// `--flag`, or `--flag VALUE` for an option that takes one; in brackets
/// unless required.
fn synopsis_of(arg: &clap::Arg) -> Vec<Inline> {
    let name = match (arg.get_short(), arg.get_long()) {
        (Some(short), Some(long)) => format!("-{short}|--{long}"),
        (None, Some(long)) => format!("--{long}"),
        (Some(short), None) => format!("-{short}"),
        (None, None) => arg.get_id().to_string(),
    };
    let mut parts = vec![bold(name)];
    if arg.get_action().takes_values()
        && let Some(value) = arg.get_value_names().and_then(|v| v.first())
    {
        parts.push(roman(" "));
        parts.push(italic(value.to_string()));
    }
    if arg.is_required_set() {
        parts.push(roman(" "));
        return parts;
    }
    let mut bracketed = vec![roman("[")];
    bracketed.extend(parts);
    bracketed.push(roman(
        if matches!(arg.get_action(), clap::ArgAction::Count) {
            "]... "
        } else {
            "] "
        },
    ));
    bracketed
}

/// SYNOPSIS with value placeholders (clap_mangen shows options without
/// them), then one line per command.
fn synopsis(cmd: &clap::Command) -> Roff {
    let mut roff = Roff::default();
    roff.control("SH", ["SYNOPSIS"]);
    let mut line = vec![bold("cylance-logs "), roman("[")];
    line.push(italic("OPTIONS"));
    line.push(roman("] "));
    line.push(italic("COMMAND"));
    roff.text(line);
    for sub in cmd.get_subcommands() {
        roff.control("br", []);
        let mut line = vec![bold(format!("cylance-logs {} ", sub.get_name()))];
        for arg in sub
            .get_arguments()
            .filter(|a| !a.is_global_set() && a.get_long() != Some("help"))
        {
            line.extend(synopsis_of(arg));
        }
        line.push(roman("["));
        line.push(italic("OPTIONS"));
        line.push(roman("]"));
        roff.text(line);
    }
    roff.control("PP", []);
    roff.text([roman("OPTIONS:")]);
    let mut line = Vec::new();
    for arg in cmd.get_arguments() {
        line.extend(synopsis_of(arg));
    }
    roff.text(line);
    roff
}

fn man_page() -> Vec<u8> {
    let cmd = cli::command();
    let man = clap_mangen::Man::new(cmd.clone())
        .date("")
        .manual("cylance-logs manual");
    let mut out = Vec::new();
    // Section by section: clap_mangen's SYNOPSIS lacks value placeholders,
    // and its SUBCOMMANDS section points at cylance-logs-poll(1) and the
    // like, which are not shipped.
    man.render_title(&mut out).unwrap();
    man.render_name_section(&mut out).unwrap();
    synopsis(&cmd).to_writer(&mut out).unwrap();
    man.render_description_section(&mut out).unwrap();
    man.render_options_section(&mut out).unwrap();

    let mut roff = Roff::default();
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands() {
        roff.control("TP", []);
        roff.text([bold(sub.get_name())]);
        roff.text([roman(
            sub.get_long_about()
                .or(sub.get_about())
                .map(|h| h.to_string())
                .unwrap_or_default(),
        )]);
    }
    for sub in cmd.get_subcommands() {
        let options: Vec<_> = sub
            .get_arguments()
            .filter(|a| !a.is_global_set() && a.get_long().is_some())
            .collect();
        if options.is_empty() {
            continue;
        }
        roff.control(
            "SH",
            [format!("{} OPTIONS", sub.get_name().to_uppercase()).as_str()],
        );
        for arg in options {
            roff.control("TP", []);
            let value = arg
                .get_value_names()
                .filter(|_| arg.get_action().takes_values())
                .map(|v| format!(" {}", v[0]))
                .unwrap_or_default();
            roff.text([bold(format!("--{}", arg.get_long().unwrap())), roman(value)]);
            roff.text([roman(
                arg.get_long_help()
                    .or(arg.get_help())
                    .map(|h| h.to_string())
                    .unwrap_or_default(),
            )]);
        }
    }
    roff.control("SH", ["OUTPUT"]);
    roff.text([roman(OUTPUT)]);
    roff.control("SH", ["ENVIRONMENT"]);
    let mut environment = environment_of_options(&cmd);
    environment.extend(
        MORE_ENVIRONMENT
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    for (var, text) in environment {
        roff.control("TP", []);
        roff.text([bold(var)]);
        roff.text([roman(text)]);
    }
    roff.control("SH", ["FILES"]);
    for (path, text) in FILES {
        roff.control("TP", []);
        roff.text([bold(*path)]);
        roff.text([roman(*text)]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    roff.control("TP", []);
    roff.text([bold("0")]);
    roff.text([roman("Success, also when there was nothing new.")]);
    // Kinds that share a code (usage and status's CRITICAL) share an entry.
    let mut codes: Vec<u8> = ExitKind::ALL.iter().map(|k| k.code()).collect();
    codes.dedup();
    for code in codes {
        let meanings: Vec<String> = ExitKind::ALL
            .iter()
            .filter(|k| k.code() == code)
            .map(|k| capitalize(k.meaning()))
            .collect();
        roff.control("TP", []);
        roff.text([bold(code.to_string())]);
        roff.text([roman(format!("{}.", meanings.join(". ")))]);
    }
    roff.control("SH", ["EXAMPLES"]);
    for (command, text) in EXAMPLES {
        roff.control("TP", []);
        roff.text([bold(*command)]);
        roff.text([roman(*text)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "systemd.timer(5), sd-daemon(3), logrotate(8); \
         /usr/share/doc/cylance-logs/README.md",
    )]);
    roff.to_writer(&mut out).unwrap();
    man.render_version_section(&mut out).unwrap();
    out
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[test]
fn checked_in_man_page_matches_the_clap_definition() {
    let page = man_page();
    let text = String::from_utf8_lossy(&page);
    for section in [
        "OUTPUT",
        "ENVIRONMENT",
        "FILES",
        "EXIT STATUS",
        "EXAMPLES",
        "BACKFILL OPTIONS",
    ] {
        assert!(
            text.contains(&format!(".SH \"{section}\""))
                || text.contains(&format!(".SH {section}")),
            "no {section}"
        );
    }
    assert!(text.contains("CYLANCE_LOGS_OVERLAP"));
    assert!(
        text.contains("\\fB\\-\\-json\\fR\n"),
        "--json is a flag, shown without a value"
    );
    assert!(
        !text.contains("cylance\\-logs\\-") && !text.contains("(1)"),
        "names no man page that is not shipped"
    );
    assert!(
        text.contains("[\\fB\\-\\-app\\-id\\fR \\fIID\\fR]")
            && text.contains("\\fB\\-\\-since\\fR \\fITIME\\fR"),
        "SYNOPSIS gives value placeholders"
    );
    let exit_status = &text[text.find("EXIT STATUS").unwrap()..];
    assert!(
        exit_status.contains("\\fB2\\fR\nUsage error") && exit_status.contains("CRITICAL"),
        "EXIT STATUS says that status exits 2 for CRITICAL"
    );
    assert!(
        exit_status.contains("\\fB70\\fR\nUnexpected failure"),
        "EXIT STATUS names 70, an unexpected failure"
    );
    for kind in ExitKind::ALL {
        assert!(
            exit_status.contains(&format!("\\fB{}\\fR\n", kind.code())),
            "EXIT STATUS lists {}",
            kind.code()
        );
    }
    assert!(
        text.contains("\\(rqtenant_id\\(rq") || text.contains("\"tenant_id\""),
        "the output contract names the tenant field"
    );
    check_generated("man/cylance-logs.1", &page);
}

#[test]
fn checked_in_completions_match_the_clap_definition() {
    use clap_complete::Shell;
    for (shell, file) in [
        (Shell::Bash, "man/completions/cylance-logs.bash"),
        (Shell::Zsh, "man/completions/_cylance-logs"),
        (Shell::Fish, "man/completions/cylance-logs.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cli::command(), "cylance-logs", &mut out);
        assert!(String::from_utf8_lossy(&out).contains("backfill"));
        check_generated(file, &out);
    }
}
