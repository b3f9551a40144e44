//! The resilient client against real servers behind a fault-injecting TCP
//! proxy (`sinew_testing::ChaosProxy`): an endpoint that goes silent, one
//! that accepts connections and never answers, a server restarted behind
//! the client, a link that drops under a call, and one that flaps.
//!
//! Loopback only, every loop bounded. The waits are real (the faults are
//! on real sockets), and each test's bounds are far from what it proves:
//! a call that waits out a deadline it should not have is seconds, not
//! milliseconds, late.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{Running, Scripted, UnaryEcho, echo, echo_client};
use sinew::{
    Server,
    client::{BreakerOpen, ConnectFailed, NoEndpoint, breaker::BreakerConfig, cause},
    server::ServerConfig,
};
use sinew_testing::{ChaosProxy, Fault};
use sinew_workspace::proto::echo::v1::echo_server::EchoServer;
use tokio::{net::TcpListener, time::Instant};
use tonic::Code;

async fn serve_on(addr: SocketAddr, script: Scripted) -> Running {
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = Server::new("chaos")
        .config(ServerConfig::new().lame_duck(Duration::ZERO))
        .add_service(EchoServer::new(UnaryEcho(script)));
    Running::start_on(listener, server)
}

async fn serve() -> Running {
    serve_on(
        "127.0.0.1:0".parse().unwrap(),
        Scripted::failing(0, Code::Ok),
    )
    .await
}

/// An echo request the server answers after 20ms: with both endpoints
/// that slow, neither looks faster than the other by the proxy's hop, and
/// calls are shared between them.
fn slowish(message: &str) -> sinew_workspace::proto::echo::v1::EchoRequest {
    let mut request = echo(message);
    request.delay_ms = 20;
    request
}

#[tokio::test]
async fn with_one_of_two_endpoints_silent_calls_go_to_the_other() {
    let (live_script, proxied_script) = (
        Scripted::failing(0, Code::Ok),
        Scripted::failing(0, Code::Ok),
    );
    let live = serve_on("127.0.0.1:0".parse().unwrap(), live_script.clone()).await;
    let behind = serve_on("127.0.0.1:0".parse().unwrap(), proxied_script.clone()).await;
    let mut proxy = ChaosProxy::start(behind.addr).await;
    let mut client = echo_client(&[live.addr, proxy.addr()], |c| {
        c.timeout(Duration::from_millis(300))
    })
    .await;
    // Both endpoints connected and answering.
    for _ in 0..20 {
        client.post(slowish("warm")).await.unwrap();
    }
    assert!(proxied_script.calls() > 0 && live_script.calls() > 0);

    // The proxied endpoint stops answering, with no FIN and no reset: its
    // connection stays open, and nothing comes back on it.
    proxy.set(Fault::Silent);
    let mut failed = Vec::new();
    for i in 0..60 {
        if let Err(status) = client.post(slowish(&format!("{i}"))).await {
            // The watchdog fails the silent connection before the deadline
            // (`Post` may have side effects, so it is not retried); on a
            // busy host the deadline may come first.
            assert!(
                matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
                "{status:?}"
            );
            failed.push(i);
        }
    }
    // The first call that timed out there made it look slow: the balancer
    // passes it over (choosing by calls outstanding alone, about half the
    // calls failed).
    assert!(!failed.is_empty(), "the silent endpoint was never drawn");
    assert!(failed.len() <= 3, "failed: {failed:?}");
    let late_failures = failed.iter().filter(|i| **i >= 20).count();
    assert!(
        late_failures <= 2,
        "at least 95% of the last 40 calls succeed: failed {failed:?}"
    );
    // Its connection closes, so the server's drain need not wait for it.
    proxy.set(Fault::Drop);
    live.stop().await;
    behind.stop().await;
}

#[tokio::test]
async fn a_call_waiting_on_a_silent_connection_is_retried_elsewhere_in_time() {
    let (live_script, proxied_script) = (
        Scripted::failing(0, Code::Ok),
        Scripted::failing(0, Code::Ok),
    );
    let live = serve_on("127.0.0.1:0".parse().unwrap(), live_script.clone()).await;
    let behind = serve_on("127.0.0.1:0".parse().unwrap(), proxied_script.clone()).await;
    let mut proxy = ChaosProxy::start(behind.addr).await;
    let mut client = echo_client(&[live.addr, proxy.addr()], |c| c).await;
    for _ in 0..20 {
        client.put(slowish("warm")).await.unwrap();
    }
    assert!(proxied_script.calls() > 0 && live_script.calls() > 0);
    let before = proxied_script.calls();

    // `Put` is idempotent, with a 1s timeout from its contract. The call
    // that waits on the silent connection sees it probed a third of the
    // way to its deadline; the probe connect gets no SETTINGS, so the
    // connection is closed and the call fails UNAVAILABLE, which is
    // retried on the live endpoint with the time left.
    proxy.set(Fault::Silent);
    for i in 0..30 {
        client
            .put(slowish(&format!("{i}")))
            .await
            .expect("no call waits out its deadline on the silent endpoint");
    }
    assert_eq!(
        proxied_script.calls(),
        before,
        "nothing got through the proxy"
    );
    proxy.set(Fault::Drop);
    live.stop().await;
    behind.stop().await;
}

