//! Reading one item: its key, its time and its top-level key names, in one
//! pass, with the field names its source's description gives.
//!
//! An item that cannot be placed (not an object, no key or time, an
//! unreadable or implausible time, a duplicate top-level key) gets a reason
//! instead; `run.rs` keeps it in the dead-letter file. The same reading finds
//! our own lines again in the output (crash recovery).
//!
//! An item from the API is also read through whole, every nested value, by
//! serde_json, the parser Vector's `parse_json` uses, the strictest reader of
//! the SIEM recipes: valid JSON it refuses (a number beyond an f64, nesting
//! deeper than 127) would be a line lost in the SIEM, so such an item is
//! refused here, with a reason. A lone UTF-16 surrogate escape (`\ud800`),
//! which it refuses too, costs its four hex digits only: the item is written
//! with `\ufffd` in its place, like invalid UTF-8, unless it is in the key.

use super::Source;
use super::line::{RESERVED, quoted};
use chrono::{DateTime, TimeDelta, Utc};
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Items dated before this cannot be events of this product (it is younger);
/// a year-1 or pre-1970 date is a broken item, not history.
pub const EARLIEST_EVENT: DateTime<Utc> = DateTime::from_timestamp_nanos(946_684_800_000_000_000);
/// Items dated more than this after the run started are broken, not early
/// (a day covers any clock skew): no window would ever hold them, so they
/// would vanish unreported.
pub const MAX_AHEAD: TimeDelta = TimeDelta::days(1);
/// A key longer than this is no real one (a sha256 is 64 bytes, an Id 36):
/// keys are kept in the checkpoint, which a server must not be able to grow
/// past its size cap.
pub const MAX_KEY_LEN: usize = 256;

/// Identity and time of one item, as needed for dedupe and windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemMeta {
    pub key: String,
    pub time: DateTime<Utc>,
}

/// What one pass over an item found.
#[derive(Debug)]
pub struct Scan<'a> {
    pub meta: ItemMeta,
    /// The item has a top-level key the tool writes (`event_type`,
    /// `tenant_id`, `devices`, `details`) of its own: write it through
    /// [`super::rename_reserved`].
    pub reserved: bool,
    /// The key field's text as sent (case kept): what a lookup names.
    /// Borrowed from the item unless it has escapes: most runs look nothing
    /// up, and an allocation per item shows in the throughput.
    pub id: Cow<'a, str>,
    /// The item with its lone surrogate escapes written as `\ufffd`, when it
    /// had any: what is written instead of the item.
    pub repaired: Option<String>,
}

impl Source {
    /// The dedupe key and the window time of one item, or why it has none:
    /// the key field's text without case, with the time when the key says so.
    /// Also reads our own lines back (crash recovery), whose `event_type` and
    /// `tenant_id` are ours.
    pub fn meta(&self, item: &str) -> Result<ItemMeta, String> {
        self.read(item, None, None).map(|scan| scan.meta)
    }

