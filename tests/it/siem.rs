//! Shipping to a SIEM: the Graylog rules (`docs/graylog/`), `docs/filebeat.yml`
//! and `docs/vector.toml`, checked against real output lines, since no Graylog,
//! Filebeat or Vector runs here.
//!
//! The lines come from one poll of each of two tenants into one file, seeded
//! with every time shape the API is known to send (threat `last_found` whole,
//! with a fraction and with `Z`; detection `ReceivedTime` with milliseconds and
//! `Z`). Each doc is cut into sections, each limited to one event type where the
//! doc says so (a rule's `when`, a processor's `when.equals`, a VRL `if`): every
//! field a section names must be on every real line of that type; every date
//! pattern must parse every real time, through a chrono twin paired in a table
//! with the pattern's exact text in the doc; routing must compare against the
//! values real lines carry; and the shippers must tail the file the units write.

use crate::support::*;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

const GRAYLOG: &str = "docs/graylog/*.rule";
const FILEBEAT: &str = "docs/filebeat.yml";
const VECTOR: &str = "docs/vector.toml";
const EVENT_TYPES: [&str; 2] = ["threat", "detection"];

/// A date pattern in a doc: the exact texts that make it up there (all in one
/// section limited to `event_type`), and the chrono format that accepts what
/// the pattern accepts. Change a doc's pattern and this table together.
struct Pattern {
    doc: &'static str,
    event_type: &'static str,
    field: &'static str,
    texts: &'static [&'static str],
    chrono: &'static str,
    /// The doc parses only the first this many characters of the value.
    keep: Option<usize>,
}

const PATTERNS: &[Pattern] = &[
    // Joda-Time, on `substring(..., 0, 19)`: the fraction and a Z are cut off.
    Pattern {
        doc: GRAYLOG,
        event_type: "threat",
        field: "last_found",
        texts: &["\"yyyy-MM-dd'T'HH:mm:ss\"", "0, 19)", "timezone: \"UTC\""],
        chrono: "%Y-%m-%dT%H:%M:%S",
        keep: Some(19),
    },
    // Joda's `.SSS` needs the dot and the digits (chrono's `%.3f` would take
    // none); its `Z` reads a literal Z as UTC, like chrono's `%#z`.
    Pattern {
        doc: GRAYLOG,
        event_type: "detection",
        field: "ReceivedTime",
        texts: &["\"yyyy-MM-dd'T'HH:mm:ss.SSSZ\""],
        chrono: "%Y-%m-%dT%H:%M:%S.%3f%#z",
        keep: None,
    },
    // Go accepts a fraction after the seconds that the layout does not show.
    Pattern {
        doc: FILEBEAT,
        event_type: "threat",
        field: "last_found",
        texts: &["'2006-01-02T15:04:05'", "timezone: UTC"],
        chrono: "%Y-%m-%dT%H:%M:%S%.f",
        keep: None,
    },
    Pattern {
        doc: FILEBEAT,
        event_type: "threat",
        field: "last_found",
        texts: &["'2006-01-02T15:04:05Z07:00'"],
        chrono: "%Y-%m-%dT%H:%M:%S%.f%#z",
        keep: None,
    },
    Pattern {
        doc: FILEBEAT,
        event_type: "detection",
        field: "ReceivedTime",
        texts: &["'2006-01-02T15:04:05Z07:00'"],
        chrono: "%Y-%m-%dT%H:%M:%S%.f%#z",
        keep: None,
    },
    // VRL's parse_timestamp is chrono's strptime: the same format strings.
    Pattern {
        doc: VECTOR,
        event_type: "threat",
        field: "last_found",
        texts: &["\"%Y-%m-%dT%H:%M:%S%.f\"", "timezone: \"UTC\""],
        chrono: "%Y-%m-%dT%H:%M:%S%.f",
        keep: None,
    },
    Pattern {
        doc: VECTOR,
        event_type: "threat",
        field: "last_found",
        texts: &["\"%+\""],
        chrono: "%+",
        keep: None,
    },
    Pattern {
        doc: VECTOR,
        event_type: "detection",
        field: "ReceivedTime",
        texts: &["\"%+\""],
        chrono: "%+",
        keep: None,
    },
];

