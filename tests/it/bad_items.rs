//! Items that cannot be placed: kept once in `rejected.jsonl`, never a
//! poison pill; reserved keys renamed; line separators escaped.

use crate::support::*;
use chrono::TimeDelta;
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;

fn rejected_path(env: &TestEnv) -> std::path::PathBuf {
    env.state_dir().join("rejected.jsonl")
}

fn rejected_lines(env: &TestEnv) -> Vec<Value> {
    read_lines(&rejected_path(env))
}

/// stderr lines that report a rejected item.
fn reject_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("an item was not written"))
        .collect()
}

/// The top-level key names of one JSON object text, in order, duplicates
/// included (a `Value` would keep only the last of two).
fn top_level_keys(line: &str) -> Vec<String> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(key);
            }
            Ok(keys)
        }
    }
    serde_json::Deserializer::from_str(line)
        .deserialize_map(Keys)
        .unwrap()
}

#[test]
fn each_bad_item_kind_is_rejected_once_and_everything_else_is_written() {
    let env = TestEnv::new();
    let at = threat_time(minutes_ago(2));
    env.fake.add_threats(threats(0, 5, 3));
    env.fake.add_detections(detections(0, 4, 3));
    // (server's sha256, bytes served, what the reason says)
    let bad_threats: Vec<(&str, String, &str)> = vec![
        ("B1", "[1,2]".into(), "not a JSON object"),
        (
            "B2",
            r#"{"sha256":"B2","name":"x"}"#.into(),
            "no last_found",
        ),
        (
            "B3",
            r#"{"sha256":"B3","last_found":null}"#.into(),
            "last_found is null",
        ),
        (
            "B4",
            r#"{"sha256":"B4","last_found":"yesterday"}"#.into(),
            "unreadable last_found \"yesterday\"",
        ),
        ("B5", format!(r#"{{"last_found":"{at}"}}"#), "no sha256"),
        (
            "B6",
            r#"{"sha256":"B6","last_found":"0001-01-01T00:00:00"}"#.into(),
            "is before 2000-01-01",
        ),
        (
            "B7",
            r#"{"sha256":"B7","last_found":"9999-12-31T00:00:00"}"#.into(),
            "more than a day after the run started",
        ),
        (
            "B8",
            r#"{"sha256":"B8","last_found":"1969-12-31T23:59:59"}"#.into(),
            "is before 2000-01-01",
        ),
        (
            "B9",
            format!(r#"{{"sha256":"B9","last_found":"{at}","name":"a","name":"b"}}"#),
            "duplicate key \"name\"",
        ),
    ];
    for (sha, raw, _) in &bad_threats {
        env.fake.add_raw_threat(sha, &at, raw.as_bytes());
    }
    let received = detection_time(minutes_ago(2));
    let no_id = format!(r#"{{"ReceivedTime":"{received}","Severity":"High"}}"#);
    env.fake
        .add_raw_detection("D-no-id", &received, no_id.as_bytes());

    let first = env.run(&["poll"]).expect(0);
    let lines = env.lines();
    assert_eq!(count_type(&lines, "threat"), 5, "{}", first.stderr);
    assert_eq!(count_type(&lines, "detection"), 4, "{}", first.stderr);
    assert_eq!(reject_warnings(&first.stderr).len(), 10, "{}", first.stderr);

    let rejected = rejected_lines(&env);
    assert_eq!(rejected.len(), 10);
    for (_, raw, reason) in &bad_threats {
        let item: Value = serde_json::from_str(raw).unwrap();
        let entry = rejected
            .iter()
            .find(|r| r["item"] == item)
            .unwrap_or_else(|| panic!("{raw} not in rejected.jsonl: {rejected:?}"));
        assert_eq!(entry["source"], "threats");
        assert_eq!(entry["page"], 1);
        let said = entry["reason"].as_str().unwrap();
        assert!(said.contains(reason), "{said:?} should say {reason:?}");
    }
    let detection = rejected
        .iter()
        .find(|r| r["source"] == "detections")
        .unwrap();
    assert_eq!(detection["reason"], "no Id");
    assert_eq!(detection["item"]["Severity"], "High");
    let mode = std::fs::metadata(rejected_path(&env))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The next poll's overlap shows them again: no warning, nothing appended.
    let before = std::fs::read(rejected_path(&env)).unwrap();
    let second = env.run(&["poll"]).expect(0);
    assert!(
        reject_warnings(&second.stderr).is_empty(),
        "{}",
        second.stderr
    );
    assert_eq!(std::fs::read(rejected_path(&env)).unwrap(), before);
    assert_eq!(env.lines().len(), 9);
}

#[test]
fn a_bad_threat_does_not_stop_the_detections() {
    let env = TestEnv::new();
    env.fake
        .add_raw_threat("B1", &threat_time(minutes_ago(2)), b"\"just a string\"");
    env.fake.add_detections(detections(0, 3, 3));
    env.run(&["poll"]).expect(0);
    assert_eq!(count_type(&env.lines(), "detection"), 3);
    assert_eq!(rejected_lines(&env).len(), 1);
}

#[test]
fn a_year_one_item_on_page_one_does_not_stop_paging() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 450, 5)); // 3 pages of 200
    // The newest by the server's clock, so on page 1 of the newest-first list.
    env.fake.add_raw_threat(
        "OLD",
        &threat_time(minutes_ago(1)),
        br#"{"sha256":"OLD","last_found":"0001-01-01T00:00:00"}"#,
    );
    env.run(&["poll", "--sources", "threats"]).expect(0);
    assert_eq!(count_type(&env.lines(), "threat"), 450);
    assert_eq!(env.fake.count("/threats/v2"), 3);
    assert_eq!(rejected_lines(&env).len(), 1);
}

#[test]
fn invalid_utf8_costs_the_bad_bytes_only_and_says_so_once() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 4, 3));
    let at = threat_time(minutes_ago(2));
    let mut raw = format!(r#"{{"sha256":"U1","last_found":"{at}","name":"a"#).into_bytes();
    raw.push(0xFF);
    raw.extend_from_slice(br#"b.exe"}"#);
    env.fake.add_raw_threat("U1", &at, &raw);
    let first = env.run(&["poll", "--sources", "threats"]).expect(0);
    let lines = env.lines();
    assert_eq!(lines.len(), 5);
    let line = lines.iter().find(|l| l["sha256"] == "U1").unwrap();
    assert_eq!(line["name"], "a\u{FFFD}b.exe");
    let warnings: Vec<_> = first
        .stderr
        .lines()
        .filter(|l| l.contains("not UTF-8"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", first.stderr);
    assert!(warnings[0].contains("threats page 1"), "{}", warnings[0]);
    // Seen again in the overlap, it is not written again, so not reported again.
    let second = env.run(&["poll", "--sources", "threats"]).expect(0);
    assert!(!second.stderr.contains("not UTF-8"), "{}", second.stderr);
    assert_eq!(env.lines().len(), 5);
}

#[test]
fn own_tenant_id_and_event_type_are_kept_under_api_names_never_twice() {
    let env = TestEnv::new();
    let at = threat_time(minutes_ago(2));
    let raw = format!(
        r#"{{"tenant_id":"someone-else","sha256":"R1","event_type":"login","last_found":"{at}"}}"#
    );
    env.fake.add_raw_threat("R1", &at, raw.as_bytes());
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let text = std::fs::read_to_string(env.output()).unwrap();
    let line = text.lines().next().unwrap();
    let keys = top_level_keys(line);
    assert_eq!(
        keys,
        [
            "event_type",
            "tenant_id",
            "api_tenant_id",
            "sha256",
            "api_event_type",
            "last_found",
            "devices"
        ]
    );
    let value: Value = serde_json::from_str(line).unwrap();
    assert_eq!(value["tenant_id"], env.creds.tenant_id.as_str());
    assert_eq!(value["event_type"], "threat");
    assert_eq!(value["api_tenant_id"], "someone-else");
    assert_eq!(value["api_event_type"], "login");
    // Read back on the next poll's overlap: recognised, not written again.
    env.run(&["poll", "--sources", "threats"]).expect(0);
    assert_eq!(env.lines().len(), 1);
}

#[test]
fn raw_line_separators_are_written_as_escapes_of_the_same_value() {
    let env = TestEnv::new();
    let mut item = threat(1, &threat_time(minutes_ago(2)));
    item["name"] = Value::from("a\u{2028}b\u{2029}c\u{0085}d.exe");
    env.fake.add_threats(vec![item.clone()]);
    env.run(&["poll", "--sources", "threats"]).expect(0);
    let bytes = std::fs::read(env.output()).unwrap();
    for raw in ["\u{2028}", "\u{2029}", "\u{0085}"] {
        assert!(
            !bytes.windows(raw.len()).any(|w| w == raw.as_bytes()),
            "raw {raw:?} in the output"
        );
    }
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains(r"a\u2028b\u2029c\u0085d.exe"), "{text}");
    assert_eq!(env.lines()[0]["name"], item["name"]);
}

#[test]
fn metrics_and_status_show_the_rejected_count_and_file() {
    let env = TestEnv::new();
    let metrics = env.dir.join("cylance.prom");
    let metrics_arg = metrics.display().to_string();
    let at = threat_time(minutes_ago(2));
    env.fake.add_raw_threat("B1", &at, b"[]");
    env.fake.add_threats(threats(0, 2, 3));
    env.run(&["poll", "--metrics-file", &metrics_arg]).expect(0);
    let tenant = &env.creds.tenant_id;
    let sample = |name: &str, source: &str, value: u64| {
        format!("cylance_logs_{name}{{tenant_id=\"{tenant}\",source=\"{source}\"}} {value}\n")
    };
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains(&sample("last_run_rejected", "threats", 1)),
        "{text}"
    );
    assert!(
        text.contains(&sample("last_run_rejected", "detections", 0)),
        "{text}"
    );
    assert!(
        text.contains(&sample("rejected_total", "threats", 1)),
        "{text}"
    );
    let status = env.run(&["status"]).expect(0).stdout;
    let shown = format!(
        "rejected: 1 item(s) not written (threats 1), kept in {}",
        rejected_path(&env).display()
    );
    assert!(status.contains(&shown), "{status}");

    // The next run meets it again without counting it again.
    env.fake.add_raw_threat(
        "B2",
        &threat_time(minutes_ago(1) + TimeDelta::seconds(30)),
        b"{}",
    );
    env.run(&["poll", "--metrics-file", &metrics_arg]).expect(0);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains(&sample("last_run_rejected", "threats", 1)),
        "{text}"
    );
    assert!(
        text.contains(&sample("rejected_total", "threats", 2)),
        "{text}"
    );
    let status = env.run(&["status", "--json"]).expect(0).stdout;
    let doc: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(doc["checkpoint"]["sources"]["threats"]["rejected_total"], 2);
    assert_eq!(
        doc["rejected_path"],
        rejected_path(&env).display().to_string()
    );
}

