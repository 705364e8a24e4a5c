//! Exactly once through `kill -9` at any moment, and between tenants sharing
//! one output file.

use crate::support::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// A small deterministic generator, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// The events the fake holds, per source.
#[derive(Default)]
struct Held {
    threats: Vec<serde_json::Value>,
    detections: Vec<serde_json::Value>,
    memory: Vec<serde_json::Value>,
    /// Registered before the first snapshot: each in it, once.
    devices: Vec<serde_json::Value>,
}

/// The keys `assert_each_once` uses, for every event the fake holds
/// (devices without their snapshot's time: the tests take one snapshot).
fn expected_keys(held: &Held, tenant: &str) -> HashSet<String> {
    let tenant = serde_json::Value::from(tenant);
    let threats = held
        .threats
        .iter()
        .map(|t| format!("{tenant}|{}|{}", t["sha256"], t["last_found"]));
    let detections = held
        .detections
        .iter()
        .map(|d| format!("{tenant}|{}", d["Id"]));
    let memory = held
        .memory
        .iter()
        .map(|m| format!("{tenant}|memory|{}", m["device_image_file_event_id"]));
    let devices = held
        .devices
        .iter()
        .map(|d| format!("{tenant}|device|{}", d["id"]));
    threats
        .chain(detections)
        .chain(memory)
        .chain(devices)
        .collect()
}

fn written_keys(lines: &[serde_json::Value]) -> HashSet<String> {
    lines
        .iter()
        .map(|l| match l["event_type"].as_str() {
            Some("threat") => format!("{}|{}|{}", l["tenant_id"], l["sha256"], l["last_found"]),
            Some("memory_protection") => format!(
                "{}|memory|{}",
                l["tenant_id"], l["device_image_file_event_id"]
            ),
            Some("device") => format!("{}|device|{}", l["tenant_id"], l["id"]),
            _ => format!("{}|{}", l["tenant_id"], l["Id"]),
        })
        .collect()
}

/// Every device line of one snapshot: one `snapshot_time` in the file.
fn assert_one_snapshot(lines: &[serde_json::Value]) {
    let times: HashSet<&str> = lines
        .iter()
        .filter(|l| l["event_type"] == "device")
        .map(|l| l["snapshot_time"].as_str().unwrap())
        .collect();
    assert_eq!(
        times.len(),
        1,
        "device lines of several snapshots: {times:?}"
    );
}

/// Asserts the file holds exactly the expected events, showing a few of the
/// differences rather than thousands of keys.
fn assert_same_events(lines: &[serde_json::Value], expected: &HashSet<String>) {
    let written = written_keys(lines);
    let missing: Vec<_> = expected.difference(&written).take(3).collect();
    let extra: Vec<_> = written.difference(expected).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} written, {} expected; missing e.g. {missing:?}; unexpected e.g. {extra:?}",
        written.len(),
        expected.len()
    );
}

/// How many runs `kill_repeatedly` killed, so a test can check it really
/// killed runs mid-work (a binary too fast to kill would pass vacuously).
#[derive(Debug, Default, Clone, Copy)]
struct Kills {
    /// Runs ended by SIGKILL.
    killed: usize,
    /// Of those, runs killed after they had appended to the output: a kill
    /// between an append and its commit, which recovery must deal with.
    after_writing: usize,
}

impl std::ops::AddAssign for Kills {
    fn add_assign(&mut self, other: Kills) {
        self.killed += other.killed;
        self.after_writing += other.after_writing;
    }
}

