//! `poll`: windows, paging, dedupe across runs, the output contract.

use crate::support::*;
use chrono::TimeDelta;

#[test]
fn first_poll_writes_every_page_of_both_sources_once() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 450, 5)); // 3 pages of 200
    env.fake.add_detections(detections(0, 250, 5)); // 3 pages of 100
    env.run(&["poll"]).expect(0);
    let lines = env.lines();
    assert_eq!(count_type(&lines, "threat"), 450);
    assert_eq!(count_type(&lines, "detection"), 250);
    assert_each_once(&lines);
    assert_eq!(env.fake.count("/threats/v2"), 3);
    assert_eq!(env.fake.count("/detections/v2"), 3);
}

#[test]
fn each_line_is_the_api_item_with_event_type_and_tenant_id_in_front() {
    let env = TestEnv::new();
    let item = threat(7, &threat_time(minutes_ago(3)));
    env.fake.add_threats(vec![item.clone()]);
    env.run(&["poll", "--sources", "threats", "--enrich", "none"])
        .expect(0);
    let text = std::fs::read_to_string(env.output()).unwrap();
    let prefix = format!(
        "{{\"event_type\":\"threat\",\"tenant_id\":\"{}\",",
        env.creds.tenant_id
    );
    assert!(text.starts_with(&prefix), "{text}");
    let mut line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    let fields = line.as_object_mut().unwrap();
    fields.remove("event_type");
    fields.remove("tenant_id");
    assert_eq!(
        line, item,
        "every API field kept as it came, nothing else added"
    );
}

#[test]
fn idle_poll_makes_one_token_request_and_one_list_request_per_source() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 30));
    env.fake.add_detections(detections(0, 3, 30));
    env.fake
        .add_memory_protection(memory_protection_events(0, 3, 30));
    env.run(&["poll"]).expect(0);
    let before = env.fake.requests().len();
    env.run(&["poll"]).expect(0);
    let requests = env.fake.requests();
    let idle: Vec<&str> = requests[before..].iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        idle,
        [
            "/auth/v2/token",
            "/threats/v2",
            "/detections/v2",
            "/memoryprotection/v2"
        ]
    );
    assert_eq!(env.lines().len(), 9);
}

#[test]
fn one_token_serves_every_page_of_a_run() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 1000, 5));
    env.run(&["poll"]).expect(0);
    assert_eq!(env.fake.count("/auth/v2/token"), 1);
    let lists: Vec<_> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path != "/auth/v2/token")
        .collect();
    assert!(lists.len() >= 6);
    let first = lists[0].authorization.clone().unwrap();
    assert!(first.starts_with("Bearer "));
    assert!(
        lists
            .iter()
            .all(|r| r.authorization.as_ref() == Some(&first))
    );
    assert!(
        lists
            .iter()
            .all(|r| r.accept.as_deref() == Some("application/json"))
    );
}

#[test]
fn incremental_poll_writes_only_what_is_new() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 10, 20));
    env.fake.add_detections(detections(0, 10, 20));
    env.run(&["poll"]).expect(0);
    env.fake.add_threats(threats(100, 4, 0));
    env.fake.add_detections(detections(100, 5, 0));
    env.run(&["poll"]).expect(0);
    let lines = env.lines();
    assert_eq!(count_type(&lines, "threat"), 14);
    assert_eq!(count_type(&lines, "detection"), 15);
    assert_each_once(&lines);
}

#[test]
fn window_is_frozen_for_every_page_and_padded_beyond_the_kept_window() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 500, 5));
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let mut pages: Vec<_> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/threats/v2")
        .collect();
    // Pages 2 and 3 are fetched at once and may arrive in either order.
    pages.sort_by_key(|r| r.param("page").map(str::to_string));
    assert_eq!(pages.len(), 3);
    let end = pages[0].param("end_time").unwrap().to_string();
    let start = pages[0].param("start_time").unwrap().to_string();
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page.param("page"), Some((i + 1).to_string().as_str()));
        assert_eq!(page.param("page_size"), Some("200"));
        assert_eq!(page.param("end_time"), Some(end.as_str()));
        assert_eq!(page.param("start_time"), Some(start.as_str()));
    }
    // The end asked for lies beyond the run's start: the server may count
    // bounds differently and its clock is not ours.
    let asked_end = chrono::NaiveDateTime::parse_from_str(&end, "%Y-%m-%dT%H:%M:%S")
        .unwrap()
        .and_utc();
    assert!(asked_end > chrono::Utc::now());
}

