use std::{
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;
use tower::Service;

use sinew_core::deadline::parse_grpc_timeout;

use super::{Deadline, DeadlineBody, ResponseFuture};

/// Bounds each call by its deadline: the caller's `grpc-timeout`, capped by the
/// ceiling; past it the call fails with `DEADLINE_EXCEEDED`, whether its
/// handler is still working on the response headers or the response is
/// still streaming. While the handler and its response stream run, the
/// deadline is their task's [`Deadline::current`](super::Deadline::current).
#[derive(Debug, Clone)]
pub struct ServerDeadline<S> {
    inner: S,
    ceiling: Duration,
}

// === impl ServerDeadline ===

impl<S> ServerDeadline<S> {
    /// Wraps `inner`; calls get at most `ceiling`.
    pub fn new(inner: S, ceiling: Duration) -> Self {
        Self { inner, ceiling }
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

impl<S, B, ResBody> Service<http::Request<B>> for ServerDeadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<DeadlineBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let asked = crate::headers::find(request.headers(), &crate::headers::GRPC_TIMEOUT)
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        let budget = asked.map_or(self.ceiling, |asked| asked.min(self.ceiling));
        let deadline = Instant::now() + budget;
        request.extensions_mut().insert(Deadline::at(deadline));
        ResponseFuture::new(self.inner.call(request), deadline)
    }
}
