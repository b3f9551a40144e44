//! Domain events end to end. An order service records `OrderPlaced` in its
//! outbox in the same transaction as the order; a relay publishes it; a
//! shipping service consumes it through an inbox, so that each order is
//! shipped once whatever crashes in between.
//!
//! Run with:
//!
//! - `cargo run --example events`: the embedded demo, in one process, on
//!   SQLite and the in-memory broker (not durable): places three orders,
//!   relays them, ships them, prints what happened and exits 0.
//! - `cargo run --example events -- relay`: publishes the outbox of the
//!   PostgreSQL database at `DATABASE_URL` to the NATS JetStream server at
//!   `NATS_URL`, until SIGTERM or Ctrl-C.
//! - `cargo run --example events -- ship`: consumes `OrderPlaced` as the
//!   consumer group `shipping`, writing one `shipments` row per order in
//!   the inbox's transaction, until SIGTERM or Ctrl-C.
//! - `cargo run --example events -- place N`: places N orders, each in a
//!   transaction of its own with its event, and exits.
//!
//! `relay` and `ship` print `ready` once they run. The environment:
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
//! `NATS_URL` (default `nats://127.0.0.1:4222`), `SINEW_EVENTS_SCHEMA`
//! (the PostgreSQL schema of the tables, default `public`),
//! `SINEW_EVENTS_ACK_WAIT` and `SINEW_EVENTS_LEASE_TTL` (durations such as
//! `1s`: how soon an unacknowledged event comes again, and a dead relay's
//! lease expires; defaults 30s and 10s), and `SINEW_EVENTS_SHIPPER` (the
//! name `ship` writes in each of its shipments, default `ship`).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example program talks to its user"
)]

use std::{process::ExitCode, time::Duration};

use sinew::events::{
    Consumer, ConsumerConfig, HandlerError, Inbox, InboxConfig, JetStream, JetStreamConfig,
    MemoryBroker, Received, StreamConfig, TxHandler,
    outbox::{Outbox, OutboxConfig, OutboxDatabase, Relay, RelayConfig},
};
use sinew_workspace::proto::shop::orders::v1::OrderPlaced;
use sqlx::{Postgres, Sqlite, Transaction};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The shipping service's handler: one shipment per order, written in the
/// inbox's transaction, signed with the shipper's name.
struct Ship {
    shipper: String,
}

