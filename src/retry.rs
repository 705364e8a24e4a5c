//! The retry policy, in one place: what is transient, how long to wait, when
//! to give up.
//!
//! Transient: transport errors and timeouts, 5xx other than 501, 429, and a
//! 200 whose body is not the JSON we expect. Everything else fails at once
//! with its own exit code (the status table in `api::request`).
//!
//! One [`Budget`] per logical request (one page, one object, one token),
//! shared by every kind of failure, so that no kind starts a fresh count:
//! at most [`RetryPolicy::attempts`] attempts in all (429s and malformed
//! bodies included), at most [`RetryPolicy::malformed_attempts`] of them
//! malformed, at most [`RetryPolicy::max_total_wait`] of waiting in all, and
//! no wait that would end past `--max-runtime`. Waits are exponential backoff
//! with full jitter, or the server's `Retry-After` on a 429.

use chrono::{DateTime, Utc};
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per logical request, the first included, whatever failed.
    pub attempts: u32,
    /// Of those, attempts answered by a 200 whose body is not usable: a
    /// server that keeps sending garbage is not having a bad moment.
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

/// One failed attempt, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure<'a> {
    /// No answer (connection, timeout) or a transient status (5xx).
    Transient,
    /// 429, with the server's `Retry-After` value if it sent one.
    RateLimited { retry_after: Option<&'a str> },
    /// A 200 whose body is not what the endpoint returns.
    Malformed,
}

/// Why a request stops being retried. Shown after the failure it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GiveUp {
    /// `malformed_attempts` answers in a row were unusable: a protocol error.
    Malformed,
    /// Every attempt of the budget failed.
    Attempts(u32),
    /// The next wait would take the request past `max_total_wait`.
    TotalWait { wait: Duration, budget: Duration },
    /// The next wait would take the run past `--max-runtime`.
    Runtime { wait: Duration },
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUp::Malformed => write!(f, "the answer was unusable every time"),
            GiveUp::Attempts(n) => write!(f, "gave up after {n} attempts"),
            GiveUp::TotalWait { wait, budget } => write!(
                f,
                "waiting {}s more would exceed the retry budget of {}s",
                wait.as_secs(),
                budget.as_secs()
            ),
            GiveUp::Runtime { wait } => write!(
                f,
                "waiting {}s more would exceed --max-runtime",
                wait.as_secs()
            ),
        }
    }
}

/// What one logical request has used of its policy so far.
#[derive(Debug)]
pub struct Budget<'p> {
    policy: &'p RetryPolicy,
    failed: u32,
    malformed: u32,
    waited: Duration,
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

    /// A fresh budget, for one logical request.
    pub fn budget(&self) -> Budget<'_> {
        Budget {
            policy: self,
            failed: 0,
            malformed: 0,
            waited: Duration::ZERO,
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

impl Budget<'_> {
    /// Records a failed attempt; returns how long to wait before the next
    /// one, or why there is none. `time_left` is what `--max-runtime` leaves.
    pub fn next_wait(
        &mut self,
        failure: Failure<'_>,
        time_left: Option<Duration>,
    ) -> Result<Duration, GiveUp> {
        self.failed += 1;
        if failure == Failure::Malformed {
            self.malformed += 1;
            if self.malformed >= self.policy.malformed_attempts {
                return Err(GiveUp::Malformed);
            }
        }
        if self.failed >= self.policy.attempts {
            return Err(GiveUp::Attempts(self.failed));
        }
        let told = match failure {
            Failure::RateLimited { retry_after } => {
                retry_after.and_then(|value| parse_retry_after(value, Utc::now()))
            }
            _ => None,
        };
        let wait = told.unwrap_or_else(|| self.policy.backoff(self.failed));
        // Saturating: a Retry-After of u64::MAX seconds must not overflow.
        if self.waited.saturating_add(wait) > self.policy.max_total_wait {
            return Err(GiveUp::TotalWait {
                wait,
                budget: self.policy.max_total_wait,
            });
        }
        if time_left.is_some_and(|left| wait >= left) {
            return Err(GiveUp::Runtime { wait });
        }
        self.waited += wait;
        Ok(wait)
    }
}

