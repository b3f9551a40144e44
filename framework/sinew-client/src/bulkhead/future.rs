//! The response future of [`Bulkhead`](super::Bulkhead).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;
use tonic::{Code, body::Body};
use tower::Service;

use super::{
    body::SlotBody,
    limits::{Slot, Wait},
};
use crate::{
    BoxError, {BulkheadFull, status_with_cause},
};

pin_project! {
    /// Response future of [`Bulkhead`](super::Bulkhead): waits for a slot
    /// if it must, then readies and calls the inner service `S`, whose
    /// future is `F`.
    pub struct ResponseFuture<S, F> {
        #[pin]
        state: State<S, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F> {
        Queued {
            wait: Wait,
            since: tokio::time::Instant,
            service: Option<S>,
            request: Option<http::Request<Body>>,
        },
        Ready {
            service: S,
            request: Option<http::Request<Body>>,
            slot: Option<Slot>,
        },
        Called {
            #[pin]
            future: F,
            slot: Option<Slot>,
        },
        Rejected {
            timed_out: bool,
        },
    }
}

// === impl ResponseFuture ===

impl<S, F> ResponseFuture<S, F> {
    pub(super) fn queued(wait: Wait, service: S, request: http::Request<Body>) -> Self {
        Self {
            state: State::Queued {
                wait,
                since: tokio::time::Instant::now(),
                service: Some(service),
                request: Some(request),
            },
        }
    }

    pub(super) fn ready(slot: Slot, service: S, request: http::Request<Body>) -> Self {
        Self {
            state: State::Ready {
                service,
                request: Some(request),
                slot: Some(slot),
            },
        }
    }

    pub(super) fn rejected() -> Self {
        Self {
            state: State::Rejected { timed_out: false },
        }
    }
}

impl<S, F, B, E> Future for ResponseFuture<S, F>
where
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = E, Future = F>,
    F: Future<Output = Result<http::Response<B>, E>>,
    B: http_body::Body,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<SlotBody<B>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut state = self.as_mut().project().state;
            let next = match state.as_mut().project() {
                StateProj::Rejected { timed_out } => return Poll::Ready(Err(full(*timed_out))),
                StateProj::Queued {
                    wait,
                    since,
                    service,
                    request,
                } => match (ready!(wait.as_mut().poll(cx)), service.take()) {
                    (None, _) => {
                        if let Some(request) = request {
                            sinew_telemetry::events::bulkhead_rejected(request.uri().path(), true);
                        }
                        State::Rejected { timed_out: true }
                    }
                    (Some(slot), Some(service)) => {
                        if let Some(request) = request {
                            sinew_telemetry::events::bulkhead_waited(
                                request.uri().path(),
                                since.elapsed(),
                            );
                        }
                        State::Ready {
                            service,
                            request: request.take(),
                            slot: Some(slot),
                        }
                    }
                    (Some(_), None) => return Poll::Ready(Err(spent())),
                },
                StateProj::Ready {
                    service,
                    request,
                    slot,
                } => {
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        *slot = None;
                        return Poll::Ready(Err(error.into()));
                    }
                    let (Some(request), Some(slot)) = (request.take(), slot.take()) else {
                        return Poll::Ready(Err(spent()));
                    };
                    State::Called {
                        future: service.call(request),
                        slot: Some(slot),
                    }
                }
                StateProj::Called { future, slot } => {
                    let result = ready!(future.poll(cx));
                    // Taken before looking at the result, so that an error,
                    // which ends the call, frees the slot now rather than
                    // when the caller drops this future.
                    let slot = slot.take();
                    let response = result.map_err(Into::into)?;
                    return Poll::Ready(Ok(hold(response, slot)));
                }
            };
            state.set(next);
        }
    }
}

/// Frees the slot now if the call is over, or hands it to the body.
fn hold<B: http_body::Body>(
    response: http::Response<B>,
    slot: Option<Slot>,
) -> http::Response<SlotBody<B>> {
    // A trailers-only response (how servers answer most errors) has no
    // body to wait for; nor does one whose body is already over.
    let over = crate::headers::grpc_status(response.headers()).is_some()
        || response.body().is_end_stream();
    let slot = if over { None } else { slot };
    response.map(|body| SlotBody::new(body, slot.map(super::HeldSlot::new)))
}

fn full(timed_out: bool) -> BoxError {
    Box::new(status_with_cause(
        Code::ResourceExhausted,
        "too many concurrent calls",
        BulkheadFull { timed_out },
    ))
}

/// The future was polled again after it completed.
fn spent() -> BoxError {
    Box::new(tonic::Status::internal(
        "bulkhead future polled after completion",
    ))
}
