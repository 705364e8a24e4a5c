//! The output file as others may share it: the tool touches only bytes it
//! wrote, refuses outputs that are not regular files, survives a file that
//! cannot grow, and does not read what other tenants appended after a clean
//! end.

use crate::support::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The debug line (`-v`) of a run that skips reading the output's tail.
const TAIL_NOT_READ: &str =
    "the previous run ended cleanly; the output's tail after the last commit is not read";
/// The start of the debug line of a run that reads it.
const TAIL_READ: &str = "the previous run did not end cleanly; reading ";

/// Runs the binary and kills it if it has not ended after `limit`: a test
/// of an output that could block must fail, not hang.
fn run_within(env: &TestEnv, args: &[&str], limit: Duration) -> Outcome {
    let mut child = env.spawn(args);
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = env.finish(child);
            panic!("the run hung past {limit:?}\n{}", out.stderr);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    env.finish(child)
}

/// The output's bytes after the `n` first, which must be whole lines.
fn lines_after(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    let text = std::str::from_utf8(&bytes[n..]).unwrap();
    assert!(text.ends_with('\n'), "ends in a partial line");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// Sets the file's mtime an hour back, so that any write would show.
fn age(path: &Path) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
}

#[test]
fn foreign_partial_last_line_is_kept_byte_for_byte_and_our_lines_start_on_a_new_line() {
    let env = TestEnv::new();
    let before = "other program: a whole line\nother program: half a li";
    std::fs::write(env.output(), before).unwrap();
    env.fake.add_threats(threats(0, 3, 5));
    let out = env.run(&["poll"]).expect(0);
    let bytes = std::fs::read_to_string(env.output()).unwrap();
    assert!(
        bytes.starts_with(&format!("{before}\n{{\"event_type\"")),
        "{bytes}"
    );
    assert_eq!(lines_after(&env.output(), before.len() + 1).len(), 3);
    let warnings: Vec<_> = out
        .stderr
        .lines()
        .filter(|l| l.contains("does not end in a newline"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(warnings[0].contains(&env.output().display().to_string()));
}

#[test]
fn ten_megabyte_file_without_a_newline_is_left_whole() {
    let env = TestEnv::new();
    let before = vec![b'x'; 10 << 20];
    std::fs::write(env.output(), &before).unwrap();
    env.run(&["poll"]).expect(0);
    assert!(std::fs::read(env.output()).unwrap() == before, "idle run");
    env.fake.add_threats(threats(0, 2, 5));
    env.run(&["poll"]).expect(0);
    let after = std::fs::read(env.output()).unwrap();
    assert!(after[..before.len()] == before[..], "the 10 MB changed");
    assert_eq!(after[before.len()], b'\n');
    assert_eq!(lines_after(&env.output(), before.len() + 1).len(), 2);
}

#[test]
fn symlinked_output_to_a_file_without_a_trailing_newline_keeps_its_bytes() {
    let env = TestEnv::new();
    let target = env.dir.join("settings.conf");
    let settings = "first=1\nlast=2";
    std::fs::write(&target, settings).unwrap();
    std::os::unix::fs::symlink(&target, env.output()).unwrap();
    env.run(&["poll"]).expect(0);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), settings);
    env.fake.add_detections(detections(0, 2, 5));
    env.run(&["poll"]).expect(0);
    let text = std::fs::read_to_string(&target).unwrap();
    assert!(text.starts_with("first=1\nlast=2\n{"), "{text}");
    assert_eq!(lines_after(&target, settings.len() + 1).len(), 2);
    assert!(
        std::fs::symlink_metadata(env.output())
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn own_torn_line_after_the_last_commit_is_cut_before_the_next_append() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 5));
    env.run(&["poll"]).expect(0);
    let committed = std::fs::read_to_string(env.output()).unwrap();
    // What a run killed mid-write leaves: the start of one of its lines.
    let last = committed.lines().last().unwrap();
    let torn = &last[..last.len() / 2];
    std::fs::write(env.output(), format!("{committed}{torn}")).unwrap();
    // and its marker: the next run knows that a partial line may be its.
    std::fs::write(env.state_dir().join("appending"), "").unwrap();
    // An idle run leaves it (it appends nothing, so it touches nothing).
    env.run(&["poll"]).expect(0);
    assert_eq!(
        std::fs::read_to_string(env.output()).unwrap(),
        format!("{committed}{torn}")
    );
    env.fake.add_threats(threats(10, 2, 1));
    let out = env.run(&["poll"]).expect(0);
    assert!(
        out.stderr
            .contains("ended in a partial line of this tenant's"),
        "{}",
        out.stderr
    );
    let text = std::fs::read_to_string(env.output()).unwrap();
    assert!(text.starts_with(&committed), "committed lines kept");
    // Every line parses: the torn one is gone, not ended by a newline.
    let lines = env.lines();
    assert_eq!(lines.len(), 5);
    assert_each_once(&lines);
}

