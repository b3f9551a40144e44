//! Domain events across real processes: the `events` example's relay
//! (PostgreSQL outbox to JetStream) and shipping service (a consumer group
//! with the inbox), each a process of its own, against a private
//! `nats-server` and a PostgreSQL schema of each test's own.
//!
//! - A group of two shipping processes shares the work, and every order
//!   ships exactly once.
//! - The relay and the shipping service are killed with SIGKILL over and
//!   over, at seeded random moments, while orders are placed, their
//!   traffic slowed through proxies (the relay's to NATS, the shipping
//!   service's to PostgreSQL) so that kills land between a publish and its
//!   marking, and between a handler's commit and its acknowledgement:
//!   still every committed order ships exactly once, and the stream holds
//!   each event once.
//! - The broker is killed while orders are placed: the outbox keeps them,
//!   and once the broker is back on its port and store, every order ships
//!   exactly once without restarting the relay or the consumer.
//!
//! Build the example first (`cargo build --example events`; a plain
//! `cargo test` does). Needs PostgreSQL at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and `/usr/sbin/nats-server`;
//! skips loudly without them unless `SINEW_REQUIRE_SERVICES=1`. The crash
//! schedule's seed is `SINEW_EVENTS_CRASH_SEED` (printed on each run).

#![allow(clippy::print_stderr, reason = "the tests report what they measured")]

mod common;

use std::{
    net::{SocketAddr, ToSocketAddrs as _},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::processes::{ExampleProcess, NatsServer, Schedule, nats_server_installed};
use sinew::events::{
    JetStream, JetStreamConfig,
    outbox::{Outbox, OutboxConfig},
};
use sinew_testing::{ChaosProxy, Fault};
use sinew_workspace::proto::shop::orders::v1::OrderPlaced;
use sqlx::{PgPool, Postgres};

/// The stream the example creates, and the durable consumer of the
/// `shipping` group on `OrderPlaced`'s subject.
const STREAM: &str = "SHOP";
const DURABLE: &str = "shipping__shop_orders_placed";
const DEAD_LETTERS: &str = "SINEW_DEAD_LETTERS";

/// How long the shipped orders may take to catch up once nothing fails.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// The PostgreSQL server, if up; says SKIP (or fails under
/// `SINEW_REQUIRE_SERVICES=1`) when it is not.
async fn database_url() -> Option<String> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let authority = authority(&url);
    let server = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:5432")
    };
    let reachable = server.to_socket_addrs().ok().and_then(|mut addrs| {
        addrs
            .find(|addr| std::net::TcpStream::connect_timeout(addr, Duration::from_secs(2)).is_ok())
    });
    if reachable.is_some() {
        return Some(url);
    }
    assert!(
        !common::require_services(),
        "SINEW_REQUIRE_SERVICES=1 but PostgreSQL is not reachable at DATABASE_URL ({server})"
    );
    eprintln!("SKIP: PostgreSQL is not reachable (set DATABASE_URL); this test does nothing");
    None
}

/// The `host[:port]` of a URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority.rsplit_once('@').map_or(authority, |(_, h)| h)
}

/// One test's shop: its schema (dropped and made afresh, dropped again at
/// the end), a pool on it, and the outbox the test places orders through.
struct Shop {
    url: String,
    schema: String,
    pool: PgPool,
    outbox: Outbox<Postgres>,
}

/// How the orders stand against the shipments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Tally {
    /// Committed orders.
    orders: i64,
    /// Shipment rows.
    shipments: i64,
    /// Distinct event ids among the shipments.
    shipped_events: i64,
    /// Orders without a shipment.
    missing: i64,
    /// Shipment rows beyond the first of their order.
    duplicates: i64,
    /// Shipments of no committed order.
    strays: i64,
    /// Outbox rows not yet published.
    pending: u64,
}

impl Tally {
    fn exactly_once(&self) -> bool {
        self.missing == 0
            && self.duplicates == 0
            && self.strays == 0
            && self.pending == 0
            && self.shipments == self.orders
            && self.shipped_events == self.orders
    }
}

/// What the broker saw.
#[derive(Debug, Clone, Copy, Default)]
struct BrokerCounts {
    /// Messages stored in the stream: a relay's republish the broker
    /// deduplicated is not among them.
    messages: u64,
    /// Deliveries to the group, redeliveries included.
    deliveries: u64,
    /// Messages not yet delivered to the group.
    undelivered: u64,
    /// Delivered, not yet acknowledged.
    unacknowledged: u64,
    /// Messages in the dead-letter stream.
    dead_letters: u64,
}

impl BrokerCounts {
    /// Deliveries beyond the first of each message.
    fn redeliveries(&self) -> u64 {
        self.deliveries.saturating_sub(self.messages)
    }
}

