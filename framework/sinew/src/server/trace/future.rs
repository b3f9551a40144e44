use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tonic::body::Body;
use tracing::instrument::Instrumented;

use crate::{
    BoxError,
    telemetry::call::{CallRecord, code_of_error, finish_on_response},
};

pin_project! {
    /// Response future of [`ServerTrace`](super::ServerTrace).
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Off { #[pin] inner: F },
        Recorded { #[pin] inner: Instrumented<F>, record: Option<CallRecord> },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn off(inner: F) -> Self {
        Self {
            state: State::Off { inner },
        }
    }

    pub(super) fn recorded(inner: Instrumented<F>, record: CallRecord) -> Self {
        Self {
            state: State::Recorded {
                inner,
                record: Some(record),
            },
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Off { inner } => inner.poll(cx).map_err(Into::into),
            StateProj::Recorded { inner, record } => {
                let result = match inner.poll(cx) {
                    Poll::Ready(result) => result.map_err(Into::into),
                    Poll::Pending => return Poll::Pending,
                };
                let Some(mut record) = record.take() else {
                    return Poll::Ready(result);
                };
                Poll::Ready(match result {
                    Ok(response) => Ok(finish_on_response(record, response)),
                    Err(error) => {
                        record.finish(code_of_error(&error));
                        Err(error)
                    }
                })
            }
        }
    }
}
