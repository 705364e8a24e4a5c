//! Lookups (`--enrich`): a threat line carries the devices of its sighting,
//! a detection line its details, each at the end of the line; what a lookup
//! costs; a gone object, a missing privilege, a transient failure, a hostile Id.

use crate::support::*;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde_json::{Value, json};

fn status(status: u16, body: &str) -> Fault {
    Fault::Status {
        status,
        body: body.into(),
        headers: vec![],
    }
}

/// A time as the tests read it, independently of the binary: RFC 3339, or
/// zone-less UTC with an optional fraction and `Z`.
fn instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// The sightings the fake serves for `sha256` whose `date_found` is `last_found`.
fn expected_devices(env: &TestEnv, sha256: &str, last_found: &str) -> Vec<Value> {
    let at = instant(last_found);
    env.fake
        .threat_devices(sha256)
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d["date_found"].as_str().and_then(instant) == at)
        .collect()
}

/// The raw output lines.
fn raw_lines(env: &TestEnv) -> Vec<String> {
    std::fs::read_to_string(env.output())
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The value of `key` when it is the LAST key of the line: what follows
/// `,"key":` up to the closing brace must be exactly one JSON value.
fn last_value(line: &str, key: &str) -> Value {
    let marker = format!(",\"{key}\":");
    let at = line
        .rfind(&marker)
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    let rest = line[at + marker.len()..]
        .strip_suffix('}')
        .unwrap_or_else(|| panic!("{line}"));
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("{key} is not the last key ({e}): {line}"))
}

fn threat_line<'a>(lines: &'a [String], sha256: &str, last_found: &str) -> &'a str {
    lines
        .iter()
        .find(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["sha256"] == sha256 && v["last_found"] == last_found
        })
        .unwrap_or_else(|| panic!("no line for {sha256} at {last_found}"))
}

#[test]
fn threat_lines_carry_the_devices_of_their_sighting_at_the_end() {
    let env = TestEnv::new();
    // The fake's own sightings: older ones on other devices, some threats
    // found twice at one time, a quarter spelled with `.000Z`.
    let found = threats(0, 12, 5);
    env.fake.add_threats(found.clone());
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let lines = raw_lines(&env);
    assert_eq!(lines.len(), 12);
    let (mut several, mut respelled, mut older_left_out) = (false, false, false);
    for threat in &found {
        let (sha, at) = (
            threat["sha256"].as_str().unwrap(),
            threat["last_found"].as_str().unwrap(),
        );
        let expected = expected_devices(&env, sha, at);
        let all = env.fake.threat_devices(sha).unwrap();
        assert_eq!(
            last_value(threat_line(&lines, sha, at), "devices"),
            Value::Array(expected.clone()),
            "{sha}"
        );
        several |= expected.len() > 1;
        respelled |= expected.iter().any(|d| d["date_found"] != at);
        older_left_out |= all.len() > expected.len();
    }
    // Not vacuous: the fake's variety is there.
    assert!(
        several && respelled && older_left_out,
        "{several} {respelled} {older_left_out}"
    );
}

