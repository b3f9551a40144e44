//! An endpoint's load: its calls outstanding and its peak-EWMA latency.
//!
//! The cost the balancer compares is the latency estimate times the calls
//! outstanding plus one, as in linkerd and Finagle ("peak EWMA"):
//!
//! - **Peak.** A latency above the estimate replaces it at once, so one
//!   slow answer is enough to steer calls away.
//! - **EWMA.** A latency below it pulls the estimate down gradually,
//!   weighted by how long since the last one (time constant
//!   [`DECAY`]).
//! - **Decay.** With no new latency, the estimate decays towards zero with
//!   the same time constant, so that an endpoint avoided for being slow is
//!   tried again in time, and a better latency can be seen.
//! - **Calls never answered count.** A call dropped before its response
//!   headers came (its deadline passed on a silent server, its caller gave
//!   up) counts the time it waited, if that is above the estimate: a
//!   server that answers nothing looks slow, not idle.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

/// The time constant of the latency estimate's decay: after it, a latency
/// weighs about a third (1/e) of what it did.
pub(crate) const DECAY: Duration = Duration::from_secs(10);

/// The load of one endpoint, shared by its calls' guards.
#[derive(Debug)]
pub(crate) struct Load {
    in_flight: AtomicUsize,
    latency: Mutex<Estimate>,
}

/// The latency estimate as of its last update.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    nanos: f64,
    at: Instant,
}

// === impl Load ===

impl Load {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            latency: Mutex::new(Estimate {
                nanos: 0.0,
                at: now,
            }),
        }
    }

    /// Calls sent and not yet over.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The cost of sending one more call here: the decayed latency
    /// estimate (in nanoseconds, plus one so that endpoints with no
    /// latency yet compare by their calls) times the calls outstanding
    /// plus one.
    pub(crate) fn cost(&self, now: Instant) -> f64 {
        let latency = self.lock().decayed(now);
        (latency + 1.0) * (self.in_flight() as f64 + 1.0)
    }

    /// A call was answered after `latency`.
    pub(crate) fn answered(&self, latency: Duration, now: Instant) {
        let sample = latency.as_nanos() as f64;
        let mut estimate = self.lock();
        // The weight of the old estimate is its decay since its update:
        // one exponential serves both.
        let weight = estimate.weight(now);
        let current = estimate.nanos * weight;
        estimate.nanos = if sample > current {
            sample
        } else {
            current * weight + sample * (1.0 - weight)
        };
        estimate.at = now;
    }

    /// A call was dropped unanswered after waiting `waited`: it counts
    /// only if it waited longer than the estimate.
    pub(crate) fn unanswered(&self, waited: Duration, now: Instant) {
        let waited_nanos = waited.as_nanos() as f64;
        let mut estimate = self.lock();
        if waited_nanos > estimate.decayed(now) {
            estimate.nanos = waited_nanos;
            estimate.at = now;
        }
    }

    /// The latency estimate as of `now`.
    #[cfg(test)]
    pub(crate) fn latency(&self, now: Instant) -> Duration {
        Duration::from_nanos(self.lock().decayed(now) as u64)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Estimate> {
        self.latency.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Estimate {
    fn decayed(self, now: Instant) -> f64 {
        if self.nanos == 0.0 {
            return 0.0;
        }
        self.nanos * self.weight(now)
    }

    /// How much of the estimate is left at `now`: `e^(-elapsed / DECAY)`.
    fn weight(self, now: Instant) -> f64 {
        (-elapsed_nanos(self.at, now) / DECAY.as_nanos() as f64).exp()
    }
}

fn elapsed_nanos(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_nanos() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_slower_latency_replaces_the_estimate_at_once() {
        let t0 = Instant::now();
        let load = Load::new(t0);
        load.answered(2 * MS, t0);
        assert_eq!(load.latency(t0), 2 * MS);
        load.answered(300 * MS, t0);
        assert_eq!(load.latency(t0), 300 * MS);
    }

    #[test]
    fn a_faster_latency_pulls_it_down_by_how_long_since() {
        let t0 = Instant::now();
        let load = Load::new(t0);
        load.answered(100 * MS, t0);
        // Right after: it barely moves.
        load.answered(MS, t0 + Duration::from_millis(1));
        assert!(load.latency(t0 + MS) > 99 * MS);
        // One time constant later the old value weighs about 1/e, of a
        // value that has itself decayed by 1/e.
        let t1 = t0 + MS + DECAY;
        load.answered(MS, t1);
        let e2 = (-2.0f64).exp();
        let expected = 100.0 * e2 + 1.0 * (1.0 - (-1.0f64).exp());
        let got = load.latency(t1).as_secs_f64() * 1000.0;
        assert!((got - expected).abs() < 0.5, "{got} vs {expected}");
    }

    #[test]
    fn without_news_the_estimate_decays() {
        let t0 = Instant::now();
        let load = Load::new(t0);
        load.answered(300 * MS, t0);
        let later = load.latency(t0 + 3 * DECAY);
        assert!(later < 300 * MS / 19 && later > 300 * MS / 21, "{later:?}");
    }

    #[test]
    fn an_unanswered_call_counts_only_when_it_waited_longer() {
        let t0 = Instant::now();
        let load = Load::new(t0);
        load.answered(5 * MS, t0);
        load.unanswered(MS, t0);
        assert_eq!(load.latency(t0), 5 * MS, "a caller that gave up early");
        load.unanswered(500 * MS, t0);
        assert_eq!(load.latency(t0), 500 * MS, "a deadline on a silent server");
    }

    #[test]
    fn cost_is_latency_times_calls_plus_one() {
        let t0 = Instant::now();
        let load = Load::new(t0);
        assert!((load.cost(t0) - 1.0).abs() < f64::EPSILON);
        load.start();
        load.start();
        assert!((load.cost(t0) - 3.0).abs() < f64::EPSILON);
        load.answered(Duration::from_nanos(9), t0);
        assert!((load.cost(t0) - 30.0).abs() < 1e-9);
        load.end();
        assert_eq!(load.in_flight(), 1);
    }
}
