//! What each client resilience layer costs per call, on its own.
//!
//! Every layer wraps the same trivial inner service, a `tower::service_fn`
//! that answers at once with an empty, trailers-only response carrying
//! `grpc-status: 0`, so the time is the layer's own work. `baseline/inner`
//! is that inner service alone: subtract it from the others.
//!
//! - `breaker/closed`: a call through a closed [`Breaker`]: admission under
//!   its lock, and the outcome recorded from the response headers.
//! - `breaker/open`: a call refused by an open breaker (tripped by one
//!   failure, an hour's recovery timeout): the fail-fast path, with the
//!   `UNAVAILABLE` status and its `BreakerOpen` cause built and dropped.
//!   The inner service is never called.
//! - `bulkhead/acquire`: a call through a [`Bulkhead`] that takes a free
//!   slot at once and gives it back when the response arrives.
//! - `retry/no_policy`: a request without a `CallPolicy`, which [`Retry`]
//!   passes through.
//! - `retry/decision`: a unary call whose policy retries (an idempotent
//!   method, `RetryPolicy::DEFAULT`) and which succeeds first time: the
//!   request message buffered for replay, the attempt's request copied,
//!   the outcome classified, the throttle credited.
//! - `retry/decision_failure`: the same, but the attempt fails with a code
//!   the policy does not retry (`INTERNAL`): the failure classified and
//!   the decision to give up taken, with no backoff waited.
//! - `deadline/propagation`: a call through [`ClientDeadline`] with no
//!   timeout of its own, made inside [`Deadline::scope`]: the inherited
//!   deadline read, `grpc-timeout` and `CallDeadline` set, the response
//!   future bounded and the body wrapped.
//!
//! A timed call is what a client does: `ready`, `call`, await the response
//! future, drop the response. Requests (a 21-byte unary message, gRPC
//! headers, and the `CallPolicy` for the retry cases) are built beforehand,
//! untimed. Everything runs on a current-thread tokio runtime, with the
//! timer on for the deadline layer; no call ever waits.
//!
//! Run with: `cargo bench --bench layers` (about half a minute once
//! compiled; add `-- breaker` for one group).

use std::{
    convert::Infallible,
    fmt,
    future::{Ready, ready},
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderName, HeaderValue, Method, Uri};
use http_body_util::Full;
use sinew::{
    BoxError,
    client::{
        BreakerOpen, CallPolicy, RetryPolicy, Rng,
        breaker::{Breaker, BreakerConfig, BreakerHandle, State},
        bulkhead::{Bulkhead, BulkheadConfig},
        cause,
        deadline::{ClientDeadline, ClientDeadlineLayer},
        retry::{Attempts, Retry, RetryLayer, RetryThrottle},
    },
    contract::Idempotency,
    server::Deadline,
};
use tokio::runtime::Runtime;
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt, service_fn};

const PATH: &str = "/bench.v1.Echo/Say";
const URI: &str = "http://127.0.0.1:50051/bench.v1.Echo/Say";
/// A unary request as it goes on the wire: the 5-byte gRPC frame header
/// (uncompressed, length 16) and the message.
const MESSAGE: &[u8] = b"\x00\x00\x00\x00\x10hello, benchmark";
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// Requests built ahead of each stretch of timed calls: enough to make the
/// untimed pauses rare, few enough to stay in cache.
const CHUNK: u64 = 1024;

type Request = http::Request<Body>;
type Response = http::Response<Body>;

/// The inner service: answers every call at once, trailers-only, with
/// `grpc-status: <status>`.
fn answering(
    status: &'static str,
) -> impl Service<
    Request,
    Response = Response,
    Error = Infallible,
    Future = Ready<Result<Response, Infallible>>,
> + Clone
+ Send
+ 'static {
    service_fn(move |_: Request| {
        let mut response = http::Response::new(Body::empty());
        response
            .headers_mut()
            .insert(GRPC_STATUS, HeaderValue::from_static(status));
        ready(Ok(response))
    })
}

/// A unary call as a generated client hands it to the layers.
fn plain_request() -> Request {
    let mut request = http::Request::new(Body::new(Full::new(Bytes::from_static(MESSAGE))));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::from_static(URI);
    let headers = request.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("te", HeaderValue::from_static("trailers"));
    request
}

/// The same call, with a policy that retries it on `UNAVAILABLE`.
fn retried_request() -> Request {
    let mut request = plain_request();
    request.extensions_mut().insert(CallPolicy {
        idempotency: Idempotency::Idempotent,
        retry: Some(RetryPolicy::DEFAULT),
        ..CallPolicy::unknown(PATH)
    });
    request
}

/// Makes `iters` calls through `service`, one after the other, and returns
/// the time they took, leaving out the time to build their requests.
async fn time_calls<S, B>(service: &mut S, iters: u64, make: fn() -> Request) -> Duration
where
    S: Service<Request, Response = http::Response<B>>,
    S::Error: fmt::Debug,
{
    let mut elapsed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let requests: Vec<Request> = (0..n).map(|_| make()).collect();
        let start = Instant::now();
        for request in requests {
            let service = service.ready().await.expect("the services here are ready");
            // Dropped inside the timing: a layer may keep its slot or
            // ticket in the response body until then.
            drop(black_box(service.call(request).await));
        }
        elapsed += start.elapsed();
        left -= n;
    }
    elapsed
}

