//! The retry layer driven through a scripted inner service, on paused time
//! and seeded jitter: every time and count asserted here is exact.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use tokio::time::Instant;
use tonic::{Code, Status, body::Body};
use tower::{Layer, ServiceExt};

use super::{
    Attempts, RetryLayer, RetryThrottle,
    mock::{ATTEMPT, Mock, committed, connect_error, hang, pushback, status},
};
use crate::{
    contract::{Idempotency, Streaming},
    {CallDeadline, CallPolicy, CodeSet, DeadlineSpent, HedgingPolicy, RetryPolicy, Rng, cause},
};

const SEED: u64 = 7;

fn retry_policy(
    max_attempts: u32,
    initial_ms: u64,
    max_ms: u64,
    multiplier: f64,
    codes: &[Code],
) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(initial_ms),
        max_backoff: Duration::from_millis(max_ms),
        backoff_multiplier: multiplier,
        retryable_codes: CodeSet::of(codes),
    }
}

/// Up to 3 attempts, backoff ceilings 10ms then 20ms, on `UNAVAILABLE`.
fn quick() -> RetryPolicy {
    retry_policy(3, 10, 100, 2.0, &[Code::Unavailable])
}

fn policy(idempotency: Idempotency, retry: Option<RetryPolicy>) -> CallPolicy {
    CallPolicy {
        idempotency,
        retry,
        ..CallPolicy::unknown("/test.v1.Test/Call")
    }
}

fn unary(policy: Option<CallPolicy>) -> http::Request<Body> {
    request(policy, Body::new(Full::new(Bytes::from_static(b"hello"))))
}

fn request(policy: Option<CallPolicy>, body: Body) -> http::Request<Body> {
    let mut request = http::Request::new(body);
    *request.uri_mut() = http::Uri::from_static("http://test/test.v1.Test/Call");
    if let Some(policy) = policy {
        request.extensions_mut().insert(policy);
    }
    request
}

fn with_deadline(mut request: http::Request<Body>, after: Duration) -> http::Request<Body> {
    request
        .extensions_mut()
        .insert(CallDeadline::new(Instant::now() + after));
    request
}

fn stream_of(chunks: &[&'static [u8]]) -> Body {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
        .iter()
        .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk))))
        .collect();
    Body::new(StreamBody::new(futures_util::stream::iter(frames)))
}

/// The retry layer with the default throttle and seeded jitter.
fn layer() -> RetryLayer {
    RetryLayer::new(Some(RetryThrottle::default()), Arc::new(Rng::seeded(SEED)))
}

type Outcome = Result<http::Response<Body>, crate::BoxError>;

async fn call(layer: &RetryLayer, mock: &Mock, request: http::Request<Body>) -> Outcome {
    layer.layer(mock.clone()).oneshot(request).await
}

/// The gRPC status code of an outcome.
fn code(outcome: &Outcome) -> Code {
    match outcome {
        Ok(response) => response
            .headers()
            .get("grpc-status")
            .map_or(Code::Ok, |v| Code::from_bytes(v.as_bytes())),
        Err(error) => error
            .downcast_ref::<Status>()
            .map_or(Code::Unknown, Status::code),
    }
}

fn attempts(outcome: &Outcome) -> Option<u32> {
    outcome
        .as_ref()
        .ok()?
        .extensions()
        .get::<Attempts>()
        .map(|a| a.0)
}

fn answered_by(outcome: &Outcome) -> Option<String> {
    let header = outcome.as_ref().ok()?.headers().get(ATTEMPT)?;
    Some(header.to_str().ok()?.to_owned())
}

