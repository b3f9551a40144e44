//! The balancer itself.

use std::{
    sync::{Arc, PoisonError, RwLock, Weak},
    task::{Context, Poll},
};

use tokio::time::Instant;
use tonic::{Code, body::Body};
use tower::Service;

use super::{
    Availability, Discovery, DiscoveryError, ResponseFuture, Target,
    endpoint::{Endpoint, InFlightBody, ReconnectBackoff},
};
use crate::{
    BoxError, {NoEndpoint, Rng, status_with_cause},
};

type MakeEndpoint<S> = dyn Fn(&Target) -> S + Send + Sync;

/// Spreads calls over endpoints; see the [module docs](super).
///
/// Clones share the endpoints, their counters and the discovery task.
pub struct Balance<S> {
    shared: Arc<Shared<S>>,
}

pub(super) struct Shared<S> {
    // Read on every call for a pointer copy; written only when discovery
    // changes the set.
    endpoints: RwLock<Arc<[Arc<Endpoint<S>>]>>,
    pub(super) rng: Arc<Rng>,
    pub(super) backoff: ReconnectBackoff,
    make: Box<MakeEndpoint<S>>,
}

impl<S> Clone for Balance<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Balance<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self.snapshot().iter().map(|e| e.key.clone()).collect();
        f.debug_struct("Balance").field("endpoints", &keys).finish()
    }
}

// === impl Balance ===

impl<S> Balance<S> {
    pub(super) fn snapshot(&self) -> Arc<[Arc<Endpoint<S>>]> {
        self.shared
            .endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<S> Balance<S>
where
    S: Send + Sync + 'static,
{
    /// Finds the endpoints with `discovery` and builds a service for each
    /// with `make`. A DNS discovery is re-resolved in the background for as
    /// long as a clone of the balancer lives.
    pub async fn discover<F>(
        discovery: Discovery,
        make: F,
        rng: Arc<Rng>,
        backoff: ReconnectBackoff,
    ) -> Result<Self, DiscoveryError>
    where
        F: Fn(&Target) -> S + Send + Sync + 'static,
    {
        let targets = discovery.resolve().await?;
        let balance = Self {
            shared: Arc::new(Shared {
                endpoints: RwLock::new(Arc::from(Vec::new())),
                rng,
                backoff,
                make: Box::new(make),
            }),
        };
        balance.update(&targets);
        if let Some(every) = discovery.refresh_every() {
            tokio::spawn(refresh(Arc::downgrade(&balance.shared), discovery, every));
        }
        Ok(balance)
    }

    /// The endpoint keys, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.snapshot().iter().map(|e| e.key.clone()).collect()
    }

    /// Replaces the endpoint set: endpoints whose key stays keep their
    /// service and counters; new ones are built; gone ones are dropped.
    pub(crate) fn update(&self, targets: &[Target]) {
        let current = self.snapshot();
        let next: Vec<Arc<Endpoint<S>>> = targets
            .iter()
            .map(|target| {
                current
                    .iter()
                    .find(|e| e.key == target.key)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Endpoint::new(
                            target.key.clone(),
                            (self.shared.make)(target),
                        ))
                    })
            })
            .collect();
        *self
            .shared
            .endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::from(next);
    }
}

impl<S> Balance<S>
where
    S: Availability,
{
    /// Power of two choices among the endpoints that are not ejected: the
    /// one of lower cost (peak-EWMA latency times calls outstanding, see
    /// `load`).
    fn pick(&self, endpoints: &[Arc<Endpoint<S>>], now: Instant) -> Option<usize> {
        let usable = |i: usize| {
            let e = &endpoints[i];
            e.service.is_available(now) && !e.backing_off(now)
        };
        let n = endpoints.len();
        match n {
            0 => None,
            1 => usable(0).then_some(0),
            _ => {
                let rng = &self.shared.rng;
                let a = rng.below(n);
                let mut b = rng.below(n - 1);
                if b >= a {
                    b += 1;
                }
                match (usable(a), usable(b)) {
                    (true, true) if prefer(&endpoints[b], &endpoints[a], now) => Some(b),
                    (true, _) => Some(a),
                    (false, true) => Some(b),
                    // Both drawn are ejected: take the first usable one after a.
                    (false, false) => (1..n).map(|k| (a + k) % n).find(|&i| usable(i)),
                }
            }
        }
    }
}

/// Whether `b` is the better choice than `a`: it costs less than half as
/// much, or their costs are within a factor of two and `b` has fewer calls
/// outstanding. The band keeps endpoints of about the same latency sharing
/// calls evenly (a pure cost comparison would send every call of a lightly
/// loaded client to whichever answered fastest lately), while a slow or
/// silent endpoint, whose cost is many times the others', is passed over.
fn prefer<S>(b: &Endpoint<S>, a: &Endpoint<S>, now: Instant) -> bool {
    let (cost_a, cost_b) = (a.cost(now), b.cost(now));
    if cost_b * 2.0 < cost_a {
        return true;
    }
    if cost_a * 2.0 < cost_b {
        return false;
    }
    b.in_flight() < a.in_flight()
}

async fn refresh<S>(shared: Weak<Shared<S>>, discovery: Discovery, every: std::time::Duration)
where
    S: Send + Sync + 'static,
{
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match discovery.resolve().await {
            Ok(targets) => Balance { shared }.update(&targets),
            // Keep the endpoints we have; DNS may be back next time.
            Err(error) => tracing::warn!(%error, "endpoint discovery failed"),
        }
    }
}

impl<S, B> Service<http::Request<Body>> for Balance<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>>
        + Availability
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    type Response = http::Response<InFlightBody<B>>;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per endpoint, checked when a call picks one.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let endpoints = self.snapshot();
        let now = Instant::now();
        // With every endpoint ejected, a call still goes to one whose
        // breaker is open, if there is one: the breaker fails it at once,
        // without the network, and the caller learns why (`BreakerOpen`).
        let chosen = self
            .pick(&endpoints, now)
            .or_else(|| endpoints.iter().position(|e| !e.service.is_available(now)));
        let Some(index) = chosen else {
            // Where connects fail, the caller is told why (a refused
            // connect, a TLS handshake's reason).
            let last = endpoints.iter().find_map(|e| e.last_failure());
            let message = match last.as_ref().and_then(|failed| failed.handshake()) {
                Some(handshake) => format!("no endpoint available: {handshake}"),
                None => "no endpoint available".to_owned(),
            };
            let status = status_with_cause(Code::Unavailable, &message, NoEndpoint::after(last));
            return ResponseFuture::failed(Box::new(status));
        };
        // With one endpoint there is no choice to make: its calls are
        // counted, but not timed (a clock read, a lock and an exponential
        // a call saved).
        let timed = endpoints.len() > 1;
        ResponseFuture::calling(
            endpoints[index].clone(),
            self.shared.clone(),
            request,
            now,
            timed,
        )
    }
}

/// Whether the error says a connection could not be made: sinew's own
/// [`ConnectFailed`](crate::ConnectFailed), tonic's `ConnectError`
/// (a channel made elsewhere), or an `io::Error` of a refused or timed
/// out connect.
pub(crate) fn is_connect_error(error: &(dyn std::error::Error + 'static)) -> bool {
    sinew_core::status::chain(error).any(|error| {
        error.is::<crate::ConnectFailed>()
            || error.is::<tonic::ConnectError>()
            || error.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
                )
            })
    })
}
