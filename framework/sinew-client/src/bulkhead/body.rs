use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::limits::Slot;

pin_project! {
    /// The response body of a [`Bulkhead`](super::Bulkhead)'s call: it
    /// holds the call's slot until it ends (at its trailers, its end, an
    /// error, or its drop). A call whose response ended the call at its
    /// headers holds none.
    pub struct SlotBody<B> {
        #[pin]
        inner: B,
        slot: Option<Slot>,
    }
}

impl<B> SlotBody<B> {
    pub(crate) fn new(inner: B, slot: Option<Slot>) -> Self {
        Self { inner, slot }
    }

    /// `inner`, holding no slot: the body of a call made around the
    /// bulkhead (a client with none), so that both have one type.
    pub fn unheld(inner: B) -> Self {
        Self { inner, slot: None }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for SlotBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotBody")
            .field("inner", &self.inner)
            .field("holding", &self.slot.is_some())
            .finish()
    }
}

impl<B: Body> Body for SlotBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if this.slot.is_none() {
            return Poll::Ready(frame);
        }
        let over = match &frame {
            Some(Ok(frame)) => frame.is_trailers(),
            Some(Err(_)) | None => true,
        };
        if over {
            // Free the slot as soon as the call is over, not when the
            // caller gets round to dropping the body.
            *this.slot = None;
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
