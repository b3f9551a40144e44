//! The breaker's state machine. It reads no clock and does no IO of its
//! own: every method takes the time as an argument, so tests drive it with
//! any clock. What it reports (a change of state, a refused call, the
//! state it is counted in) goes out through sinew-telemetry's
//! [`BreakerTelemetry`], which logs and counts, and does nothing more
//! before telemetry is installed.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::BreakerConfig;
use sinew_telemetry::events::BreakerTelemetry;

/// Where a breaker is in its cycle; see the [module docs](super).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls pass and their outcomes are counted.
    Closed,
    /// Calls fail fast until the recovery timeout has passed.
    Open,
    /// A few probe calls pass; their outcomes close or reopen the breaker.
    HalfOpen,
}

/// How a call was let through. An outcome is only recorded against the
/// period it was admitted in: a call admitted while closed that ends after
/// the breaker tripped, or a probe of an earlier half-open period, is
/// stale, and counting it would corrupt the counts of the new period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    generation: u64,
    probe: bool,
}

// === impl Admission ===

impl Admission {
    /// The admission of a call let through while closed, from the token
    /// [`Circuit::closed_token`] gave.
    pub(crate) fn closed(token: u64) -> Self {
        Self {
            generation: token.wrapping_sub(1),
            probe: false,
        }
    }

    /// Whether the call was let through as a half-open probe.
    pub(crate) fn is_probe(self) -> bool {
        self.probe
    }
}

/// A call's outcome, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The server answered.
    Success,
    /// The server looks unhealthy.
    Failure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        probes_in_flight: u32,
        successes: u32,
    },
}

/// The state machine of one breaker.
#[derive(Debug)]
pub(crate) struct Circuit {
    config: BreakerConfig,
    mode: Mode,
    /// Bumped on every change of mode; see [`Admission`].
    generation: u64,
    consecutive_failures: u32,
    window: Window,
    /// Where its changes of state are reported.
    telemetry: Arc<BreakerTelemetry>,
}

// === impl Circuit ===

impl Circuit {
    /// A closed breaker of no endpoint; `now` starts the clock of its
    /// window.
    #[cfg(test)]
    pub(crate) fn new(config: BreakerConfig, now: Instant) -> Self {
        Self::with_telemetry(config, now, Arc::new(BreakerTelemetry::new(None, false)))
    }

    /// A closed breaker reporting to `telemetry`; `now` starts the clock
    /// of its window.
    pub(crate) fn with_telemetry(
        config: BreakerConfig,
        now: Instant,
        telemetry: Arc<BreakerTelemetry>,
    ) -> Self {
        Self {
            config,
            mode: Mode::Closed,
            generation: 0,
            consecutive_failures: 0,
            window: Window::new(config.window, now),
            telemetry,
        }
    }

    pub(crate) fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// While closed, what every call is admitted with, as a number that
    /// can be read without the lock: the generation plus one. 0 when not
    /// closed (or, after 2^64 changes of mode, never: the slow path then
    /// decides).
    pub(crate) fn closed_token(&self) -> u64 {
        match self.mode {
            Mode::Closed => self.generation.wrapping_add(1),
            Mode::Open { .. } | Mode::HalfOpen { .. } => 0,
        }
    }

    /// Lets a call through, or says how long until one may go (`None` if
    /// that depends on the probes in flight).
    ///
    /// An open breaker whose recovery timeout has passed turns half-open
    /// here, at the first call that asks: nothing needs a timer.
    pub(crate) fn admit(&mut self, now: Instant) -> Result<Admission, Option<Duration>> {
        if let Mode::Open { until } = self.mode {
            if now < until {
                return Err(Some(until - now));
            }
            self.enter(Mode::HalfOpen {
                probes_in_flight: 0,
                successes: 0,
            });
        }
        let generation = self.generation;
        match &mut self.mode {
            Mode::Closed => Ok(Admission {
                generation,
                probe: false,
            }),
            Mode::HalfOpen {
                probes_in_flight, ..
            } => {
                if *probes_in_flight >= self.config.half_open_probes.max(1) {
                    return Err(None);
                }
                *probes_in_flight += 1;
                Ok(Admission {
                    generation,
                    probe: true,
                })
            }
            // Left above.
            Mode::Open { .. } => Err(None),
        }
    }

