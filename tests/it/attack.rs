//! Found by attacking the tool: each test reproduces a defect first.

use crate::support::*;
use std::time::Duration;

/// A string holding a raw tab or NUL is invalid JSON, and serde refuses the
/// whole page for it: one such item made every poll exit 76 and kept the
/// page's good items (and the cursor) back forever.
#[test]
fn raw_control_characters_in_one_item_do_not_cost_the_page() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 3));
    let at = threat_time(minutes_ago(2));
    let raw = format!("{{\"sha256\":\"C1\",\"last_found\":\"{at}\",\"name\":\"a\tb\u{0}c\"}}");
    env.fake.add_raw_threat("C1", &at, raw.as_bytes());
    let out = env.run(&["poll", "--sources", "threats"]).expect(0);
    let lines = env.lines();
    assert_eq!(lines.len(), 4, "{}", out.stderr);
    let line = lines.iter().find(|l| l["sha256"] == "C1").unwrap();
    assert_eq!(line["name"], "a\tb\u{0}c");
    let text = std::fs::read_to_string(env.output()).unwrap();
    assert!(text.contains(r#""a\u0009b\u0000c""#), "{text}");
    assert!(
        out.stderr
            .contains("threats/v2 page 1: the answer held 2 raw control character(s)"),
        "{}",
        out.stderr
    );
    env.run(&["poll", "--sources", "threats"]).expect(0);
    assert_eq!(env.lines().len(), 4);
}

/// Peak memory in KiB from the `resources:` line a run prints at `-v`.
fn peak_kib(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("resources: peak memory"))
        .unwrap_or_else(|| panic!("no resources line in\n{stderr}"));
    let after = line.split("peak memory ").nth(1).unwrap();
    after.split(' ').next().unwrap().parse().unwrap()
}

/// After an unclean end the tail after the mark is read line by line: a
/// foreign line of 64 MiB without a newline was read whole into memory, so
/// a program that appends a large blob made the next recovery's memory
/// grow with it. Lines not of this tenant are skipped, not kept.
#[test]
fn recovery_memory_does_not_grow_with_a_foreign_line() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 2, 3));
    env.run(&["poll", "--sources", "threats"]).expect(0);
    // Another program appends a huge line, then this tenant's run was killed
    // (its marker left behind): the next run reads the tail.
    let mut blob = vec![b'x'; 64 << 20];
    blob.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(env.output())
        .unwrap();
    std::io::Write::write_all(&mut file, &blob).unwrap();
    drop(blob);
    std::fs::write(env.state_dir().join("appending"), "").unwrap();
    env.fake.add_threats(threats(10, 1, 1));
    let out = env.run(&["poll", "--sources", "threats", "-v"]).expect(0);
    let peak = peak_kib(&out.stderr);
    assert!(peak < 32 * 1024, "peak memory {peak} KiB\n{}", out.stderr);
    let text = std::fs::read(env.output()).unwrap();
    let ours = text
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"{"))
        .count();
    assert_eq!(ours, 3, "each event once");
}

/// After a long unclean end the tail to read may be gigabytes of other
/// programs' bytes. The run still ends at --max-runtime (and on a signal),
/// with 75 and nothing written: it used to read the whole tail first. Here
/// 2 GiB of a sparse hole, which this machine reads at about 400 MB/s.
#[test]
fn a_huge_tail_after_an_unclean_end_is_read_only_until_max_runtime() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 2, 3));
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let size = std::fs::metadata(env.output()).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(env.output())
        .unwrap();
    file.set_len(size + (2 << 30)).unwrap();
    std::fs::write(env.state_dir().join("appending"), "").unwrap();
    env.fake.add_threats(threats(10, 1, 1));
    let out = env
        .run(&["poll", "--sources", "threats", "--max-runtime", "1s"])
        .expect(75);
    assert!(
        out.error_line().contains("--max-runtime 1s reached")
            && out
                .error_line()
                .contains("reading the 2147483648 bytes of the output"),
        "{}",
        out.stderr
    );
    assert!(env.state_dir().join("appending").exists());
    // The hole gone, the next run reads the tail and writes the new event once.
    file.set_len(size).unwrap();
    env.run(&["poll", "--sources", "threats"]).expect(0);
    assert_eq!(env.lines().len(), 3, "each event once");
}

