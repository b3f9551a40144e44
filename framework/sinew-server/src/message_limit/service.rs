use std::task::{Context, Poll};

use tonic::body::Body;
use tower::Service;

use super::{Direction, LimitedBody, ResponseFuture};

/// Bounds the size of each gRPC message both ways, answering
/// `RESOURCE_EXHAUSTED` (an oversized request is refused from its header).
#[derive(Debug, Clone)]
pub struct MessageLimit<S> {
    inner: S,
    max_receive: usize,
    max_send: usize,
    decompressed: bool,
}

// === impl MessageLimit ===

impl<S> MessageLimit<S> {
    /// Wraps `inner` with these limits, in bytes.
    pub fn new(inner: S, max_receive: usize, max_send: usize) -> Self {
        Self {
            inner,
            max_receive,
            max_send,
            decompressed: false,
        }
    }

    /// Counts the messages of responses compressed with gzip or zstd (as
    /// their `grpc-encoding` says) by what they decompress to, as the
    /// receiver will, rather than by their size on the wire. Each such
    /// message is decompressed as it goes out (into a counter, a byte past
    /// the limit at most), which costs CPU: the scaffold turns it on only
    /// when it compresses responses (`send_compressed`). Off, responses
    /// are not looked at beyond their framing.
    pub fn decompressed(mut self, decompressed: bool) -> Self {
        self.decompressed = decompressed;
        self
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for MessageLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::BoxError>,
{
    type Response = http::Response<LimitedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    /// The request's body is limited, and boxed as the handlers take it:
    /// the one box it goes through (the connection's body comes in
    /// unboxed).
    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let limit = self.max_receive;
        let request =
            request.map(|body| Body::new(LimitedBody::new(body, limit, Direction::Receive)));
        ResponseFuture::new(self.inner.call(request), self.max_send, self.decompressed)
    }
}
