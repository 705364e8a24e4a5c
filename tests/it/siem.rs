//! Shipping to a SIEM: the Graylog rules (`docs/graylog/`), `docs/filebeat.yml`,
//! `docs/vector.toml` and the Splunk files (`docs/splunk/`), checked against
//! real output lines, since no Graylog, Filebeat, Vector or Splunk runs here.
//!
//! The lines come from the polls of two tenants into one file, seeded
//! with every time shape the API is known to send (threat `last_found` whole,
//! with a fraction and with `Z`; detection `ReceivedTime` with milliseconds and
//! `Z`; memory-protection `created` the same three ways), with every source
//! and the default `--enrich threat-devices` (see [`output`]). Each doc is
//! cut into sections, each limited to one event type where the doc says so (a
//! rule's `when`, a processor's `when.equals`, a VRL `if`): every field a
//! section names must be on every real line of that type (`devices` only on
//! the lines that have it: it depends on `--enrich`); every date pattern must
//! parse every real time, through a chrono twin paired in a table with the
//! pattern's exact text in the doc; routing must compare against the values
//! real lines carry; the device fields must be the first device's name and IP
//! of every threat line; and the shippers must tail the file the units write.

use crate::support::*;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

const GRAYLOG: &str = "docs/graylog/*.rule";
const FILEBEAT: &str = "docs/filebeat.yml";
const VECTOR: &str = "docs/vector.toml";
const SPLUNK_INPUTS: &str = "docs/splunk/inputs.conf";
const SPLUNK_PROPS: &str = "docs/splunk/props.conf";
const SPLUNK_TRANSFORMS: &str = "docs/splunk/transforms.conf";
const EVENT_TYPES: [&str; 4] = ["threat", "detection", "memory_protection", "device"];

/// Each event type's time (the contract's "times for SIEM").
const EVENT_TIMES: [(&str, &str); 4] = [
    ("threat", "last_found"),
    ("detection", "ReceivedTime"),
    ("memory_protection", "created"),
    ("device", "snapshot_time"),
];

/// Keys a line has only with some settings (`devices`: the threat-devices
/// lookup): a doc may name them only where it copes with their absence, which
/// `the_device_fields_are_the_first_devices_name_and_ip` checks.
const OPTIONAL: &[&str] = &["devices"];

