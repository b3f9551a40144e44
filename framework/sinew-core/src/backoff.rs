//! Exponential backoff with jitter: the one rule behind every wait before
//! trying again (a retried call, a reconnect, a failed export).
//!
//! The `n`-th wait's ceiling is `initial * multiplier^n`, capped at `max`;
//! the wait itself is drawn in `[low * ceiling, high * ceiling]` from a
//! random number in `[0, 1)` the caller gives, so that callers that failed
//! together do not come back together, and tests that seed the draws get
//! the same waits every time.

use std::time::Duration;

/// An exponential backoff; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    low: f64,
    high: f64,
}

// === impl Backoff ===

impl Backoff {
    /// Waits from `initial`, growing by `multiplier` each time up to `max`,
    /// with full jitter: each drawn anywhere in `[0, ceiling]`.
    pub const fn new(initial: Duration, max: Duration, multiplier: f64) -> Self {
        Self {
            initial,
            max,
            multiplier,
            low: 0.0,
            high: 1.0,
        }
    }

    /// Draws each wait in `[low * ceiling, high * ceiling]` instead: `(0.5,
    /// 1.0)` keeps at least half of each step, `(1.0, 1.5)` adds up to half
    /// of it on top. Fractions that are negative or not finite count as 0.
    pub const fn jitter(mut self, low: f64, high: f64) -> Self {
        self.low = low;
        self.high = high;
        self
    }

    /// The ceiling of the wait after `n` earlier ones: `initial *
    /// multiplier^n`, capped at `max` (and at `max` too when the product is
    /// not a number, as with an infinite multiplier).
    pub fn ceiling(&self, n: u32) -> Duration {
        let exponent = i32::try_from(n).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        if secs.is_nan() || secs >= self.max.as_secs_f64() {
            self.max
        } else if secs <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The wait after `n` earlier ones, at `draw` (in `[0, 1)`) of the way
    /// through its jitter range.
    pub fn wait(&self, n: u32, draw: f64) -> Duration {
        let fraction = self.low + draw * (self.high - self.low);
        if !fraction.is_finite() || fraction <= 0.0 {
            return Duration::ZERO;
        }
        self.ceiling(n).mul_f64(fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceilings_grow_by_the_multiplier_up_to_the_cap() {
        let backoff = Backoff::new(100 * MS, 500 * MS, 3.0);
        let ceilings: Vec<Duration> = (0..5).map(|n| backoff.ceiling(n)).collect();
        assert_eq!(ceilings, [100 * MS, 300 * MS, 500 * MS, 500 * MS, 500 * MS]);
        assert_eq!(backoff.ceiling(u32::MAX), 500 * MS);
    }

    #[test]
    fn waits_fall_in_the_jitter_range() {
        let full = Backoff::new(100 * MS, 10_000 * MS, 2.0);
        assert_eq!(full.wait(1, 0.0), Duration::ZERO);
        assert_eq!(full.wait(1, 0.5), 100 * MS);
        let half = full.jitter(0.5, 1.0);
        assert_eq!(half.wait(2, 0.0), 200 * MS);
        assert_eq!(half.wait(2, 0.5), 300 * MS);
        let above = full.jitter(1.0, 1.5);
        assert_eq!(above.wait(0, 0.0), 100 * MS);
        assert_eq!(above.wait(0, 0.5), 125 * MS);
        for draw in [0.0, 0.25, 0.999_999] {
            let wait = above.wait(3, draw);
            assert!((800 * MS..=1200 * MS).contains(&wait), "{wait:?}");
        }
    }

    #[test]
    fn odd_multipliers_and_fractions_stay_within_bounds() {
        for multiplier in [f64::NAN, -2.0, f64::INFINITY, 1e308, 0.0] {
            let backoff = Backoff::new(100 * MS, 500 * MS, multiplier);
            for n in 0..10 {
                assert!(backoff.wait(n, 0.999) <= 500 * MS, "{multiplier} {n}");
            }
        }
        let odd = Backoff::new(100 * MS, 500 * MS, 2.0).jitter(f64::NAN, -1.0);
        assert_eq!(odd.wait(1, 0.5), Duration::ZERO);
    }
}
