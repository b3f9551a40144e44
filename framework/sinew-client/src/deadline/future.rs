use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tonic::Status;

use super::DeadlineBody;
use crate::BoxError;

pin_project! {
    /// Response future of [`ClientDeadline`](super::ClientDeadline).
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Bounded { #[pin] inner: F, #[pin] sleep: Sleep, deadline: Instant },
        Unbounded { #[pin] inner: F },
        Failed { status: Option<Status> },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn bounded(inner: F, deadline: Instant) -> Self {
        Self {
            state: State::Bounded {
                inner,
                sleep: sleep_until(deadline),
                deadline,
            },
        }
    }

    pub(super) fn unbounded(inner: F) -> Self {
        Self {
            state: State::Unbounded { inner },
        }
    }

    pub(super) fn failed(status: Status) -> Self {
        Self {
            state: State::Failed {
                status: Some(status),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<DeadlineBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Bounded {
                inner,
                sleep,
                deadline,
            } => {
                if let Poll::Ready(result) = inner.poll(cx) {
                    let deadline = *deadline;
                    return Poll::Ready(match result {
                        Ok(response) => Ok(response.map(|body| DeadlineBody::new(body, deadline))),
                        // tonic's channel enforces the grpc-timeout we send
                        // and calls its expiry CANCELLED; it is this deadline.
                        Err(error) => {
                            let error = error.into();
                            if timed_out(&*error) || Instant::now() >= deadline {
                                Err(deadline_exceeded())
                            } else {
                                Err(error)
                            }
                        }
                    });
                }
                match sleep.poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(Box::new(Status::deadline_exceeded(
                        "deadline exceeded",
                    )))),
                    Poll::Pending => Poll::Pending,
                }
            }
            StateProj::Unbounded { inner } => inner.poll(cx).map(|result| {
                result
                    .map(|response| response.map(DeadlineBody::unbounded))
                    .map_err(Into::into)
            }),
            StateProj::Failed { status } => Poll::Ready(Err(Box::new(
                status
                    .take()
                    .expect("ResponseFuture polled after completion"),
            ))),
        }
    }
}

fn deadline_exceeded() -> BoxError {
    Box::new(Status::deadline_exceeded("deadline exceeded"))
}

/// Whether tonic's own timeout expired somewhere in the error's chain.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    sinew_core::status::chain(error).any(|error| error.is::<tonic::TimeoutExpired>())
}
