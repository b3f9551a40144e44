//! The hedge layer driven through a scripted inner service on paused time:
//! every time and count asserted here is exact.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use tokio::time::Instant;
use tonic::{Code, Status, body::Body};
use tower::{Layer, ServiceExt};

use super::HedgeLayer;
use crate::{
    contract::{Idempotency, Streaming},
    {
        CallDeadline, CallPolicy, CodeSet, HedgingPolicy, Rng,
        retry::{
            Attempts, RetryThrottle,
            mock::{ATTEMPT, Mock, committed, connect_error, hang, pushback, status},
        },
    },
};

/// Three copies, 100ms apart; `UNAVAILABLE` is not fatal.
fn hedging() -> HedgingPolicy {
    HedgingPolicy {
        max_attempts: 3,
        hedging_delay: Duration::from_millis(100),
        non_fatal_codes: CodeSet::of(&[Code::Unavailable]),
    }
}

fn policy(idempotency: Idempotency) -> CallPolicy {
    CallPolicy {
        idempotency,
        hedging: Some(hedging()),
        ..CallPolicy::unknown("/test.v1.Test/Read")
    }
}

fn request(policy: CallPolicy) -> http::Request<Body> {
    let mut request = http::Request::new(Body::new(Full::new(Bytes::from_static(b"query"))));
    request.extensions_mut().insert(policy);
    request
}

fn layer(throttle: &RetryThrottle) -> HedgeLayer {
    HedgeLayer::new(Some(throttle.clone()), Arc::new(Rng::seeded(1)))
}

type Outcome = Result<http::Response<Body>, crate::BoxError>;

async fn call(layer: &HedgeLayer, mock: &Mock, request: http::Request<Body>) -> Outcome {
    layer.layer(mock.clone()).oneshot(request).await
}

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

/// Which copy the returned response came from.
fn answered_by(outcome: &Outcome) -> Option<String> {
    let header = outcome.as_ref().ok()?.headers().get(ATTEMPT)?;
    Some(header.to_str().ok()?.to_owned())
}

fn copies(outcome: &Outcome) -> Option<u32> {
    outcome
        .as_ref()
        .ok()?
        .extensions()
        .get::<Attempts>()
        .map(|a| a.0)
}

fn cancelled(mock: &Mock) -> Vec<bool> {
    mock.seen().iter().map(|seen| seen.cancelled).collect()
}

#[tokio::test(start_paused = true)]
async fn the_fast_copy_wins_and_the_slow_one_is_cancelled() {
    let mock = Mock::new([committed().after(1000), committed().after(10)]);
    let start = Instant::now();
    let outcome = call(
        &layer(&RetryThrottle::default()),
        &mock,
        request(policy(Idempotency::NoSideEffects)),
    )
    .await;
    assert_eq!(answered_by(&outcome).as_deref(), Some("1"));
    assert_eq!(start.elapsed(), Duration::from_millis(110));
    assert_eq!(copies(&outcome), Some(2));
    // The slow first copy was dropped; no third copy was due yet.
    assert_eq!(mock.times(start), [0, 100]);
    assert_eq!(cancelled(&mock), [true, false]);
    // Every copy carried the whole request.
    assert!(mock.seen().iter().all(|seen| seen.body == b"query"));
}

#[tokio::test(start_paused = true)]
async fn copies_go_out_at_zero_delay_and_twice_the_delay() {
    // Every copy fails, late: the schedule alone decides when they go.
    let mock = Mock::new([status(Code::Unavailable).after(1000)]);
    let start = Instant::now();
    let outcome = call(
        &layer(&RetryThrottle::default()),
        &mock,
        request(policy(Idempotency::NoSideEffects)),
    )
    .await;
    assert_eq!(mock.times(start), [0, 100, 200]);
    assert_eq!(
        mock.header("grpc-previous-rpc-attempts"),
        [None, Some("1".into()), Some("2".into())]
    );
    // All failed non-fatally: the last failure is returned.
    assert_eq!(code(&outcome), Code::Unavailable);
    assert_eq!(answered_by(&outcome).as_deref(), Some("2"));
    assert_eq!(copies(&outcome), Some(3));
    assert_eq!(start.elapsed(), Duration::from_millis(1200));
}

