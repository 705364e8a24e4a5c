//! `backfill`: past windows, before what poll wrote, never twice.

use crate::support::*;

#[test]
fn backfill_then_poll_leaves_no_gap_and_no_duplicate() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 50, 60 * 24 * 3)); // 3 days ago
    env.fake.add_threats(threats(100, 50, 60 * 5)); // 5 h ago
    env.fake.add_detections(detections(0, 30, 60 * 24 * 2));
    env.fake.add_detections(detections(100, 30, 2));
    env.run(&["backfill", "--since", "7d"]).expect(0);
    assert_eq!(env.lines().len(), 160);
    env.fake.add_threats(threats(200, 5, 0));
    env.run(&["poll"]).expect(0);
    let lines = env.lines();
    assert_eq!(lines.len(), 165);
    assert_each_once(&lines);
}

#[test]
fn backfill_without_a_checkpoint_leaves_the_cursor_at_until() {
    let env = TestEnv::new();
    env.fake.add_detections(detections(0, 5, 60 * 10));
    env.run(&[
        "backfill",
        "--since",
        "1d",
        "--until",
        "6h",
        "--sources",
        "detections",
    ])
    .expect(0);
    let state = &env.checkpoint()["sources"]["detections"];
    let cursor = chrono::DateTime::parse_from_rfc3339(state["cursor"].as_str().unwrap()).unwrap();
    let six_hours_ago = chrono::Utc::now() - chrono::TimeDelta::hours(6);
    assert!(
        (cursor.timestamp() - six_hours_ago.timestamp()).abs() < 60,
        "{cursor}"
    );
    assert_eq!(env.lines().len(), 5);
    // The next poll carries on from there: events after --until come now.
    env.fake.add_detections(detections(100, 3, 60 * 4));
    env.run(&["poll", "--sources", "detections"]).expect(0);
    assert_eq!(env.lines().len(), 8);
    assert_each_once(&env.lines());
}

#[test]
fn backfill_after_poll_fills_the_history_before_it_only() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 20, 60 * 30)); // 30 h ago: before poll's 24 h
    env.fake.add_threats(threats(100, 20, 60)); // within poll's window
    env.run(&["poll", "--sources", "threats"]).expect(0);
    assert_eq!(env.lines().len(), 20);
    let out = env
        .run(&["backfill", "--since", "3d", "--sources", "threats"])
        .expect(0);
    assert!(
        out.stderr.contains("backfill done: threats 20 new"),
        "{}",
        out.stderr
    );
    assert_eq!(env.lines().len(), 40);
    assert_each_once(&env.lines());
    // Asking again for a range already written writes nothing.
    let out = env
        .run(&[
            "backfill",
            "--since",
            "3d",
            "--until",
            "1h",
            "--sources",
            "threats",
        ])
        .expect(0);
    assert!(out.stderr.contains("nothing to backfill"), "{}", out.stderr);
    assert_eq!(env.lines().len(), 40);
}

#[test]
fn until_before_the_written_range_is_refused_as_a_hole() {
    let env = TestEnv::new();
    env.run(&["poll", "--sources", "threats", "--initial-lookback", "1h"])
        .expect(0);
    let out = env
        .run(&[
            "backfill",
            "--since",
            "3d",
            "--until",
            "2d",
            "--sources",
            "threats",
        ])
        .expect(2);
    assert!(
        out.error_line().contains("would leave a hole"),
        "{}",
        out.stderr
    );
}

/// 12,000 threats, one every 3 s over the last 10 hours: 60 pages, which a
/// backfill fetches as two committed halves of 30 pages.
fn ten_hours_of_threats(env: &TestEnv) {
    let newest = minutes_ago(1);
    let items = (0..12_000)
        .map(|i| {
            threat(
                i,
                &threat_time(newest - chrono::TimeDelta::seconds(3 * i as i64)),
            )
        })
        .collect();
    env.fake.add_threats(items);
}

#[test]
fn large_backfill_commits_as_it_goes_and_resumes_after_sigterm() {
    let env = TestEnv::new();
    ten_hours_of_threats(&env);
    env.fake.set_delay(std::time::Duration::from_millis(20));
    let args = [
        "backfill",
        "--since",
        "11h",
        "--sources",
        "threats",
        "--enrich",
        "none",
    ];
    let child = env.spawn(&args);
    // Wait for the first half's commit, then stop the run mid-way through the second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(env.checkpoint_path()).is_ok_and(|c| c.contains("\"threats\"")) {
        assert!(
            std::time::Instant::now() < deadline,
            "no commit within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = env.finish(child).expect(75);
    assert!(
        out.error_line().contains("interrupted by a signal"),
        "{}",
        out.stderr
    );
    let first = env.lines().len();
    assert!((6000..12_000).contains(&first), "first run wrote {first}");
    let pages_before = env.fake.count("/threats/v2");
    env.fake.set_delay(std::time::Duration::ZERO);
    env.run(&args).expect(0);
    let lines = env.lines();
    assert_eq!(lines.len(), 12_000);
    assert_each_once(&lines);
    let pages_again = env.fake.count("/threats/v2") - pages_before;
    assert!(
        pages_again <= 31,
        "the second run started again from zero: {pages_again} pages"
    );
}

#[test]
fn max_runtime_stops_a_run_with_75_and_keeps_what_it_wrote() {
    let env = TestEnv::new();
    env.fake.add_detections(detections(0, 1000, 5)); // 10 pages
    env.fake.set_delay(std::time::Duration::from_millis(200));
    let out = env
        .run(&[
            "poll",
            "--sources",
            "detections",
            "--max-runtime",
            "1s",
            "--concurrency",
            "1",
        ])
        .expect(75);
    assert!(
        out.error_line().contains("--max-runtime 1s reached"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("poll stopped: detections"),
        "{}",
        out.stderr
    );
    let first = env.lines().len();
    assert!(first > 0 && first < 1000, "wrote {first}");
    env.fake.set_delay(std::time::Duration::ZERO);
    env.run(&["poll", "--sources", "detections"]).expect(0);
    assert_eq!(env.lines().len(), 1000);
    assert_each_once(&env.lines());
}
