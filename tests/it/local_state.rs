//! Local state between runs: rotated or deleted output, bounded checkpoint.

use crate::support::*;

#[test]
fn output_moved_away_by_logrotate_create_is_started_anew_losing_nothing() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 5, 3));
    env.run(&["poll"]).expect(0);
    let rotated = env.dir.join("out.log.1");
    std::fs::rename(env.output(), &rotated).unwrap();
    env.fake.add_threats(threats(100, 4, 0));
    env.run(&["poll"]).expect(0);
    let new_file = env.lines();
    assert_eq!(new_file.len(), 4, "only the new events, in the new file");
    assert_eq!(read_lines(&rotated).len(), 5);
}

#[test]
fn output_deleted_between_runs_is_recreated() {
    let env = TestEnv::new();
    env.fake.add_detections(detections(0, 3, 3));
    env.run(&["poll"]).expect(0);
    std::fs::remove_file(env.output()).unwrap();
    env.fake.add_detections(detections(100, 2, 0));
    env.run(&["poll"]).expect(0);
    assert_eq!(env.lines().len(), 2);
}

#[test]
fn copytruncate_between_runs_loses_and_repeats_nothing() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 5, 3));
    env.run(&["poll"]).expect(0);
    let copy = std::fs::read(env.output()).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(env.output())
        .unwrap()
        .set_len(0)
        .unwrap();
    env.fake.add_threats(threats(100, 4, 0));
    env.run(&["poll"]).expect(0);
    assert_eq!(env.lines().len(), 4);
    assert_eq!(copy.iter().filter(|b| **b == b'\n').count(), 5);
}

#[test]
fn rotation_between_a_crash_and_the_next_run_warns_of_at_least_once() {
    let env = TestEnv::new();
    env.run(&["poll"]).expect(0);
    let before_crash = std::fs::read(env.checkpoint_path()).unwrap();
    env.fake.add_threats(threats(0, 3, 1));
    env.run(&["poll"]).expect(0);
    // As if that run had died between its append and its commit ...
    std::fs::write(env.checkpoint_path(), &before_crash).unwrap();
    std::fs::write(env.state_dir().join("lock"), "pid 1 poll started earlier\n").unwrap();
    // ... and logrotate had moved the file before the next run.
    std::fs::rename(env.output(), env.dir.join("out.log.1")).unwrap();
    let out = env.run(&["poll"]).expect(0);
    assert!(
        out.stderr
            .contains("warning: the previous run did not finish"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("at-least-once for that window"),
        "{}",
        out.stderr
    );
    assert_eq!(
        env.lines().len(),
        3,
        "written again: at least once, never lost"
    );
}

#[test]
fn checkpoint_size_does_not_grow_with_runs_or_events() {
    let env = TestEnv::new();
    let mut sizes = Vec::new();
    for round in 0..12u64 {
        // Events from the last 200 ms, all after the previous run's start;
        // with --overlap 0s none of them can be shown to a later run again.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = chrono::Utc::now();
        let items = (0..200)
            .map(|i| {
                detection(
                    round * 1000 + i,
                    &detection_time(now - chrono::TimeDelta::milliseconds(i as i64)),
                )
            })
            .collect();
        env.fake.add_detections(items);
        env.run(&["poll", "--sources", "detections", "--overlap", "0s"])
            .expect(0);
        sizes.push(std::fs::metadata(env.checkpoint_path()).unwrap().len());
    }
    assert_eq!(env.lines().len(), 2400);
    let (early, late) = (sizes[3], *sizes.last().unwrap());
    assert!(
        late <= early + 100,
        "checkpoint grew from {early} to {late} bytes: {sizes:?}"
    );
}

#[test]
fn checkpoint_of_another_tenant_is_refused_with_65() {
    let env = TestEnv::new();
    env.run(&["poll"]).expect(0);
    let before = std::fs::read(env.checkpoint_path()).unwrap();
    let out = env.run(&["poll", "--tenant-id", "someone-else"]).expect(65);
    assert!(
        out.error_line()
            .contains("belongs to tenant aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee, not someone-else")
    );
    assert_eq!(std::fs::read(env.checkpoint_path()).unwrap(), before);
}
