//! The two mechanisms behind "exactly once across crashes and power loss",
//! proven by the order of the binary's own system calls, and the half-open
//! window `[start, end)` that keeps adjacent runs from writing an event twice.
//!
//! A `kill -9` cannot show a missing fsync (the page cache survives the
//! process), so the durability tests run the binary under `strace -f -y` and
//! check, for every replace of `checkpoint.json`: the output was synced after
//! its last write and before the replace; the checkpoint went to a temp file
//! that was synced before being renamed over the old one; the directory was
//! synced after the rename; and `checkpoint.json` itself was never opened for
//! writing (an in-place rewrite can be torn by a power loss).

use crate::support::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

// ---------------------------------------------------------------------------
// strace output, parsed
// ---------------------------------------------------------------------------

/// The system calls the checks need. `?` keeps strace quiet about names this
/// architecture lacks (aarch64 has no `open`, `creat` or `rename`).
const TRACED: &str = "trace=?open,openat,?openat2,?creat,write,writev,pwrite64,pwritev,?pwritev2,\
                      ftruncate,truncate,fsync,fdatasync,?rename,renameat,renameat2";

/// One finished system call.
#[derive(Debug, Clone)]
struct Call {
    name: String,
    args: Vec<String>,
    /// What it returned, e.g. `0`, `3</path>`, `-1 ENOENT (...)`.
    result: String,
    /// Position of the line where it started and of the line where it ended:
    /// with `-f`, another thread's calls may lie in between.
    started: usize,
    ended: usize,
}

impl Call {
    fn ok(&self) -> bool {
        !self.result.starts_with('-') && !self.result.starts_with('?')
    }

    /// The path strace (with `-y`) shows for the fd argument `n`.
    fn fd_path(&self, n: usize) -> Option<PathBuf> {
        fd_path(self.args.get(n)?)
    }

    /// The path argument `n`, resolved against the directory fd `dir`
    /// (an `*at` call) or taken as it is.
    fn path_arg(&self, n: usize, dir: Option<usize>) -> Option<PathBuf> {
        let path = PathBuf::from(unquote(self.args.get(n)?)?);
        match dir {
            Some(dir) if path.is_relative() => Some(self.fd_path(dir)?.join(path)),
            _ => Some(path),
        }
    }
}

/// `3</tmp/x/out.log>` or `AT_FDCWD</tmp/x>` → the path.
fn fd_path(arg: &str) -> Option<PathBuf> {
    let open = arg.find('<')?;
    let inner = arg[open + 1..].strip_suffix('>')?;
    Some(PathBuf::from(inner))
}

/// A quoted strace string, with the escapes a path can need.
fn unquote(arg: &str) -> Option<String> {
    let inner = arg.strip_prefix('"')?;
    let inner = inner.strip_suffix("\"...").unwrap_or(inner);
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Splits `a, "b, c", {d, e}, 3</p>` at the top-level commas.
fn split_args(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let (mut depth, mut quoted, mut escaped) = (0i32, false, false);
    let mut current = String::new();
    let mut previous = ' ';
    for c in text.chars() {
        if quoted {
            current.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' | '>' => depth = (depth - 1).max(0),
            // `<` opens an fd's path only right after the fd.
            '<' if previous.is_ascii_digit() || previous == 'D' => depth += 1,
            ',' if depth == 0 => {
                args.push(current.trim().to_string());
                current.clear();
                previous = c;
                continue;
            }
            _ => {}
        }
        current.push(c);
        previous = c;
    }
    if !current.trim().is_empty() {
        args.push(current.trim().to_string());
    }
    args
}

/// Parses a trace written by `strace -f -y -o FILE`: every line starts with
/// the thread's id; a call another thread interrupted is split into a
/// `<unfinished ...>` line and a `<... NAME resumed>` line, joined again here.
fn parse_trace(text: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut pending: HashMap<&str, (String, String, usize)> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let (pid, rest) = match line.split_once(' ') {
            Some((pid, rest)) if pid.chars().all(|c| c.is_ascii_digit()) => (pid, rest.trim()),
            _ => ("", line.trim()),
        };
        if rest.starts_with("---") || rest.starts_with("+++") {
            continue;
        }
        let (name, body, started) = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((name, tail)) = resumed.split_once(" resumed>") else {
                continue;
            };
            let Some((pending_name, head, started)) = pending.remove(pid) else {
                continue;
            };
            assert_eq!(pending_name, name, "strace line {index}: {line}");
            (name.to_string(), format!("{head}{tail}"), started)
        } else {
            let Some(open) = rest.find('(') else { continue };
            let name = rest[..open].to_string();
            let body = rest[open + 1..].to_string();
            if let Some(head) = body.strip_suffix(" <unfinished ...>") {
                pending.insert(pid, (name, head.to_string(), index));
                continue;
            }
            (name, body, index)
        };
        // `ARGS) = RESULT`; a call that never returned (the process exited
        // in it) ends in `) = ?` and is kept, as it may have had its effect.
        let Some(close) = body.rfind(") = ") else {
            continue;
        };
        calls.push(Call {
            name,
            args: split_args(&body[..close]),
            result: body[close + 4..].trim().to_string(),
            started,
            ended: index,
        });
    }
    calls
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

