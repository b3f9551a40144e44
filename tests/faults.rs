//! Fault injection, the way users rehearse failure: on the server from its
//! settings, and on the client from its config, where injected failures
//! meet the same retries real ones do.

mod common;

use std::time::Duration;

use common::{Running, Scripted, UnaryEcho, echo, echo_client, serve_echo};
use sinew::{Server, fault::FaultConfig, server::ServerConfig};
use sinew_workspace::proto::echo::v1::echo_server::EchoServer;
use tonic::Code;

async fn faulty_server(faults: &str, script: Scripted) -> Running {
    let config = ServerConfig::new()
        .lame_duck(Duration::ZERO)
        .faults(faults.to_owned());
    Running::start(
        Server::new("faulty")
            .config(config)
            .add_service(EchoServer::new(UnaryEcho(script))),
    )
    .await
}

#[tokio::test]
async fn server_side_errors_hit_only_the_targeted_method() {
    let script = Scripted::failing(0, Code::Ok);
    let server = faulty_server("/echo.v1.Echo/Post error=DATA_LOSS", script.clone()).await;
    let mut client = echo_client(&[server.addr], |c| c).await;
    let status = client.post(echo("post")).await.unwrap_err();
    assert_eq!(status.code(), Code::DataLoss);
    assert_eq!(status.message(), "injected fault");
    client
        .put(echo("put"))
        .await
        .expect("other methods are untouched");
    assert_eq!(
        script.calls(),
        1,
        "the faulted call never reached the handler"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_server_side_abort_fails_the_call_and_the_server_keeps_serving() {
    let script = Scripted::failing(0, Code::Ok);
    let server = faulty_server("/echo.v1.Echo/Post abort", script.clone()).await;
    let mut client = echo_client(&[server.addr], |c| c).await;
    let status = client.post(echo("post")).await.unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    client
        .put(echo("put"))
        .await
        .expect("the server keeps serving");
    server.stop().await;
}

#[tokio::test]
async fn server_side_latency_meets_the_deadline() {
    let script = Scripted::failing(0, Code::Ok);
    let server = faulty_server("/echo.v1.Echo/Get latency=2s", script.clone()).await;
    let mut client = echo_client(&[server.addr], |c| c).await;
    // Get's contract timeout is 250ms.
    let status = client.get(echo("slow")).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn client_side_faults_are_retried_like_real_failures() {
    let script = Scripted::failing(0, Code::Ok);
    let server = serve_echo(script.clone()).await;
    let faults = FaultConfig::parse("/echo.v1.Echo/Put error=UNAVAILABLE p=0.5; seed=3").unwrap();
    // Throttling off: here every injected failure should meet its retries.
    let mut client = echo_client(&[server.addr], |c| {
        c.fault(faults).breaker(None).retry_throttling(None)
    })
    .await;
    let mut succeeded = 0;
    for i in 0..20 {
        if client.put(echo(&format!("{i}"))).await.is_ok() {
            succeeded += 1;
        }
    }
    // Each success is one attempt that got past the fault to the server;
    // retries turned most injected failures into successes.
    assert_eq!(script.calls(), succeeded);
    assert!(succeeded >= 15, "only {succeeded} of 20 calls succeeded");
    server.stop().await;
}

#[tokio::test]
async fn an_invalid_fault_setting_stops_the_server_naming_the_key() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::new("bad")
        .config(ServerConfig::new().faults("/echo.v1.Echo/Get error=NOPE".to_owned()))
        .add_service(EchoServer::new(UnaryEcho(Scripted::failing(0, Code::Ok))));
    let error = server
        .serve_with_listener(listener, std::future::ready(()))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("faults"), "{error}");
}
