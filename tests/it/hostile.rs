//! A hostile or broken server, and careless settings: server text is shown
//! as data, redirects are refused, every setting has a bound, no request
//! outlives --max-runtime, an unusable token is refused at once, the
//! checkpoint's format and cursors are checked, and no file in the state
//! directory is followed as a symlink.

use crate::support::*;
use std::time::{Duration, Instant};

fn status_fault(status: u16, body: &str, headers: &[(&str, &str)]) -> Fault {
    Fault::Status {
        status,
        body: body.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// No C0 or C1 control character, DEL, or line separator (a newline only
/// between lines).
fn assert_no_control(text: &str, what: &str) {
    for line in text.lines() {
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{2028}'),
            "{what} holds a raw control character: {line:?}"
        );
    }
}

const HOSTILE: &str = "\u{1b}[2J\u{1b}]0;owned\u{7}boom\r\n<0>forged emergency\u{85}end";

#[test]
fn server_message_reaches_stderr_checkpoint_and_status_escaped() {
    let env = TestEnv::new();
    let body = serde_json::json!({ "message": HOSTILE }).to_string();
    env.fake
        .push_fault("/threats/v2", status_fault(404, &body, &[]));
    let out = env.run(&["poll"]).expect(76);
    assert_no_control(&out.stderr, "stderr");
    for line in out.stderr.lines() {
        assert!(line.starts_with("cylance-logs: "), "forged line {line:?}");
    }
    assert!(
        out.error_line().contains(
            "\\u{1b}[2J\\u{1b}]0;owned\\u{7}boom\\u{d}\\u{a}<0>forged emergency\\u{85}end"
        ),
        "{}",
        out.stderr
    );
    let error = env.checkpoint()["last_run"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert_no_control(&error, "the checkpoint's last_run.error");
    assert!(error.contains("\\u{1b}[2J"), "{error}");
    let status = env.run(&["status"]).expect(0);
    assert_no_control(&status.stdout, "status");
    assert!(status.stdout.contains("\\u{7}boom"), "{}", status.stdout);
}

#[test]
fn under_the_journal_every_line_starts_with_our_own_priority() {
    let env = TestEnv::new();
    let body = serde_json::json!({ "message": HOSTILE }).to_string();
    env.fake
        .push_fault("/threats/v2", status_fault(404, &body, &[]));
    let out = env.finish(
        env.command(&["poll"])
            .env("JOURNAL_STREAM", "8:1234")
            .spawn()
            .unwrap(),
    );
    assert_eq!(out.code, 76, "{}", out.stderr);
    assert!(!out.stderr.is_empty());
    for line in out.stderr.lines() {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"]
                .iter()
                .any(|p| line.starts_with(p)),
            "a line not started by our priority: {line:?}"
        );
    }
    assert!(out.stderr.contains("\\u{a}<0>forged"), "{}", out.stderr);
}

#[test]
fn long_server_text_is_cut_with_its_length() {
    let env = TestEnv::new();
    let message = "A".repeat(100_000);
    let body = serde_json::json!({ "message": message }).to_string();
    env.fake
        .push_fault("/threats/v2", status_fault(404, &body, &[]));
    let out = env.run(&["poll"]).expect(76);
    let line = out.error_line();
    assert!(line.len() < 1000, "{} bytes", line.len());
    assert!(
        line.contains(&format!("{}... (100000 bytes)", "A".repeat(200))),
        "{line}"
    );
}

#[test]
fn status_escapes_raw_text_left_in_an_old_checkpoint() {
    let env = TestEnv::new();
    env.run(&["poll"]).expect(0);
    let mut checkpoint = env.checkpoint();
    checkpoint["last_run"]["error"] = HOSTILE.into();
    checkpoint["last_run"]["exit_code"] = 76.into();
    std::fs::write(env.checkpoint_path(), checkpoint.to_string()).unwrap();
    let status = env.run(&["status"]).expect(0);
    assert_no_control(&status.stdout, "status");
    assert!(
        status.stdout.contains("exit 76: \\u{1b}[2J"),
        "{}",
        status.stdout
    );
}

/// `status --json` is read on terminals too: serde_json escapes C0 itself,
/// but C1 controls (CSI among them) and line separators only this does,
/// into the same JSON value.
#[test]
fn status_json_escapes_c1_controls_into_the_same_value() {
    let env = TestEnv::new();
    env.run(&["poll"]).expect(0);
    let mut checkpoint = env.checkpoint();
    let text = "\u{9b}31mred\u{2028}\u{85}end";
    checkpoint["last_run"]["error"] = text.into();
    std::fs::write(env.checkpoint_path(), checkpoint.to_string()).unwrap();
    let stdout = env.run(&["status", "--json"]).expect(0).stdout;
    assert_no_control(&stdout, "status --json");
    assert!(stdout.contains(r"\u009b31mred\u2028\u0085end"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["checkpoint"]["last_run"]["error"], text);
}

/// DEL and the bidirectional overrides (which reorder what a terminal shows,
/// so a line can read as another) are escaped in `status --json` as they are
/// in every other message quoting server text.
#[test]
fn status_json_escapes_del_and_bidi_overrides_too() {
    let env = TestEnv::new();
    env.run(&["poll"]).expect(0);
    let mut checkpoint = env.checkpoint();
    let text = "ok\u{7f}\u{202e}dne\u{2066}x";
    checkpoint["last_run"]["error"] = text.into();
    std::fs::write(env.checkpoint_path(), checkpoint.to_string()).unwrap();
    let stdout = env.run(&["status", "--json"]).expect(0).stdout;
    assert!(stdout.contains(r"ok\u007f\u202edne\u2066x"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["checkpoint"]["last_run"]["error"], text);
}

/// A redirect to another origin or to plain http on the token request or on
/// a list: exit 76 naming status and Location, nothing written, the other
/// origin never asked.
#[test]
fn redirects_are_refused_and_never_followed() {
    let other = FakeApi::start(Credentials::sample());
    other.add_threats(threats(900, 3, 5));
    for path in ["/auth/v2/token", "/threats/v2"] {
        for code in [301, 302, 307, 308] {
            for target in [
                format!("{}{path}", other.url()),
                format!("http://203.0.113.9{path}"),
            ] {
                let env = TestEnv::new();
                env.fake.add_threats(threats(1, 3, 5));
                env.fake.push_fault(
                    path,
                    // A tab is the one control character a header may hold.
                    status_fault(code, "", &[("Location", &format!("{target}\t<0>"))]),
                );
                let out = env.run(&["poll", "--sources", "threats"]).expect(76);
                let want = format!("HTTP {code}, Location: '{target}\\u{{9}}<0>'");
                assert!(out.error_line().contains(&want), "{}", out.stderr);
                assert!(env.lines().is_empty(), "{path} {code}: nothing written");
            }
        }
    }
    assert!(
        other.requests().is_empty(),
        "the other origin was contacted: {:?}",
        other.requests()
    );
}

#[test]
fn api_url_with_credentials_query_or_fragment_is_78_without_the_password() {
    let env = TestEnv::new();
    let url = env.fake.url();
    let with_password = url.replace("http://", "http://user:hunter2@");
    let out = env.run(&["poll", "--api-url", &with_password]).expect(78);
    assert!(
        out.error_line().contains("holds credentials"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    let out = env.run(&["check", "--api-url", &with_password]).expect(78);
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    for bad in [format!("{url}?x=1"), format!("{url}#frag")] {
        let out = env.run(&["poll", "--api-url", &bad]).expect(78);
        assert!(
            out.error_line().contains("has a query or a fragment"),
            "{}",
            out.stderr
        );
    }
    assert!(env.fake.requests().is_empty());
    assert!(!env.output().exists(), "nothing written");
}

#[test]
fn settings_past_their_bound_are_78_never_a_panic() {
    let env = TestEnv::new();
    for (flag, value, max) in [
        ("--initial-lookback", "999999999d", "3650d"),
        ("--initial-lookback", "3651d", "3650d"),
        ("--overlap", "25h", "1d"),
        ("--timeout", "11m", "10m"),
        ("--lock-wait", "2d", "1d"),
        ("--max-runtime", "8d", "7d"),
    ] {
        let out = env.run(&["poll", flag, value]).expect(78);
        assert!(
            out.error_line().contains(&format!(
                "{flag}: '{value}' is more than the largest accepted, {max}"
            )),
            "{}",
            out.stderr
        );
    }
    for n in ["0", "17"] {
        let out = env.run(&["poll", "--concurrency", n]).expect(78);
        assert!(
            out.error_line().contains("must be 1 to 16"),
            "{}",
            out.stderr
        );
    }
    let out = env.finish(
        env.command(&["poll"])
            .env("CYLANCE_LOGS_BACKOFF_BASE", "2m")
            .spawn()
            .unwrap(),
    );
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(env.fake.requests().is_empty());
    // The bounds themselves are accepted.
    env.run(&["poll", "--initial-lookback", "3650d", "--overlap", "1d"])
        .expect(0);
}

#[test]
fn backfill_time_out_of_range_is_a_usage_error() {
    let env = TestEnv::new();
    for since in ["999999999d", "1999-12-31", "9999-01-01"] {
        let out = env.run(&["backfill", "--since", since]).expect(2);
        assert!(out.error_line().contains("out of range"), "{}", out.stderr);
    }
    let out = env
        .run(&["backfill", "--since", "1d", "--until", "999999999d"])
        .expect(2);
    assert!(out.error_line().contains("--until"), "{}", out.stderr);
}

#[test]
fn secret_file_too_large_or_not_regular_is_78_at_once() {
    let env = TestEnv::new();
    let big = env.dir.join("big-secret");
    std::fs::write(&big, vec![b'x'; 64 * 1024 + 1]).unwrap();
    set_mode(&big, 0o600);
    let out = env
        .run(&["poll", "--app-secret-file", big.to_str().unwrap()])
        .expect(78);
    assert!(
        out.error_line().contains("larger than 64 KiB"),
        "{}",
        out.stderr
    );
    let fifo = env.dir.join("fifo-secret");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let started = Instant::now();
    let mut child = env.spawn(&["poll", "--app-secret-file", fifo.to_str().unwrap()]);
    // A FIFO with no writer would block open(2) forever: give it 10 s.
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
        panic!("a FIFO secret file hangs the run");
    }
    let out = env.finish(child).expect(78);
    assert!(
        out.error_line().contains("not a regular file"),
        "{}",
        out.stderr
    );
    assert!(env.fake.requests().is_empty());
}

#[test]
fn checkpoint_over_the_size_cap_is_65_and_left_alone() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let file = std::fs::File::create(env.checkpoint_path()).unwrap();
    file.set_len(64 * 1024 * 1024 + 1).unwrap();
    drop(file);
    let out = env.run(&["poll"]).expect(65);
    assert!(
        out.error_line().contains("larger than 64 MiB"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::metadata(env.checkpoint_path()).unwrap().len(),
        64 * 1024 * 1024 + 1
    );
}

/// `--max-runtime` bounds each request: a server that holds the answer
/// gets only the time the run has left.
#[test]
fn no_request_outlives_max_runtime() {
    for path in ["/auth/v2/token", "/threats/v2"] {
        let env = TestEnv::new();
        env.fake
            .push_fault(path, Fault::Delay(Duration::from_secs(20)));
        let started = Instant::now();
        let out = env.run(&["poll", "--max-runtime", "2s"]).expect(75);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(4),
            "{path}: the run took {took:?} with --max-runtime 2s\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("the time --max-runtime left"),
            "{}",
            out.stderr
        );
    }
}

/// The defaults scaled down 10 times (--timeout 3s, --max-runtime 5s):
/// a first attempt that times out leaves less than a whole --timeout for
/// the retry, which must end at the deadline, not a --timeout later.
#[test]
fn a_silent_server_ends_the_run_at_the_deadline() {
    let env = TestEnv::new();
    for _ in 0..5 {
        env.fake
            .push_fault("/auth/v2/token", Fault::Delay(Duration::from_secs(60)));
    }
    let started = Instant::now();
    let out = env
        .run(&["poll", "--timeout", "3s", "--max-runtime", "5s"])
        .expect(75);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(5_800),
        "took {took:?}\n{}",
        out.stderr
    );
}

/// The issue's own figure: with the defaults (--timeout 30s, --max-runtime
/// 50s) a silent server ends a poll with 75 within 55 s. SLOW: about 50 s,
/// waiting on the fake; it runs beside the other tests.
#[test]
fn a_silent_server_ends_a_default_poll_within_55_seconds() {
    let env = TestEnv::new();
    for _ in 0..5 {
        env.fake
            .push_fault("/auth/v2/token", Fault::Delay(Duration::from_secs(120)));
    }
    let started = Instant::now();
    let out = env.run(&["poll"]).expect(75);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(55),
        "took {took:?}\n{}",
        out.stderr
    );
}

#[test]
fn unusable_access_token_is_refused_at_once_with_76() {
    for token in [
        "abc\u{7}def\r\nX-Injected: yes".to_string(),
        "tök€n".to_string(),
        "t".repeat(8 * 1024 + 1),
    ] {
        let env = TestEnv::new();
        let body = serde_json::json!({ "access_token": token }).to_string();
        env.fake
            .push_fault("/auth/v2/token", status_fault(200, &body, &[]));
        let out = env.run(&["poll"]).expect(76);
        assert!(
            out.error_line().contains("the access_token is unusable"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains(&token[..3]), "{}", out.stderr);
        assert_eq!(env.fake.count("/auth/v2/token"), 1, "never retried");
        assert_eq!(env.fake.count("/threats/v2"), 0, "never used");
    }
}

#[test]
fn a_cursor_in_the_future_is_warned_about_on_every_run_and_in_status() {
    let env = TestEnv::new();
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let mut checkpoint = env.checkpoint();
    let future = chrono::Utc::now() + chrono::TimeDelta::hours(3);
    checkpoint["sources"]["threats"]["cursor"] = future.to_rfc3339().into();
    std::fs::write(env.checkpoint_path(), checkpoint.to_string()).unwrap();
    for _ in 0..2 {
        let out = env.run(&["poll", "--sources", "threats"]).expect(0);
        let warnings: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.contains("threats cursor") && l.contains("is in the future"))
            .collect();
        assert_eq!(warnings.len(), 1, "{}", out.stderr);
    }
    let status = env.run(&["status"]).expect(0);
    assert!(
        status.stdout.contains("threats: what is written reaches")
            && status.stdout.contains("in the future"),
        "{}",
        status.stdout
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.run(&["status", "--json"]).expect(0).stdout).unwrap();
    assert_eq!(
        json["future_cursors"].as_array().unwrap().len(),
        1,
        "{json}"
    );
    // Within the slack (clock skew): no warning.
    let mut checkpoint = env.checkpoint();
    let near = chrono::Utc::now() + chrono::TimeDelta::minutes(2);
    checkpoint["sources"]["threats"]["cursor"] = near.to_rfc3339().into();
    std::fs::write(env.checkpoint_path(), checkpoint.to_string()).unwrap();
    let out = env.run(&["poll", "--sources", "threats"]).expect(0);
    assert!(!out.stderr.contains("in the future"), "{}", out.stderr);
}

#[test]
fn checkpoint_format_never_written_is_65_and_left_alone() {
    let env = TestEnv::new();
    env.run(&["poll"]).expect(0);
    for (format, why) in [
        (0, "which no cylance-logs ever wrote"),
        (2, "newer cylance-logs"),
    ] {
        let mut checkpoint = env.checkpoint();
        checkpoint["format"] = format.into();
        let bytes = serde_json::to_vec(&checkpoint).unwrap();
        std::fs::write(env.checkpoint_path(), &bytes).unwrap();
        let out = env.run(&["poll"]).expect(65);
        assert!(out.error_line().contains(why), "{}", out.stderr);
        assert_eq!(std::fs::read(env.checkpoint_path()).unwrap(), bytes);
    }
}

/// A checkpoint written by the first release (format 1), kept as it was
/// written: a new run carries on from its cursor, with no gap (events after
/// the cursor are written) and no duplicate (the event it remembers in the
/// overlap is not written again).
#[test]
fn a_format_1_checkpoint_is_read_and_carried_on() {
    let env = TestEnv::new();
    // The events the fixture's run wrote (seeds and times as they were).
    env.fake.add_threats(vec![
        threat(1, "2026-11-30T01:52:38"),
        threat(2, "2026-11-30T02:04:38"),
        // Written since: one just after its cursor, one a minute ago.
        threat(3, "2026-11-30T02:12:50"),
        threat(4, &threat_time(minutes_ago(1))),
    ]);
    std::fs::create_dir_all(env.state_dir()).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/checkpoint-format-1.json"
        ),
        env.checkpoint_path(),
    )
    .unwrap();
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let mut names: Vec<String> = env
        .lines()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["sample-3.exe", "sample-4.exe"]);
    let checkpoint = env.checkpoint();
    assert_eq!(checkpoint["format"], 1);
    assert_eq!(checkpoint["sources"]["threats"]["events_written"], 4);
}

