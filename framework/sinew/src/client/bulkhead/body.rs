use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::{Status, body::Body};

use super::limits::Slot;

/// A response body that holds its call's slot until it ends: at its
/// trailers, its end, an error, or its drop.
pub(crate) struct SlotBody {
    inner: Body,
    slot: Option<Slot>,
}

impl SlotBody {
    pub(crate) fn new(inner: Body, slot: Slot) -> Self {
        Self {
            inner,
            slot: Some(slot),
        }
    }
}

impl http_body::Body for SlotBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let over = match &frame {
            Some(Ok(frame)) => frame.is_trailers(),
            Some(Err(_)) | None => true,
        };
        if over {
            // Free the slot as soon as the call is over, not when the
            // caller gets round to dropping the body.
            this.slot = None;
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