#[tokio::test(start_paused = true)]
async fn persistent_unavailable_uses_every_attempt() {
    let mock = Mock::new([status(Code::Unavailable)]);
    let retry = retry_policy(4, 10, 100, 2.0, &[Code::Unavailable]);
    let outcome = call(
        &layer(),
        &mock,
        unary(Some(policy(Idempotency::Idempotent, Some(retry)))),
    )
    .await;
    assert_eq!(mock.calls(), 4);
    assert_eq!(code(&outcome), Code::Unavailable);
    assert_eq!(attempts(&outcome), Some(4));
    // The last attempt's answer is the one returned.
    assert_eq!(answered_by(&outcome).as_deref(), Some("3"));
}

#[tokio::test(start_paused = true)]
async fn max_attempts_is_capped_unless_the_layer_raises_the_cap() {
    let retry = retry_policy(8, 1, 1, 1.0, &[Code::Unavailable]);
    let request = || unary(Some(policy(Idempotency::Idempotent, Some(retry))));

    let capped = RetryLayer::new(None, Arc::new(Rng::seeded(SEED)));
    let mock = Mock::new([status(Code::Unavailable)]);
    call(&capped, &mock, request()).await.unwrap();
    assert_eq!(mock.calls(), 5);

    let raised = capped.max_attempts_cap(8);
    let mock = Mock::new([status(Code::Unavailable)]);
    call(&raised, &mock, request()).await.unwrap();
    assert_eq!(mock.calls(), 8);
}

#[tokio::test(start_paused = true)]
async fn the_backoff_schedule_is_the_seeded_draws() {
    let mock = Mock::new([status(Code::Unavailable)]);
    let retry = retry_policy(5, 100, 300, 2.0, &[Code::Unavailable]);
    let start = Instant::now();
    call(
        &layer(),
        &mock,
        unary(Some(policy(Idempotency::NoSideEffects, Some(retry)))),
    )
    .await
    .unwrap();

    // Retry n waits uniform in [0, min(100 * 2^(n-1), 300)] ms.
    let draws = Rng::seeded(SEED);
    let mut expected = vec![0u64];
    for ceiling in [100.0, 200.0, 300.0, 300.0] {
        let wait = (draws.next_f64() * ceiling).floor() as u64;
        expected.push(expected.last().unwrap() + wait);
    }
    assert_eq!(mock.times(start), expected);
    // The schedule is not degenerate: it would catch waits of zero.
    assert!(expected.windows(2).all(|w| w[1] > w[0]), "{expected:?}");
}

#[tokio::test(start_paused = true)]
async fn later_attempts_carry_the_previous_attempt_count() {
    let mock = Mock::new([
        status(Code::Unavailable),
        status(Code::Unavailable),
        committed(),
    ]);
    let outcome = call(
        &layer(),
        &mock,
        unary(Some(policy(Idempotency::Idempotent, Some(quick())))),
    )
    .await;
    assert_eq!(code(&outcome), Code::Ok);
    assert_eq!(attempts(&outcome), Some(3));
    assert_eq!(
        mock.header("grpc-previous-rpc-attempts"),
        [None, Some("1".into()), Some("2".into())]
    );
    // Every attempt sent the whole request.
    assert!(mock.seen().iter().all(|seen| seen.body == b"hello"));
}

#[tokio::test(start_paused = true)]
async fn pushback_is_honoured_exactly_and_restarts_the_backoff() {
    let mock = Mock::new([
        status(Code::Unavailable),
        status(Code::Unavailable),
        pushback(Code::Unavailable, "1234"),
        status(Code::Unavailable),
        committed(),
    ]);
    let retry = retry_policy(5, 1000, 60_000, 2.0, &[Code::Unavailable]);
    let start = Instant::now();
    let outcome = call(
        &layer(),
        &mock,
        unary(Some(policy(Idempotency::Idempotent, Some(retry)))),
    )
    .await;
    assert_eq!(code(&outcome), Code::Ok);

    let draws = Rng::seeded(SEED);
    let draw = |ceiling: f64| (draws.next_f64() * ceiling).floor() as u64;
    let t1 = draw(1000.0);
    let t2 = t1 + draw(2000.0);
    // The pushback, exactly; no draw.
    let t3 = t2 + 1234;
    // The sequence starts over: the ceiling is the initial backoff again,
    // not 4000.
    let t4 = t3 + draw(1000.0);
    assert_eq!(mock.times(start), [0, t1, t2, t3, t4]);
}

