//! What differs between the event sources: endpoint, query, keys, timestamps.
//!
//! Everything else (paging, windows, dedupe, writing) is shared, so adding a
//! source means adding a variant here. The output line is the API item exactly
//! as it came, bytes and field order included, with two keys put in front:
//! `event_type` and `tenant_id`.

use crate::timefmt::{detection_query_time, parse_api_time, threat_query_time};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    Threats,
    Detections,
}

/// How much wider than our window we ask the server for: its bounds may be
/// inclusive or exclusive and its clock is not ours. We keep exactly our
/// half-open window on the client.
pub const SERVER_WINDOW_PAD: TimeDelta = TimeDelta::seconds(60);

/// Identity and time of one item, as needed for dedupe and windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemMeta {
    pub key: String,
    pub time: DateTime<Utc>,
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

    pub fn from_event_type(event_type: &str) -> Option<SourceKind> {
        SourceKind::ALL
            .into_iter()
            .find(|kind| kind.event_type() == event_type)
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

    /// The dedupe key and the window time of one item. The threat key is
    /// `sha256` + `last_found` (a file found again later is a new event); the
    /// detection key is its stable `Id`.
    pub fn meta(self, item: &str) -> Result<ItemMeta, String> {
        match self {
            SourceKind::Threats => {
                let fields: ThreatFields = serde_json::from_str(item).map_err(|err| {
                    format!("threat item is not an object with sha256 and last_found: {err}")
                })?;
                let sha256 = fields.sha256.ok_or("threat item without sha256")?;
                let found = fields.last_found.ok_or("threat item without last_found")?;
                let time = parse_api_time(&found)
                    .ok_or_else(|| format!("threat {sha256}: unreadable last_found '{found}'"))?;
                Ok(ItemMeta {
                    key: format!(
                        "{}@{}",
                        sha256.to_ascii_lowercase(),
                        time.timestamp_micros()
                    ),
                    time,
                })
            }
            SourceKind::Detections => {
                let fields: DetectionFields = serde_json::from_str(item).map_err(|err| {
                    format!("detection item is not an object with Id and ReceivedTime: {err}")
                })?;
                let id = fields.id.ok_or("detection item without Id")?;
                let received = fields
                    .received_time
                    .ok_or("detection item without ReceivedTime")?;
                let time = parse_api_time(&received).ok_or_else(|| {
                    format!("detection {id}: unreadable ReceivedTime '{received}'")
                })?;
                Ok(ItemMeta {
                    key: id.to_ascii_lowercase(),
                    time,
                })
            }
        }
    }
}

#[derive(Deserialize)]
struct ThreatFields<'a> {
    #[serde(borrow)]
    sha256: Option<Cow<'a, str>>,
    #[serde(borrow)]
    last_found: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DetectionFields<'a> {
    #[serde(rename = "Id", borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "ReceivedTime", borrow)]
    received_time: Option<Cow<'a, str>>,
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
/// own bytes are kept; a raw newline can only be whitespace between tokens in
/// valid JSON, so folding it to a space keeps the line one line.
pub fn push_line(out: &mut Vec<u8>, prefix: &str, item: &str) {
    let text = item.trim_start();
    let body = text.strip_prefix('{').unwrap_or(text).trim_start();
    out.extend_from_slice(prefix.as_bytes());
    if !body.starts_with('}') {
        out.push(b',');
    }
    let start = out.len();
    out.extend_from_slice(body.as_bytes());
    if body.contains(['\n', '\r']) {
        for byte in &mut out[start..] {
            if *byte == b'\n' || *byte == b'\r' {
                *byte = b' ';
            }
        }
    }
    out.push(b'\n');
}

/// What a line of the output file says about itself, for crash recovery.
#[derive(Deserialize)]
pub struct LineHead<'a> {
    #[serde(borrow)]
    pub event_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub tenant_id: Option<Cow<'a, str>>,
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
        let err = SourceKind::Detections
            .meta(raw(r#"{"ReceivedTime":"2024-05-14T09:00:00.000Z"}"#))
            .unwrap_err();
        assert_eq!(err, "detection item without Id");
        assert!(SourceKind::Threats.meta(raw("[1]")).is_err());
    }
}