#[tokio::test]
async fn an_endpoint_that_accepts_and_never_answers_is_a_failed_connect() {
    let live = serve().await;
    let behind = serve().await;
    let mut proxy = ChaosProxy::start(behind.addr).await;
    // Connections are accepted, and nothing comes back on them: not even
    // the server's SETTINGS.
    proxy.set(Fault::BlackHole);
    let mut client = echo_client(&[proxy.addr(), live.addr], |c| {
        c.timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_millis(200))
    })
    .await;
    let started = Instant::now();
    for i in 0..10 {
        client
            .get(echo(&format!("{i}")))
            .await
            .expect("the failed connect is retried on the live endpoint");
    }
    assert!(proxy.accepted() >= 1, "the black hole was tried");
    // Without the handshake in the connect timeout, the first call sent
    // there waits out its whole 10s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    live.stop().await;
    behind.stop().await;
}

#[tokio::test]
async fn a_black_holed_only_endpoint_fails_unavailable_connect_failed() {
    let behind = serve().await;
    let mut proxy = ChaosProxy::start(behind.addr).await;
    proxy.set(Fault::BlackHole);
    let mut client = echo_client(&[proxy.addr()], |c| {
        c.timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_millis(200))
            .retry(None)
    })
    .await;
    let status = client.post(echo("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // The failed connect, or (the transparent retry's answer) the endpoint
    // backing off after it.
    assert!(
        cause::<ConnectFailed>(&status).is_some() || cause::<NoEndpoint>(&status).is_some(),
        "{status:?}"
    );
    behind.stop().await;
}

#[tokio::test]
async fn a_restarted_server_is_called_again_as_soon_as_it_accepts_connections() {
    let script = Scripted::failing(0, Code::Ok);
    let server = serve_on("127.0.0.1:0".parse().unwrap(), script).await;
    let addr = server.addr;
    // A recovery timeout far longer than the test: only the reconnect can
    // half-open the breaker in time.
    let mut client = echo_client(&[addr], |c| {
        c.timeout(Duration::from_secs(2)).breaker(BreakerConfig {
            consecutive_failures: 3,
            recovery_timeout: Duration::from_secs(60),
            ..BreakerConfig::default()
        })
    })
    .await;
    client.post(echo("before")).await.unwrap();

    // The server goes away: calls fail (refused connects) until the
    // breaker opens.
    server.stop().await;
    let down = Instant::now();
    loop {
        let status = client.post(echo("down")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        if cause::<BreakerOpen>(&status).is_some() {
            break;
        }
        assert!(
            down.elapsed() < Duration::from_secs(15),
            "the breaker never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // It comes back on the same port. The connection is made again in the
    // background, which half-opens the breaker: calls succeed within the
    // reconnect backoff, not after the 60s recovery timeout.
    let again = Scripted::failing(0, Code::Ok);
    let server = serve_on(addr, again.clone()).await;
    let back = Instant::now();
    let mut succeeded = false;
    while back.elapsed() < Duration::from_secs(15) {
        if client.post(echo("after")).await.is_ok() {
            succeeded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(succeeded, "no call succeeded 15s after the restart");
    assert!(again.calls() >= 1);
    server.stop().await;
}

#[tokio::test]
async fn a_link_dropped_under_a_call_fails_it_unavailable() {
    let script = Scripted::failing(0, Code::Ok);
    let behind = serve_on("127.0.0.1:0".parse().unwrap(), script.clone()).await;
    let mut proxy = ChaosProxy::start(behind.addr).await;
    let client = echo_client(&[proxy.addr()], |c| {
        c.timeout(Duration::from_secs(10)).retry(None)
    })
    .await;
    let mut slow = echo("slow");
    slow.delay_ms = 2_000;
    let mut calling = client.clone();
    let call = tokio::spawn(async move { calling.post(slow).await });
    // Once the server is working on the call, the link drops.
    let sent = Instant::now();
    while script.calls() == 0 {
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "the call never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.set(Fault::Drop);
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    behind.stop().await;
}

#[tokio::test]
async fn after_a_flapping_link_settles_calls_succeed() {
    let behind = serve().await;
    let mut proxy = ChaosProxy::start(behind.addr).await;
    let mut client = echo_client(&[proxy.addr()], |c| c.timeout(Duration::from_millis(500))).await;
    proxy.set(Fault::Flap {
        up: Duration::from_millis(150),
        down: Duration::from_millis(150),
    });
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..40 {
        match client.post(echo("flap")).await {
            Ok(_) => ok += 1,
            Err(status) => {
                // Never UNKNOWN: a dropped connection is UNAVAILABLE.
                assert!(
                    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
                    "{status:?}"
                );
                failed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok > 0, "some calls got through while it was up");
    assert!(
        proxy.accepted() > 1,
        "the client reconnected: {failed} failed"
    );

    // The link settles: within the breaker's recovery (5s) and the
    // reconnect backoff, the client is back.
    proxy.set(Fault::Pass);
    let settled = Instant::now();
    let mut back = false;
    while settled.elapsed() < Duration::from_secs(15) {
        if client.post(echo("settled")).await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "no call succeeded 15s after the link settled");
    behind.stop().await;
}
