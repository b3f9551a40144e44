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
/// response body needs is made where tonic decodes it. Its default is the
/// empty body, for a response a layer makes without the network (an
/// injected fault's status).
#[derive(Debug, Default)]
pub struct ResponseBody {
    inner: Option<Incoming>,
}

impl ResponseBody {
    pub(super) fn new(inner: Incoming) -> Self {
        Self { inner: Some(inner) }
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
        Pin::new(inner)
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(super::transport_status)))
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
