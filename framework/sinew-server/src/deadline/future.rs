use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tonic::Status;

use super::Deadline;

pin_project! {
    /// Response future of [`ServerDeadline`](super::ServerDeadline).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        deadline: Deadline,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, deadline: Instant) -> Self {
        Self {
            inner,
            sleep: sleep_until(deadline),
            deadline: Deadline::at(deadline),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The handler runs inside this poll: give it the deadline.
        let inner = this.inner;
        if let Poll::Ready(result) = this.deadline.sync_scope(|| inner.poll(cx)) {
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