#[test]
fn refound_threat_is_written_again_with_its_new_last_found() {
    let env = TestEnv::new();
    let first_seen = threat_time(minutes_ago(30));
    env.fake.add_threats(vec![threat(1, &first_seen)]);
    env.run(&["poll"]).expect(0);
    let sha = env.lines()[0]["sha256"].as_str().unwrap().to_string();
    let again = threat_time(minutes_ago(0) - TimeDelta::seconds(2));
    env.fake.refind_threat(&sha, &again);
    env.run(&["poll"]).expect(0);
    env.run(&["poll"]).expect(0);
    let found: Vec<String> = env
        .lines()
        .iter()
        .map(|l| l["last_found"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(found, [first_seen, again]);
}

#[test]
fn late_arrival_inside_the_overlap_is_written_once_and_others_not_again() {
    let env = TestEnv::new();
    env.fake.add_detections(detections(0, 5, 2));
    env.run(&["poll", "--sources", "detections"]).expect(0);
    // Received 3 minutes ago but visible only now: inside the 10m overlap.
    env.fake
        .add_detections(vec![detection(50, &detection_time(minutes_ago(3)))]);
    env.run(&["poll", "--sources", "detections"]).expect(0);
    let lines = env.lines();
    assert_eq!(lines.len(), 6);
    assert_each_once(&lines);
    assert_eq!(
        lines[5]["Id"],
        detection(50, "2024-01-01T00:00:00.000Z")["Id"]
    );
}

#[test]
fn server_ignoring_time_filters_is_filtered_on_the_client() {
    let env = TestEnv::new();
    env.fake.set_honour_time_filters(false);
    env.fake.add_threats(threats(0, 5, 5));
    env.fake.add_threats(threats(100, 5, 60 * 30)); // 30 h ago: outside the 24h lookback
    env.fake.add_detections(detections(0, 5, 5));
    env.fake.add_detections(detections(100, 5, 60 * 30));
    env.run(&["poll"]).expect(0);
    let lines = env.lines();
    assert_eq!(count_type(&lines, "threat"), 5);
    assert_eq!(count_type(&lines, "detection"), 5);
    // The second poll sees everything again from the server and writes nothing.
    env.run(&["poll"]).expect(0);
    assert_eq!(env.lines().len(), 10);
}

#[test]
fn newest_first_threats_stop_at_the_first_page_older_than_the_window() {
    let env = TestEnv::new();
    env.fake.set_honour_time_filters(false);
    env.fake.add_threats(threats(0, 10_000, 60 * 48)); // two days old, 50 pages
    env.run(&["poll", "--sources", "threats", "--initial-lookback", "1h"])
        .expect(0);
    env.fake.add_threats(threats(20_000, 5, 0));
    let before = env.fake.count("/threats/v2");
    env.run(&["poll", "--sources", "threats"]).expect(0);
    assert_eq!(
        env.fake.count("/threats/v2") - before,
        1,
        "one page, not fifty"
    );
    assert_eq!(env.lines().len(), 5);
}

#[test]
fn newest_first_threats_stop_at_a_later_page_older_than_the_window() {
    let env = TestEnv::new();
    env.fake.set_honour_time_filters(false);
    env.fake.add_threats(threats(0, 9_000, 60 * 48)); // two days old
    env.fake.add_threats(threats(20_000, 300, 0)); // page 1 and half of page 2
    env.run(&[
        "poll",
        "--sources",
        "threats",
        "--initial-lookback",
        "1h",
        "--concurrency",
        "1",
    ])
    .expect(0);
    assert_eq!(
        env.fake.count("/threats/v2"),
        2,
        "two pages, not all forty-seven"
    );
    assert_eq!(env.lines().len(), 300);
}

#[test]
fn events_before_the_initial_lookback_are_not_fetched_by_the_first_poll() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 60 * 3)); // 3 h ago
    env.fake.add_threats(threats(10, 2, 10));
    env.run(&["poll", "--sources", "threats", "--initial-lookback", "2h"])
        .expect(0);
    assert_eq!(env.lines().len(), 2);
}

#[test]
fn output_dash_writes_lines_to_stdout_and_diagnostics_to_stderr() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 2, 5));
    let out = env
        .run(&["poll", "--sources", "threats", "--output", "-"])
        .expect(0);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        out.stderr.contains("poll done: threats 2 new"),
        "{}",
        out.stderr
    );
}

#[test]
fn summary_line_counts_events_pages_and_requests() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 201, 5));
    let out = env.run(&["poll"]).expect(0);
    assert!(
        out.stderr
            .contains("poll done: threats 201 new (2 pages, 201 lookups), detections 0 new (1 pages), memory-protection 0 new (1 pages); 206 requests, 0 retries, 0 rate-limited"),
        "{}",
        out.stderr
    );
}

#[test]
fn checkpoint_keeps_only_keys_inside_the_overlap() {
    let env = TestEnv::new();
    env.fake.add_detections(detections(0, 300, 60)); // an hour ago: outside the overlap
    env.fake.add_detections(detections(1000, 4, 1));
    env.run(&["poll", "--sources", "detections"]).expect(0);
    let checkpoint = env.checkpoint();
    let state = &checkpoint["sources"]["detections"];
    assert_eq!(state["events_written"], 304);
    assert_eq!(state["seen"].as_array().unwrap().len(), 4);
}
