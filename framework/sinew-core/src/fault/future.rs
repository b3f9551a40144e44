//! The response future of [`Fault`](super::Fault).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use pin_project_lite::pin_project;
use tokio::time::{Sleep, sleep};
use tower::Service;

use crate::BoxError;

pin_project! {
    /// Response future of [`Fault`](super::Fault): the inner call, a delay
    /// before it, or an injected answer.
    pub struct ResponseFuture<S, B>
    where
        S: Service<http::Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<http::Request<B>>,
    {
        // The inner service's call, untouched or after a delay.
        Inner {
            #[pin]
            future: S::Future,
        },
        // Injected latency: the service that was polled ready, and the
        // request to call it with once the sleep is over.
        Delay {
            #[pin]
            sleep: Sleep,
            call: Option<(S, http::Request<B>)>,
        },
        // An injected error or abort; `None` once returned.
        Ready {
            result: Option<Result<S::Response, BoxError>>,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<http::Request<B>>,
{
    pub(super) fn inner(future: S::Future) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    pub(super) fn delayed(delay: Duration, service: S, request: http::Request<B>) -> Self {
        Self {
            state: State::Delay {
                sleep: sleep(delay),
                call: Some((service, request)),
            },
        }
    }

    pub(super) fn ready(result: Result<S::Response, BoxError>) -> Self {
        Self {
            state: State::Ready {
                result: Some(result),
            },
        }
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Inner { future } => return future.poll(cx).map_err(Into::into),
                StateProj::Delay { sleep, call } => {
                    ready!(sleep.poll(cx));
                    let (mut service, request) =
                        call.take().expect("delayed call taken once, then replaced");
                    state.set(State::Inner {
                        future: service.call(request),
                    });
                }
                StateProj::Ready { result } => {
                    return Poll::Ready(result.take().expect("polled after completion"));
                }
            }
        }
    }
}