#[test]
fn only_the_sighting_at_last_found_as_an_instant_and_a_refound_threat_carries_its_new_one() {
    let env = TestEnv::new();
    let when = minutes_ago(6);
    let at = threat_time(when);
    let item = threat(1, &at);
    let sha = item["sha256"].as_str().unwrap().to_owned();
    env.fake.add_threats(vec![item]);
    let second = |t: DateTime<Utc>| threat_time(t);
    let devices = vec![
        threat_device(1, &second(when - TimeDelta::hours(1)), "C:\\old.exe"),
        threat_device(2, &format!("{at}.000Z"), "C:\\a.exe"),
        threat_device(3, &second(when + TimeDelta::seconds(1)), "C:\\later.exe"),
        threat_device(4, &at, "C:\\b.exe"),
        threat_device(5, &format!("{at}.5"), "C:\\half.exe"),
    ];
    env.fake.set_threat_devices(&sha, devices.clone());
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let lines = raw_lines(&env);
    assert_eq!(
        last_value(threat_line(&lines, &sha, &at), "devices"),
        json!([devices[1], devices[3]]),
        "the two at that instant, in the API's order; not a second later or earlier"
    );

    let again = threat_time(minutes_ago(2));
    env.fake.refind_threat(&sha, &again);
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let lines = raw_lines(&env);
    assert_eq!(lines.len(), 2);
    let new_sighting = last_value(threat_line(&lines, &sha, &again), "devices");
    assert_eq!(
        new_sighting,
        Value::Array(expected_devices(&env, &sha, &again))
    );
    assert_eq!(new_sighting.as_array().unwrap().len(), 1, "{new_sighting}");
    assert_eq!(new_sighting[0]["date_found"], again.as_str());
}

/// One new threat with 450 sightings, 3 pages of 200: the two at its
/// `last_found` (devices 7 and 430) on pages 1 and 3, the others a day
/// older; the fake pretty-prints the page 2 answer. Its sha256 and devices.
fn threat_with_a_long_device_list(env: &TestEnv) -> (String, Vec<Value>) {
    let when = minutes_ago(4);
    let at = threat_time(when);
    let item = threat(2, &at);
    let sha = item["sha256"].as_str().unwrap().to_owned();
    env.fake.add_threats(vec![item]);
    let old = threat_time(when - TimeDelta::days(1));
    let devices: Vec<Value> = (0..450u64)
        .map(|i| {
            let found = if i == 7 || i == 430 { &at } else { &old };
            threat_device(i % 12, found, &format!("C:\\copy-{i}.exe"))
        })
        .collect();
    env.fake.set_threat_devices(&sha, devices.clone());
    (sha, devices)
}

#[test]
fn every_page_of_a_long_device_list_is_read_and_costs_one_request_each() {
    let env = TestEnv::new();
    let (sha, devices) = threat_with_a_long_device_list(&env);
    let out = env.run(&["poll", "--sources", "threats"]).expect(0);
    let lines = raw_lines(&env);
    assert_eq!(
        last_value(&lines[0], "devices"),
        json!([devices[7], devices[430]])
    );
    let path = format!("/threats/v2/{sha}/devices");
    assert_eq!(env.fake.count(&path), 3);
    assert!(
        out.stderr.contains("threats 1 new (1 pages, 3 lookups)"),
        "{}",
        out.stderr
    );
}

/// A device list from a server that ignores `page` is read no further than
/// page 2, numbered or not: 76 naming the lookup, and the threat's line is
/// not written without its devices; the next poll writes it once, whole.
#[test]
fn a_device_list_that_ignores_page_is_76_and_the_line_waits_for_the_next_poll() {
    // Numbered: page 1, then page 2 three times (retried as malformed);
    // unnumbered: pages 1 and 2, the repeat seen once both are in.
    for (fault, requests) in [(Fault::PageOne, 4), (Fault::PageOneUnnumbered, 2)] {
        let env = TestEnv::new();
        let (sha, devices) = threat_with_a_long_device_list(&env);
        let path = format!("/threats/v2/{sha}/devices");
        for _ in 0..requests {
            env.fake.push_fault(&path, fault.clone());
        }
        let out = env.run(&["poll", "--sources", "threats"]).expect(76);
        assert!(
            out.error_line().ends_with(&format!(
                "GET {path} page 2: the answer is page 1 (the server ignored the page parameter)"
            )),
            "{fault:?}: {}",
            out.stderr
        );
        assert_eq!(env.fake.count(&path), requests, "{fault:?}");
        assert_eq!(
            raw_lines(&env).len(),
            0,
            "{fault:?}: written without its devices"
        );
        env.run(&["poll", "--sources", "threats"]).expect(0);
        let lines = raw_lines(&env);
        assert_eq!(lines.len(), 1, "{fault:?}");
        assert_eq!(
            last_value(&lines[0], "devices"),
            json!([devices[7], devices[430]])
        );
    }
}