/// Benchmarks calls through `service` (a clone of it per sample; clones
/// share the layer's state), inside `inherited`'s scope if there is one.
fn bench_calls<S, B>(
    c: &mut Criterion,
    runtime: &Runtime,
    id: &str,
    service: &S,
    make: fn() -> Request,
    inherited: Option<Deadline>,
) where
    S: Service<Request, Response = http::Response<B>> + Clone,
    S::Error: fmt::Debug,
{
    c.bench_function(id, |b| {
        b.to_async(runtime).iter_custom(|iters| {
            let mut service = service.clone();
            async move {
                let calls = time_calls(&mut service, iters, make);
                match inherited {
                    Some(deadline) => deadline.scope(calls).await,
                    None => calls.await,
                }
            }
        });
    });
}

/// Makes one call, for the checks that each benchmark takes the path it
/// means to.
fn call_once<S, B>(
    runtime: &Runtime,
    service: S,
    request: Request,
) -> Result<http::Response<B>, BoxError>
where
    S: Service<Request, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
{
    runtime
        .block_on(service.oneshot(request))
        .map_err(Into::into)
}

fn grpc_status<B>(response: &http::Response<B>) -> &str {
    response.headers()[GRPC_STATUS]
        .to_str()
        .expect("an ASCII status")
}

fn baseline(c: &mut Criterion, runtime: &Runtime) {
    bench_calls(
        c,
        runtime,
        "baseline/inner",
        &answering("0"),
        plain_request,
        None,
    );
}

fn breaker(c: &mut Criterion, runtime: &Runtime) {
    let closed = Breaker::new(answering("0"), BreakerConfig::default());
    let response = call_once(runtime, closed.clone(), plain_request()).expect("an answer");
    assert_eq!(grpc_status(&response), "0");
    assert_eq!(closed.handle().state(), State::Closed);
    bench_calls(c, runtime, "breaker/closed", &closed, plain_request, None);
    assert_eq!(closed.handle().state(), State::Closed);

    // One UNAVAILABLE trips it, and it stays open for the whole run.
    let handle = BreakerHandle::new(BreakerConfig {
        consecutive_failures: 1,
        recovery_timeout: Duration::from_secs(3600),
        ..BreakerConfig::default()
    });
    let failing = Breaker::with_handle(answering("14"), handle.clone());
    call_once(runtime, failing, plain_request()).expect("an answer");
    assert_eq!(handle.state(), State::Open);
    let open = Breaker::with_handle(answering("0"), handle.clone());
    let error = call_once(runtime, open.clone(), plain_request()).expect_err("a refusal");
    let status = error.downcast::<tonic::Status>().expect("a status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(cause::<BreakerOpen>(&status).is_some());
    bench_calls(c, runtime, "breaker/open", &open, plain_request, None);
    assert_eq!(handle.state(), State::Open);
}

fn bulkhead(c: &mut Criterion, runtime: &Runtime) {
    let bulkhead = Bulkhead::new(answering("0"), BulkheadConfig::default());
    call_once(runtime, bulkhead.clone(), plain_request()).expect("an answer");
    assert_eq!(bulkhead.limits().in_flight(), 0);
    bench_calls(
        c,
        runtime,
        "bulkhead/acquire",
        &bulkhead,
        plain_request,
        None,
    );
    assert_eq!(bulkhead.limits().in_flight(), 0);
    assert_eq!(bulkhead.limits().queued(), 0);
}

fn retry(c: &mut Criterion, runtime: &Runtime) {
    // One throttle and a seeded jitter source, as a client per target has.
    let layer = RetryLayer::new(Some(RetryThrottle::default()), Arc::new(Rng::seeded(1)));
    let succeeding: Retry<_> = layer.layer(answering("0"));
    bench_calls(
        c,
        runtime,
        "retry/no_policy",
        &succeeding,
        plain_request,
        None,
    );

    let response = call_once(runtime, succeeding.clone(), retried_request()).expect("an answer");
    assert_eq!(response.extensions().get(), Some(&Attempts(1)));
    bench_calls(
        c,
        runtime,
        "retry/decision",
        &succeeding,
        retried_request,
        None,
    );

    // INTERNAL is not in the policy's codes: classified, given up on at
    // once, and the throttle is left alone.
    let failing: Retry<_> = layer.layer(answering("13"));
    let response = call_once(runtime, failing.clone(), retried_request()).expect("an answer");
    assert_eq!(grpc_status(&response), "13");
    assert_eq!(response.extensions().get(), Some(&Attempts(1)));
    bench_calls(
        c,
        runtime,
        "retry/decision_failure",
        &failing,
        retried_request,
        None,
    );
    let throttle = layer.throttle().expect("throttling is on");
    assert_eq!(
        throttle.tokens(),
        f64::from(RetryThrottle::DEFAULT_MAX_TOKENS)
    );
}

fn deadline(c: &mut Criterion, runtime: &Runtime) {
    let layer = ClientDeadlineLayer::new(None);
    // Far enough ahead that no call in the run comes near it.
    let inherited = Deadline::at(tokio::time::Instant::now() + Duration::from_secs(3600));

    // Echoes the grpc-timeout it was sent, to show that one was.
    let checking = layer.layer(service_fn(|request: Request| {
        let mut response = http::Response::new(Body::empty());
        if let Some(timeout) = request.headers().get("grpc-timeout") {
            response
                .headers_mut()
                .insert("grpc-timeout", timeout.clone());
        }
        ready(Ok::<_, Infallible>(response))
    }));
    let response = runtime
        .block_on(inherited.scope(checking.oneshot(plain_request())))
        .expect("an answer");
    assert!(response.headers().contains_key("grpc-timeout"));

    let propagating: ClientDeadline<_> = layer.layer(answering("0"));
    bench_calls(
        c,
        runtime,
        "deadline/propagation",
        &propagating,
        plain_request,
        Some(inherited),
    );
}

fn layers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    baseline(c, &runtime);
    breaker(c, &runtime);
    bulkhead(c, &runtime);
    retry(c, &runtime);
    deadline(c, &runtime);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = layers
}
criterion_main!(benches);