#[test]
fn every_field_the_docs_name_is_on_every_real_line_they_apply_to() {
    let out = output();
    for doc in docs() {
        let mut named = BTreeSet::new();
        for section in &doc.sections {
            let applies: Vec<&Value> = match &section.event_type {
                Some(kind) => of_type(kind),
                None => out.lines.iter().collect(),
            };
            for field in doc.fields(section) {
                for line in &applies {
                    assert!(
                        doc.has(line, &field),
                        "{} ({}) names {}{field} for {}, but this real line lacks it:\n{line}",
                        doc.name,
                        section.origin,
                        doc.prefix,
                        section.event_type.as_deref().unwrap_or("every line"),
                    );
                }
                named.insert(field);
            }
        }
        for needed in ["event_type", "last_found", "ReceivedTime"] {
            assert!(
                named.contains(needed),
                "{} names no {}{needed} (it names {named:?}): this test no longer reads it",
                doc.name,
                doc.prefix
            );
        }
    }
}

#[test]
fn the_docs_date_patterns_parse_every_real_event_time() {
    for doc in docs() {
        for kind in EVENT_TYPES {
            let rows: Vec<&Pattern> = PATTERNS
                .iter()
                .filter(|p| p.doc == doc.name && p.event_type == kind)
                .collect();
            assert!(
                !rows.is_empty(),
                "the table has no {kind} pattern of {}",
                doc.name
            );
            for row in &rows {
                let section = doc
                    .sections
                    .iter()
                    .find(|s| {
                        s.event_type.as_deref() == Some(kind)
                            && row.texts.iter().all(|text| s.text.contains(text))
                    })
                    .unwrap_or_else(|| {
                        panic!(
                            "no {kind} section of {} contains all of {:?} any more: \
                             change the table in this test with the doc",
                            doc.name, row.texts
                        )
                    });
                assert!(
                    doc.fields(section).contains(row.field),
                    "{} ({}): the {kind} pattern {:?} is not applied to {}{}",
                    doc.name,
                    section.origin,
                    row.texts[0],
                    doc.prefix,
                    row.field
                );
            }

            let mut used = vec![false; rows.len()];
            for line in of_type(kind) {
                let value = line[rows[0].field]
                    .as_str()
                    .unwrap_or_else(|| panic!("{} is not a string: {line}", rows[0].field));
                let meant = reference_time(value);
                let by = rows.iter().position(|row| {
                    let cut = row.keep.map_or(value, |n| &value[..n.min(value.len())]);
                    parse_with(row.chrono, cut).is_some_and(|t| t.timestamp() == meant.timestamp())
                });
                let by = by.unwrap_or_else(|| {
                    panic!(
                        "{}: no {kind} pattern ({:?}) reads the real {} {value:?} as {meant}",
                        doc.name,
                        rows.iter().map(|r| r.texts[0]).collect::<Vec<_>>(),
                        rows[0].field
                    )
                });
                used[by] = true;
            }
            for (row, used) in rows.iter().zip(used) {
                assert!(
                    used,
                    "{}: the {kind} pattern {} parses no real value",
                    doc.name, row.texts[0]
                );
            }
        }
    }
}