#[tokio::test(start_paused = true)]
async fn negative_or_malformed_pushback_stops_retrying() {
    for value in ["-1", "soon", "1.5"] {
        let mock = Mock::new([pushback(Code::Unavailable, value), committed()]);
        let outcome = call(
            &layer(),
            &mock,
            unary(Some(policy(Idempotency::Idempotent, Some(quick())))),
        )
        .await;
        assert_eq!(mock.calls(), 1, "pushback {value:?}");
        assert_eq!(code(&outcome), Code::Unavailable);
    }
}

#[tokio::test(start_paused = true)]
async fn resource_exhausted_is_retried_only_with_pushback() {
    let retry = retry_policy(
        3,
        10,
        100,
        2.0,
        &[Code::Unavailable, Code::ResourceExhausted],
    );
    let request = || unary(Some(policy(Idempotency::Idempotent, Some(retry))));

    let mock = Mock::new([status(Code::ResourceExhausted), committed()]);
    let outcome = call(&layer(), &mock, request()).await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(code(&outcome), Code::ResourceExhausted);

    let mock = Mock::new([pushback(Code::ResourceExhausted, "30"), committed()]);
    let start = Instant::now();
    let outcome = call(&layer(), &mock, request()).await;
    assert_eq!(code(&outcome), Code::Ok);
    assert_eq!(mock.times(start), [0, 30]);
}

#[tokio::test(start_paused = true)]
async fn codes_outside_the_retryable_set_are_not_retried() {
    let mock = Mock::new([status(Code::Internal), committed()]);
    let outcome = call(
        &layer(),
        &mock,
        unary(Some(policy(Idempotency::Idempotent, Some(quick())))),
    )
    .await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(code(&outcome), Code::Internal);
    assert_eq!(attempts(&outcome), Some(1));
}

#[tokio::test(start_paused = true)]
async fn unknown_idempotency_is_retried_only_when_the_request_never_left() {
    let request = || unary(Some(policy(Idempotency::Unknown, Some(quick()))));

    // The server may have acted on it: not retried.
    let mock = Mock::new([status(Code::Unavailable), committed()]);
    let outcome = call(&layer(), &mock, request()).await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(code(&outcome), Code::Unavailable);

    // The connection was never made: retried.
    let mock = Mock::new([connect_error(), committed()]);
    let outcome = call(&layer(), &mock, request()).await;
    assert_eq!(mock.calls(), 2);
    assert_eq!(code(&outcome), Code::Ok);
    assert_eq!(attempts(&outcome), Some(2));
    assert_eq!(
        mock.header("grpc-previous-rpc-attempts"),
        [None, Some("1".into())]
    );
}

#[tokio::test(start_paused = true)]
async fn the_caller_can_opt_in_to_retrying_side_effects() {
    let mock = Mock::new([status(Code::Unavailable), committed()]);
    let opted_in = CallPolicy {
        retry_side_effects: true,
        ..policy(Idempotency::Unknown, Some(quick()))
    };
    let outcome = call(&layer(), &mock, unary(Some(opted_in))).await;
    assert_eq!(mock.calls(), 2);
    assert_eq!(code(&outcome), Code::Ok);
}

