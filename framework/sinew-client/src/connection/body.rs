//! The body of a response as the connection receives it.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tonic::Status;

use super::cancel::Cancel;

/// A response body straight from the HTTP/2 stream, its errors read as
/// gRPC statuses the way tonic reads them (a reset stream's reason gives
/// the code).
///
/// Dropped before its end (its trailers), it cancels its call's request
/// stream where that may still be open, so that the HTTP/2 stream is reset
/// (see `cancel.rs`).
///
/// Not boxed: the layers above wrap it by type, and the one box a call's
/// response body needs is made where tonic decodes it. Its default is the
/// empty body, for a response a layer makes without the network (an
/// injected fault's status).
#[derive(Debug, Default)]
pub struct ResponseBody {
    inner: Option<Incoming>,
    /// Until the body ends: cancels a request still streaming.
    cancel: Option<Cancel>,
}

impl ResponseBody {
    pub(super) fn new(inner: Incoming, cancel: Option<Cancel>) -> Self {
        Self {
            inner: Some(inner),
            cancel,
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel.cancel();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let Some(inner) = &mut self.inner else {
            return Poll::Ready(None);
        };
        let poll = Pin::new(inner).poll_frame(cx);
        // The response is over (its trailers, its end, or its failure):
        // nothing left to cancel.
        if self.cancel.is_some() {
            let ended = match &poll {
                Poll::Ready(Some(Ok(frame))) => !frame.is_data(),
                Poll::Ready(_) => true,
                Poll::Pending => false,
            };
            if ended {
                self.cancel = None;
            }
        }
        poll.map(|frame| frame.map(|f| f.map_err(super::transport_status)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
