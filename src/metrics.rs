//! `--metrics-file`: a Prometheus textfile for node_exporter's textfile
//! collector, so that an alert fires when polling stops or keeps failing.
//!
//! Written at the end of every poll or backfill that got the run lock, also a
//! failed one (its exit code is the point), by temp file and rename in the
//! same directory so the collector never reads half a file. A run that could
//! not get the lock writes nothing: the run holding it will.

use crate::checkpoint::Checkpoint;
use crate::error::{Classify, ExitKind};
use crate::sources::{self, SourceKind};
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::fmt::Write as _;
use std::path::Path;

/// What one run did, for the metrics and the summary line.
#[derive(Debug, Clone)]
pub struct RunFigures {
    pub finished: DateTime<Utc>,
    pub duration_seconds: f64,
    pub exit_code: u8,
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    /// Events this run wrote, per source.
    pub events: Vec<(SourceKind, u64)>,
    /// Items this run first rejected to `rejected.jsonl`, per source.
    pub rejected: Vec<(SourceKind, u64)>,
    /// Lookup requests this run made for new lines (`--enrich`), per source.
    pub lookups: Vec<(SourceKind, u64)>,
    pub resources: Option<Resources>,
}

/// What the process used, from /proc (Linux); for `-v` and the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    pub peak_memory_bytes: u64,
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
}

impl Resources {
    /// This process so far; `None` where /proc is not there to ask.
    pub fn of_this_process() -> Option<Resources> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let peak_kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        // Fields 14 and 15 of /proc/self/stat, counted after the command name
        // (which may hold spaces) in clock ticks; USER_HZ is 100 on Linux (proc(5)).
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let after_name = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |index: usize| fields.get(index)?.parse::<f64>().ok();
        Some(Resources {
            peak_memory_bytes: peak_kib * 1024,
            cpu_user_seconds: ticks(11)? / 100.0,
            cpu_system_seconds: ticks(12)? / 100.0,
        })
    }

    /// The `-v` line the benchmark reads.
    pub fn describe(&self) -> String {
        format!(
            "resources: peak memory {} KiB, CPU {:.2}s user + {:.2}s system",
            self.peak_memory_bytes / 1024,
            self.cpu_user_seconds,
            self.cpu_system_seconds
        )
    }
}

pub fn write(
    path: &Path,
    tenant_id: &str,
    checkpoint: Option<&Checkpoint>,
    figures: &RunFigures,
) -> Result<()> {
    let text = render(tenant_id, checkpoint, figures);
    let temp = path.with_extension("prom.tmp");
    // A stale temp or a symlink planted at its name is removed, never
    // written through; create_new refuses anything that appears meanwhile.
    remove_if_present(&temp)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
        })
        .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
        .and_then(|()| std::fs::rename(&temp, path))
        .classify(
            ExitKind::Io,
            format_args!("writing the metrics file {}", path.display()),
        )
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

