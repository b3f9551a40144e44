//! Traces and metrics across three chained services, received by an
//! in-process OTLP collector: one trace, the right parent for every hop,
//! the retry visible on the span that retried, statuses and attributes as
//! the semantic conventions say, and the metrics with the right counts; a
//! stream ended by the server's deadline recorded as `DEADLINE_EXCEEDED`.
//!
//! Telemetry is process-wide, so this file holds one test.

mod common;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use common::{Running, Scripted, Unary, collector::Collector, echo, echo_client, serve_echo};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use sinew::{
    client::{CallOptions, breaker::BreakerConfig, bulkhead::BulkheadConfig},
    server::ServerConfig,
    telemetry::{TelemetryConfig, init_with},
};
use sinew_workspace::proto::echo::v1::{
    EchoClient, EchoReply, EchoRequest, echo_client::EchoClient as RawEchoClient,
};
use tokio::sync::Semaphore;
use tonic::{Code, Request, Response, Status};

/// Forwards `Put` to the next service with sinew's client.
#[derive(Clone)]
struct Relay {
    next: EchoClient,
}

#[tonic::async_trait]
impl Unary for Relay {
    async fn unary(
        &self,
        _method: &'static str,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        // A span of the handler's own, around its own work.
        tracing::info_span!("relay work").in_scope(|| tracing::info!("relaying"));
        // The deadline is the incoming call's alone: the contract's 1s for
        // Put does not start over at every hop.
        let mut next = Request::new(request.into_inner());
        CallOptions::timeout(Duration::from_secs(60)).apply(&mut next);
        self.next.clone().put(next).await
    }
}

/// Answers `hold` once the test adds a permit to the gate, anything else
/// at once.
#[derive(Clone)]
struct Gated(Arc<Semaphore>);

#[tonic::async_trait]
impl Unary for Gated {
    async fn unary(
        &self,
        _method: &'static str,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        let message = request.into_inner().message;
        if message == "hold" {
            let _permit = self
                .0
                .acquire()
                .await
                .map_err(|_| Status::aborted("the gate was closed"))?;
        }
        Ok(Response::new(EchoReply {
            message,
            payload: Vec::new(),
        }))
    }
}

async fn relay_to(next: SocketAddr) -> Running {
    let next = echo_client(&[next], |c| c).await;
    serve_echo(Relay { next }).await
}

/// The breakers of the endpoint on `port` counted in `state`, as last
/// exported.
fn breakers(c: &Collector, port: u16, state: &str) -> Option<f64> {
    c.latest_data_points("sinew.client.breaker.state")
        .iter()
        .find(|p| {
            p.int_attribute("network.peer.port") == Some(i64::from(port))
                && p.str_attribute("state") == Some(state)
        })
        .and_then(|p| p.value.as_f64())
}

