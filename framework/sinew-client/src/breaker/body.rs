use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;

use super::{
    classify::{code_outcome, error_outcome},
    handle::Ticket,
    state::Outcome,
};
use crate::BoxError;

pin_project! {
    /// The response body of a [`Breaker`](super::Breaker)'s call: it
    /// records the call's outcome when its trailers arrive. Dropped first,
    /// it records nothing (its ticket frees any probe slot). A response
    /// whose outcome its headers gave is passed with no ticket.
    pub struct BreakerBody<B> {
        #[pin]
        inner: B,
        ticket: Option<Ticket>,
    }
}

impl<B> BreakerBody<B> {
    pub(crate) fn new(inner: B, ticket: Option<Ticket>) -> Self {
        Self { inner, ticket }
    }
}

/// An empty body with nothing to record: what a layer above answers with
/// when it makes a response itself.
impl<B: Default> Default for BreakerBody<B> {
    fn default() -> Self {
        Self::new(B::default(), None)
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for BreakerBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerBody")
            .field("inner", &self.inner)
            .field("recording", &self.ticket.is_some())
            .finish()
    }
}

fn finish(ticket: &mut Option<Ticket>, outcome: Option<Outcome>) {
    if let (Some(ticket), Some(outcome)) = (ticket.take(), outcome) {
        ticket.finish(outcome);
    }
}

impl<B> Body for BreakerBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if this.ticket.is_none() {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        Poll::Ready(match frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    // Trailers without a status are a protocol error, which
                    // tonic reports as UNKNOWN.
                    let code = crate::headers::grpc_status(trailers).unwrap_or(Code::Unknown);
                    finish(this.ticket, Some(code_outcome(code)));
                }
                Some(Ok(frame))
            }
            Some(Err(error)) => {
                let error = error.into();
                finish(this.ticket, error_outcome(&*error));
                Some(Err(error))
            }
            // The stream ended without trailers: tonic reports UNKNOWN.
            None => {
                finish(this.ticket, Some(Outcome::Failure));
                None
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
