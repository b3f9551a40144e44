use std::task::{Context, Poll};

use tonic::body::Body;
use tower::{Layer, Service};

use super::{HedgeLayer, future::ResponseFuture, layer::Settings};
use crate::{CallDeadline, CallPolicy};

/// Hedges calls as gRFC A6 says; see the [module docs](super).
///
/// A clone shares the throttle of the layer that built it.
#[derive(Debug, Clone)]
pub struct Hedge<S> {
    inner: S,
    settings: Settings,
}

// === impl Hedge ===

impl<S> Hedge<S> {
    /// Wraps `inner` with [`HedgeLayer::default`]'s settings (its own
    /// throttle). Use the layer to share a throttle.
    pub fn new(inner: S) -> Self {
        HedgeLayer::default().layer(inner)
    }

    pub(super) fn with_settings(inner: S, settings: Settings) -> Self {
        Self { inner, settings }
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

impl<S, B> Service<http::Request<Body>> for Hedge<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Error: Into<crate::BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = crate::BoxError;
    type Future = ResponseFuture<S>;

    /// Always ready: every copy drives its own clone of the inner service
    /// to readiness.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let Some(hedging) = CallPolicy::of(request.extensions()).and_then(|p| p.hedged()) else {
            return ResponseFuture::forward(inner, request);
        };
        let deadline = CallDeadline::of(request.extensions());
        ResponseFuture::hedging(inner, self.settings.clone(), hedging, deadline, request)
    }
}
