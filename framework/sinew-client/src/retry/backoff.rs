use std::{sync::Arc, time::Duration};

use crate::{RetryPolicy, Rng};

/// gRFC A6 exponential backoff with full jitter, by sinew-core's
/// [`Backoff`](sinew_core::backoff::Backoff).
///
/// The wait before retry `n` (1, 2, ...) is uniform in
/// `[0, min(initial_backoff * multiplier^(n-1), max_backoff)]`, drawn from
/// the layer's seeded [`Rng`] so that tests can predict it. Waits are whole
/// milliseconds, the resolution of tokio's timer: a finer wait would be
/// rounded by the timer anyway, and would make paused-time tests inexact.
#[derive(Debug)]
pub(crate) struct Backoff {
    rule: sinew_core::backoff::Backoff,
    /// Retries since the sequence last started: the exponent.
    retries: u32,
    rng: Arc<Rng>,
}

// === impl Backoff ===

impl Backoff {
    pub(crate) fn new(policy: &RetryPolicy, rng: Arc<Rng>) -> Self {
        Self {
            rule: sinew_core::backoff::Backoff::new(
                policy.initial_backoff,
                policy.max_backoff,
                policy.backoff_multiplier,
            ),
            retries: 0,
            rng,
        }
    }

    /// The wait before the next retry; each call draws once from the rng.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.rule.wait(self.retries, self.rng.next_f64());
        self.retries = self.retries.saturating_add(1);
        Duration::from_millis(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
    }

    /// Starts the sequence over (after server pushback).
    pub(crate) fn reset(&mut self) {
        self.retries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            backoff_multiplier: 3.0,
            retryable_codes: crate::CodeSet::EMPTY,
        }
    }

    #[test]
    fn waits_follow_the_seeded_draws_under_growing_ceilings() {
        let mut backoff = Backoff::new(&policy(), Arc::new(Rng::seeded(42)));
        let draws = Rng::seeded(42);
        // Ceilings: 100, 300, 900 -> 500, 2700 -> 500.
        for ceiling in [100.0, 300.0, 500.0, 500.0] {
            let expected = Duration::from_millis((draws.next_f64() * ceiling).floor() as u64);
            assert_eq!(backoff.next_wait(), expected);
        }
        backoff.reset();
        let expected = Duration::from_millis((draws.next_f64() * 100.0).floor() as u64);
        assert_eq!(backoff.next_wait(), expected);
    }

    #[test]
    fn waits_stay_within_the_cap() {
        let mut backoff = Backoff::new(&policy(), Arc::new(Rng::seeded(1)));
        for _ in 0..1000 {
            assert!(backoff.next_wait() < Duration::from_millis(500));
        }
    }

    #[test]
    fn odd_multipliers_do_not_panic() {
        for multiplier in [f64::NAN, -2.0, f64::INFINITY, 1e308] {
            let policy = RetryPolicy {
                backoff_multiplier: multiplier,
                ..policy()
            };
            let mut backoff = Backoff::new(&policy, Arc::new(Rng::seeded(3)));
            for _ in 0..10 {
                assert!(backoff.next_wait() <= Duration::from_millis(500));
            }
        }
    }
}