#[tokio::test(start_paused = true)]
async fn a_fatal_status_ends_the_call_without_further_copies() {
    let mock = Mock::new([status(Code::InvalidArgument).after(10), committed()]);
    let start = Instant::now();
    let outcome = call(
        &layer(&RetryThrottle::default()),
        &mock,
        request(policy(Idempotency::NoSideEffects)),
    )
    .await;
    assert_eq!(code(&outcome), Code::InvalidArgument);
    assert_eq!(start.elapsed(), Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_fatal_status_from_a_later_copy_cancels_the_earlier_one() {
    let mock = Mock::new([committed().after(1000), status(Code::NotFound).after(10)]);
    let outcome = call(
        &layer(&RetryThrottle::default()),
        &mock,
        request(policy(Idempotency::NoSideEffects)),
    )
    .await;
    assert_eq!(code(&outcome), Code::NotFound);
    assert_eq!(answered_by(&outcome).as_deref(), Some("1"));
    assert_eq!(cancelled(&mock), [true, false]);
}

#[tokio::test(start_paused = true)]
async fn a_non_fatal_failure_sends_the_next_copy_at_once() {
    let mock = Mock::new([status(Code::Unavailable).after(10), committed().after(10)]);
    let start = Instant::now();
    let outcome = call(
        &layer(&RetryThrottle::default()),
        &mock,
        request(policy(Idempotency::NoSideEffects)),
    )
    .await;
    assert_eq!(mock.times(start), [0, 10]);
    assert_eq!(answered_by(&outcome).as_deref(), Some("1"));
    assert_eq!(start.elapsed(), Duration::from_millis(20));
}

#[tokio::test(start_paused = true)]
async fn a_transport_failure_counts_as_unavailable() {
    let mock = Mock::new([connect_error(), committed().after(10)]);
    let start = Instant::now();
    let outcome = call(
        &layer(&RetryThrottle::default()),
        &mock,
        request(policy(Idempotency::NoSideEffects)),
    )
    .await;
    assert_eq!(mock.times(start), [0, 0]);
    assert_eq!(code(&outcome), Code::Ok);
}

#[tokio::test(start_paused = true)]
async fn pushback_delays_the_next_copy_or_stops_them() {
    let mock = Mock::new([pushback(Code::Unavailable, "30").after(10), committed()]);
    let start = Instant::now();
    call(
        &layer(&RetryThrottle::default()),
        &mock,
        request(policy(Idempotency::NoSideEffects)),
    )
    .await
    .unwrap();
    assert_eq!(mock.times(start), [0, 40]);

    let mock = Mock::new([pushback(Code::Unavailable, "-1").after(10), committed()]);
    let start = Instant::now();
    let outcome = call(
        &layer(&RetryThrottle::default()),
        &mock,
        request(policy(Idempotency::NoSideEffects)),
    )
    .await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(code(&outcome), Code::Unavailable);
    assert_eq!(start.elapsed(), Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn a_throttled_target_gets_no_hedges() {
    let throttle = RetryThrottle::new(10, 0.1);
    for _ in 0..5 {
        throttle.on_failure();
    }
    assert!(!throttle.allows_retry());
    let mock = Mock::new([committed().after(250)]);
    let outcome = call(
        &layer(&throttle),
        &mock,
        request(policy(Idempotency::NoSideEffects)),
    )
    .await;
    assert_eq!(code(&outcome), Code::Ok);
    assert_eq!(mock.calls(), 1);
    // The success gave some back.
    assert!((throttle.tokens() - 5.1).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn non_fatal_failures_take_tokens_until_hedging_stops() {
    let throttle = RetryThrottle::new(10, 0.1);
    let mock = Mock::new([status(Code::Unavailable).after(1000)]);
    let layer = layer(&throttle);
    // Three copies fail: 7 tokens left.
    call(&layer, &mock, request(policy(Idempotency::NoSideEffects)))
        .await
        .unwrap();
    assert_eq!(mock.calls(), 3);
    assert_eq!(throttle.tokens(), 7.0);
    // The next call still sends all three (7 and 7 tokens are above 5 when
    // the hedges go out), and they fail: 4 left ...
    call(&layer, &mock, request(policy(Idempotency::NoSideEffects)))
        .await
        .unwrap();
    assert_eq!(mock.calls(), 6);
    assert_eq!(throttle.tokens(), 4.0);
    // ... which is at or below half: the next call sends its first copy
    // only.
    call(&layer, &mock, request(policy(Idempotency::NoSideEffects)))
        .await
        .unwrap();
    assert_eq!(mock.calls(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_method_that_is_not_no_side_effects_is_not_hedged() {
    for idempotency in [Idempotency::Idempotent, Idempotency::Unknown] {
        let mock = Mock::new([committed().after(250)]);
        let outcome = call(
            &layer(&RetryThrottle::default()),
            &mock,
            request(policy(idempotency)),
        )
        .await;
        assert_eq!(mock.calls(), 1, "{idempotency:?}");
        assert_eq!(code(&outcome), Code::Ok);
        // Passed through untouched.
        assert_eq!(copies(&outcome), None);
    }
}

#[tokio::test(start_paused = true)]
async fn only_single_message_requests_are_hedged() {
    for (streaming, hedged) in [
        (Streaming::ServerStreaming, true),
        (Streaming::ClientStreaming, false),
        (Streaming::Bidirectional, false),
    ] {
        let mock = Mock::new([committed().after(150)]);
        let call_policy = CallPolicy {
            streaming,
            ..policy(Idempotency::NoSideEffects)
        };
        call(
            &layer(&RetryThrottle::default()),
            &mock,
            request(call_policy),
        )
        .await
        .unwrap();
        assert_eq!(mock.calls(), if hedged { 2 } else { 1 }, "{streaming:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_deadline_ends_a_hedged_call() {
    let mock = Mock::new([hang()]);
    let mut request = request(policy(Idempotency::NoSideEffects));
    let start = Instant::now();
    request
        .extensions_mut()
        .insert(CallDeadline::new(start + Duration::from_millis(150)));
    let outcome = call(&layer(&RetryThrottle::default()), &mock, request).await;
    assert_eq!(code(&outcome), Code::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::from_millis(150));
    // No copy at 200, past the deadline; both sent were cancelled.
    assert_eq!(mock.times(start), [0, 100]);
    assert_eq!(cancelled(&mock), [true, true]);
    assert_eq!(
        mock.header("grpc-timeout"),
        [Some("150m".into()), Some("50m".into())]
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_over_the_buffer_limit_is_sent_once() {
    let mock = Mock::new([committed().after(250)]);
    let layer = layer(&RetryThrottle::default()).buffer_limit(2);
    let outcome = call(&layer, &mock, request(policy(Idempotency::NoSideEffects))).await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(mock.seen()[0].body, b"query");
    assert_eq!(copies(&outcome), Some(1));
}
