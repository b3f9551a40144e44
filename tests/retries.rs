//! gRFC A6 retries through the generated client, against a real server:
//! the contract decides what may be retried, the server sees the attempts.

mod common;

use std::time::Duration;

use common::{ClosedPort, Scripted, echo, echo_client, serve_echo};
use sinew::client::{CallOptions, ClientConfig};
use tonic::Code;

#[tokio::test]
async fn an_idempotent_method_is_retried_until_it_succeeds() {
    let script = Scripted::failing(2, Code::Unavailable);
    let server = serve_echo(script.clone()).await;
    let mut client = echo_client(&[server.addr], |c| c).await;

    // Put is IDEMPOTENT; its contract retries UNAVAILABLE up to 4 attempts.
    let reply = client
        .put(echo("put"))
        .await
        .expect("the third attempt succeeds");
    assert_eq!(reply.into_inner().message, "put #3");
    let attempts: Vec<Option<String>> = script
        .seen()
        .into_iter()
        .map(|s| s.previous_attempts)
        .collect();
    assert_eq!(attempts, [None, Some("1".to_owned()), Some("2".to_owned())]);
    server.stop().await;
}

#[tokio::test]
async fn max_attempts_bounds_the_retries() {
    let script = Scripted::failing(usize::MAX, Code::Unavailable);
    let server = serve_echo(script.clone()).await;
    let mut client = echo_client(&[server.addr], |c| c.retry_throttling(None)).await;
    let status = client.put(echo("put")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(script.calls(), 4, "the contract's max_attempts for Put");
    server.stop().await;
}

#[tokio::test]
async fn a_method_with_side_effects_is_not_retried_once_it_reached_the_server() {
    let script = Scripted::failing(1, Code::Unavailable);
    let server = serve_echo(script.clone()).await;
    let mut client = echo_client(&[server.addr], |c| c).await;
    // Post declares no idempotency level.
    let status = client.post(echo("post")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(script.calls(), 1);
    server.stop().await;
}

#[tokio::test]
async fn the_caller_can_opt_in_to_retrying_a_method_with_side_effects() {
    let script = Scripted::failing(1, Code::Unavailable);
    let server = serve_echo(script.clone()).await;
    let mut client = echo_client(&[server.addr], |c| c).await;
    let mut request = tonic::Request::new(echo("post"));
    CallOptions {
        retry_side_effects: true,
        ..CallOptions::default()
    }
    .apply(&mut request);
    client.post(request).await.expect("retried on opt-in");
    assert_eq!(script.calls(), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_method_with_side_effects_is_retried_when_the_request_never_left() {
    let script = Scripted::failing(0, Code::Ok);
    let server = serve_echo(script.clone()).await;
    // A port where nothing listens: connections are refused.
    let dead = ClosedPort::new();
    let mut client = echo_client(&[dead.addr(), server.addr], |c| c).await;
    for i in 0..10 {
        client
            .post(echo(&format!("post {i}")))
            .await
            .expect("a refused connection is retried elsewhere");
    }
    assert_eq!(
        script.calls(),
        10,
        "each call reached the live server exactly once"
    );
    server.stop().await;
}

#[tokio::test]
async fn pushback_makes_resource_exhausted_retryable() {
    let mut script = Scripted::failing(1, Code::ResourceExhausted);
    script.pushback = Some("20");
    let server = serve_echo(script.clone()).await;
    let mut client = echo_client(&[server.addr], |c| c).await;
    client
        .put(echo("put"))
        .await
        .expect("retried after the pushback");
    assert_eq!(script.calls(), 2);
    server.stop().await;

    let plain = Scripted::failing(1, Code::ResourceExhausted);
    let server = serve_echo(plain.clone()).await;
    let mut client = echo_client(&[server.addr], |c| c).await;
    let status = client.put(echo("put")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(plain.calls(), 1, "no pushback: not retried");
    server.stop().await;
}

#[tokio::test]
async fn negative_pushback_stops_retries() {
    let mut script = Scripted::failing(usize::MAX, Code::Unavailable);
    script.pushback = Some("-1");
    let server = serve_echo(script.clone()).await;
    let mut client = echo_client(&[server.addr], |c| c).await;
    client.put(echo("put")).await.unwrap_err();
    assert_eq!(script.calls(), 1);
    server.stop().await;
}

#[tokio::test]
async fn throttling_stops_retries_during_an_outage() {
    let script = Scripted::failing(usize::MAX, Code::Unavailable);
    let server = serve_echo(script.clone()).await;
    // Breakers off, so that only the throttle limits the attempts.
    let mut client = echo_client(&[server.addr], |c| c.breaker(None)).await;
    let calls = 100;
    for _ in 0..calls {
        client.put(echo("outage")).await.unwrap_err();
    }
    // Without throttling the server would see 4 attempts a call (400).
    // The bucket (10 tokens, retries only above 5) allows a handful of
    // retries, then none: the added load stays near zero.
    let seen = script.calls();
    assert!(
        (calls..calls + 10).contains(&seen),
        "the server saw {seen} attempts for {calls} calls"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_service_config_overrides_the_contract() {
    let script = Scripted::failing(usize::MAX, Code::Aborted);
    let server = serve_echo(script.clone()).await;
    let json = r#"{"methodConfig": [{"name": [{"service": "echo.v1.Echo", "method": "Put"}],
        "retryPolicy": {"maxAttempts": 2, "initialBackoff": "0.01s", "maxBackoff": "0.01s",
                        "backoffMultiplier": 1, "retryableStatusCodes": ["ABORTED"]}}]}"#;
    let mut client = echo_client(&[server.addr], |c| c.service_config_json(json).unwrap()).await;
    client.put(echo("put")).await.unwrap_err();
    assert_eq!(
        script.calls(),
        2,
        "ABORTED retried once, as the service config says"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_invalid_service_config_names_the_field() {
    let json = r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 1}}]}"#;
    let error = ClientConfig::endpoint("http://127.0.0.1:1")
        .service_config_json(json)
        .unwrap_err();
    assert!(
        error.to_string().contains("methodConfig[0].retryPolicy"),
        "{error}"
    );
}

#[tokio::test]
async fn retries_stay_within_the_deadline() {
    let script = Scripted::failing(usize::MAX, Code::Unavailable);
    let server = serve_echo(script.clone()).await;
    let json = r#"{"methodConfig": [{"name": [{"service": "echo.v1.Echo", "method": "Put"}],
        "timeout": "0.3s",
        "retryPolicy": {"maxAttempts": 5, "initialBackoff": "1s", "maxBackoff": "1s",
                        "backoffMultiplier": 1, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#;
    let mut client = echo_client(&[server.addr], |c| c.service_config_json(json).unwrap()).await;
    let started = std::time::Instant::now();
    client.put(echo("put")).await.unwrap_err();
    // A backoff of up to 1s never starts past the 0.3s deadline.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(script.calls() < 5, "saw {}", script.calls());
    server.stop().await;
}
