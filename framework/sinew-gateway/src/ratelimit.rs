//! Token buckets per route and per client identity.
//!
//! A [`Limiter`] holds one bucket per key, a key being a route name and a
//! client identity. The route-wide bucket of a route is the key with the
//! empty client identity `""`, so a caller that limits both a route and
//! each of its clients makes two takes, per client first: a client over
//! its own rate is then refused without spending the route's tokens.
//!
//! ```ignore
//! limiter.take(route, client, per_client)?; // this client's bucket
//! limiter.take(route, "", route_wide)?; // everyone's bucket on `route`
//! ```
//!
//! (An anonymous caller must so be given an identity other than `""`.)
//!
//! Each bucket is kept as the time it needs to refill, which is exact
//! integer arithmetic on [`Duration`]s: a bucket of `burst` tokens that
//! gains one every `1 / per_second` seconds passes a call while it is
//! less than `burst - 1` intervals short of full (it still has a token),
//! and otherwise tells the caller how long until it has one.
//!
//! The clock is [`tokio::time::Instant`], so that tests with a paused
//! clock drive it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How many buckets a [`Limiter`] keeps by default.
pub(crate) const DEFAULT_MAX_KEYS: usize = 100_000;

/// A rate: `per_second` tokens a second, at most `burst` saved up.
///
/// A rate that can never pass a call, with `burst` 0 or a `per_second`
/// that is not above zero (or NaN), refuses every call with a
/// `retry_after` of [`Duration::MAX`]; an infinite `per_second` passes
/// every call. A rate so slow that one token takes longer than
/// [`Duration::MAX`] is taken as one that never passes a call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    /// Tokens added a second (need not be whole: 0.5 is one every two
    /// seconds).
    pub(crate) per_second: f64,
    /// The most tokens a bucket saves up, so the most calls that pass at
    /// once after a quiet spell. A new bucket starts full.
    pub(crate) burst: u32,
}

impl Rate {
    /// The time between two tokens, `None` if this rate never passes a
    /// call.
    fn interval(self) -> Option<Duration> {
        if self.burst == 0 || self.per_second.is_nan() || self.per_second <= 0.0 {
            return None;
        }
        Duration::try_from_secs_f64(1.0 / self.per_second).ok()
    }
}

/// Token buckets keyed by (route name, client identity).
///
/// Shared across tasks through `&self`: one mutex around the buckets,
/// held for a lookup and a few additions and never across an await.
///
/// Bounded: at most `max_keys` buckets. When a new key finds the table
/// full, every bucket that is full (idle long enough to have refilled) is
/// dropped first, since it holds nothing that a new bucket would not. If
/// that frees less than a sixteenth of the table, the buckets touched
/// least recently are dropped as well until a sixteenth is free. Those
/// are the keys least likely to come back soon; one that does comes back
/// to a full bucket, so under a flood of more distinct identities than
/// `max_keys`, the oldest clients are forgiven what they owed: memory
/// stays bounded at the price of exactness. Making room a sixteenth at a
/// time keeps that sweep over the whole table (linear in its size) to
/// once every `max_keys / 16` new keys, instead of once each.
///
/// Keys are kept as given: a caller that takes client identities from
/// requests bounds their length before it takes, or a flood of long ones
/// costs `max_keys` times that length.
#[derive(Debug)]
pub(crate) struct Limiter {
    max_keys: usize,
    state: Mutex<State>,
}

/// The buckets, by route and then by client, so that a lookup borrows the
/// caller's strings and allocates nothing.
#[derive(Debug, Default)]
struct State {
    routes: HashMap<Box<str>, HashMap<Box<str>, Bucket>>,
    /// How many buckets there are, over all routes.
    len: usize,
    /// Counts takes: a bucket's `touched` is the count at its last take,
    /// so the least recently touched bucket has the smallest.
    clock: u64,
}