#[test]
fn routing_compares_against_the_event_types_and_tenants_real_lines_carry() {
    let out = output();
    let real: BTreeSet<String> = out
        .lines
        .iter()
        .map(|l| {
            l["event_type"]
                .as_str()
                .expect("event_type is a string")
                .to_owned()
        })
        .collect();
    assert_eq!(
        real,
        BTreeSet::from(EVENT_TYPES.map(String::from)),
        "event types of real lines"
    );

    let graylog = graylog();
    let routed: BTreeSet<String> = graylog
        .sections
        .iter()
        .filter(|s| s.text.contains("route_to_stream"))
        .filter_map(|s| s.event_type.clone())
        .collect();
    assert_eq!(
        routed, real,
        "event types the Graylog route rules compare against"
    );
    for doc in docs() {
        let limited: BTreeSet<String> = doc
            .sections
            .iter()
            .filter_map(|s| s.event_type.clone())
            .collect();
        assert_eq!(limited, real, "event types {} has sections for", doc.name);
    }

    let tenants: BTreeSet<&str> = out
        .lines
        .iter()
        .map(|l| {
            l["tenant_id"]
                .as_str()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| panic!("a line without tenant_id: {l}"))
        })
        .collect();
    assert_eq!(tenants.len(), 2, "the file holds both tenants: {tenants:?}");

    let compared: Vec<String> = graylog
        .sections
        .iter()
        .flat_map(|s| literals_after(&s.text, "cylance_tenant_id) == "))
        .collect();
    let [tenant] = compared.as_slice() else {
        panic!("one Graylog rule should compare cylance_tenant_id, found {compared:?}");
    };
    let picked: Vec<&Value> = out
        .lines
        .iter()
        .filter(|l| l["tenant_id"] == tenant.as_str())
        .collect();
    assert!(
        !picked.is_empty(),
        "the tenant rule's {tenant:?} routes no real line"
    );
    assert!(
        out.lines
            .iter()
            .all(|l| (l["tenant_id"] == tenant.as_str()) == (l["tenant_id"] == out.first_tenant)),
        "the tenant rule routes exactly the lines of tenant {}",
        out.first_tenant
    );
}

#[test]
fn the_graylog_parse_rule_takes_every_real_line() {
    let out = output();
    let parse = graylog()
        .sections
        .into_iter()
        .find(|s| s.text.contains("flatten_json"))
        .expect("a Graylog rule parses the line with flatten_json");
    let starts = literals_after(&parse.text, "starts_with(to_string($message.message), ");
    let [start] = starts.as_slice() else {
        panic!(
            "{}: one starts_with on the message, found {starts:?}",
            parse.origin
        );
    };
    let start = start.replace("\\\"", "\"").replace("\\\\", "\\");
    assert!(!out.text.is_empty());
    for line in out.text.lines() {
        assert!(
            line.starts_with(&start),
            "{}: {start:?} does not take this real line:\n{line}",
            parse.origin
        );
    }
}

#[test]
fn graylog_md_shows_every_rule_file_and_the_pipeline_runs_them() {
    let md = read_doc("docs/graylog.md");
    let pipeline = read_doc("docs/graylog/cylance.pipeline");
    assert!(
        md.contains(pipeline.trim_end()),
        "docs/graylog.md does not show docs/graylog/cylance.pipeline as it is"
    );
    let run: BTreeSet<String> = literals_after(&pipeline, "rule ").into_iter().collect();

    let mut titles = BTreeSet::new();
    for (file, text) in rule_files() {
        assert!(
            md.contains(text.trim_end()),
            "docs/graylog.md does not show docs/graylog/{file} as it is"
        );
        let title = literals_after(&text, "rule ");
        assert!(
            text.starts_with("rule \"") && title.len() == 1 && text.trim_end().ends_with("end"),
            "docs/graylog/{file} should hold one rule"
        );
        titles.insert(title[0].clone());
    }
    let unknown: Vec<&String> = run.difference(&titles).collect();
    assert!(
        unknown.is_empty(),
        "the pipeline runs rules no file has: {unknown:?}"
    );

    // The parse rule, and every rule limited to an event type (time, routing);
    // the tenant rules are optional additions.
    for section in graylog().sections {
        if section.event_type.is_some() || section.text.contains("flatten_json") {
            let title = &literals_after(&section.text, "rule ")[0];
            assert!(run.contains(title), "the pipeline does not run {title:?}");
        }
    }
}