#[test]
fn detection_lines_carry_their_details_object_at_the_end() {
    let env = TestEnv::new();
    let found = detections(0, 6, 3);
    env.fake.add_detections(found.clone());
    env.run(&[
        "poll",
        "--sources",
        "detections",
        "--enrich",
        "detection-details",
    ])
    .expect(0);
    let lines = raw_lines(&env);
    assert_eq!(lines.len(), 6);
    for line in &lines {
        let value: Value = serde_json::from_str(line).unwrap();
        let id = value["Id"].as_str().unwrap();
        let details = env.fake.detection_details(id).unwrap();
        assert!(details.is_object());
        assert_eq!(last_value(line, "details"), details, "{id}");
        // Compact, also when the fake pretty-printed the answer (about half).
        let text = &line[line.rfind(",\"details\":").unwrap() + 11..line.len() - 1];
        assert_eq!(
            text.len(),
            serde_json::to_string(&details).unwrap().len(),
            "{line}"
        );
    }
}

#[test]
fn a_gone_object_gives_empty_devices_or_null_details_and_one_warning() {
    let env = TestEnv::new();
    let threat_item = threat(3, &threat_time(minutes_ago(3)));
    let sha = threat_item["sha256"].as_str().unwrap().to_owned();
    env.fake.add_threats(vec![threat_item]);
    let detection_item = detection(4, &detection_time(minutes_ago(3)));
    let id = detection_item["Id"].as_str().unwrap().to_owned();
    env.fake.add_detections(vec![detection_item]);
    let gone = r#"{"message":"Not found"}"#;
    env.fake
        .push_fault(&format!("/threats/v2/{sha}/devices"), status(404, gone));
    env.fake
        .push_fault(&format!("/detections/v2/{id}/details"), status(404, gone));
    let out = env
        .run(&["poll", "--enrich", "threat-devices,detection-details"])
        .expect(0);
    let lines = raw_lines(&env);
    assert_eq!(lines.len(), 2);
    let threat_line = lines.iter().find(|l| l.contains("\"threat\"")).unwrap();
    let detection_line = lines.iter().find(|l| l.contains("\"detection\"")).unwrap();
    assert_eq!(last_value(threat_line, "devices"), json!([]));
    assert_eq!(last_value(detection_line, "details"), Value::Null);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("is gone"))
        .collect();
    assert_eq!(warnings.len(), 2, "{}", out.stderr);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&sha) && w.contains("\"devices\":[]"))
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&id) && w.contains("\"details\":null"))
    );
}

#[test]
fn a_denied_lookup_exits_77_naming_its_privilege_and_writes_nothing_of_that_source() {
    for (privilege, source, enrich) in [
        ("threat:devicelist", "threats", "threat-devices"),
        ("opticsdetect:read", "detections", "detection-details"),
    ] {
        let env = TestEnv::new();
        env.fake.add_threats(threats(0, 3, 5));
        env.fake.add_detections(detections(0, 3, 5));
        env.fake.deny_privilege(privilege);
        let out = env
            .run(&["poll", "--sources", source, "--enrich", enrich])
            .expect(77);
        assert!(
            out.error_line()
                .contains(&format!("needs the {privilege} privilege")),
            "{}",
            out.stderr
        );
        assert!(
            env.lines().is_empty(),
            "{source}: a line without its lookup"
        );

        let check = env.run(&["check", "--enrich", enrich]).expect(77);
        assert!(
            check.stdout.lines().any(|l| l
                .starts_with(&format!("{enrich} lookup (needs {privilege}): FAILED"))
                && l.contains(&format!("needs the {privilege} privilege"))),
            "{}",
            check.stdout
        );
        assert!(check.error_line().contains(privilege), "{}", check.stderr);
    }
}

