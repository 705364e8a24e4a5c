//! Writing one item as an output line.
//!
//! The output line is the API item exactly as it came, bytes and field order
//! included, with two keys put in front: `event_type` (from the source's
//! description) and `tenant_id`, and the keys the tool adds at the end: a
//! lookup's answer (`devices` on a threat line, `details` on a detection
//! line, with `--enrich`) and a device line's `snapshot_time`.
//!
//! The output contract for the tool's names (`RESERVED`): they are the only
//! top-level keys of those names on a line. An item that has its own
//! top-level key of such a name keeps it as `api_<name>` (`api_event_type`,
//! `api_tenant_id`, `api_devices`, `api_details`, `api_snapshot_time`; that
//! item alone is re-serialized: same keys, order and values, but not its
//! whitespace). No line has a duplicate top-level key: an item that has one
//! is rejected (the real API never sends such items). Raw U+2028, U+2029 and
//! U+0085 are written as `\u` escapes, the same JSON value, so that a line is
//! one line also for readers that split on them. A lone surrogate escape
//! (`\ud800`), which strict readers refuse, is written as `\ufffd`; an item
//! they would refuse otherwise is not written at all (`item.rs`).

use super::SourceKind;
use super::item::{Entries, unreadable};

/// The keys the tool writes on a line, and what an item's own top-level keys
/// of those names become: the two it puts first on each line, and those it
/// adds at the end. The added keys are reserved on every line of every
/// source, whether this run adds them or not, so that a line's shape does
/// not depend on the settings: a field `devices` is always ours.
pub(super) const RESERVED: [(&str, &str); 5] = [
    ("event_type", "api_event_type"),
    ("tenant_id", "api_tenant_id"),
    ("devices", "api_devices"),
    ("details", "api_details"),
    (super::SNAPSHOT_TIME_KEY, "api_snapshot_time"),
];

/// The item with its own top-level reserved keys ([`RESERVED`]) renamed to
/// `api_<name>`; values are kept byte for byte. An error (the reason to
/// reject it) when a new name is already taken.
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
        kind.event_type
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

/// [`push_line`] with one more key at the end of the object: `key` and
/// `value` (valid JSON text on one line, as [`push_compact`] makes it).
pub fn push_line_adding(out: &mut Vec<u8>, prefix: &str, item: &str, key: &str, value: &[u8]) {
    let text = item.trim();
    let body = text.strip_prefix('{').unwrap_or(text).trim_start();
    let body = body.strip_suffix('}').unwrap_or(body).trim_end();
    out.extend_from_slice(prefix.as_bytes());
    if !body.is_empty() {
        out.push(b',');
        push_one_line(out, body.as_bytes());
    }
    out.push(b',');
    out.extend_from_slice(
        serde_json::to_string(key)
            .expect("a string serializes")
            .as_bytes(),
    );
    out.push(b':');
    push_one_line(out, value);
    out.extend_from_slice(b"}\n");
}

/// Appends valid JSON text without the whitespace between its tokens (a
/// lookup's answer, which the API may pretty-print), each string and number
/// as it came; then one line as [`push_one_line`] makes it.
pub fn push_compact(out: &mut Vec<u8>, json: &[u8]) {
    let mut compact = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            in_string = escaped || byte != b'"';
            escaped = !escaped && byte == b'\\';
        } else if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        } else {
            in_string = byte == b'"';
        }
        compact.push(byte);
    }
    push_one_line(out, &compact);
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

    const THREATS: SourceKind = &super::super::threats::SOURCE;

    fn raw(text: &str) -> &str {
        text
    }

    #[test]
    fn line_keeps_item_bytes_and_puts_event_type_then_tenant_first() {
        let mut out = Vec::new();
        let prefix = line_prefix(THREATS, "t-1");
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
    fn added_keys_go_last_after_the_items_own() {
        let prefix = line_prefix(THREATS, "t");
        let mut out = Vec::new();
        push_line_adding(
            &mut out,
            &prefix,
            " {\"id\": \"a\"\n} ",
            "snapshot_time",
            b"\"x\"",
        );
        push_line_adding(&mut out, &prefix, "{ }", "snapshot_time", b"\"x\"");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"event_type\":\"threat\",\"tenant_id\":\"t\",\"id\": \"a\",\"snapshot_time\":\"x\"}\n\
             {\"event_type\":\"threat\",\"tenant_id\":\"t\",\"snapshot_time\":\"x\"}\n"
        );
    }

    #[test]
    fn line_separators_become_escapes_of_the_same_value() {
        let item = "{\"m\":\"a\u{2028}b\u{2029}c\u{85}d \u{e9}\u{2019}\"}";
        let mut out = Vec::new();
        push_line(&mut out, &line_prefix(THREATS, "t"), item);
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
    fn an_added_key_goes_last_on_one_line_also_for_an_empty_or_spread_item() {
        let prefix = line_prefix(THREATS, "t");
        let mut out = Vec::new();
        push_line_adding(
            &mut out,
            &prefix,
            "{\n  \"a\": 1\n}\n",
            "devices",
            b"[{\n \"id\": \"d\"}]",
        );
        push_line_adding(&mut out, &prefix, " { } ", "details", b"null");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"event_type\":\"threat\",\"tenant_id\":\"t\",\"a\": 1,\"devices\":[{  \"id\": \"d\"}]}\n\
             {\"event_type\":\"threat\",\"tenant_id\":\"t\",\"details\":null}\n"
        );
    }

    #[test]
    fn compact_drops_whitespace_between_tokens_only() {
        let mut out = Vec::new();
        push_compact(
            &mut out,
            b"{\n  \"a b\": [ 1 ,\t\"x \\\" y\" ],\r\n \"c\": \"\\\\\" }",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a b":[1,"x \" y"],"c":"\\"}"#
        );
    }
}
