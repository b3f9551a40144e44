use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;

use super::{Direction, LimitedBody};
use crate::trailers;

pin_project! {
    /// Response future of [`MessageLimit`](super::MessageLimit).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        max_send: usize,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, max_send: usize) -> Self {
        Self { inner, max_send }
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
        this.inner.poll(cx).map(|result| {
            result.map(|mut response| {
                // The handler's trailing metadata rides in the body, to
                // its trailers; one look at the extensions when it has
                // none.
                let trailing = trailers::take(&mut response);
                response.map(|body| {
                    LimitedBody::new(body, limit, Direction::Send).with_trailing(trailing)
                })
            })
        })
    }
}
