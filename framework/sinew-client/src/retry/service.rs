use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tonic::body::Body;
use tower::{Layer, Service};

use super::{RetryLayer, future::ResponseFuture, layer::Settings};
use crate::{CallDeadline, CallPolicy};

/// Retries failed calls as gRFC A6 says; see the [module docs](super).
///
/// A clone shares the throttle and the random source of the layer that
/// built it.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    settings: Arc<Settings>,
}

// === impl Retry ===

impl<S> Retry<S> {
    /// Wraps `inner` with [`RetryLayer::default`]'s settings (its own
    /// throttle, jitter from entropy). Use the layer to share a throttle or
    /// seed the jitter.
    pub fn new(inner: S) -> Self {
        RetryLayer::default().layer(inner)
    }

    pub(super) fn with_settings(inner: S, settings: Arc<Settings>) -> Self {
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

impl<S, B> Service<http::Request<Body>> for Retry<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Error: Into<crate::BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = crate::BoxError;
    type Future = ResponseFuture<S>;

    /// Always ready: every attempt, the first included, waits for the
    /// readiness of its own clone of the inner service, so that a retry
    /// after a backoff sees the inner service as it is then.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let Some(policy) = CallPolicy::of(request.extensions()) else {
            return ResponseFuture::forward(inner, request);
        };
        // A hedged call is the hedge layer's alone (see CallPolicy::hedged).
        if policy.hedged().is_some() {
            return ResponseFuture::forward(inner, request);
        }
        let deadline = CallDeadline::of(request.extensions());
        ResponseFuture::retrying(inner, self.settings.clone(), policy, deadline, request)
    }
}
