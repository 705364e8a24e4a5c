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
            .contains("threats (threat:list): ok, 450 items in all, newest last_found"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("detections (opticsdetect:list): ok, 7 items in all, newest ReceivedTime"),
        "{}",
        out.stdout
    );
    assert_eq!(env.fake.count("/threats/v2"), 1);
    assert_eq!(env.fake.count("/detections/v2"), 1);
    assert_eq!(env.fake.count("/memoryprotection/v2"), 1);
    assert_eq!(
        env.fake.count("/devices/v2"),
        0,
        "devices is off by default"
    );
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
    assert!(
        out.stdout.contains(
            "lookups: threat-devices (adds `devices`), one request per new line of its source"
        ),
        "{}",
        out.stdout
    );
    let out = env.run(&["status", "--enrich", "none"]).expect(0);
    assert!(
        out.stdout.contains("lookups: none (--enrich none)"),
        "{}",
        out.stdout
    );
    let out = env
        .run(&[
            "status",
            "--sources",
            "detections",
            "--enrich",
            "threat-devices",
        ])
        .expect(0);
    assert!(
        out.stdout
            .contains("threat-devices (adds `devices`; its source is not polled)"),
        "{}",
        out.stdout
    );
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
    // The token, a page per source and a devices lookup per new threat.
    assert!(text.contains(&format!(
        "cylance_logs_last_run_requests{{tenant_id=\"{tenant}\"}} 11\n"
    )));
    assert!(text.contains(&format!(
        "cylance_logs_last_run_events{{tenant_id=\"{tenant}\",source=\"memory-protection\"}} 0\n"
    )));
    assert!(text.contains(&format!(
        "cylance_logs_last_run_lookups{{tenant_id=\"{tenant}\",source=\"threats\"}} 7\n"
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

/// stdout's lines, to find one by its start.
fn line_starting<'a>(stdout: &'a str, start: &str) -> &'a str {
    stdout
        .lines()
        .find(|line| line.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in\n{stdout}"))
}

#[test]
fn check_says_per_step_what_worked() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 5));
    let out = env.run(&["check"]).expect(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "configuration: ok, API {} (tenant {}",
            env.fake.url(),
            env.creds.tenant_id
        )) && lines[0].ends_with("sources threats, detections, memory-protection"),
        "{}",
        out.stdout
    );
    assert!(lines[1].starts_with("token: ok"), "{}", out.stdout);
    assert!(lines[2].starts_with("threats (threat:list): ok, 3 items in all"));
    assert!(lines[3].starts_with("detections (opticsdetect:list): ok, 0 items in all"));
    assert!(lines[4].starts_with("memory-protection (memoryprotection:list): ok, 0 items in all"));
    assert!(
        lines[5].starts_with("threat-devices lookup (needs threat:devicelist): ok"),
        "{}",
        out.stdout
    );
    assert_eq!(lines[6], "check passed");
}

#[test]
fn check_reports_every_source_that_fails_not_only_the_first() {
    let env = TestEnv::new();
    env.fake.deny_privilege("threat:list");
    env.fake.deny_privilege("opticsdetect:list");
    let out = env.run(&["check"]).expect(77);
    assert!(
        line_starting(&out.stdout, "threats (threat:list): FAILED: ")
            .contains("needs the threat:list privilege")
    );
    assert!(
        line_starting(&out.stdout, "detections (opticsdetect:list): FAILED: ")
            .contains("needs the opticsdetect:list privilege"),
        "{}",
        out.stdout
    );
    line_starting(&out.stdout, "token: ok");
    assert_eq!(
        line_starting(&out.stdout, "check failed"),
        "check failed: 2 of 3 sources failed (see above); nothing was written"
    );
    // The error line is the first failure's, as a poll would give it.
    assert!(out.error_line().contains("needs the threat:list privilege"));
    assert_eq!(
        env.fake.count("/detections/v2"),
        1,
        "the second source is tried"
    );
}

#[test]
fn check_with_rejected_credentials_tries_no_source() {
    let env = TestEnv::new();
    std::fs::write(env.secret_file(), "not-the-secret").unwrap();
    let out = env.run(&["check"]).expect(77);
    line_starting(&out.stdout, "configuration: ok");
    line_starting(
        &out.stdout,
        "token: FAILED: POST /auth/v2/token: credentials rejected",
    );
    line_starting(&out.stdout, "threats: not tried, no access token");
    line_starting(&out.stdout, "detections: not tried, no access token");
    assert_eq!(env.fake.count("/threats/v2"), 0);
}

#[test]
fn check_with_a_bad_setting_says_the_configuration_failed() {
    let env = TestEnv::new();
    let out = env.run(&["check", "--overlap", "ten minutes"]).expect(78);
    let line = line_starting(&out.stdout, "configuration: FAILED: ");
    assert!(
        line.contains("--overlap: 'ten minutes' is not a duration"),
        "{line}"
    );
    assert!(out.error_line().contains("--overlap: 'ten minutes'"));
    // Other commands keep standard output for their own data.
    let out = env.run(&["status", "--overlap", "ten minutes"]).expect(78);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn only_the_timer_run_says_it_will_try_again_next_run() {
    let env = TestEnv::new();
    let give_up = |command: &str| {
        for _ in 0..5 {
            env.fake.push_fault("/threats/v2", Fault::Html(503));
        }
        let out = env.run(&[command, "--sources", "threats"]).expect(75);
        out.error_line().to_string()
    };
    let poll = give_up("poll");
    assert!(
        poll.contains("gave up after 5 attempts; will try again next run"),
        "{poll}"
    );
    let check = give_up("check");
    assert!(check.contains("gave up after 5 attempts"), "{check}");
    assert!(!check.contains("next run"), "{check}");
}

#[test]
fn status_speaks_of_last_success_events_and_the_next_poll() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 4, 5));
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let out = env.run(&["status", "--overlap", "5m"]).expect(0);
    let threats_line = line_starting(&out.stdout, "threats: written from");
    assert!(
        threats_line.ends_with(", 4 events written"),
        "{}",
        out.stdout
    );
    let last = line_starting(&out.stdout, "  last success: ");
    assert!(
        last.ends_with("s ago)") && !last.contains("never"),
        "{}",
        out.stdout
    );
    // The next poll asks from the end of what is written less the overlap.
    let cursor: chrono::DateTime<chrono::Utc> = env.checkpoint()["sources"]["threats"]["cursor"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let from =
        (cursor - chrono::TimeDelta::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(
        line_starting(&out.stdout, "  next poll asks for: ")
            .starts_with(&format!("  next poll asks for: {from} to now (5m before")),
        "{}",
        out.stdout
    );
    // A configured source with nothing written yet says what its first poll asks.
    assert_eq!(
        line_starting(&out.stdout, "detections: "),
        "detections: nothing written yet; the first poll asks for the last 1d \
         (--initial-lookback)"
    );
    for internal in ["cursor", "keys kept", "at byte", "seen"] {
        assert!(!out.stdout.contains(internal), "{internal}: {}", out.stdout);
    }
    // A source written before but not fetched now is named as such.
    let out = env.run(&["status", "--sources", "detections"]).expect(0);
    line_starting(&out.stdout, "  next poll: not fetched (not in --sources)");
    // --json keeps every internal detail.
    let json: serde_json::Value =
        serde_json::from_str(&env.run(&["status", "--json"]).expect(0).stdout).unwrap();
    assert!(json["checkpoint"]["sources"]["threats"]["cursor"].is_string());
    assert!(json["checkpoint"]["sources"]["threats"]["seen"].is_array());
    assert!(json["checkpoint"]["output"]["size"].is_number());
}
