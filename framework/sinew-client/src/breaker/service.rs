use std::task::{Context, Poll};

use tonic::body::Body;
use tower::Service;

use super::{BreakerBody, BreakerConfig, BreakerHandle, future::ResponseFuture};
use crate::BoxError;

/// A circuit breaker around a client service; see the [module docs](super).
///
/// Clones share one breaker (its [`BreakerHandle`]).
///
/// The breaker decides in `call`. `poll_ready` is the inner service's, so
/// an open breaker does not hide an inner service that is not ready; the
/// client's [`Connection`](crate::connection::Connection) is
/// always ready, and the fail-fast path never calls the inner service.
#[derive(Debug, Clone)]
pub struct Breaker<S> {
    inner: S,
    handle: BreakerHandle,
}

// === impl Breaker ===

impl<S> Breaker<S> {
    /// Wraps `inner` in a new, closed breaker.
    pub fn new(inner: S, config: BreakerConfig) -> Self {
        Self::with_handle(inner, BreakerHandle::new(config))
    }

    /// Wraps `inner` in the breaker `handle` refers to, which it shares
    /// with every other service built with that handle.
    pub fn with_handle(inner: S, handle: BreakerHandle) -> Self {
        Self { inner, handle }
    }

    /// A handle on this breaker's state (a cheap clone).
    pub fn handle(&self) -> BreakerHandle {
        self.handle.clone()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<http::Request<Body>> for Breaker<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body,
{
    type Response = http::Response<BreakerBody<B>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let deadline = crate::CallDeadline::of(request.extensions()).map(crate::CallDeadline::at);
        match self.handle.admit(deadline) {
            Ok(ticket) => ResponseFuture::called(self.inner.call(request), ticket),
            Err(retry_after) => ResponseFuture::rejected(retry_after),
        }
    }
}

/// A load balancer passes over an endpoint while its breaker is open.
impl<S> crate::balance::Availability for Breaker<S> {
    fn is_available(&self, now: tokio::time::Instant) -> bool {
        self.handle.is_available(now)
    }
}