/// Runs `args` again and again, each time killed with SIGKILL after a random
/// delay below `max_delay_ms`, until `kills` runs were killed or one finished
/// on its own (its work was done); then once more to completion.
fn kill_repeatedly(
    env: &TestEnv,
    args: &[&str],
    rng: &mut Rng,
    kills: usize,
    max_delay_ms: u64,
) -> Kills {
    let mut made = Kills::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let output_len = || std::fs::metadata(env.output()).map_or(0, |m| m.len());
    while made.killed < kills && Instant::now() < deadline {
        let before = output_len();
        let mut child = env.spawn(args);
        std::thread::sleep(Duration::from_millis(rng.below(max_delay_ms)));
        let finished_alone = child.try_wait().unwrap().is_some();
        if !finished_alone {
            child.kill().unwrap();
            made.killed += 1;
            if output_len() > before {
                made.after_writing += 1;
            }
        }
        let out = env.finish(child);
        assert!(
            out.code == -1 || out.code == 0,
            "a run between kills failed:\n{}",
            out.stderr
        );
        if finished_alone {
            break;
        }
    }
    env.run(args).expect(0);
    made
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_duplicates_nothing() {
    let mut total = Kills::default();
    let mut seed = 0x5eed_0000u64;
    // Fresh tenants until at least 50 kills, each backfilled under SIGKILLs
    // that land between pages, mid-append and between append and commit.
    while total.killed < 50 {
        seed += 1;
        assert!(seed < 0x5eed_0000 + 10, "only {total:?} in 9 tenants");
        let env = TestEnv::new();
        let newest = minutes_ago(2);
        // 12,000 threats over ten hours (60 pages, so the window is split and
        // committed in parts) and 3,000 detections (30 pages). With 60 ms per
        // answer and 4 pages in flight a whole backfill takes over a second.
        let threats: Vec<_> = (0..12_000u64)
            .map(|i| {
                threat(
                    i,
                    &threat_time(newest - chrono::TimeDelta::seconds(3 * i as i64)),
                )
            })
            .collect();
        let detections: Vec<_> = (0..3_000u64)
            .map(|i| {
                detection(
                    i,
                    &detection_time(newest - chrono::TimeDelta::seconds(11 * i as i64)),
                )
            })
            .collect();
        // And 2,000 memory-protection events (10 pages, in no time order).
        let memory: Vec<_> = (0..2_000u64)
            .map(|i| {
                memory_protection_event(
                    i,
                    &threat_time(newest - chrono::TimeDelta::seconds(17 * i as i64)),
                )
            })
            .collect();
        env.fake.add_threats(threats.clone());
        env.fake.add_detections(detections.clone());
        env.fake.add_memory_protection(memory.clone());
        env.fake.set_delay(Duration::from_millis(60));
        let mut rng = Rng(seed);
        total += kill_repeatedly(
            &env,
            &["backfill", "--since", "12h", "--enrich", "none"],
            &mut rng,
            20,
            700,
        );
        let lines = env.lines();
        assert_each_once(&lines);
        let held = Held {
            threats,
            detections,
            memory,
            ..Held::default()
        };
        assert_same_events(&lines, &expected_keys(&held, &env.creds.tenant_id));
    }
    // Not vacuous: kills landed, and some after lines were appended. (The
    // loop above already needs 50 kills; the rest is timing, so the bar is low.)
    assert!(total.killed >= 50, "{total:?}");
    assert!(
        total.after_writing >= 5,
        "too few kills landed after a run had written: {total:?}"
    );
}

#[test]
fn sigkill_during_polls_with_new_events_arriving_loses_nothing() {
    let env = TestEnv::new();
    // 20 ms per answer: a poll (token, then pages 1 and 2-4 of each source)
    // takes over 100 ms on any machine, so most delays below land mid-run.
    env.fake.set_delay(Duration::from_millis(20));
    let mut rng = Rng(0xfeed);
    // The inventory (3 pages): its snapshot is taken, killed and completed
    // in the first round, and not again (--devices-every 24h).
    let mut held = Held {
        devices: devices(0, 450, 1),
        ..Held::default()
    };
    env.fake.add_devices(held.devices.clone());
    let poll = [
        "poll",
        "--sources",
        "threats,detections,memory-protection,devices",
        // Lookups have their own crash test below.
        "--enrich",
        "none",
    ];
    let mut total = Kills::default();
    for round in 0..6u64 {
        // New events 0.3 s apart ending a minute ago: all inside the overlap
        // of the previous poll, like events that reach the API a little late.
        let newest = minutes_ago(1);
        let at = |i: u64| newest - chrono::TimeDelta::milliseconds(300 * i as i64);
        let threats: Vec<_> = (0..700)
            .map(|i| threat(round * 1000 + i, &threat_time(at(i))))
            .collect();
        let detections: Vec<_> = (0..400)
            .map(|i| detection(round * 1000 + i, &detection_time(at(i))))
            .collect();
        let memory: Vec<_> = (0..300)
            .map(|i| memory_protection_event(round * 1000 + i, &threat_time(at(i))))
            .collect();
        env.fake.add_threats(threats.clone());
        env.fake.add_detections(detections.clone());
        env.fake.add_memory_protection(memory.clone());
        held.threats.extend(threats);
        held.detections.extend(detections);
        held.memory.extend(memory);
        total += kill_repeatedly(&env, &poll, &mut rng, 3, 120);
    }
    // Not vacuous: up to 18 kills; a binary too fast to kill makes none.
    assert!(total.killed >= 6, "too few runs killed: {total:?}");
    assert!(
        total.after_writing >= 1,
        "no kill after an append: {total:?}"
    );
    let lines = env.lines();
    assert_each_once(&lines);
    assert_one_snapshot(&lines);
    assert_same_events(&lines, &expected_keys(&held, &env.creds.tenant_id));
}

#[test]
fn tenants_sharing_a_file_recover_only_their_own_lines() {
    let a = TestEnv::new();
    let mut b_creds = Credentials::sample();
    b_creds.tenant_id = "bbbbbbbb-0000-0000-0000-000000000002".into();
    let b = TestEnv::with_credentials(b_creds);
    let shared = a.output().display().to_string();
    // A's first run commits with the file as it is: empty.
    a.run(&["poll"]).expect(0);
    let a_before = std::fs::read(a.checkpoint_path()).unwrap();
    // Both tenants see the very same threat and detection.
    let same_threats = threats(1, 3, 5);
    let same_detections = detections(1, 3, 5);
    for env in [&a, &b] {
        env.fake.add_threats(same_threats.clone());
        env.fake.add_detections(same_detections.clone());
    }
    // B writes its lines after A's commit: they sit in A's uncommitted tail.
    b.run(&["poll", "--output", &shared]).expect(0);
    a.run(&["poll"]).expect(0);
    let lines = a.lines();
    assert_eq!(lines.len(), 12, "each event once per tenant");
    // A dies between its append and its commit: its checkpoint is still the
    // one from before, its lines are in the file, its lock line is left.
    std::fs::write(a.checkpoint_path(), &a_before).unwrap();
    std::fs::write(a.state_dir().join("lock"), "pid 1 poll started earlier\n").unwrap();
    let out = a.run(&["poll"]).expect(0);
    assert!(
        out.stderr
            .contains("found 6 event(s) of an interrupted run"),
        "{}",
        out.stderr
    );
    let lines = a.lines();
    assert_eq!(lines.len(), 12);
    assert_each_once(&lines);
    for tenant in [&a.creds.tenant_id, &b.creds.tenant_id] {
        assert_eq!(
            lines
                .iter()
                .filter(|l| l["tenant_id"] == tenant.as_str())
                .count(),
            6
        );
    }
}

#[test]
fn concurrent_tenants_appending_to_one_file_never_interleave_lines() {
    let a = TestEnv::new();
    let mut b_creds = Credentials::sample();
    b_creds.tenant_id = "bbbbbbbb-0000-0000-0000-000000000002".into();
    let b = TestEnv::with_credentials(b_creds);
    let shared = a.output().display().to_string();
    for env in [&a, &b] {
        env.fake.add_threats(threats(0, 4000, 5));
        env.fake.add_detections(detections(0, 2000, 5));
    }
    let run_a = a.spawn(&["poll"]);
    let run_b = b.spawn(&["poll", "--output", &shared]);
    a.finish(run_a).expect(0);
    b.finish(run_b).expect(0);
    let lines = a.lines(); // panics on any torn or interleaved line
    assert_eq!(lines.len(), 12_000);
    assert_each_once(&lines);
}

#[test]
fn sigkill_with_lookups_on_loses_nothing_and_every_line_carries_its_lookup() {
    let env = TestEnv::new();
    let newest = minutes_ago(2);
    // 1,000 threats (5 pages) and 300 detections (3 pages), each with a
    // lookup: with 15 ms per answer and 4 in flight, a whole run takes
    // about 5 s, most of it in lookups, so kills land between a page and its
    // lookups, amid them, and between an append and its commit.
    let threats: Vec<_> = (0..1_000u64)
        .map(|i| {
            threat(
                i,
                &threat_time(newest - chrono::TimeDelta::seconds(7 * i as i64)),
            )
        })
        .collect();
    let detections: Vec<_> = (0..300u64)
        .map(|i| {
            detection(
                i,
                &detection_time(newest - chrono::TimeDelta::seconds(13 * i as i64)),
            )
        })
        .collect();
    env.fake.add_threats(threats.clone());
    env.fake.add_detections(detections.clone());
    env.fake.set_delay(Duration::from_millis(15));
    let mut rng = Rng(0x100c_0075);
    let args = [
        "backfill",
        "--since",
        "3h",
        "--enrich",
        "threat-devices,detection-details",
    ];
    // Kills within 1.5 s: a whole run takes about 5 s, so a run rarely
    // finishes before enough kills landed, also on a loaded machine.
    let made = kill_repeatedly(&env, &args, &mut rng, 10, 1500);
    assert!(made.killed >= 6, "too few runs killed: {made:?}");
    assert!(made.after_writing >= 1, "no kill after an append: {made:?}");
    let lines = env.lines();
    assert_each_once(&lines);
    assert_same_events(
        &lines,
        &expected_keys(
            &Held {
                threats: threats.clone(),
                detections: detections.clone(),
                ..Held::default()
            },
            &env.creds.tenant_id,
        ),
    );
    for line in &lines {
        if line["event_type"] == "threat" {
            let sha = line["sha256"].as_str().unwrap();
            let at = line["last_found"].as_str().unwrap();
            let expected: Vec<serde_json::Value> = env
                .fake
                .threat_devices(sha)
                .unwrap()
                .into_iter()
                .filter(|d| {
                    let found = d["date_found"].as_str().unwrap();
                    found.trim_end_matches('Z').trim_end_matches(".000") == at
                })
                .collect();
            assert!(!expected.is_empty());
            assert_eq!(line["devices"], serde_json::Value::Array(expected), "{sha}");
        } else {
            let id = line["Id"].as_str().unwrap();
            assert_eq!(
                line["details"],
                env.fake.detection_details(id).unwrap(),
                "{id}"
            );
        }
    }
}

#[test]
fn second_run_on_the_same_state_dir_exits_75_at_once() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 2000, 5));
    env.fake.set_delay(Duration::from_millis(100));
    // Lists only: the lookups of 2,000 threats would outlast --max-runtime.
    let first = env.spawn(&["poll", "--enrich", "none"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(env.state_dir().join("lock")).is_ok_and(|l| l.starts_with("pid"))
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let out = env.run(&["poll"]).expect(75);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "did not exit at once"
    );
    assert!(out.error_line().contains("another run holds the lock file"));
    env.finish(first).expect(0);
    assert_eq!(env.lines().len(), 2000);
}

