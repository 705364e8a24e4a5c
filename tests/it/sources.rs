//! The sources of issue 12: memory protection (a windowed list in no
//! documented order) and the device inventory (a snapshot), the default
//! sources' request budget, and the upgrade from the release before them.

use crate::support::*;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashSet;

const MEMORY: &str = "/memoryprotection/v2";
const DEVICES: &str = "/devices/v2";

/// The list paths a run asked for after request number `from`, token
/// requests included, in order.
fn paths_since(env: &TestEnv, from: usize) -> Vec<String> {
    env.fake.requests()[from..]
        .iter()
        .map(|r| r.path.clone())
        .collect()
}

fn memory_ids(lines: &[serde_json::Value]) -> HashSet<String> {
    lines
        .iter()
        .filter(|l| l["event_type"] == "memory_protection")
        .map(|l| {
            l["device_image_file_event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn device_lines(env: &TestEnv) -> Vec<serde_json::Value> {
    env.lines()
        .into_iter()
        .filter(|l| l["event_type"] == "device")
        .collect()
}

#[test]
fn memory_protection_first_incremental_and_idle_polls() {
    let env = TestEnv::new();
    env.fake
        .add_memory_protection(memory_protection_events(0, 450, 30)); // 3 pages of 200
    env.run(&["poll", "--sources", "memory-protection"])
        .expect(0);
    let lines = env.lines();
    assert_eq!(count_type(&lines, "memory_protection"), 450);
    assert_each_once(&lines);
    assert_eq!(env.fake.count(MEMORY), 3);
    let page_sizes: HashSet<String> = env
        .fake
        .requests()
        .iter()
        .filter(|r| r.path == MEMORY)
        .filter_map(|r| {
            r.query
                .iter()
                .find(|(name, _)| name == "page_size")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(page_sizes, HashSet::from(["200".to_string()]));
    // Incremental: only the new ones.
    env.fake
        .add_memory_protection(memory_protection_events(1000, 2, 0));
    env.run(&["poll", "--sources", "memory-protection"])
        .expect(0);
    let lines = env.lines();
    assert_eq!(count_type(&lines, "memory_protection"), 452);
    assert_each_once(&lines);
    // Idle: one token request and one list request.
    let before = env.fake.requests().len();
    env.run(&["poll", "--sources", "memory-protection"])
        .expect(0);
    assert_eq!(paths_since(&env, before), ["/auth/v2/token", MEMORY]);
    assert_eq!(env.lines().len(), 452);
}

#[test]
fn memory_protection_line_is_the_item_with_event_type_and_tenant_in_front() {
    let env = TestEnv::new();
    let item = memory_protection_event(7, &threat_time(minutes_ago(3)));
    env.fake.add_memory_protection(vec![item.clone()]);
    env.run(&["poll"]).expect(0);
    let text = std::fs::read_to_string(env.output()).unwrap();
    assert!(
        text.starts_with(&format!(
            "{{\"event_type\":\"memory_protection\",\"tenant_id\":\"{}\",\"",
            env.creds.tenant_id
        )),
        "{text}"
    );
    let mut line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    let fields = line.as_object_mut().unwrap();
    fields.remove("event_type");
    fields.remove("tenant_id");
    assert_eq!(line, item);
}

#[test]
fn a_late_memory_protection_event_inside_the_overlap_is_written_once() {
    let env = TestEnv::new();
    env.fake
        .add_memory_protection(memory_protection_events(0, 3, 2));
    env.run(&["poll", "--sources", "memory-protection"])
        .expect(0);
    // Shown by the API only now, dated before the last run's end: inside
    // the next poll's overlap (10 minutes).
    let late = memory_protection_event(500, &threat_time(minutes_ago(5)));
    env.fake.add_memory_protection(vec![late.clone()]);
    env.run(&["poll", "--sources", "memory-protection"])
        .expect(0);
    env.run(&["poll", "--sources", "memory-protection"])
        .expect(0);
    let lines = env.lines();
    assert_each_once(&lines);
    assert_eq!(count_type(&lines, "memory_protection"), 4);
    assert!(memory_ids(&lines).contains(late["device_image_file_event_id"].as_str().unwrap()));
}

/// The fake serves memory protection by id, unrelated to `created`: the
/// window's events are on every page, the newest not first.
#[test]
fn memory_protection_is_read_to_the_last_page_whatever_the_order() {
    let env = TestEnv::new();
    // The server ignores the window: old events share the pages.
    env.fake.set_honour_memory_protection_time_filters(false);
    let recent = memory_protection_events(0, 300, 30);
    let old = memory_protection_events(10_000, 300, 3 * 24 * 60);
    env.fake.add_memory_protection(recent.clone());
    env.fake.add_memory_protection(old);
    env.run(&["poll", "--sources", "memory-protection"])
        .expect(0);
    assert_eq!(env.fake.count(MEMORY), 3, "every page is read");
    let want: HashSet<String> = recent
        .iter()
        .map(|e| {
            e["device_image_file_event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let lines = env.lines();
    assert_eq!(memory_ids(&lines), want, "exactly the window's events");
    assert_eq!(lines.len(), 300);
}

#[test]
fn memory_protection_window_is_kept_on_the_client_when_the_server_ignores_it() {
    let env = TestEnv::new();
    env.fake.set_honour_memory_protection_time_filters(false);
    env.fake
        .add_memory_protection(memory_protection_events(0, 5, 2 * 24 * 60));
    env.fake
        .add_memory_protection(memory_protection_events(100, 2, 3));
    env.run(&["poll", "--sources", "memory-protection"])
        .expect(0);
    assert_eq!(
        env.lines().len(),
        2,
        "only the last day's (--initial-lookback)"
    );
    // The server sent the old ones again: still not written.
    env.run(&["poll", "--sources", "memory-protection"])
        .expect(0);
    assert_eq!(env.lines().len(), 2);
}

#[test]
fn a_403_on_memory_protection_or_devices_exits_77_naming_the_privilege() {
    for (source, privilege) in [
        ("memory-protection", "memoryprotection:list"),
        ("devices", "device:list"),
    ] {
        let env = TestEnv::new();
        env.fake.deny_privilege(privilege);
        let out = env.run(&["poll", "--sources", source]).expect(77);
        assert!(
            out.error_line()
                .contains(&format!("needs the {privilege} privilege")),
            "{}",
            out.stderr
        );
        let check = env
            .run(&["check", "--sources", &format!("threats,{source}")])
            .expect(77);
        assert!(
            check
                .stdout
                .contains(&format!("{source} ({privilege}): FAILED: ")),
            "{}",
            check.stdout
        );
    }
}

#[test]
fn idle_poll_with_the_default_sources_makes_one_token_and_three_list_requests() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 30));
    env.fake.add_detections(detections(0, 3, 30));
    env.fake
        .add_memory_protection(memory_protection_events(0, 3, 30));
    env.fake.add_devices(devices(0, 5, 1));
    env.run(&["poll"]).expect(0);
    assert_eq!(env.fake.count(DEVICES), 0, "devices is off by default");
    let before = env.fake.requests().len();
    env.run(&["poll"]).expect(0);
    assert_eq!(
        paths_since(&env, before),
        ["/auth/v2/token", "/threats/v2", "/detections/v2", MEMORY]
    );
    // With devices on: its snapshot once, then idle polls skip it.
    let all = "threats,detections,memory-protection,devices";
    let before = env.fake.requests().len();
    env.run(&["poll", "--sources", all]).expect(0);
    assert_eq!(
        paths_since(&env, before),
        [
            "/auth/v2/token",
            "/threats/v2",
            "/detections/v2",
            MEMORY,
            DEVICES
        ]
    );
    let before = env.fake.requests().len();
    env.run(&["poll", "--sources", all]).expect(0);
    assert_eq!(
        paths_since(&env, before),
        ["/auth/v2/token", "/threats/v2", "/detections/v2", MEMORY]
    );
    assert_eq!(count_type(&env.lines(), "device"), 5);
}

fn snapshot_time_of(lines: &[serde_json::Value]) -> HashSet<String> {
    lines
        .iter()
        .map(|l| l["snapshot_time"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn device_snapshot_writes_every_device_once_with_snapshot_time_last() {
    let env = TestEnv::new();
    env.fake.add_devices(devices(0, 449, 1)); // 3 pages of 200
    let mut own = device(9_999, &threat_time(minutes_ago(60)));
    own["snapshot_time"] = serde_json::json!("theirs");
    env.fake.add_devices(vec![own]);
    let started = Utc::now();
    env.run(&["poll", "--sources", "devices"]).expect(0);
    assert_eq!(env.fake.count(DEVICES), 3);
    let lines = device_lines(&env);
    assert_eq!(lines.len(), 450);
    assert_each_once(&lines);
    let times = snapshot_time_of(&lines);
    assert_eq!(times.len(), 1, "one snapshot_time for the snapshot");
    let time = times.into_iter().next().unwrap();
    // RFC 3339 UTC, whole seconds, the run's start.
    assert_eq!(time.len(), "2026-11-30T02:00:00Z".len(), "{time}");
    let at: DateTime<Utc> = DateTime::parse_from_rfc3339(&time).unwrap().into();
    assert!((at - started).num_seconds().abs() <= 2, "{time}");
    // The added key goes last; the device's own is kept renamed.
    let text = std::fs::read_to_string(env.output()).unwrap();
    let suffix = format!(",\"snapshot_time\":\"{time}\"}}");
    assert!(text.lines().all(|l| l.ends_with(&suffix)), "{text}");
    let renamed: Vec<_> = lines
        .iter()
        .filter(|l| l["api_snapshot_time"] == "theirs")
        .collect();
    assert_eq!(renamed.len(), 1);
    let status = env.run(&["status", "--sources", "devices"]).expect(0);
    assert!(
        status.stdout.contains("devices: last snapshot ")
            && status.stdout.contains(" (complete), 450 lines written"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("next snapshot: due at "),
        "{}",
        status.stdout
    );
}

#[test]
fn no_second_snapshot_within_devices_every_and_a_new_one_after_it() {
    let env = TestEnv::new();
    env.fake.add_devices(devices(0, 3, 1));
    let poll = ["poll", "--sources", "devices", "--devices-every", "2s"];
    env.run(&poll).expect(0);
    env.run(&poll).expect(0);
    assert_eq!(env.fake.count(DEVICES), 1, "not due yet");
    assert_eq!(device_lines(&env).len(), 3);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    env.run(&poll).expect(0);
    assert_eq!(env.fake.count(DEVICES), 2);
    let lines = device_lines(&env);
    assert_eq!(lines.len(), 6, "every device again, in the new snapshot");
    assert_each_once(&lines);
    assert_eq!(snapshot_time_of(&lines).len(), 2);
}

#[test]
fn an_interrupted_snapshot_is_completed_under_the_same_time_each_device_once() {
    let env = TestEnv::new();
    env.fake.add_devices(devices(0, 450, 1)); // 3 pages of 200
    // Page 3 fails past the retries: the run stops with 75 after pages 1 and 2.
    for _ in 0..5 {
        env.fake.push_fault_at(DEVICES, 3, Fault::Html(503));
    }
    env.run(&["poll", "--sources", "devices"]).expect(75);
    let first = device_lines(&env);
    assert_eq!(first.len(), 400);
    let time = snapshot_time_of(&first);
    assert_eq!(time.len(), 1);
    let status = env.run(&["status", "--sources", "devices"]).expect(0);
    assert!(status.stdout.contains("(incomplete)"), "{}", status.stdout);
    // A device registered meanwhile comes first in the list and shifts
    // every later one a place down: one of page 2 moves to page 3.
    env.fake
        .add_devices(vec![device(5_000, &threat_time(minutes_ago(0)))]);
    let out = env.run(&["poll", "--sources", "devices"]).expect(0);
    assert!(
        out.stderr.contains("completing the snapshot of"),
        "{}",
        out.stderr
    );
    let lines = device_lines(&env);
    assert_each_once(&lines);
    assert_eq!(snapshot_time_of(&lines), time, "the same snapshot_time");
    let ids: HashSet<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    for expected in devices(0, 450, 1) {
        assert!(
            ids.contains(expected["id"].as_str().unwrap()),
            "missing a device"
        );
    }
    assert_eq!(
        env.checkpoint()["sources"]["devices"]["snapshot"]["complete"],
        true
    );
    // Complete: the next poll takes none.
    let requests = env.fake.count(DEVICES);
    env.run(&["poll", "--sources", "devices"]).expect(0);
    assert_eq!(env.fake.count(DEVICES), requests);
}

#[test]
fn backfill_writes_memory_protection_and_skips_devices() {
    let env = TestEnv::new();
    env.fake
        .add_memory_protection(memory_protection_events(0, 250, 30 * 60)); // 30 h ago
    env.fake.add_devices(devices(0, 3, 1));
    let out = env
        .run(&[
            "backfill",
            "--since",
            "2d",
            "--sources",
            "memory-protection,devices",
        ])
        .expect(0);
    let lines = env.lines();
    assert_eq!(count_type(&lines, "memory_protection"), 250);
    assert_eq!(count_type(&lines, "device"), 0);
    assert_eq!(env.fake.count(DEVICES), 0);
    assert!(
        out.stderr
            .contains("devices: a snapshot has no time window, so backfill skips it"),
        "{}",
        out.stderr
    );
    // The poll after it carries on with no duplicate.
    env.run(&["poll", "--sources", "memory-protection"])
        .expect(0);
    assert_each_once(&env.lines());
    assert_eq!(env.lines().len(), 250);
}

/// `tests/fixtures/checkpoint-before-issue-12.json` was written by the
/// release before memory protection and devices (main at 84582b0), polling
/// threats and detections: threats seed 1 at 02:26:17 and 2 at 02:53:17,
/// detections 1 at 02:31:17.381Z and 2 at 02:54:17.381Z, cursor 02:56:17
/// (the seconds-2 ones inside the overlap, their keys in `seen`).
#[test]
fn a_state_dir_from_the_release_before_issue_12_carries_on() {
    let env = TestEnv::new();
    env.fake.add_threats(vec![
        threat(1, "2026-11-30T02:26:17"),
        threat(2, "2026-11-30T02:53:17"),
        // Since: one just after the cursor, one a minute ago.
        threat(3, "2026-11-30T02:56:18"),
        threat(4, &threat_time(minutes_ago(1))),
    ]);
    env.fake.add_detections(vec![
        detection(1, "2026-11-30T02:31:17.381Z"),
        detection(2, "2026-11-30T02:54:17.381Z"),
        detection(3, "2026-11-30T02:56:18.000Z"),
        detection(4, &detection_time(minutes_ago(1))),
    ]);
    // New source: its initial lookback (a day) only.
    let recent = memory_protection_event(1, &threat_time(minutes_ago(60)));
    env.fake.add_memory_protection(vec![
        recent.clone(),
        memory_protection_event(2, &threat_time(minutes_ago(30 * 60))),
    ]);
    std::fs::create_dir_all(env.state_dir()).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/checkpoint-before-issue-12.json"
        ),
        env.checkpoint_path(),
    )
    .unwrap();
    env.run(&["poll"]).expect(0);
    let lines = env.lines();
    assert_each_once(&lines);
    let mut threats: Vec<&str> = lines
        .iter()
        .filter(|l| l["event_type"] == "threat")
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    threats.sort();
    assert_eq!(
        threats,
        ["sample-3.exe", "sample-4.exe"],
        "no gap, no duplicate"
    );
    let detection_ids: HashSet<&str> = lines
        .iter()
        .filter(|l| l["event_type"] == "detection")
        .map(|l| l["Id"].as_str().unwrap())
        .collect();
    let want: HashSet<String> = [
        detection(3, "2026-11-30T02:56:18.000Z"),
        detection(4, "2026-11-30T02:56:18.000Z"),
    ]
    .iter()
    .map(|d| d["Id"].as_str().unwrap().to_string())
    .collect();
    assert_eq!(
        detection_ids,
        want.iter().map(String::as_str).collect::<HashSet<_>>()
    );
    assert_eq!(
        memory_ids(&lines),
        HashSet::from([recent["device_image_file_event_id"]
            .as_str()
            .unwrap()
            .to_string()])
    );
    let checkpoint = env.checkpoint();
    assert_eq!(checkpoint["format"], 1);
    assert_eq!(checkpoint["sources"]["threats"]["events_written"], 4);
    assert_eq!(checkpoint["sources"]["detections"]["events_written"], 4);
    assert_eq!(
        checkpoint["sources"]["memory-protection"]["events_written"],
        1
    );
    let since: DateTime<Utc> =
        serde_json::from_value(checkpoint["sources"]["memory-protection"]["covered_since"].clone())
            .unwrap();
    let lookback = Utc::now() - since;
    assert!(
        lookback > TimeDelta::hours(23) && lookback < TimeDelta::hours(25),
        "starts at its initial lookback: {since}"
    );
}

#[test]
fn a_snapshot_killed_mid_way_is_completed_by_the_next_run_each_device_once() {
    let env = TestEnv::new();
    env.fake.add_devices(devices(0, 450, 1)); // 3 pages of 200
    env.fake
        .push_fault_at(DEVICES, 3, Fault::Delay(std::time::Duration::from_secs(4)));
    let args = ["poll", "--sources", "devices", "--concurrency", "1"];
    let mut child = env.spawn(&args);
    // Pages 1 and 2 are written while page 3 hangs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_to_string(env.output()).map_or(0, |t| t.lines().count()) < 400 {
        assert!(
            std::time::Instant::now() < deadline,
            "pages 1 and 2 never came"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    assert_eq!(env.finish(child).code, -1);
    let first = device_lines(&env);
    assert_eq!(first.len(), 400);
    env.run(&args).expect(0);
    let lines = device_lines(&env);
    assert_eq!(lines.len(), 450);
    assert_each_once(&lines);
    assert_eq!(snapshot_time_of(&lines), snapshot_time_of(&first));
}

/// A device registered while the list is read changes its size: the list is
/// read again, so the new device is in the snapshot too, and each device once.
#[test]
fn a_list_that_changes_during_the_snapshot_is_read_again() {
    let env = TestEnv::new();
    env.fake.add_devices(devices(0, 450, 1)); // 3 pages of 200
    env.fake.push_fault_at(
        DEVICES,
        2,
        Fault::Delay(std::time::Duration::from_millis(1500)),
    );
    let args = ["poll", "--sources", "devices", "--concurrency", "1"];
    let child = env.spawn(&args);
    // Registered after page 1 was served, before page 2 is.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while env.fake.count(DEVICES) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "page 2 never asked for"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let newcomer = device(5_000, &threat_time(minutes_ago(0)));
    env.fake.add_devices(vec![newcomer.clone()]);
    env.finish(child).expect(0);
    assert_eq!(env.fake.count(DEVICES), 6, "two readings of 3 pages");
    let lines = device_lines(&env);
    assert_each_once(&lines);
    assert_eq!(lines.len(), 451);
    assert!(lines.iter().any(|l| l["id"] == newcomer["id"]));
}

/// The snapshot's time is committed before its first line: a run that dies
/// between appending page 1 and committing it leaves a checkpoint that
/// already names the snapshot, and the next run completes it under that
/// time, finding page 1's lines in the output.
#[test]
fn a_run_dying_before_its_first_snapshot_commit_is_completed_under_that_time() {
    let env = TestEnv::new();
    env.fake.add_devices(devices(0, 450, 1)); // 3 pages of 200
    env.fake.push_fault_at(
        DEVICES,
        1,
        Fault::Delay(std::time::Duration::from_millis(800)),
    );
    for _ in 0..5 {
        env.fake.push_fault_at(DEVICES, 2, Fault::Html(503));
    }
    let args = ["poll", "--sources", "devices", "--concurrency", "1"];
    let child = env.spawn(&args);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while env.fake.count(DEVICES) < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "page 1 never asked for"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The checkpoint as it is while page 1 is on its way: what a crash
    // right after page 1's append would leave.
    let before_page_1 = std::fs::read(env.checkpoint_path()).unwrap();
    env.finish(child).expect(75);
    assert_eq!(device_lines(&env).len(), 200);
    std::fs::write(env.checkpoint_path(), &before_page_1).unwrap();
    std::fs::write(env.state_dir().join("lock"), "pid 1 poll started earlier\n").unwrap();
    env.run(&args).expect(0);
    let lines = device_lines(&env);
    assert_each_once(&lines);
    assert_eq!(snapshot_time_of(&lines).len(), 1, "one snapshot");
    assert_eq!(lines.len(), 450);
}

#[test]
fn check_lists_each_enabled_source_with_its_privilege() {
    let env = TestEnv::new();
    env.fake.add_devices(devices(0, 5, 1));
    env.fake
        .add_memory_protection(memory_protection_events(0, 2, 5));
    let out = env
        .run(&["check", "--sources", "memory-protection,devices"])
        .expect(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[2].starts_with(
            "memory-protection (memoryprotection:list): ok, 2 items in all, newest created "
        ),
        "{}",
        out.stdout
    );
    assert_eq!(lines[3], "devices (device:list): ok, 5 items in all");
    assert!(!env.output().exists(), "check writes no output");
}

#[test]
fn devices_every_is_bounded_like_the_other_durations() {
    let env = TestEnv::new();
    let out = env
        .run(&["poll", "--sources", "devices", "--devices-every", "0s"])
        .expect(78);
    assert!(
        out.error_line().contains(
            "--devices-every (or $CYLANCE_LOGS_DEVICES_EVERY) must be at least 1s, not 0s"
        ),
        "{}",
        out.stderr
    );
    let out = env
        .command(&["poll", "--sources", "devices"])
        .env("CYLANCE_LOGS_DEVICES_EVERY", "3651d")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("$CYLANCE_LOGS_DEVICES_EVERY: '3651d' is more than the largest accepted"),
        "{stderr}"
    );
    assert_eq!(env.fake.count(DEVICES), 0);
}
