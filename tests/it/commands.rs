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

#[test]
fn status_max_age_is_ok_when_fresh_and_critical_when_stale() {
    let env = TestEnv::new();
    let out = env.run(&["status", "--max-age", "15m"]).expect(2);
    // The verdict is the first line: Nagios shows only that one.
    let first_line = |out: &Outcome| out.stdout.lines().next().unwrap_or("").to_string();
    assert!(
        first_line(&out).starts_with("CRITICAL: threats: no successful run yet"),
        "{}",
        out.stdout
    );
    env.run(&["poll"]).expect(0);
    let out = env.run(&["status", "--max-age", "15m"]).expect(0);
    assert!(
        first_line(&out) == "OK: every source succeeded within 15m"
            && out
                .stdout
                .lines()
                .nth(1)
                .unwrap()
                .starts_with("checkpoint "),
        "{}",
        out.stdout
    );
    // A last success two hours ago is stale.
    let mut checkpoint = env.checkpoint();
    let two_hours_ago = (chrono::Utc::now() - chrono::TimeDelta::hours(2)).to_rfc3339();
    checkpoint["sources"]["detections"]["last_success"] = two_hours_ago.into();
    std::fs::write(env.checkpoint_path(), checkpoint.to_string()).unwrap();
    let out = env.run(&["status", "--max-age", "15m"]).expect(2);
    assert!(
        first_line(&out).starts_with("CRITICAL: detections: last success 2h ago"),
        "{}",
        out.stdout
    );
    let json: serde_json::Value = serde_json::from_str(
        &env.run(&["status", "--json", "--max-age", "15m"])
            .expect(2)
            .stdout,
    )
    .unwrap();
    assert_eq!(json["stale"].as_array().unwrap().len(), 1);
}

#[test]
fn metrics_file_reports_each_run_for_node_exporter() {
    let env = TestEnv::new();
    let metrics = env.dir.join("cylance.prom");
    let metrics_arg = metrics.display().to_string();
    env.fake.add_threats(threats(0, 7, 5));
    env.run(&["poll", "--metrics-file", &metrics_arg]).expect(0);
    let text = std::fs::read_to_string(&metrics).unwrap();
    let tenant = &env.creds.tenant_id;
    assert!(
        text.contains(&format!(
            "cylance_logs_last_run_exit_code{{tenant_id=\"{tenant}\"}} 0\n"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "cylance_logs_events_written_total{{tenant_id=\"{tenant}\",source=\"threats\"}} 7\n"
    )));
    assert!(text.contains(&format!(
        "cylance_logs_last_run_requests{{tenant_id=\"{tenant}\"}} 3\n"
    )));
    assert!(text.contains("# TYPE cylance_logs_last_success_timestamp_seconds gauge"));
    // A failed run still reports, with its exit code.
    env.fake.push_fault("/threats/v2", Fault::Html(503));
    env.fake.push_fault("/threats/v2", Fault::Html(503));
    env.fake.push_fault("/threats/v2", Fault::Html(503));
    env.fake.push_fault("/threats/v2", Fault::Html(503));
    env.fake.push_fault("/threats/v2", Fault::Html(503));
    env.run(&["poll", "--metrics-file", &metrics_arg])
        .expect(75);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains(&format!(
            "cylance_logs_last_run_exit_code{{tenant_id=\"{tenant}\"}} 75\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "cylance_logs_last_run_retries{{tenant_id=\"{tenant}\"}} 4\n"
        )),
        "{text}"
    );
    assert!(!env.dir.join("cylance.prom.tmp").exists());
}

#[test]
fn backfill_reports_progress_off_a_terminal() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 450, 60));
    let out = env
        .run(&["backfill", "--since", "1d", "--sources", "threats"])
        .expect(0);
    assert!(
        out.stderr
            .contains("backfill threats: page 1/3, 200 events"),
        "{}",
        out.stderr
    );
}

#[test]
fn backfill_redraws_its_progress_in_place_on_a_terminal() {
    // script(1) (util-linux, essential on Debian) gives the binary a terminal.
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 450, 60));
    let out = env.output().display().to_string();
    let state = env.state_dir().display().to_string();
    let secret = env.secret_file().display().to_string();
    let command = [
        BIN,
        "backfill",
        "--since",
        "1d",
        "--sources",
        "threats",
        "--api-url",
        &env.fake.url(),
        "--app-id",
        &env.creds.app_id,
        "--tenant-id",
        &env.creds.tenant_id,
        "--app-secret-file",
        &secret,
        "--state-dir",
        &state,
        "--output",
        &out,
    ]
    .join(" ");
    let terminal = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .env("HOME", &env.dir)
        .env("CYLANCE_LOGS_MAX_RPS", "0")
        .output()
        .expect("script runs");
    let shown = String::from_utf8_lossy(&terminal.stdout);
    env.assert_no_secret_in(&shown, "the terminal");
    assert!(terminal.status.success(), "{shown}");
    assert!(
        shown.contains("\r\x1b[Kbackfill threats: page 1/3, 200 events"),
        "{shown:?}"
    );
    assert_eq!(env.lines().len(), 450);
}
