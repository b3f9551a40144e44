//! The consumer on a real NATS JetStream server: delivery, redelivery
//! after a failure, dead letters with their reason, bad input, groups
//! sharing work across connections, and the trace carried from publisher
//! to consumer.

#![allow(clippy::print_stderr, reason = "a skipped test says so")]

mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use sinew_events::{
    Broker, Consumer, ConsumerConfig, DEAD_DELIVERIES, DEAD_REASON, Envelope, Event, HandlerError,
    JetStream, JetStreamConfig, Received, StreamConfig,
};
use support::eventually;

test_event!(Delivered, "sinew.test.js.delivered");
test_event!(Repeated, "sinew.test.js.repeated");
test_event!(Failing, "sinew.test.js.failing");
test_event!(Malformed, "sinew.test.js.malformed");
test_event!(Shared, "sinew.test.js.shared");
test_event!(Traced, "sinew.test.js.traced");

const WAIT: Duration = Duration::from_secs(20);

/// A broker with a fresh stream for `E`'s subject, or `None` (skipped).
async fn broker_for<E: Event>() -> Option<JetStream> {
    let url = support::nats_url()?;
    let stream = format!("SINEW_TEST_{}", E::SUBJECT.replace('.', "_").to_uppercase());
    let broker = JetStream::connect(JetStreamConfig::new(url.clone()))
        .await
        .unwrap();
    let _ = broker.context().delete_stream(&stream).await;
    let config = JetStreamConfig::new(url).stream(StreamConfig::new(stream, [E::SUBJECT]));
    Some(JetStream::connect(config).await.unwrap())
}

