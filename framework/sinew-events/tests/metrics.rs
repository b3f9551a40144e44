//! The events' instruments: the outbox relay's `sinew.events.published` by
//! event type and the `sinew.events.outbox.pending` and `.lag` gauges; the
//! consumer's `consumed`, `redelivered`, `dead_lettered` and
//! `inbox.duplicates` counters.
//!
//! A test binary of its own: the instruments are made once, from the
//! global meter provider, which [`telemetry`] installs before anything
//! else.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{
        PeriodicReader, SdkMeterProvider, Temporality,
        data::{AggregatedMetrics, MetricData, ResourceMetrics},
        exporter::PushMetricExporter,
    },
};
use sinew_events::{
    Broker, Envelope, Error, Event, MemoryBroker, Published,
    consumer::ConsumerConfig,
    outbox::{Outbox, OutboxConfig, Relay, RelayConfig},
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tokio::time::Instant;

#[derive(Clone, PartialEq, prost::Message)]
struct Counted {
    #[prost(string, tag = "1")]
    aggregate: String,
}

impl Event for Counted {
    const TYPE: &'static str = "test.Counted";
    const SUBJECT: &'static str = "test.counted";
    const SCHEMA_VERSION: u32 = 1;
    fn aggregate_id(&self) -> String {
        self.aggregate.clone()
    }
}

/// The memory broker, refusing aggregate `stuck`.
#[derive(Clone)]
struct Refusing(MemoryBroker);

impl Broker for Refusing {
    type Delivery = <MemoryBroker as Broker>::Delivery;
    type Deliveries = <MemoryBroker as Broker>::Deliveries;

    async fn publish_raw(
        &self,
        subject: String,
        headers: async_nats::HeaderMap,
        payload: Bytes,
    ) -> Result<Published, Error> {
        self.0.publish_raw(subject, headers, payload).await
    }

    async fn subscribe(
        &self,
        subject: &str,
        config: &ConsumerConfig,
    ) -> Result<Self::Deliveries, Error> {
        self.0.subscribe(subject, config).await
    }

    async fn publish(&self, envelope: &Envelope) -> Result<Published, Error> {
        if envelope.aggregate_id == "stuck" {
            return Err(Error::Broker("refused".into()));
        }
        self.0.publish(envelope).await
    }

    fn is_connected(&self) -> bool {
        true
    }
}

/// The last values exported: sums and gauges by metric name and
/// attributes.
#[derive(Clone, Default)]
struct Exported(Arc<Mutex<HashMap<String, f64>>>);

impl Exported {
    fn get(&self, key: &str) -> Option<f64> {
        self.0.lock().unwrap().get(key).copied()
    }
}

fn key(name: &str, attributes: impl Iterator<Item = String>) -> String {
    let mut attributes: Vec<String> = attributes.collect();
    attributes.sort();
    format!("{name}{{{}}}", attributes.join(","))
}

impl PushMetricExporter for Exported {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let mut out = self.0.lock().unwrap();
        for scope in metrics.scope_metrics() {
            for metric in scope.metrics() {
                let name = metric.name();
                let attrs = |kvs: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
                    kvs.map(|kv| format!("{}={}", kv.key, kv.value))
                        .collect::<Vec<_>>()
                };
                match metric.data() {
                    AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                        for point in sum.data_points() {
                            let k = key(name, attrs(&mut point.attributes()).into_iter());
                            out.insert(k, point.value() as f64);
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Gauge(gauge)) => {
                        for point in gauge.data_points() {
                            let k = key(name, attrs(&mut point.attributes()).into_iter());
                            out.insert(k, point.value() as f64);
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Gauge(gauge)) => {
                        for point in gauge.data_points() {
                            let k = key(name, attrs(&mut point.attributes()).into_iter());
                            out.insert(k, point.value());
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// Flushes the provider (off the runtime: the flush blocks) and polls
/// `check` on what was exported until it holds or 10s pass.
async fn eventually(
    provider: &SdkMeterProvider,
    exported: &Exported,
    what: &str,
    check: impl Fn(&Exported) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let flushing = provider.clone();
        tokio::task::spawn_blocking(move || flushing.force_flush())
            .await
            .unwrap()
            .unwrap();
        if check(exported) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The meter provider every test of this binary records to, installed
/// once, before any instrument is made.
fn telemetry() -> &'static (SdkMeterProvider, Exported) {
    static TELEMETRY: OnceLock<(SdkMeterProvider, Exported)> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        let exported = Exported::default();
        let reader = PeriodicReader::builder(exported.clone())
            .with_interval(Duration::from_secs(3600))
            .build();
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        opentelemetry::global::set_meter_provider(provider.clone());
        (provider, exported)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_counts_what_it_publishes_and_gauges_what_waits() {
    let (provider, exported) = telemetry();
    let (provider, exported) = (provider.clone(), exported.clone());

    let dir = tempfile::tempdir().unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("outbox.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    let outbox = Outbox::new(pool, OutboxConfig::default());
    outbox.migrate().await.unwrap();

    let mut tx = outbox.pool().begin().await.unwrap();
    for aggregate in ["a", "b", "c", "stuck"] {
        outbox
            .add(
                &mut tx,
                &Counted {
                    aggregate: aggregate.into(),
                },
            )
            .await
            .unwrap();
    }
    outbox.commit(tx).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;

    let broker = MemoryBroker::new();
    let relay = Relay::new(
        outbox.clone(),
        Refusing(broker.clone()),
        RelayConfig {
            stats_interval: Duration::from_millis(20),
            poll_interval: Duration::from_millis(20),
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            ..RelayConfig::default()
        },
    )
    .unwrap()
    .spawn();

    let published = "sinew.events.published{event.type=test.Counted}";
    let pending = "sinew.events.outbox.pending{}";
    let lag = "sinew.events.outbox.lag{}";
    eventually(&provider, &exported, "three published", |e| {
        e.get(published) == Some(3.0)
    })
    .await;
    // The stuck event waits, and ages.
    eventually(&provider, &exported, "one pending", |e| {
        e.get(pending) == Some(1.0)
    })
    .await;
    eventually(&provider, &exported, "its age", |e| {
        e.get(lag).is_some_and(|age| age >= 0.03)
    })
    .await;
    relay.shutdown().await;
    assert_eq!(broker.messages(Counted::SUBJECT).len(), 3);
    assert_eq!(exported.get(published), Some(3.0));
}

#[derive(Clone, PartialEq, prost::Message)]
struct Handled {
    #[prost(uint32, tag = "1")]
    n: u32,
}

impl Event for Handled {
    const TYPE: &'static str = "test.Handled";
    const SUBJECT: &'static str = "test.handled";
    const SCHEMA_VERSION: u32 = 1;
    fn aggregate_id(&self) -> String {
        self.n.to_string()
    }
}

struct Apply {
    failed: Arc<Mutex<bool>>,
}

impl sinew_events::TxHandler<Handled, sqlx::Sqlite> for Apply {
    async fn handle(
        &self,
        _tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        event: &sinew_events::Received<Handled>,
    ) -> Result<(), sinew_events::HandlerError> {
        match event.event.n {
            1 if !std::mem::replace(&mut *self.failed.lock().unwrap(), true) => {
                Err(sinew_events::HandlerError::retry("once"))
            }
            2 => Err(sinew_events::HandlerError::permanent("never")),
            _ => Ok(()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_counts_what_it_handles_retries_skips_and_gives_up() {
    let (provider, exported) = telemetry();
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("inbox.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    let inbox = sinew_events::Inbox::new(pool, sinew_events::InboxConfig::default())
        .await
        .unwrap();
    // No deduplication: a copy of an event reaches the inbox.
    let broker = MemoryBroker::with_limits(100, Duration::ZERO);
    let consumer = sinew_events::Consumer::start::<Handled, _, _>(
        &broker,
        ConsumerConfig::new("g").backoff([Duration::from_millis(10)]),
        inbox.handler(Apply {
            failed: Arc::default(),
        }),
    )
    .await
    .unwrap();
    let first = Envelope::new(&Handled { n: 0 });
    for envelope in [
        first.clone(),
        first,
        Envelope::new(&Handled { n: 1 }),
        Envelope::new(&Handled { n: 2 }),
    ] {
        broker.publish(&envelope).await.unwrap();
    }
    let labels = "consumer.group=g,event.type=test.Handled";
    let consumed = format!("sinew.events.consumed{{{labels}}}");
    let duplicates = format!("sinew.events.inbox.duplicates{{{labels}}}");
    let redelivered = format!("sinew.events.redelivered{{{labels}}}");
    let dead = format!("sinew.events.dead_lettered{{{labels},reason=permanent}}");
    eventually(provider, exported, "every count", |e| {
        e.get(&consumed) == Some(3.0)
            && e.get(&duplicates) == Some(1.0)
            && e.get(&redelivered) == Some(1.0)
            && e.get(&dead) == Some(1.0)
    })
    .await;
    consumer.shutdown().await;
}
