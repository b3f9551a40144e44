use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::future::{internal_status, log_panic};

pin_project! {
    /// A response body whose panics (a streaming handler's stream that
    /// panics) end the response with `INTERNAL` in its trailers.
    pub struct PanicSafeBody<B> {
        #[pin]
        inner: B,
        done: bool,
    }
}

impl<B> PanicSafeBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self { inner, done: false }
    }
}

/// An empty body: what the layer answers a call whose handler panicked
/// before it made a response.
impl<B: Default> Default for PanicSafeBody<B> {
    fn default() -> Self {
        Self::new(B::default())
    }
}

impl<B> Body for PanicSafeBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<crate::BoxError>,
{
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let inner = this.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll_frame(cx))) {
            Ok(poll) => poll.map(|frame| frame.map(|result| result.map_err(Into::into))),
            Err(panic) => {
                *this.done = true;
                log_panic(panic.as_ref());
                let mut trailers = http::HeaderMap::new();
                match internal_status().add_header(&mut trailers) {
                    Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                    Err(status) => Poll::Ready(Some(Err(status.into()))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
