//! Turning a layer's error into the gRPC answer a caller gets.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;
use tonic::Status;

use sinew_core::{
    BoxError,
    fault::InjectedFault,
    status::{DisplayChain, caused_by},
};

pin_project! {
    /// A call's response future whose error becomes a response, as far as
    /// one can: see [`recover`].
    pub(crate) struct Recover<F> {
        #[pin]
        inner: F,
    }
}

// === impl Recover ===

impl<F> Recover<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<F, B, E> Future for Recover<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.project().inner.poll(cx)) {
            Ok(response) => Ok(response),
            Err(error) => recover(error.into()),
        })
    }
}

/// The answer to a call whose layers failed with `error`.
///
/// Hosted services cannot fail (their error is `Infallible`); only a layer
/// can, and in practice only the fault layer does. So:
///
/// - an injected abort stays an error: hyper resets the stream, which is
///   what an abort promises (see [`fault`](sinew_core::fault));
/// - a [`Status`] in the error or its sources is the answer, as tonic's
///   server made it: it was written for the caller;
/// - anything else is logged and answered `INTERNAL` with a plain message:
///   its text is for the operator, not the caller.
pub(crate) fn recover<B: Default>(error: BoxError) -> Result<http::Response<B>, BoxError> {
    if caused_by::<InjectedFault>(&*error).is_some() {
        return Err(error);
    }
    let error = match error.downcast::<Status>() {
        Ok(status) => return Ok(status.into_http()),
        Err(error) => error,
    };
    if let Some(status) = caused_by::<Status>(&*error) {
        // `Status` is not `Clone`; its source stays behind.
        return Ok(Status::with_details_and_metadata(
            status.code(),
            status.message(),
            status.details().to_vec().into(),
            status.metadata().clone(),
        )
        .into_http());
    }
    tracing::error!(error = %DisplayChain(&*error), "a layer failed a call; answering INTERNAL");
    Ok(Status::internal("internal error").into_http())
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic::body::Body;

    use super::*;

    fn status_of(response: &http::Response<Body>) -> (String, Option<String>) {
        let headers = response.headers();
        (
            headers["grpc-status"].to_str().unwrap().to_owned(),
            headers
                .get("grpc-message")
                .map(|m| m.to_str().unwrap().to_owned()),
        )
    }

    /// An error that carries another, as a layer's error might.
    #[derive(Debug, thiserror::Error)]
    #[error("layer failed")]
    struct Wrapping(#[source] BoxError);

    #[test]
    fn a_status_is_the_answer() {
        let response = recover(Box::new(Status::unavailable("later"))).unwrap();
        assert_eq!(
            status_of(&response),
            ("14".to_owned(), Some("later".to_owned()))
        );
    }

    #[test]
    fn a_status_among_the_sources_is_the_answer() {
        let error = Wrapping(Box::new(Status::resource_exhausted("full")));
        let response = recover(Box::new(error)).unwrap();
        assert_eq!(
            status_of(&response),
            ("8".to_owned(), Some("full".to_owned()))
        );
    }

    #[test]
    fn any_other_error_is_internal_and_says_nothing_of_itself() {
        let error = Wrapping("connection to 10.0.0.7:5432 refused: password=hunter2".into());
        let response = recover(Box::new(error)).unwrap();
        let (code, message) = status_of(&response);
        assert_eq!(code, (Code::Internal as i32).to_string());
        let message = message.unwrap_or_default();
        assert!(!message.contains("10.0.0.7"), "{message}");
        assert!(!message.contains("layer failed"), "{message}");
        // Percent-encoded on the wire.
        assert_eq!(message, "internal%20error");
    }

    #[test]
    fn an_injected_abort_stays_an_error_so_the_stream_is_reset() {
        let error = recover::<Body>(Box::new(InjectedFault)).unwrap_err();
        assert!(error.is::<InjectedFault>());
    }

    #[tokio::test]
    async fn the_future_recovers_its_inner_error() {
        let inner = std::future::ready(Err::<http::Response<Body>, BoxError>(Box::new(
            Status::not_found("gone"),
        )));
        let response = Recover::new(inner).await.unwrap();
        assert_eq!(status_of(&response).0, "5");
    }
}