    /// Records the outcome of an admitted call.
    pub(crate) fn record(&mut self, admission: Admission, outcome: Outcome, now: Instant) {
        if admission.generation != self.generation {
            return;
        }
        match &mut self.mode {
            Mode::Closed => self.record_closed(outcome, now),
            Mode::HalfOpen {
                probes_in_flight,
                successes,
            } => {
                *probes_in_flight = probes_in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Failure => self.trip(now),
                    Outcome::Success => {
                        *successes += 1;
                        if *successes >= self.config.close_after.max(1) {
                            self.close(now);
                        }
                    }
                }
            }
            // A call admitted in this generation cannot find it open: the
            // generation changed when it opened.
            Mode::Open { .. } => {}
        }
    }

    /// The connection came back: an open breaker turns half-open now.
    pub(crate) fn reconnected(&mut self) {
        if let Mode::Open { .. } = self.mode {
            self.enter(Mode::HalfOpen {
                probes_in_flight: 0,
                successes: 0,
            });
        }
    }

    /// Forgets an admitted call that ended without an outcome (cancelled,
    /// or never sent), giving back its probe slot.
    pub(crate) fn cancel(&mut self, admission: Admission) {
        if admission.generation != self.generation || !admission.probe {
            return;
        }
        if let Mode::HalfOpen {
            probes_in_flight, ..
        } = &mut self.mode
        {
            *probes_in_flight = probes_in_flight.saturating_sub(1);
        }
    }

    /// The state as of `now`. An open breaker whose recovery timeout has
    /// passed reads as half-open: the next call will be a probe.
    pub(crate) fn state(&self, now: Instant) -> State {
        match self.mode {
            Mode::Closed => State::Closed,
            Mode::Open { until } if now < until => State::Open,
            Mode::Open { .. } | Mode::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// False while open and the recovery timeout has not passed.
    pub(crate) fn is_available(&self, now: Instant) -> bool {
        self.state(now) != State::Open
    }

    fn record_closed(&mut self, outcome: Outcome, now: Instant) {
        self.window.record(outcome, now);
        match outcome {
            Outcome::Success => self.consecutive_failures = 0,
            Outcome::Failure => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let limit = self.config.consecutive_failures;
                if limit > 0 && self.consecutive_failures >= limit {
                    return self.trip(now);
                }
                let (total, failures) = self.window.totals(now);
                // `failures > 0` keeps a rate of 0.0 from tripping a
                // breaker that saw no failure at all.
                if total >= u64::from(self.config.min_requests.max(1))
                    && failures > 0
                    && failures as f64 >= self.config.failure_rate * total as f64
                {
                    self.trip(now);
                }
            }
        }
    }

    fn trip(&mut self, now: Instant) {
        self.enter(Mode::Open {
            until: now + self.config.recovery_timeout,
        });
    }

    fn close(&mut self, now: Instant) {
        self.enter(Mode::Closed);
        // A closed breaker starts over: what happened before it opened
        // should not trip it again at the first failure.
        self.consecutive_failures = 0;
        self.window = Window::new(self.config.window, now);
    }

    fn enter(&mut self, mode: Mode) {
        self.telemetry.transition(self.mode.name(), mode.name());
        self.mode = mode;
        self.generation = self.generation.wrapping_add(1);
    }
}

impl Drop for Circuit {
    fn drop(&mut self) {
        self.telemetry.dropped(self.mode.name());
    }
}

// === impl Mode ===

impl Mode {
    /// The state's name in logs and metrics. An open breaker whose
    /// recovery timeout has passed is still open here: it turns half-open
    /// at the next call.
    fn name(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Open { .. } => "open",
            Mode::HalfOpen { .. } => "half_open",
        }
    }
}

