use std::{
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry::KeyValue;
use tokio::time::Instant;

use super::{
    BreakerConfig, State,
    state::{Admission, Circuit, Outcome},
};
use crate::{balance::Target, telemetry::events::BreakerTelemetry};

/// The shared state of one breaker. Cheap to clone: every clone, and every
/// [`Breaker`](super::Breaker) built with it, sees and drives the same
/// breaker.
///
/// A load balancer keeps one per endpoint and skips the endpoints that are
/// not [`available`](Self::is_available).
///
/// While the breaker is closed, asking whether it is available and
/// letting a call through take no lock: every thread's calls to an
/// endpoint would otherwise queue on its breaker's lock three times a
/// call. Only a call's outcome is recorded under the lock.
#[derive(Clone)]
pub struct BreakerHandle {
    shared: Arc<Shared>,
}

struct Shared {
    circuit: Mutex<Circuit>,
    /// Also the circuit's: reports refusals without the lock.
    telemetry: Arc<BreakerTelemetry>,
    /// [`Circuit::closed_token`], kept in step under the lock by every
    /// change of mode, read without it.
    closed: AtomicU64,
}

// === impl BreakerHandle ===

impl BreakerHandle {
    /// A new, closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_telemetry(config, BreakerTelemetry::new(None, config.trips()))
    }

    /// A new, closed breaker guarding the endpoint `target`: its logs and
    /// metrics name the endpoint (`server.address`, the host calls are
    /// addressed to; `network.peer.address` and `network.peer.port`, where
    /// they go). The client makes each endpoint's breaker so.
    pub fn for_endpoint(config: BreakerConfig, target: &Target) -> Self {
        let connect = target.connect();
        let mut attributes = vec![
            KeyValue::new(
                "server.address",
                target.origin().host().unwrap_or_default().to_owned(),
            ),
            KeyValue::new(
                "network.peer.address",
                connect.host().unwrap_or_default().to_owned(),
            ),
        ];
        if let Some(port) = connect.port_u16() {
            attributes.push(KeyValue::new("network.peer.port", i64::from(port)));
        }
        let endpoint = Some((target.key().to_owned(), attributes));
        Self::with_telemetry(config, BreakerTelemetry::new(endpoint, config.trips()))
    }

    fn with_telemetry(config: BreakerConfig, telemetry: BreakerTelemetry) -> Self {
        let telemetry = Arc::new(telemetry);
        let circuit = Circuit::with_telemetry(config, Instant::now(), telemetry.clone());
        Self {
            shared: Arc::new(Shared {
                telemetry,
                closed: AtomicU64::new(circuit.closed_token()),
                circuit: Mutex::new(circuit),
            }),
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
    /// [`BreakerOpen`](crate::BreakerOpen).
    pub fn is_available(&self, now: Instant) -> bool {
        self.closed_token() != 0 || self.lock().is_available(now)
    }

    /// The breaker's configuration.
    pub fn config(&self) -> BreakerConfig {
        *self.lock().config()
    }

    /// Lets a call through, or says how long until one may go.
    pub(crate) fn admit(&self, deadline: Option<Instant>) -> Result<Ticket, Option<Duration>> {
        let admission = match self.closed_token() {
            0 => {
                let admission = {
                    let mut circuit = self.lock();
                    let admission = circuit.admit(Instant::now());
                    // An open breaker whose recovery timeout passed went
                    // half-open here.
                    self.publish(&circuit);
                    admission
                };
                // Reported once the lock is free: while the breaker is
                // open, every call comes this way.
                admission.inspect_err(|_| self.shared.telemetry.refused())?
            }
            token => Admission::closed(token),
        };
        Ok(Ticket {
            handle: self.clone(),
            admission: Some(admission),
            deadline,
        })
    }

    /// The endpoint's connection was made again after failing: an open
    /// breaker turns half-open at once, so that probes go now rather than
    /// when its recovery timeout runs out. A server that restarted is
    /// back as soon as it accepts connections. (A closed or half-open
    /// breaker is left as it is.)
    pub fn reconnected(&self) {
        if self.closed_token() != 0 {
            return;
        }
        let mut circuit = self.lock();
        circuit.reconnected();
        self.publish(&circuit);
    }

    fn closed_token(&self) -> u64 {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Makes the lock-free token match `circuit`, whose lock is held.
    fn publish(&self, circuit: &Circuit) {
        self.shared
            .closed
            .store(circuit.closed_token(), Ordering::Release);
    }

    // The lock is held for a few arithmetic steps and never across an
    // await, and no code under it can panic, so a poisoned lock still
    // guards a consistent state.
    fn lock(&self) -> MutexGuard<'_, Circuit> {
        self.shared
            .circuit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
/// Dropping a ticket without recording an outcome (the caller
/// cancelled, or the call was never sent) records nothing and frees its
/// probe slot, so a slot cannot leak whatever path the call takes.
#[derive(Debug)]
pub struct Ticket {
    handle: BreakerHandle,
    /// `None` once finished.
    admission: Option<Admission>,
    /// The call's deadline: a call dropped past it timed out.
    deadline: Option<Instant>,
}

// === impl Ticket ===

impl Ticket {
    pub(crate) fn record(mut self, outcome: Outcome) {
        if let Some(admission) = self.admission.take() {
            let mut circuit = self.handle.lock();
            circuit.record(admission, outcome, Instant::now());
            // A failure may have tripped it, a probe's success closed it.
            self.handle.publish(&circuit);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        // A call dropped once its deadline has passed timed out waiting
        // for the server: a failure, as `DEADLINE_EXCEEDED` is. (Its
        // future or body was dropped by the deadline layer above, so no
        // outcome came through this breaker.) Dropped earlier, the caller
        // gave up, or a hedge won: that says nothing about the server.
        if let Some(deadline) = self.deadline {
            let now = Instant::now();
            if now >= deadline {
                let mut circuit = self.handle.lock();
                circuit.record(admission, Outcome::Failure, now);
                self.handle.publish(&circuit);
                return;
            }
        }
        // Only a probe holds anything to give back.
        if admission.is_probe() {
            self.handle.lock().cancel(admission);
        }
    }
}
