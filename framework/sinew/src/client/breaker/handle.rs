use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    BreakerConfig, State,
    state::{Admission, Circuit, Outcome},
};

/// The shared state of one breaker. Cheap to clone: every clone, and every
/// [`Breaker`](super::Breaker) built with it, sees and drives the same
/// breaker.
///
/// A load balancer keeps one per endpoint and skips the endpoints that are
/// not [`available`](Self::is_available).
#[derive(Clone)]
pub struct BreakerHandle {
    circuit: Arc<Mutex<Circuit>>,
}

// === impl BreakerHandle ===

impl BreakerHandle {
    /// A new, closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            circuit: Arc::new(Mutex::new(Circuit::new(config, Instant::now()))),
        }
    }

    /// The state now. An open breaker whose recovery timeout has passed
    /// reads as [`State::HalfOpen`]: the next call will be let through as
    /// a probe.
    pub fn state(&self) -> State {
        self.lock().state(Instant::now())
    }

    /// Whether a call may be let through at `now`: false while open and
    /// the recovery timeout has not passed.
    ///
    /// A half-open breaker is available even when all its probe slots are
    /// taken, so a call sent to it may still fail fast with
    /// [`BreakerOpen`](crate::client::BreakerOpen).
    pub fn is_available(&self, now: Instant) -> bool {
        self.lock().is_available(now)
    }

    /// The breaker's configuration.
    pub fn config(&self) -> BreakerConfig {
        *self.lock().config()
    }

    /// Lets a call through, or says how long until one may go.
    pub(crate) fn admit(&self) -> Result<Ticket, Option<Duration>> {
        let admission = self.lock().admit(Instant::now())?;
        Ok(Ticket {
            handle: self.clone(),
            admission: Some(admission),
        })
    }

    // The lock is held for a few arithmetic steps and never across an
    // await, and no code under it can panic, so a poisoned lock still
    // guards a consistent state.
    fn lock(&self) -> MutexGuard<'_, Circuit> {
        self.circuit.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("state", &self.state())
            .finish()
    }
}

/// An admitted call's claim on the breaker, until its outcome is known.
///
/// Dropping a ticket without [`finish`](Self::finish) (the caller
/// cancelled, or the call was never sent) records nothing and frees its
/// probe slot, so a slot cannot leak whatever path the call takes.
#[derive(Debug)]
pub(crate) struct Ticket {
    handle: BreakerHandle,
    /// `None` once finished.
    admission: Option<Admission>,
}

// === impl Ticket ===

impl Ticket {
    pub(crate) fn finish(mut self, outcome: Outcome) {
        if let Some(admission) = self.admission.take() {
            self.handle
                .lock()
                .record(admission, outcome, Instant::now());
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            self.handle.lock().cancel(admission);
        }
    }
}