#[test]
fn the_shippers_tail_the_file_the_units_write_as_json_lines() {
    let unit = read_doc("systemd/cylance-logs@.service");
    let written = unit
        .lines()
        .find_map(|l| l.strip_prefix("Environment=CYLANCE_LOGS_OUTPUT="))
        .expect("systemd/cylance-logs@.service sets CYLANCE_LOGS_OUTPUT")
        .trim();
    assert_eq!(written, "/var/log/cylance-logs/cylance-protect.log");
    // The active file, then the one logrotate renamed (see the docs).
    let tailed = vec![written.to_owned(), format!("{written}.1")];

    let filebeat = strip_comments(&read_doc(FILEBEAT), "#");
    let lines: Vec<&str> = filebeat.lines().collect();
    let inputs = yaml_list(&lines, "filebeat.inputs:");
    let [input] = inputs.as_slice() else {
        panic!("{FILEBEAT}: one input, found {}", inputs.len());
    };
    let input: Vec<&str> = input.lines().collect();
    assert_eq!(input[0].trim(), "- type: filestream", "{FILEBEAT}");
    assert!(
        input.iter().any(|l| l
            .trim()
            .strip_prefix("id: ")
            .is_some_and(|id| !id.is_empty())),
        "{FILEBEAT}: a filestream input needs an id"
    );
    assert_eq!(yaml_values(&input, "paths:"), tailed, "{FILEBEAT} paths");
    let parsers = yaml_list(&input, "parsers:");
    let [ndjson] = parsers.as_slice() else {
        panic!("{FILEBEAT}: one parser, found {parsers:?}");
    };
    let ndjson: Vec<&str> = ndjson.lines().map(str::trim).collect();
    assert_eq!(ndjson[0], "- ndjson:", "{FILEBEAT}");
    assert!(
        ndjson.contains(&"target: \"cylance\""),
        "{FILEBEAT}: {ndjson:?}"
    );
    assert!(
        ndjson.contains(&"add_error_key: true"),
        "{FILEBEAT}: {ndjson:?}"
    );
    assert!(lines.contains(&"output.elasticsearch:"), "{FILEBEAT}");

    // The Sidecar configuration in docs/graylog.md.
    let md = read_doc("docs/graylog.md");
    let sidecar = md
        .split("```yaml\n")
        .nth(1)
        .and_then(|block| block.split("```").next())
        .expect("docs/graylog.md shows a Filebeat configuration");
    let sidecar = strip_comments(sidecar, "#");
    let sidecar: Vec<&str> = sidecar.lines().collect();
    assert!(sidecar.iter().any(|l| l.trim() == "- type: filestream"));
    assert_eq!(
        yaml_values(&sidecar, "paths:"),
        tailed,
        "docs/graylog.md paths"
    );

    let vector = read_doc(VECTOR);
    let include = vector
        .split("include = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("docs/vector.toml has include = [...]");
    let included: Vec<String> = strip_comments(include, "#")
        .split('"')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect();
    assert_eq!(included, tailed, "{VECTOR} include");
}

// ---------------------------------------------------------------------------
// Real output
// ---------------------------------------------------------------------------

struct Output {
    text: String,
    lines: Vec<Value>,
    /// The tenant polled first: the README's example tenant, which
    /// docs/graylog/cylance-route-tenant.rule routes to its own stream.
    first_tenant: String,
}

/// Two tenants polled into one file, once for all the tests here.
fn output() -> &'static Output {
    static OUTPUT: OnceLock<Output> = OnceLock::new();
    OUTPUT.get_or_init(|| {
        let first = TestEnv::new();
        let mut found = threats(1, 3, 30);
        found.push(threat(10, &format!("{}.250", threat_time(minutes_ago(20)))));
        found.push(threat(11, &format!("{}Z", threat_time(minutes_ago(25)))));
        first.fake.add_threats(found);
        first.fake.add_detections(detections(100, 3, 15));
        first.run(&["poll"]).expect(0);

        let second = TestEnv::with_credentials(Credentials {
            app_id: "66666666-7777-8888-9999-000000000000".to_owned(),
            tenant_id: "bbbbbbbb-cccc-dddd-eeee-ffffffffffff".to_owned(),
            app_secret: "fake-second-tenant-secret-4c5d6e".to_owned(),
        });
        second.fake.add_threats(threats(200, 2, 10));
        second.fake.add_detections(detections(300, 2, 12));
        let shared = first.output().display().to_string();
        second.run(&["poll", "--output", &shared]).expect(0);

        Output {
            text: std::fs::read_to_string(first.output()).expect("the output file"),
            lines: first.lines(),
            first_tenant: first.creds.tenant_id.clone(),
        }
    })
}