#[tokio::test(start_paused = true)]
async fn a_never_sent_request_gets_one_transparent_retry_without_a_policy() {
    let mock = Mock::new([connect_error()]);
    let start = Instant::now();
    let outcome = call(
        &layer(),
        &mock,
        unary(Some(policy(Idempotency::Unknown, None))),
    )
    .await;
    // One transparent retry, at once, and no more.
    assert_eq!(mock.times(start), [0, 0]);
    let error = outcome.unwrap_err();
    assert!(error.downcast_ref::<tonic::ConnectError>().is_some());

    // Without a retry policy, a status is final whatever the method.
    let mock = Mock::new([status(Code::Unavailable), committed()]);
    call(
        &layer(),
        &mock,
        unary(Some(policy(Idempotency::NoSideEffects, None))),
    )
    .await
    .unwrap();
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_committed_response_is_returned_and_never_retried() {
    let mock = Mock::new([committed(), status(Code::Unavailable)]);
    let outcome = call(
        &layer(),
        &mock,
        unary(Some(policy(Idempotency::Idempotent, Some(quick())))),
    )
    .await;
    assert_eq!(mock.calls(), 1);
    let response = outcome.unwrap();
    assert!(response.headers().get("grpc-status").is_none());
    assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(1)));
    assert_eq!(response.headers()[ATTEMPT], "0");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_the_whole_call() {
    // Pushback makes the schedule exact: attempts at 0, 60, ..., 240; the
    // next would start at 300, past the deadline at 250.
    let mock = Mock::new([pushback(Code::Unavailable, "60")]);
    let retry = retry_policy(10, 10, 100, 2.0, &[Code::Unavailable]);
    let layer = RetryLayer::new(None, Arc::new(Rng::seeded(SEED))).max_attempts_cap(10);
    let start = Instant::now();
    let request = with_deadline(
        unary(Some(policy(Idempotency::Idempotent, Some(retry)))),
        Duration::from_millis(250),
    );
    let outcome = call(&layer, &mock, request).await;
    assert_eq!(mock.times(start), [0, 60, 120, 180, 240]);
    // The last attempt's outcome, returned as soon as it was known.
    assert_eq!(code(&outcome), Code::Unavailable);
    assert_eq!(attempts(&outcome), Some(5));
    assert_eq!(start.elapsed(), Duration::from_millis(240));
    // Each attempt was told the time left.
    assert_eq!(
        mock.header("grpc-timeout"),
        ["250m", "190m", "130m", "70m", "10m"].map(|v| Some(v.to_owned()))
    );
}

#[tokio::test(start_paused = true)]
async fn a_backoff_that_would_end_past_the_deadline_is_not_waited() {
    let retry = retry_policy(3, 10_000, 10_000, 1.0, &[Code::Unavailable]);
    let first_wait = (Rng::seeded(SEED).next_f64() * 10_000.0).floor() as u64;
    assert!(
        first_wait >= 1000,
        "the seed must draw a wait past the deadline"
    );
    let mock = Mock::new([status(Code::Unavailable), committed()]);
    let start = Instant::now();
    let request = with_deadline(
        unary(Some(policy(Idempotency::Idempotent, Some(retry)))),
        Duration::from_secs(1),
    );
    let outcome = call(&layer(), &mock, request).await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(code(&outcome), Code::Unavailable);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_still_waiting_at_the_deadline_fails_the_call() {
    let mock = Mock::new([hang()]);
    let start = Instant::now();
    let request = with_deadline(
        unary(Some(policy(Idempotency::Idempotent, Some(quick())))),
        Duration::from_millis(100),
    );
    let outcome = call(&layer(), &mock, request).await;
    assert_eq!(code(&outcome), Code::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].cancelled);
}