/// 5xx except 501 (not implemented: retrying cannot help), and 429.
pub fn is_transient(status: u16) -> bool {
    status == 429 || (500..600).contains(&status) && status != 501
}

/// Reads a `Retry-After` header: delay-seconds or an HTTP date (RFC 9110).
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
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

    fn policy() -> RetryPolicy {
        RetryPolicy::new(Duration::from_millis(10))
    }

    /// Feeds failures until the budget gives up; returns the waits granted.
    fn run(budget: &mut Budget, failures: &[Failure]) -> (Vec<Duration>, Option<GiveUp>) {
        let mut waits = Vec::new();
        for failure in failures {
            match budget.next_wait(*failure, None) {
                Ok(wait) => waits.push(wait),
                Err(give_up) => return (waits, Some(give_up)),
            }
        }
        (waits, None)
    }

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
    fn every_kind_of_failure_shares_one_attempt_count() {
        let policy = policy();
        let mut budget = policy.budget();
        let limited = Failure::RateLimited { retry_after: None };
        let (waits, give_up) = run(
            &mut budget,
            &[
                Failure::Transient,
                Failure::Malformed,
                limited,
                Failure::Malformed,
                Failure::Transient,
                Failure::Transient,
            ],
        );
        assert_eq!(waits.len(), 4, "4 retries after 4 failures");
        assert_eq!(give_up, Some(GiveUp::Attempts(5)));
    }

    #[test]
    fn malformed_answers_have_a_smaller_sub_limit() {
        let policy = policy();
        let mut budget = policy.budget();
        let (waits, give_up) = run(&mut budget, &[Failure::Malformed; 5]);
        assert_eq!(waits.len(), 2);
        assert_eq!(give_up, Some(GiveUp::Malformed));
    }

    #[test]
    fn a_retry_after_of_zero_cannot_retry_forever() {
        let policy = policy();
        let mut budget = policy.budget();
        let zero = Failure::RateLimited {
            retry_after: Some("0"),
        };
        let (waits, give_up) = run(&mut budget, &[zero; 10]);
        assert_eq!(waits, vec![Duration::ZERO; 4]);
        assert_eq!(give_up, Some(GiveUp::Attempts(5)));
    }

    #[test]
    fn waits_of_every_kind_add_up_to_one_total() {
        let policy = RetryPolicy::new(Duration::from_secs(60));
        let mut budget = policy.budget();
        let told = |s| Failure::RateLimited {
            retry_after: Some(s),
        };
        // 100 s told, then a malformed body's backoff of 30 to 60 s: over 120.
        assert_eq!(
            budget.next_wait(told("100"), None),
            Ok(Duration::from_secs(100))
        );
        match budget.next_wait(Failure::Malformed, None) {
            Err(GiveUp::TotalWait { budget, .. }) => assert_eq!(budget.as_secs(), 120),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_wait_may_outlast_the_run() {
        let policy = policy();
        let mut budget = policy.budget();
        let told = Failure::RateLimited {
            retry_after: Some("5"),
        };
        assert_eq!(
            budget.next_wait(told, Some(Duration::from_secs(5))),
            Err(GiveUp::Runtime {
                wait: Duration::from_secs(5)
            })
        );
        assert_eq!(
            budget.next_wait(told, Some(Duration::from_secs(6))),
            Ok(Duration::from_secs(5))
        );
    }

    #[test]
    fn transient_statuses_are_5xx_but_501_and_429() {
        let transient: Vec<u16> = (100..600).filter(|s| is_transient(*s)).collect();
        let mut expected = vec![429, 500];
        expected.extend(502..600);
        assert_eq!(transient, expected);
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
