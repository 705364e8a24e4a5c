//! What differs between the event sources: endpoint, query, keys, timestamps.
//!
//! Everything else (paging, windows, dedupe, writing) is shared, so adding a
//! source means adding a variant here. The output line is the API item exactly
//! as it came, bytes and field order included, with two keys put in front:
//! `event_type` and `tenant_id`.
//!
//! The output contract for those two names: they are the tool's, and the only
//! top-level keys of those names on a line. An item that has its own
//! top-level `event_type` or `tenant_id` keeps them as `api_event_type` and
//! `api_tenant_id` (that item alone is re-serialized: same keys, order and
//! values, but not its whitespace). No line has a duplicate top-level key: an
//! item that has one is rejected (the real API never sends such items). Raw
//! U+2028, U+2029 and U+0085 are written as `\u` escapes, the same JSON value,
//! so that a line is one line also for readers that split on them.
//!
//! [`SourceKind::scan`] reads each item once, for its key, its time and its
//! top-level key names; an item it cannot place is rejected with a reason
//! (see `run.rs`, the dead-letter file).

use crate::timefmt::{detection_query_time, parse_api_time, threat_query_time};
use chrono::{DateTime, TimeDelta, Utc};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    Threats,
    Detections,
}

/// How much wider than our window we ask the server for: its bounds may be
/// inclusive or exclusive and its clock is not ours. We keep exactly our
/// half-open window on the client.
pub const SERVER_WINDOW_PAD: TimeDelta = TimeDelta::seconds(60);

/// Items dated before this cannot be events of this product (it is younger);
/// a year-1 or pre-1970 date is a broken item, not history.
pub const EARLIEST_EVENT: DateTime<Utc> = DateTime::from_timestamp_nanos(946_684_800_000_000_000);
/// Items dated more than this after the run started are broken, not early
/// (a day covers any clock skew): no window would ever hold them, so they
/// would vanish unreported.
pub const MAX_AHEAD: TimeDelta = TimeDelta::days(1);

/// The two keys the tool puts first on each line, and what an item's own
/// top-level keys of those names become.
const RESERVED: [(&str, &str); 2] = [
    ("event_type", "api_event_type"),
    ("tenant_id", "api_tenant_id"),
];

/// Identity and time of one item, as needed for dedupe and windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemMeta {
    pub key: String,
    pub time: DateTime<Utc>,
}

/// What one pass over an item found.
#[derive(Debug)]
pub struct Scan {
    pub meta: ItemMeta,
    /// The item has a top-level `event_type` or `tenant_id` of its own: write
    /// it through [`rename_reserved`].
    pub reserved: bool,
}

impl SourceKind {
    pub const ALL: [SourceKind; 2] = [SourceKind::Threats, SourceKind::Detections];

