use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;

use sinew_core::compression::CompressionEncoding;

use super::{
    FrameWalker,
    inflate::{self, Inflation},
};
use crate::trailers;

/// Which way a [`LimitedBody`] carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A request: an oversized message fails the body with a status.
    Receive,
    /// A response: an oversized message is replaced by trailers carrying
    /// the status, ending the response.
    Send,
}

pin_project! {
    /// A body whose gRPC messages may not exceed a limit.
    ///
    /// A response's body also carries the handler's
    /// [`TrailingMetadata`](crate::TrailingMetadata), when it has some,
    /// into the trailers it ends with.
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        walker: FrameWalker,
        limit: usize,
        direction: Direction,
        // Counts compressed messages decompressed (boxed: rare, and the
        // body is moved through every layer above).
        inflation: Option<Box<Inflation>>,
        done: bool,
        // Boxed: the field costs a word on every call, not a header map.
        trailing: Option<Box<http::HeaderMap>>,
    }
}

impl<B> LimitedBody<B> {
    /// Wraps `inner`; messages over `limit` bytes end it.
    pub fn new(inner: B, limit: usize, direction: Direction) -> Self {
        Self {
            inner,
            walker: FrameWalker::default(),
            limit,
            direction,
            inflation: None,
            done: false,
            trailing: None,
        }
    }

    /// Adds `trailing` to the trailers the body ends with.
    pub(crate) fn with_trailing(mut self, trailing: Option<Box<http::HeaderMap>>) -> Self {
        self.trailing = trailing;
        self
    }

    /// Counts its messages, compressed with `encoding`, by what they
    /// decompress to (see [`MessageLimit::decompressed`](super::MessageLimit::decompressed)).
    pub fn decompressed(mut self, encoding: CompressionEncoding) -> Self {
        if self.limit != usize::MAX {
            self.inflation = Some(Box::new(Inflation::new(encoding, self.limit)));
        }
        self
    }
}

/// An empty body, under no limit: what a layer above the limit answers
/// a call with when it answers for the handler (a status, in trailers).
impl<B: Default> Default for LimitedBody<B> {
    fn default() -> Self {
        Self::new(B::default(), usize::MAX, Direction::Send)
    }
}

pub(super) fn too_large(length: u64, limit: usize, direction: Direction) -> Status {
    let what = match direction {
        Direction::Receive => "request",
        Direction::Send => "response",
    };
    Status::resource_exhausted(format!(
        "{what} message of {length} bytes is over the limit of {limit} bytes"
    ))
}

impl<B> Body for LimitedBody<B>
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
        let mut frame = match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if this.trailing.is_some()
            && let Some(trailers) = frame.trailers_mut()
        {
            if let Some(extra) = this.trailing.take() {
                trailers::merge(trailers, *extra);
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        // No limit: nothing to walk (the scaffold checks requests where
        // their bodies come in).
        if *this.limit == usize::MAX {
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(data) = frame.data_ref() else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let length = match this.walker.feed(data, *this.limit) {
            Some(length) => length,
            None => match this.inflation.as_mut().map(|i| i.feed(data)) {
                Some(Err(inflate::Over(bytes))) => bytes as u64,
                _ => return Poll::Ready(Some(Ok(frame))),
            },
        };
        *this.done = true;
        let status = too_large(length, *this.limit, *this.direction);
        match this.direction {
            Direction::Receive => Poll::Ready(Some(Err(status.into()))),
            Direction::Send => {
                let mut trailers = http::HeaderMap::new();
                if let Err(status) = status.add_header(&mut trailers) {
                    return Poll::Ready(Some(Err(status.into())));
                }
                if let Some(extra) = this.trailing.take() {
                    trailers::merge(&mut trailers, *extra);
                }
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
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
