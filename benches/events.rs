//! What sinew's events cost over raw JetStream calls, and how fast and
//! how soon the outbox relays, measured in one run.
//!
//! 1. **The bus.** `N` `shop.orders.v1.OrderPlaced` events are published
//!    through sinew (`Envelope::new` and `JetStream::publish`, which waits
//!    for each PubAck) and handled by a `Consumer` (a handler that counts;
//!    sinew acknowledges each event with a double ack, waiting for the
//!    server to confirm). File storage, no inbox. `IN_FLIGHT` (256)
//!    publishes are under way at once, and the consumer's `max_ack_pending`
//!    is 256. Messages per second are `N` over the time from the first
//!    publish to the last event handled.
//! 2. **Raw JetStream**, the baseline: the same events through async-nats
//!    directly: `publish_with_headers` with headers of the same names and
//!    sizes (a UUIDv7 `Nats-Msg-Id` each) and the same payload, awaiting
//!    each PubAck future, 256 in flight; a durable pull consumer (explicit
//!    ack, same `ack_wait`, `max_deliver`, `max_ack_pending` and batch size
//!    as sinew's) read through `messages()`, each message decoded and
//!    `double_ack`ed, 256 at once (`for_each_concurrent`). The double ack
//!    matches sinew's, so that both sides make the same round trips.
//!
//!    Raw and sinew rounds alternate (raw first), each on a fresh stream
//!    (a new name, the old one deleted) so that both see an empty stream;
//!    each side's result is the median of its rounds. `bus_ratio` is sinew's
//!    median over raw's.
//!
//! 3. **The outbox relay** on PostgreSQL: `N` events are committed to the
//!    outbox first (`Outbox::add`, 100 per transaction, 4 transactions at
//!    once, not timed), then a `Relay` (`RelayConfig::default()`: batches
//!    of 256) is started; messages per second are `N` over the time from
//!    its start to the moment no row is pending (published, acknowledged
//!    and marked; polled every 2ms). The baseline, "raw publish", is the
//!    raw side of 2 publishing alone: `N` publishes awaiting their PubAck,
//!    256 in flight, on a fresh stream. Rounds alternate (raw publish
//!    first), each on a fresh stream and a fresh schema; `outbox_ratio` is
//!    the relay's median over raw publish's. Each relay round checks the
//!    stream holds exactly `N` messages.
//! 4. **Commit to handler**: 200 events a second for 10s, each committed
//!    in a transaction of its own through the outbox, a relay running
//!    (woken on commit, as `Outbox::commit` does), a consumer handling
//!    them. The latency is the handler's instant minus the instant the
//!    commit returned, matched by event id; p50 and p99.
//!
//! Each round also reports the CPU time this process spent per message
//! (all threads, user and system, from `/proc/self/stat`, on Linux), and
//! the CPU time of the services per message (every thread of the processes
//! on this host named `postgres` or `nats-server`, from `schedstat`: meaningful
//! only where the services run on this host, and only as much as nothing
//! else uses them meanwhile). On a small host where the client, NATS and
//! PostgreSQL share the cores, messages per second follow the sum of the
//! two: a gap in throughput with no gap in CPU time is waiting; a gap in
//! the client's CPU time is the client's own work.
//!
//! Run with: `cargo bench --bench events`, with NATS JetStream at
//! `NATS_URL` (default `nats://127.0.0.1:4222`) and PostgreSQL at
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`). If
//! either is unreachable the benchmark says so and exits 0 without a RESULT
//! line, or exits 1 when `SINEW_REQUIRE_SERVICES=1`. The events are
//! `shop.orders.v1.OrderPlaced` as the contract declares it, but on the
//! subject `sinew_bench.orders.placed` (the events example's stream `SHOP`
//! keeps `shop.>` on the shared server). The benchmark deletes the streams
//! it made (named `SINEW_BENCH_*`), and stops if another stream holds its
//! subject; two runs at once get in each other's way.
//!
//! Environment: `SINEW_BENCH_EVENTS` events per round (default 20000),
//! `SINEW_BENCH_ROUNDS` rounds per side (default 3), `SINEW_BENCH_RATE`
//! and `SINEW_BENCH_LATENCY_SECONDS` the rate and duration of 4 (default
//! 200 a second for 10s), `SINEW_BENCH_RELAY_BATCH` the relay's batch size
//! in 3 (default `RelayConfig::default()`'s, 256; another size makes the
//! comparison unequal, for diagnosis), `SINEW_BENCH_ONLY=raw` or `sinew` runs that side
//! of the bus alone, once, for a profiler (no RESULT line). PostgreSQL
//! tables go to schemas of their own (`sinew_bench_*`, dropped after).
//!
//! The last line is exactly:
//! `RESULT bus_ratio=<bus msgs/s / raw msgs/s> bus_msgs_per_s=<n> raw_msgs_per_s=<n> outbox_ratio=<relay msgs/s / raw publish msgs/s> outbox_msgs_per_s=<n> commit_to_handler_p99_ms=<n>`

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on stdout"
)]

mod common;

use common::{process_cpu_time, reachable, services_cpu_per_message, services_cpu_time};

use std::{
    collections::HashMap,
    future::ready,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        consumer::{AckPolicy, DeliverPolicy, pull},
        stream::{self, DiscardPolicy, StorageType},
    },
};
use futures_util::StreamExt as _;
use prost::Message as _;
use sinew::{
    event::Event,
    events::{
        Broker as _, Consumer, ConsumerConfig, Envelope, JetStream, JetStreamConfig, Outbox,
        OutboxConfig, Relay, RelayConfig, StreamConfig,
    },
};
use sqlx::{
    Executor as _, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::sync::Notify;

/// Publishes under way at once, on both sides.
const IN_FLIGHT: usize = 256;
/// The consumers' `max_ack_pending`, on both sides.
const MAX_ACK_PENDING: u32 = 256;
/// The longest a round may take before the benchmark gives up.
const ROUND_LIMIT: Duration = Duration::from_secs(120);
/// The subject every stream of the benchmark stores.
const SUBJECT: &str = OrderPlaced::SUBJECT;

/// `shop.orders.v1.OrderPlaced` field for field, with the `Event` impl
/// sinew-build generates for it, on a subject of its own: the shared server
/// keeps the streams of examples and tests (the events example's `SHOP`
/// holds `shop.>`), and each round here needs a fresh stream of its own.
#[derive(Clone, PartialEq, prost::Message)]
struct OrderPlaced {
    /// The order's id.
    #[prost(string, tag = "1")]
    order_id: String,
    /// What the order costs, in cents.
    #[prost(int64, tag = "2")]
    amount_cents: i64,
}

impl Event for OrderPlaced {
    const TYPE: &'static str = "shop.orders.v1.OrderPlaced";
    const SUBJECT: &'static str = "sinew_bench.orders.placed";
    const SCHEMA_VERSION: u32 = 1;

    fn aggregate_id(&self) -> String {
        self.order_id.clone()
    }
}

fn env_number(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The CPU time spent since `start`, per message, in microseconds.
fn cpu_per_message(start: Option<Duration>, messages: usize) -> Option<f64> {
    let spent = process_cpu_time()?.saturating_sub(start?);
    Some(spent.as_secs_f64() * 1e6 / messages as f64)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn show(cpu_us: Option<f64>) -> String {
    cpu_us.map_or_else(|| "n/a".to_owned(), |us| format!("{us:.1}us"))
}

// === services ===

fn require_services() -> bool {
    std::env::var("SINEW_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The service's URL from `var`, if it answers.
fn service(name: &str, var: &str, default: &str, port: u16) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    if reachable(&url, port) {
        Some(url)
    } else {
        eprintln!("SKIP: {name} is not reachable (set {var}); the events benchmark needs it");
        None
    }
}

// === the events ===

/// The events of one round, made before the clock starts (on both sides).
fn events(n: usize) -> Vec<OrderPlaced> {
    (0..n)
        .map(|i| OrderPlaced {
            order_id: format!("order-{i:08}"),
            amount_cents: i64::try_from(i).unwrap_or(i64::MAX),
        })
        .collect()
}

/// An RFC 3339 instant with nanoseconds, as long as the one sinew writes.
const OCCURRED_AT: &str = "2026-12-07T06:00:00.123456789Z";

/// The headers the raw side sends: sinew's names, values of the same
/// sizes, and a fresh UUIDv7 as the message id (so that the server's
/// deduplication does the same work).
fn raw_headers(event: &OrderPlaced) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Nats-Msg-Id",
        uuid::Uuid::now_v7().hyphenated().to_string().as_str(),
    );
    headers.insert("Sinew-Event-Type", OrderPlaced::TYPE);
    headers.insert("Sinew-Aggregate-Id", event.order_id.as_str());
    headers.insert("Sinew-Occurred-At", OCCURRED_AT);
    headers.insert("Sinew-Schema-Version", "1");
    headers
}

/// The bytes of a header map's names and values.
fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, values)| {
            values
                .iter()
                .map(|value| name.to_string().len() + value.as_str().len())
                .sum::<usize>()
        })
        .sum()
}

/// Counts handled events and notes when the last came.
struct Tally {
    target: usize,
    count: AtomicUsize,
    last: OnceLock<Instant>,
    done: Notify,
}

impl Tally {
    fn new(target: usize) -> Arc<Self> {
        Arc::new(Self {
            target,
            count: AtomicUsize::new(0),
            last: OnceLock::new(),
            done: Notify::new(),
        })
    }

    fn handled(&self) {
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            let _ = self.last.set(Instant::now());
            self.done.notify_one();
        }
    }

    /// Waits for the last event, at most [`ROUND_LIMIT`].
    async fn finished(&self, side: &str) -> Instant {
        if tokio::time::timeout(ROUND_LIMIT, self.done.notified())
            .await
            .is_err()
        {
            panic!(
                "{side}: {} of {} events handled within {ROUND_LIMIT:?}",
                self.count.load(Ordering::Relaxed),
                self.target
            );
        }
        *self.last.get().expect("set before the notification")
    }
}

// === streams ===

/// A stream for one round, as sinew's `StreamConfig::new` makes it (file
/// storage, 2 minutes of deduplication, discard new).
fn stream_config(name: &str) -> StreamConfig {
    StreamConfig::new(name, [SUBJECT])
}

/// The same stream, for raw async-nats.
fn raw_stream_config(name: &str) -> stream::Config {
    let sinew = stream_config(name);
    stream::Config {
        name: sinew.name,
        subjects: sinew.subjects,
        storage: StorageType::File,
        num_replicas: sinew.replicas,
        duplicate_window: sinew.duplicate_window,
        max_age: sinew.max_age,
        max_bytes: sinew.max_bytes,
        discard: DiscardPolicy::New,
        ..Default::default()
    }
}

/// Deletes the benchmark's stream left on the subject (by an earlier,
/// interrupted run); stops if another stream holds the subject.
async fn clear_subject(context: &jetstream::Context) {
    if let Ok(name) = context.stream_by_subject(SUBJECT).await {
        assert!(
            name.starts_with("SINEW_BENCH_"),
            "stream `{name}` on the server holds `{SUBJECT}`: the benchmark needs the subject to itself"
        );
        context
            .delete_stream(&name)
            .await
            .expect("delete an old benchmark stream");
    }
}

/// A round's name for its stream and consumer group.
fn round_name(side: &str, round: u64) -> String {
    format!("SINEW_BENCH_{}_{side}_{round}", std::process::id())
}

// === the bus ===

/// One side's numbers for a round of the bus.
#[derive(Debug, Clone, Copy)]
struct BusRound {
    msgs_per_s: f64,
    /// When the last PubAck came, from the first publish.
    published_after: Duration,
    cpu_us: Option<f64>,
    /// PostgreSQL's and NATS's CPU time per message.
    services_cpu_us: Option<f64>,
}

fn report_bus(side: &str, round: u64, n: usize, result: BusRound) {
    println!(
        "{side:>5} round {round}: {:>8.0} msgs/s ({n} events; all published after {:.2}s), cpu {} per message, services' cpu {}",
        result.msgs_per_s,
        result.published_after.as_secs_f64(),
        show(result.cpu_us),
        show(result.services_cpu_us),
    );
}

/// `n` events through sinew: `Envelope::new`, `publish`, `Consumer`.
async fn sinew_bus(url: &str, round: u64, n: usize) -> BusRound {
    let name = round_name("SINEW", round);
    let client = async_nats::connect(url).await.expect("connect");
    clear_subject(&jetstream::new(client)).await;
    let broker = JetStream::connect(JetStreamConfig::new(url).stream(stream_config(&name)))
        .await
        .expect("sinew connect");
    let tally = Tally::new(n);
    let counter = tally.clone();
    let consumer = Consumer::start::<OrderPlaced, _, _>(
        &broker,
        ConsumerConfig::new(&name).max_ack_pending(MAX_ACK_PENDING),
        move |_event| {
            counter.handled();
            ready(Ok(()))
        },
    )
    .await
    .expect("start the consumer");
    let events = events(n);

    let (cpu, services) = (process_cpu_time(), services_cpu_time());
    let start = Instant::now();
    futures_util::stream::iter(&events)
        .map(|event| {
            let broker = &broker;
            async move { broker.publish(&Envelope::new(event)).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|published| {
            published.expect("sinew publish");
            ready(())
        })
        .await;
    let published_after = start.elapsed();
    let last = tally.finished("sinew").await;
    let cpu_us = cpu_per_message(cpu, n);
    let services_cpu_us = services_cpu_per_message(services, n);

    consumer.shutdown().await;
    broker
        .context()
        .delete_stream(&name)
        .await
        .expect("delete the stream");
    BusRound {
        msgs_per_s: n as f64 / last.duration_since(start).as_secs_f64(),
        published_after,
        cpu_us,
        services_cpu_us,
    }
}

/// A raw context on a fresh stream named `name`.
async fn raw_stream(url: &str, name: &str) -> (jetstream::Context, stream::Stream) {
    let client = async_nats::connect(url).await.expect("connect");
    let context = jetstream::new(client);
    clear_subject(&context).await;
    let stream = context
        .create_stream(raw_stream_config(name))
        .await
        .expect("create the stream");
    (context, stream)
}

/// Publishes `events` raw, `IN_FLIGHT` at once, each awaiting its PubAck.
async fn raw_publish(context: &jetstream::Context, events: &[OrderPlaced]) {
    futures_util::stream::iter(events)
        .map(|event| async move {
            context
                .publish_with_headers(SUBJECT, raw_headers(event), event.encode_to_vec().into())
                .await?
                .await
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|published| {
            published.expect("raw publish");
            ready(())
        })
        .await;
}

/// `n` events through async-nats directly.
async fn raw_bus(url: &str, round: u64, n: usize) -> BusRound {
    let name = round_name("RAW", round);
    let (context, stream) = raw_stream(url, &name).await;
    let defaults = ConsumerConfig::new(&name);
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: SUBJECT.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: defaults.ack_wait,
            max_deliver: i64::from(defaults.max_deliver) + 1,
            max_ack_pending: i64::from(MAX_ACK_PENDING),
            ..Default::default()
        })
        .await
        .expect("create the consumer");
    let messages = consumer
        .stream()
        .max_messages_per_batch(MAX_ACK_PENDING as usize)
        .messages()
        .await
        .expect("pull messages");
    let tally = Tally::new(n);
    let counter = tally.clone();
    let consuming = tokio::spawn(messages.for_each_concurrent(
        MAX_ACK_PENDING as usize,
        move |message| {
            let counter = counter.clone();
            async move {
                let message = message.expect("receive");
                OrderPlaced::decode(message.payload.clone()).expect("decode");
                counter.handled();
                message.double_ack().await.expect("double ack");
            }
        },
    ));
    let events = events(n);

    let (cpu, services) = (process_cpu_time(), services_cpu_time());
    let start = Instant::now();
    raw_publish(&context, &events).await;
    let published_after = start.elapsed();
    let last = tally.finished("raw").await;
    let cpu_us = cpu_per_message(cpu, n);
    let services_cpu_us = services_cpu_per_message(services, n);

    consuming.abort();
    let _ = consuming.await;
    context
        .delete_stream(&name)
        .await
        .expect("delete the stream");
    BusRound {
        msgs_per_s: n as f64 / last.duration_since(start).as_secs_f64(),
        published_after,
        cpu_us,
        services_cpu_us,
    }
}

// === the outbox relay ===

/// Events committed to the outbox per transaction, before a relay round.
const OUTBOX_TX_EVENTS: usize = 100;
/// Transactions committing at once, before a relay round.
const OUTBOX_WRITERS: usize = 4;
/// How often a relay round looks whether every row is marked.
const MARKED_POLL: Duration = Duration::from_millis(2);

/// A pool on the schema `schema`, dropped and made afresh, with the
/// outbox's tables.
async fn outbox_on(url: &str, schema: &str) -> Outbox<sqlx::Postgres> {
    let admin = PgPool::connect(url).await.expect("connect to PostgreSQL");
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        )))
        .await
        .expect("make the schema");
    admin.close().await;
    let options: PgConnectOptions = url.parse().expect("DATABASE_URL");
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options.options([("search_path", schema)]))
        .await
        .expect("connect to PostgreSQL");
    let outbox = Outbox::new(pool, OutboxConfig::default());
    outbox.migrate().await.expect("migrate the outbox");
    outbox
}

/// Drops the benchmark's schema.
async fn drop_schema(outbox: Outbox<sqlx::Postgres>, schema: &str) {
    let pool = outbox.pool().clone();
    pool.execute(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .await
    .expect("drop the schema");
    pool.close().await;
}

/// The relay's batch size in 3: `SINEW_BENCH_RELAY_BATCH`, by default
/// `RelayConfig::default()`'s (256, as many as raw publish has in flight).
fn relay_batch() -> u32 {
    let default = RelayConfig::default().batch_size;
    u32::try_from(env_number("SINEW_BENCH_RELAY_BATCH", u64::from(default)))
        .unwrap_or(default)
        .max(1)
}

/// Whether every row of the outbox is marked published.
async fn all_marked(pool: &PgPool) -> bool {
    let pending: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sinew_outbox_pending)")
        .fetch_one(pool)
        .await
        .expect("count pending rows");
    !pending
}

/// Messages the stream `name` holds.
async fn stream_messages(context: &jetstream::Context, name: &str) -> u64 {
    let mut stream = context.get_stream(name).await.expect("the stream");
    stream.info().await.expect("stream info").state.messages
}

/// One side's numbers for a round of publishing alone.
#[derive(Debug, Clone, Copy)]
struct PublishRound {
    msgs_per_s: f64,
    cpu_us: Option<f64>,
    /// PostgreSQL's and NATS's CPU time per message.
    services_cpu_us: Option<f64>,
}

fn report_publish(side: &str, round: u64, n: usize, result: PublishRound) {
    println!(
        "{side:>11} round {round}: {:>8.0} msgs/s ({n} events), cpu {} per message, services' cpu {}",
        result.msgs_per_s,
        show(result.cpu_us),
        show(result.services_cpu_us),
    );
}

/// `n` raw publishes, each awaiting its PubAck, `IN_FLIGHT` at once.
async fn raw_publish_round(url: &str, round: u64, n: usize) -> PublishRound {
    let name = round_name("PUB", round);
    let (context, _stream) = raw_stream(url, &name).await;
    let events = events(n);
    let (cpu, services) = (process_cpu_time(), services_cpu_time());
    let start = Instant::now();
    raw_publish(&context, &events).await;
    let elapsed = start.elapsed();
    let cpu_us = cpu_per_message(cpu, n);
    let services_cpu_us = services_cpu_per_message(services, n);
    assert_eq!(stream_messages(&context, &name).await, n as u64);
    context
        .delete_stream(&name)
        .await
        .expect("delete the stream");
    PublishRound {
        msgs_per_s: n as f64 / elapsed.as_secs_f64(),
        cpu_us,
        services_cpu_us,
    }
}

/// Commits `n` events to the outbox, `OUTBOX_TX_EVENTS` per transaction,
/// `OUTBOX_WRITERS` transactions at once.
async fn fill_outbox(outbox: &Outbox<sqlx::Postgres>, n: usize) {
    let events = events(n);
    futures_util::stream::iter(events.chunks(OUTBOX_TX_EVENTS))
        .map(|chunk| async move {
            let mut tx = outbox.pool().begin().await?;
            for event in chunk {
                outbox.add(&mut tx, event).await?;
            }
            // No wake-up: no relay runs yet.
            tx.commit().await?;
            Ok::<_, sinew::events::Error>(())
        })
        .buffer_unordered(OUTBOX_WRITERS)
        .for_each(|committed| {
            committed.expect("commit to the outbox");
            ready(())
        })
        .await;
}

/// `n` rows committed to the outbox first, then a relay started: the time
/// until every row is published and marked.
async fn relay_round(nats: &str, database: &str, round: u64, n: usize) -> PublishRound {
    let name = round_name("RELAY", round);
    let schema = format!("sinew_bench_relay_{}", std::process::id());
    let client = async_nats::connect(nats).await.expect("connect");
    clear_subject(&jetstream::new(client)).await;
    let broker = JetStream::connect(JetStreamConfig::new(nats).stream(stream_config(&name)))
        .await
        .expect("sinew connect");
    let outbox = outbox_on(database, &schema).await;
    fill_outbox(&outbox, n).await;

    let (cpu, services) = (process_cpu_time(), services_cpu_time());
    let start = Instant::now();
    let config = RelayConfig {
        batch_size: relay_batch(),
        ..RelayConfig::default()
    };
    let relay = Relay::new(outbox.clone(), broker.clone(), config)
        .expect("relay")
        .spawn();
    while !all_marked(outbox.pool()).await {
        assert!(
            start.elapsed() < ROUND_LIMIT,
            "relay: rows still pending after {ROUND_LIMIT:?}"
        );
        tokio::time::sleep(MARKED_POLL).await;
    }
    let elapsed = start.elapsed();
    let cpu_us = cpu_per_message(cpu, n);
    let services_cpu_us = services_cpu_per_message(services, n);
    relay.shutdown().await;

    assert_eq!(
        stream_messages(broker.context(), &name).await,
        n as u64,
        "the relay published each row once"
    );
    broker
        .context()
        .delete_stream(&name)
        .await
        .expect("delete the stream");
    drop_schema(outbox, &schema).await;
    PublishRound {
        msgs_per_s: n as f64 / elapsed.as_secs_f64(),
        cpu_us,
        services_cpu_us,
    }
}

// === commit to handler ===

/// Latencies from commit to handler, at a steady rate.
struct Latency {
    events: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// `rate` events a second for `seconds`, each committed in a transaction of
/// its own through the outbox (then the relay is woken, as `Outbox::commit`
/// does; the relay also listens for PostgreSQL's notification),
/// relayed, and handled by a consumer: handler time minus commit time.
async fn commit_to_handler(nats: &str, database: &str, rate: u64, seconds: u64) -> Latency {
    let name = round_name("LATENCY", 0);
    let schema = format!("sinew_bench_latency_{}", std::process::id());
    let n = usize::try_from(rate * seconds).unwrap_or(usize::MAX).max(1);
    let client = async_nats::connect(nats).await.expect("connect");
    clear_subject(&jetstream::new(client)).await;
    let broker = JetStream::connect(JetStreamConfig::new(nats).stream(stream_config(&name)))
        .await
        .expect("sinew connect");
    let outbox = outbox_on(database, &schema).await;

    let handled: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let tally = Tally::new(n);
    let (record, counter) = (handled.clone(), tally.clone());
    let consumer = Consumer::start::<OrderPlaced, _, _>(
        &broker,
        ConsumerConfig::new(&name).max_ack_pending(MAX_ACK_PENDING),
        move |event: sinew::events::Received<OrderPlaced>| {
            let at = Instant::now();
            record.lock().expect("lock").insert(event.id, at);
            counter.handled();
            ready(Ok(()))
        },
    )
    .await
    .expect("start the consumer");
    let relay = Relay::new(outbox.clone(), broker.clone(), RelayConfig::default())
        .expect("relay")
        .spawn();
    // The first event should not wait for the relay to take its lease.
    let waiting = Instant::now();
    while !relay.is_leader() {
        assert!(waiting.elapsed() < ROUND_LIMIT, "the relay took no lease");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut committed = Vec::with_capacity(n);
    let mut ticks = tokio::time::interval(
        Duration::from_secs(1) / u32::try_from(rate.max(1)).unwrap_or(u32::MAX),
    );
    for event in events(n) {
        ticks.tick().await;
        let mut tx = outbox.pool().begin().await.expect("begin");
        let envelope = outbox.add(&mut tx, &event).await.expect("add");
        // What `Outbox::commit` does, with the commit's instant taken
        // before the relay is woken.
        tx.commit().await.expect("commit");
        committed.push((envelope.id, Instant::now()));
        outbox.wake();
    }
    tally.finished("commit to handler").await;
    relay.shutdown().await;
    consumer.shutdown().await;

    let handled = std::mem::take(&mut *handled.lock().expect("lock"));
    let mut latencies: Vec<f64> = committed
        .iter()
        .map(|(id, at)| {
            let handled_at = handled.get(id).expect("every committed event handled");
            handled_at.saturating_duration_since(*at).as_secs_f64() * 1e3
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    broker
        .context()
        .delete_stream(&name)
        .await
        .expect("delete the stream");
    drop_schema(outbox, &schema).await;
    Latency {
        events: latencies.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: latencies[latencies.len() - 1],
    }
}

// === main ===

#[tokio::main]
async fn main() {
    let nats = service("NATS", "NATS_URL", "nats://127.0.0.1:4222", 4222);
    let database = service(
        "PostgreSQL",
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test",
        5432,
    );
    let (Some(nats), Some(database)) = (nats, database) else {
        if require_services() {
            eprintln!("SINEW_REQUIRE_SERVICES=1: failing");
            std::process::exit(1);
        }
        return;
    };
    let n = usize::try_from(env_number("SINEW_BENCH_EVENTS", 20_000).max(1)).unwrap_or(20_000);
    let rounds = env_number("SINEW_BENCH_ROUNDS", 3).max(1);

    // Both sides send headers of the same size.
    let sample = OrderPlaced {
        order_id: "order-00000000".into(),
        amount_cents: 0,
    };
    let sinew_headers = header_bytes(&Envelope::new(&sample).headers());
    let raw_headers_len = header_bytes(&raw_headers(&sample));
    assert_eq!(
        sinew_headers, raw_headers_len,
        "the raw side's headers must be as large as sinew's"
    );

    match std::env::var("SINEW_BENCH_ONLY").as_deref() {
        Ok("raw") => {
            report_bus("raw", 0, n, raw_bus(&nats, 0, n).await);
            return;
        }
        Ok("sinew") => {
            report_bus("sinew", 0, n, sinew_bus(&nats, 0, n).await);
            return;
        }
        _ => {}
    }

    println!(
        "bus: {n} events per round, {rounds} rounds per side, {IN_FLIGHT} publishes in flight, max_ack_pending {MAX_ACK_PENDING}, {sinew_headers} bytes of headers"
    );
    let mut raw = Vec::new();
    let mut sinew = Vec::new();
    for round in 0..rounds {
        let result = raw_bus(&nats, round, n).await;
        report_bus("raw", round, n, result);
        raw.push(result);
        let result = sinew_bus(&nats, round, n).await;
        report_bus("sinew", round, n, result);
        sinew.push(result);
    }
    let raw_rate = median(&mut raw.iter().map(|r| r.msgs_per_s).collect::<Vec<_>>());
    let bus_rate = median(&mut sinew.iter().map(|r| r.msgs_per_s).collect::<Vec<_>>());
    let cpu_median = |side: &[BusRound]| {
        let mut cpu: Vec<f64> = side.iter().filter_map(|r| r.cpu_us).collect();
        (!cpu.is_empty()).then(|| median(&mut cpu))
    };
    println!(
        "bus: sinew {bus_rate:.0} msgs/s, raw {raw_rate:.0} msgs/s (medians); cpu per message sinew {}, raw {}",
        show(cpu_median(&sinew)),
        show(cpu_median(&raw)),
    );

    println!(
        "outbox: {n} rows per round committed first ({OUTBOX_TX_EVENTS} per transaction), then relayed in batches of {}; raw publish alone, {IN_FLIGHT} in flight",
        relay_batch()
    );
    let mut raw_publishes = Vec::new();
    let mut relays = Vec::new();
    for round in 0..rounds {
        let result = raw_publish_round(&nats, round, n).await;
        report_publish("raw publish", round, n, result);
        raw_publishes.push(result.msgs_per_s);
        let result = relay_round(&nats, &database, round, n).await;
        report_publish("relay", round, n, result);
        relays.push(result.msgs_per_s);
    }
    let raw_publish_rate = median(&mut raw_publishes);
    let outbox_rate = median(&mut relays);
    println!(
        "outbox: relay {outbox_rate:.0} msgs/s, raw publish {raw_publish_rate:.0} msgs/s (medians)"
    );

    let rate = env_number("SINEW_BENCH_RATE", 200).max(1);
    let seconds = env_number("SINEW_BENCH_LATENCY_SECONDS", 10).max(1);
    let latency = commit_to_handler(&nats, &database, rate, seconds).await;
    println!(
        "commit to handler: {} events at {rate}/s: p50 {:.2}ms, p99 {:.2}ms, max {:.2}ms",
        latency.events, latency.p50_ms, latency.p99_ms, latency.max_ms
    );
    let p99_ms = latency.p99_ms;
    println!(
        "RESULT bus_ratio={:.3} bus_msgs_per_s={bus_rate:.0} raw_msgs_per_s={raw_rate:.0} outbox_ratio={:.3} outbox_msgs_per_s={outbox_rate:.0} commit_to_handler_p99_ms={p99_ms:.2}",
        bus_rate / raw_rate,
        outbox_rate / raw_publish_rate,
    );
}