/// One key's bucket.
#[derive(Debug)]
struct Bucket {
    /// How long the bucket needs to refill to `burst` tokens, as of `at`.
    debt: Duration,
    /// When `debt` was last brought up to date.
    at: Instant,
    /// The limiter's clock at this bucket's last take.
    touched: u64,
}

impl Bucket {
    /// Whether the bucket has refilled by `now`.
    fn is_full(&self, now: Instant) -> bool {
        self.debt <= now.saturating_duration_since(self.at)
    }

    /// Takes a token at `now`, one coming every `interval`; a token is
    /// left while the bucket is at most `tolerance` short of full.
    fn take(
        &mut self,
        now: Instant,
        interval: Duration,
        tolerance: Duration,
    ) -> Result<(), Duration> {
        self.debt = self
            .debt
            .saturating_sub(now.saturating_duration_since(self.at));
        self.at = now;
        if self.debt > tolerance {
            return Err(self.debt - tolerance);
        }
        self.debt = self.debt.saturating_add(interval);
        Ok(())
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_KEYS)
    }
}

impl Limiter {
    /// A limiter that keeps at most `max_keys` buckets (at least one).
    pub(crate) fn new(max_keys: usize) -> Self {
        Self {
            max_keys: max_keys.max(1),
            state: Mutex::default(),
        }
    }

    /// Takes one token for the key (`route`, `client`), `client` being
    /// `""` for the route-wide bucket.
    ///
    /// `Err(retry_after)` when none is left: the time until one token
    /// has refilled (exactly: a take after that long passes, if no other
    /// take came in between), or [`Duration::MAX`] for a rate that never
    /// passes a call. The bucket refills at the `rate` given with each
    /// take, so a changed rate applies from the next take on; how far the
    /// bucket is from full, in time, carries over.
    pub(crate) fn take(&self, route: &str, client: &str, rate: Rate) -> Result<(), Duration> {
        let Some(interval) = rate.interval() else {
            // Nothing to remember for a rate that refuses everything.
            return Err(Duration::MAX);
        };
        let tolerance = interval.saturating_mul(rate.burst - 1);
        let now = Instant::now();
        // A panic elsewhere while the lock was held leaves the buckets
        // consistent (each update is a few assignments): carry on.
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *guard;
        state.clock += 1;
        let touched = state.clock;
        if let Some(bucket) = state
            .routes
            .get_mut(route)
            .and_then(|clients| clients.get_mut(client))
        {
            bucket.touched = touched;
            return bucket.take(now, interval, tolerance);
        }
        if state.len >= self.max_keys {
            state.make_room(self.max_keys, now);
        }
        let mut bucket = Bucket {
            debt: Duration::ZERO,
            at: now,
            touched,
        };
        let result = bucket.take(now, interval, tolerance);
        match state.routes.get_mut(route) {
            Some(clients) => {
                clients.insert(client.into(), bucket);
            }
            None => {
                state
                    .routes
                    .insert(route.into(), HashMap::from([(client.into(), bucket)]));
            }
        }
        state.len += 1;
        result
    }

    /// How many buckets are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len
    }

    /// Whether a bucket is kept for (`route`, `client`).
    #[cfg(test)]
    fn contains(&self, route: &str, client: &str) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .routes
            .get(route)
            .is_some_and(|clients| clients.contains_key(client))
    }
}

impl State {
    /// Frees at least a sixteenth of a table of `max_keys` buckets: the
    /// full buckets, then the least recently touched.
    fn make_room(&mut self, max_keys: usize, now: Instant) {
        let headroom = (max_keys / 16).max(1);
        let before = self.len;
        self.retain(|bucket| !bucket.is_full(now));
        let full = before - self.len;
        let short = headroom.saturating_sub(full).min(self.len);
        if short == 0 {
            return;
        }
        // The `short` smallest touch counts (all distinct) go.
        let mut touched: Vec<u64> = self
            .routes
            .values()
            .flat_map(HashMap::values)
            .map(|bucket| bucket.touched)
            .collect();
        let (_, &mut cutoff, _) = touched.select_nth_unstable(short - 1);
        self.retain(|bucket| bucket.touched > cutoff);
        tracing::debug!(
            full,
            evicted = short,
            max_keys,
            "rate limiter table full: dropped the least recently used buckets that were not full"
        );
    }