/// What one traced run did to its files, for the order checks.
#[derive(Debug, Default)]
struct Effects {
    /// (ended, path) of every write, truncate and so on.
    writes: Vec<(usize, PathBuf)>,
    /// (started, ended, path) of every fsync or fdatasync.
    syncs: Vec<(usize, usize, PathBuf)>,
    /// (started, from, to) of every rename.
    renames: Vec<(usize, PathBuf, PathBuf)>,
    /// (path, flags) of every open that could change the file.
    opened_for_writing: Vec<(PathBuf, String)>,
}

fn effects(calls: &[Call]) -> Effects {
    let mut effects = Effects::default();
    for call in calls.iter().filter(|c| c.ok()) {
        let n = call.name.as_str();
        match n {
            "write" | "writev" | "pwrite64" | "pwritev" | "pwritev2" | "ftruncate" => {
                if let Some(path) = call.fd_path(0) {
                    effects.writes.push((call.ended, path));
                }
            }
            "truncate" => {
                if let Some(path) = call.path_arg(0, None) {
                    effects.writes.push((call.ended, path));
                }
            }
            "fsync" | "fdatasync" => {
                if let Some(path) = call.fd_path(0) {
                    effects.syncs.push((call.started, call.ended, path));
                }
            }
            "rename" | "renameat" | "renameat2" => {
                let (from, to) = if n == "rename" {
                    (call.path_arg(0, None), call.path_arg(1, None))
                } else {
                    (call.path_arg(1, Some(0)), call.path_arg(3, Some(2)))
                };
                if let (Some(from), Some(to)) = (from, to) {
                    effects.renames.push((call.started, from, to));
                }
            }
            "open" | "openat" | "openat2" | "creat" => {
                let (path, flags) = match n {
                    "open" => (call.path_arg(0, None), call.args.get(1)),
                    "creat" => (call.path_arg(0, None), None),
                    _ => (call.path_arg(1, Some(0)), call.args.get(2)),
                };
                let flags = flags.cloned().unwrap_or_else(|| "O_CREAT|O_TRUNC".into());
                let writing = ["O_WRONLY", "O_RDWR", "O_TRUNC", "O_CREAT", "O_APPEND"]
                    .iter()
                    .any(|f| flags.contains(f));
                if let (Some(path), true) = (path, writing) {
                    effects.opened_for_writing.push((path, flags));
                }
            }
            _ => {}
        }
    }
    effects
}

/// How the commits of one run went, for the caller to check it saw some.
#[derive(Debug, Default, PartialEq)]
struct Commits {
    /// Renames onto `checkpoint.json`.
    replaced: usize,
    /// Of those, how many came after lines were appended to the output.
    after_output_writes: usize,
}