/// A consumer group name no earlier run used.
fn group(name: &str) -> String {
    format!(
        "{name}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

fn event<E: Event + From<(String, u64)>>(order: &str, n: u64) -> E {
    E::from((order.to_owned(), n))
}

macro_rules! from_pair {
    ($($name:ident),*) => {$(
        impl From<(String, u64)> for $name {
            fn from((order_id, n): (String, u64)) -> Self {
                Self { order_id, n }
            }
        }
    )*};
}
from_pair!(Delivered, Repeated, Failing, Malformed, Shared, Traced);

/// Waits until `group`'s consumer on `subject` has nothing unacknowledged
/// and nothing undelivered: nothing more will reach its handlers.
async fn settled(broker: &JetStream, subject: &str, group: &str) -> bool {
    let context = broker.context();
    let stream = context.stream_by_subject(subject).await.unwrap();
    let stream = context.get_stream(stream).await.unwrap();
    let durable = sinew_events::jetstream::durable_name(group, subject);
    for _ in 0..2000 {
        let info = stream.consumer_info(&durable).await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// The last dead letter of `group`, as stored.
async fn dead_letter(
    broker: &JetStream,
    group: &str,
) -> Option<async_nats::jetstream::message::StreamMessage> {
    let stream = broker
        .context()
        .get_stream("SINEW_DEAD_LETTERS")
        .await
        .ok()?;
    stream
        .get_last_raw_message_by_subject(&format!("sinew.dead.{group}"))
        .await
        .ok()
}

#[tokio::test]
async fn events_are_delivered_and_a_failure_comes_again() {
    let Some(broker) = broker_for::<Delivered>().await else {
        return;
    };
    let seen: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let record = seen.clone();
    let group = group("delivered");
    let config = ConsumerConfig::new(group.clone()).backoff([Duration::from_millis(200)]);
    let consumer =
        Consumer::start::<Delivered, _, _>(&broker, config, move |ev: Received<Delivered>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push((ev.event.n, ev.delivered));
                if ev.event.n == 1 && ev.delivered == 1 {
                    return Err(HandlerError::retry("first try fails"));
                }
                Ok(())
            }
        })
        .await
        .unwrap();
    for n in 0..3 {
        let published = broker
            .publish(&Envelope::new(&event::<Delivered>("o-1", n)))
            .await
            .unwrap();
        assert!(!published.duplicate);
    }
    assert!(
        eventually(WAIT, || seen.lock().unwrap().len() == 4).await,
        "{:?}",
        seen.lock().unwrap()
    );
    // Nothing more comes: every event was acknowledged.
    assert!(settled(&broker, Delivered::SUBJECT, &group).await);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, [(0, 1), (1, 1), (1, 2), (2, 1)]);
    consumer.shutdown().await;
}

#[tokio::test]
async fn a_repeated_event_id_is_dropped_by_the_server() {
    let Some(broker) = broker_for::<Repeated>().await else {
        return;
    };
    // A relay's retry of a publish whose acknowledgement it lost.
    let envelope = Envelope::new(&event::<Repeated>("o-2", 9));
    assert!(!broker.publish(&envelope).await.unwrap().duplicate);
    assert!(broker.publish(&envelope).await.unwrap().duplicate);
}

#[tokio::test]
async fn the_last_failed_delivery_is_dead_lettered_with_its_reason() {
    let Some(broker) = broker_for::<Failing>().await else {
        return;
    };
    let group = group("failing");
    let calls = Arc::new(Mutex::new(0u64));
    let count = calls.clone();
    let config = ConsumerConfig::new(group.clone())
        .max_deliver(2)
        .backoff([Duration::from_millis(100)]);
    let consumer =
        Consumer::start::<Failing, _, _>(&broker, config, move |_: Received<Failing>| {
            let count = count.clone();
            async move {
                *count.lock().unwrap() += 1;
                Err(HandlerError::retry("warehouse unreachable"))
            }
        })
        .await
        .unwrap();
    let envelope = Envelope::new(&event::<Failing>("o-1", 1));
    broker.publish(&envelope).await.unwrap();
    let mut dead = None;
    for _ in 0..200 {
        dead = dead_letter(&broker, &group).await;
        if dead.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = dead.expect("a dead letter");
    assert_eq!(*calls.lock().unwrap(), 2);
    assert_eq!(dead.headers.get(DEAD_DELIVERIES).unwrap().as_str(), "2");
    assert!(
        dead.headers
            .get(DEAD_REASON)
            .unwrap()
            .as_str()
            .contains("warehouse unreachable")
    );
    assert_eq!(dead.payload, envelope.payload);
    // Terminated: not delivered again.
    assert!(settled(&broker, Failing::SUBJECT, &group).await);
    assert_eq!(*calls.lock().unwrap(), 2);
    consumer.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_dead_lettered_and_the_consumer_goes_on() {
    let Some(broker) = broker_for::<Malformed>().await else {
        return;
    };
    let group = group("malformed");
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let record = seen.clone();
    let consumer = Consumer::start::<Malformed, _, _>(
        &broker,
        ConsumerConfig::new(group.clone()),
        move |ev: Received<Malformed>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(ev.event.n);
                Ok(())
            }
        },
    )
    .await
    .unwrap();
    broker
        .publish_raw(
            Malformed::SUBJECT.into(),
            async_nats::HeaderMap::new(),
            "junk".into(),
        )
        .await
        .unwrap();
    broker
        .publish(&Envelope::new(&event::<Malformed>("o-1", 5)))
        .await
        .unwrap();
    assert!(eventually(WAIT, || seen.lock().unwrap().len() == 1).await);
    let mut dead = None;
    for _ in 0..200 {
        dead = dead_letter(&broker, &group).await;
        if dead.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = dead.expect("a dead letter");
    assert_eq!(dead.payload, "junk");
    assert!(
        dead.headers
            .get(DEAD_REASON)
            .unwrap()
            .as_str()
            .contains("is missing")
    );
    assert_eq!(*seen.lock().unwrap(), [5]);
    consumer.shutdown().await;
}

#[tokio::test]
async fn members_on_two_connections_share_a_group() {
    let Some(broker) = broker_for::<Shared>().await else {
        return;
    };
    let url = support::nats_url().unwrap();
    let other = JetStream::connect(JetStreamConfig::new(url)).await.unwrap();
    let group = group("shared");
    let handled: Arc<Mutex<HashMap<u64, Vec<&'static str>>>> = Arc::default();
    let mut consumers = Vec::new();
    for (member, broker) in [("a", &broker), ("b", &other)] {
        let handled = handled.clone();
        let consumer = Consumer::start::<Shared, _, _>(
            broker,
            ConsumerConfig::new(group.clone()).max_ack_pending(8),
            move |ev: Received<Shared>| {
                let handled = handled.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    handled
                        .lock()
                        .unwrap()
                        .entry(ev.event.n)
                        .or_default()
                        .push(member);
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
        consumers.push(consumer);
    }
    for n in 0..200 {
        broker
            .publish(&Envelope::new(&event::<Shared>(&format!("o-{n}"), n)))
            .await
            .unwrap();
    }
    assert!(eventually(WAIT, || handled.lock().unwrap().len() == 200).await);
    assert!(settled(&broker, Shared::SUBJECT, &group).await);
    let handled = handled.lock().unwrap().clone();
    assert!(
        handled.values().all(|members| members.len() == 1),
        "each event once"
    );
    let by_a = handled.values().filter(|m| m[0] == "a").count();
    assert!(by_a > 0 && by_a < 200, "both members worked: a took {by_a}");
    for consumer in consumers {
        consumer.shutdown().await;
    }
}

#[tokio::test]
async fn subscribing_where_no_stream_stores_the_subject_fails_clearly() {
    let Some(url) = support::nats_url() else {
        return;
    };
    test_event!(Nowhere, "sinew.test.nowhere.at.all");
    let broker = JetStream::connect(JetStreamConfig::new(url)).await.unwrap();
    let error = Consumer::start::<Nowhere, _, _>(
        &broker,
        ConsumerConfig::new("g"),
        |_: Received<Nowhere>| async { Ok(()) },
    )
    .await
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no stream stores `sinew.test.nowhere.at.all`"),
        "{error}"
    );
}

#[tokio::test]
async fn connecting_to_nothing_fails_without_leaking_credentials() {
    let error = JetStream::connect(JetStreamConfig {
        connect_timeout: Duration::from_millis(500),
        ..JetStreamConfig::new("nats://admin:hunter2@127.0.0.1:1")
    })
    .await
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("cannot connect to nats://***@127.0.0.1:1"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[derive(Debug, Clone, Default)]
struct Spans(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Spans {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

#[tokio::test]
async fn the_consumer_span_is_a_child_of_the_publisher() {
    let Some(broker) = broker_for::<Traced>().await else {
        return;
    };
    let spans = Spans::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    let consumer = Consumer::start::<Traced, _, _>(
        &broker,
        ConsumerConfig::new(group("traced")),
        move |_: Received<Traced>| {
            let record = record.clone();
            async move {
                // The handler runs in the consumer's span.
                let cx = opentelemetry::Context::current();
                *record.lock().unwrap() = Some(cx.span().span_context().clone());
                Ok(())
            }
        },
    )
    .await
    .unwrap();

    // The RPC that records the event.
    let tracer = provider.tracer("test");
    let rpc = tracer.start("PlaceOrder");
    let rpc_context = rpc.span_context().clone();
    let envelope = {
        let _attached = opentelemetry::Context::current_with_span(rpc).attach();
        Envelope::new(&event::<Traced>("o-1", 1))
    };
    broker.publish(&envelope).await.unwrap();
    assert!(eventually(WAIT, || seen.lock().unwrap().is_some()).await);
    consumer.shutdown().await;

    let handler = seen.lock().unwrap().clone().unwrap();
    assert_eq!(handler.trace_id(), rpc_context.trace_id(), "one trace");
    assert!(
        eventually(WAIT, || spans
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.span_kind == SpanKind::Consumer
                && s.span_context.trace_id() == rpc_context.trace_id()))
        .await
    );
    let spans = spans.0.lock().unwrap().clone();
    let consumer_span = spans
        .iter()
        // The provider is global: the other tests' consumers, running
        // beside this one, export their spans to it too.
        .find(|s| {
            s.span_kind == SpanKind::Consumer && s.span_context.trace_id() == rpc_context.trace_id()
        })
        .unwrap();
    assert_eq!(consumer_span.parent_span_id, rpc_context.span_id());
    assert_eq!(
        consumer_span.span_context.trace_id(),
        rpc_context.trace_id()
    );
    assert_eq!(consumer_span.span_context.span_id(), handler.span_id());
    assert_eq!(consumer_span.name, "process sinew.test.js.traced");
}

/// A nats-server of the test's own, on a free port, killed on drop.
struct PrivateServer {
    child: std::process::Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl PrivateServer {
    async fn start(port: u16, store: tempfile::TempDir) -> Self {
        let child = std::process::Command::new("/usr/sbin/nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server runs");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..500 {
            if std::net::TcpStream::connect(addr).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            child,
            port,
            _store: store,
        }
    }

    fn stop(mut self) -> (u16, tempfile::TempDir) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.port;
        let store = std::mem::replace(&mut self._store, tempfile::tempdir().unwrap());
        (port, store)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_readiness_check_follows_the_connection() {
    if !std::path::Path::new("/usr/sbin/nats-server").exists() {
        assert!(
            !support::require_services(),
            "SINEW_REQUIRE_SERVICES=1 but no /usr/sbin/nats-server"
        );
        eprintln!("SKIP: no /usr/sbin/nats-server");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = PrivateServer::start(port, tempfile::tempdir().unwrap()).await;
    let broker = JetStream::connect(JetStreamConfig::new(format!("nats://127.0.0.1:{port}")))
        .await
        .unwrap();
    assert!(broker.check().await.is_ok());
    let (port, store) = server.stop();
    assert!(eventually(WAIT, || !broker.is_connected()).await);
    assert!(broker.check().await.is_err());
    let _server = PrivateServer::start(port, store).await;
    assert!(
        eventually(WAIT, || broker.is_connected()).await,
        "reconnects by itself"
    );
    assert!(broker.check().await.is_ok());
}