fn of_type(kind: &str) -> Vec<&'static Value> {
    let lines: Vec<&Value> = output()
        .lines
        .iter()
        .filter(|l| l["event_type"] == kind)
        .collect();
    assert!(!lines.is_empty(), "no real line has event_type {kind:?}");
    lines
}

/// What a real time means, read independently of the docs: RFC 3339, or
/// zone-less UTC with an optional fraction and an optional Z.
fn reference_time(value: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(value.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
                .map(|t| t.and_utc())
        })
        .unwrap_or_else(|e| panic!("a real time {value:?} does not parse: {e}"))
}

/// A zone-less format reads the value as UTC, as every doc tells its shipper.
fn parse_with(format: &str, value: &str) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_str(value, format) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => NaiveDateTime::parse_from_str(value, format)
            .ok()
            .map(|t| t.and_utc()),
    }
}

// ---------------------------------------------------------------------------
// The docs, cut into sections
// ---------------------------------------------------------------------------

/// A part of a doc, and the one event type it applies to (`None`: every line).
struct Section {
    origin: String,
    event_type: Option<String>,
    text: String,
}

struct Doc {
    name: &'static str,
    /// What stands before an item field's name: `cylance_`, `cylance.`, `.`.
    prefix: String,
    /// Graylog's flatten_json names `Device.Name` as `Device_Name`.
    flat: bool,
    /// VRL's strings are formats, never field names.
    names_in_strings: bool,
    /// The shipper's own fields, which are not the item's.
    own: &'static [&'static str],
    sections: Vec<Section>,
}

impl Doc {
    /// The item fields a section names (not those it sets).
    fn fields(&self, section: &Section) -> BTreeSet<String> {
        let text = if self.names_in_strings {
            section.text.clone()
        } else {
            without_strings(&section.text)
        };
        let mut fields = BTreeSet::new();
        for (at, _) in text.match_indices(&self.prefix) {
            let before = text[..at].chars().next_back();
            let inside_a_word = before.is_some_and(|c| {
                c.is_ascii_alphanumeric() || "_-/".contains(c) || (c == '.' && !self.flat)
            });
            if inside_a_word || text[..at].ends_with("set_field(\"") {
                continue;
            }
            let name: String = text[at + self.prefix.len()..]
                .chars()
                .take_while(|&c| c.is_ascii_alphanumeric() || c == '_' || (c == '.' && !self.flat))
                .collect();
            let name = name.trim_end_matches('.');
            if !name.is_empty() && !self.own.contains(&name) {
                fields.insert(name.to_owned());
            }
        }
        fields
    }

    /// Whether a real line gives this field a value, as the shipper sees it.
    fn has(&self, line: &Value, field: &str) -> bool {
        if self.flat {
            let mut keys = BTreeSet::new();
            flatten_json(line, "", &mut keys);
            return keys.contains(field);
        }
        field
            .split('.')
            .try_fold(line, |value, key| value.get(key))
            .is_some_and(|value| !value.is_null())
    }
}

/// Graylog's flatten_json: nested keys joined with `_`, null values left out.
fn flatten_json(value: &Value, path: &str, keys: &mut BTreeSet<String>) {
    let Value::Object(map) = value else { return };
    for (key, value) in map {
        let key = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}_{key}")
        };
        match value {
            Value::Object(_) => flatten_json(value, &key, keys),
            Value::Null => {}
            _ => {
                keys.insert(key);
            }
        }
    }
}