    /// The name used in `--sources`, the checkpoint and messages.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Threats => "threats",
            SourceKind::Detections => "detections",
        }
    }

    pub fn from_name(name: &str) -> Option<SourceKind> {
        SourceKind::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
    }

    /// The value of the `event_type` key added to each output line.
    pub fn event_type(self) -> &'static str {
        match self {
            SourceKind::Threats => "threat",
            SourceKind::Detections => "detection",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            SourceKind::Threats => "/threats/v2",
            SourceKind::Detections => "/detections/v2",
        }
    }

    /// The privilege the API application needs for this list.
    pub fn privilege(self) -> &'static str {
        match self {
            SourceKind::Threats => "threat:list",
            SourceKind::Detections => "opticsdetect:list",
        }
    }

    /// Threats: 200 is the documented maximum. Detections: the maximum is
    /// undocumented; 100 is what existing clients use without complaint.
    pub fn page_size(self) -> u32 {
        match self {
            SourceKind::Threats => 200,
            SourceKind::Detections => 100,
        }
    }

    /// The field whose time the window applies to, for messages.
    pub fn time_field(self) -> &'static str {
        match self {
            SourceKind::Threats => "last_found",
            SourceKind::Detections => "ReceivedTime",
        }
    }

    /// Whether the list is documented to come newest first, so that paging may
    /// stop at the first page wholly older than the window. Threats are; the
    /// detections' order is only a default, so every page is read.
    pub fn newest_first(self) -> bool {
        matches!(self, SourceKind::Threats)
    }

    /// Query parameters asking for `[from, to)`, padded on both sides.
    pub fn window_query(
        self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(&'static str, String)> {
        let (start, end) = (from - SERVER_WINDOW_PAD, to + SERVER_WINDOW_PAD);
        match self {
            SourceKind::Threats => vec![
                ("start_time", threat_query_time(start)),
                ("end_time", threat_query_time(end)),
            ],
            SourceKind::Detections => vec![
                ("start", detection_query_time(start)),
                ("end", detection_query_time(end)),
                ("sort", "-ReceivedTime".to_string()),
            ],
        }
    }

    /// The item fields holding the dedupe key and the window time.
    fn key_fields(self) -> (&'static str, &'static str) {
        match self {
            SourceKind::Threats => ("sha256", "last_found"),
            SourceKind::Detections => ("Id", "ReceivedTime"),
        }
    }

    /// The dedupe key and the window time of one item, or why it has none.
    /// The threat key is `sha256` + `last_found` (a file found again later is
    /// a new event); the detection key is its stable `Id`. Also reads our own
    /// lines back (crash recovery), whose `event_type` and `tenant_id` are ours.
    pub fn meta(self, item: &str) -> Result<ItemMeta, String> {
        self.read(item, None).map(|scan| scan.meta)
    }

    /// [`SourceKind::meta`] for an item from the API, in the same single
    /// pass: also refuses an item with a duplicate top-level key and notes
    /// reserved ones. `names` is scratch space, reused between items.
    pub fn scan(self, item: &str, names: &mut Vec<u64>) -> Result<Scan, String> {
        names.clear();
        self.read(item, Some(names))
    }

    fn read(self, item: &str, names: Option<&mut Vec<u64>>) -> Result<Scan, String> {
        if !item.trim_start().starts_with('{') {
            return Err("not a JSON object".to_string());
        }
        let (key_field, time_field) = self.key_fields();
        let mut de = serde_json::Deserializer::from_str(item);
        let found = de
            .deserialize_map(ItemVisitor {
                key_field,
                time_field,
                names,
            })
            .map_err(unreadable)?;
        if found.duplicate_hash
            && let Some(name) = duplicate_name(item)
        {
            return Err(format!("duplicate key {}", quoted(&name)));
        }
        let key = present(key_field, found.key)?;
        let raw_time = present(time_field, found.time)?;
        let time = parse_api_time(&raw_time)
            .ok_or_else(|| format!("unreadable {time_field} {}", quoted(&raw_time)))?;
        let key = match self {
            SourceKind::Threats => {
                format!("{}@{}", key.to_ascii_lowercase(), time.timestamp_micros())
            }
            SourceKind::Detections => key.to_ascii_lowercase(),
        };
        Ok(Scan {
            meta: ItemMeta { key, time },
            reserved: found.reserved,
        })
    }

    /// Why an item's (valid) time cannot be placed, if it cannot: before
    /// [`EARLIEST_EVENT`] or more than [`MAX_AHEAD`] after the run started.
    pub fn implausible_time(self, time: DateTime<Utc>, started: DateTime<Utc>) -> Option<String> {
        let field = self.key_fields().1;
        if time < EARLIEST_EVENT {
            Some(format!(
                "{field} {} is before {}",
                crate::timefmt::display(time),
                crate::timefmt::display(EARLIEST_EVENT)
            ))
        } else if time > started + MAX_AHEAD {
            Some(format!(
                "{field} {} is more than a day after the run started",
                crate::timefmt::display(time)
            ))
        } else {
            None
        }
    }
}

/// A field's text, or why there is none.
fn present<'a>(field: &str, value: Option<Option<Text<'a>>>) -> Result<Cow<'a, str>, String> {
    match value {
        None => Err(format!("no {field}")),
        Some(None) => Err(format!("{field} is null")),
        Some(Some(Text(text))) => Ok(text),
    }
}