/// The fields every recipe adds to a threat line, and where the contract puts
/// their values: the first device's name and its first IP address.
const DEVICE_FIELDS: [(&str, &[&str]); 2] = [
    ("cylance_device_name", &["devices", "0", "name"]),
    ("cylance_device_ip", &["devices", "0", "ip_addresses", "0"]),
];

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
    // The same for memory protection's created.
    Pattern {
        doc: GRAYLOG,
        event_type: "memory_protection",
        field: "created",
        texts: &["\"yyyy-MM-dd'T'HH:mm:ss\"", "0, 19)", "timezone: \"UTC\""],
        chrono: "%Y-%m-%dT%H:%M:%S",
        keep: Some(19),
    },
    Pattern {
        doc: GRAYLOG,
        event_type: "device",
        field: "snapshot_time",
        texts: &["\"yyyy-MM-dd'T'HH:mm:ssZ\""],
        chrono: "%Y-%m-%dT%H:%M:%S%#z",
        keep: None,
    },
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
    Pattern {
        doc: FILEBEAT,
        event_type: "memory_protection",
        field: "created",
        texts: &["'2006-01-02T15:04:05'", "timezone: UTC"],
        chrono: "%Y-%m-%dT%H:%M:%S%.f",
        keep: None,
    },
    Pattern {
        doc: FILEBEAT,
        event_type: "memory_protection",
        field: "created",
        texts: &["'2006-01-02T15:04:05Z07:00'"],
        chrono: "%Y-%m-%dT%H:%M:%S%.f%#z",
        keep: None,
    },
    Pattern {
        doc: FILEBEAT,
        event_type: "device",
        field: "snapshot_time",
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
    Pattern {
        doc: VECTOR,
        event_type: "memory_protection",
        field: "created",
        texts: &["\"%Y-%m-%dT%H:%M:%S%.f\"", "timezone: \"UTC\""],
        chrono: "%Y-%m-%dT%H:%M:%S%.f",
        keep: None,
    },
    Pattern {
        doc: VECTOR,
        event_type: "memory_protection",
        field: "created",
        texts: &["\"%+\""],
        chrono: "%+",
        keep: None,
    },
    Pattern {
        doc: VECTOR,
        event_type: "device",
        field: "snapshot_time",
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
                let optional = OPTIONAL.contains(&field.as_str());
                assert!(
                    !optional || applies.iter().any(|line| doc.has(line, &field)),
                    "{} ({}) names {}{field}, which no real line it applies to has",
                    doc.name,
                    section.origin,
                    doc.prefix,
                );
                for line in &applies {
                    if optional && !doc.has(line, &field) {
                        continue;
                    }
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
        let times = EVENT_TIMES.map(|(_, time)| time);
        for needed in ["event_type", "devices"].iter().chain(&times) {
            assert!(
                named.contains(*needed),
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
    let streams: BTreeSet<String> = graylog
        .sections
        .iter()
        .filter(|s| s.event_type.is_some())
        .flat_map(|s| literals_after(&s.text, "route_to_stream(name: "))
        .collect();
    assert_eq!(
        streams.len(),
        real.len(),
        "a stream per event type: {streams:?}"
    );

    let filebeat = filebeat();
    let indices: Vec<&Section> = filebeat
        .sections
        .iter()
        .filter(|s| s.origin.starts_with("output index"))
        .collect();
    let routed: BTreeSet<String> = indices
        .iter()
        .map(|s| {
            s.event_type
                .clone()
                .unwrap_or_else(|| panic!("{FILEBEAT}: {} routes no event type", s.origin))
        })
        .collect();
    assert_eq!(
        routed, real,
        "event types the {FILEBEAT} output's indices compare against"
    );
    let names: BTreeSet<String> = indices
        .iter()
        .flat_map(|s| literals_after(&s.text, "index:"))
        .collect();
    assert_eq!(
        names.len(),
        real.len(),
        "{FILEBEAT}: an index per event type: {names:?}"
    );

    // Vector's index is a template on a field that a remap sets from
    // event_type (which every real line has: see the field test).
    let toml = read_doc(VECTOR);
    let template = literals_after(&toml, "bulk.index = ");
    let [template] = template.as_slice() else {
        panic!("{VECTOR}: one bulk.index, found {template:?}");
    };
    let field = template
        .strip_prefix("{{ ")
        .and_then(|t| t.strip_suffix(" }}"))
        .unwrap_or_else(|| panic!("{VECTOR}: bulk.index {template:?} is not one field"));
    let setter = vector()
        .sections
        .into_iter()
        .find(|s| s.text.contains(&format!(".{field} = ")))
        .unwrap_or_else(|| panic!("{VECTOR}: no remap sets .{field}"));
    assert!(
        setter.event_type.is_none() && setter.text.contains(".event_type"),
        "{VECTOR} ({}): .{field} is not set from .event_type for every event",
        setter.origin
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
    let tailed = tailed_paths();

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
    let sidecar = strip_comments(&graylog_sidecar(), "#");
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

/// The Filebeat (Sidecar) configuration docs/graylog.md shows.
fn graylog_sidecar() -> String {
    read_doc("docs/graylog.md")
        .split("```yaml\n")
        .nth(1)
        .and_then(|block| block.split("```").next())
        .expect("docs/graylog.md shows a Filebeat configuration")
        .to_string()
}

/// The longest line cylance-logs can write: an item and a lookup's answer,
/// each from one API answer (16 MiB at most, `api::MAX_BODY`) and each at
/// most tripled in the line (U+0085 is written `\u0085`), with the prefix
/// and the added key (`output::MAX_OWN_LINE`).
const LONGEST_LINE: u64 = 2 * 3 * 16 * 1024 * 1024 + 4096;

/// A shipper that cuts or drops a long line loses that event without a
/// word in the SIEM: Vector drops lines over 100 KiB by default, Filebeat
/// cuts them at 10 MiB, Splunk at 10,000 bytes (checked with its TRUNCATE in
/// `splunk_takes_each_line_as_one_event_at_its_own_time`).
#[test]
fn the_shippers_take_the_longest_line_whole() {
    let setting = |doc: &str, text: &str, key: &str| -> u64 {
        let values: Vec<u64> = strip_comments(text, "#")
            .lines()
            .filter_map(|line| line.trim().strip_prefix(key))
            .map(|value| {
                value
                    .trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("{doc}: {key} {e}"))
            })
            .collect();
        let [value] = values.as_slice() else {
            panic!("{doc}: one {key} setting, found {values:?}");
        };
        *value
    };
    let vector = read_doc(VECTOR);
    let source = vector
        .split("[sources.cylance_file]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("docs/vector.toml has [sources.cylance_file]");
    assert!(setting(VECTOR, source, "max_line_bytes =") >= LONGEST_LINE);
    let filebeat = read_doc(FILEBEAT);
    assert!(setting(FILEBEAT, &filebeat, "message_max_bytes:") >= LONGEST_LINE);
    let sidecar = graylog_sidecar();
    assert!(setting("docs/graylog.md", &sidecar, "message_max_bytes:") >= LONGEST_LINE);
}

#[test]
fn the_device_fields_are_the_first_devices_name_and_ip() {
    let threats = of_type("threat");
    let first = |line: &Value, path: &[&str]| lookup(line, path).map(str::to_owned);
    let [(_, name_at), (_, ip_at)] = DEVICE_FIELDS;
    let covered = [
        (
            "a first device with an IP",
            threats.iter().any(|l| first(l, ip_at).is_some()),
        ),
        (
            "a first device without an IP",
            threats
                .iter()
                .any(|l| first(l, name_at).is_some() && first(l, ip_at).is_none()),
        ),
        (
            "\"devices\":[]",
            threats
                .iter()
                .any(|l| l["devices"].as_array().is_some_and(Vec::is_empty)),
        ),
        (
            "no devices",
            threats.iter().any(|l| l.get("devices").is_none()),
        ),
    ];
    for (what, seen) in covered {
        assert!(seen, "no real threat line has {what}");
    }

    let recipes = [
        (GRAYLOG, graylog_device_paths()),
        (FILEBEAT, filebeat_device_paths()),
        (VECTOR, vector_device_paths()),
        (SPLUNK_PROPS, splunk_device_paths()),
    ];
    for (doc, paths) in recipes {
        let targets: Vec<&str> = paths.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            targets,
            DEVICE_FIELDS.map(|(t, _)| t),
            "{doc}: the device fields it sets"
        );
        for ((target, path), (_, meant)) in paths.iter().zip(DEVICE_FIELDS) {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            for line in &threats {
                assert_eq!(
                    first(line, &path),
                    first(line, meant),
                    "{doc}: {target} from {path:?} is not {meant:?} of this real line:\n{line}"
                );
            }
        }
    }
}

#[test]
fn splunk_forwarder_monitors_the_file_the_units_write() {
    let inputs = conf_stanzas(&read_doc(SPLUNK_INPUTS));
    let monitored: Vec<String> = inputs
        .iter()
        .filter_map(|(name, _)| name.strip_prefix("monitor://").map(String::from))
        .collect();
    assert_eq!(monitored, tailed_paths(), "{SPLUNK_INPUTS} monitors");
    let props = conf_stanzas(&read_doc(SPLUNK_PROPS));
    for (name, settings) in &inputs {
        let sourcetype = conf_value(settings, "sourcetype", SPLUNK_INPUTS);
        assert!(
            props.iter().any(|(stanza, _)| *stanza == sourcetype),
            "{SPLUNK_INPUTS} [{name}]: {SPLUNK_PROPS} has no [{sourcetype}]"
        );
        // A salted checksum would read the rotated file again from its start.
        assert!(
            !settings.iter().any(|(key, _)| key == "crcSalt"),
            "{SPLUNK_INPUTS} [{name}] sets crcSalt"
        );
    }
}

#[test]
fn splunk_takes_each_line_as_one_event_at_its_own_time() {
    let out = output();
    let props = conf_stanzas(&read_doc(SPLUNK_PROPS));
    let inputs = conf_stanzas(&read_doc(SPLUNK_INPUTS));
    let sourcetype = conf_value(&inputs[0].1, "sourcetype", SPLUNK_INPUTS);
    let parse = stanza(&props, &sourcetype, SPLUNK_PROPS);
    let setting = |key: &str| conf_value(parse, key, SPLUNK_PROPS);

    assert_eq!(setting("SHOULD_LINEMERGE"), "false");
    assert_eq!(setting("LINE_BREAKER"), "([\\r\\n]+)");
    let longest = out.text.lines().map(str::len).max().unwrap_or_default();
    let truncate: usize = setting("TRUNCATE").parse().expect("TRUNCATE is a number");
    assert!(
        truncate == 0 || truncate >= longest,
        "TRUNCATE = {truncate} cuts a real line of {longest} bytes"
    );
    assert_eq!(setting("TZ"), "UTC", "zone-less times are UTC");

    // TIME_PREFIX is read as what it is, an alternation of keys; Splunk takes
    // its leftmost match in the line.
    let prefix = setting("TIME_PREFIX");
    let keys: Vec<&str> = prefix
        .strip_prefix("\"(?:")
        .and_then(|p| p.strip_suffix(")\":\""))
        .map(|alternatives| alternatives.split('|').collect())
        .filter(|keys: &Vec<&str>| {
            keys.iter()
                .all(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        })
        .unwrap_or_else(|| {
            panic!("this test reads a TIME_PREFIX of the form \"(?:key|key)\":\", not {prefix}")
        });
    let lookahead: usize = setting("MAX_TIMESTAMP_LOOKAHEAD")
        .parse()
        .expect("MAX_TIMESTAMP_LOOKAHEAD is a number");
    let format = setting("TIME_FORMAT");

    let mut used = BTreeSet::new();
    for raw in out.text.lines() {
        let line: Value = serde_json::from_str(raw).expect("a JSON line");
        let kind = line["event_type"].as_str().expect("an event_type");
        let (_, field) = EVENT_TIMES
            .iter()
            .find(|(k, _)| *k == kind)
            .unwrap_or_else(|| panic!("no time for {kind}"));
        let (at, key) = keys
            .iter()
            .filter_map(|key| raw.find(&format!("\"{key}\":\"")).map(|at| (at, *key)))
            .min()
            .unwrap_or_else(|| panic!("TIME_PREFIX {prefix} finds nothing in:\n{raw}"));
        assert_eq!(
            key, *field,
            "TIME_PREFIX finds {key}, not {field}, in:\n{raw}"
        );
        used.insert(key);

        let start = at + format!("\"{key}\":\"").len();
        let value = line[*field].as_str().expect("a time string");
        assert!(raw[start..].starts_with(value), "{raw}");
        assert!(
            value.len() <= lookahead,
            "MAX_TIMESTAMP_LOOKAHEAD = {lookahead} is shorter than {value:?}"
        );
        let meant = reference_time(value);
        // Splunk reads at most MAX_TIMESTAMP_LOOKAHEAD characters from there.
        let rest = &raw[start..];
        let window = &rest[..rest
            .char_indices()
            .nth(lookahead)
            .map_or(rest.len(), |(i, _)| i)];
        let read = NaiveDateTime::parse_and_remainder(window, &format)
            .map(|(t, _)| t.and_utc())
            .unwrap_or_else(|e| panic!("TIME_FORMAT {format} does not read {value:?}: {e}"));
        assert_eq!(read.timestamp(), meant.timestamp(), "{kind} time {value:?}");
    }
    assert_eq!(
        used.len(),
        keys.len(),
        "TIME_PREFIX names keys no real line has: {keys:?}"
    );
}

#[test]
fn splunk_gives_each_event_type_its_sourcetype() {
    let out = output();
    let props = conf_stanzas(&read_doc(SPLUNK_PROPS));
    let transforms = conf_stanzas(&read_doc(SPLUNK_TRANSFORMS));
    let inputs = conf_stanzas(&read_doc(SPLUNK_INPUTS));
    let sourcetype = conf_value(&inputs[0].1, "sourcetype", SPLUNK_INPUTS);
    let parse = stanza(&props, &sourcetype, SPLUNK_PROPS);
    let routes: Vec<&String> = parse
        .iter()
        .filter(|(key, _)| key.starts_with("TRANSFORMS-"))
        .map(|(_, value)| value)
        .collect();
    let [routes] = routes.as_slice() else {
        panic!("{SPLUNK_PROPS} [{sourcetype}]: one TRANSFORMS- class, found {routes:?}");
    };

    let mut routed = BTreeSet::new();
    let mut sourcetypes = BTreeSet::new();
    for name in routes.split(',').map(str::trim) {
        let transform = stanza(&transforms, name, SPLUNK_TRANSFORMS);
        let value = |key: &str| conf_value(transform, key, SPLUNK_TRANSFORMS);
        assert_eq!(value("DEST_KEY"), "MetaData:Sourcetype", "[{name}]");
        // The one form read here: an anchored literal, `{` escaped.
        let regex = value("REGEX");
        let start = regex
            .strip_prefix('^')
            .map(|r| r.replace("\\{", "{"))
            .filter(|r| !r.contains(['\\', '(', '[', '.', '*', '+', '?', '|', '$']))
            .unwrap_or_else(|| panic!("[{name}]: this test reads a REGEX ^<literal>, not {regex}"));
        let kind = start
            .strip_prefix("{\"event_type\":\"")
            .and_then(|k| k.strip_suffix('"'))
            .unwrap_or_else(|| panic!("[{name}]: REGEX {regex} does not test event_type"));
        for (raw, line) in out.text.lines().zip(&out.lines) {
            assert_eq!(
                raw.starts_with(&start),
                line["event_type"] == kind,
                "[{name}] REGEX {regex} on:\n{raw}"
            );
        }
        routed.insert(kind.to_owned());
        let target = value("FORMAT");
        let target = target
            .strip_prefix("sourcetype::")
            .unwrap_or_else(|| panic!("[{name}]: FORMAT {target}"));
        let search = stanza(&props, target, SPLUNK_PROPS);
        assert_eq!(
            conf_value(search, "KV_MODE", SPLUNK_PROPS),
            "json",
            "[{target}]"
        );
        sourcetypes.insert(target.to_owned());
    }
    assert_eq!(
        routed,
        BTreeSet::from(EVENT_TYPES.map(String::from)),
        "event types {SPLUNK_TRANSFORMS} routes"
    );
    assert_eq!(
        sourcetypes.len(),
        EVENT_TYPES.len(),
        "a sourcetype per event type"
    );
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

/// Two tenants polled into one file, once for all the tests here: every
/// source (`--sources threats,detections,memory-protection,devices`) with the
/// default `--enrich threat-devices`, and the second tenant's older threats
/// also polled with `--enrich none` (threat lines without `devices`).
///
/// The fake serves what the recipes must cope with: threat `last_found`
/// whole, with a fraction and with `Z`; memory-protection `created` the same
/// three ways, `username` and `user_name`, null `dll_version` and
/// `process_id`; devices of one snapshot, one without an IP address and one
/// with a null policy id; threats whose first device has a name and IPs,
/// whose first device has no IP (the second one has), one found on a device
/// whose name is not ASCII, and one whose sightings are all older
/// (`"devices":[]`).
fn output() -> &'static Output {
    static OUTPUT: OnceLock<Output> = OnceLock::new();
    OUTPUT.get_or_init(|| {
        const ALL: &str = "threats,detections,memory-protection,devices";
        let first = TestEnv::new();
        let mut found = threats(1, 3, 30);
        found.push(threat(10, &format!("{}.250", threat_time(minutes_ago(20)))));
        found.push(threat(11, &format!("{}Z", threat_time(minutes_ago(25)))));
        first.fake.add_threats(found);
        // Device 5 has no IP address, 2 has two, 7 a name outside ASCII; the
        // third threat was found only before its last_found.
        let sightings: [&[u64]; 4] = [&[0, 2], &[5, 1], &[], &[7]];
        for (i, devices) in (0u64..).zip(sightings) {
            let item = threat(600 + i, &threat_time(minutes_ago(50 + i as i64)));
            let last_found = item["last_found"].as_str().expect("a time").to_owned();
            let sha256 = item["sha256"].as_str().expect("a sha256").to_owned();
            first.fake.add_threats(vec![item]);
            let mut found: Vec<Value> = devices
                .iter()
                .map(|&d| threat_device(d, &last_found, "C:\\Users\\Public\\invoice.exe"))
                .collect();
            if devices.is_empty() {
                let older = threat_time(minutes_ago(60 * 24));
                found.push(threat_device(3, &older, "C:\\Users\\Public\\invoice.exe"));
            }
            first.fake.set_threat_devices(&sha256, found);
        }
        first.fake.add_detections(detections(100, 3, 15));
        let events: Vec<Value> = (0..7u64)
            .map(|i| {
                let at = threat_time(minutes_ago(40 + i as i64));
                let created = match i % 3 {
                    0 => at,
                    1 => format!("{at}.5"),
                    _ => format!("{at}.123Z"),
                };
                memory_protection_event(500 + i, &created)
            })
            .collect();
        first.fake.add_memory_protection(events);
        first.fake.add_devices(devices(0, 6, 400));
        first.run(&["poll", "--sources", ALL]).expect(0);

        let second = TestEnv::with_credentials(Credentials {
            app_id: "66666666-7777-8888-9999-000000000000".to_owned(),
            tenant_id: "bbbbbbbb-cccc-dddd-eeee-ffffffffffff".to_owned(),
            app_secret: "fake-second-tenant-secret-4c5d6e".to_owned(),
        });
        second.fake.add_threats(threats(200, 2, 10));
        second.fake.add_detections(detections(300, 2, 12));
        let shared = first.output().display().to_string();
        // Without lookups: threat lines with no `devices` key at all.
        second
            .run(&["poll", "--output", &shared, "--enrich", "none"])
            .expect(0);
        second.fake.add_threats(threats(210, 2, 3));
        second
            .fake
            .add_memory_protection(memory_protection_events(520, 3, 3));
        second.fake.add_devices(devices(6, 3, 300));
        second
            .run(&["poll", "--output", &shared, "--sources", ALL])
            .expect(0);

        let text = std::fs::read_to_string(first.output()).expect("the output file");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(first.lines().len(), lines.len(), "whole lines");
        assert_each_once(&lines);
        Output {
            text,
            lines,
            first_tenant: first.creds.tenant_id.clone(),
        }
    })
}

/// The file the units write, then the one logrotate renamed (see the docs).
fn tailed_paths() -> Vec<String> {
    let unit = read_doc("systemd/cylance-logs@.service");
    let written = unit
        .lines()
        .find_map(|l| l.strip_prefix("Environment=CYLANCE_LOGS_OUTPUT="))
        .expect("systemd/cylance-logs@.service sets CYLANCE_LOGS_OUTPUT")
        .trim();
    assert_eq!(written, "/var/log/cylance-logs/cylance-protect.log");
    vec![written.to_owned(), format!("{written}.1")]
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
    /// The fields the doc adds (after the prefix), which no line has.
    added: &'static [&'static str],
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
                c.is_ascii_alphanumeric() || "_-/]".contains(c) || (c == '.' && !self.flat)
            });
            if inside_a_word || text[..at].ends_with("set_field(\"") {
                continue;
            }
            let name: String = text[at + self.prefix.len()..]
                .chars()
                .take_while(|&c| c.is_ascii_alphanumeric() || c == '_' || (c == '.' && !self.flat))
                .collect();
            let name = name.trim_end_matches('.');
            if !name.is_empty() && !self.own.contains(&name) && !self.added.contains(&name) {
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
        added: &["device_name", "device_ip"],
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
    let indices = yaml_list(&lines, "indices:");
    sections.extend(indices.iter().enumerate().map(|(i, item)| Section {
        origin: format!("output index {}", i + 1),
        event_type: one_at_most(
            literals_after(item, &format!("{prefix}event_type:")),
            FILEBEAT,
        ),
        text: item.clone(),
    }));
    let mut rest = text.clone();
    for item in processors.iter().chain(&indices) {
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
        added: &[],
        sections,
    }
}

/// One section per VRL block `if .event_type == "..." { ... }` of the first
/// remap (the parse), the rest of it, and each further remap.
fn vector() -> Doc {
    let toml = read_doc(VECTOR);
    let mut remaps = toml
        .split("source = '''")
        .skip(1)
        .map(|rest| strip_comments(rest.split("'''").next().unwrap_or_default(), "#"));
    let vrl = remaps
        .next()
        .expect("docs/vector.toml has a remap source = '''...'''");
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
    sections.extend(remaps.enumerate().map(|(i, text)| Section {
        origin: format!("remap {}", i + 2),
        event_type: None,
        text,
    }));
    Doc {
        name: VECTOR,
        prefix: ".".to_owned(),
        flat: false,
        names_in_strings: false,
        // `. = parse_json!(.message)`: the file source's line, before parsing.
        own: &["message"],
        added: &[
            "cylance_device_name",
            "cylance_device_ip",
            "cylance_id",
            "cylance_index",
        ],
        sections,
    }
}

// ---------------------------------------------------------------------------
// The device fields, as each recipe takes them: (field, path in the line)
// ---------------------------------------------------------------------------

/// A string at `path` (keys, and array positions as numbers), as a recipe
/// sees it: absent when missing, null, not a string, or empty.
fn lookup<'a>(line: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(line, |value, step| match (value, step.parse::<usize>()) {
            (Value::Array(items), Ok(i)) => items.get(i),
            (Value::Object(map), _) => map.get(*step),
            _ => None,
        })
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `.key` and `[0]` steps, as VRL, JavaScript and JSONPath write them.
fn accessors(text: &str) -> Vec<String> {
    let mut steps = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (step, after) = if let Some(r) = rest.strip_prefix('.') {
            let end = r
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(r.len());
            (&r[..end], &r[end..])
        } else if let Some(r) = rest.strip_prefix('[') {
            let (index, after) = r.split_once(']').expect("a closing ]");
            (index, after)
        } else {
            panic!("this test reads only .key and [n] steps, not {text:?}")
        };
        assert!(!step.is_empty(), "an empty step in {text:?}");
        steps.push(step.to_owned());
        rest = after;
    }
    steps
}

/// `select_jsonpath(json: parse_json(...$message.cylance_devices...), paths: {...})`.
fn graylog_device_paths() -> Vec<(String, Vec<String>)> {
    let doc = graylog();
    let section = doc
        .sections
        .iter()
        .find(|s| s.text.contains("select_jsonpath"))
        .expect("a Graylog rule takes the device fields with select_jsonpath");
    assert_eq!(
        section.event_type.as_deref(),
        Some("threat"),
        "{}",
        section.origin
    );
    let sources = literals_after(&section.text, "parse_json(to_string($message.");
    let [source] = sources.as_slice() else {
        panic!(
            "{}: one parse_json of a field, found {sources:?}",
            section.origin
        );
    };
    let root = source
        .strip_prefix(&doc.prefix)
        .unwrap_or_else(|| panic!("{}: {source} is not a line field", section.origin));
    let paths = section
        .text
        .split_once("paths: {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(paths, _)| paths)
        .unwrap_or_else(|| panic!("{}: no paths: {{...}}", section.origin));
    paths
        .split(',')
        .map(|entry| {
            let (target, path) = entry.split_once(':').expect("target: \"path\"");
            let path = path.trim().trim_matches('"');
            let path = path
                .strip_prefix('$')
                .unwrap_or_else(|| panic!("{}: a JSONPath starts with $: {path}", section.origin));
            let mut steps = vec![root.to_owned()];
            steps.extend(accessors(path));
            (target.trim().to_owned(), steps)
        })
        .collect()
}

/// The script processor: `var x = event.Get("cylance.f")`, `var y = x[0]`,
/// `if (typeof E === "string") event.Put("target", E)`.
fn filebeat_device_paths() -> Vec<(String, Vec<String>)> {
    let doc = filebeat();
    let section = doc
        .sections
        .iter()
        .find(|s| s.text.contains("event.Put("))
        .expect("a Filebeat script sets the device fields");
    assert_eq!(
        section.event_type.as_deref(),
        Some("threat"),
        "{}",
        section.origin
    );
    let mut vars: std::collections::HashMap<String, Vec<String>> = Default::default();
    let resolve = |expr: &str, vars: &std::collections::HashMap<String, Vec<String>>| {
        if let Some(rest) = expr.strip_prefix("event.Get(\"") {
            let (field, after) = rest.split_once("\")").expect("event.Get(\"...\")");
            assert!(after.is_empty(), "{expr}");
            let field = field
                .strip_prefix(&doc.prefix)
                .unwrap_or_else(|| panic!("{FILEBEAT}: {field} is not a line field"));
            return field.split('.').map(String::from).collect::<Vec<_>>();
        }
        let end = expr
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(expr.len());
        let mut steps = vars
            .get(&expr[..end])
            .unwrap_or_else(|| panic!("{FILEBEAT}: {expr} names no variable"))
            .clone();
        steps.extend(accessors(&expr[end..]));
        steps
    };
    let mut found = Vec::new();
    for line in section.text.lines().map(str::trim) {
        if let Some((name, expr)) = line.strip_prefix("var ").and_then(|r| r.split_once(" = ")) {
            let steps = resolve(expr.trim_end_matches(';'), &vars);
            vars.insert(name.to_owned(), steps);
        }
        if let Some((_, put)) = line.split_once("event.Put(\"") {
            let (target, expr) = put.split_once("\", ").expect("event.Put(\"field\", value)");
            let expr = expr
                .trim_end_matches(';')
                .strip_suffix(')')
                .expect("a closing )");
            assert!(
                line.starts_with("if (") && line.contains(&format!("typeof {expr} === \"string\"")),
                "{FILEBEAT}: {target} is put without checking that {expr} is a string"
            );
            found.push((target.to_owned(), resolve(expr, &vars)));
        }
    }
    found
}

/// `if is_string(P) { .target = P }` in the threat block.
fn vector_device_paths() -> Vec<(String, Vec<String>)> {
    let doc = vector();
    let section = doc
        .sections
        .iter()
        .find(|s| s.event_type.as_deref() == Some("threat"))
        .expect("a threat block");
    section
        .text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("if is_string("))
        .map(|rest| {
            let (checked, rest) = rest
                .split_once(") { .")
                .expect("if is_string(P) { .f = P }");
            let (target, taken) = rest.split_once(" = ").expect("an assignment");
            let taken = taken.trim_end_matches(" }");
            assert_eq!(
                checked, taken,
                "{VECTOR}: .{target} is set from what it did not check"
            );
            (target.to_owned(), accessors(taken))
        })
        .collect()
}

/// `EVAL-field = ...` of the threat sourcetype, from spath and mvindex.
fn splunk_device_paths() -> Vec<(String, Vec<String>)> {
    let props = conf_stanzas(&read_doc(SPLUNK_PROPS));
    let transforms = conf_stanzas(&read_doc(SPLUNK_TRANSFORMS));
    let threat = transforms
        .iter()
        .find(|(_, t)| conf_value(t, "REGEX", SPLUNK_TRANSFORMS).ends_with("\"threat\""))
        .map(|(_, t)| conf_value(t, "FORMAT", SPLUNK_TRANSFORMS))
        .expect("a transform for threats");
    let threat = threat.trim_start_matches("sourcetype::");
    let with_evals: Vec<&str> = props
        .iter()
        .filter(|(_, s)| s.iter().any(|(k, _)| k.starts_with("EVAL-")))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        with_evals,
        [threat],
        "{SPLUNK_PROPS}: the stanzas with EVAL-"
    );
    stanza(&props, threat, SPLUNK_PROPS)
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("EVAL-").map(|t| (t.to_owned(), spl_path(v))))
        .collect()
}