fn docs() -> [Doc; 3] {
    [graylog(), filebeat(), vector()]
}

/// One section per rule file, limited by its `when` on cylance_event_type.
fn graylog() -> Doc {
    let sections = rule_files()
        .into_iter()
        .map(|(file, text)| {
            let text = strip_comments(&text, "//");
            Section {
                event_type: one_at_most(literals_after(&text, "cylance_event_type) == "), &file),
                origin: format!("docs/graylog/{file}"),
                text,
            }
        })
        .collect();
    Doc {
        name: GRAYLOG,
        prefix: "cylance_".to_owned(),
        flat: true,
        names_in_strings: true,
        own: &[],
        sections,
    }
}

/// One section per processor, limited by its `when.equals` on event_type, and
/// the rest of the file.
fn filebeat() -> Doc {
    let text = strip_comments(&read_doc(FILEBEAT), "#");
    let targets = literals_after(&text, "target:");
    let [target] = targets.as_slice() else {
        panic!("{FILEBEAT}: one ndjson target, found {targets:?}");
    };
    let prefix = format!("{target}.");
    let lines: Vec<&str> = text.lines().collect();
    let processors = yaml_list(&lines, "processors:");
    assert!(!processors.is_empty(), "{FILEBEAT} has no processors");
    let mut sections: Vec<Section> = processors
        .iter()
        .enumerate()
        .map(|(i, item)| Section {
            origin: format!("processor {}", i + 1),
            event_type: one_at_most(
                literals_after(item, &format!("{prefix}event_type:")),
                FILEBEAT,
            ),
            text: item.clone(),
        })
        .collect();
    let mut rest = text.clone();
    for item in &processors {
        rest = rest.replacen(item.as_str(), "", 1);
    }
    sections.push(Section {
        origin: "outside the processors".to_owned(),
        event_type: None,
        text: rest,
    });
    Doc {
        name: FILEBEAT,
        prefix,
        flat: false,
        names_in_strings: true,
        own: &[],
        sections,
    }
}

/// One section per VRL block `if .event_type == "..." { ... }`, and the rest.
fn vector() -> Doc {
    let toml = read_doc(VECTOR);
    let vrl = toml
        .split("source = '''")
        .nth(1)
        .and_then(|rest| rest.split("'''").next())
        .expect("docs/vector.toml has a remap source = '''...'''");
    let vrl = strip_comments(vrl, "#");
    let mut sections = Vec::new();
    let mut rest = String::new();
    let mut open: Option<(Section, i32)> = None;
    for line in vrl.lines() {
        let braces = without_strings(line);
        let change = braces.matches('{').count() as i32 - braces.matches('}').count() as i32;
        if open.is_none() {
            let guard = literals_after(line, ".event_type == ");
            if guard.is_empty() {
                rest.push_str(line);
                rest.push('\n');
                continue;
            }
            let section = Section {
                origin: format!("the block of {line:?}"),
                event_type: one_at_most(guard, VECTOR),
                text: String::new(),
            };
            open = Some((section, 0));
        }
        let (section, depth) = open.as_mut().expect("a block is open");
        section.text.push_str(line);
        section.text.push('\n');
        *depth += change;
        if *depth <= 0 {
            sections.push(open.take().expect("a block is open").0);
        }
    }
    assert!(open.is_none(), "{VECTOR}: an if block does not close");
    sections.push(Section {
        origin: "outside the if blocks".to_owned(),
        event_type: None,
        text: rest,
    });
    Doc {
        name: VECTOR,
        prefix: ".".to_owned(),
        flat: false,
        names_in_strings: false,
        // `. = parse_json!(.message)`: the file source's line, before parsing.
        own: &["message"],
        sections,
    }
}

// ---------------------------------------------------------------------------
// Text helpers (no YAML, TOML or rule-language parser in the project)
// ---------------------------------------------------------------------------