#[test]
fn check_tries_each_lookup_once_or_says_why_not() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 5));
    let out = env
        .run(&["check", "--enrich", "threat-devices,detection-details"])
        .expect(0);
    assert!(
        out.stdout
            .contains("threat-devices lookup (needs threat:devicelist): ok"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "detection-details lookup (needs opticsdetect:read): not tried: no item to look up"
        ),
        "{}",
        out.stdout
    );
    let lookups = env
        .fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/devices"))
        .count();
    assert_eq!(lookups, 1);
}

/// The devices lookup of threat `sha` fails past the retry budget (five
/// 503s), once.
fn devices_lookup_fails(env: &TestEnv, sha: &str) {
    for _ in 0..5 {
        env.fake.push_fault(
            &format!("/threats/v2/{sha}/devices"),
            status(503, "<html>busy</html>"),
        );
    }
}

/// 300 threats, page 1 (200) and page 2 (100), newest first; the lookup of
/// the 51st on page 2 fails past the retry budget once. The threats.
fn threats_whose_lookup_fails_on_page_2(env: &TestEnv) -> Vec<Value> {
    let found = threats(0, 300, 5);
    env.fake.add_threats(found.clone());
    devices_lookup_fails(env, found[250]["sha256"].as_str().unwrap());
    found
}

#[test]
fn a_lookup_failing_past_the_retry_budget_exits_75_and_the_next_run_writes_that_page_once() {
    let env = TestEnv::new();
    let found = threats_whose_lookup_fails_on_page_2(&env);
    let out = env.run(&["poll", "--sources", "threats"]).expect(75);
    assert!(
        out.error_line().contains("gave up after 5 attempts"),
        "{}",
        out.stderr
    );
    // Page 1 and the groups of page 2 looked up before the failing lookup's
    // group are written; nothing from that group on.
    let written = env.lines();
    assert!(
        (201..250).contains(&written.len()),
        "{} lines",
        written.len()
    );
    let page_2: Vec<&str> = found[200..]
        .iter()
        .map(|t| t["sha256"].as_str().unwrap())
        .collect();
    let of_page_2: Vec<&str> = written[200..]
        .iter()
        .map(|l| l["sha256"].as_str().unwrap())
        .collect();
    assert_eq!(
        of_page_2,
        page_2[..of_page_2.len()],
        "in order, from its start"
    );
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let lines = env.lines();
    assert_each_once(&lines);
    assert_eq!(lines.len(), 300);
    let raw = raw_lines(&env);
    for threat in &found {
        let (sha, at) = (
            threat["sha256"].as_str().unwrap(),
            threat["last_found"].as_str().unwrap(),
        );
        assert_eq!(
            last_value(threat_line(&raw, sha, at), "devices"),
            Value::Array(expected_devices(&env, sha, at))
        );
    }
}

/// A lookup failing in a later group of a page leaves that page's first
/// groups appended and their keys committed, so no later run writes or
/// counts them: this run's summary and `events_written` must count them, or
/// the file holds more events than the operator is told, for good.
#[test]
fn a_run_stopped_amid_a_page_counts_the_lines_it_appended() {
    let env = TestEnv::new();
    threats_whose_lookup_fails_on_page_2(&env);
    let out = env.run(&["poll", "--sources", "threats"]).expect(75);
    let written = env.lines().len();
    assert!((201..250).contains(&written), "{written} lines");
    assert!(
        out.stderr
            .contains(&format!("poll stopped: threats {written} new (")),
        "{}",
        out.stderr
    );
    assert_eq!(
        env.checkpoint()["sources"]["threats"]["events_written"],
        written
    );
    let out = env.run(&["poll", "--sources", "threats"]).expect(0);
    assert!(
        out.stderr
            .contains(&format!("poll done: threats {} new (", 300 - written)),
        "{}",
        out.stderr
    );
    assert_eq!(env.lines().len(), 300);
    assert_eq!(
        env.checkpoint()["sources"]["threats"]["events_written"],
        300
    );
}

