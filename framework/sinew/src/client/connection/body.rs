//! The body of a response as the connection receives it.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tonic::Status;

/// A response body straight from the HTTP/2 stream, its errors read as
/// gRPC statuses the way tonic reads them (a reset stream's reason gives
/// the code).
///
/// Not boxed: the layers above wrap it by type, and the one box a call's
/// response body needs is made where tonic decodes it.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Incoming,
}

impl ResponseBody {
    pub(super) fn new(inner: Incoming) -> Self {
        Self { inner }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(|error| Status::from_error(Box::new(error)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