fn read_doc(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// docs/graylog/*.rule: (file name, text), sorted.
fn rule_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/graylog");
    let mut rules: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rule"))
        .map(|path| {
            let name = path.file_name().expect("a file name").to_string_lossy();
            (
                name.into_owned(),
                std::fs::read_to_string(&path).expect("a rule file"),
            )
        })
        .collect();
    rules.sort();
    assert!(rules.len() >= 5, "too few rule files in {}", dir.display());
    rules
}

fn one_at_most(mut values: Vec<String>, origin: &str) -> Option<String> {
    assert!(
        values.len() <= 1,
        "{origin}: more than one event_type: {values:?}"
    );
    values.pop()
}

/// The value after each `needle`: a double- or single-quoted string (its
/// content, escapes left as they are) or a bare word.
fn literals_after(text: &str, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(needle) {
        rest = rest[at + needle.len()..].trim_start_matches(' ');
        let mut chars = rest.char_indices();
        let (value, len) = match chars.next() {
            Some((_, quote @ ('"' | '\''))) => {
                let mut escaped = false;
                let end = chars
                    .find(|&(_, c)| {
                        let closes = c == quote && !escaped;
                        escaped = c == '\\' && !escaped;
                        closes
                    })
                    .map_or(rest.len(), |(i, _)| i);
                (&rest[1..end], (end + 1).min(rest.len()))
            }
            Some(_) => {
                let word = rest
                    .split(|c: char| c.is_whitespace() || c == ',' || c == ')')
                    .next()
                    .unwrap_or_default();
                (word, word.len())
            }
            None => break,
        };
        if !value.is_empty() {
            found.push(value.to_owned());
        }
        rest = &rest[len..];
    }
    found
}

/// Each line up to a `marker` that is not inside a double-quoted string.
fn strip_comments(text: &str, marker: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut in_string = false;
        let mut escaped = false;
        let mut end = line.len();
        for (i, c) in line.char_indices() {
            if !in_string && line[i..].starts_with(marker) {
                end = i;
                break;
            }
            if c == '"' && !escaped {
                in_string = !in_string;
            }
            escaped = c == '\\' && !escaped;
        }
        out.push_str(line[..end].trim_end());
        out.push('\n');
    }
    out
}

/// The text with every double-quoted string emptied.
fn without_strings(text: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        let quote = c == '"' && !escaped;
        escaped = c == '\\' && !escaped;
        if quote {
            in_string = !in_string;
            out.push(c);
        } else if !in_string {
            out.push(c);
        }
    }
    out
}

/// The items of the YAML list under the first line that is `key` (trimmed),
/// each with its lines (blank lines included, so that an item is found again
/// in the text it came from).
fn yaml_list(lines: &[&str], key: &str) -> Vec<String> {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let Some(start) = lines.iter().position(|l| l.trim() == key) else {
        return Vec::new();
    };
    let mut items: Vec<String> = Vec::new();
    let mut item_indent = None;
    for &line in &lines[start + 1..] {
        if line.trim().is_empty() {
            if let Some(item) = items.last_mut() {
                item.push_str(line);
                item.push('\n');
            }
            continue;
        }
        let at = indent(line);
        let starts_item = line.trim_start().starts_with("- ");
        match item_indent {
            None if starts_item && at >= indent(lines[start]) => item_indent = Some(at),
            None => break,
            Some(i) if at < i || (at == i && !starts_item) => break,
            Some(_) => {}
        }
        if starts_item && item_indent == Some(at) {
            items.push(String::new());
        }
        let item = items.last_mut().expect("an item is open");
        item.push_str(line);
        item.push('\n');
    }
    items
}

/// The scalar items of the YAML list under `key`.
fn yaml_values(lines: &[&str], key: &str) -> Vec<String> {
    yaml_list(lines, key)
        .iter()
        .map(|item| {
            item.trim()
                .trim_start_matches("- ")
                .trim_matches('"')
                .to_owned()
        })
        .collect()
}
