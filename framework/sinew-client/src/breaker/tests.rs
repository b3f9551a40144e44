//! The layer, driven through a scripted inner service.

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::time::{Instant, advance};
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::{
    BoxError,
    {BreakerOpen, BulkheadFull, balance::Availability, cause, status_with_cause},
};

/// What the inner service answers to one call.
enum Reply {
    /// A trailers-only response: the status in the headers.
    Headers(Code),
    /// A 200 response with one message, then trailers with the status.
    Trailers(Code),
    /// A transport error.
    Transport,
    /// An error a layer below produced.
    Error(Status),
    /// A plain HTTP response with this status and no `grpc-status`.
    Http(u16),
    /// No answer, ever.
    Hang,
}

/// An inner service that answers from a script and counts its calls.
#[derive(Clone, Default)]
struct Mock {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    calls: Arc<AtomicUsize>,
}

impl Mock {
    fn push(&self, reply: Reply) {
        self.replies.lock().unwrap().push_back(reply);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
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

    fn call(&mut self, _request: http::Request<Body>) -> MockFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let reply = self
            .replies
            .lock()
            .unwrap()
            .pop_front()
            .expect("the inner service was called more often than scripted");
        let result: Result<http::Response<Body>, BoxError> = match reply {
            Reply::Hang => return Box::pin(std::future::pending()),
            Reply::Headers(code) => Ok(Status::new(code, "scripted").into_http()),
            Reply::Trailers(code) => Ok(http::Response::new(trailers_body(code))),
            Reply::Transport => Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset",
            ))),
            Reply::Error(status) => Err(Box::new(status)),
            Reply::Http(status) => Ok(http::Response::builder()
                .status(status)
                .body(Body::empty())
                .unwrap()),
        };
        Box::pin(std::future::ready(result))
    }
}

fn trailers_body(code: Code) -> Body {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from(code as i32));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
        Ok(Frame::trailers(trailers)),
    ];
    Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames,
    )))
}

fn config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        // The rate trigger is off unless a test turns it on.
        failure_rate: 2.0,
        window: Duration::from_secs(10),
        min_requests: 4,
        recovery_timeout: Duration::from_secs(5),
        half_open_probes: 1,
        close_after: 2,
    }
}

fn breaker(config: BreakerConfig) -> (Breaker<Mock>, Mock) {
    let mock = Mock::default();
    (Breaker::new(mock.clone(), config), mock)
}

fn request() -> http::Request<Body> {
    http::Request::new(Body::empty())
}

/// A call, its body boxed as tonic boxes it.
async fn call(svc: &mut Breaker<Mock>) -> Result<http::Response<Body>, BoxError> {
    let response = svc.ready().await?.call(request()).await?;
    Ok(response.map(Body::new))
}

/// Runs a call to its end, body included; the code it ended with.
async fn run(svc: &mut Breaker<Mock>) -> Code {
    let response = match call(svc).await {
        Ok(response) => response,
        Err(error) => return Status::from_error(error).code(),
    };
    if let Some(status) = Status::from_header_map(response.headers()) {
        return status.code();
    }
    match response.into_body().collect().await {
        Ok(collected) => collected
            .trailers()
            .and_then(Status::from_header_map)
            .map_or(Code::Unknown, |status| status.code()),
        Err(status) => status.code(),
    }
}

/// Scripts `reply` and runs one call with it.
async fn run_with(svc: &mut Breaker<Mock>, mock: &Mock, reply: Reply) -> Code {
    mock.push(reply);
    run(svc).await
}

/// Asserts `result` is the breaker's fail-fast answer; its `retry_after`.
fn rejected(result: Result<http::Response<Body>, BoxError>) -> Option<Duration> {
    let Err(error) = result else {
        panic!("the call passed an open breaker");
    };
    let status = Status::from_error(error);
    assert_eq!(status.code(), Code::Unavailable);
    cause::<BreakerOpen>(&status)
        .expect("a BreakerOpen cause")
        .retry_after
}