/// Checks the order of one run's calls; an `Err` names the first breach.
fn check_commit_order(trace: &str, output: &Path, checkpoint: &Path) -> Result<Commits, String> {
    let calls = parse_trace(trace);
    let fx = effects(&calls);
    let dir = checkpoint
        .parent()
        .expect("the checkpoint is in a directory");
    if let Some((path, flags)) = fx.opened_for_writing.iter().find(|(p, _)| p == checkpoint) {
        return Err(format!(
            "{} was opened for writing ({flags}): an in-place rewrite can be torn",
            path.display()
        ));
    }
    let mut commits = Commits::default();
    let replaces: Vec<_> = fx
        .renames
        .iter()
        .filter(|(_, _, to)| to == checkpoint)
        .collect();
    for (i, (at, from, _)) in replaces.iter().enumerate() {
        let at = *at;
        commits.replaced += 1;
        // The output: synced after its last write, before this rename.
        let last_output_write = fx
            .writes
            .iter()
            .filter(|(ended, path)| *ended < at && path == output)
            .map(|(ended, _)| *ended)
            .max();
        if let Some(written) = last_output_write {
            commits.after_output_writes += 1;
            let synced = fx
                .syncs
                .iter()
                .any(|(s, e, path)| path == output && *s > written && *e < at);
            if !synced {
                return Err(format!(
                    "checkpoint replace #{} (trace line {at}): the output was not synced \
                     after its last write (line {written})",
                    i + 1
                ));
            }
        }
        // The temp file: written, then synced, then renamed.
        let last_temp_write = fx
            .writes
            .iter()
            .filter(|(ended, path)| *ended < at && path == from)
            .map(|(ended, _)| *ended)
            .max()
            .ok_or_else(|| {
                format!(
                    "replace #{}: nothing was written to {}",
                    i + 1,
                    from.display()
                )
            })?;
        if !fx
            .syncs
            .iter()
            .any(|(s, e, path)| path == from && *s > last_temp_write && *e < at)
        {
            return Err(format!(
                "checkpoint replace #{} (trace line {at}): the temp file {} was not synced \
                 before the rename",
                i + 1,
                from.display()
            ));
        }
        // The directory: synced after the rename, before the next replace.
        let next = replaces.get(i + 1).map_or(usize::MAX, |(next, _, _)| *next);
        if !fx
            .syncs
            .iter()
            .any(|(s, _, path)| path == dir && *s > at && *s < next)
        {
            return Err(format!(
                "checkpoint replace #{} (trace line {at}): the directory {} was not synced \
                 after the rename",
                i + 1,
                dir.display()
            ));
        }
    }
    Ok(commits)
}

