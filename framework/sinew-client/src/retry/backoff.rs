use std::{sync::Arc, time::Duration};

use crate::{RetryPolicy, Rng};

/// gRFC A6 exponential backoff with full jitter.
///
/// The wait before retry `n` (1, 2, ...) is uniform in
/// `[0, min(initial_backoff * multiplier^(n-1), max_backoff)]`, drawn from
/// the layer's seeded [`Rng`] so that tests can predict it. Waits are whole
/// milliseconds, the resolution of tokio's timer: a finer wait would be
/// rounded by the timer anyway, and would make paused-time tests inexact.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial_ms: f64,
    max_ms: f64,
    multiplier: f64,
    /// Retries since the sequence last started: the exponent.
    retries: i32,
    rng: Arc<Rng>,
}

// === impl Backoff ===

impl Backoff {
    pub(crate) fn new(policy: &RetryPolicy, rng: Arc<Rng>) -> Self {
        Self {
            initial_ms: policy.initial_backoff.as_secs_f64() * 1000.0,
            max_ms: policy.max_backoff.as_secs_f64() * 1000.0,
            multiplier: policy.backoff_multiplier,
            retries: 0,
            rng,
        }
    }

    /// The wait before the next retry; each call draws once from the rng.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let ceiling = self.initial_ms * self.multiplier.powi(self.retries);
        // A NaN or negative multiplier from a hand-written config must not
        // panic or stall: NaN means the cap, a negative product no wait.
        let ceiling = if ceiling.is_nan() {
            self.max_ms
        } else {
            ceiling.clamp(0.0, self.max_ms)
        };
        self.retries = self.retries.saturating_add(1);
        // `as` saturates; `next_f64` is below 1, so this stays under the
        // ceiling.
        Duration::from_millis((self.rng.next_f64() * ceiling).floor() as u64)
    }

    /// Starts the sequence over from `initial_backoff`, as gRFC A6 asks
    /// after the server pushed back.
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