/// An item repaired on its way out (a lone surrogate escape written as
/// `\ufffd`) is reported by the run that writes it, also when a lookup
/// fails in a later group of its page: the next run skips it as written, so
/// it would never be reported.
#[test]
fn a_repaired_item_is_reported_when_a_later_group_of_its_page_fails() {
    let env = TestEnv::new();
    let found = threats(0, 20, 3);
    env.fake.add_threats(found.clone());
    let at = threat_time(minutes_ago(1));
    let repaired = format!(r#"{{"sha256":"S1","last_found":"{at}","name":"a\ud800b.exe"}}"#);
    // The newest, so in the page's first group.
    env.fake.add_raw_threat("S1", &at, repaired.as_bytes());
    // The oldest, so in the page's last group.
    devices_lookup_fails(&env, found[19]["sha256"].as_str().unwrap());
    let out = env.run(&["poll", "--sources", "threats"]).expect(75);
    let lines = env.lines();
    assert!(lines.iter().any(|l| l["sha256"] == "S1"), "{}", out.stderr);
    assert!(lines.len() < 21, "{} lines", lines.len());
    assert!(
        out.stderr
            .contains("threats page 1: 1 item(s) held lone surrogate escapes"),
        "{}",
        out.stderr
    );
}

/// Lookup requests: paths below a list (`/threats/v2/x/devices`, ...).
fn lookup_requests(env: &TestEnv, since: usize) -> usize {
    env.fake.requests()[since..]
        .iter()
        .filter(|r| r.path.ends_with("/devices") || r.path.ends_with("/details"))
        .count()
}

#[test]
fn request_counts_idle_none_busy_one_per_new_line_plus_further_pages_none_without_enrich() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 4, 30));
    env.run(&["poll"]).expect(0);
    // Idle: the token and one page per source (three by default), no lookup.
    let before = env.fake.requests().len();
    env.run(&["poll"]).expect(0);
    assert_eq!(env.fake.requests().len() - before, 4);
    assert_eq!(lookup_requests(&env, before), 0);

    // Busy: 5 new threats, one of them with a 3-page device list: 5 + 2.
    let new = threats(100, 5, 1);
    let long = new[0]["sha256"].as_str().unwrap();
    let old = threat_time(minutes_ago(60 * 24));
    env.fake.add_threats(new.clone());
    env.fake.add_threat_devices(
        long,
        (0..420)
            .map(|i| threat_device(i % 12, &old, "C:\\x.exe"))
            .collect(),
    );
    let before = env.fake.requests().len();
    let out = env.run(&["poll"]).expect(0);
    assert_eq!(lookup_requests(&env, before), 7);
    assert_eq!(env.fake.requests().len() - before, 4 + 7);
    assert!(
        out.stderr.contains("threats 5 new (1 pages, 7 lookups)"),
        "{}",
        out.stderr
    );

    // --enrich none: no lookup, and no devices key.
    env.fake.add_threats(threats(200, 5, 0));
    let before = env.fake.requests().len();
    env.run(&["poll", "--enrich", "none"]).expect(0);
    assert_eq!(env.fake.requests().len() - before, 4);
    assert_eq!(lookup_requests(&env, before), 0);
    let lines = env.lines();
    assert_eq!(lines.len(), 14);
    assert_eq!(
        lines.iter().filter(|l| l.get("devices").is_none()).count(),
        5
    );
}

