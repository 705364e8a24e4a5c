//! Durations, user-given times and the API's timestamp formats.
//!
//! All times inside the program are `DateTime<Utc>`. The API writes threat times
//! without a zone (`2018-01-21T15:45:46`, UTC) and detection times as RFC 3339
//! with `Z` and milliseconds; both are parsed leniently (optional fraction,
//! optional `Z`) because the sources disagree on the exact shape.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeDelta, Utc};
use std::time::Duration;

/// Parses `90s`, `10m`, `1h30m`, `2d`, `0`. A bare number is refused (except 0)
/// because "30" could mean seconds or minutes.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => {
                return Err(format!(
                    "'{text}' is not a duration (use s, m, h, d, e.g. 10m)"
                ));
            }
        };
        let value: u64 = digits
            .parse()
            .map_err(|_| format!("'{text}' is not a duration (a number must precede '{ch}')"))?;
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("'{text}' is too long a duration"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!(
            "'{text}' lacks a unit (use s, m, h, d, e.g. {text}s or {text}m)"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// The earliest time a user may give: nothing Cylance holds is older.
pub const EARLIEST_USER_TIME: &str = "2000-01-01T00:00:00Z";

/// Parses a time given by a user: RFC 3339, a date (midnight UTC) or an age
/// before `now` (`30d`, `12h`, `90m`). It must lie between
/// [`EARLIEST_USER_TIME`] and a day after `now`, so that no window arithmetic
/// on it can overflow.
pub fn parse_user_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let time = if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        Some(t.with_timezone(&Utc))
    } else if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Some(
            date.and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc(),
        )
    } else if let Ok(age) = parse_duration(text) {
        // An age past chrono's range is out of range like any other.
        Some(
            TimeDelta::from_std(age)
                .ok()
                .and_then(|age| now.checked_sub_signed(age))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        )
    } else {
        None
    };
    let Some(time) = time else {
        return Err(format!(
            "'{text}' is not a time (use RFC 3339 like 2024-05-01T00:00:00Z, a date like \
             2024-05-01, or an age like 30d, 12h, 90m)"
        ));
    };
    let earliest = DateTime::parse_from_rfc3339(EARLIEST_USER_TIME)
        .expect("a valid constant")
        .with_timezone(&Utc);
    if time < earliest || time > now + TimeDelta::days(1) {
        return Err(format!(
            "'{text}' is out of range: give a time from {} to a day from now",
            display(earliest)
        ));
    }
    Ok(time)
}

/// For durations `config` has bounded (years at most), which always fit.
pub fn to_delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// Parses an API timestamp: `2018-01-21T15:45:46`, with an optional fraction and
/// an optional `Z` or offset. Zone-less means UTC.
///
/// Every item goes through here, so the common shapes take a hand-written
/// path (chrono's format-string parser costs more than the rest of an item);
/// anything else falls back to chrono.
pub fn parse_api_time(text: &str) -> Option<DateTime<Utc>> {
    if let Some(t) = parse_common_utc(text) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    let naive = text.strip_suffix('Z').unwrap_or(text);
    NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// `YYYY-MM-DDTHH:MM:SS`, then an optional `.` and 1 to 9 digits, then an
/// optional `Z`; `None` for anything else.
fn parse_common_utc(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(number(0..4)? as i32, number(5..7)?, number(8..10)?)?;
    let mut rest = &b[19..];
    let mut nanos = 0;
    if let Some((b'.', digits)) = rest.split_first() {
        let count = digits.iter().take_while(|d| d.is_ascii_digit()).count();
        if count == 0 || count > 9 {
            return None;
        }
        let value = number(20..20 + count)?;
        nanos = value * 10u32.pow(9 - count as u32);
        rest = &digits[count..];
    }
    if !(rest.is_empty() || rest == b"Z") {
        return None;
    }
    let time = chrono::NaiveTime::from_hms_nano_opt(
        number(11..13)?,
        number(14..16)?,
        number(17..19)?,
        nanos,
    )?;
    Some(date.and_time(time).and_utc())
}

/// The threats endpoint's zone-less form, whole seconds: `2024-05-14T09:00:00`.
pub fn threat_query_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// The detections endpoint's form: `2024-05-14T09:00:00.000Z`.
pub fn detection_query_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// How times are shown to people: RFC 3339, whole seconds.
pub fn display(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration for people: `10m`, `1h30m`, `45s`.
pub fn display_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.is_zero() {
        return "0s".to_string();
    }
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let mut out = String::new();
    for (value, unit) in [(days, 'd'), (hours, 'h'), (minutes, 'm'), (seconds, 's')] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn durations_take_units_and_combinations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("30").unwrap_err().contains("lacks a unit"));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn user_times_are_rfc3339_dates_or_ages() {
        let now = utc("2024-05-14T12:00:00Z");
        assert_eq!(
            parse_user_time("2024-05-01T00:00:00Z", now),
            Ok(utc("2024-05-01T00:00:00Z"))
        );
        assert_eq!(
            parse_user_time("2024-05-01", now),
            Ok(utc("2024-05-01T00:00:00Z"))
        );
        assert_eq!(parse_user_time("12h", now), Ok(utc("2024-05-14T00:00:00Z")));
        assert!(parse_user_time("yesterday", now).is_err());
        for out_of_range in ["999999999d", "1999-12-31", "2024-05-16T00:00:00Z"] {
            assert!(
                parse_user_time(out_of_range, now)
                    .unwrap_err()
                    .contains("out of range"),
                "{out_of_range}"
            );
        }
    }

    #[test]
    fn api_times_parse_leniently_as_utc() {
        let want = utc("2018-01-21T15:45:46Z");
        assert_eq!(parse_api_time("2018-01-21T15:45:46"), Some(want));
        assert_eq!(parse_api_time("2018-01-21T15:45:46Z"), Some(want));
        assert_eq!(
            parse_api_time("2018-01-21T15:45:46.250"),
            Some(utc("2018-01-21T15:45:46.250Z"))
        );
        assert_eq!(
            parse_api_time("2018-01-21T15:45:46.123Z"),
            Some(utc("2018-01-21T15:45:46.123Z"))
        );
        assert_eq!(parse_api_time("21/01/2018"), None);
        assert_eq!(
            parse_api_time("2018-01-21T15:45:46.123456789Z"),
            Some(utc("2018-01-21T15:45:46.123456789Z"))
        );
        assert_eq!(parse_api_time("2018-02-30T15:45:46"), None, "no such day");
        assert_eq!(parse_api_time("2018-01-21T25:45:46"), None, "no such hour");
        assert_eq!(
            parse_api_time("2018-01-21T15:45:46+02:00"),
            Some(utc("2018-01-21T13:45:46Z")),
            "offsets take chrono's path"
        );
    }

    #[test]
    fn query_times_use_each_endpoints_form() {
        let t = utc("2024-05-14T09:00:00.5Z");
        assert_eq!(threat_query_time(t), "2024-05-14T09:00:00");
        assert_eq!(detection_query_time(t), "2024-05-14T09:00:00.500Z");
    }
}