/// Waits until `value` breakers of the endpoint on `port` are counted in
/// `state`; fails after 20s.
async fn breaker_reaches(collector: &Collector, port: u16, state: &str, value: f64) {
    let reached = collector
        .wait_for(
            |c| breakers(c, port, state) == Some(value),
            Duration::from_secs(20),
        )
        .await;
    assert!(
        reached,
        "expected {value} in {state} on port {port}; breaker states: {:?}",
        collector.latest_data_points("sinew.client.breaker.state")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_three_services_with_metrics() {
    let collector = Collector::start().await;
    let telemetry = init_with(
        TelemetryConfig::new("chain")
            .endpoint(collector.endpoint())
            .schedule_delay(Duration::from_millis(50))
            .metric_export_interval(Duration::from_millis(200)),
    )
    .expect("telemetry installs");

    // client -> A -> B -> C; C fails its first call, asking for a retry in
    // 5ms, so B's call retries.
    let mut c_script = Scripted::failing(1, Code::Unavailable);
    c_script.pushback = Some("5");
    let c = serve_echo(c_script.clone()).await;
    let b = relay_to(c.addr).await;
    let a = relay_to(b.addr).await;
    let mut client = echo_client(&[a.addr], |c| c).await;
    let reply = client.put(echo("traced")).await.expect("the chain answers");
    assert_eq!(reply.into_inner().message, "traced #2");
    assert_eq!(c_script.calls(), 2);

    // 3 client spans (test -> A, A -> B, B -> C) and 4 server spans (A, B,
    // and C twice).
    let arrived = collector
        .wait_for(
            |c| c.spans_named("echo.v1.Echo/Put").len() >= 7,
            Duration::from_secs(20),
        )
        .await;
    let spans = collector.spans_named("echo.v1.Echo/Put");
    assert!(arrived, "spans received: {:?}", collector.span_names());
    assert_eq!(spans.len(), 7);

    let trace_id = spans[0].trace_id();
    assert!(spans.iter().all(|s| s.trace_id() == trace_id), "one trace");

    let clients: Vec<_> = spans
        .iter()
        .filter(|s| s.kind() == SpanKind::Client)
        .collect();
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.kind() == SpanKind::Server)
        .collect();
    assert_eq!((clients.len(), servers.len()), (3, 4));
    let by_id: HashMap<String, _> = spans.iter().map(|s| (s.span_id(), s)).collect();
    let parent_kind = |s: &&_| {
        let s: &common::collector::ReceivedSpan = s;
        s.parent_span_id()
            .and_then(|p| by_id.get(&p))
            .map(|p| p.kind())
    };

    // The test's call is the root; every server span's parent is a client
    // span; every other client span's parent is the server span whose
    // handler made it.
    let roots: Vec<_> = clients
        .iter()
        .filter(|s| parent_kind(s).is_none())
        .collect();
    assert_eq!(roots.len(), 1, "one root");
    assert!(
        servers
            .iter()
            .all(|s| parent_kind(s) == Some(SpanKind::Client))
    );
    assert_eq!(
        clients
            .iter()
            .filter(|s| parent_kind(s) == Some(SpanKind::Server))
            .count(),
        2
    );

    // The call that retried is the client span with two server children,
    // and it shows the retry as an event.
    let retried = clients
        .iter()
        .find(|client| {
            servers
                .iter()
                .filter(|s| s.parent_span_id() == Some(client.span_id()))
                .count()
                == 2
        })
        .expect("B's call to C has both attempts as children");
    let retrying = retried
        .span
        .events
        .iter()
        .find(|e| e.name == "retrying")
        .unwrap_or_else(|| panic!("events: {:?}", retried.span.events));
    let event_attribute = |key: &str| {
        retrying
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|value| value.value.clone())
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    assert_eq!(event_attribute("attempt"), Some(Value::IntValue(2)));
    assert_eq!(event_attribute("pushback"), Some(Value::BoolValue(true)));
    assert_eq!(event_attribute("backoff_ms"), Some(Value::DoubleValue(5.0)));
    assert_eq!(
        event_attribute("transparent"),
        Some(Value::BoolValue(false))
    );

    // Attributes and statuses, per the RPC semantic conventions.
    for span in &spans {
        assert_eq!(span.str_attribute("rpc.system"), Some("grpc"));
        assert_eq!(span.str_attribute("rpc.service"), Some("echo.v1.Echo"));
        assert_eq!(span.str_attribute("rpc.method"), Some("Put"));
    }
    let failed: Vec<_> = servers
        .iter()
        .filter(|s| s.int_attribute("rpc.grpc.status_code") == Some(14))
        .collect();
    assert_eq!(failed.len(), 1, "C's first attempt failed UNAVAILABLE");
    assert_eq!(failed[0].status_code(), StatusCode::Error);
    assert!(servers.iter().all(|s| {
        s.str_attribute("network.peer.address") == Some("127.0.0.1")
            && s.int_attribute("network.peer.port")
                .is_some_and(|port| port > 0)
    }));
    assert!(
        clients
            .iter()
            .all(|s| s.str_attribute("server.address") == Some("127.0.0.1")),
        "{:?}",
        clients
            .iter()
            .map(|s| s.str_attribute("server.address"))
            .collect::<Vec<_>>()
    );
    let ok = spans
        .iter()
        .filter(|s| s.int_attribute("rpc.grpc.status_code") == Some(0))
        .count();
    assert_eq!(ok, 6);

    // The handlers' own `tracing` spans are children of their calls.
    let own = collector.spans_named("relay work");
    assert_eq!(own.len(), 2, "one per relay");
    for span in &own {
        assert_eq!(span.trace_id(), trace_id);
        let parent = span.parent_span_id().and_then(|p| by_id.get(&p).copied());
        assert_eq!(parent.map(|p| p.kind()), Some(SpanKind::Server));
    }

    // Metrics: durations per side, and the retry counted.
    let counted = |c: &Collector, name: &str| -> u64 {
        c.latest_data_points(name)
            .iter()
            .filter_map(|p| p.value.count())
            .sum()
    };
    let metrics_arrived = collector
        .wait_for(
            |c| {
                counted(c, "rpc.server.duration") >= 4
                    && counted(c, "rpc.client.duration") >= 3
                    && !c.latest_data_points("sinew.client.retries").is_empty()
            },
            Duration::from_secs(20),
        )
        .await;
    assert!(
        metrics_arrived,
        "metrics received: {:?}",
        collector.metric_names()
    );
    assert_eq!(counted(&collector, "rpc.server.duration"), 4);
    assert_eq!(counted(&collector, "rpc.client.duration"), 3);
    let retries: f64 = collector
        .latest_data_points("sinew.client.retries")
        .iter()
        .filter_map(|p| p.value.as_f64())
        .sum();
    assert_eq!(retries, 1.0);
    for point in collector.latest_data_points("sinew.client.retries") {
        assert_eq!(point.str_attribute("rpc.service"), Some("echo.v1.Echo"));
        assert_eq!(point.str_attribute("rpc.method"), Some("Put"));
        assert_eq!(point.str_attribute("reason"), Some("status"));
    }

    // A bulkhead of one call and no queue refuses calls while a slow one
    // runs, and counts them by method. The slow call holds its slot until
    // the test opens a gate on the server, so no timing decides the
    // outcome. Until the slow call holds the slot, either call may be the
    // one refused: each tries again, and every refusal is counted.
    let gate = Arc::new(Semaphore::new(0));
    let gated = serve_echo(Gated(Arc::clone(&gate))).await;
    let single = echo_client(&[gated.addr], |config| {
        config.bulkhead(BulkheadConfig {
            max_concurrent: 1,
            max_queue: 0,
            ..BulkheadConfig::default()
        })
    })
    .await;
    let slow = tokio::spawn({
        let mut single = single.clone();
        async move {
            let mut refused = 0.0;
            loop {
                let mut slow_request = Request::new(echo("hold"));
                CallOptions::timeout(Duration::from_secs(20)).apply(&mut slow_request);
                match single.put(slow_request).await {
                    Err(status) if status.code() == Code::ResourceExhausted => {
                        refused += 1.0;
                        tokio::task::yield_now().await;
                    }
                    answer => return (answer, refused),
                }
            }
        }
    });
    let quick = async {
        loop {
            match single.clone().put(echo("quick")).await {
                // Only the held call can have filled the bulkhead.
                Err(status) if status.code() == Code::ResourceExhausted => return 1.0,
                Err(status) => panic!("the quick call failed otherwise: {status:?}"),
                Ok(_) => assert!(!slow.is_finished(), "the held call ended"),
            }
            tokio::task::yield_now().await;
        }
    };
    let refused = tokio::time::timeout(Duration::from_secs(20), quick)
        .await
        .expect("a quick call is refused while the held call runs");
    gate.add_permits(1);
    let (answer, slow_refused) = slow.await.expect("the slow call's task");
    answer.expect("the slow call answers");
    let refused = refused + slow_refused;
    let rejections =
        |c: &Collector| -> Vec<_> { c.latest_data_points("sinew.client.bulkhead.rejections") };
    assert!(
        collector
            .wait_for(
                |c| rejections(c).first().and_then(|p| p.value.as_f64()) == Some(refused),
                Duration::from_secs(20)
            )
            .await,
        "{refused} refused; counted: {:?}",
        rejections(&collector)
    );
    let counted = rejections(&collector);
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert_eq!(
        counted[0].str_attribute("rpc.service"),
        Some("echo.v1.Echo")
    );
    assert_eq!(counted[0].str_attribute("rpc.method"), Some("Put"));
    assert_eq!(counted[0].str_attribute("reason"), Some("full"));
    assert_eq!(counted[0].value.as_f64(), Some(refused));

    // Circuit breakers: one per endpoint, counted in its state and named
    // by the endpoint. A breaker that trips at the first failure is
    // counted open, and its change counted, once its endpoint fails; the
    // test's breaker to A stays closed. A client without breakers adds
    // none: B's endpoint counts only A's.
    let mut unguarded = echo_client(&[b.addr], |c| c.breaker(None)).await;
    unguarded
        .put(echo("unguarded"))
        .await
        .expect("B answers a client without breakers");
    let failing = serve_echo(Scripted::failing(usize::MAX, Code::Unavailable)).await;
    let mut tripping = echo_client(&[failing.addr], |c| {
        c.breaker(BreakerConfig {
            consecutive_failures: 1,
            ..BreakerConfig::default()
        })
    })
    .await;
    let refused = tripping.put(echo("fails")).await.expect_err("it fails");
    assert_eq!(refused.code(), Code::Unavailable);
    breaker_reaches(&collector, failing.addr.port(), "open", 1.0).await;
    assert_eq!(
        breakers(&collector, failing.addr.port(), "closed"),
        Some(0.0)
    );
    assert_eq!(breakers(&collector, a.addr.port(), "closed"), Some(1.0));
    assert_eq!(breakers(&collector, a.addr.port(), "open"), None);
    assert_eq!(breakers(&collector, b.addr.port(), "closed"), Some(1.0));
    let opened: Vec<_> = collector
        .latest_data_points("sinew.client.breaker.transitions")
        .into_iter()
        .filter(|p| p.int_attribute("network.peer.port") == Some(i64::from(failing.addr.port())))
        .collect();
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0].str_attribute("to"), Some("open"));
    assert_eq!(
        opened[0].str_attribute("network.peer.address"),
        Some("127.0.0.1")
    );
    assert_eq!(opened[0].value.as_f64(), Some(1.0));
    // Every retry of the call that tripped it was refused: the retries
    // counted beyond the chain's one are the refusals counted (an export
    // may fall between a retry and its refusal: the next one agrees).
    let total = |c: &Collector, name: &str| -> f64 {
        c.latest_data_points(name)
            .iter()
            .filter(|p| {
                p.int_attribute("network.peer.port").is_none()
                    || p.int_attribute("network.peer.port") == Some(i64::from(failing.addr.port()))
            })
            .filter_map(|p| p.value.as_f64())
            .sum()
    };
    let refusals_match = |c: &Collector| {
        let refusals = total(c, "sinew.client.breaker.refusals");
        refusals >= 1.0 && total(c, "sinew.client.retries") - 1.0 == refusals
    };
    assert!(
        collector
            .wait_for(refusals_match, Duration::from_secs(20))
            .await,
        "refusals {}, retries {}",
        total(&collector, "sinew.client.breaker.refusals"),
        total(&collector, "sinew.client.retries")
    );
    // A client's breakers go with it.
    drop(tripping);
    breaker_reaches(&collector, failing.addr.port(), "open", 0.0).await;
    failing.stop().await;

    // Calls in flight, per side: a slow call through the chain is in
    // flight on three servers (A, B, C) and three clients (test -> A,
    // A -> B, B -> C), all in this process; once it ends, none are. It
    // lasts four metric exports, on a deadline of 10s so that a loaded host
    // cannot fail it.
    let in_flight = |c: &Collector, name: &str| -> Option<f64> {
        c.latest_data_points(name)
            .iter()
            .find(|p| p.str_attribute("rpc.method") == Some("Put"))
            .and_then(|p| p.value.as_f64())
    };
    let both = |c: &Collector| {
        (
            in_flight(c, "rpc.server.active_requests"),
            in_flight(c, "rpc.client.active_requests"),
        )
    };
    let mut slow_request = echo("slow");
    slow_request.delay_ms = 800;
    let mut slow_request = Request::new(slow_request);
    CallOptions::timeout(Duration::from_secs(10)).apply(&mut slow_request);
    let slow = tokio::spawn({
        let mut client = client.clone();
        async move { client.put(slow_request).await }
    });
    let during = collector
        .wait_for(
            |c| both(c) == (Some(3.0), Some(3.0)),
            Duration::from_secs(20),
        )
        .await;
    assert!(
        during,
        "in flight during the slow call: {:?}",
        both(&collector)
    );
    slow.await
        .expect("the slow call's task")
        .expect("the slow call answers");
    let after = collector
        .wait_for(
            |c| both(c) == (Some(0.0), Some(0.0)),
            Duration::from_secs(20),
        )
        .await;
    assert!(
        after,
        "in flight after the slow call: {:?}",
        both(&collector)
    );

    // A response stream the server's deadline ends is recorded as
    // DEADLINE_EXCEEDED: the handler echoes for as long as its request
    // stream stays open, and the ceiling ends the call at 300ms.
    let bounded = Running::start(common::echo_server(
        ServerConfig::new()
            .lame_duck(Duration::ZERO)
            .request_timeout(Duration::from_millis(300)),
    ))
    .await;
    let (send, requests) = tokio::sync::mpsc::channel(1);
    send.send(echo("open")).await.unwrap();
    let mut chat = RawEchoClient::new(bounded.channel().await)
        .chat(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .expect("the stream starts")
        .into_inner();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Err(status) = chat.message().await {
                return status;
            }
        }
    })
    .await
    .expect("the deadline ends the stream");
    assert_eq!(ended.code(), Code::DeadlineExceeded);
    let chat_span = |c: &Collector| {
        c.spans_named("echo.v1.Echo/Chat")
            .into_iter()
            .find(|s| s.kind() == SpanKind::Server)
    };
    assert!(
        collector
            .wait_for(|c| chat_span(c).is_some(), Duration::from_secs(20))
            .await,
        "spans received: {:?}",
        collector.span_names()
    );
    let chat_span = chat_span(&collector).unwrap();
    assert_eq!(chat_span.int_attribute("rpc.grpc.status_code"), Some(4));
    assert_eq!(chat_span.status_code(), StatusCode::Error);
    drop(send);

    for server in [a, b, c, gated, bounded] {
        server.stop().await;
    }
    tokio::time::timeout(Duration::from_secs(10), telemetry.shutdown())
        .await
        .expect("shutdown is bounded")
        .expect("shutdown succeeds");
    collector.stop().await;
}
