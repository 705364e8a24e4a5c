//! The API's time forms, in one place: formatting (for seeding the fake and for
//! tests' expectations) and the fake's strict parsing of query parameters.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeDelta, Utc};

/// The threats' (and memory protection's, devices') zone-less form,
/// `2024-05-14T09:00:00`.
pub fn threat_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// The detections' form, RFC 3339 with milliseconds and `Z`,
/// `2024-05-14T09:00:00.123Z`.
pub fn detection_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `now - minutes`.
pub fn minutes_ago(minutes: i64) -> DateTime<Utc> {
    Utc::now() - TimeDelta::minutes(minutes)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zone {
    /// `2024-05-14T09:00:00`, optional fraction, optional `Z`.
    Optional,
    /// `2024-05-14T09:00:00Z`, optional fraction, `Z` required.
    Required,
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction][Z]` strictly (exact digit counts, 1-9
/// fraction digits), as UTC.
pub(crate) fn parse_timestamp(s: &str, zone: Zone) -> Option<NaiveDateTime> {
    let s = match (zone, s.strip_suffix('Z')) {
        (_, Some(bare)) => bare,
        (Zone::Optional, None) => s,
        (Zone::Required, None) => return None,
    };
    let bytes = s.as_bytes();
    if bytes.len() < 19 {
        return None;
    }
    let shape_ok = bytes[..19].iter().enumerate().all(|(i, &b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 => b == b':',
        _ => b.is_ascii_digit(),
    });
    let fraction = &bytes[19..];
    let fraction_ok = fraction.is_empty()
        || (fraction[0] == b'.'
            && (2..=10).contains(&fraction.len())
            && fraction[1..].iter().all(u8::is_ascii_digit));
    if !(shape_ok && fraction_ok) {
        return None;
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_through_the_strict_parser() {
        let at = DateTime::parse_from_rfc3339("2024-05-14T09:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(threat_time(at), "2024-05-14T09:00:00");
        assert_eq!(detection_time(at), "2024-05-14T09:00:00.123Z");
        let parsed = parse_timestamp(&detection_time(at), Zone::Required).unwrap();
        assert_eq!(parsed.and_utc(), at);
        assert!(parse_timestamp(&threat_time(at), Zone::Required).is_none());
        assert!(parse_timestamp("2024-05-14 09:00:00", Zone::Optional).is_none());
        assert!(parse_timestamp("2024-05-14T09:00:00.", Zone::Optional).is_none());
    }
}