#[test]
fn a_hostile_id_stays_one_encoded_path_segment() {
    let env = TestEnv::new();
    let at = detection_time(minutes_ago(2));
    let id = "x/../../threats/v2?page=1";
    let raw = json!({"Id": id, "ReceivedTime": at}).to_string();
    env.fake.add_raw_detection(id, &at, raw.as_bytes());
    let out = env
        .run(&[
            "poll",
            "--sources",
            "detections",
            "--enrich",
            "detection-details",
        ])
        .expect(0);
    let looked_up: Vec<String> = env
        .fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/details"))
        .map(|r| format!("{} {:?}", r.path, r.query))
        .collect();
    assert_eq!(
        looked_up,
        ["/detections/v2/x%2F..%2F..%2Fthreats%2Fv2%3Fpage%3D1/details []"]
    );
    // The fake knows no such Id: a 404, the line written with null details.
    assert_eq!(last_value(&raw_lines(&env)[0], "details"), Value::Null);
    assert!(out.stderr.contains("is gone"), "{}", out.stderr);
}

#[test]
fn an_items_own_devices_and_details_keys_are_kept_under_api_names() {
    let env = TestEnv::new();
    let at = threat_time(minutes_ago(2));
    let raw = format!(
        r#"{{"sha256":"R2","devices":["theirs"],"details":{{"a":1}},"last_found":"{at}"}}"#
    );
    env.fake.add_raw_threat("R2", &at, raw.as_bytes());
    env.fake
        .set_threat_devices("R2", vec![threat_device(1, &at, "C:\\r.exe")]);
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let line = &raw_lines(&env)[0];
    let value: Value = serde_json::from_str(line).unwrap();
    assert_eq!(value["api_devices"], json!(["theirs"]));
    assert_eq!(value["api_details"], json!({"a": 1}));
    assert_eq!(
        last_value(line, "devices"),
        json!([threat_device(1, &at, "C:\\r.exe")])
    );
    assert_eq!(line.matches("\"devices\":").count(), 1, "{line}");
}

#[test]
fn a_pages_lookups_run_up_to_concurrency_at_once() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 12, 5));
    env.fake.set_delay(std::time::Duration::from_millis(40));
    env.run(&["poll", "--sources", "threats", "--concurrency", "3"])
        .expect(0);
    // One list page, then 12 lookups: only they can overlap.
    assert_eq!(env.fake.max_concurrent(), 3);
    assert_eq!(env.lines().len(), 12);
}

#[test]
fn list_pages_and_lookups_share_concurrency() {
    let env = TestEnv::new();
    // 5 pages: while page 3's lookups run, the pager fetches page 4 (and
    // so on): without shared slots, 2 lookups and a page are in flight.
    env.fake.add_threats(threats(0, 900, 5));
    env.fake.set_delay(std::time::Duration::from_millis(5));
    env.run(&["poll", "--sources", "threats", "--concurrency", "2"])
        .expect(0);
    assert_eq!(env.fake.max_concurrent(), 2);
    assert_eq!(env.lines().len(), 900);
}