/// After a clean end no torn line of ours can be left: a partial line that
/// begins like ours (here as short as `{"event_ty`, which every tenant's
/// lines begin with) is another program's or tenant's, and is kept.
#[test]
fn partial_line_like_ours_after_a_clean_end_is_someone_elses_and_kept() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 2, 5));
    env.run(&["poll"]).expect(0);
    let committed = std::fs::read_to_string(env.output()).unwrap();
    let last = committed.lines().last().unwrap();
    for (round, partial) in [&last[..10], &last[..last.len() - 1]]
        .into_iter()
        .enumerate()
    {
        let before = std::fs::read_to_string(env.output()).unwrap();
        std::fs::write(env.output(), format!("{before}{partial}")).unwrap();
        env.fake.add_threats(threats(10 + round as u64 * 10, 1, 1));
        let out = env.run(&["poll"]).expect(0);
        assert!(
            out.stderr.contains("does not end in a newline"),
            "{}",
            out.stderr
        );
        let text = std::fs::read_to_string(env.output()).unwrap();
        assert!(
            text.starts_with(&format!("{before}{partial}\n{{")),
            "{text}"
        );
        assert_eq!(
            lines_after(&env.output(), before.len() + partial.len() + 1).len(),
            1
        );
    }
}

/// After an unclean end, the first append of the next run cuts what is left
/// of ours; from then on that run's own batches are whole, so a partial line
/// that appears later in the run (another program mid-write, shorter than
/// any tenant's prefix) is someone else's and kept.
#[test]
fn after_its_first_append_a_run_takes_no_partial_line_for_its_own() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 5));
    env.run(&["poll", "--sources", "threats"]).expect(0);
    // The previous run ended uncleanly (its marker is there).
    std::fs::write(env.state_dir().join("appending"), "").unwrap();
    env.fake.add_threats(threats(100, 450, 1));
    env.fake
        .push_fault_at("/threats/v2", 2, Fault::Delay(Duration::from_secs(2)));
    let child = env.spawn(&["poll", "--sources", "threats", "--concurrency", "1"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_tenant(&env.output(), &env.creds.tenant_id) < 203 {
        assert!(Instant::now() < deadline, "page 1 never appended");
        std::thread::sleep(Duration::from_millis(5));
    }
    let foreign = "{\"event_ty";
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(env.output())
        .unwrap();
    std::io::Write::write_all(&mut file, foreign.as_bytes()).unwrap();
    let out = env.finish(child);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(env.output()).unwrap();
    assert_eq!(
        text.matches(&format!("\n{foreign}\n{{")).count(),
        1,
        "the fragment was cut or glued: {}",
        out.stderr
    );
    assert_eq!(count_tenant(&env.output(), &env.creds.tenant_id), 453);
}

#[test]
fn partial_line_that_looks_like_ours_but_predates_the_mark_is_kept() {
    let env = TestEnv::new();
    let before = format!(
        "{{\"event_type\":\"threat\",\"tenant_id\":\"{}\",\"sha256\":\"ab",
        env.creds.tenant_id
    );
    std::fs::write(env.output(), &before).unwrap();
    // The first run records the mark at the file's end, after this line.
    env.run(&["poll"]).expect(0);
    env.fake.add_threats(threats(0, 2, 5));
    let out = env.run(&["poll"]).expect(0);
    assert!(
        out.stderr.contains("does not end in a newline"),
        "{}",
        out.stderr
    );
    let text = std::fs::read_to_string(env.output()).unwrap();
    assert!(text.starts_with(&format!("{before}\n{{")), "{text}");
    assert_eq!(lines_after(&env.output(), before.len() + 1).len(), 2);
}

#[test]
fn idle_run_leaves_the_file_bytes_and_mtime_unchanged() {
    let env = TestEnv::new();
    let before = "a line\nno newline at the end";
    std::fs::write(env.output(), before).unwrap();
    age(&env.output());
    let when = mtime(&env.output());
    for _ in 0..2 {
        env.run(&["poll"]).expect(0);
        assert_eq!(std::fs::read_to_string(env.output()).unwrap(), before);
        assert_eq!(mtime(&env.output()), when, "the file was written");
    }
    assert!(
        !env.state_dir().join("appending").exists(),
        "an idle run left the appending marker"
    );
}

/// Asserts a refused output: exit 78 at once, one error line naming it,
/// nothing committed.
fn assert_refused(env: &TestEnv, output: &Path, what: &str) {
    env.fake.add_threats(threats(0, 2, 5));
    let path = output.display().to_string();
    let out = run_within(env, &["poll", "--output", &path], Duration::from_secs(20)).expect(78);
    let line = out.error_line();
    assert!(line.contains(&path), "{line}");
    assert!(line.contains(what), "{line}");
    assert!(line.contains("not a regular file"), "{line}");
    assert!(!env.checkpoint_path().exists(), "committed");
}

#[test]
fn fifo_output_without_a_reader_is_refused_without_hanging() {
    let env = TestEnv::new();
    let fifo = env.dir.join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    assert_refused(&env, &fifo, "FIFO");
}

#[test]
fn character_devices_are_refused() {
    for device in ["/dev/null", "/dev/full"] {
        let env = TestEnv::new();
        assert_refused(&env, Path::new(device), "character device");
    }
}

#[test]
fn unix_socket_output_is_refused() {
    let env = TestEnv::new();
    let path = env.dir.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    assert_refused(&env, &path, "socket");
}

#[test]
fn standard_output_still_works_and_leaves_no_marker() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 5));
    let out = env.run(&["poll", "--output", "-"]).expect(0);
    assert_eq!(out.stdout.lines().count(), 3);
    assert!(!env.output().exists());
    assert!(!env.state_dir().join("appending").exists());
    env.fake.add_threats(threats(10, 1, 1));
    let out = env.run(&["poll", "--output", "-"]).expect(0);
    assert_eq!(out.stdout.lines().count(), 1);
}

