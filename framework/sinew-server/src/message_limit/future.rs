use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;

use sinew_core::compression::CompressionEncoding;

use super::{Direction, LimitedBody};
use crate::trailers;

pin_project! {
    /// Response future of [`MessageLimit`](super::MessageLimit).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        max_send: usize,
        decompressed: bool,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, max_send: usize, decompressed: bool) -> Self {
        Self {
            inner,
            max_send,
            decompressed,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<LimitedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let limit = *this.max_send;
        let decompressed = *this.decompressed && limit != usize::MAX;
        this.inner.poll(cx).map(|result| {
            result.map(|mut response| {
                // The handler's trailing metadata rides in the body, to
                // its trailers; one look at the extensions when it has
                // none.
                let trailing = trailers::take(&mut response);
                let encoding = if decompressed {
                    compression_of(response.headers())
                } else {
                    None
                };
                response.map(|body| {
                    let body =
                        LimitedBody::new(body, limit, Direction::Send).with_trailing(trailing);
                    match encoding {
                        Some(encoding) => body.decompressed(encoding),
                        None => body,
                    }
                })
            })
        })
    }
}

/// The encoding a response's `grpc-encoding` names, if sinew decompresses
/// it.
fn compression_of(headers: &http::HeaderMap) -> Option<CompressionEncoding> {
    match headers.get("grpc-encoding")?.as_bytes() {
        b"gzip" => Some(CompressionEncoding::Gzip),
        b"zstd" => Some(CompressionEncoding::Zstd),
        _ => None,
    }
}