#[test]
fn a_symlink_in_place_of_rejected_jsonl_is_not_followed_and_nothing_is_lost() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let target = env.dir.join("elsewhere.txt");
    std::fs::write(&target, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&target, rejected_path(&env)).unwrap();
    env.fake
        .add_raw_threat("B1", &threat_time(minutes_ago(2)), b"[]");
    let refused = env.run(&["poll", "--sources", "threats"]).expect(74);
    assert!(
        refused.error_line().contains("rejected.jsonl"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    // The checkpoint came after the dead-letter file, so it did not record the
    // item as kept: once the link is gone, the item is kept and reported.
    std::fs::remove_file(rejected_path(&env)).unwrap();
    let next = env.run(&["poll", "--sources", "threats"]).expect(0);
    assert_eq!(reject_warnings(&next.stderr).len(), 1, "{}", next.stderr);
    assert_eq!(rejected_lines(&env).len(), 1);
}

#[test]
fn rejected_jsonl_is_synced_before_the_checkpoint_is_replaced() {
    let works = std::process::Command::new("strace")
        .args(["-o", "/dev/null", "true"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !works {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "strace is missing or cannot trace here, and CI=true"
        );
        eprintln!("note: strace is not usable here; the dead-letter sync order test is skipped");
        return;
    }
    let env = TestEnv::new();
    env.fake
        .add_raw_threat("B1", &threat_time(minutes_ago(2)), b"[]");
    let trace = env.dir.join("trace");
    let binary = env.command(&["poll", "--sources", "threats"]);
    let mut traced = std::process::Command::new("strace");
    traced
        .args([
            "-f",
            "-e",
            "trace=openat,close,fsync,fdatasync,rename,renameat,renameat2",
        ])
        .arg("-o")
        .arg(&trace)
        .arg(binary.get_program())
        .args(binary.get_args())
        .env_clear()
        .envs(binary.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let out = traced.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace = std::fs::read_to_string(&trace).unwrap();
    let calls: Vec<&str> = trace.lines().collect();
    let opened = calls
        .iter()
        .position(|c| c.contains("rejected.jsonl") && c.contains("O_NOFOLLOW"))
        .unwrap_or_else(|| panic!("rejected.jsonl not opened with O_NOFOLLOW:\n{trace}"));
    let fd = calls[opened].rsplit("= ").next().unwrap().trim();
    // Synced while still open: the fd number is reused once it is closed.
    let closed = calls[opened..]
        .iter()
        .position(|c| c.contains(&format!("close({fd})")))
        .map_or(calls.len(), |at| opened + at);
    let synced = calls[opened..closed]
        .iter()
        .position(|c| {
            c.contains(&format!("fsync({fd})")) || c.contains(&format!("fdatasync({fd})"))
        })
        .map(|at| opened + at)
        .unwrap_or_else(|| panic!("rejected.jsonl closed without a sync:\n{trace}"));
    let replaced = calls[opened..]
        .iter()
        .position(|c| c.contains("rename") && c.contains("checkpoint.json\""))
        .map(|at| opened + at)
        .unwrap_or_else(|| panic!("no checkpoint replaced after rejected.jsonl:\n{trace}"));
    assert!(synced < replaced, "{trace}");
}

/// One line of `rejected.jsonl` as text (an item with a number beyond an
/// f64 or deep nesting does not parse with serde_json): its reason, and the
/// item's bytes as kept.
fn rejected_reason_and_item(line: &str) -> (String, &str) {
    let (head, item) = line.split_once(",\"item\":").unwrap();
    let head: Value = serde_json::from_str(&format!("{head}}}")).unwrap();
    let item = item.strip_suffix('}').unwrap();
    (head["reason"].as_str().unwrap().to_string(), item)
}

#[test]
fn items_readers_would_refuse_are_repaired_or_rejected_never_written_as_they_came() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 4, 3));
    let at = threat_time(minutes_ago(2));
    let item =
        |sha: &str, rest: &str| format!(r#"{{"sha256":"{sha}","last_found":"{at}",{rest}}}"#);
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    // Written, with U+FFFD for each lone surrogate; a pair is kept.
    let surrogates = item(
        "S1",
        r#""name":"a\ud800b.exe","n\uDC00":{"deep":["\ud83d\ude00","\udbff"]}"#,
    );
    // Renamed as its own `event_type`, and repaired.
    let reserved = item("S2", r#""event_type":"\udfff""#);
    // Written as they came: readers accept them.
    let fine = [
        item("F1", r#""tiny":1e-999"#),
        item("F2", &format!(r#""x":{}"#, nested(126))),
    ];
    // (item, what its reason says)
    let refused = [
        (
            item("N1", r#""score":1e999"#),
            "a number beyond the range of an f64",
        ),
        (
            item("N2", r#""x":{"y":[-1e400]}"#),
            "a number beyond the range of an f64",
        ),
        (
            item("D1", &format!(r#""x":{}"#, nested(127))),
            "nested deeper than 127 arrays and objects",
        ),
        (
            item(r"K1\ud800", r#""name":"k""#),
            "sha256 holds a lone surrogate escape",
        ),
    ];
    env.fake.add_raw_threat("S1", &at, surrogates.as_bytes());
    env.fake.add_raw_threat("S2", &at, reserved.as_bytes());
    for (sha, raw) in ["F1", "F2"].iter().zip(&fine) {
        env.fake.add_raw_threat(sha, &at, raw.as_bytes());
    }
    for (sha, (raw, _)) in ["N1", "N2", "D1", "K1"].iter().zip(&refused) {
        env.fake.add_raw_threat(sha, &at, raw.as_bytes());
    }

    let first = env.run(&["poll", "--sources", "threats"]).expect(0);
    // Every line parses with serde_json (Vector's parse_json).
    let lines = env.lines();
    assert_eq!(count_type(&lines, "threat"), 8, "{}", first.stderr);
    let text = std::fs::read_to_string(env.output()).unwrap();
    let line = text.lines().find(|l| l.contains(r#""S1""#)).unwrap();
    assert!(
        line.contains(r#""name":"a\ufffdb.exe","n\ufffd":{"deep":["\ud83d\ude00","\ufffd"]}"#),
        "{line}"
    );
    let value = lines.iter().find(|l| l["sha256"] == "S1").unwrap();
    assert_eq!(value["name"], "a\u{FFFD}b.exe");
    assert_eq!(value["n\u{FFFD}"]["deep"][0], "\u{1F600}");
    let value = lines.iter().find(|l| l["sha256"] == "S2").unwrap();
    assert_eq!(value["api_event_type"], "\u{FFFD}");
    for raw in &fine {
        let own = &raw[1..raw.len() - 1];
        assert!(
            text.lines().any(|l| l.contains(own)),
            "{raw} not written as it came"
        );
    }
    let repaired: Vec<&str> = first
        .stderr
        .lines()
        .filter(|l| l.contains("lone surrogate escapes"))
        .collect();
    assert_eq!(repaired.len(), 1, "{}", first.stderr);
    assert!(
        repaired[0].contains("threats page 1: 2 item(s)") && repaired[0].contains("U+FFFD"),
        "{}",
        repaired[0]
    );

    let warnings = reject_warnings(&first.stderr);
    assert_eq!(warnings.len(), refused.len(), "{}", first.stderr);
    let kept = std::fs::read_to_string(rejected_path(&env)).unwrap();
    assert_eq!(kept.lines().count(), refused.len(), "{kept}");
    for (raw, reason) in &refused {
        let (said, _) = kept
            .lines()
            .map(rejected_reason_and_item)
            .find(|(_, item)| item == raw)
            .unwrap_or_else(|| panic!("{raw} not kept as it came in {kept}"));
        assert!(said.starts_with(reason), "{said:?} should say {reason:?}");
        assert!(
            warnings.iter().any(|w| w.contains(&format!("({said})"))),
            "{}",
            first.stderr
        );
    }

    // The next poll's overlap shows them all again: nothing written twice,
    // nothing kept or reported again.
    let second = env.run(&["poll", "--sources", "threats"]).expect(0);
    assert_eq!(std::fs::read_to_string(env.output()).unwrap(), text);
    assert_eq!(std::fs::read_to_string(rejected_path(&env)).unwrap(), kept);
    assert!(
        reject_warnings(&second.stderr).is_empty() && !second.stderr.contains("surrogate"),
        "{}",
        second.stderr
    );
}
