//! Cancelling a streaming call its caller dropped.
//!
//! hyper resets an HTTP/2 stream when the response future is dropped
//! before the response's headers, but not after: once the headers are in,
//! dropping the response body leaves the request body's pipe running, so a
//! call whose request stream is still open goes on at the server, and when
//! the caller's request stream then ends, the server sees a normal
//! half-close, not a cancellation. gRPC's `cancel_after_first_response`
//! interop case is exactly that.
//!
//! So a request body that may still be streaming is paired with its
//! response body: when the response body is dropped before it ended, the
//! request body fails with `CANCEL`, on which hyper resets the stream
//! with `RST_STREAM(CANCEL)`, as a cancelled call is reset in every gRPC
//! implementation. A request whose size is known (a single message,
//! buffered whole) is not paired: it is sent in full at once.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;

/// What the two halves share.
#[derive(Debug, Default)]
struct Shared {
    cancelled: AtomicBool,
    /// The request body's task, while it waits for its next frame.
    waker: AtomicWaker,
}

/// Held by the response body: cancels the request when the response body
/// is dropped early.
#[derive(Debug)]
pub(super) struct Cancel(Arc<Shared>);

pin_project! {
    /// A request body that fails with `CANCEL` once its call's response
    /// body was dropped before it ended.
    pub(super) struct Cancellable<B> {
        #[pin]
        inner: B,
        shared: Arc<Shared>,
    }
}

/// Pairs `body` with the handle that cancels it.
pub(super) fn pair<B>(body: B) -> (Cancellable<B>, Cancel) {
    let shared = Arc::new(Shared::default());
    (
        Cancellable {
            inner: body,
            shared: Arc::clone(&shared),
        },
        Cancel(shared),
    )
}

// === impl Cancel ===

impl Cancel {
    /// Cancels the request: its body fails at its next poll, or at once if
    /// it is waiting.
    pub(super) fn cancel(self) {
        self.0.cancelled.store(true, Ordering::Release);
        self.0.waker.wake();
    }
}

// === impl Cancellable ===

impl<B> Cancellable<B> {
    fn cancelled(shared: &Shared) -> bool {
        shared.cancelled.load(Ordering::Acquire)
    }
}

/// The error hyper resets the stream with: it takes the reason from the
/// `h2::Error` it finds in the chain.
fn cancelled_error() -> BoxError {
    Box::new(h2::Error::from(h2::Reason::CANCEL))
}

impl<B> Body for Cancellable<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if Self::cancelled(this.shared) {
            return Poll::Ready(Some(Err(cancelled_error())));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                // Registered, then checked again: a cancel between the
                // first check and the registration is not missed.
                this.shared.waker.register(cx.waker());
                if Self::cancelled(this.shared) {
                    return Poll::Ready(Some(Err(cancelled_error())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, future::poll_fn};

    use http_body_util::StreamBody;

    use super::*;

    #[tokio::test]
    async fn a_waiting_request_body_fails_with_cancel_when_cancelled() {
        let pending = StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, Infallible>,
        >());
        let (body, cancel) = pair(pending);
        let mut body = std::pin::pin!(body);
        let waiting = poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx).is_pending())).await;
        assert!(waiting);
        cancel.cancel();
        let frame = poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        let error = frame.expect("a frame").expect_err("an error");
        let h2 = error.downcast_ref::<h2::Error>().expect("an h2 error");
        assert_eq!(h2.reason(), Some(h2::Reason::CANCEL));
    }

    #[tokio::test]
    async fn an_uncancelled_body_passes_its_frames() {
        let frames = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
            Bytes::from_static(b"abc"),
        ))]);
        let (body, _cancel) = pair(StreamBody::new(frames));
        let mut body = std::pin::pin!(body);
        let frame = poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        let data = frame.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&data[..], b"abc");
        assert!(poll_fn(|cx| body.as_mut().poll_frame(cx)).await.is_none());
    }
}