impl TxHandler<OrderPlaced, Postgres> for Ship {
    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &Received<OrderPlaced>,
    ) -> Result<(), HandlerError> {
        sqlx::query("INSERT INTO shipments (event_id, order_id, shipper) VALUES ($1, $2, $3)")
            .bind(&event.id)
            .bind(&event.event.order_id)
            .bind(&self.shipper)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

impl TxHandler<OrderPlaced, Sqlite> for Ship {
    async fn handle(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        event: &Received<OrderPlaced>,
    ) -> Result<(), HandlerError> {
        sqlx::query("INSERT INTO shipments (event_id, order_id, shipper) VALUES (?1, ?2, ?3)")
            .bind(&event.id)
            .bind(&event.event.order_id)
            .bind(&self.shipper)
            .execute(&mut **tx)
            .await?;
        println!("shipped {}", event.event.order_id);
        Ok(())
    }
}

const TABLES: &str =
    "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, amount_cents BIGINT NOT NULL);
     CREATE TABLE IF NOT EXISTS shipments (
         event_id TEXT NOT NULL, order_id TEXT NOT NULL, shipper TEXT NOT NULL
     )";

fn env_duration(key: &'static str, default: Duration) -> Result<Duration, BoxError> {
    match std::env::var(key) {
        Ok(text) => humantime::parse_duration(&text).map_err(|e| format!("{key}: {e}").into()),
        Err(_) => Ok(default),
    }
}

async fn postgres() -> Result<sqlx::PgPool, BoxError> {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut options: PgConnectOptions = url.parse()?;
    if let Ok(schema) = std::env::var("SINEW_EVENTS_SCHEMA") {
        options = options.options([("search_path", schema)]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await?;
    // The relay and the shipping service may start at once: PostgreSQL's
    // `CREATE ... IF NOT EXISTS` races, so one lock serializes it.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(42)")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(TABLES).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(pool)
}

async fn jetstream() -> Result<JetStream, BoxError> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let config = JetStreamConfig::new(url).stream(StreamConfig::new("SHOP", ["shop.>"]));
    Ok(JetStream::connect(config).await?)
}

/// Places an order: the order row and its event in one transaction.
async fn place<DB: OutboxDatabase>(
    outbox: &Outbox<DB>,
    insert: &'static str,
    order_id: String,
) -> Result<(), BoxError>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let amount_cents = 1250;
    let mut tx = outbox.pool().begin().await?;
    sqlx::query(insert)
        .bind(order_id.clone())
        .bind(amount_cents)
        .execute(&mut *tx)
        .await?;
    outbox
        .add(
            &mut tx,
            &OrderPlaced {
                order_id,
                amount_cents,
            },
        )
        .await?;
    outbox.commit(tx).await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn relay() -> Result<(), BoxError> {
    let pool = postgres().await?;
    let outbox = Outbox::new(pool, OutboxConfig::default());
    outbox.migrate().await?;
    let config = RelayConfig {
        lease_ttl: env_duration("SINEW_EVENTS_LEASE_TTL", Duration::from_secs(10))?,
        ..RelayConfig::default()
    };
    let relay = Relay::new(outbox, jetstream().await?, config)?.spawn();
    println!("ready");
    shutdown_signal().await;
    relay.shutdown().await;
    Ok(())
}

async fn ship() -> Result<(), BoxError> {
    let pool = postgres().await?;
    let inbox = Inbox::new(pool, InboxConfig::default()).await?;
    let config = ConsumerConfig::new("shipping")
        .ack_wait(env_duration(
            "SINEW_EVENTS_ACK_WAIT",
            Duration::from_secs(30),
        )?)
        .backoff([Duration::from_millis(100), Duration::from_secs(1)]);
    let ship = Ship {
        shipper: std::env::var("SINEW_EVENTS_SHIPPER").unwrap_or_else(|_| "ship".to_owned()),
    };
    let consumer =
        Consumer::start::<OrderPlaced, _, _>(&jetstream().await?, config, inbox.handler(ship))
            .await?;
    println!("ready");
    shutdown_signal().await;
    consumer.shutdown().await;
    Ok(())
}

async fn place_many(count: u64) -> Result<(), BoxError> {
    let pool = postgres().await?;
    let outbox = Outbox::new(pool, OutboxConfig::default());
    outbox.migrate().await?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    for n in 0..count {
        let insert = "INSERT INTO orders (id, amount_cents) VALUES ($1, $2)";
        place(&outbox, insert, format!("o-{run}-{n}")).await?;
    }
    Ok(())
}

/// Everything in one process, on SQLite and the in-memory broker.
async fn demo() -> Result<(), BoxError> {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let dir = tempfile::tempdir()?;
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("shop.sqlite"))
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new().connect_with(options).await?;
    sqlx::raw_sql(TABLES).execute(&pool).await?;

    let broker = MemoryBroker::new();
    let outbox = Outbox::new(pool.clone(), OutboxConfig::default());
    outbox.migrate().await?;
    let relay = Relay::new(outbox.clone(), broker.clone(), RelayConfig::default())?.spawn();
    let inbox = Inbox::new(pool.clone(), InboxConfig::default()).await?;
    let consumer = Consumer::start::<OrderPlaced, _, _>(
        &broker,
        ConsumerConfig::new("shipping"),
        inbox.handler(Ship {
            shipper: "demo".to_owned(),
        }),
    )
    .await?;

    for n in 1..=3 {
        let insert = "INSERT INTO orders (id, amount_cents) VALUES (?1, ?2)";
        place(&outbox, insert, format!("o-{n}")).await?;
        println!("placed o-{n}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (shipped,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM shipments")
            .fetch_one(&pool)
            .await?;
        if shipped == 3 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("only {shipped} of 3 orders shipped").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.shutdown().await;
    relay.shutdown().await;
    println!(
        "3 orders placed, published and shipped once each ({} events on the broker)",
        broker.messages("shop.orders.placed").len()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("demo") => demo().await,
        Some("relay") => relay().await,
        Some("ship") => ship().await,
        Some("place") => match args.get(1).and_then(|n| n.parse().ok()) {
            Some(count) => place_many(count).await,
            None => Err("usage: events place <count>".into()),
        },
        Some(other) => {
            Err(format!("unknown command `{other}`: demo, relay, ship or place N").into())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("events: {error}");
            ExitCode::FAILURE
        }
    }
}