/// The README's cost figures: N new threats polled as deployed (default
/// `--max-rps` 10, `--concurrency` 4). Run by hand:
/// `cargo test --release --test it lookups::lookup_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement (seconds at the default --max-rps), not a check"]
fn lookup_cost_at_the_default_max_rps() {
    for n in [0u64, 10, 50, 200] {
        for enrich in ["threat-devices", "none"] {
            let env = TestEnv::new();
            env.fake.add_threats(threats(0, n, 5));
            let started = std::time::Instant::now();
            let out = env
                .deployed_command(&[], &["poll", "--enrich", enrich])
                .output()
                .unwrap();
            assert!(out.status.success());
            println!(
                "{n} new threats, --enrich {enrich}: {} requests ({} lookups), {:.2}s",
                env.fake.requests().len(),
                lookup_requests(&env, 0),
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// A lookup's answer is checked like an item, counted from the line's own
/// object: a device item or details that strict readers (Vector's
/// parse_json) would refuse never make the line unreadable. A lone
/// surrogate becomes `\ufffd`; a number beyond an f64 or nesting too deep
/// inside the line leaves that device out, or the details `null`; one
/// warning each, exit 0.
#[test]
fn a_lookup_answer_readers_would_refuse_is_repaired_or_left_out() {
    let env = TestEnv::new();
    let last_found = threat_time(minutes_ago(3));
    let threat_item = threat(3, &last_found);
    let sha = threat_item["sha256"].as_str().unwrap().to_owned();
    env.fake.add_threats(vec![threat_item]);
    let detection_items = [
        detection(4, &detection_time(minutes_ago(3))),
        detection(5, &detection_time(minutes_ago(2))),
    ];
    let ids: Vec<String> = detection_items
        .iter()
        .map(|d| d["Id"].as_str().unwrap().to_owned())
        .collect();
    env.fake.add_detections(detection_items.to_vec());
    // A device of 125 levels of its own (its object and 124 arrays) fits in
    // the line's 127 (the line and `devices` above it); 126 do not.
    let arrays = |count: usize| format!("{}1{}", "[".repeat(count), "]".repeat(count));
    let device = |id: &str, extra: &str| {
        format!(r#"{{"id":"{id}","date_found":"{last_found}","name":"WS-1"{extra}}}"#)
    };
    let devices = format!(
        r#"{{"page_number": 1, "page_size": 200, "total_pages": 1, "total_number_of_items": 5,
            "page_items": [{}, {}, {}, {}, {}]}}"#,
        device("good", ""),
        device("surrogate", r#","user":"a\ud800b""#),
        device("huge", r#","score":1e999"#),
        device("deep-fits", &format!(r#","n":{}"#, arrays(124))),
        device("deep", &format!(r#","n":{}"#, arrays(125))),
    );
    env.fake
        .push_fault(&format!("/threats/v2/{sha}/devices"), status(200, &devices));
    env.fake.push_fault(
        &format!("/detections/v2/{}/details", ids[0]),
        status(
            200,
            r#"{"Id": "x", "Note": "\udc00 alone", "Pair": "\ud83d\ude00"}"#,
        ),
    );
    env.fake.push_fault(
        &format!("/detections/v2/{}/details", ids[1]),
        status(200, r#"{"Id": "y", "Score": -1e400}"#),
    );
    let out = env
        .run(&["poll", "--enrich", "threat-devices,detection-details"])
        .expect(0);
    let lines = raw_lines(&env);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let threat_line = threat_line(&lines, &sha, &last_found);
    let ids_written: Vec<Value> = last_value(threat_line, "devices")
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].clone())
        .collect();
    assert_eq!(
        ids_written,
        [json!("good"), json!("surrogate"), json!("deep-fits")]
    );
    assert!(
        threat_line.contains(r#""user":"a\ufffdb""#),
        "{threat_line}"
    );
    let detail = |id: &str| {
        let line = lines.iter().find(|l| l.contains(id)).unwrap();
        last_value(line, "details")
    };
    assert_eq!(
        detail(&ids[0]),
        json!({"Id": "x", "Note": "\u{fffd} alone", "Pair": "\u{1f600}"})
    );
    assert_eq!(detail(&ids[1]), Value::Null);
    let warned = |what: &str| out.stderr.lines().filter(|l| l.contains(what)).count();
    // One warning for the two devices left out, with the first one's reason.
    assert_eq!(warned("2 device(s) of threat"), 1, "{}", out.stderr);
    assert_eq!(
        warned("left out of its \"devices\" (the first: a number beyond the range of an f64"),
        1,
        "{}",
        out.stderr
    );
    assert_eq!(
        warned("a number beyond the range of an f64"),
        2,
        "{}",
        out.stderr
    );
    assert_eq!(warned("1 device(s) of threat"), 1, "{}", out.stderr);
    assert_eq!(warned("lone surrogate escapes"), 2, "{}", out.stderr);
    assert_eq!(warned("\"details\":null"), 1, "{}", out.stderr);
}

/// A device list full of devices readers would refuse costs one warning per
/// kind and threat, not one per device: a hostile or broken server cannot
/// flood the journal with a line per device (200 a page).
#[test]
fn devices_repaired_or_left_out_are_counted_in_one_warning_per_threat() {
    let env = TestEnv::new();
    let last_found = threat_time(minutes_ago(3));
    let threat_item = threat(3, &last_found);
    let sha = threat_item["sha256"].as_str().unwrap().to_owned();
    env.fake.add_threats(vec![threat_item]);
    let devices: Vec<String> = (0..150)
        .map(|i| {
            let extra = if i % 3 == 0 {
                r#""user":"a\ud800b""#
            } else {
                r#""score":1e999"#
            };
            format!(r#"{{"id":"d{i}","date_found":"{last_found}",{extra}}}"#)
        })
        .collect();
    let body = format!(
        r#"{{"page_number":1,"page_size":200,"total_pages":1,"total_number_of_items":150,"page_items":[{}]}}"#,
        devices.join(",")
    );
    env.fake
        .push_fault(&format!("/threats/v2/{sha}/devices"), status(200, &body));
    let out = env.run(&["poll", "--enrich", "threat-devices"]).expect(0);
    let lines = raw_lines(&env);
    let line = threat_line(&lines, &sha, &last_found);
    assert_eq!(last_value(line, "devices").as_array().unwrap().len(), 50);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("device(s) of threat"))
        .collect();
    assert_eq!(warnings.len(), 2, "{}", out.stderr);
    assert!(
        warnings[0].contains("50 device(s)") && warnings[0].contains("lone surrogate"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[1].contains("100 device(s)") && warnings[1].contains("left out"),
        "{}",
        warnings[1]
    );
}

/// However many pages a threat's device list has, its `devices` stays within
/// one answer's 16 MiB, the bound the SIEM recipes' line limits rely on:
/// the devices past it are left out, with one warning.
#[test]
fn devices_past_one_answers_size_are_left_out_with_one_warning() {
    // 400 sightings at the line's time, 50 KB each: two pages of 10 MB.
    devices_past_one_answers_size(&"x".repeat(50_000), 400);
}

/// The bound holds for `devices` as written: U+0085 (2 bytes in the answer)
/// is `\u0085` (6 bytes) in the line, so fewer devices fit.
#[test]
fn devices_are_measured_as_written_with_their_escapes() {
    devices_past_one_answers_size(&"\u{85}".repeat(25_000), 200);
}

fn devices_past_one_answers_size(padding: &str, sightings: usize) {
    let env = TestEnv::new();
    let last_found = threat_time(minutes_ago(3));
    let threat_item = threat(7, &last_found);
    let sha = threat_item["sha256"].as_str().unwrap().to_owned();
    env.fake.add_threats(vec![threat_item]);
    let devices: Vec<Value> = (0..sightings)
        .map(|i| json!({"id": format!("d{i}"), "date_found": last_found, "pad": padding}))
        .collect();
    env.fake.set_threat_devices(&sha, devices);
    let out = env.run(&["poll", "--sources", "threats"]).expect(0);
    let lines = raw_lines(&env);
    let line = threat_line(&lines, &sha, &last_found);
    let written = last_value(line, "devices");
    let written = written.as_array().unwrap();
    let text = &line[line.rfind(",\"devices\":").unwrap() + 11..line.len() - 1];
    assert!(text.len() <= 16 << 20, "{} bytes", text.len());
    // As many as fit, in the API's order.
    let fit = (16 << 20) / (text.len() / written.len());
    assert!(
        written.len() + 2 >= fit && written.len() < sightings,
        "{}",
        written.len()
    );
    assert_eq!(written[0]["id"], "d0");
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("left out"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(
        warnings[0].contains(&format!("{} device(s)", sightings - written.len()))
            && warnings[0].contains("\"devices\" would be longer than 16 MiB"),
        "{}",
        warnings[0]
    );
}