/// A JSON string, borrowed from the item when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_string())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// What [`ItemVisitor`] found: each field `None` when missing, `Some(None)`
/// when null.
#[derive(Default)]
struct Found<'a> {
    key: Option<Option<Text<'a>>>,
    time: Option<Option<Text<'a>>>,
    reserved: bool,
    /// Two top-level names have one signature: maybe a duplicate key, to confirm.
    duplicate_hash: bool,
}

/// One pass over the top level of an item: the two fields it needs, the
/// other values skipped unread, and (with `names`) a signature of every key name.
struct ItemVisitor<'s> {
    key_field: &'static str,
    time_field: &'static str,
    names: Option<&'s mut Vec<u64>>,
}

impl<'de> Visitor<'de> for ItemVisitor<'_> {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found<'de>, A::Error> {
        let mut found = Found::default();
        let mut names = self.names;
        while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
            if name == self.key_field {
                found.key = Some(map.next_value()?);
            } else if name == self.time_field {
                found.time = Some(map.next_value()?);
            } else {
                found.reserved |= RESERVED.iter().any(|(reserved, _)| name == *reserved);
                map.next_value::<IgnoredAny>()?;
            }
            if let Some(names) = names.as_deref_mut() {
                names.push(name_signature(name.as_bytes()));
            }
        }
        if let Some(names) = names {
            names.sort_unstable();
            found.duplicate_hash = names.windows(2).any(|pair| pair[0] == pair[1]);
        }
        Ok(found)
    }
}