#[tokio::test(start_paused = true)]
async fn a_request_body_that_stalls_is_bounded_by_the_deadline() {
    let mock = Mock::new([committed()]);
    let stalled = futures_util::stream::pending::<Result<Frame<Bytes>, Infallible>>();
    let start = Instant::now();
    let request = with_deadline(
        request(
            Some(policy(Idempotency::Idempotent, Some(quick()))),
            Body::new(StreamBody::new(stalled)),
        ),
        Duration::from_millis(70),
    );
    let outcome = call(&layer(), &mock, request).await;
    assert_eq!(code(&outcome), Code::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::from_millis(70));
    assert_eq!(mock.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_spent_deadline_sends_nothing() {
    let mock = Mock::new([committed()]);
    let request = with_deadline(
        unary(Some(policy(Idempotency::Idempotent, Some(quick())))),
        Duration::ZERO,
    );
    let error = call(&layer(), &mock, request).await.unwrap_err();
    let status = error.downcast_ref::<Status>().unwrap();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(cause::<DeadlineSpent>(status).is_some());
    assert_eq!(mock.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn throttling_turns_retries_off_during_an_outage_and_successes_refill_it() {
    let throttle = RetryThrottle::new(10, 0.1);
    let layer = RetryLayer::new(Some(throttle.clone()), Arc::new(Rng::seeded(SEED)));
    let request = || unary(Some(policy(Idempotency::Idempotent, Some(quick()))));

    // 100 calls into an outage: 3 attempts (tokens 10 -> 7), 2 (-> 5),
    // then one each, not 300.
    let outage = Mock::new([status(Code::Unavailable)]);
    for _ in 0..100 {
        call(&layer, &outage, request()).await.unwrap();
    }
    assert_eq!(outage.calls(), 3 + 2 + 98);
    assert_eq!(throttle.tokens(), 0.0);

    // 60 successes give 6 tokens; a failure takes one, leaving 5, which is
    // not above half: still no retry.
    let healthy = Mock::new([committed()]);
    for _ in 0..60 {
        call(&layer, &healthy, request()).await.unwrap();
    }
    assert_eq!(throttle.tokens(), 6.0);
    let failing = Mock::new([status(Code::Unavailable)]);
    call(&layer, &failing, request()).await.unwrap();
    assert_eq!(failing.calls(), 1);

    // 11 more successes: 6.1, then 5.1 after a failure, which allows one
    // retry.
    for _ in 0..11 {
        call(&layer, &healthy, request()).await.unwrap();
    }
    let failing = Mock::new([status(Code::Unavailable)]);
    call(&layer, &failing, request()).await.unwrap();
    assert_eq!(failing.calls(), 2);
    assert!((throttle.tokens() - 4.1).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn without_a_throttle_an_outage_gets_every_attempt() {
    let layer = RetryLayer::new(None, Arc::new(Rng::seeded(SEED)));
    let outage = Mock::new([status(Code::Unavailable)]);
    for _ in 0..10 {
        let request = unary(Some(policy(Idempotency::Idempotent, Some(quick()))));
        call(&layer, &outage, request).await.unwrap();
    }
    assert_eq!(outage.calls(), 30);
}

fn streaming(policy: CallPolicy) -> CallPolicy {
    CallPolicy {
        streaming: Streaming::ClientStreaming,
        ..policy
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_stream_within_the_replay_limit_is_replayed_byte_for_byte() {
    // The first attempt reads one frame and fails; the retry must replay
    // that frame, then read the rest from the caller's stream.
    let mock = Mock::new([status(Code::Unavailable).reading(1), committed()]);
    let call_policy = streaming(policy(Idempotency::Idempotent, Some(quick())));
    let body = stream_of(&[b"alpha", b"beta", b"gamma"]);
    let outcome = call(&layer(), &mock, request(Some(call_policy), body)).await;
    assert_eq!(code(&outcome), Code::Ok);
    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, b"alpha");
    assert_eq!(seen[1].body, b"alphabetagamma");
}

#[tokio::test(start_paused = true)]
async fn a_request_stream_beyond_the_replay_limit_is_not_retried() {
    let mock = Mock::new([status(Code::Unavailable), committed()]);
    let call_policy = streaming(policy(Idempotency::Idempotent, Some(quick())));
    let body = stream_of(&[b"alpha", b"beta", b"gamma"]);
    let layer = layer().replay_limit(8);
    let outcome = call(&layer, &mock, request(Some(call_policy), body)).await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(code(&outcome), Code::Unavailable);
    // The one attempt still got the whole stream.
    assert_eq!(mock.seen()[0].body, b"alphabetagamma");
}

#[tokio::test(start_paused = true)]
async fn a_request_over_the_buffer_limit_is_sent_once_intact() {
    let mock = Mock::new([status(Code::Unavailable), committed()]);
    let call_policy = policy(Idempotency::Idempotent, Some(quick()));
    let body = stream_of(&[b"hello ", b"world"]);
    let layer = layer().buffer_limit(4);
    let outcome = call(&layer, &mock, request(Some(call_policy), body)).await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(code(&outcome), Code::Unavailable);
    assert_eq!(mock.seen()[0].body, b"hello world");
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_policy_is_forwarded_untouched() {
    let mock = Mock::new([connect_error(), committed()]);
    let outcome = call(&layer(), &mock, unary(None)).await;
    assert_eq!(mock.calls(), 1);
    assert!(outcome.is_err());

    let mock = Mock::new([status(Code::Unavailable)]);
    let outcome = call(&layer(), &mock, unary(None)).await;
    assert_eq!(attempts(&outcome), None);
}

#[tokio::test(start_paused = true)]
async fn a_hedged_call_is_left_to_the_hedge_layer() {
    let mock = Mock::new([status(Code::Unavailable), committed()]);
    let hedged = CallPolicy {
        hedging: Some(HedgingPolicy {
            max_attempts: 3,
            hedging_delay: Duration::from_millis(10),
            non_fatal_codes: CodeSet::of(&[Code::Unavailable]),
        }),
        ..policy(Idempotency::NoSideEffects, Some(quick()))
    };
    let outcome = call(&layer(), &mock, unary(Some(hedged))).await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(code(&outcome), Code::Unavailable);
}

/// A caller's own extension, which the retry layer cannot rebuild.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Marker(u32);

/// Every attempt gets extensions equal to the call's: the first is sent
/// the originals (when they are all of types the layer can build again)
/// and later ones a rebuilt or copied set.
#[tokio::test(start_paused = true)]
async fn every_attempt_gets_the_calls_extensions() {
    type SeenExtensions = (Option<CallPolicy>, Option<Marker>, usize);
    #[allow(
        clippy::disallowed_types,
        reason = "a test's record, never held across await"
    )]
    let seen = Arc::new(std::sync::Mutex::new(Vec::<SeenExtensions>::new()));
    let answers = {
        let seen = seen.clone();
        tower::service_fn(move |request: http::Request<Body>| {
            let extensions = request.extensions();
            let mut seen = seen.lock().unwrap();
            seen.push((
                extensions.get::<CallPolicy>().copied(),
                extensions.get::<Marker>().copied(),
                extensions.len(),
            ));
            let code = if seen.len() < 3 { "14" } else { "0" };
            let response = http::Response::builder()
                .header("grpc-status", code)
                .body(Body::empty())
                .unwrap();
            std::future::ready(Ok::<_, crate::BoxError>(response))
        })
    };
    let call_policy = policy(Idempotency::Idempotent, Some(quick()));

    // Only extensions the layer knows: rebuilt for later attempts.
    let outcome = layer()
        .layer(answers.clone())
        .oneshot(unary(Some(call_policy)))
        .await;
    assert_eq!(attempts(&outcome), Some(3));
    let known = seen.lock().unwrap().drain(..).collect::<Vec<_>>();
    assert_eq!(known, vec![(Some(call_policy), None, 1); 3]);

    // One of the caller's own: copied for every attempt.
    let mut request = unary(Some(call_policy));
    request.extensions_mut().insert(Marker(7));
    let outcome = layer().layer(answers).oneshot(request).await;
    assert_eq!(attempts(&outcome), Some(3));
    let copied = seen.lock().unwrap().drain(..).collect::<Vec<_>>();
    assert_eq!(copied, vec![(Some(call_policy), Some(Marker(7)), 2); 3]);
}