#[test]
fn a_symlinked_lock_is_refused_and_its_target_untouched() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let victim = env.dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, env.state_dir().join("lock")).unwrap();
    let out = env.run(&["poll"]).expect(74);
    assert!(out.error_line().contains("is a symlink"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

/// The lock file is emptied on every exit, and rejected items are appended
/// to `rejected.jsonl`: through a hard link planted at either name they
/// would empty or grow another file. Both are refused (74), the other file
/// untouched, and nothing of the run is committed.
#[test]
fn a_hard_linked_lock_or_dead_letter_file_is_refused_and_the_other_file_untouched() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let victim = env.dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::hard_link(&victim, env.state_dir().join("lock")).unwrap();
    let out = env.run(&["poll"]).expect(74);
    assert!(
        out.error_line().contains("has other names"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    std::fs::remove_file(env.state_dir().join("lock")).unwrap();

    env.run(&["poll"]).expect(0);
    let checkpoint = std::fs::read_to_string(env.checkpoint_path()).unwrap();
    std::fs::hard_link(&victim, env.state_dir().join("rejected.jsonl")).unwrap();
    let at = threat_time(minutes_ago(2));
    env.fake.add_raw_threat("B1", &at, b"\"just a string\"");
    let out = env.run(&["poll"]).expect(74);
    assert!(
        out.error_line().contains("rejected.jsonl") && out.error_line().contains("hard links"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(
        std::fs::read_to_string(env.checkpoint_path()).unwrap(),
        checkpoint,
        "nothing committed"
    );
}

/// A FIFO at `rejected.jsonl` hung the run on its open (no reader): it is
/// refused at once with 74, nothing committed.
#[test]
fn a_fifo_dead_letter_file_is_refused_at_once() {
    let env = TestEnv::new();
    env.run(&["poll"]).expect(0);
    let fifo = env.state_dir().join("rejected.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    env.fake
        .add_raw_threat("B1", &threat_time(minutes_ago(2)), b"\"just a string\"");
    let mut child = env.spawn(&["poll"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the run hung on the FIFO");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = env.finish(child).expect(74);
    assert!(
        out.error_line().contains("rejected.jsonl")
            && out.error_line().contains("not a regular file"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_symlinked_checkpoint_temp_is_replaced_not_followed() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let victim = env.dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, env.state_dir().join("checkpoint.json.tmp")).unwrap();
    env.fake.add_threats(threats(1, 3, 5));
    env.run(&["poll"]).expect(0);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(env.lines().len(), 3);
    assert_eq!(env.checkpoint()["sources"]["threats"]["events_written"], 3);
}

/// Times no real history holds are refused, not acted on: at chrono's
/// limits, window arithmetic (`cursor - overlap`) would panic.
#[test]
fn checkpoint_times_outside_1970_to_9999_are_65() {
    let env = TestEnv::new();
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let good = env.checkpoint();
    for (field, value) in [
        ("covered_since", "-262143-01-01T00:00:00Z"),
        ("covered_since", "1969-12-31T23:59:59Z"),
        ("cursor", "+262142-12-31T23:59:59Z"),
    ] {
        let mut checkpoint = good.clone();
        checkpoint["sources"]["threats"][field] = value.into();
        let bytes = serde_json::to_vec(&checkpoint).unwrap();
        std::fs::write(env.checkpoint_path(), &bytes).unwrap();
        let out = env.run(&["poll", "--sources", "threats"]).expect(65);
        assert!(
            out.error_line()
                .contains("invalid entry for source 'threats'")
                || out.error_line().contains("is invalid"),
            "{field} {value}: {}",
            out.stderr
        );
        assert_eq!(std::fs::read(env.checkpoint_path()).unwrap(), bytes);
    }
}