impl Shop {
    /// A shop in schema `events_<name>_<pid>`, or `None` (skipped) without
    /// PostgreSQL or `nats-server`.
    async fn new(name: &str) -> Option<Self> {
        if !nats_server_installed() {
            return None;
        }
        let url = database_url().await?;
        let schema = format!("events_{name}_{}", std::process::id());
        let admin = PgPool::connect(&url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        )))
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
        let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options.options([("search_path", schema.as_str())]))
            .await
            .unwrap();
        let outbox = Outbox::new(pool.clone(), OutboxConfig::default());
        outbox.migrate().await.unwrap();
        Some(Self {
            url,
            schema,
            pool,
            outbox,
        })
    }

    /// The example's environment for this shop and the broker at
    /// `nats_url`: events come again 1s after a dead consumer took them,
    /// and a dead relay's lease expires after 1s.
    fn env(&self, nats_url: &str) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.url.clone()),
            ("NATS_URL", nats_url.to_owned()),
            ("SINEW_EVENTS_SCHEMA", self.schema.clone()),
            ("SINEW_EVENTS_ACK_WAIT", "1s".to_owned()),
            ("SINEW_EVENTS_LEASE_TTL", "1s".to_owned()),
        ]
    }

    /// The PostgreSQL server's address, from the URL.
    fn database_addr(&self) -> SocketAddr {
        self.host_port()
            .to_socket_addrs()
            .unwrap()
            .next()
            .expect("an address for the PostgreSQL host")
    }

    /// The URL with `addr` in place of the server's host and port.
    fn database_url_via(&self, addr: SocketAddr) -> String {
        self.url.replacen(self.host_port(), &addr.to_string(), 1)
    }

    /// `host:port` of the URL, the port 5432 when it names none.
    fn host_port(&self) -> &str {
        let host_port = authority(&self.url);
        assert!(
            host_port.contains(':'),
            "DATABASE_URL should name its port for this test: {host_port}"
        );
        host_port
    }

    /// Places order `id`: its row and its `OrderPlaced`, in one
    /// transaction. The tables are the example's: a relay or shipping
    /// process must have started first.
    async fn place(&self, id: String) {
        place(&self.outbox, id).await;
    }

    /// The tally, from one snapshot of the tables.
    async fn tally(&self) -> Tally {
        let (orders, shipments, shipped_events, missing, duplicates, strays): (
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
        ) = sqlx::query_as(
            "SELECT
                (SELECT COUNT(*) FROM orders),
                (SELECT COUNT(*) FROM shipments),
                (SELECT COUNT(DISTINCT event_id) FROM shipments),
                (SELECT COUNT(*) FROM orders o
                 WHERE NOT EXISTS (SELECT 1 FROM shipments s WHERE s.order_id = o.id)),
                (SELECT COALESCE(SUM(n - 1), 0)::BIGINT FROM
                 (SELECT COUNT(*) AS n FROM shipments GROUP BY order_id) AS per_order),
                (SELECT COUNT(*) FROM shipments s
                 WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = s.order_id))",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        Tally {
            orders,
            shipments,
            shipped_events,
            missing,
            duplicates,
            strays,
            pending: self.outbox.pending().await.unwrap().count,
        }
    }

    /// Shipments per shipper, by name.
    async fn shipped_by(&self) -> Vec<(String, i64)> {
        sqlx::query_as("SELECT shipper, COUNT(*) FROM shipments GROUP BY shipper ORDER BY shipper")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// Waits (at most `limit`) until nothing is left to do: no outbox row
    /// pending, every order shipped, and nothing undelivered or
    /// unacknowledged on the broker. Returns the tally then (or at the
    /// limit, for the assertions to show).
    async fn drain(&self, broker: &JetStream, limit: Duration) -> (Tally, BrokerCounts) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let tally = self.tally().await;
            let counts = broker_counts(broker).await;
            let idle = counts.is_some_and(|c| c.undelivered == 0 && c.unacknowledged == 0);
            if (tally.pending == 0 && tally.missing == 0 && idle)
                || tokio::time::Instant::now() > deadline
            {
                return (tally, counts.unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        // Best effort, and only when the test passed: a failed test's
        // tables stay for a look.
        if std::thread::panicking() {
            eprintln!("kept schema {} for inspection", self.schema);
            return;
        }
        let url = self.url.clone();
        let schema = self.schema.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(admin) = PgPool::connect(&url).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .execute(&admin)
                    .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

async fn place(outbox: &Outbox<Postgres>, order_id: String) {
    let mut tx = outbox.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO orders (id, amount_cents) VALUES ($1, $2)")
        .bind(&order_id)
        .bind(1250_i64)
        .execute(&mut *tx)
        .await
        .unwrap();
    outbox
        .add(
            &mut tx,
            &OrderPlaced {
                order_id,
                amount_cents: 1250,
            },
        )
        .await
        .unwrap();
    outbox.commit(tx).await.unwrap();
}

/// The test's own connection to the broker, straight (no proxy).
async fn broker(nats: &NatsServer) -> JetStream {
    JetStream::connect(JetStreamConfig::new(nats.url()))
        .await
        .unwrap()
}

/// The stream's and the group's counts, or `None` while the broker does
/// not answer (or the example has not created them yet).
async fn broker_counts(broker: &JetStream) -> Option<BrokerCounts> {
    let stream = broker.context().get_stream(STREAM).await.ok()?;
    let messages = stream.cached_info().state.messages;
    let consumer = stream.consumer_info(DURABLE).await.ok()?;
    let dead = broker.context().get_stream(DEAD_LETTERS).await.ok()?;
    Some(BrokerCounts {
        dead_letters: dead.cached_info().state.messages,
        messages,
        deliveries: consumer.delivered.consumer_sequence,
        undelivered: consumer.num_pending,
        unacknowledged: u64::try_from(consumer.num_ack_pending).unwrap_or(u64::MAX),
    })
}

fn assert_exactly_once(tally: Tally, expected_orders: i64) {
    assert!(
        tally.exactly_once() && tally.orders == expected_orders,
        "every one of {expected_orders} orders should ship exactly once: {tally:?} \
         ({} missing, {} duplicates)",
        tally.missing,
        tally.duplicates
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_processes_ships_every_order_once() {
    let Some(shop) = Shop::new("group").await else {
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(store.path()).await;
    let env = shop.env(&nats.url());
    let _relay = ExampleProcess::start("events", &["relay"], &env).await;
    let shipper = |name: &str| {
        let mut env = env.clone();
        env.push(("SINEW_EVENTS_SHIPPER", name.to_owned()));
        env
    };
    let _ship_a = ExampleProcess::start("events", &["ship"], &shipper("a")).await;
    let _ship_b = ExampleProcess::start("events", &["ship"], &shipper("b")).await;

    let placed =
        ExampleProcess::run("events", &["place", "200"], &env, Duration::from_secs(60)).await;
    assert!(placed.success(), "`events place 200` failed: {placed}");

    let broker = broker(&nats).await;
    let (tally, counts) = shop.drain(&broker, DRAIN_LIMIT).await;
    let by = shop.shipped_by().await;
    eprintln!("group: {tally:?}, {counts:?}, shipped by {by:?}");
    assert_exactly_once(tally, 200);
    assert_eq!(counts.messages, 200, "one stored message per event");
    assert_eq!(by.len(), 2, "both shipping processes shipped: {by:?}");
    assert!(by.iter().all(|(_, n)| *n > 0), "{by:?}");
}

/// Kills `process`, the example's `role` started with `env`, `kills`
/// times, each time after a seeded wait between `low` and `high` once it
/// is ready, and starts it again; returns the last one, running, and how
/// many it killed.
async fn crash_repeatedly(
    mut process: ExampleProcess,
    role: &'static str,
    env: &[(&'static str, String)],
    kills: usize,
    (low, high): (Duration, Duration),
    mut schedule: Schedule,
) -> (ExampleProcess, usize) {
    let mut killed = 0;
    for _ in 0..kills {
        tokio::time::sleep(schedule.between(low, high)).await;
        if let Some(status) = process.exited() {
            panic!("`events {role}` stopped by itself: {status}");
        }
        process.kill();
        killed += 1;
        process = ExampleProcess::start("events", &[role], env).await;
    }
    (process, killed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_relay_and_the_consumer_loses_and_repeats_nothing() {
    const KILLS: usize = 12;
    let Some(shop) = Shop::new("crash").await else {
        return;
    };
    let seed = std::env::var("SINEW_EVENTS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    eprintln!("crash schedule seed {seed} (SINEW_EVENTS_CRASH_SEED)");
    let store = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(store.path()).await;

    // Each process reaches NATS through a proxy that holds every chunk
    // 30ms each way: the relay waits 60ms or more for a publish's
    // acknowledgement before it marks the row, so relay kills land
    // between the two.
    let mut relay_link = ChaosProxy::start(nats.addr()).await;
    relay_link.set(Fault::Delay(Duration::from_millis(30)));
    let mut ship_link = ChaosProxy::start(nats.addr()).await;
    ship_link.set(Fault::Delay(Duration::from_millis(30)));
    // The shipping service reaches PostgreSQL through one too, holding
    // chunks 5ms: a COMMIT the server has taken stays unanswered for 5ms
    // or more, on each of the service's connections in turn, so consumer
    // kills land between a handler's commit and its acknowledgement (the
    // proxy outlives the process it serves: what was sent before the kill
    // still arrives). More delay makes the service slower than the orders
    // come, and events wait past ack_wait.
    let mut ship_db = ChaosProxy::start(shop.database_addr()).await;
    ship_db.set(Fault::Delay(Duration::from_millis(5)));
    let relay_env = shop.env(&format!("nats://{}", relay_link.addr()));
    let mut ship_env = shop.env(&format!("nats://{}", ship_link.addr()));
    for (key, value) in &mut ship_env {
        if *key == "DATABASE_URL" {
            *value = shop.database_url_via(ship_db.addr());
        }
    }

    // The processes create the tables; orders flow from then on, one
    // every 20ms or so, until the crashes are over.
    let relay = ExampleProcess::start("events", &["relay"], &relay_env).await;
    let ship = ExampleProcess::start("events", &["ship"], &ship_env).await;
    let placing = Arc::new(AtomicBool::new(true));
    let placer = tokio::spawn({
        let outbox = shop.outbox.clone();
        let placing = placing.clone();
        async move {
            let mut n = 0_u64;
            while placing.load(Ordering::Relaxed) {
                place(&outbox, format!("o-{n}")).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        }
    });

    // The relay takes over its dead predecessor's lease within about
    // 1.3s, so it lives long enough to publish between kills; the
    // shipping service is killed sooner and more often mid-batch.
    let ((relay, relay_kills), (ship, ship_kills)) = tokio::join!(
        crash_repeatedly(
            relay,
            "relay",
            &relay_env,
            KILLS,
            (Duration::from_millis(700), Duration::from_millis(2200)),
            Schedule(seed),
        ),
        crash_repeatedly(
            ship,
            "ship",
            &ship_env,
            KILLS,
            (Duration::from_millis(300), Duration::from_millis(1500)),
            Schedule(seed ^ 0xdead_beef),
        ),
    );
    placing.store(false, Ordering::Relaxed);
    let placed = placer.await.unwrap();

    let broker = broker(&nats).await;
    let (tally, counts) = shop.drain(&broker, DRAIN_LIMIT).await;
    eprintln!(
        "crash: {relay_kills} kills of the relay and {ship_kills} of the consumer, \
         {placed} orders placed; {tally:?}; the stream stored {} messages for {} orders \
         (the broker drops a relay's republish of an event as a duplicate, unseen here); \
         the group had {} deliveries, {} of them redeliveries (of events a killed \
         consumer held, or slower than ack_wait; the inbox skips those applied before); \
         {counts:?}",
        counts.messages,
        tally.orders,
        counts.deliveries,
        counts.redeliveries(),
    );
    assert_exactly_once(tally, i64::try_from(placed).unwrap());
    assert_eq!(
        counts.messages, placed,
        "the broker stores each event once, however often the relay published it"
    );
    assert_eq!(counts.dead_letters, 0, "no event gave up: {counts:?}");
    assert!(
        counts.redeliveries() > 0,
        "the kills should have left events to deliver again: {counts:?}"
    );
    drop((relay, ship));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_delays_events_and_loses_none() {
    let Some(shop) = Shop::new("outage").await else {
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(store.path()).await;
    let env = shop.env(&nats.url());
    let mut relay = ExampleProcess::start("events", &["relay"], &env).await;
    let mut ship = ExampleProcess::start("events", &["ship"], &env).await;
    let broker = broker(&nats).await;

    for n in 0..20 {
        shop.place(format!("before-{n}")).await;
    }
    let (tally, _) = shop.drain(&broker, DRAIN_LIMIT).await;
    assert_exactly_once(tally, 20);

    nats.kill();
    for n in 0..20 {
        shop.place(format!("during-{n}")).await;
    }
    // The relay tries, and fails, for a while: the outbox keeps every
    // event of the outage. The client holds a publish made while it is
    // disconnected, and the relay waits for its acknowledgement up to the
    // JetStream request timeout (5s): the outage lasts longer, so that
    // publishes fail and the relay goes through its retries.
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let during = shop.tally().await;
    assert_eq!(during.pending, 20, "the outage's events wait: {during:?}");
    assert_eq!(during.missing, 20, "{during:?}");
    assert!(relay.exited().is_none(), "the relay outlives the outage");
    assert!(ship.exited().is_none(), "the consumer outlives the outage");

    nats.restart().await;
    for n in 0..20 {
        shop.place(format!("after-{n}")).await;
    }
    let (tally, counts) = shop.drain(&broker, DRAIN_LIMIT).await;
    eprintln!("outage: {tally:?}, {counts:?}");
    assert_exactly_once(tally, 60);
    assert_eq!(counts.messages, 60, "one stored message per event");
    assert_eq!(counts.dead_letters, 0, "no event gave up: {counts:?}");
    assert!(relay.exited().is_none() && ship.exited().is_none());
}