/// Ten buckets that cover the rolling window.
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which tick (a tenth of the window since `origin`) the counts are of.
    tick: u64,
    successes: u32,
    failures: u32,
}

/// Outcome counts over the rolling window: a ring of buckets indexed by
/// tick. A bucket whose tick is more than the ring's length old is stale
/// and is reset when its slot comes round again, so old outcomes age out
/// without a timer.
#[derive(Debug)]
struct Window {
    origin: Instant,
    tick_nanos: u128,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    fn new(window: Duration, now: Instant) -> Self {
        Self {
            origin: now,
            // At least a nanosecond, so a zero window cannot divide by zero.
            tick_nanos: (window.as_nanos() / BUCKETS as u128).max(1),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn tick(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.tick_nanos).unwrap_or(u64::MAX)
    }

    fn record(&mut self, outcome: Outcome, now: Instant) {
        let tick = self.tick(now);
        let bucket = &mut self.buckets[(tick % BUCKETS as u64) as usize];
        if bucket.tick != tick {
            *bucket = Bucket {
                tick,
                ..Bucket::default()
            };
        }
        match outcome {
            Outcome::Success => bucket.successes = bucket.successes.saturating_add(1),
            Outcome::Failure => bucket.failures = bucket.failures.saturating_add(1),
        }
    }

    /// Calls and failures in the window: `(total, failures)`.
    fn totals(&self, now: Instant) -> (u64, u64) {
        let tick = self.tick(now);
        self.buckets
            .iter()
            .filter(|bucket| tick.saturating_sub(bucket.tick) < BUCKETS as u64)
            .fold((0, 0), |(total, failures), bucket| {
                let bad = u64::from(bucket.failures);
                (total + u64::from(bucket.successes) + bad, failures + bad)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 0.5,
            window: Duration::from_secs(10),
            min_requests: 4,
            recovery_timeout: Duration::from_secs(5),
            half_open_probes: 2,
            close_after: 2,
        }
    }

    fn run(circuit: &mut Circuit, outcome: Outcome, now: Instant) {
        let admission = circuit.admit(now).expect("admitted");
        circuit.record(admission, outcome, now);
    }

    /// A breaker opened at `t0`, with the rate trigger off.
    fn opened(t0: Instant) -> Circuit {
        let mut circuit = Circuit::new(
            BreakerConfig {
                failure_rate: 2.0,
                ..config()
            },
            t0,
        );
        for _ in 0..3 {
            run(&mut circuit, Outcome::Failure, t0);
        }
        assert_eq!(circuit.state(t0), State::Open);
        circuit
    }

    #[test]
    fn opens_after_consecutive_failures() {
        let t0 = Instant::now();
        let mut circuit = Circuit::new(
            BreakerConfig {
                failure_rate: 2.0,
                ..config()
            },
            t0,
        );
        run(&mut circuit, Outcome::Failure, t0);
        run(&mut circuit, Outcome::Failure, t0);
        assert_eq!(circuit.state(t0), State::Closed);
        run(&mut circuit, Outcome::Failure, t0);
        assert_eq!(circuit.state(t0), State::Open);
        assert_eq!(circuit.admit(t0 + SEC), Err(Some(4 * SEC)));
        assert!(!circuit.is_available(t0 + SEC));
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let t0 = Instant::now();
        let mut circuit = Circuit::new(
            BreakerConfig {
                failure_rate: 2.0,
                ..config()
            },
            t0,
        );
        for _ in 0..5 {
            run(&mut circuit, Outcome::Failure, t0);
            run(&mut circuit, Outcome::Failure, t0);
            run(&mut circuit, Outcome::Success, t0);
        }
        assert_eq!(circuit.state(t0), State::Closed);
    }

    #[test]
    fn half_open_after_recovery_admits_only_the_probe_budget() {
        let t0 = Instant::now();
        let mut circuit = opened(t0);
        let just_before = t0 + Duration::from_millis(4999);
        assert_eq!(
            circuit.admit(just_before),
            Err(Some(Duration::from_millis(1)))
        );
        let t1 = t0 + 5 * SEC;
        assert_eq!(circuit.state(t1), State::HalfOpen);
        assert!(circuit.is_available(t1));
        let first = circuit.admit(t1).expect("first probe");
        let _second = circuit.admit(t1).expect("second probe");
        assert_eq!(circuit.admit(t1), Err(None));
        circuit.record(first, Outcome::Success, t1);
        // One probe slot free again; one success is not enough to close.
        assert_eq!(circuit.state(t1), State::HalfOpen);
        circuit.admit(t1).expect("a freed slot");
        assert_eq!(circuit.admit(t1), Err(None));
    }

    #[test]
    fn closes_after_close_after_probe_successes() {
        let t0 = Instant::now();
        let mut circuit = opened(t0);
        let t1 = t0 + 5 * SEC;
        run(&mut circuit, Outcome::Success, t1);
        assert_eq!(circuit.state(t1), State::HalfOpen);
        run(&mut circuit, Outcome::Success, t1);
        assert_eq!(circuit.state(t1), State::Closed);
        // Counts start over: two failures do not reopen it.
        run(&mut circuit, Outcome::Failure, t1);
        run(&mut circuit, Outcome::Failure, t1);
        assert_eq!(circuit.state(t1), State::Closed);
    }

    #[test]
    fn closing_starts_a_fresh_window() {
        let t0 = Instant::now();
        let mut circuit = Circuit::new(
            BreakerConfig {
                consecutive_failures: 0,
                ..config()
            },
            t0,
        );
        for outcome in [Outcome::Success, Outcome::Failure] {
            run(&mut circuit, outcome, t0);
            run(&mut circuit, outcome, t0);
        }
        assert_eq!(circuit.state(t0), State::Open);
        let t1 = t0 + 5 * SEC;
        run(&mut circuit, Outcome::Success, t1);
        run(&mut circuit, Outcome::Success, t1);
        assert_eq!(circuit.state(t1), State::Closed);
        // Still inside the old window: were its calls kept, this would make
        // three failures in five.
        run(&mut circuit, Outcome::Failure, t1);
        assert_eq!(circuit.state(t1), State::Closed);
    }

    #[test]
    fn a_half_open_failure_reopens_and_restarts_the_timeout() {
        let t0 = Instant::now();
        let mut circuit = opened(t0);
        let t1 = t0 + 7 * SEC;
        run(&mut circuit, Outcome::Success, t1);
        run(&mut circuit, Outcome::Failure, t1);
        assert_eq!(circuit.state(t1), State::Open);
        assert_eq!(circuit.admit(t1 + SEC), Err(Some(4 * SEC)));
        assert_eq!(circuit.state(t1 + 5 * SEC), State::HalfOpen);
    }

    #[test]
    fn failure_rate_waits_for_min_requests() {
        let t0 = Instant::now();
        let mut circuit = Circuit::new(
            BreakerConfig {
                consecutive_failures: 0,
                ..config()
            },
            t0,
        );
        // 3 calls, 2 failed: over the rate, under min_requests (4).
        run(&mut circuit, Outcome::Failure, t0);
        run(&mut circuit, Outcome::Success, t0);
        run(&mut circuit, Outcome::Failure, t0);
        assert_eq!(circuit.state(t0), State::Closed);
        // 4 calls, 2 failed: 50% reaches the rate.
        run(&mut circuit, Outcome::Success, t0);
        assert_eq!(circuit.state(t0), State::Closed, "a success never trips");
        run(&mut circuit, Outcome::Failure, t0);
        assert_eq!(circuit.state(t0), State::Open);
    }

    #[test]
    fn failure_rate_below_the_threshold_stays_closed() {
        let t0 = Instant::now();
        let mut circuit = Circuit::new(
            BreakerConfig {
                consecutive_failures: 0,
                ..config()
            },
            t0,
        );
        for _ in 0..50 {
            run(&mut circuit, Outcome::Success, t0);
            run(&mut circuit, Outcome::Success, t0);
            run(&mut circuit, Outcome::Failure, t0);
        }
        assert_eq!(circuit.state(t0), State::Closed);
    }

    #[test]
    fn old_buckets_age_out_of_the_window() {
        let t0 = Instant::now();
        let mut circuit = Circuit::new(
            BreakerConfig {
                consecutive_failures: 0,
                ..config()
            },
            t0,
        );
        run(&mut circuit, Outcome::Failure, t0);
        run(&mut circuit, Outcome::Failure, t0);
        run(&mut circuit, Outcome::Failure, t0);
        // Fifteen seconds on, the first three have left the window (their
        // bucket is stale, though not yet reused): one failure alone is
        // under min_requests.
        let t1 = t0 + 15 * SEC;
        run(&mut circuit, Outcome::Failure, t1);
        assert_eq!(circuit.state(t1), State::Closed);
        assert_eq!(circuit.window.totals(t1), (1, 1));
        // At twenty seconds their slot comes round again and is reset.
        let t2 = t0 + 20 * SEC;
        run(&mut circuit, Outcome::Failure, t2);
        assert_eq!(circuit.window.totals(t2), (2, 2));
        // While nine seconds on they still count, and the fourth trips it.
        let mut circuit = Circuit::new(
            BreakerConfig {
                consecutive_failures: 0,
                ..config()
            },
            t0,
        );
        for _ in 0..3 {
            run(&mut circuit, Outcome::Failure, t0);
        }
        run(&mut circuit, Outcome::Failure, t0 + 9 * SEC);
        assert_eq!(circuit.state(t0 + 9 * SEC), State::Open);
    }

    #[test]
    fn outcomes_from_an_earlier_period_are_ignored() {
        let t0 = Instant::now();
        let mut circuit = Circuit::new(
            BreakerConfig {
                failure_rate: 2.0,
                ..config()
            },
            t0,
        );
        let slow = circuit.admit(t0).expect("admitted while closed");
        for _ in 0..3 {
            run(&mut circuit, Outcome::Failure, t0);
        }
        let t1 = t0 + 5 * SEC;
        let probe = circuit.admit(t1).expect("probe");
        // The slow call admitted while closed ends now: it must neither
        // take the probe's place nor count as a probe success.
        circuit.record(slow, Outcome::Success, t1);
        circuit.record(probe, Outcome::Success, t1);
        assert_eq!(circuit.state(t1), State::HalfOpen);
    }

    #[test]
    fn a_cancelled_probe_frees_its_slot_without_counting() {
        let t0 = Instant::now();
        let mut circuit = opened(t0);
        let t1 = t0 + 5 * SEC;
        let a = circuit.admit(t1).expect("probe");
        let _b = circuit.admit(t1).expect("probe");
        assert_eq!(circuit.admit(t1), Err(None));
        circuit.cancel(a);
        assert_eq!(circuit.state(t1), State::HalfOpen, "not a failure");
        circuit.admit(t1).expect("the cancelled probe's slot");
    }

    #[test]
    fn zero_probes_and_zero_close_after_are_treated_as_one() {
        let t0 = Instant::now();
        let mut circuit = Circuit::new(
            BreakerConfig {
                half_open_probes: 0,
                close_after: 0,
                failure_rate: 2.0,
                ..config()
            },
            t0,
        );
        for _ in 0..3 {
            run(&mut circuit, Outcome::Failure, t0);
        }
        let t1 = t0 + 5 * SEC;
        let probe = circuit.admit(t1).expect("one probe");
        assert_eq!(circuit.admit(t1), Err(None));
        circuit.record(probe, Outcome::Success, t1);
        assert_eq!(circuit.state(t1), State::Closed);
    }
}
