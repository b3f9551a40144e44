//! A body that ends at its call's deadline.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tonic::Status;

use crate::BoxError;

pin_project! {
    /// A response body that ends with `DEADLINE_EXCEEDED` in its trailers
    /// if it is still streaming when its call's deadline passes. The
    /// client wraps the responses it receives in one, the server scaffold
    /// the responses it sends: a call of any kind ends at its deadline,
    /// not only the wait for its response headers.
    ///
    /// Its timer is made the first time the body has to wait: a unary
    /// response, whose message and trailers are ready with its headers,
    /// never needs one. (Boxed, it keeps the body small: the body is moved
    /// out through every layer above.)
    ///
    /// Once the deadline has passed, the inner body is never polled again;
    /// it is dropped with this one (which the HTTP/2 server or client does
    /// as soon as the trailers are out).
    pub struct DeadlineBody<B> {
        #[pin]
        inner: B,
        deadline: Option<Instant>,
        sleep: Option<Pin<Box<Sleep>>>,
        done: bool,
    }
}

// === impl DeadlineBody ===

impl<B> DeadlineBody<B> {
    /// Wraps `inner`, bounded by `deadline`.
    pub fn new(inner: B, deadline: Instant) -> Self {
        Self {
            inner,
            deadline: Some(deadline),
            sleep: None,
            done: false,
        }
    }

    /// Wraps `inner` with no deadline: the body of a call that has none.
    pub fn unbounded(inner: B) -> Self {
        Self {
            inner,
            deadline: None,
            sleep: None,
            done: false,
        }
    }

    /// The deadline, if the body has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// An empty body with no deadline: what a layer answers a call with when
/// it answers for the handler (a status, in trailers).
impl<B: Default> Default for DeadlineBody<B> {
    fn default() -> Self {
        Self::unbounded(B::default())
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for DeadlineBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineBody")
            .field("inner", &self.inner)
            .field("deadline", &self.deadline)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let Some(deadline) = *this.deadline else {
            return this
                .inner
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(Into::into)));
        };
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                *this.done = true;
                let mut trailers = http::HeaderMap::new();
                match Status::deadline_exceeded("deadline exceeded").add_header(&mut trailers) {
                    Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                    Err(status) => Poll::Ready(Some(Err(status.into()))),
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            return SizeHint::with_exact(0);
        }
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::{BodyExt as _, Full, StreamBody};
    use tonic::Code;

    use super::*;

    /// A body that never yields a frame.
    fn stalled() -> StreamBody<tokio_stream::Pending<Result<Frame<Bytes>, BoxError>>> {
        StreamBody::new(tokio_stream::pending())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_ends_with_deadline_exceeded_at_the_deadline() {
        let start = Instant::now();
        let body = DeadlineBody::new(stalled(), start + Duration::from_secs(2));
        let trailers = body
            .collect()
            .await
            .expect("the deadline ends the body with trailers")
            .trailers()
            .cloned()
            .expect("trailers");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        let status = Status::from_header_map(&trailers).expect("a status");
        assert_eq!(status.code(), Code::DeadlineExceeded);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_body_passes_through_untouched() {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut body = DeadlineBody::new(Full::new(Bytes::from_static(b"reply")), deadline);
        let frame = body.frame().await.expect("a frame").expect("no error");
        assert_eq!(
            frame.into_data().expect("data"),
            Bytes::from_static(b"reply")
        );
        assert!(
            body.sleep.is_none(),
            "no timer for a body that never waited"
        );
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unbounded_body_waits_as_long_as_its_inner_body() {
        let mut body = DeadlineBody::unbounded(stalled());
        let waited = tokio::time::timeout(Duration::from_secs(3600), body.frame()).await;
        assert!(waited.is_err(), "still waiting after an hour");
        assert!(body.sleep.is_none());
    }
}
