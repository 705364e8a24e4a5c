//! `--max-rps`: at most that many requests in any one-second window, across
//! the threads of a run, retries and token requests included.
//!
//! A short run (an idle poll's three requests) goes out at once; a long one
//! is held to the rate, so that a concurrent backfill never causes a 429 by
//! itself.

use crate::control::RunControl;
use anyhow::Result;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keeps the start times of the last `max_rps` requests.
pub(super) struct Pacer {
    max_rps: usize,
    recent: Mutex<VecDeque<Instant>>,
}

impl Pacer {
    /// 0: no limit.
    pub(super) fn new(max_rps: u32) -> Pacer {
        Pacer {
            max_rps: max_rps as usize,
            recent: Mutex::new(VecDeque::with_capacity(max_rps as usize)),
        }
    }

    /// Waits for this request's slot: a second after the request `max_rps`
    /// requests back.
    pub(super) fn wait(&self, control: &RunControl) -> Result<()> {
        control.sleep(self.reserve().saturating_duration_since(Instant::now()))
    }

    /// Takes the next slot and says when it is.
    fn reserve(&self) -> Instant {
        let now = Instant::now();
        if self.max_rps == 0 {
            return now;
        }
        let mut recent = self.recent.lock().expect("pacer lock");
        let slot = if recent.len() < self.max_rps {
            now
        } else {
            let oldest = recent.pop_front().expect("the queue is full");
            (oldest + Duration::from_secs(1)).max(now)
        };
        recent.push_back(slot);
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_max_rps_goes_at_once_then_one_per_slot() {
        let pacer = Pacer::new(3);
        let start = Instant::now();
        let slots: Vec<Duration> = (0..7).map(|_| pacer.reserve() - start).collect();
        let second = Duration::from_secs(1);
        // Loose bounds: the slots are taken within a few microseconds.
        let near = |slot: Duration, at: Duration| slot >= at && slot < at + second / 10;
        for (i, at) in [0, 0, 0, 1, 1, 1, 2].into_iter().enumerate() {
            assert!(near(slots[i], second * at), "slot {i}: {:?}", slots[i]);
        }
    }

    #[test]
    fn zero_means_no_limit() {
        let pacer = Pacer::new(0);
        let start = Instant::now();
        for _ in 0..100 {
            assert!(pacer.reserve() - start < Duration::from_millis(100));
        }
    }
}
