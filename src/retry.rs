//! The retry policy, in one place: what is retried, how long to wait, when to
//! give up.
//!
//! Transient failures (transport errors, timeouts, 5xx other than 501, 429,
//! and bodies that are not the JSON we expect) are retried with exponential
//! backoff and full jitter, or after the server's `Retry-After`. Everything
//! else fails at once with its own exit code (see `api`).

use chrono::{DateTime, Utc};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per request for transport errors and 5xx, the first included.
    pub attempts: u32,
    /// Attempts per request for a 200 whose body is not a usable page.
    pub malformed_attempts: u32,
    /// First backoff step; doubled each time up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Total time one request may spend waiting across all its retries,
    /// 429s included; past it the run gives up with exit 75.
    pub max_total_wait: Duration,
    /// The command runs again on a timer (poll), so a give-up message says
    /// it will be tried again next run; `check` and `backfill` are run by hand.
    pub again_next_run: bool,
}

impl RetryPolicy {
    pub fn new(base_delay: Duration) -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            malformed_attempts: 3,
            base_delay,
            max_delay: Duration::from_secs(60),
            max_total_wait: Duration::from_secs(120),
            again_next_run: false,
        }
    }

    /// The wait before retry number `retry` (1-based): full jitter over
    /// `[step/2, step]`, where step doubles from `base_delay`. Jitter keeps many
    /// tenants' timers from retrying in lockstep.
    pub fn backoff(&self, retry: u32) -> Duration {
        let step = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_delay);
        let half = step / 2;
        let random = uuid::Uuid::new_v4().as_u128() as u64;
        let jitter_nanos = match half.as_nanos() as u64 {
            0 => 0,
            span => random % span,
        };
        half + Duration::from_nanos(jitter_nanos)
    }
}

/// Reads a `Retry-After` header: delay-seconds or an HTTP date (RFC 9110).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (date.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let policy = RetryPolicy::new(Duration::from_secs(2));
        for (retry, step) in [(1, 2), (2, 4), (3, 8), (10, 60)] {
            let wait = policy.backoff(retry);
            let step = Duration::from_secs(step);
            assert!(wait >= step / 2 && wait <= step, "retry {retry}: {wait:?}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
