//! Found by attacking the tool: each test reproduces a defect first.

use crate::support::*;

/// A string holding a raw tab or NUL is invalid JSON, and serde refuses the
/// whole page for it: one such item made every poll exit 76 and kept the
/// page's good items (and the cursor) back forever.
#[test]
fn raw_control_characters_in_one_item_do_not_cost_the_page() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 3));
    let at = threat_time(minutes_ago(2));
    let raw = format!("{{\"sha256\":\"C1\",\"last_found\":\"{at}\",\"name\":\"a\tb\u{0}c\"}}");
    env.fake.add_raw_threat("C1", &at, raw.as_bytes());
    let out = env.run(&["poll", "--sources", "threats"]).expect(0);
    let lines = env.lines();
    assert_eq!(lines.len(), 4, "{}", out.stderr);
    let line = lines.iter().find(|l| l["sha256"] == "C1").unwrap();
    assert_eq!(line["name"], "a\tb\u{0}c");
    let text = std::fs::read_to_string(env.output()).unwrap();
    assert!(text.contains(r#""a\u0009b\u0000c""#), "{text}");
    assert!(
        out.stderr
            .contains("threats/v2 page 1: the answer held 2 raw control character(s)"),
        "{}",
        out.stderr
    );
    env.run(&["poll", "--sources", "threats"]).expect(0);
    assert_eq!(env.lines().len(), 4);
}