    /// [`Source::meta`] for an item from the API, in the same single
    /// pass: also refuses an item with a duplicate top-level key and notes
    /// reserved ones. `names` is scratch space, reused between items.
    pub fn scan<'a>(&self, item: &'a str, names: &mut Vec<u64>) -> Result<Scan<'a>, String> {
        self.read_from_api(item, names, None)
    }

    /// [`Source::scan`] for an item of a snapshot source from the API: it
    /// has no time of its own, its time is the snapshot's, `time`.
    pub fn scan_at<'a>(
        &self,
        item: &'a str,
        names: &mut Vec<u64>,
        time: DateTime<Utc>,
    ) -> Result<Scan<'a>, String> {
        self.read_from_api(item, names, Some(time))
    }

    /// [`Source::read`] with every value checked, and a second reading of
    /// the item with its lone surrogates replaced only when the first fails:
    /// serde_json refuses them, and they are rare.
    fn read_from_api<'a>(
        &self,
        item: &'a str,
        names: &mut Vec<u64>,
        given: Option<DateTime<Utc>>,
    ) -> Result<Scan<'a>, String> {
        names.clear();
        let why = match self.read(item, Some(names), given) {
            Ok(scan) => return Ok(scan),
            Err(why) => why,
        };
        let Some(repaired) = without_lone_surrogates(item) else {
            return Err(why);
        };
        let key_field = self.key.field;
        if changed_value(item, &repaired, key_field) {
            return Err(format!("{key_field} holds a lone surrogate escape"));
        }
        names.clear();
        let Scan {
            meta, reserved, id, ..
        } = self.read(&repaired, Some(names), given)?;
        let id = Cow::Owned(id.into_owned());
        Ok(Scan {
            meta,
            reserved,
            id,
            repaired: Some(repaired),
        })
    }

    /// With `given`, the item's time is that one, not read from the item.
    fn read<'a>(
        &self,
        item: &'a str,
        names: Option<&mut Vec<u64>>,
        given: Option<DateTime<Utc>>,
    ) -> Result<Scan<'a>, String> {
        if !item.trim_start().starts_with('{') {
            return Err("not a JSON object".to_string());
        }
        let key_field = self.key.field;
        let time_field = self.time_field();
        let mut de = serde_json::Deserializer::from_str(item);
        let found = de
            .deserialize_map(ItemVisitor {
                key_field,
                time_field: given.is_none().then_some(time_field),
                names,
            })
            .map_err(refused)?;
        if found.duplicate_hash
            && let Some(name) = duplicate_name(item)
        {
            return Err(format!("duplicate key {}", quoted(&name)));
        }
        let key = present(key_field, found.key)?;
        if key.len() > MAX_KEY_LEN {
            return Err(format!(
                "{key_field} is {} bytes long, more than {MAX_KEY_LEN}",
                key.len()
            ));
        }
        let time = match given {
            Some(time) => time,
            None => {
                let raw_time = present(time_field, found.time)?;
                self.parse_time(&raw_time)
                    .ok_or_else(|| format!("unreadable {time_field} {}", quoted(&raw_time)))?
            }
        };
        let id = key;
        let key = if self.key.with_time {
            format!("{}@{}", id.to_ascii_lowercase(), time.timestamp_micros())
        } else {
            id.to_ascii_lowercase()
        };
        Ok(Scan {
            meta: ItemMeta { key, time },
            reserved: found.reserved,
            id,
            repaired: None,
        })
    }

    /// Why an item's (valid) time cannot be placed, if it cannot: before
    /// [`EARLIEST_EVENT`] or more than [`MAX_AHEAD`] after the run started.
    pub fn implausible_time(&self, time: DateTime<Utc>, started: DateTime<Utc>) -> Option<String> {
        let field = self.time_field();
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

impl Source {
    /// Reads a time of this source's time field: the description's parser,
    /// or RFC 3339 for the snapshot time the tool itself writes.
    fn parse_time(&self, text: &str) -> Option<DateTime<Utc>> {
        match &self.shape {
            super::Shape::Windowed(windowed) => (windowed.parse_time)(text),
            super::Shape::Snapshot => DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
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

/// A key field's value: a string as [`Text`], or a whole number as its
/// digits (an API may send an id as either; both name the same event).
struct KeyText<'a>(Text<'a>);

impl<'de> Deserialize<'de> for KeyText<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a whole number")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<KeyText<'de>, E> {
                Ok(KeyText(Text(Cow::Borrowed(text))))
            }
            fn visit_str<E>(self, text: &str) -> Result<KeyText<'de>, E> {
                Ok(KeyText(Text(Cow::Owned(text.to_string()))))
            }
            fn visit_u64<E>(self, number: u64) -> Result<KeyText<'de>, E> {
                Ok(KeyText(Text(Cow::Owned(number.to_string()))))
            }
            fn visit_i64<E>(self, number: i64) -> Result<KeyText<'de>, E> {
                Ok(KeyText(Text(Cow::Owned(number.to_string()))))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
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

