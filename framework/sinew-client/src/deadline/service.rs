use std::{
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;
use tonic::{Code, body::Body};
use tower::Service;

use super::{DeadlineBody, ResponseFuture};
use crate::{
    BoxError,
    {CallDeadline, CallOptions, CallPolicy, DeadlineSpent, set_grpc_timeout, status_with_cause},
};
use sinew_core::deadline::Deadline;

/// Gives each call a deadline and enforces it; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct ClientDeadline<S> {
    inner: S,
    default_timeout: Option<Duration>,
    headroom: Duration,
}

// === impl ClientDeadline ===

impl<S> ClientDeadline<S> {
    /// Wraps `inner`. Calls without a timeout of their own get
    /// `default_timeout`; `headroom` is kept back from inherited deadlines.
    pub fn new(inner: S, default_timeout: Option<Duration>, headroom: Duration) -> Self {
        Self {
            inner,
            default_timeout,
            headroom,
        }
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

    /// The deadline of a call with these extensions, made now.
    fn deadline(&self, extensions: &http::Extensions, now: Instant) -> Option<Instant> {
        let timeout = extensions
            .get::<CallOptions>()
            .and_then(|o| o.timeout)
            .or_else(|| CallPolicy::of(extensions).and_then(|p| p.timeout))
            .or(self.default_timeout);
        let own = timeout.map(|t| now + t);
        let inherited = Deadline::current().map(|d| {
            d.instant()
                .checked_sub(self.headroom)
                .unwrap_or(now)
                .max(now)
        });
        match (own, inherited) {
            (Some(own), Some(inherited)) => Some(own.min(inherited)),
            (own, inherited) => own.or(inherited),
        }
    }
}

impl<S, B> Service<http::Request<Body>> for ClientDeadline<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<DeadlineBody<B>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let now = Instant::now();
        let Some(deadline) = self.deadline(request.extensions(), now) else {
            return ResponseFuture::unbounded(self.inner.call(request));
        };
        if deadline <= now {
            // The budget is gone: say so without sending anything.
            let status =
                status_with_cause(Code::DeadlineExceeded, "deadline exceeded", DeadlineSpent);
            return ResponseFuture::failed(status);
        }
        // The deadline is enforced out here: the layers below need no timer
        // of their own for it (they still never start work past it).
        CallDeadline::enforced(deadline).set(request.extensions_mut());
        set_grpc_timeout(request.headers_mut(), deadline - now);
        ResponseFuture::bounded(self.inner.call(request), deadline)
    }
}