/// A cheap signature of a key name: its length and its first and last eight
/// bytes. Distinct names rarely match (a match is only confirmed the slow
/// way); reading every byte of every name would cost more than the rest of
/// the scan.
fn name_signature(name: &[u8]) -> u64 {
    let word = |bytes: &[u8]| {
        let mut padded = [0u8; 8];
        padded[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(padded)
    };
    let head = word(&name[..name.len().min(8)]);
    let tail = word(&name[name.len().saturating_sub(8)..]);
    [head, tail]
        .into_iter()
        .fold(name.len() as u64, |hash, part| {
            (hash ^ part).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        })
}

/// The top-level entries of an object item, in order, values as they came.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::new();
                while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
                    entries.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// The first top-level key name an item repeats (the slow check behind a
/// hash match in [`SourceKind::scan`]).
fn duplicate_name(item: &str) -> Option<String> {
    let Entries(entries) = serde_json::from_str(item).ok()?;
    entries.iter().enumerate().find_map(|(at, (name, _))| {
        entries[..at]
            .iter()
            .any(|(earlier, _)| earlier == name)
            .then(|| name.to_string())
    })
}

/// The item with its own top-level `event_type` and `tenant_id` renamed to
/// `api_event_type` and `api_tenant_id`; values are kept byte for byte. An
/// error (the reason to reject it) when a new name is already taken.
pub fn rename_reserved(item: &str) -> Result<String, String> {
    let Entries(entries) = serde_json::from_str(item).map_err(unreadable)?;
    let mut out = String::with_capacity(item.len() + 16);
    let mut names: Vec<&str> = Vec::with_capacity(entries.len());
    out.push('{');
    for (name, value) in &entries {
        let name = RESERVED
            .iter()
            .find(|(reserved, _)| name == reserved)
            .map_or(name.as_ref(), |(_, renamed)| renamed);
        if names.contains(&name) {
            return Err(format!("duplicate key {} after renaming", quoted(name)));
        }
        if !names.is_empty() {
            out.push(',');
        }
        names.push(name);
        out.push_str(&serde_json::to_string(name).expect("a string serializes"));
        out.push(':');
        out.push_str(value.get());
    }
    out.push('}');
    Ok(out)
}

/// Why an item could not be read. serde_json quotes (escapes) the server
/// text it shows; the length is capped here.
fn unreadable(err: serde_json::Error) -> String {
    const MAX_CHARS: usize = 200;
    let text = err.to_string();
    let mut shown: String = text.chars().take(MAX_CHARS).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    format!("unreadable item: {shown}")
}

/// Server text for a message: quoted, control characters escaped, cut short.
pub fn quoted(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut shown: String = text.chars().take(MAX_CHARS).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

/// The fixed start of every line: `{"event_type":"threat","tenant_id":"..."`.
pub fn line_prefix(kind: SourceKind, tenant_id: &str) -> String {
    let tenant = serde_json::to_string(tenant_id).expect("a string serializes");
    format!(
        "{{\"event_type\":\"{}\",\"tenant_id\":{tenant}",
        kind.event_type()
    )
}

/// Appends one output line (with its newline) for an item to `out`. The item's
/// own bytes are kept, but for [`push_one_line`]'s rewrites.
pub fn push_line(out: &mut Vec<u8>, prefix: &str, item: &str) {
    let text = item.trim_start();
    let body = text.strip_prefix('{').unwrap_or(text).trim_start();
    out.extend_from_slice(prefix.as_bytes());
    if !body.starts_with('}') {
        out.push(b',');
    }
    push_one_line(out, body.as_bytes());
    out.push(b'\n');
}

/// Appends valid JSON text so that it stays one line for every reader. A raw
/// newline can only be whitespace between tokens, so it becomes a space; raw
/// U+2028, U+2029 and U+0085 can only be inside strings, so they become their
/// `\u` escapes, the same value. Text without those bytes (most) is copied as is.
pub fn push_one_line(out: &mut Vec<u8>, json: &[u8]) {
    // `fold`, not `any`: without the early exit the check is vectorized.
    if !json.iter().fold(false, |found, byte| {
        found | matches!(byte, b'\n' | b'\r' | 0xC2 | 0xE2)
    }) {
        out.extend_from_slice(json);
        return;
    }
    let mut rest = json;
    while let Some((&byte, tail)) = rest.split_first() {
        let (replacement, used): (&[u8], usize) = match (byte, tail) {
            (b'\n' | b'\r', _) => (b" ", 1),
            (0xE2, [0x80, 0xA8, ..]) => (b"\\u2028", 3),
            (0xE2, [0x80, 0xA9, ..]) => (b"\\u2029", 3),
            (0xC2, [0x85, ..]) => (b"\\u0085", 2),
            _ => (&rest[..1], 1),
        };
        out.extend_from_slice(replacement);
        rest = &rest[used..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> &str {
        text
    }

    #[test]
    fn line_keeps_item_bytes_and_puts_event_type_then_tenant_first() {
        let mut out = Vec::new();
        let prefix = line_prefix(SourceKind::Threats, "t-1");
        push_line(
            &mut out,
            &prefix,
            raw("{\"name\": \"a.exe\",\n \"score\": 1.0}"),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"event_type\":\"threat\",\"tenant_id\":\"t-1\",\"name\": \"a.exe\",  \"score\": 1.0}\n"
        );
        let mut empty = Vec::new();
        push_line(&mut empty, &prefix, raw("{ }"));
        let parsed: serde_json::Value = serde_json::from_slice(&empty).unwrap();
        assert_eq!(parsed["tenant_id"], "t-1");
    }

    #[test]
    fn threat_key_is_sha256_and_last_found_in_any_spelling() {
        let a = SourceKind::Threats
            .meta(raw(r#"{"sha256":"AB","last_found":"2018-01-21T15:45:46"}"#))
            .unwrap();
        let b = SourceKind::Threats
            .meta(raw(
                r#"{"sha256":"ab","last_found":"2018-01-21T15:45:46.000Z"}"#,
            ))
            .unwrap();
        assert_eq!(a, b);
        let later = SourceKind::Threats
            .meta(raw(r#"{"sha256":"ab","last_found":"2018-01-21T15:45:47"}"#))
            .unwrap();
        assert_ne!(a.key, later.key);
    }

    #[test]
    fn items_without_key_fields_are_refused_with_a_reason() {
        let reason = |kind: SourceKind, item: &str| kind.scan(item, &mut Vec::new()).unwrap_err();
        assert_eq!(
            reason(
                SourceKind::Detections,
                r#"{"ReceivedTime":"2024-05-14T09:00:00.000Z"}"#
            ),
            "no Id"
        );
        assert_eq!(reason(SourceKind::Threats, "[1]"), "not a JSON object");
        assert_eq!(
            reason(SourceKind::Threats, r#"{"sha256":"ab","last_found":null}"#),
            "last_found is null"
        );
        assert_eq!(
            reason(
                SourceKind::Threats,
                r#"{"sha256":"ab","last_found":"soon"}"#
            ),
            "unreadable last_found \"soon\""
        );
    }

    #[test]
    fn a_duplicate_top_level_key_is_refused_but_not_a_nested_one() {
        let mut names = Vec::new();
        let item = r#"{"sha256":"ab","x":{"a":1,"a":2},"last_found":"2024-05-14T09:00:00","name":1,"n\u0061me":2}"#;
        assert_eq!(
            SourceKind::Threats.scan(item, &mut names).unwrap_err(),
            "duplicate key \"name\""
        );
        let nested = r#"{"sha256":"ab","x":{"a":1,"a":2},"last_found":"2024-05-14T09:00:00"}"#;
        assert!(
            !SourceKind::Threats
                .scan(nested, &mut names)
                .unwrap()
                .reserved
        );
    }

    #[test]
    fn own_event_type_and_tenant_id_are_renamed_values_kept() {
        let item = r#"{"tenant_id": "other", "Id":"d1","event_type":{"x": [1]},"ReceivedTime":"2024-05-14T09:00:00.000Z"}"#;
        let scan = SourceKind::Detections.scan(item, &mut Vec::new()).unwrap();
        assert!(scan.reserved);
        let renamed = rename_reserved(item).unwrap();
        assert_eq!(
            renamed,
            r#"{"api_tenant_id":"other","Id":"d1","api_event_type":{"x": [1]},"ReceivedTime":"2024-05-14T09:00:00.000Z"}"#
        );
        assert_eq!(
            rename_reserved(r#"{"tenant_id":1,"api_tenant_id":2}"#).unwrap_err(),
            "duplicate key \"api_tenant_id\" after renaming"
        );
        // The written line reads back for crash recovery (output.rs): it
        // starts with our prefix, and its key and time are found again.
        let mut line = Vec::new();
        let prefix = line_prefix(SourceKind::Detections, "t-1");
        push_line(&mut line, &prefix, &renamed);
        assert!(line.starts_with(prefix.as_bytes()));
        let text = std::str::from_utf8(&line).unwrap();
        assert_eq!(SourceKind::Detections.meta(text).unwrap().key, "d1");
    }

    #[test]
    fn line_separators_become_escapes_of_the_same_value() {
        let item = "{\"m\":\"a\u{2028}b\u{2029}c\u{85}d \u{e9}\u{2019}\"}";
        let mut out = Vec::new();
        push_line(&mut out, &line_prefix(SourceKind::Threats, "t"), item);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "{\"event_type\":\"threat\",\"tenant_id\":\"t\",\"m\":\"a\\u2028b\\u2029c\\u0085d \u{e9}\u{2019}\"}\n"
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let original: serde_json::Value = serde_json::from_str(item).unwrap();
        assert_eq!(value["m"], original["m"]);
    }

    #[test]
    fn times_before_2000_or_a_day_ahead_are_implausible() {
        let started = DateTime::parse_from_rfc3339("2024-05-14T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let kind = SourceKind::Threats;
        assert!(kind.implausible_time(EARLIEST_EVENT, started).is_none());
        assert!(
            kind.implausible_time(EARLIEST_EVENT - TimeDelta::seconds(1), started)
                .is_some()
        );
        assert!(
            kind.implausible_time(started + MAX_AHEAD, started)
                .is_none()
        );
        assert!(
            kind.implausible_time(started + MAX_AHEAD + TimeDelta::seconds(1), started)
                .is_some()
        );
    }
}