/// One pass over the top level of an item: the two fields it needs, and
/// (with `names`, an item from the API) a signature of every key name and the
/// other values read through and [`Checked`]; without, those are skipped
/// unread (our own lines, read back).
struct ItemVisitor<'s> {
    key_field: &'static str,
    /// `None`: the time is not the item's (a snapshot's items).
    time_field: Option<&'static str>,
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
                let key: Option<KeyText<'de>> = map.next_value()?;
                found.key = Some(key.map(|KeyText(text)| text));
            } else if self.time_field == Some(&*name) {
                found.time = Some(map.next_value()?);
            } else {
                found.reserved |= RESERVED.iter().any(|(reserved, _)| name == *reserved);
                if names.is_some() {
                    map.next_value::<Checked>()?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
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

/// A value read through whole and dropped: serde_json, reading it, refuses
/// what strict readers refuse (a number beyond an f64, nesting deeper than
/// 127, a lone surrogate escape), which skipping it ([`IgnoredAny`]) lets
/// through. The strings it reads are borrowed unless they have escapes, so
/// this costs little more than skipping.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// What a lookup's answer (`json`, valid JSON) becomes inside a line, where
/// it sits `depth` arrays and objects deep (a device item: the line and its
/// `devices` array, 2): `Ok(None)` as it came, `Ok(Some(_))` with its lone
/// surrogate escapes as `\ufffd`, or why strict readers refuse it (a number
/// beyond an f64, nesting too deep there) and it cannot be written. The
/// same checks as an item's, counted from the line's own object.
pub fn readable_inside(json: &str, depth: usize) -> Result<Option<String>, String> {
    let check = |json: &str| {
        let wrapped = format!("{}{json}{}", "[".repeat(depth), "]".repeat(depth));
        serde_json::from_str::<Checked>(&wrapped).map(|_| ())
    };
    let Err(err) = check(json) else {
        return Ok(None);
    };
    match without_lone_surrogates(json) {
        Some(repaired) if check(&repaired).is_ok() => Ok(Some(repaired)),
        Some(repaired) => Err(refused(check(&repaired).unwrap_err())),
        None => Err(refused(err)),
    }
}

/// `item` (valid JSON) with each `\u` escape of a lone UTF-16 surrogate
/// written as `\ufffd`, the same length; `None` when it has none.
fn without_lone_surrogates(item: &str) -> Option<String> {
    let unit = |text: &str, at: usize| {
        let escape = text.get(at..at + 6)?.strip_prefix("\\u")?;
        u16::from_str_radix(escape, 16).ok()
    };
    let mut repaired: Option<String> = None;
    let mut at = 0;
    while let Some(found) = item.get(at..).and_then(|rest| rest.find('\\')) {
        at += found;
        at += match unit(item, at) {
            Some(0xD800..=0xDBFF) if matches!(unit(item, at + 6), Some(0xDC00..=0xDFFF)) => 12,
            Some(0xD800..=0xDFFF) => {
                repaired
                    .get_or_insert_with(|| item.to_string())
                    .replace_range(at..at + 6, "\\ufffd");
                6
            }
            Some(_) => 6,
            // Any other escape is two bytes (`\\`, `\"`, `\n`...).
            None => 2,
        };
    }
    repaired
}

/// Whether a top-level field's value differs between `item` and `repaired`
/// (the same text but for [`without_lone_surrogates`], which keeps offsets).
fn changed_value(item: &str, repaired: &str, field: &str) -> bool {
    let Ok(Entries(entries)) = serde_json::from_str(repaired) else {
        return false;
    };
    entries
        .iter()
        .filter(|(name, _)| name == field)
        .any(|(_, value)| {
            let start = value.get().as_ptr() as usize - repaired.as_ptr() as usize;
            item.get(start..start + value.get().len()) != Some(value.get())
        })
}

/// Why an item from the API was refused: serde_json's words for valid JSON
/// that it and so Vector refuses are put plainly, the rest as [`unreadable`].
fn refused(err: serde_json::Error) -> String {
    let text = err.to_string();
    let plain = [
        ("number out of range", "a number beyond the range of an f64"),
        (
            "recursion limit exceeded",
            "nested deeper than 127 arrays and objects",
        ),
    ];
    plain
        .iter()
        .find_map(|(said, meant)| {
            let at = text.strip_prefix(said)?;
            Some(format!("{meant}{at}; readers such as Vector refuse it"))
        })
        .unwrap_or_else(|| unreadable(err))
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
pub(super) struct Entries<'a>(pub(super) Vec<(Cow<'a, str>, &'a RawValue)>);

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
/// hash match in [`Source::scan`]).
fn duplicate_name(item: &str) -> Option<String> {
    let Entries(entries) = serde_json::from_str(item).ok()?;
    entries.iter().enumerate().find_map(|(at, (name, _))| {
        entries[..at]
            .iter()
            .any(|(earlier, _)| earlier == name)
            .then(|| name.to_string())
    })
}

/// Why an item could not be read. serde_json quotes (escapes) the server
/// text it shows; the length is capped here.
pub(super) fn unreadable(err: serde_json::Error) -> String {
    const MAX_CHARS: usize = 200;
    let text = err.to_string();
    let mut shown: String = text.chars().take(MAX_CHARS).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    format!("unreadable item: {shown}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{SourceKind, line_prefix, push_line, rename_reserved};

    const THREATS: SourceKind = &super::super::threats::SOURCE;
    const DETECTIONS: SourceKind = &super::super::detections::SOURCE;

    fn raw(text: &str) -> &str {
        text
    }

    #[test]
    fn threat_key_is_sha256_and_last_found_in_any_spelling() {
        let a = THREATS
            .meta(raw(r#"{"sha256":"AB","last_found":"2018-01-21T15:45:46"}"#))
            .unwrap();
        let b = THREATS
            .meta(raw(
                r#"{"sha256":"ab","last_found":"2018-01-21T15:45:46.000Z"}"#,
            ))
            .unwrap();
        assert_eq!(a, b);
        let later = THREATS
            .meta(raw(r#"{"sha256":"ab","last_found":"2018-01-21T15:45:47"}"#))
            .unwrap();
        assert_ne!(a.key, later.key);
    }

    #[test]
    fn a_whole_number_key_is_read_as_its_digits() {
        let memory = crate::sources::from_name("memory-protection").unwrap();
        let number = memory
            .meta(r#"{"device_image_file_event_id":12345,"created":"2024-05-14T09:00:00"}"#)
            .unwrap();
        let text = memory
            .meta(r#"{"device_image_file_event_id":"12345","created":"2024-05-14T09:00:00.5Z"}"#)
            .unwrap();
        assert_eq!(number.key, text.key);
        assert_eq!(number.key, "12345");
        assert!(
            memory
                .meta(r#"{"device_image_file_event_id":1.5,"created":"2024-05-14T09:00:00"}"#)
                .is_err()
        );
    }

    #[test]
    fn items_without_key_fields_are_refused_with_a_reason() {
        let reason = |kind: SourceKind, item: &str| kind.scan(item, &mut Vec::new()).unwrap_err();
        assert_eq!(
            reason(DETECTIONS, r#"{"ReceivedTime":"2024-05-14T09:00:00.000Z"}"#),
            "no Id"
        );
        assert_eq!(reason(THREATS, "[1]"), "not a JSON object");
        assert_eq!(
            reason(THREATS, r#"{"sha256":"ab","last_found":null}"#),
            "last_found is null"
        );
        assert_eq!(
            reason(THREATS, r#"{"sha256":"ab","last_found":"soon"}"#),
            "unreadable last_found \"soon\""
        );
    }

    #[test]
    fn a_duplicate_top_level_key_is_refused_but_not_a_nested_one() {
        let mut names = Vec::new();
        let item = r#"{"sha256":"ab","x":{"a":1,"a":2},"last_found":"2024-05-14T09:00:00","name":1,"n\u0061me":2}"#;
        assert_eq!(
            THREATS.scan(item, &mut names).unwrap_err(),
            "duplicate key \"name\""
        );
        let nested = r#"{"sha256":"ab","x":{"a":1,"a":2},"last_found":"2024-05-14T09:00:00"}"#;
        assert!(!THREATS.scan(nested, &mut names).unwrap().reserved);
    }

    #[test]
    fn lone_surrogate_escapes_become_u_fffd_but_pairs_and_escaped_backslashes_stay() {
        let item = r#"{"sha256":"ab","last_found":"2024-05-14T09:00:00","n\ud800":"a\uDC00b","x":[{"y":"\ud83d\ude00 \\ud800 \ud800\ud800"}]}"#;
        let scan = THREATS.scan(item, &mut Vec::new()).unwrap();
        assert_eq!(scan.meta.key, "ab@1715677200000000");
        let repaired = scan.repaired.unwrap();
        assert_eq!(
            repaired,
            r#"{"sha256":"ab","last_found":"2024-05-14T09:00:00","n\ufffd":"a\ufffdb","x":[{"y":"\ud83d\ude00 \\ud800 \ufffd\ufffd"}]}"#
        );
        let value: serde_json::Value = serde_json::from_str(&repaired).unwrap();
        assert_eq!(value["x"][0]["y"], "\u{1F600} \\ud800 \u{FFFD}\u{FFFD}");
        let clean = r#"{"sha256":"ab","last_found":"2024-05-14T09:00:00","y":"\ud83d\ude00"}"#;
        assert!(
            THREATS
                .scan(clean, &mut Vec::new())
                .unwrap()
                .repaired
                .is_none()
        );
    }

    #[test]
    fn every_lone_surrogate_is_found_however_it_is_spelled_or_placed() {
        // (item's rest, as written): a nested key name, upper-case hex, one
        // after escaped backslashes, one before an escaped backslash or
        // `\u005c`, a low before a high, a high before a pair.
        for (rest, written) in [
            (r#""k":{"a":{"n\uDBFF":1}}"#, r#""k":{"a":{"n\ufffd":1}}"#),
            (r#""k":"\\\\\uD800""#, r#""k":"\\\\\ufffd""#),
            (r#""k":"\ud800\\ud800""#, r#""k":"\ufffd\\ud800""#),
            (r#""k":"\ud800\u005c""#, r#""k":"\ufffd\u005c""#),
            (r#""k":["\udc00\ud800"]"#, r#""k":["\ufffd\ufffd"]"#),
            (
                r#""k":"é\ud83d\ud83d\ude00""#,
                r#""k":"é\ufffd\ud83d\ude00""#,
            ),
        ] {
            let item = |rest: &str| {
                format!(r#"{{"sha256":"ab","last_found":"2024-05-14T09:00:00",{rest}}}"#)
            };
            let given = item(rest);
            let scan = THREATS.scan(&given, &mut Vec::new()).unwrap();
            let repaired = scan
                .repaired
                .unwrap_or_else(|| panic!("{rest} not repaired"));
            assert_eq!(repaired, item(written));
            serde_json::from_str::<serde_json::Value>(&repaired).unwrap();
        }
    }

    #[test]
    fn a_lone_surrogate_in_the_key_makes_the_item_unplaceable() {
        let item = r#"{"sha256":"a\ud800","last_found":"2024-05-14T09:00:00","x":"\udc00"}"#;
        assert_eq!(
            THREATS.scan(item, &mut Vec::new()).unwrap_err(),
            "sha256 holds a lone surrogate escape"
        );
    }

    #[test]
    fn numbers_beyond_an_f64_and_nesting_deeper_than_127_are_refused() {
        let item = |value: &str| {
            format!(r#"{{"sha256":"ab","last_found":"2024-05-14T09:00:00","x":{value}}}"#)
        };
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let reason = |value: &str| THREATS.scan(&item(value), &mut Vec::new()).err();
        for huge in [
            "1e999",
            "[-1e400]",
            &"9".repeat(400),
            r#"{"a":{"b":1E+309}}"#,
        ] {
            let why = reason(huge).unwrap_or_else(|| panic!("{huge} accepted"));
            assert!(
                why.starts_with("a number beyond the range of an f64 at line 1 column "),
                "{why}"
            );
            assert!(serde_json::from_str::<serde_json::Value>(&item(huge)).is_err());
        }
        // The item's own object is one level: 127 arrays in it make 128.
        let why = reason(&nested(127)).unwrap();
        assert!(
            why.starts_with("nested deeper than 127 arrays and objects at line 1 column "),
            "{why}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(&item(&nested(127))).is_err());
        for fine in [
            "1e-999",
            "1.7976931348623157e308",
            &nested(126),
            "\"1e999\"",
        ] {
            assert_eq!(reason(fine), None, "{fine}");
            serde_json::from_str::<serde_json::Value>(&item(fine)).unwrap();
        }
        // Our own lines read back (crash recovery) are not checked again.
        assert!(THREATS.meta(&item("1e999")).is_ok());
    }

    #[test]
    fn own_event_type_and_tenant_id_are_renamed_values_kept() {
        let item = r#"{"tenant_id": "other", "Id":"d1","event_type":{"x": [1]},"ReceivedTime":"2024-05-14T09:00:00.000Z"}"#;
        let scan = DETECTIONS.scan(item, &mut Vec::new()).unwrap();
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
        let prefix = line_prefix(DETECTIONS, "t-1");
        push_line(&mut line, &prefix, &renamed);
        assert!(line.starts_with(prefix.as_bytes()));
        let text = std::str::from_utf8(&line).unwrap();
        assert_eq!(DETECTIONS.meta(text).unwrap().key, "d1");
    }

    #[test]
    fn times_before_2000_or_a_day_ahead_are_implausible() {
        let started = DateTime::parse_from_rfc3339("2024-05-14T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let kind = THREATS;
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