/// `_raw`, `spath(X, "a{}.b")` (`{}`: every element, a multivalue) and
/// `mvindex(X, n)` (element n of the multivalue).
fn spl_path(expr: &str) -> Vec<String> {
    let expr = expr.trim();
    if expr == "_raw" {
        return Vec::new();
    }
    let call = |name: &str| {
        let inner = expr
            .strip_prefix(name)?
            .strip_prefix('(')?
            .strip_suffix(')')?;
        let mut depth = 0;
        let comma = inner.char_indices().rev().find(|&(_, c)| {
            depth += match c {
                ')' => 1,
                '(' => -1,
                _ => 0,
            };
            c == ',' && depth == 0
        })?;
        Some((
            inner[..comma.0].to_owned(),
            inner[comma.0 + 1..].trim().to_owned(),
        ))
    };
    if let Some((input, path)) = call("spath") {
        let mut steps = spl_path(&input);
        for step in path.trim_matches('"').split('.') {
            match step.strip_suffix("{}") {
                Some(name) => steps.extend([name.to_owned(), "{}".to_owned()]),
                None => steps.push(step.to_owned()),
            }
        }
        return steps;
    }
    if let Some((input, index)) = call("mvindex") {
        let mut steps = spl_path(&input);
        assert_eq!(
            steps.last().map(String::as_str),
            Some("{}"),
            "mvindex of one value: {expr}"
        );
        *steps.last_mut().expect("a step") = index;
        return steps;
    }
    panic!("this test reads _raw, spath(X, path) and mvindex(X, n), not {expr}")
}

// ---------------------------------------------------------------------------
// Splunk .conf files
// ---------------------------------------------------------------------------

type Stanza = (String, Vec<(String, String)>);

/// `[name]` stanzas of `key = value` lines; `#` starts a comment line.
fn conf_stanzas(text: &str) -> Vec<Stanza> {
    let mut stanzas: Vec<Stanza> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            stanzas.push((name.to_owned(), Vec::new()));
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key = value: {line}"));
        let (_, settings) = stanzas
            .last_mut()
            .unwrap_or_else(|| panic!("a setting outside a stanza: {line}"));
        settings.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    stanzas
}

fn stanza<'a>(stanzas: &'a [Stanza], name: &str, origin: &str) -> &'a [(String, String)] {
    stanzas
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, settings)| settings.as_slice())
        .unwrap_or_else(|| panic!("{origin} has no [{name}]"))
}

/// The one value of `key`.
fn conf_value(settings: &[(String, String)], key: &str, origin: &str) -> String {
    let values: Vec<&String> = settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect();
    let [value] = values.as_slice() else {
        panic!("{origin}: {key} should be set once, found {values:?}");
    };
    (*value).clone()
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