/// A page's lookup answers were all held until the page was written: 60
/// detections with 2 MiB of details each held 120 MiB at once, more than
/// twice that at the peak (and a hostile server, 200 answers of 16 MiB).
/// Lines are now looked up and written a group at a time.
#[test]
fn a_pages_lookup_answers_are_not_all_held_at_once() {
    let env = TestEnv::new();
    let found = detections(0, 60, 3);
    env.fake.add_detections(found.clone());
    let note = "x".repeat(2 << 20);
    for detection in &found {
        let id = detection["Id"].as_str().unwrap();
        env.fake
            .set_detection_details(id, serde_json::json!({"Id": id, "Note": note}));
    }
    let out = env
        .run(&[
            "poll",
            "--sources",
            "detections",
            "--enrich",
            "detection-details",
            "-v",
        ])
        .expect(0);
    assert_eq!(env.lines().len(), 60);
    let peak = peak_kib(&out.stderr);
    assert!(peak < 150 * 1024, "peak memory {peak} KiB");
}

/// Pages are fetched ahead by `--concurrency` workers but written in order.
/// A slow page 2 must not let the others pile up: the lookahead counted only
/// requests in flight, not pages that had arrived and waited for page 2, so
/// every later page of the window was held in memory at once.
#[test]
fn a_slow_page_does_not_let_later_pages_pile_up_in_memory() {
    let env = TestEnv::new();
    let pad = "x".repeat(32 * 1024);
    let mut items = detections(0, 2000, 3);
    for item in &mut items {
        item["Pad"] = serde_json::Value::from(pad.as_str());
    }
    env.fake.add_detections(items);
    env.fake
        .push_fault_at("/detections/v2", 2, Fault::Delay(Duration::from_secs(3)));
    let out = env
        .run(&["poll", "--sources", "detections", "--max-rps", "0", "-v"])
        .expect(0);
    let peak = peak_kib(&out.stderr);
    // 20 pages of 3.2 MiB; 4 workers ahead of the writer need about 5 of them.
    assert!(peak < 48 * 1024, "peak memory {peak} KiB");
    let text = std::fs::read_to_string(env.output()).unwrap();
    assert_eq!(text.lines().count(), 2000);
}

/// The metrics file's temp was written with `fs::write`, which follows a
/// symlink planted at its name (the textfile collector's directory is often
/// group-writable) and overwrites the target. Like the checkpoint's temp, it
/// is now removed and created anew, never written through.
#[test]
fn a_symlinked_metrics_temp_is_replaced_not_followed() {
    let env = TestEnv::new();
    let victim = env.dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let metrics = env.dir.join("cylance.prom");
    std::os::unix::fs::symlink(&victim, env.dir.join("cylance.prom.tmp")).unwrap();
    env.fake.add_threats(threats(1, 3, 5));
    let metrics_arg = metrics.display().to_string();
    env.run(&["poll", "--metrics-file", &metrics_arg]).expect(0);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("cylance_logs_events_written_total"), "{text}");
    assert!(!metrics.symlink_metadata().unwrap().is_symlink());
}

/// An output that is one of the state directory's own files (a slip in a
/// unit file: `--output $STATE_DIRECTORY/checkpoint.json`) had its lines
/// replaced by the checkpoint's rename, or emptied by the lock, while the
/// checkpoint recorded them as written: silent loss, exit 0. Refused (78)
/// before anything is written, also through a symlink.
#[test]
fn an_output_that_is_a_state_file_is_refused() {
    for name in ["checkpoint.json", "lock", "rejected.jsonl", "appending"] {
        let env = TestEnv::new();
        env.fake.add_threats(threats(1, 3, 5));
        let output = env.state_dir().join(name).display().to_string();
        let out = env.run(&["poll", "--output", &output]).expect(78);
        assert!(
            out.error_line().contains("is the state directory's own"),
            "{name}: {}",
            out.stderr
        );
        assert!(env.checkpoint_path().symlink_metadata().is_err(), "{name}");
    }
    let env = TestEnv::new();
    let link = env.dir.join("out.log");
    std::os::unix::fs::symlink(env.checkpoint_path(), &link).unwrap();
    let output = link.display().to_string();
    env.run(&["poll", "--output", &output]).expect(78);
}

/// A `--metrics-file` naming the output (or the checkpoint) would replace
/// the log with metrics at the end of every run, after the checkpoint
/// recorded its lines as written: refused before anything is fetched.
#[test]
fn a_metrics_file_that_is_the_output_or_a_state_file_is_refused() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(1, 3, 5));
    std::fs::write(env.output(), "{\"someone\":\"else\"}\n").unwrap();
    let output = env.output().display().to_string();
    let out = env.run(&["poll", "--metrics-file", &output]).expect(78);
    assert!(
        out.error_line().contains("--metrics-file") && out.error_line().contains("the output"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(env.output()).unwrap(),
        "{\"someone\":\"else\"}\n"
    );
    let checkpoint = env.checkpoint_path().display().to_string();
    let out = env.run(&["poll", "--metrics-file", &checkpoint]).expect(78);
    assert!(
        out.error_line().contains("the state directory's own"),
        "{}",
        out.stderr
    );
    // A path of its own is fine.
    let metrics = env.dir.join("m.prom").display().to_string();
    env.run(&["poll", "--metrics-file", &metrics]).expect(0);
    assert_eq!(env.lines().len(), 4, "the old line and three threats");
}

