use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::{BoxError, fault::InjectedFault};

/// An inner service that answers OK and counts its calls.
fn counting() -> (
    impl Service<
        http::Request<()>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let service = service_fn(move |_: http::Request<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(http::Response::new(Body::empty())) }
    });
    (service, calls)
}

fn request(path: &str) -> http::Request<()> {
    http::Request::builder().uri(path).body(()).unwrap()
}

fn faults(spec: &str) -> FaultLayer {
    FaultLayer::new(FaultConfig::parse(spec).unwrap())
}

/// The gRPC status a response carries in its headers (trailers-only), if
/// any.
fn status(response: &http::Response<Body>) -> Option<Status> {
    Status::from_header_map(response.headers())
}

async fn call<S>(service: &mut S, path: &str) -> Result<http::Response<Body>, BoxError>
where
    S: Service<http::Request<()>, Response = http::Response<Body>, Error = BoxError>,
{
    service.ready().await?.call(request(path)).await
}

#[tokio::test]
async fn an_error_rule_answers_the_code_without_calling_inner() {
    let (inner, calls) = counting();
    let mut service = faults("/echo.v1.Echo/Get error=UNAVAILABLE").layer(inner);

    let response = call(&mut service, "/echo.v1.Echo/Get").await.unwrap();
    let status = status(&response).expect("a trailers-only status");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "injected fault");
    assert_eq!(
        response.headers()["content-type"],
        "application/grpc",
        "a gRPC response"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_latency_rule_delays_the_call_by_exactly_its_duration() {
    let started = Instant::now();
    let called_at = Arc::new(std::sync::Mutex::new(None));
    let record = Arc::clone(&called_at);
    let inner = service_fn(move |_: http::Request<()>| {
        *record.lock().unwrap() = Some(Instant::now());
        async { Ok::<_, Infallible>(http::Response::new(Body::empty())) }
    });
    let mut service = faults("* latency=100ms").layer(inner);

    let future = service.ready().await.unwrap().call(request("/a.S/M"));
    let mut future = std::pin::pin!(future);
    // Not yet called just before the delay is over...
    assert!(
        tokio::time::timeout(Duration::from_millis(99), &mut future)
            .await
            .is_err()
    );
    assert_eq!(*called_at.lock().unwrap(), None);
    // ...and called, then answered, exactly at it.
    let response = future.await.unwrap();
    assert!(status(&response).is_none());
    assert_eq!(
        called_at.lock().unwrap().map(|at| at - started),
        Some(Duration::from_millis(100))
    );
    assert_eq!(started.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_delayed_service_is_replaced_by_a_clone_that_still_serves() {
    let (inner, calls) = counting();
    let mut service = faults("/a.S/Slow latency=1s").layer(inner);
    let slow = service.ready().await.unwrap().call(request("/a.S/Slow"));
    // Another call goes through while the first one waits.
    call(&mut service, "/a.S/Fast").await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    slow.await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn abort_fails_with_the_injected_fault_cause_and_no_status() {
    let (inner, calls) = counting();
    let mut service = faults("* abort").layer(inner);

    let error = call(&mut service, "/a.S/M").await.unwrap_err();
    assert!(error.downcast_ref::<InjectedFault>().is_some(), "{error}");
    assert!(error.downcast_ref::<Status>().is_none());
    // tonic finds no status in it, so a server resets the stream.
    assert!(Status::try_from_error(error).is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn targets_pick_method_then_service_then_any_in_rule_order() {
    let (inner, calls) = counting();
    let mut service = faults(
        "/a.S/M error=NOT_FOUND; /a.S/ error=UNAVAILABLE; /b.T/Skip abort p=0; * error=INTERNAL",
    )
    .layer(inner);

    let mut code = async |path: &str| {
        let response = call(&mut service, path).await.unwrap();
        status(&response).map(|s| s.code())
    };
    assert_eq!(code("/a.S/M").await, Some(Code::NotFound));
    assert_eq!(code("/a.S/Other").await, Some(Code::Unavailable));
    assert_eq!(code("/a.SS/M").await, Some(Code::Internal));
    assert_eq!(code("/b.T/Skip").await, Some(Code::Internal));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn calls_no_rule_targets_pass_through() {
    let (inner, calls) = counting();
    let mut service = faults("/a.S/M error=UNAVAILABLE; /b.T/ abort").layer(inner);
    for path in ["/a.S/N", "/a.SS/M", "/c.U/M", "/b.TT/M"] {
        let response = call(&mut service, path).await.unwrap();
        assert!(status(&response).is_none(), "{path}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn an_empty_config_injects_nothing() {
    let (inner, calls) = counting();
    let mut service = Fault::new(inner, FaultConfig::default());
    for _ in 0..10 {
        let response = call(&mut service, "/a.S/M").await.unwrap();
        assert!(status(&response).is_none());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 10);
}

/// Faults among 1000 calls with p=0.3 and a fixed seed.
async fn faults_in_a_thousand(seed: u64) -> usize {
    let (inner, calls) = counting();
    let mut service = faults(&format!("* error=UNAVAILABLE p=0.3; seed={seed}")).layer(inner);
    let mut faults = 0;
    for _ in 0..1000 {
        let response = call(&mut service, "/a.S/M").await.unwrap();
        if status(&response).is_some() {
            faults += 1;
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1000 - faults);
    faults
}

#[tokio::test]
async fn a_fixed_seed_fixes_which_calls_fail() {
    let first = faults_in_a_thousand(42).await;
    let second = faults_in_a_thousand(42).await;
    assert_eq!(first, second);
    assert!((250..350).contains(&first), "{first} faults");
    let other = faults_in_a_thousand(43).await;
    assert!((250..350).contains(&other), "{other} faults");
}

#[tokio::test]
async fn clones_and_layered_services_share_one_random_source() {
    // Two services from one layer draw from one sequence: alternating
    // calls between them pick what one service alone would.
    let layer = faults("* error=UNAVAILABLE p=0.5; seed=9");
    let (inner, _) = counting();
    let mut a = layer.layer(inner.clone());
    let mut b = layer.layer(inner.clone());
    let mut shared = Vec::new();
    for i in 0..64 {
        let service = if i % 2 == 0 { &mut a } else { &mut b };
        shared.push(status(&call(service, "/a.S/M").await.unwrap()).is_some());
    }
    let mut alone = faults("* error=UNAVAILABLE p=0.5; seed=9").layer(inner);
    let mut single = Vec::new();
    for _ in 0..64 {
        single.push(status(&call(&mut alone, "/a.S/M").await.unwrap()).is_some());
    }
    assert_eq!(shared, single);
}

#[test]
fn a_fault_service_boxes_as_a_send_sync_clone_service() {
    // What a client's stack needs of every layer in it.
    let (inner, _) = counting();
    let service = faults("* latency=1ms").layer(inner);
    let _boxed: tower::util::BoxCloneSyncService<
        http::Request<()>,
        http::Response<Body>,
        BoxError,
    > = tower::util::BoxCloneSyncService::new(service);
}
