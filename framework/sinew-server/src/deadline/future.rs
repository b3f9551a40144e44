use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tonic::Status;

use super::{Deadline, DeadlineBody};

pin_project! {
    /// Response future of [`ServerDeadline`](super::ServerDeadline).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // `None` for a call with no deadline (an uncapped path whose
        // caller sent no `grpc-timeout`).
        #[pin]
        sleep: Option<Sleep>,
        deadline: Option<Instant>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, deadline: Option<Instant>) -> Self {
        Self {
            inner,
            sleep: deadline.map(sleep_until),
            deadline,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = Result<http::Response<DeadlineBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(deadline) = *this.deadline else {
            return this
                .inner
                .poll(cx)
                .map(|result| result.map(|response| response.map(DeadlineBody::unbounded)));
        };
        // The handler runs inside this poll: give it the deadline.
        let inner = this.inner;
        if let Poll::Ready(result) = Deadline::at(deadline).sync_scope(|| inner.poll(cx)) {
            // The response may still be streaming: its body ends at the
            // deadline too (its timer is made only if it has to wait).
            return Poll::Ready(
                result.map(|response| response.map(|body| DeadlineBody::new(body, deadline))),
            );
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Ok(Status::deadline_exceeded(
                "deadline exceeded",
            )
            .into_http())),
            _ => Poll::Pending,
        }
    }
}