#[test]
fn file_that_cannot_grow_exits_74_and_the_next_run_writes_everything_once() {
    if require_tool("prlimit").is_none() {
        return;
    }
    let env = TestEnv::new();
    // Three pages of threats: the limit falls inside the second page's batch.
    env.fake.add_threats(threats(0, 600, 20));
    let reference = TestEnv::new();
    reference.fake.add_threats(threats(0, 600, 20));
    reference.run(&["poll", "--sources", "threats"]).expect(0);
    let whole = std::fs::metadata(reference.output()).unwrap().len();
    let limit = whole / 2;
    let cmd = env.command(&["poll", "--sources", "threats"]);
    let mut limited = Command::new("prlimit");
    limited
        .arg(format!("--fsize={limit}"))
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            limited.env(key, value);
        }
    }
    let out = env.finish(limited.spawn().unwrap()).expect(74);
    assert!(
        out.error_line().contains("File too large"),
        "{}",
        out.stderr
    );
    assert!(
        out.error_line()
            .contains(&env.output().display().to_string())
    );
    // Whole lines only (each parses): the first page, and of the second the
    // groups written before the one that did not fit (with the default
    // lookup, lines are written a group at a time).
    let size = std::fs::metadata(env.output()).unwrap().len();
    assert!(size < limit, "the partial batch stayed: {size} of {limit}");
    let written = env.lines().len();
    assert!((200..400).contains(&written), "{written} lines");
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let lines = env.lines();
    assert_eq!(lines.len(), 600);
    assert_each_once(&lines);
}

