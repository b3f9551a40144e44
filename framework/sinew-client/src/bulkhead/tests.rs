//! The layer, driven through a scripted inner service and paused time.
//!
//! Futures are polled by hand, once per step, so each step can assert what
//! is pending and what is not.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as _, Frame};
use tokio::{
    sync::{mpsc, oneshot},
    time::advance,
};
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};

use super::*;
use crate::{
    BoxError, {BulkheadFull, cause},
};

type Answer = oneshot::Sender<Result<http::Response<Body>, BoxError>>;

/// A call the inner service got: its path, and how to answer it.
type Received = (String, Option<Answer>);

/// An inner service whose calls wait until the test answers them.
#[derive(Clone, Default)]
struct Mock {
    calls: Arc<Mutex<Vec<Received>>>,
}

impl Mock {
    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn path(&self, call: usize) -> String {
        self.calls.lock().unwrap()[call].0.clone()
    }

    fn answer(&self, call: usize, result: Result<http::Response<Body>, BoxError>) {
        let answer = self.calls.lock().unwrap()[call].1.take();
        answer.expect("answered once").send(result).unwrap();
    }

    /// Answers `call` trailers-only (how servers answer most errors).
    fn answer_status(&self, call: usize, code: Code) {
        self.answer(call, Ok(Status::new(code, "scripted").into_http()));
    }

    /// Answers `call` with a body the test streams through the sender.
    fn answer_stream(&self, call: usize) -> mpsc::UnboundedSender<Frame<Bytes>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.answer(call, Ok(http::Response::new(Body::new(ChannelBody(rx)))));
        tx
    }
}

type MockFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

impl Service<http::Request<Body>> for Mock {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = MockFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> MockFuture {
        let (tx, rx) = oneshot::channel();
        let path = request.uri().path().to_owned();
        self.calls.lock().unwrap().push((path, Some(tx)));
        Box::pin(async move { rx.await.map_err(BoxError::from)? })
    }
}

struct ChannelBody(mpsc::UnboundedReceiver<Frame<Bytes>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

type Call = future::ResponseFuture<Mock, MockFuture>;

fn config(max_concurrent: usize, max_queue: usize) -> BulkheadConfig {
    BulkheadConfig {
        max_concurrent,
        max_queue,
        queue_timeout: Duration::from_millis(500),
    }
}

fn bulkhead(config: BulkheadConfig) -> (Bulkhead<Mock>, Mock) {
    let mock = Mock::default();
    (Bulkhead::new(mock.clone(), config), mock)
}

fn poll<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// Makes a call to `path` and polls it once.
fn start(svc: &mut Bulkhead<Mock>, path: &str) -> Call {
    assert!(poll(&mut std::future::poll_fn(|cx| svc.poll_ready(cx))).is_ready());
    let request = http::Request::builder()
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let mut call = svc.call(request);
    assert!(poll(&mut call).is_pending(), "the call ended at once");
    call
}

/// Makes a call to `path` that must be refused at once; its `timed_out`.
fn refused(svc: &mut Bulkhead<Mock>, path: &str) -> bool {
    let request = http::Request::builder()
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let Poll::Ready(result) = poll(&mut svc.call(request)) else {
        panic!("the call was not refused at once");
    };
    full(result)
}

/// Asserts `result` is the bulkhead's refusal; its `timed_out`.
fn full(result: Result<http::Response<SlotBody<Body>>, BoxError>) -> bool {
    let Err(error) = result else {
        panic!("the call was let through");
    };
    let status = Status::from_error(error);
    assert_eq!(status.code(), Code::ResourceExhausted);
    cause::<BulkheadFull>(&status)
        .expect("a BulkheadFull cause")
        .timed_out
}

fn ready_response(call: &mut Call) -> http::Response<SlotBody<Body>> {
    match poll(call) {
        Poll::Ready(Ok(response)) => response,
        Poll::Ready(Err(error)) => panic!("the call failed: {error}"),
        Poll::Pending => panic!("the call is still pending"),
    }
}

fn next_frame(body: &mut SlotBody<Body>) -> Frame<Bytes> {
    match Pin::new(body).poll_frame(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Some(Ok(frame))) => frame,
        _ => panic!("no frame ready"),
    }
}

