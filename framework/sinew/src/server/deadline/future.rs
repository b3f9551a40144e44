use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tonic::{Status, body::Body};

pin_project! {
    /// Response future of [`ServerDeadline`](super::ServerDeadline).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, deadline: Instant) -> Self {
        Self {
            inner,
            sleep: sleep_until(deadline),
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Ok(
                Status::deadline_exceeded("deadline exceeded").into_http()
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}