fn render(tenant_id: &str, checkpoint: Option<&Checkpoint>, figures: &RunFigures) -> String {
    let tenant = escape(tenant_id);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP cylance_logs_{name} {help}");
        let _ = writeln!(out, "# TYPE cylance_logs_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "cylance_logs_{name}{{{labels}}} {value}");
        }
    };
    let run = |value: f64| vec![(format!("tenant_id=\"{tenant}\""), value)];
    metric(
        "last_run_exit_code",
        "gauge",
        "Exit code of the last run: 0 success, 75 temporary (try again), others need a look.",
        &run(f64::from(figures.exit_code)),
    );
    metric(
        "last_run_timestamp_seconds",
        "gauge",
        "When the last run ended, Unix time.",
        &run(figures.finished.timestamp() as f64),
    );
    metric(
        "last_run_duration_seconds",
        "gauge",
        "How long the last run took.",
        &run(figures.duration_seconds),
    );
    metric(
        "last_run_requests",
        "gauge",
        "HTTP requests the last run made.",
        &run(figures.requests as f64),
    );
    metric(
        "last_run_retries",
        "gauge",
        "Requests the last run retried.",
        &run(figures.retries as f64),
    );
    metric(
        "last_run_rate_limited",
        "gauge",
        "HTTP 429 answers the last run met.",
        &run(figures.rate_limited as f64),
    );
    let per_source = |value: &dyn Fn(SourceKind) -> Option<f64>| -> Vec<(String, f64)> {
        sources::ALL
            .iter()
            .filter_map(|&kind| {
                let labels = format!("tenant_id=\"{tenant}\",source=\"{}\"", kind.name);
                value(kind).map(|v| (labels, v))
            })
            .collect()
    };
    metric(
        "last_run_events",
        "gauge",
        "Events the last run wrote, per source.",
        &per_source(&|kind| {
            figures
                .events
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, n)| *n as f64)
        }),
    );
    metric(
        "last_run_rejected",
        "gauge",
        "Items the last run could not place and kept in rejected.jsonl instead of the output, per source.",
        &per_source(&|kind| {
            figures
                .rejected
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, n)| *n as f64)
        }),
    );
    metric(
        "last_run_lookups",
        "gauge",
        "Lookup requests the last run made for the lines it wrote (--enrich), per source.",
        &per_source(&|kind| {
            figures
                .lookups
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, n)| *n as f64)
        }),
    );
    if let Some(resources) = figures.resources {
        metric(
            "last_run_peak_memory_bytes",
            "gauge",
            "Peak resident memory of the last run.",
            &run(resources.peak_memory_bytes as f64),
        );
    }
    let state = |kind: SourceKind| checkpoint.and_then(|c| c.source(kind));
    metric(
        "last_success_timestamp_seconds",
        "gauge",
        "When a source was last fetched completely, Unix time; alert when it is old.",
        &per_source(&|kind| {
            state(kind)
                .and_then(|s| s.last_success)
                .map(|t| t.timestamp() as f64)
        }),
    );
    metric(
        "events_written_total",
        "counter",
        "Events written to the output by this state directory, ever.",
        &per_source(&|kind| state(kind).map(|s| s.events_written as f64)),
    );
    metric(
        "rejected_total",
        "counter",
        "Items kept in rejected.jsonl instead of the output by this state directory, ever.",
        &per_source(&|kind| state(kind).map(|s| s.rejected_total as f64)),
    );
    out
}

/// Label values escape backslash, quote and newline (exposition format).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_line_is_name_labels_value() {
        let figures = RunFigures {
            finished: Utc::now(),
            duration_seconds: 0.5,
            exit_code: 75,
            requests: 3,
            retries: 1,
            rate_limited: 1,
            events: vec![(sources::from_name("threats").unwrap(), 4)],
            rejected: vec![(sources::from_name("threats").unwrap(), 2)],
            lookups: vec![(sources::from_name("threats").unwrap(), 5)],
            resources: Resources::of_this_process(),
        };
        let text = render("t\"1", None, &figures);
        assert!(text.contains("cylance_logs_last_run_exit_code{tenant_id=\"t\\\"1\"} 75\n"));
        assert!(
            text.contains(
                "cylance_logs_last_run_events{tenant_id=\"t\\\"1\",source=\"threats\"} 4\n"
            )
        );
        assert!(text.contains("cylance_logs_last_run_peak_memory_bytes{"));
        assert!(text.contains(
            "cylance_logs_last_run_rejected{tenant_id=\"t\\\"1\",source=\"threats\"} 2\n"
        ));
        assert!(text.contains(
            "cylance_logs_last_run_lookups{tenant_id=\"t\\\"1\",source=\"threats\"} 5\n"
        ));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(
                series.starts_with("cylance_logs_") && series.ends_with('}'),
                "{line}"
            );
            value.parse::<f64>().unwrap();
        }
    }
}