/// Runs the binary under strace; returns the trace's text, or `None` after
/// [`skip`] when this machine does not allow tracing (a container without
/// ptrace).
fn traced_run(env: &TestEnv, strace: &Path, args: &[&str], name: &str) -> Option<String> {
    let trace = env.dir.join(format!("{name}.strace"));
    let plain = env.command(args);
    let mut cmd = std::process::Command::new(strace);
    cmd.env_clear()
        .args(["-f", "-y", "-qq", "-e", TRACED, "-o"])
        .arg(&trace)
        .arg(plain.get_program())
        .args(plain.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in plain.get_envs() {
        if let Some(value) = value {
            cmd.env(key, value);
        }
    }
    let out = env.finish(cmd.spawn().expect("strace starts"));
    if out.code != 0 && out.stderr.contains("strace: ") && out.stderr.contains("ptrace") {
        skip(&format!("strace cannot trace here: {}", out.stderr.trim()));
        return None;
    }
    assert_eq!(out.code, 0, "{name} under strace:\n{}", out.stderr);
    Some(std::fs::read_to_string(&trace).expect("strace wrote its trace"))
}

#[test]
fn every_checkpoint_replace_follows_an_output_sync_and_is_atomic_and_durable() {
    let Some(strace) = require_tool("strace") else {
        return;
    };
    let env = TestEnv::new();
    // Several pages per source, so one run commits more than once.
    env.fake.add_threats(threats(0, 450, 30));
    env.fake.add_detections(detections(0, 250, 30));
    let mut total = Commits::default();
    // strace shows paths as the kernel resolves them.
    let dir = std::fs::canonicalize(&env.dir).unwrap();
    let (output, checkpoint) = (dir.join("out.log"), dir.join("state/checkpoint.json"));
    let mut check = |trace: Option<String>, what: &str| {
        let Some(trace) = trace else { return false };
        let commits = check_commit_order(&trace, &output, &checkpoint)
            .unwrap_or_else(|breach| panic!("{what}: {breach}"));
        total.replaced += commits.replaced;
        total.after_output_writes += commits.after_output_writes;
        true
    };
    // The first run (it also saves the checkpoint before its first append),
    // a later one that appends after a recorded mark, and a backfill.
    if !check(traced_run(&env, &strace, &["poll"], "first"), "first poll") {
        return;
    }
    env.fake.add_threats(threats(1000, 30, 2));
    env.fake.add_detections(detections(1000, 30, 2));
    let traced = traced_run(&env, &strace, &["poll"], "second");
    assert!(check(traced, "second poll"));
    env.fake.add_threats(threats(2000, 20, 60 * 30));
    let traced = traced_run(&env, &strace, &["backfill", "--since", "2d"], "backfill");
    assert!(check(traced, "backfill"));
    // Not vacuous: the checks above met commits that covered new lines.
    assert!(
        total.replaced >= 4 && total.after_output_writes >= 3,
        "too few commits seen in the traces: {total:?}"
    );
    assert_eq!(env.lines().len(), 450 + 250 + 60 + 20);
}

/// The parser on what `strace -f` prints when threads interleave.
#[test]
fn the_trace_parser_joins_interrupted_calls_and_checks_their_order() {
    let good = r#"100 openat(AT_FDCWD</d>, "/d/s/checkpoint.json.tmp", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 4</d/s/checkpoint.json.tmp>
100 write(3</d/out.log>, "{\"event_type\":\"threat\""..., 900 <unfinished ...>
101 write(5<TCP:[1]>, "GET /", 5) = 5
100 <... write resumed>) = 900
100 fdatasync(3</d/out.log>) = 0
100 write(4</d/s/checkpoint.json.tmp>, "{\n", 2) = 2
100 fsync(4</d/s/checkpoint.json.tmp> <unfinished ...>
101 +++ exited with 0 +++
100 <... fsync resumed>) = 0
100 rename("/d/s/checkpoint.json.tmp", "/d/s/checkpoint.json") = 0
100 openat(AT_FDCWD</d>, "/d/s", O_RDONLY|O_CLOEXEC) = 4</d/s>
100 fsync(4</d/s>) = 0
"#;
    let (out, cp) = (Path::new("/d/out.log"), Path::new("/d/s/checkpoint.json"));
    assert_eq!(
        check_commit_order(good, out, cp),
        Ok(Commits {
            replaced: 1,
            after_output_writes: 1
        })
    );
    let without = |needle: &str| {
        let text: Vec<&str> = good.lines().filter(|l| !l.contains(needle)).collect();
        check_commit_order(&text.join("\n"), out, cp).unwrap_err()
    };
    assert!(without("fdatasync").contains("output was not synced"));
    assert!(without("fsync resumed").contains("temp file"));
    assert!(without("fsync(4</d/s>)").contains("directory"));
    let in_place = good.replace(
        "checkpoint.json.tmp\", O_WRONLY",
        "checkpoint.json\", O_WRONLY",
    );
    assert!(
        check_commit_order(&in_place, out, cp)
            .unwrap_err()
            .contains("opened for writing")
    );
    // renameat2 with directory fds and relative names counts the same.
    let at = good.replace(
        "rename(\"/d/s/checkpoint.json.tmp\", \"/d/s/checkpoint.json\")",
        "renameat2(7</d/s>, \"checkpoint.json.tmp\", 7</d/s>, \"checkpoint.json\", 0)",
    );
    assert_eq!(check_commit_order(&at, out, cp).map(|c| c.replaced), Ok(1));
}

// ---------------------------------------------------------------------------
// The half-open window [start, end)
// ---------------------------------------------------------------------------

/// One threat and one detection at each of these instants (whole seconds,
/// UTC), so both sources' time formats meet each boundary.
fn events_at(env: &TestEnv, seed: u64, instants: &[&str]) {
    for (i, at) in instants.iter().enumerate() {
        let at = chrono::DateTime::parse_from_rfc3339(&format!("{at}Z"))
            .unwrap()
            .with_timezone(&chrono::Utc);
        env.fake
            .add_threats(vec![threat(seed + i as u64, &threat_time(at))]);
        env.fake
            .add_detections(vec![detection(seed + i as u64, &detection_time(at))]);
    }
}

/// Each written event's time, as `threat 2024-05-01T00:00:00` or
/// `detection 2024-05-01T00:00:00.000Z`, sorted; duplicates stay visible.
fn written_times(env: &TestEnv) -> Vec<String> {
    let mut times: Vec<String> = env
        .lines()
        .iter()
        .map(|line| match line["event_type"].as_str() {
            Some("threat") => format!("threat {}", line["last_found"].as_str().unwrap()),
            _ => format!("detection {}", line["ReceivedTime"].as_str().unwrap()),
        })
        .collect();
    times.sort();
    times
}

fn both(instants: &[&str]) -> Vec<String> {
    let mut times: Vec<String> = instants
        .iter()
        .flat_map(|at| [format!("threat {at}"), format!("detection {at}.000Z")])
        .collect();
    times.sort();
    times
}

#[test]
fn backfill_writes_an_event_at_since_and_none_at_until() {
    let env = TestEnv::new();
    events_at(
        &env,
        0,
        &[
            "2024-04-30T23:59:59",
            "2024-05-01T00:00:00",
            "2024-05-01T12:00:00",
            "2024-05-01T23:59:59",
            "2024-05-02T00:00:00",
        ],
    );
    env.run(&["backfill", "--since", "2024-05-01", "--until", "2024-05-02"])
        .expect(0);
    assert_eq!(
        written_times(&env),
        both(&[
            "2024-05-01T00:00:00",
            "2024-05-01T12:00:00",
            "2024-05-01T23:59:59"
        ]),
        "exactly [2024-05-01, 2024-05-02): the start in, the end out"
    );
}

#[test]
fn adjacent_backfills_write_the_event_on_their_shared_boundary_once() {
    let env = TestEnv::new();
    let boundary_and_around = [
        "2024-04-30T00:00:00",
        "2024-04-30T23:59:59",
        "2024-05-01T00:00:00",
        "2024-05-01T00:00:01",
        "2024-05-01T23:59:59",
    ];
    events_at(&env, 0, &boundary_and_around);
    env.run(&["backfill", "--since", "2024-05-01", "--until", "2024-05-02"])
        .expect(0);
    // The second window ends where the first began: [2024-04-30, 2024-05-01).
    env.run(&["backfill", "--since", "2024-04-30"]).expect(0);
    let written = written_times(&env);
    assert_eq!(written, both(&boundary_and_around), "each event once");
    assert_each_once(&env.lines());
}

#[test]
fn poll_after_a_backfill_writes_the_event_at_its_cursor_once() {
    let env = TestEnv::new();
    // Inside the first window, inside the next poll's overlap, and exactly
    // at the cursor the backfill leaves (its --until).
    let instants = [
        "2024-05-01T23:55:00",
        "2024-05-01T23:59:59",
        "2024-05-02T00:00:00",
    ];
    events_at(&env, 0, &instants);
    env.run(&["backfill", "--since", "2024-05-01", "--until", "2024-05-02"])
        .expect(0);
    assert_eq!(
        env.checkpoint()["sources"]["threats"]["cursor"],
        "2024-05-02T00:00:00Z"
    );
    assert_eq!(written_times(&env), both(&instants[..2]));
    // The poll looks again from the cursor less the overlap: it meets the
    // first two again (already written) and the one at the cursor (not yet).
    env.run(&["poll"]).expect(0);
    assert_eq!(written_times(&env), both(&instants));
    assert_each_once(&env.lines());
}
