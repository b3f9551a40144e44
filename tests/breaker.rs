//! The circuit breaker through the generated client: it opens on an
//! unhealthy server, fails fast with a typed cause, half-opens after the
//! recovery timeout, and closes once probes succeed.

mod common;

use std::time::Duration;

use common::{Scripted, echo, echo_client, serve_echo};
use sinew::client::{BreakerOpen, breaker::BreakerConfig, cause};
use tonic::Code;

fn breaker() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        // Real sockets, real time: long enough that a stalled host does not
        // half-open the breaker while a test still expects it open.
        recovery_timeout: Duration::from_secs(2),
        half_open_probes: 1,
        close_after: 2,
        ..BreakerConfig::default()
    }
}

#[tokio::test]
async fn opens_fails_fast_half_opens_and_closes() {
    // The server fails its first 3 calls with INTERNAL, then recovers.
    let script = Scripted::failing(3, Code::Internal);
    let server = serve_echo(script.clone()).await;
    let mut client = echo_client(&[server.addr], |c| c.breaker(breaker())).await;

    for _ in 0..3 {
        let status = client.post(echo("x")).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal);
    }
    assert_eq!(script.calls(), 3);

    // Open: calls fail at once, with a cause the caller can detect, and
    // the server sees nothing.
    for _ in 0..5 {
        let status = client.post(echo("x")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(cause::<BreakerOpen>(&status).is_some(), "{status:?}");
    }
    assert_eq!(script.calls(), 3, "an open breaker sends nothing");

    // After the recovery timeout, probes go through; two successes close it.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    client.post(echo("probe 1")).await.expect("the first probe");
    client
        .post(echo("probe 2"))
        .await
        .expect("the second probe");
    for i in 0..5 {
        client
            .post(echo(&format!("closed {i}")))
            .await
            .expect("closed again");
    }
    assert_eq!(script.calls(), 10);
    server.stop().await;
}

#[tokio::test]
async fn answers_that_blame_the_caller_do_not_open_it() {
    let script = Scripted::failing(10, Code::InvalidArgument);
    let server = serve_echo(script.clone()).await;
    let mut client = echo_client(&[server.addr], |c| c.breaker(breaker())).await;
    for _ in 0..10 {
        let status = client.post(echo("bad")).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    assert_eq!(script.calls(), 10, "every call reached the server");
    client.post(echo("good")).await.expect("still closed");
    server.stop().await;
}

#[tokio::test]
async fn a_failing_probe_reopens_it() {
    let script = Scripted::failing(4, Code::Unavailable);
    let server = serve_echo(script.clone()).await;
    let mut client = echo_client(&[server.addr], |c| c.breaker(breaker()).retry(None)).await;
    for _ in 0..3 {
        client.post(echo("x")).await.unwrap_err();
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The probe fails (the server's 4th call): open again at once.
    let status = client.post(echo("probe")).await.unwrap_err();
    assert!(
        cause::<BreakerOpen>(&status).is_none(),
        "the probe reached the server"
    );
    let status = client.post(echo("after")).await.unwrap_err();
    assert!(
        cause::<BreakerOpen>(&status).is_some(),
        "reopened: {status:?}"
    );
    assert_eq!(script.calls(), 4);
    server.stop().await;
}