#[tokio::test(start_paused = true)]
async fn admits_up_to_the_limit() {
    let (mut svc, mock) = bulkhead(config(2, 0));
    let _a = start(&mut svc, "/pkg.S/M");
    assert_eq!(svc.limits().in_flight(), 1);
    let _b = start(&mut svc, "/pkg.S/M");
    assert_eq!(svc.limits().in_flight(), 2);
    assert_eq!(mock.calls(), 2);
    assert!(!refused(&mut svc, "/pkg.S/M"));
    assert_eq!(mock.calls(), 2, "the inner service never saw the third");
}

#[tokio::test(start_paused = true)]
async fn queues_up_to_the_queue_size_and_refuses_beyond_it_at_once() {
    let (mut svc, mock) = bulkhead(config(1, 2));
    let _a = start(&mut svc, "/pkg.S/M");
    let _b = start(&mut svc, "/pkg.S/M");
    let _c = start(&mut svc, "/pkg.S/M");
    assert_eq!(svc.limits().queued(), 2);
    assert_eq!(svc.limits().in_flight(), 1);
    assert!(!refused(&mut svc, "/pkg.S/M"));
    assert_eq!(svc.limits().queued(), 2);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_queue_timeout_fires_after_exactly_queue_timeout() {
    let (mut svc, mock) = bulkhead(config(1, 1));
    let _a = start(&mut svc, "/pkg.S/M");
    let mut b = start(&mut svc, "/pkg.S/M");
    advance(Duration::from_millis(499)).await;
    assert!(poll(&mut b).is_pending());
    advance(Duration::from_millis(1)).await;
    let Poll::Ready(result) = poll(&mut b) else {
        panic!("the wait did not time out");
    };
    assert!(full(result), "timed_out");
    assert_eq!(svc.limits().queued(), 0);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_queue_timeout_runs_from_the_call_not_the_first_poll() {
    let (mut svc, _mock) = bulkhead(config(1, 1));
    let _a = start(&mut svc, "/pkg.S/M");
    let mut b = svc.call(http::Request::new(Body::empty()));
    assert_eq!(svc.limits().queued(), 1, "queued in call");
    advance(Duration::from_millis(500)).await;
    let Poll::Ready(result) = poll(&mut b) else {
        panic!("the wait did not time out");
    };
    assert!(full(result));
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_proceeds_when_a_slot_frees() {
    let (mut svc, mock) = bulkhead(config(1, 1));
    let mut a = start(&mut svc, "/pkg.S/A");
    let mut b = start(&mut svc, "/pkg.S/B");
    advance(Duration::from_millis(300)).await;
    mock.answer_status(0, Code::Ok);
    // A trailers-only response ends the call: its slot goes to `b`.
    let response = ready_response(&mut a);
    assert_eq!(response.headers()["grpc-status"], "0");
    assert!(poll(&mut b).is_pending());
    assert_eq!(mock.calls(), 2);
    assert_eq!(mock.path(1), "/pkg.S/B");
    assert_eq!(svc.limits().queued(), 0);
    assert_eq!(svc.limits().in_flight(), 1);
    // Past the queue timeout since `b` was made: it holds a slot, so the
    // timeout no longer applies.
    advance(Duration::from_millis(300)).await;
    mock.answer_status(1, Code::NotFound);
    ready_response(&mut b);
    assert_eq!(svc.limits().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_streaming_body_holds_its_slot_until_it_ends() {
    let (mut svc, mock) = bulkhead(config(1, 0));
    let mut a = start(&mut svc, "/pkg.S/Stream");
    let frames = mock.answer_stream(0);
    let mut body = ready_response(&mut a).into_body();
    assert_eq!(svc.limits().in_flight(), 1);
    assert!(!refused(&mut svc, "/pkg.S/M"));

    frames
        .send(Frame::data(Bytes::from_static(b"msg")))
        .unwrap();
    assert!(next_frame(&mut body).is_data());
    assert_eq!(svc.limits().in_flight(), 1, "still streaming");

    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    frames.send(Frame::trailers(trailers)).unwrap();
    assert!(next_frame(&mut body).is_trailers());
    assert_eq!(svc.limits().in_flight(), 0, "freed at the trailers");
    let _b = start(&mut svc, "/pkg.S/M");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_body_frees_its_slot() {
    let (mut svc, mock) = bulkhead(config(1, 0));
    let mut a = start(&mut svc, "/pkg.S/Stream");
    let _frames = mock.answer_stream(0);
    let response = ready_response(&mut a);
    drop(a);
    assert_eq!(svc.limits().in_flight(), 1, "the body holds the slot");
    drop(response);
    assert_eq!(svc.limits().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropped_calls_free_their_slot_or_place() {
    let (mut svc, _mock) = bulkhead(config(1, 1));
    let a = start(&mut svc, "/pkg.S/M");
    let b = start(&mut svc, "/pkg.S/M");
    assert!(!refused(&mut svc, "/pkg.S/M"));
    drop(b);
    assert_eq!(svc.limits().queued(), 0);
    drop(a);
    assert_eq!(svc.limits().in_flight(), 0);
    let _c = start(&mut svc, "/pkg.S/M");
    assert_eq!(svc.limits().in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_error_frees_the_slot() {
    let (mut svc, mock) = bulkhead(config(1, 0));
    let mut a = start(&mut svc, "/pkg.S/M");
    mock.answer(0, Err("connection reset".into()));
    assert!(matches!(poll(&mut a), Poll::Ready(Err(_))));
    assert_eq!(svc.limits().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn groups_are_independent() {
    let slow = BulkheadConfig {
        max_concurrent: 1,
        max_queue: 0,
        queue_timeout: Duration::ZERO,
    };
    let layer = BulkheadLayer::grouped(config(1, 0), [("/pkg.Slow/", slow)]);
    let mock = Mock::default();
    let mut svc = layer.layer(mock.clone());
    let _slow = start(&mut svc, "/pkg.Slow/Get");
    assert!(!refused(&mut svc, "/pkg.Slow/Put"));
    // The slow group is full, yet the rest still get their slot.
    let _fast = start(&mut svc, "/pkg.Fast/Get");
    assert!(!refused(&mut svc, "/pkg.Other/Get"));
    assert_eq!(svc.limits_for("/pkg.Slow/Get").in_flight(), 1);
    assert_eq!(svc.limits().in_flight(), 1);
    assert_eq!(mock.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_longest_prefix_picks_the_group() {
    let mock = Mock::default();
    let svc = Bulkhead::grouped(
        mock,
        config(1, 0),
        [("/pkg.S/", config(2, 0)), ("/pkg.S/Slow", config(3, 0))],
    );
    let max = |path: &str| svc.limits_for(path).config().max_concurrent;
    assert_eq!(max("/pkg.S/Slow"), 3);
    assert_eq!(max("/pkg.S/Fast"), 2);
    assert_eq!(max("/pkg.T/Fast"), 1);
}

#[tokio::test(start_paused = true)]
async fn shared_limits_bound_several_services_and_own_ones_do_not() {
    let limits = Limits::new(config(1, 0));
    let layer = BulkheadLayer::shared(&limits);
    let (mut a, mut b) = (layer.layer(Mock::default()), layer.layer(Mock::default()));
    let _held = start(&mut a, "/pkg.S/M");
    assert!(!refused(&mut b, "/pkg.S/M"));
    assert_eq!(limits.in_flight(), 1);

    let layer = BulkheadLayer::new(config(1, 0));
    let (mut a, mut b) = (layer.layer(Mock::default()), layer.layer(Mock::default()));
    let _held = start(&mut a, "/pkg.S/M");
    let _also = start(&mut b, "/pkg.S/M");
}

#[tokio::test(start_paused = true)]
async fn clones_share_their_limits() {
    let (mut svc, _mock) = bulkhead(config(1, 0));
    let mut clone = svc.clone();
    let _held = start(&mut svc, "/pkg.S/M");
    assert!(!refused(&mut clone, "/pkg.S/M"));
}

#[test]
fn defaults_are_as_documented() {
    let config = BulkheadConfig::default();
    assert_eq!(config.max_concurrent, 100);
    assert_eq!(config.max_queue, 50);
    assert_eq!(config.queue_timeout, Duration::from_millis(500));
}
