//! Load balancing through the generated client over real servers: calls
//! spread across endpoints, a dead endpoint is ejected, and it takes calls
//! again once it recovers.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{Running, Scripted, UnaryEcho, echo, echo_client};
use sinew::{
    Server,
    client::{balance::ReconnectBackoff, breaker::BreakerConfig},
    server::ServerConfig,
};
use sinew_workspace::proto::echo::v1::echo_server::EchoServer;
use tokio::net::TcpListener;
use tonic::Code;

async fn serve_on(addr: SocketAddr, script: Scripted) -> Running {
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = Server::new("balanced")
        .config(ServerConfig::new().lame_duck(Duration::ZERO))
        .add_service(EchoServer::new(UnaryEcho(script)));
    Running::start_on(listener, server)
}

#[tokio::test]
async fn calls_spread_across_endpoints() {
    let (a, b) = (
        Scripted::failing(0, Code::Ok),
        Scripted::failing(0, Code::Ok),
    );
    let server_a = serve_on("127.0.0.1:0".parse().unwrap(), a.clone()).await;
    let server_b = serve_on("127.0.0.1:0".parse().unwrap(), b.clone()).await;
    let mut client = echo_client(&[server_a.addr, server_b.addr], |c| c).await;
    // Each call takes 40ms on either server, so that the two latency
    // estimates stay within the factor of two in which the balancer
    // compares calls outstanding alone, whatever the noise of a busy host
    // adds to one call (a 1ms answer that took 5ms once would be avoided).
    for i in 0..40 {
        let mut request = echo(&format!("{i}"));
        request.delay_ms = 40;
        client.post(request).await.unwrap();
    }
    assert_eq!(a.calls() + b.calls(), 40);
    assert!(
        a.calls() >= 5 && b.calls() >= 5,
        "a {} b {}",
        a.calls(),
        b.calls()
    );
    server_a.stop().await;
    server_b.stop().await;
}

#[tokio::test]
async fn a_dead_endpoint_is_ejected_and_returns_when_it_recovers() {
    let (a, b) = (
        Scripted::failing(0, Code::Ok),
        Scripted::failing(0, Code::Ok),
    );
    let server_a = serve_on("127.0.0.1:0".parse().unwrap(), a.clone()).await;
    let server_b = serve_on("127.0.0.1:0".parse().unwrap(), b.clone()).await;
    let addr_b = server_b.addr;
    let mut client = echo_client(&[server_a.addr, addr_b], |c| {
        c.breaker(BreakerConfig {
            consecutive_failures: 2,
            recovery_timeout: Duration::from_millis(100),
            ..BreakerConfig::default()
        })
        .reconnect_backoff(ReconnectBackoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(100),
        })
    })
    .await;
    for _ in 0..10 {
        client.put(echo("warm")).await.unwrap();
    }
    assert!(b.calls() > 0);

    // B goes away. Every call still succeeds: refused connections are
    // retried on A, and B is ejected.
    server_b.stop().await;
    for i in 0..30 {
        client
            .put(echo(&format!("during {i}")))
            .await
            .expect("A takes the calls while B is down");
    }

    // B comes back on the same address; after its backoff it takes calls again.
    let b_again = Scripted::failing(0, Code::Ok);
    let server_b = serve_on(addr_b, b_again.clone()).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    for i in 0..40 {
        client.put(echo(&format!("after {i}"))).await.unwrap();
    }
    assert!(b_again.calls() > 0, "B takes calls again once it recovered");
    server_a.stop().await;
    server_b.stop().await;
}
