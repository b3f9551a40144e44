use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::{Code, Status, body::Body};

use super::{
    classify::{code_outcome, error_outcome, grpc_status},
    handle::Ticket,
    state::Outcome,
};

/// A response body that records the call's outcome when its trailers
/// arrive. Dropped first, it records nothing (its ticket frees any probe
/// slot).
pub(crate) struct BreakerBody {
    inner: Body,
    ticket: Option<Ticket>,
}

impl BreakerBody {
    pub(crate) fn new(inner: Body, ticket: Ticket) -> Self {
        Self {
            inner,
            ticket: Some(ticket),
        }
    }

    fn finish(&mut self, outcome: Option<Outcome>) {
        let ticket = self.ticket.take();
        if let (Some(ticket), Some(outcome)) = (ticket, outcome) {
            ticket.finish(outcome);
        }
    }
}

impl http_body::Body for BreakerBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    // Trailers without a status are a protocol error, which
                    // tonic reports as UNKNOWN.
                    let code = grpc_status(trailers).unwrap_or(Code::Unknown);
                    this.finish(Some(code_outcome(code)));
                }
            }
            Some(Err(status)) => this.finish(error_outcome(status)),
            // The stream ended without trailers: tonic reports UNKNOWN.
            None => this.finish(Some(Outcome::Failure)),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
