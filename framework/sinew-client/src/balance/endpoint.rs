//! One endpoint: its service, its outstanding calls, its reconnect backoff.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use super::load::Load;

use sinew_core::body::{End, Guard, GuardBody};
use tokio::time::Instant;

use crate::{ConnectFailed, Rng};

/// How long an endpoint whose connections fail is left alone: doubling
/// from `initial` to `max`, each wait drawn between half and all of the
/// current step so that clients do not reconnect in lockstep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconnectBackoff {
    /// The first wait. Default 100ms.
    pub initial: Duration,
    /// The longest wait. Default 10s.
    pub max: Duration,
}

impl ReconnectBackoff {
    /// The waits as sinew-core's one backoff: doubling, each drawn in the
    /// upper half of its step.
    pub(crate) fn rule(self) -> sinew_core::backoff::Backoff {
        sinew_core::backoff::Backoff::new(self.initial, self.max, 2.0).jitter(0.5, 1.0)
    }
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// An endpoint in the balancer's set.
#[derive(Debug)]
pub(crate) struct Endpoint<S> {
    pub(crate) key: String,
    pub(crate) service: S,
    load: Arc<Load>,
    /// Consecutive connect failures.
    failures: AtomicU32,
    /// Until when (nanoseconds after `epoch`) the endpoint is left alone.
    backoff_until: AtomicU64,
    epoch: Instant,
    /// Why the last connect failed, while connects fail: what a call that
    /// finds no endpoint is told.
    last_failure: Mutex<Option<ConnectFailed>>,
}

impl<S> Endpoint<S> {
    pub(crate) fn new(key: String, service: S) -> Self {
        Self {
            key,
            service,
            load: Arc::new(Load::new(Instant::now())),
            failures: AtomicU32::new(0),
            backoff_until: AtomicU64::new(0),
            epoch: Instant::now(),
            last_failure: Mutex::new(None),
        }
    }

    /// Calls sent to this endpoint and not yet over.
    pub(crate) fn in_flight(&self) -> usize {
        self.load.in_flight()
    }

    /// What one more call here costs (see [`Load::cost`]).
    pub(crate) fn cost(&self, now: Instant) -> f64 {
        self.load.cost(now)
    }

    /// Counts a call as outstanding until the guard drops, and times it
    /// until [`InFlight::answered`].
    ///
    /// An untimed call (`timed` false: the balancer has this endpoint
    /// alone, and nothing to compare its latency with) is only counted.
    pub(crate) fn start_call(&self, now: Instant, timed: bool) -> InFlight {
        self.load.start();
        InFlight {
            load: self.load.clone(),
            started: timed.then_some(now),
        }
    }

    /// Whether the endpoint is waiting out a reconnect backoff.
    pub(crate) fn backing_off(&self, now: Instant) -> bool {
        self.nanos_since_epoch(now) < self.backoff_until.load(Ordering::Relaxed)
    }

    /// A connection attempt failed: leave the endpoint alone for a while.
    pub(crate) fn connect_failed(
        &self,
        now: Instant,
        backoff: ReconnectBackoff,
        rng: &Rng,
        why: Option<ConnectFailed>,
    ) {
        if let Some(why) = why {
            *self
                .last_failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(why);
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed);
        let wait = backoff.rule().wait(failures.min(20), rng.next_f64());
        let until = self.nanos_since_epoch(now + wait);
        self.backoff_until.fetch_max(until, Ordering::Relaxed);
    }

    /// A call went through: the connection works.
    pub(crate) fn connected(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.backoff_until.store(0, Ordering::Relaxed);
            *self
                .last_failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// Why its last connect failed, while its connects fail.
    pub(crate) fn last_failure(&self) -> Option<ConnectFailed> {
        if self.failures.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Counts a call as outstanding on its endpoint until dropped, and feeds
/// the endpoint's latency estimate: the guard of an [`InFlightBody`].
#[derive(Debug)]
pub struct InFlight {
    load: Arc<Load>,
    /// When the call was sent; `None` once answered (or failed).
    started: Option<Instant>,
}

impl InFlight {
    /// The response headers came: their latency feeds the estimate.
    pub(crate) fn answered(&mut self, now: Instant) {
        if let Some(started) = self.started.take() {
            self.load
                .answered(now.saturating_duration_since(started), now);
        }
    }

    /// The call's answer times something else than the server (it waited
    /// for its connection to be made): it feeds nothing.
    pub(crate) fn untimed(&mut self) {
        self.started = None;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.load.end();
        // Dropped while still waiting for its answer: the time it waited
        // counts if it is above the estimate.
        if let Some(started) = self.started {
            let now = Instant::now();
            self.load
                .unanswered(now.saturating_duration_since(started), now);
        }
    }
}

/// The call stops counting when its body ends, however it ends.
impl Guard for InFlight {
    fn finish(self, _end: End<'_>) {}
}

/// A response body that keeps its call counted as outstanding on its
/// endpoint until the body ends or is dropped. The default is an empty
/// body counted on no endpoint: what a layer above answers with when it
/// makes a response itself.
pub type InFlightBody<B> = GuardBody<B, InFlight>;
