//! The balancer's response future.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tonic::body::Body;
use tower::{Service, util::Oneshot};

use super::{
    endpoint::{Endpoint, InFlight, InFlightBody},
    service::{Shared, is_connect_error},
};
use crate::{BoxError, connection::Dialed};

pin_project! {
    /// Response future of [`Balance`](super::Balance): the call on the
    /// endpoint it chose, which stays counted on the endpoint until its
    /// response body ends, and backs the endpoint off if no connection
    /// could be made.
    pub struct ResponseFuture<S>
    where
        S: Service<http::Request<Body>>,
    {
        #[pin]
        state: State<S>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S>
    where
        S: Service<http::Request<Body>>,
    {
        Calling {
            #[pin]
            call: Oneshot<S, http::Request<Body>>,
            endpoint: Arc<Endpoint<S>>,
            shared: Arc<Shared<S>>,
            guard: Option<InFlight>,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

// === impl ResponseFuture ===

impl<S> ResponseFuture<S>
where
    S: Service<http::Request<Body>> + Clone,
{
    /// Sends `request` to `endpoint`, counted on it from `now`, and timed
    /// for its latency estimate if `timed`.
    pub(super) fn calling(
        endpoint: Arc<Endpoint<S>>,
        shared: Arc<Shared<S>>,
        request: http::Request<Body>,
        now: Instant,
        timed: bool,
    ) -> Self {
        let guard = endpoint.start_call(now, timed);
        let call = Oneshot::new(endpoint.service.clone(), request);
        Self {
            state: State::Calling {
                call,
                endpoint,
                shared,
                guard: Some(guard),
            },
        }
    }

    /// A call that fails with `error` without an endpoint.
    pub(super) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<S, B> Future for ResponseFuture<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<http::Response<InFlightBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Calling {
                call,
                endpoint,
                shared,
                guard,
            } => {
                let result = ready!(call.poll(cx)).map_err(Into::into);
                Poll::Ready(match result {
                    Ok(response) => {
                        if let Some(guard) = guard {
                            // A call that waited for its connection to be
                            // made timed the dial, not the server.
                            if response.extensions().get::<Dialed>().is_some() {
                                guard.untimed();
                            } else {
                                guard.answered(Instant::now());
                            }
                        }
                        endpoint.connected();
                        // The body keeps the call counted on the endpoint
                        // until it ends.
                        Ok(response.map(|body| InFlightBody::new(body, guard.take())))
                    }
                    Err(error) => {
                        // An error after a wait (a connection closed as
                        // silent, say) counts the time waited, as a call
                        // dropped unanswered does: the guard's drop.
                        drop(guard.take());
                        if is_connect_error(&*error) {
                            let why =
                                sinew_core::status::caused_by::<crate::ConnectFailed>(&*error)
                                    .cloned();
                            endpoint.connect_failed(
                                Instant::now(),
                                shared.backoff,
                                &shared.rng,
                                why,
                            );
                        }
                        Err(error)
                    }
                })
            }
            StateProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<S> std::fmt::Debug for ResponseFuture<S>
where
    S: Service<http::Request<Body>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
