use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
};

use futures_util::future::CatchUnwind;
use pin_project_lite::pin_project;
use tonic::Status;

use super::body::PanicSafeBody;

pin_project! {
    /// Response future of [`CatchPanic`](super::CatchPanic).
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Running { #[pin] future: CatchUnwind<AssertUnwindSafe<F>> },
        Panicked { response: Option<http::Response<PanicSafeBody<B>>> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(super) fn new(future: CatchUnwind<AssertUnwindSafe<F>>) -> Self {
        Self {
            state: State::Running { future },
        }
    }

    pub(super) fn panicked(response: http::Response<PanicSafeBody<B>>) -> Self {
        Self {
            state: State::Panicked {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = Result<http::Response<PanicSafeBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running { future } => match future.poll(cx) {
                Poll::Ready(Ok(result)) => {
                    Poll::Ready(result.map(|response| response.map(PanicSafeBody::new)))
                }
                Poll::Ready(Err(panic)) => Poll::Ready(Ok(internal_error(panic.as_ref()))),
                Poll::Pending => Poll::Pending,
            },
            StateProj::Panicked { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

/// The status a caller gets for a panic: it says nothing of the panic.
#[allow(non_snake_case, reason = "reads as the constant it stands for")]
pub(super) fn internal_status() -> Status {
    Status::internal("internal error")
}

/// Logs a panic's message, where it has one.
pub(super) fn log_panic(panic: &(dyn Any + Send)) {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)");
    tracing::error!(panic = message, "handler panicked; answering INTERNAL");
}

/// Logs the panic and builds the response the caller gets.
pub(super) fn internal_error<B: Default>(panic: &(dyn Any + Send)) -> http::Response<B> {
    log_panic(panic);
    internal_status().into_http()
}
