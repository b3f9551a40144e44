//! gRPC health checking on the scaffold: Check, Watch, List, readiness
//! probes and liveness, over real sockets.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Running, echo_server};
use sinew::{
    health::{
        LIVENESS, Probe, ServingStatus,
        proto::{HealthCheckRequest, HealthListRequest, health_client::HealthClient},
    },
    server::ServerConfig,
};
use tonic::{Code, transport::Channel};

const ECHO: &str = "echo.v1.Echo";

async fn check(client: &mut HealthClient<Channel>, service: &str) -> Result<ServingStatus, Code> {
    client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(|r| r.into_inner().status())
        .map_err(|s| s.code())
}

#[tokio::test]
async fn check_answers_overall_services_and_not_found() {
    let server = Running::echo().await;
    let mut client = HealthClient::new(server.channel().await);

    assert_eq!(check(&mut client, "").await, Ok(ServingStatus::Serving));
    assert_eq!(check(&mut client, ECHO).await, Ok(ServingStatus::Serving));
    assert_eq!(
        check(&mut client, LIVENESS).await,
        Ok(ServingStatus::Serving)
    );
    assert_eq!(
        check(&mut client, "no.such.Service").await,
        Err(Code::NotFound)
    );
    server.stop().await;
}

#[tokio::test]
async fn list_names_every_registered_service() {
    let server = Running::echo().await;
    let mut client = HealthClient::new(server.channel().await);
    let statuses = client
        .list(HealthListRequest {})
        .await
        .unwrap()
        .into_inner()
        .statuses;
    let mut names: Vec<&str> = statuses.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["", ECHO, LIVENESS]);
    assert!(
        statuses
            .values()
            .all(|s| s.status() == ServingStatus::Serving)
    );
    server.stop().await;
}

#[tokio::test]
async fn watch_streams_changes() {
    let server = Running::echo().await;
    let mut client = HealthClient::new(server.channel().await);
    let mut stream = client
        .watch(HealthCheckRequest {
            service: ECHO.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    server.health.set(ECHO, ServingStatus::NotServing);
    let next = stream.message().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    server.health.set(ECHO, ServingStatus::Serving);
    let next = stream.message().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::Serving);
    server.stop().await;
}

/// `request_timeout` ends every call but `Watch`, whose stream is meant to
/// last: one opened on a server with a 100ms ceiling still streams well
/// after it, while a server stream of the same age would have ended.
#[tokio::test]
async fn watch_outlives_the_request_timeout() {
    let server = Running::start(echo_server(
        ServerConfig::new()
            .lame_duck(Duration::ZERO)
            .grace_period(Duration::from_secs(1))
            .request_timeout(Duration::from_millis(100)),
    ))
    .await;
    let mut client = HealthClient::new(server.channel().await);
    let mut stream = client
        .watch(HealthCheckRequest {
            service: ECHO.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    // Three ceilings later, a change still arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.health.set(ECHO, ServingStatus::NotServing);
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the change arrives")
        .expect("the stream is still open");
    assert_eq!(next.unwrap().status(), ServingStatus::NotServing);
    server.stop().await;
}

#[tokio::test]
async fn watch_on_an_unknown_name_says_service_unknown_and_stays_open() {
    let server = Running::echo().await;
    let mut client = HealthClient::new(server.channel().await);
    let mut stream = client
        .watch(HealthCheckRequest {
            service: "late.Service".to_owned(),
        })
        .await
        .expect("Watch on an unknown name must not fail")
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::ServiceUnknown);

    // Still unknown to Check and List while only watched.
    assert_eq!(
        check(&mut client, "late.Service").await,
        Err(Code::NotFound)
    );

    // The stream stayed open: it reports the service once it exists.
    server.health.set("late.Service", ServingStatus::Serving);
    let next = stream.message().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::Serving);
    server.stop().await;
}

#[tokio::test]
async fn a_failing_probe_takes_readiness_down_but_not_liveness() {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let probe = Probe::new("dependency", move || {
        let ok = flag.load(Ordering::SeqCst);
        async move { if ok { Ok(()) } else { Err("dependency down") } }
    });
    let config = ServerConfig::new()
        .lame_duck(Duration::ZERO)
        .probe_interval(Duration::from_millis(20));
    let server = Running::start(echo_server(config).readiness(probe)).await;
    let mut client = HealthClient::new(server.channel().await);

    let mut overall = client
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // Wait for the probe's first round to report SERVING.
    while overall.message().await.unwrap().unwrap().status() != ServingStatus::Serving {}

    healthy.store(false, Ordering::SeqCst);
    let down = overall.message().await.unwrap().unwrap();
    assert_eq!(down.status(), ServingStatus::NotServing);
    assert_eq!(
        check(&mut client, ECHO).await,
        Ok(ServingStatus::NotServing)
    );
    assert_eq!(
        check(&mut client, LIVENESS).await,
        Ok(ServingStatus::Serving)
    );

    healthy.store(true, Ordering::SeqCst);
    let up = overall.message().await.unwrap().unwrap();
    assert_eq!(up.status(), ServingStatus::Serving);
    assert_eq!(check(&mut client, ECHO).await, Ok(ServingStatus::Serving));
    server.stop().await;
}
