use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    task::{Context, Poll},
};

use super::body::PanicSafeBody;
use futures_util::FutureExt;
use tower::Service;

use super::{ResponseFuture, future::internal_error};

/// A service whose panics become `INTERNAL` responses.
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

// === impl CatchPanic ===

impl<S> CatchPanic<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
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

impl<S, Request, B> Service<Request> for CatchPanic<S>
where
    S: Service<Request, Response = http::Response<B>>,
    B: Default,
{
    type Response = http::Response<PanicSafeBody<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The handler may panic while building its future, too.
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => ResponseFuture::new(AssertUnwindSafe(future).catch_unwind()),
            Err(panic) => ResponseFuture::panicked(internal_error(panic.as_ref())),
        }
    }
}
