//! `check` and `status`: what operators run by hand and from monitoring.

use crate::support::*;

#[test]
fn check_reads_one_page_per_source_and_writes_nothing() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 450, 5));
    env.fake.add_detections(detections(0, 7, 5));
    let out = env.run(&["check"]).expect(0);
    assert!(
        out.stdout
            .contains("threats: ok, 450 items in all, newest last_found"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("detections: ok, 7 items in all, newest ReceivedTime"),
        "{}",
        out.stdout
    );
    assert_eq!(env.fake.count("/threats/v2"), 1);
    assert_eq!(env.fake.count("/detections/v2"), 1);
    assert!(!env.state_dir().exists(), "check creates no state");
    assert!(!env.output().exists(), "check writes no output");
}

#[test]
fn check_fails_with_the_poll_exit_codes() {
    let env = TestEnv::new();
    env.fake.deny_privilege("threat:list");
    let out = env.run(&["check"]).expect(77);
    assert!(out.error_line().contains("needs the threat:list privilege"));
}

#[test]
fn status_shows_cursor_last_run_and_counts() {
    let env = TestEnv::new();
    let out = env.run(&["status"]).expect(0);
    assert!(out.stdout.contains("no checkpoint yet"), "{}", out.stdout);
    env.fake.add_threats(threats(0, 4, 5));
    env.run(&["poll"]).expect(0);
    let out = env.run(&["status"]).expect(0);
    assert!(
        out.stdout.contains("last run: poll started"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("exit 0"), "{}", out.stdout);
    assert!(
        out.stdout.contains("threats: written from"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("4 events written"), "{}", out.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&env.run(&["status", "--json"]).expect(0).stdout).unwrap();
    assert_eq!(
        json["checkpoint"]["sources"]["threats"]["events_written"],
        4
    );
    assert_eq!(json["checkpoint"]["last_run"]["exit_code"], 0);
}

#[test]
fn status_records_a_failed_run() {
    let env = TestEnv::new();
    env.run(&["poll"]).expect(0);
    env.fake.push_fault(
        "/threats/v2",
        Fault::Status {
            status: 501,
            body: "{}".into(),
            headers: vec![],
        },
    );
    env.run(&["poll"]).expect(76);
    let out = env.run(&["status"]).expect(0);
    assert!(
        out.stdout.contains("exit 76: GET /threats/v2"),
        "{}",
        out.stdout
    );
}