/// Another program holding an exclusive `flock` on the output (a shipper or
/// a script that never lets go) made the run wait for the lock with no end:
/// past --max-runtime, and the timer's next run never started. The wait now
/// ends at the deadline with 75, and nothing is lost.
#[test]
fn an_output_locked_by_another_program_ends_at_max_runtime() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(1, 3, 5));
    let holder = std::fs::File::create(env.output()).unwrap();
    holder.lock().unwrap();
    let started = std::time::Instant::now();
    let mut child = env.spawn(&["poll", "--max-runtime", "2s"]);
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
        let _ = child.wait();
        panic!("the run still waited for the output's lock after 8 s");
    }
    let out = env.finish(child).expect(75);
    assert!(
        out.error_line().contains("lock on the output file"),
        "{}",
        out.stderr
    );
    holder.unlock().unwrap();
    env.run(&["poll"]).expect(0);
    assert_eq!(env.lines().len(), 3);
}

/// Keys enter `seen` as their lines are put in the batch, before its
/// append. An append that ended with 75 (the wait for the output's lock,
/// at --max-runtime) was followed by `finish`'s commit, which recorded the
/// keys of lines never written; no later run wrote those events. Here the
/// commit needs no lock on the output (recovered lines of a source with no
/// state keep the mark where it is), so nothing else stops it.
#[test]
fn an_append_that_ends_with_75_commits_no_key_of_its_lines() {
    let env = TestEnv::new();
    env.fake.add_detections(detections(0, 20, 3));
    env.fake.add_threats(threats(0, 20, 3));
    env.fake.set_delay(Duration::from_millis(300));
    // Killed once its first group of detections is appended, before any
    // commit: those lines are past the mark, and detections have no state.
    let mut child = env.spawn(&[
        "poll",
        "--sources",
        "detections",
        "--enrich",
        "detection-details",
    ]);
    let started = std::time::Instant::now();
    while std::fs::metadata(env.output()).map_or(0, |m| m.len()) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing appended"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    let _ = child.wait();
    // Polling threats only, with the output locked once its recovery is done.
    let child = env.spawn(&["poll", "--sources", "threats", "--max-runtime", "3s"]);
    std::thread::sleep(Duration::from_millis(400));
    let holder = std::fs::OpenOptions::new()
        .append(true)
        .open(env.output())
        .unwrap();
    holder.lock().unwrap();
    let out = wait_within(&env, child, Duration::from_secs(10)).expect(75);
    assert!(
        out.error_line().contains("lock on the output file"),
        "{}",
        out.stderr
    );
    holder.unlock().unwrap();
    env.fake.set_delay(Duration::ZERO);
    env.run(&["poll", "--sources", "threats,detections"])
        .expect(0);
    let lines = env.lines();
    assert_each_once(&lines);
    assert_eq!(count_type(&lines, "threat"), 20);
    assert_eq!(count_type(&lines, "detection"), 20);
}

/// Waits up to `limit` for `child`; kills it and fails if it is still running.
fn wait_within(env: &TestEnv, mut child: std::process::Child, limit: Duration) -> Outcome {
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
        let _ = child.wait();
        panic!("the run was still going after {limit:?}");
    }
    env.finish(child)
}

/// While waiting for the run lock (`--lock-wait`), SIGTERM was ignored: the
/// handler only sets a flag, and that wait never looked at it, so
/// `systemctl stop` hung until its own SIGKILL. The wait now ends on a
/// signal or at --max-runtime, with 75.
#[test]
fn the_wait_for_the_run_lock_ends_on_sigterm_and_at_max_runtime() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let holder = std::fs::File::create(env.state_dir().join("lock")).unwrap();
    holder.lock().unwrap();
    let child = env.spawn(&["poll", "--lock-wait", "1h", "--max-runtime", "0"]);
    std::thread::sleep(Duration::from_millis(500));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = wait_within(&env, child, Duration::from_secs(5)).expect(75);
    assert!(out.error_line().contains("signal"), "{}", out.stderr);
    let child = env.spawn(&["poll", "--lock-wait", "1h", "--max-runtime", "1s"]);
    let out = wait_within(&env, child, Duration::from_secs(5)).expect(75);
    assert!(out.error_line().contains("--max-runtime"), "{}", out.stderr);
}