    /// Keeps the buckets for which `keep` is true, and the routes that
    /// still have one.
    fn retain(&mut self, mut keep: impl FnMut(&Bucket) -> bool) {
        let mut len = 0;
        self.routes.retain(|_, clients| {
            clients.retain(|_, bucket| keep(bucket));
            len += clients.len();
            !clients.is_empty()
        });
        self.len = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_A_SECOND: Rate = Rate {
        per_second: 2.0,
        burst: 3,
    };

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_a_refusal_with_the_time_to_the_next_token() {
        let limiter = Limiter::default();
        for _ in 0..3 {
            assert_eq!(limiter.take("r", "c", TWO_A_SECOND), Ok(()));
        }
        assert_eq!(limiter.take("r", "c", TWO_A_SECOND), Err(ms(500)));
        tokio::time::advance(ms(200)).await;
        assert_eq!(limiter.take("r", "c", TWO_A_SECOND), Err(ms(300)));
        // Exactly when promised, and not a moment before.
        tokio::time::advance(ms(299)).await;
        assert_eq!(limiter.take("r", "c", TWO_A_SECOND), Err(ms(1)));
        tokio::time::advance(ms(1)).await;
        assert_eq!(limiter.take("r", "c", TWO_A_SECOND), Ok(()));
        assert_eq!(limiter.take("r", "c", TWO_A_SECOND), Err(ms(500)));
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_refill_over_time_up_to_the_burst() {
        let limiter = Limiter::default();
        for _ in 0..3 {
            limiter.take("r", "c", TWO_A_SECOND).unwrap();
        }
        tokio::time::advance(ms(1000)).await;
        // Two tokens back after a second, at two a second.
        assert_eq!(limiter.take("r", "c", TWO_A_SECOND), Ok(()));
        assert_eq!(limiter.take("r", "c", TWO_A_SECOND), Ok(()));
        assert_eq!(limiter.take("r", "c", TWO_A_SECOND), Err(ms(500)));
        // A long idle spell saves up no more than the burst.
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..3 {
            assert_eq!(limiter.take("r", "c", TWO_A_SECOND), Ok(()));
        }
        assert_eq!(limiter.take("r", "c", TWO_A_SECOND), Err(ms(500)));
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_rates_refill_slowly() {
        let limiter = Limiter::default();
        let slow = Rate {
            per_second: 0.25,
            burst: 1,
        };
        assert_eq!(limiter.take("r", "c", slow), Ok(()));
        assert_eq!(limiter.take("r", "c", slow), Err(ms(4000)));
        tokio::time::advance(ms(4000)).await;
        assert_eq!(limiter.take("r", "c", slow), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_independent() {
        let limiter = Limiter::default();
        for _ in 0..3 {
            limiter.take("r", "alice", TWO_A_SECOND).unwrap();
        }
        assert!(limiter.take("r", "alice", TWO_A_SECOND).is_err());
        // Another client on the route, the route-wide bucket, and the
        // same client on another route each have their own bucket.
        assert_eq!(limiter.take("r", "bob", TWO_A_SECOND), Ok(()));
        assert_eq!(limiter.take("r", "", TWO_A_SECOND), Ok(()));
        assert_eq!(limiter.take("s", "alice", TWO_A_SECOND), Ok(()));
        assert_eq!(limiter.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn rates_that_never_pass_a_call_refuse_for_ever_and_keep_nothing() {
        let limiter = Limiter::default();
        for rate in [
            Rate {
                per_second: 1.0,
                burst: 0,
            },
            Rate {
                per_second: 0.0,
                burst: 5,
            },
            Rate {
                per_second: -1.0,
                burst: 5,
            },
            Rate {
                per_second: f64::NAN,
                burst: 5,
            },
            Rate {
                per_second: f64::MIN_POSITIVE,
                burst: 5,
            },
        ] {
            assert_eq!(limiter.take("r", "c", rate), Err(Duration::MAX), "{rate:?}");
        }
        assert_eq!(limiter.len(), 0);
        let unlimited = Rate {
            per_second: f64::INFINITY,
            burst: 1,
        };
        for _ in 0..1000 {
            assert_eq!(limiter.take("r", "c", unlimited), Ok(()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_rate_applies_from_the_next_take() {
        let limiter = Limiter::default();
        let one = Rate {
            per_second: 1.0,
            burst: 1,
        };
        limiter.take("r", "c", one).unwrap();
        assert_eq!(limiter.take("r", "c", one), Err(ms(1000)));
        // A larger burst has room for the next call at once.
        assert_eq!(limiter.take("r", "c", TWO_A_SECOND), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_drops_the_least_recently_touched() {
        let limiter = Limiter::new(4);
        let rate = Rate {
            per_second: 1.0,
            burst: 2,
        };
        for client in ["a", "b", "c", "d"] {
            limiter.take("r", client, rate).unwrap();
        }
        // Touched again: "b" is now the least recently touched.
        limiter.take("r", "a", rate).unwrap();
        limiter.take("r", "e", rate).unwrap();
        assert_eq!(limiter.len(), 4);
        assert!(!limiter.contains("r", "b"));
        for client in ["a", "c", "d", "e"] {
            assert!(limiter.contains("r", client), "{client}");
        }
        // "a" kept its bucket: empty still.
        assert_eq!(limiter.take("r", "a", rate), Err(ms(1000)));
        // Many more keys: never more than four.
        for n in 0..100 {
            limiter.take("s", &n.to_string(), rate).unwrap();
            assert!(limiter.len() <= 4);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn full_buckets_are_dropped_before_older_ones() {
        let limiter = Limiter::new(3);
        let slow = Rate {
            per_second: 1.0,
            burst: 2,
        };
        let fast = Rate {
            per_second: 10.0,
            burst: 2,
        };
        limiter.take("r", "old", slow).unwrap();
        limiter.take("r", "fast", fast).unwrap();
        limiter.take("s", "newer", slow).unwrap();
        // "fast" has refilled; "old" and "newer" have not.
        tokio::time::advance(ms(200)).await;
        limiter.take("r", "new", slow).unwrap();
        assert!(!limiter.contains("r", "fast"));
        for (route, client) in [("r", "old"), ("s", "newer"), ("r", "new")] {
            assert!(limiter.contains(route, client), "{client}");
        }
        // Once all have refilled, a new key sweeps every one of them.
        tokio::time::advance(ms(1000)).await;
        limiter.take("t", "x", slow).unwrap();
        assert_eq!(limiter.len(), 1);
        assert!(limiter.contains("t", "x"));
    }

    #[tokio::test(start_paused = true)]
    async fn room_is_made_a_sixteenth_at_a_time() {
        let limiter = Limiter::new(64);
        let rate = Rate {
            per_second: 1.0,
            burst: 2,
        };
        for n in 0..64 {
            limiter.take("r", &n.to_string(), rate).unwrap();
        }
        assert_eq!(limiter.len(), 64);
        limiter.take("r", "new", rate).unwrap();
        // Four dropped (the four oldest), one added.
        assert_eq!(limiter.len(), 61);
        for n in 0..4 {
            assert!(!limiter.contains("r", &n.to_string()), "{n}");
        }
        assert!(limiter.contains("r", "4"));
    }

    #[test]
    fn the_limiter_is_shared_across_tasks() {
        fn shared<T: Send + Sync>() {}
        shared::<Limiter>();
    }
}