#[test]
fn lines_of_a_crashed_run_stay_known_while_their_source_is_not_polled() {
    let env = TestEnv::new();
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let threats_only = std::fs::read(env.checkpoint_path()).unwrap();
    env.fake.add_detections(detections(0, 5, 2));
    env.run(&["poll"]).expect(0);
    // That run died after appending the detections, before its commit; the
    // next runs fetch threats only, then both again.
    std::fs::write(env.checkpoint_path(), &threats_only).unwrap();
    std::fs::write(env.state_dir().join("lock"), "pid 1 poll started earlier\n").unwrap();
    env.run(&["poll", "--sources", "threats"]).expect(0);
    env.run(&["poll", "--sources", "threats"]).expect(0);
    env.run(&["poll"]).expect(0);
    let lines = env.lines();
    assert_eq!(lines.len(), 5);
    assert_each_once(&lines);
}

/// Two tenants share one file and are killed in turn, each at a random
/// moment (mid-page, mid-append, between append and commit), so that one's
/// recovery meets the other's torn or uncommitted lines. Each tenant's events
/// end up in the file exactly once; a line torn by a kill may stay as one
/// unreadable line, never a lost or repeated event.
#[test]
fn tenants_sharing_a_file_killed_in_turn_write_each_event_once() {
    let a = TestEnv::new();
    let mut b_creds = Credentials::sample();
    b_creds.tenant_id = "bbbbbbbb-0000-0000-0000-000000000002".into();
    let b = TestEnv::with_credentials(b_creds);
    let shared = a.output().display().to_string();
    let newest = minutes_ago(2);
    let threats: Vec<_> = (0..6_000u64)
        .map(|i| {
            threat(
                i,
                &threat_time(newest - chrono::TimeDelta::seconds(7 * i as i64)),
            )
        })
        .collect();
    let detections: Vec<_> = (0..2_000u64)
        .map(|i| {
            detection(
                i,
                &detection_time(newest - chrono::TimeDelta::seconds(13 * i as i64)),
            )
        })
        .collect();
    for env in [&a, &b] {
        env.fake.add_threats(threats.clone());
        env.fake.add_detections(detections.clone());
        env.fake.set_delay(Duration::from_millis(80));
    }
    // Lookups have their own crash test.
    let args = [
        "backfill", "--since", "12h", "--enrich", "none", "--output", &shared,
    ];
    let mut rng = Rng(0x7e4a_0001);
    let mut killed = 0;
    for round in 0..24 {
        let env = if round % 2 == 0 { &a } else { &b };
        let mut child = env.spawn(&args);
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        let out = env.finish(child);
        assert!(out.code == -1 || out.code == 0, "{}", out.stderr);
    }
    a.run(&args).expect(0);
    b.run(&args).expect(0);
    assert!(killed >= 12, "only {killed} kills landed");
    let text = std::fs::read(a.output()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .split(|byte| *byte == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    let held = Held {
        threats,
        detections,
        ..Held::default()
    };
    let mut expected = expected_keys(&held, &a.creds.tenant_id);
    expected.extend(expected_keys(&held, &b.creds.tenant_id));
    assert_each_once(&lines);
    assert_same_events(&lines, &expected);
}