/// Rejected items wait in memory for the commit that appends them to
/// `rejected.jsonl`; a window whose every item is bad must not hold them all.
#[test]
fn a_window_of_bad_items_does_not_pile_up_in_memory() {
    let env = TestEnv::new();
    let pad = "x".repeat(32 * 1024);
    let at = detection_time(minutes_ago(3));
    for i in 0..2000 {
        // No Id: rejected.
        let raw = format!(r#"{{"ReceivedTime":"{at}","Pad":"{pad}","n":{i}}}"#);
        env.fake
            .add_raw_detection(&format!("D{i}"), &at, raw.as_bytes());
    }
    let out = env
        .run(&["poll", "--sources", "detections", "--max-rps", "0", "-v"])
        .expect(0);
    let peak = peak_kib(&out.stderr);
    assert!(peak < 48 * 1024, "peak memory {peak} KiB");
    let rejected = std::fs::read_to_string(env.state_dir().join("rejected.jsonl")).unwrap();
    assert_eq!(rejected.lines().count(), 2000);
    // Met again in the next poll's overlap: not appended again.
    env.run(&["poll", "--sources", "detections", "--max-rps", "0"])
        .expect(0);
    let rejected = std::fs::read_to_string(env.state_dir().join("rejected.jsonl")).unwrap();
    assert_eq!(rejected.lines().count(), 2000);
}

/// Each written event's key is kept in the checkpoint while a later poll may
/// meet it again. A server that sent keys of 100 KiB made the checkpoint grow
/// past its 64 MiB cap (700 of them: 72 MB): every later run then refused it
/// with 65, forever. A key longer than any real one (256 bytes) makes the
/// item rejected instead. 70 such items keep the test quick.
#[test]
fn huge_keys_cannot_push_the_checkpoint_past_its_cap() {
    let env = TestEnv::new();
    let at = detection_time(minutes_ago(2));
    for i in 0..70 {
        let id = format!("{i:04}{}", "k".repeat(100 * 1024));
        let raw = format!(r#"{{"Id":"{id}","ReceivedTime":"{at}"}}"#);
        env.fake.add_raw_detection(&id, &at, raw.as_bytes());
    }
    env.fake.add_detections(detections(0, 3, 2));
    env.run(&["poll", "--sources", "detections", "--max-rps", "0"])
        .expect(0);
    assert_eq!(env.lines().len(), 3);
    let size = std::fs::metadata(env.checkpoint_path()).unwrap().len();
    assert!(size < 1 << 20, "checkpoint of {size} bytes");
    env.run(&["poll", "--sources", "detections", "--max-rps", "0"])
        .expect(0);
    env.run(&["status"]).expect(0);
}

/// An append-only output (`chattr +a`, a common hardening for logs) cannot
/// be cut: a partial line of ours left by a kill made every later run fail
/// with 74 ("cannot truncate"), after a warning that it had been removed.
/// It now stays like a foreign partial line, and the run goes on.
#[test]
fn an_append_only_output_with_a_torn_line_of_ours_does_not_stop_the_runs() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 2, 5));
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let text = std::fs::read_to_string(env.output()).unwrap();
    let first = text.lines().next().unwrap();
    let torn = &first[..first.len() / 2];
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(env.output())
        .unwrap();
    std::io::Write::write_all(&mut file, torn.as_bytes()).unwrap();
    drop(file);
    // The kill also left its marker: the next run knows the line may be its.
    std::fs::write(env.state_dir().join("appending"), "").unwrap();
    let Some(chattr) = require_tool("chattr") else {
        return;
    };
    let output = env.output().display().to_string();
    let made = std::process::Command::new(&chattr)
        .args(["+a", &output])
        .output()
        .unwrap();
    if !made.status.success() {
        skip(&format!(
            "chattr +a needs root and ext4 or similar: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
        return;
    }
    env.fake.add_threats(threats(10, 2, 1));
    let out = env.run(&["poll", "--sources", "threats"]);
    std::process::Command::new(&chattr)
        .args(["-a", &output])
        .status()
        .unwrap();
    let out = out.expect(0);
    assert!(out.stderr.contains("cannot be removed"), "{}", out.stderr);
    // The old bytes and the torn line stay; the new lines follow on lines
    // of their own.
    let after = std::fs::read_to_string(env.output()).unwrap();
    let kept = format!("{text}{torn}\n");
    assert!(after.starts_with(&kept), "{after}");
    let new_lines: Vec<serde_json::Value> = after[kept.len()..]
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(new_lines.len(), 2, "{after}");
}