#[test]
fn clean_runs_do_not_read_other_tenants_lines_but_a_killed_runs_tail_is_recovered() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 30));
    env.run(&["poll"]).expect(0);
    // Other tenants append plenty after this commit.
    let other = format!(
        "{{\"event_type\":\"threat\",\"tenant_id\":\"someone-else\",\"sha256\":\"{}\"}}\n",
        "f".repeat(64)
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(env.output())
        .unwrap();
    std::io::Write::write_all(&mut file, other.repeat(20_000).as_bytes()).unwrap();
    let out = env.run(&["poll", "-v"]).expect(0);
    assert!(out.stderr.contains(TAIL_NOT_READ), "{}", out.stderr);
    assert!(!out.stderr.contains(TAIL_READ), "{}", out.stderr);
    // A run killed after its first page was appended, before its commit.
    env.fake.add_threats(threats(100, 450, 1));
    env.fake
        .push_fault_at("/threats/v2", 2, Fault::Delay(Duration::from_secs(30)));
    let mut child = env.spawn(&["poll"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_tenant(&env.output(), &env.creds.tenant_id) < 203 {
        assert!(Instant::now() < deadline, "page 1 never appended");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    assert_eq!(env.finish(child).code, -1);
    assert!(env.state_dir().join("appending").exists());
    // A power loss may take the lock file's line of the killed run; the
    // marker, synced before the append, is what tells the next run.
    std::fs::write(env.state_dir().join("lock"), "").unwrap();
    let out = env.run(&["poll", "-v"]).expect(0);
    assert!(out.stderr.contains(TAIL_READ), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("found 200 event(s) of an interrupted run"),
        "{}",
        out.stderr
    );
    assert!(!env.state_dir().join("appending").exists());
    let ours: Vec<_> = env
        .lines()
        .into_iter()
        .filter(|l| l["tenant_id"] == env.creds.tenant_id.as_str())
        .collect();
    assert_eq!(ours.len(), 453);
    assert_each_once(&ours);
    // And the run after it is clean again.
    let out = env.run(&["poll", "-v"]).expect(0);
    assert!(out.stderr.contains(TAIL_NOT_READ), "{}", out.stderr);
}

/// How many whole lines of this tenant the file holds (a batch may be
/// half written when the file is read).
fn count_tenant(path: &Path, tenant: &str) -> usize {
    let needle = format!("\"tenant_id\":\"{tenant}\"");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    whole.lines().filter(|l| l.contains(&needle)).count()
}

#[test]
fn a_run_that_fails_after_appending_but_commits_leaves_the_next_run_clean() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 450, 5));
    // Page 1 is appended, page 2 is refused: exit 76, and the run still
    // commits what it wrote, so the marker goes with that commit.
    env.fake.push_fault_at(
        "/threats/v2",
        2,
        Fault::Status {
            status: 400,
            body: r#"{"message":"refused"}"#.into(),
            headers: Vec::new(),
        },
    );
    env.run(&["poll", "--sources", "threats"]).expect(76);
    assert_eq!(env.lines().len(), 200);
    assert!(!env.state_dir().join("appending").exists());
    let out = env.run(&["poll", "--sources", "threats", "-v"]).expect(0);
    assert!(out.stderr.contains(TAIL_NOT_READ), "{}", out.stderr);
    let lines = env.lines();
    assert_eq!(lines.len(), 450);
    assert_each_once(&lines);
}
