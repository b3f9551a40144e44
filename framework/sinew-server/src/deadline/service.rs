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
/// still streaming. While the handler runs, the deadline is its task's
/// [`Deadline::current`](super::Deadline::current).
///
/// Calls to the paths given to [`uncapped`](Self::uncapped) are bounded
/// by their caller's `grpc-timeout` alone, and run without a deadline
/// when it sends none.
#[derive(Debug, Clone)]
pub struct ServerDeadline<S> {
    inner: S,
    ceiling: Duration,
    uncapped: &'static [&'static str],
}

// === impl ServerDeadline ===

impl<S> ServerDeadline<S> {
    /// Wraps `inner`; calls get at most `ceiling`.
    pub fn new(inner: S, ceiling: Duration) -> Self {
        Self {
            inner,
            ceiling,
            uncapped: &[],
        }
    }

    /// Calls to these paths (`/package.Service/Method`) are bounded only
    /// by their caller's `grpc-timeout`, not by the ceiling: streams meant
    /// to last, such as health's `Watch`.
    pub fn uncapped(mut self, paths: &'static [&'static str]) -> Self {
        self.uncapped = paths;
        self
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
        let capped = !self.uncapped.contains(&request.uri().path());
        let budget = match (asked, capped) {
            (Some(asked), true) => Some(asked.min(self.ceiling)),
            (None, true) => Some(self.ceiling),
            (asked, false) => asked,
        };
        let deadline = budget.map(|budget| Instant::now() + budget);
        if let Some(deadline) = deadline {
            request.extensions_mut().insert(Deadline::at(deadline));
        }
        ResponseFuture::new(self.inner.call(request), deadline)
    }
}
