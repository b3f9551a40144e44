//! One endpoint: its service, its outstanding calls, its reconnect backoff.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::{BoxError, Rng};

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
    in_flight: Arc<AtomicUsize>,
    /// Consecutive connect failures.
    failures: AtomicU32,
    /// Until when (nanoseconds after `epoch`) the endpoint is left alone.
    backoff_until: AtomicU64,
    epoch: Instant,
}

impl<S> Endpoint<S> {
    pub(crate) fn new(key: String, service: S) -> Self {
        Self {
            key,
            service,
            in_flight: Arc::new(AtomicUsize::new(0)),
            failures: AtomicU32::new(0),
            backoff_until: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Calls sent to this endpoint and not yet over.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a call as outstanding until the guard drops.
    pub(crate) fn start_call(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }

    /// Whether the endpoint is waiting out a reconnect backoff.
    pub(crate) fn backing_off(&self, now: Instant) -> bool {
        self.nanos_since_epoch(now) < self.backoff_until.load(Ordering::Relaxed)
    }

    /// A connection attempt failed: leave the endpoint alone for a while.
    pub(crate) fn connect_failed(&self, now: Instant, backoff: ReconnectBackoff, rng: &Rng) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed);
        let step = backoff
            .initial
            .saturating_mul(1u32 << failures.min(20))
            .min(backoff.max);
        let wait = step.mul_f64(0.5 + rng.next_f64() / 2.0);
        let until = self.nanos_since_epoch(now + wait);
        self.backoff_until.fetch_max(until, Ordering::Relaxed);
    }

    /// A call went through: the connection works.
    pub(crate) fn connected(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.backoff_until.store(0, Ordering::Relaxed);
        }
    }

    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Decrements an endpoint's outstanding calls when dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// A response body that keeps its call counted as outstanding on its
    /// endpoint until the body ends or is dropped.
    pub struct InFlightBody<B> {
        #[pin]
        inner: B,
        guard: Option<InFlight>,
    }
}

impl<B> InFlightBody<B> {
    pub(crate) fn new(inner: B, guard: Option<InFlight>) -> Self {
        Self { inner, guard }
    }
}

/// An empty body counted on no endpoint: what a layer above answers with
/// when it makes a response itself.
impl<B: Default> Default for InFlightBody<B> {
    fn default() -> Self {
        Self::new(B::default(), None)
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for InFlightBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlightBody")
            .field("inner", &self.inner)
            .field("counted", &self.guard.is_some())
            .finish()
    }
}

impl<B> Body for InFlightBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = &polled {
            this.guard.take();
        }
        polled.map(|frame| frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
