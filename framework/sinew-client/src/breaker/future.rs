//! The response future of [`Breaker`](super::Breaker).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use pin_project_lite::pin_project;
use tonic::Code;

use super::{
    body::BreakerBody,
    classify::{code_outcome, error_outcome, http_code},
    handle::Ticket,
    state::Outcome,
};
use crate::{
    BoxError, {BreakerOpen, status_with_cause},
};

pin_project! {
    /// Response future of [`Breaker`](super::Breaker): the inner call,
    /// whose outcome it records, or an immediate `UNAVAILABLE` when the
    /// breaker is open.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called {
            #[pin]
            future: F,
            // Taken when the response (or error) arrives; if the future
            // is dropped first, the ticket's drop frees its probe slot.
            ticket: Option<Ticket>,
        },
        Rejected {
            retry_after: Option<Duration>,
        },
    }
}

// === impl ResponseFuture ===

impl<F> ResponseFuture<F> {
    pub(super) fn called(future: F, ticket: Ticket) -> Self {
        Self {
            kind: Kind::Called {
                future,
                ticket: Some(ticket),
            },
        }
    }

    pub(super) fn rejected(retry_after: Option<Duration>) -> Self {
        Self {
            kind: Kind::Rejected { retry_after },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: http_body::Body,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<BreakerBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { retry_after } => {
                // The status is built here rather than in `call`, so a
                // rejection costs nothing until it is polled.
                let status = status_with_cause(
                    Code::Unavailable,
                    "circuit breaker open",
                    BreakerOpen {
                        retry_after: *retry_after,
                    },
                );
                Poll::Ready(Err(Box::new(status)))
            }
            KindProj::Called { future, ticket } => {
                let result = ready!(future.poll(cx));
                let ticket = ticket.take();
                Poll::Ready(match (result, ticket) {
                    (Ok(response), Some(ticket)) => Ok(watch(response, ticket)),
                    (Err(error), Some(ticket)) => {
                        let error = error.into();
                        if let Some(outcome) = error_outcome(&*error) {
                            ticket.record(outcome);
                        }
                        Err(error)
                    }
                    // Polled again after completion: pass the inner
                    // future's answer through (it may panic, as futures
                    // may).
                    (result, None) => result
                        .map(|response| response.map(|body| BreakerBody::new(body, None)))
                        .map_err(Into::into),
                })
            }
        }
    }
}

/// Records the outcome now if the headers carry it, or else gives the
/// body the ticket to record it at the trailers.
fn watch<B: http_body::Body>(
    response: http::Response<B>,
    ticket: Ticket,
) -> http::Response<BreakerBody<B>> {
    let outcome = if let Some(code) = crate::headers::grpc_status(response.headers()) {
        Some(code_outcome(code))
    } else if response.status() != http::StatusCode::OK {
        Some(code_outcome(http_code(response.status())))
    } else if response.body().is_end_stream() {
        // A 200 without a body or a status: tonic reports UNKNOWN (and
        // drops an ended body unread, so its trailers never come).
        Some(Outcome::Failure)
    } else {
        None
    };
    let ticket = match outcome {
        Some(outcome) => {
            ticket.record(outcome);
            None
        }
        None => Some(ticket),
    };
    response.map(|body| BreakerBody::new(body, ticket))
}
