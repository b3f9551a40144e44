//! The deadline of an incoming call: the caller's `grpc-timeout`, capped by
//! the server's request timeout.
//!
//! The layer records the deadline in the request's extensions as a
//! [`Deadline`], and makes it the task's [`Deadline::current`] while the
//! handler runs, so that the calls the handler makes with sinew's client
//! inherit what is left of the caller's budget with no code from the user.
//! (A task the handler spawns does not inherit it; pass the deadline along
//! with [`Deadline::scope`].) When the deadline passes
//! before the handler answers, the call fails with `DEADLINE_EXCEEDED` and
//! the handler's future is dropped. Calls of every kind are bounded, as in
//! grpc-go and grpc-java:
//!
//! - a unary or client-streaming call, by the wait for its response: a
//!   handler still reading its request stream at the deadline is dropped
//!   with it;
//! - a server-streaming or bidirectional call, also by its response
//!   stream ([`DeadlineBody`]): if it is still streaming at the deadline,
//!   the response ends there with trailers `grpc-status: 4`
//!   (`DEADLINE_EXCEEDED`), and the handler's stream (and with it the
//!   request stream it reads) is dropped. Tracing and metrics, outside
//!   this layer, record the call as `DEADLINE_EXCEEDED`.
//!
//! Paths given to [`DeadlineLayer::uncapped`] are bounded by their
//! caller's `grpc-timeout` alone: the scaffold names health's `Watch`,
//! whose stream is meant to last (the drain ends it), and which would
//! otherwise be cut every `request_timeout`.
//!
//! The response stream's timer is made only the first time the stream
//! has to wait: a unary response, ready with its headers, costs none. The
//! stream is not polled inside the deadline's scope (a task-local swap
//! per frame, paid by every call): a handler whose stream makes calls
//! reads [`Deadline::current`] and moves it into the stream, to run them
//! under [`Deadline::scope`].

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::DeadlineLayer;
pub use service::ServerDeadline;

pub use sinew_core::deadline::{Deadline, DeadlineBody};

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::{BodyExt as _, StreamBody};
    use tokio::time::Instant;
    use tonic::{Code, Status};
    use tower::{Layer as _, ServiceExt as _, service_fn};

    use super::*;
    use crate::BoxError;

    type Stream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send>>;

    /// A response stream's body, as a handler's (a default, empty one is
    /// what the layer answers for it with).
    type Streamed = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

    /// Sets `flag` when dropped.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A handler that answers at once with a response stream: one message,
    /// then a message every second, forever. `dropped` is set when the
    /// stream is dropped.
    fn streaming(
        dropped: Arc<AtomicBool>,
    ) -> impl tower::Service<
        http::Request<()>,
        Response = http::Response<Streamed>,
        Error = BoxError,
        Future = impl Future<Output = Result<http::Response<Streamed>, BoxError>>,
    > + Clone {
        service_fn(move |_request: http::Request<()>| {
            let flag = DropFlag(dropped.clone());
            async move {
                let stream: Stream = Box::pin(futures_util::stream::unfold(
                    (flag, 0u32),
                    |(flag, n)| async move {
                        if n > 0 {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Some((Ok(Frame::data(Bytes::from_static(b"msg"))), (flag, n + 1)))
                    },
                ));
                Ok::<_, BoxError>(http::Response::new(StreamBody::new(stream).boxed_unsync()))
            }
        })
    }

    fn status_of(trailers: Option<&http::HeaderMap>) -> Option<Code> {
        Status::from_header_map(trailers?).map(|status| status.code())
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_still_streaming_at_the_ceiling_ends_with_deadline_exceeded() {
        let dropped = Arc::new(AtomicBool::new(false));
        let service =
            DeadlineLayer::new(Duration::from_millis(2500)).layer(streaming(dropped.clone()));
        let start = Instant::now();
        let response = service.oneshot(http::Request::new(())).await.unwrap();
        let mut body = response.into_body();
        let mut messages = 0;
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let frame = body.frame().await.expect("a frame").expect("no error");
                match frame.into_data() {
                    Ok(_) => messages += 1,
                    Err(frame) => break frame.into_trailers().expect("trailers"),
                }
            }
        });
        let trailers = ended.await.expect("the stream ends at the deadline");
        // Messages at 0s, 1s and 2s; the deadline at 2.5s ends the stream.
        assert_eq!(messages, 3);
        assert_eq!(start.elapsed(), Duration::from_millis(2500));
        assert_eq!(status_of(Some(&trailers)), Some(Code::DeadlineExceeded));
        assert!(body.frame().await.is_none(), "nothing after the trailers");
        drop(body);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the handler's stream is dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_callers_grpc_timeout_bounds_the_stream_under_the_ceiling() {
        let service = DeadlineLayer::new(Duration::from_secs(60)).layer(streaming(Arc::default()));
        let mut request = http::Request::new(());
        request
            .headers_mut()
            .insert("grpc-timeout", http::HeaderValue::from_static("1500m"));
        let start = Instant::now();
        let body = service.oneshot(request).await.unwrap().into_body();
        let collected = tokio::time::timeout(Duration::from_secs(10), body.collect())
            .await
            .expect("the stream ends at the deadline")
            .expect("ended by its trailers");
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        assert_eq!(
            status_of(collected.trailers()),
            Some(Code::DeadlineExceeded)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_uncapped_path_is_bounded_by_its_callers_deadline_alone() {
        const WATCH: &str = "/grpc.health.v1.Health/Watch";
        let layer = DeadlineLayer::new(Duration::from_secs(1)).uncapped(&[WATCH]);
        let call = |timeout: Option<&'static str>| {
            let mut request = http::Request::builder().uri(WATCH).body(()).unwrap();
            if let Some(timeout) = timeout {
                request
                    .headers_mut()
                    .insert("grpc-timeout", http::HeaderValue::from_static(timeout));
            }
            layer.layer(streaming(Arc::default())).oneshot(request)
        };

        // No grpc-timeout: the stream outlives the ceiling many times over
        // (a message a second, ten of them).
        let start = Instant::now();
        let mut body = call(None).await.unwrap().into_body();
        assert_eq!(body.deadline(), None);
        for _ in 0..10 {
            let frame = body.frame().await.unwrap().unwrap();
            assert!(frame.is_data(), "still streaming");
        }
        assert_eq!(start.elapsed(), Duration::from_secs(9));

        // The caller's own deadline still ends it, past the ceiling.
        let start = Instant::now();
        let body = call(Some("3S")).await.unwrap().into_body();
        let collected = tokio::time::timeout(Duration::from_secs(10), body.collect())
            .await
            .expect("the caller's deadline ends the stream")
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(
            status_of(collected.trailers()),
            Some(Code::DeadlineExceeded)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_still_reading_its_request_at_the_deadline_is_dropped() {
        // A client-streaming handler: it answers only once its request
        // stream ends, which here it never does.
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let service = DeadlineLayer::new(Duration::from_millis(300)).layer(service_fn(
            move |_request: http::Request<()>| {
                let flag = DropFlag(flag.clone());
                async move {
                    std::future::pending::<()>().await;
                    drop(flag);
                    Ok::<_, BoxError>(http::Response::new(http_body_util::Empty::<Bytes>::new()))
                }
            },
        ));
        let start = Instant::now();
        let response = service.oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(
            Status::from_header_map(response.headers()).map(|s| s.code()),
            Some(Code::DeadlineExceeded)
        );
    }
}
