//! A response body that holds a guard until its call is over.
//!
//! Several layers must act when a call ends, and a streamed call ends not
//! when its response arrives but when its body does: the bulkhead frees a
//! slot, the balancer stops counting the call on its endpoint, the breaker
//! records the outcome the trailers give, tracing records the status.
//! Each wraps the response body in a [`GuardBody`] with its own [`Guard`];
//! the body calls [`Guard::finish`] once, at the trailers, an error or the
//! end of the stream, whichever comes first. A body dropped before then
//! drops its guard unfinished.
//!
//! ```
//! use http_body_util::{BodyExt, Full};
//! use sinew_core::body::{End, Guard, GuardBody};
//!
//! struct Ended(std::sync::mpsc::Sender<&'static str>);
//!
//! impl Guard for Ended {
//!     fn finish(self, end: End<'_>) {
//!         let how = match end {
//!             End::Trailers(_) => "trailers",
//!             End::Error(_) => "error",
//!             End::Stream => "end of stream",
//!         };
//!         self.0.send(how).unwrap();
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let (tx, rx) = std::sync::mpsc::channel();
//! let body = GuardBody::new(Full::new(bytes::Bytes::from_static(b"hi")), Some(Ended(tx)));
//! let bytes = body.collect().await.unwrap().to_bytes();
//! assert_eq!(&bytes[..], b"hi");
//! assert_eq!(rx.recv().unwrap(), "end of stream");
//! # });
//! ```

use std::{
    error::Error,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;

/// How a body's call ended.
#[derive(Debug, Clone, Copy)]
pub enum End<'a> {
    /// With trailers (where a gRPC call's status is).
    Trailers(&'a HeaderMap),
    /// With an error from the body.
    Error(&'a (dyn Error + 'static)),
    /// With the end of the stream, and no trailers.
    Stream,
}

/// What a [`GuardBody`] holds until its call ends.
pub trait Guard {
    /// The call ended as `end` says. Called at most once; a guard whose
    /// body is dropped first is dropped without it.
    fn finish(self, end: End<'_>);
}

pin_project! {
    /// A response body that holds a [`Guard`] until its call ends; see the
    /// [module docs](self). Errors come out boxed.
    pub struct GuardBody<B, G> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

// === impl GuardBody ===

impl<B, G> GuardBody<B, G> {
    /// `inner`, holding `guard` (none: a call whose end needs no action,
    /// such as one whose status came in the response headers).
    pub fn new(inner: B, guard: Option<G>) -> Self {
        Self { inner, guard }
    }

    /// `inner`, holding no guard.
    pub fn unguarded(inner: B) -> Self {
        Self::new(inner, None)
    }

    /// Whether it still holds its guard: the call is not over yet.
    pub fn is_guarded(&self) -> bool {
        self.guard.is_some()
    }

    /// The body inside.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

/// An empty body holding no guard: what a layer above answers with when it
/// makes a response itself.
impl<B: Default, G> Default for GuardBody<B, G> {
    fn default() -> Self {
        Self::unguarded(B::default())
    }
}

impl<B: std::fmt::Debug, G> std::fmt::Debug for GuardBody<B, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardBody")
            .field("inner", &self.inner)
            .field("guarded", &self.guard.is_some())
            .finish()
    }
}

impl<B, G> Body for GuardBody<B, G>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    G: Guard,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if this.guard.is_none() {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        Poll::Ready(match frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(guard) = this.guard.take()
                {
                    guard.finish(End::Trailers(trailers));
                }
                Some(Ok(frame))
            }
            Some(Err(error)) => {
                let error = error.into();
                if let Some(guard) = this.guard.take() {
                    guard.finish(End::Error(&*error));
                }
                Some(Err(error))
            }
            None => {
                if let Some(guard) = this.guard.take() {
                    guard.finish(End::Stream);
                }
                None
            }
        })
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
    use std::sync::{Arc, Mutex};

    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    /// Records how its call ended.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl Guard for Seen {
        fn finish(self, end: End<'_>) {
            let text = match end {
                End::Trailers(trailers) => format!("trailers {:?}", trailers.get("grpc-status")),
                End::Error(error) => format!("error {error}"),
                End::Stream => "stream".to_owned(),
            };
            self.0.lock().unwrap().push(text);
        }
    }

    type Frames = Vec<Result<Frame<Bytes>, std::io::Error>>;

    fn body(frames: Frames) -> impl Body<Data = Bytes, Error = std::io::Error> {
        StreamBody::new(stream_of(frames))
    }

    fn stream_of(
        frames: Frames,
    ) -> impl tokio_stream::Stream<Item = Result<Frame<Bytes>, std::io::Error>> {
        tokio_stream::iter(frames)
    }

    async fn drain(body: impl Body<Data = Bytes, Error = BoxError>) {
        let mut body = std::pin::pin!(body);
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    }

    #[tokio::test]
    async fn the_guard_finishes_once_at_the_trailers() {
        let seen = Seen::default();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Ok(Frame::trailers(trailers)),
        ];
        drain(GuardBody::new(body(frames), Some(seen.clone()))).await;
        assert_eq!(*seen.0.lock().unwrap(), ["trailers Some(\"14\")"]);
    }

    #[tokio::test]
    async fn an_error_or_the_end_of_the_stream_finishes_it_too() {
        let seen = Seen::default();
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Err(std::io::Error::other("reset")),
        ];
        drain(GuardBody::new(body(frames), Some(seen.clone()))).await;
        let frames = vec![Ok(Frame::data(Bytes::from_static(b"a")))];
        drain(GuardBody::new(body(frames), Some(seen.clone()))).await;
        assert_eq!(*seen.0.lock().unwrap(), ["error reset", "stream"]);
    }

    #[tokio::test]
    async fn a_body_dropped_early_or_unguarded_finishes_nothing() {
        let seen = Seen::default();
        let frames = vec![Ok(Frame::data(Bytes::from_static(b"a")))];
        let guarded = GuardBody::new(body(frames), Some(seen.clone()));
        assert!(guarded.is_guarded());
        drop(guarded);
        let frames = vec![Ok(Frame::data(Bytes::from_static(b"a")))];
        drain(GuardBody::<_, Seen>::unguarded(body(frames))).await;
        assert!(seen.0.lock().unwrap().is_empty());
    }
}