async fn trip(svc: &mut Breaker<Mock>, mock: &Mock) {
    for _ in 0..3 {
        run_with(svc, mock, Reply::Headers(Code::Unavailable)).await;
    }
    assert_eq!(svc.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_and_fails_fast() {
    let (mut svc, mock) = breaker(config());
    for _ in 0..2 {
        let code = run_with(&mut svc, &mock, Reply::Headers(Code::Unavailable)).await;
        assert_eq!(code, Code::Unavailable);
    }
    assert_eq!(svc.handle().state(), State::Closed);
    run_with(&mut svc, &mock, Reply::Headers(Code::Unavailable)).await;
    assert_eq!(svc.handle().state(), State::Open);

    // Nothing is scripted: were the inner service called, it would panic.
    assert_eq!(rejected(call(&mut svc).await), Some(Duration::from_secs(5)));
    advance(Duration::from_secs(2)).await;
    assert_eq!(rejected(call(&mut svc).await), Some(Duration::from_secs(3)));
    assert_eq!(mock.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn half_opens_after_recovery_and_lets_only_the_probes_through() {
    for probes in [1, 2] {
        let (mut svc, mock) = breaker(BreakerConfig {
            half_open_probes: probes,
            ..config()
        });
        trip(&mut svc, &mock).await;
        advance(Duration::from_millis(4999)).await;
        assert_eq!(
            rejected(call(&mut svc).await),
            Some(Duration::from_millis(1))
        );
        advance(Duration::from_millis(1)).await;
        assert_eq!(svc.handle().state(), State::HalfOpen);

        let mut probes_in_flight = Vec::new();
        for _ in 0..probes {
            mock.push(Reply::Hang);
            probes_in_flight.push(svc.ready().await.unwrap().call(request()));
        }
        assert_eq!(mock.calls(), 3 + probes as usize);
        assert_eq!(rejected(call(&mut svc).await), None);
        assert_eq!(mock.calls(), 3 + probes as usize);
    }
}

#[tokio::test(start_paused = true)]
async fn closes_after_close_after_probe_successes() {
    let (mut svc, mock) = breaker(config());
    trip(&mut svc, &mock).await;
    advance(Duration::from_secs(5)).await;
    assert_eq!(
        run_with(&mut svc, &mock, Reply::Headers(Code::Ok)).await,
        Code::Ok
    );
    assert_eq!(svc.handle().state(), State::HalfOpen);
    run_with(&mut svc, &mock, Reply::Trailers(Code::Ok)).await;
    assert_eq!(svc.handle().state(), State::Closed);

    // Closed with fresh counts: two failures are not three in a row.
    for _ in 0..2 {
        run_with(&mut svc, &mock, Reply::Headers(Code::Unavailable)).await;
    }
    assert_eq!(svc.handle().state(), State::Closed);
    assert!(svc.handle().is_available(Instant::now()));

    // Calls let through without the lock after it closed again still
    // count: a third failure trips it, and it is unavailable at once.
    run_with(&mut svc, &mock, Reply::Headers(Code::Unavailable)).await;
    assert_eq!(svc.handle().state(), State::Open);
    assert!(!svc.handle().is_available(Instant::now()));
    assert_eq!(rejected(call(&mut svc).await), Some(Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn a_half_open_failure_reopens_for_a_whole_recovery_timeout() {
    let (mut svc, mock) = breaker(config());
    trip(&mut svc, &mock).await;
    advance(Duration::from_secs(5)).await;
    run_with(&mut svc, &mock, Reply::Headers(Code::Ok)).await;
    advance(Duration::from_secs(1)).await;
    run_with(&mut svc, &mock, Reply::Headers(Code::DeadlineExceeded)).await;
    assert_eq!(svc.handle().state(), State::Open);
    assert_eq!(rejected(call(&mut svc).await), Some(Duration::from_secs(5)));
    advance(Duration::from_millis(4999)).await;
    assert!(rejected(call(&mut svc).await).is_some());
    advance(Duration::from_millis(1)).await;
    // The earlier probe success no longer counts: two more are needed.
    run_with(&mut svc, &mock, Reply::Headers(Code::Ok)).await;
    assert_eq!(svc.handle().state(), State::HalfOpen);
    run_with(&mut svc, &mock, Reply::Headers(Code::Ok)).await;
    assert_eq!(svc.handle().state(), State::Closed);
    assert_eq!(mock.calls(), 3 + 2 + 2);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_trips_once_min_requests_are_in_the_window() {
    let (mut svc, mock) = breaker(BreakerConfig {
        consecutive_failures: 0,
        failure_rate: 0.5,
        ..config()
    });
    let fail = || Reply::Headers(Code::Internal);
    let ok = || Reply::Headers(Code::Ok);
    // Two failures in three calls: over the rate, under min_requests.
    for reply in [fail(), ok(), fail()] {
        run_with(&mut svc, &mock, reply).await;
    }
    assert_eq!(svc.handle().state(), State::Closed);

    // A window later those have aged out; were they still counted, this
    // failure would make three of five.
    advance(Duration::from_secs(12)).await;
    for reply in [ok(), fail()] {
        run_with(&mut svc, &mock, reply).await;
    }
    assert_eq!(svc.handle().state(), State::Closed);

    // Two failures in four calls in the window: 50% trips it.
    advance(Duration::from_secs(3)).await;
    for reply in [ok(), fail()] {
        run_with(&mut svc, &mock, reply).await;
    }
    assert_eq!(svc.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn answers_that_blame_the_caller_count_as_successes() {
    let (mut svc, mock) = breaker(config());
    let fail = || Reply::Headers(Code::Unavailable);
    for reply in [
        fail(),
        fail(),
        Reply::Headers(Code::InvalidArgument),
        fail(),
        fail(),
        Reply::Trailers(Code::NotFound),
        fail(),
        fail(),
        Reply::Error(Status::permission_denied("no")),
        fail(),
        fail(),
    ] {
        run_with(&mut svc, &mock, reply).await;
    }
    assert_eq!(svc.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_status_in_the_trailers_counts_when_the_body_ends() {
    let (mut svc, mock) = breaker(config());
    let mut responses = Vec::new();
    for _ in 0..3 {
        mock.push(Reply::Trailers(Code::Unavailable));
        let response = call(&mut svc).await.unwrap();
        assert!(response.headers().get("grpc-status").is_none());
        responses.push(response);
    }
    // The headers said nothing about the outcome.
    assert_eq!(svc.handle().state(), State::Closed);
    for response in responses {
        let trailers = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .trailers()
            .cloned();
        assert_eq!(trailers.unwrap()["grpc-status"], "14");
    }
    assert_eq!(svc.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn an_ok_in_the_trailers_resets_the_count() {
    let (mut svc, mock) = breaker(config());
    let fail = || Reply::Trailers(Code::Unavailable);
    for reply in [fail(), fail(), Reply::Trailers(Code::Ok), fail(), fail()] {
        run_with(&mut svc, &mock, reply).await;
    }
    assert_eq!(svc.handle().state(), State::Closed);
    run_with(&mut svc, &mock, fail()).await;
    assert_eq!(svc.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn transport_errors_and_http_errors_count() {
    let (mut svc, mock) = breaker(config());
    for reply in [Reply::Transport, Reply::Http(503), Reply::Transport] {
        run_with(&mut svc, &mock, reply).await;
    }
    assert_eq!(svc.handle().state(), State::Open);

    // A 404 from a proxy means UNIMPLEMENTED: the caller's mistake.
    let (mut svc, mock) = breaker(config());
    for reply in [Reply::Transport, Reply::Transport, Reply::Http(404)] {
        run_with(&mut svc, &mock, reply).await;
    }
    assert_eq!(svc.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn calls_a_lower_layer_never_sent_do_not_count() {
    let (mut svc, mock) = breaker(config());
    trip(&mut svc, &mock).await;
    advance(Duration::from_secs(5)).await;
    // A probe refused by a bulkhead below neither reopens the breaker nor
    // keeps its probe slot.
    let full = status_with_cause(
        Code::ResourceExhausted,
        "too many concurrent calls",
        BulkheadFull { timed_out: false },
    );
    run_with(&mut svc, &mock, Reply::Error(full)).await;
    assert_eq!(svc.handle().state(), State::HalfOpen);
    run_with(&mut svc, &mock, Reply::Headers(Code::Ok)).await;
    run_with(&mut svc, &mock, Reply::Headers(Code::Ok)).await;
    assert_eq!(svc.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_frees_its_probe_slot() {
    let (mut svc, mock) = breaker(config());
    trip(&mut svc, &mock).await;
    advance(Duration::from_secs(5)).await;
    mock.push(Reply::Hang);
    let probe = svc.ready().await.unwrap().call(request());
    assert_eq!(rejected(call(&mut svc).await), None);
    drop(probe);
    // The slot is free again, and the cancelled probe was no failure.
    assert_eq!(svc.handle().state(), State::HalfOpen);
    assert_eq!(
        run_with(&mut svc, &mock, Reply::Headers(Code::Ok)).await,
        Code::Ok
    );
    assert_eq!(svc.handle().state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_body_frees_its_probe_slot() {
    let (mut svc, mock) = breaker(config());
    trip(&mut svc, &mock).await;
    advance(Duration::from_secs(5)).await;
    mock.push(Reply::Trailers(Code::Unavailable));
    let response = call(&mut svc).await.unwrap();
    assert_eq!(rejected(call(&mut svc).await), None);
    // Dropped before its trailers were read: the failure in them is never
    // seen, and the slot comes back.
    drop(response);
    assert_eq!(svc.handle().state(), State::HalfOpen);
    assert_eq!(
        run_with(&mut svc, &mock, Reply::Headers(Code::Ok)).await,
        Code::Ok
    );
}

/// A request whose call must be over 100ms from now.
fn request_with_deadline() -> http::Request<Body> {
    let mut request = request();
    crate::CallDeadline::new(Instant::now() + Duration::from_millis(100))
        .set(request.extensions_mut());
    request
}

#[tokio::test(start_paused = true)]
async fn calls_dropped_at_their_deadline_count_as_failures() {
    let (mut svc, mock) = breaker(config());
    for _ in 0..3 {
        mock.push(Reply::Hang);
        let call = svc.ready().await.unwrap().call(request_with_deadline());
        // What the deadline layer above does: drop the call at its deadline.
        let timed_out = tokio::time::timeout(Duration::from_millis(100), call).await;
        assert!(timed_out.is_err());
    }
    assert_eq!(
        svc.handle().state(),
        State::Open,
        "three calls that timed out on a silent server trip it"
    );
}

#[tokio::test(start_paused = true)]
async fn calls_dropped_before_their_deadline_count_as_nothing() {
    let (mut svc, mock) = breaker(config());
    for _ in 0..3 {
        mock.push(Reply::Hang);
        let call = svc.ready().await.unwrap().call(request_with_deadline());
        // The caller gave up, or a hedge won, with time left.
        let gave_up = tokio::time::timeout(Duration::from_millis(50), call).await;
        assert!(gave_up.is_err());
    }
    assert_eq!(svc.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_at_its_deadline_counts_as_a_failure() {
    let (mut svc, mock) = breaker(config());
    for _ in 0..3 {
        // A stream that has started, then goes silent past the deadline.
        mock.push(Reply::Trailers(Code::Ok));
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(request_with_deadline())
            .await
            .unwrap();
        advance(Duration::from_millis(100)).await;
        drop(response);
    }
    assert_eq!(svc.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_half_opens_an_open_breaker_at_once() {
    let (mut svc, mock) = breaker(config());
    trip(&mut svc, &mock).await;
    assert_eq!(rejected(call(&mut svc).await), Some(Duration::from_secs(5)));
    svc.handle().reconnected();
    assert_eq!(
        svc.handle().state(),
        State::HalfOpen,
        "no wait for recovery"
    );
    for _ in 0..2 {
        assert_eq!(
            run_with(&mut svc, &mock, Reply::Headers(Code::Ok)).await,
            Code::Ok
        );
    }
    assert_eq!(svc.handle().state(), State::Closed);
    // A closed breaker stays closed.
    svc.handle().reconnected();
    assert_eq!(svc.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_breaker_which_the_handle_shows() {
    let (mut svc, mock) = breaker(config());
    let mut clone = svc.clone();
    let handle = svc.handle();
    trip(&mut svc, &mock).await;
    assert!(rejected(call(&mut clone).await).is_some());
    assert_eq!(handle.state(), State::Open);
    assert!(!handle.is_available(Instant::now()));
    assert!(!clone.is_available(Instant::now()));
    assert!(handle.is_available(Instant::now() + Duration::from_secs(5)));
    advance(Duration::from_secs(5)).await;
    assert_eq!(handle.state(), State::HalfOpen);
    assert!(svc.is_available(Instant::now()));
    assert_eq!(handle.config(), config());
}

#[tokio::test(start_paused = true)]
async fn the_layer_gives_each_service_its_own_breaker_unless_shared() {
    let (a, b) = (Mock::default(), Mock::default());
    let layer = BreakerLayer::new(config());
    let (mut svc_a, svc_b) = (layer.layer(a.clone()), layer.layer(b.clone()));
    trip(&mut svc_a, &a).await;
    assert_eq!(svc_b.handle().state(), State::Closed);

    let handle = BreakerHandle::new(config());
    let layer = BreakerLayer::shared(&handle);
    let (mut svc_a, mut svc_b) = (layer.layer(a.clone()), layer.layer(b.clone()));
    trip(&mut svc_a, &a).await;
    assert!(rejected(call(&mut svc_b).await).is_some());
    assert_eq!(b.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_disabled_breaker_never_trips() {
    let (mut svc, mock) = breaker(BreakerConfig {
        min_requests: 1,
        ..BreakerConfig::disabled()
    });
    for _ in 0..50 {
        run_with(&mut svc, &mock, Reply::Transport).await;
    }
    assert_eq!(svc.handle().state(), State::Closed);
}

#[test]
fn defaults_are_as_documented() {
    let config = BreakerConfig::default();
    assert_eq!(config.consecutive_failures, 5);
    assert_eq!(config.failure_rate, 0.5);
    assert_eq!(config.window, Duration::from_secs(10));
    assert_eq!(config.min_requests, 20);
    assert_eq!(config.recovery_timeout, Duration::from_secs(5));
    assert_eq!(config.half_open_probes, 1);
    assert_eq!(config.close_after, 2);
}

#[test]
fn only_a_breaker_with_a_trigger_on_can_trip() {
    assert!(BreakerConfig::default().trips());
    assert!(!BreakerConfig::disabled().trips());
    let rate_only = BreakerConfig {
        consecutive_failures: 0,
        ..BreakerConfig::default()
    };
    assert!(rate_only.trips());
    let consecutive_only = BreakerConfig {
        failure_rate: 1.5,
        ..BreakerConfig::default()
    };
    assert!(consecutive_only.trips());
}
