//! Domain events for sinew: typed from the contract, carried over NATS
//! JetStream, never lost between a database commit and the broker, and
//! never applied twice.
//!
//! A protobuf message becomes an event with sinew's message option; the
//! contract then says everything that would otherwise be a string in the
//! code (the type, the subject, the aggregate key):
//!
//! ```proto
//! import "sinew/options.proto";
//!
//! message OrderPlaced {
//!   option (sinew.event) = { subject: "shop.orders.placed" aggregate: "order_id" };
//!   string order_id = 1;
//!   int64 amount_cents = 2;
//! }
//! ```
//!
//! sinew-build checks the option and implements [`Event`] for the message.
//! Then:
//!
//! - **Publishing**: the [`Outbox`] writes the event in the
//!   same sqlx transaction as the state change (SQLite or PostgreSQL), and
//!   a [`Relay`] publishes it after the commit, waiting for
//!   the broker's acknowledgement before marking it published
//!   ([`outbox`] has the guarantees).
//! - **Carrying**: each event travels in an [`Envelope`] (NATS headers plus
//!   the encoded message) whose id, a UUIDv7, is the outbox row's id, the
//!   JetStream `Nats-Msg-Id` (the server drops a repeat inside its
//!   deduplication window) and the inbox key.
//! - **Consuming**: a [`Consumer`] runs a typed [`Handler`] as a member of a
//!   consumer group (a durable JetStream pull consumer); retries by a
//!   backoff list, dead letters, panics and bad input are its business
//!   ([`consumer`] has the rules and the ordering guarantee).
//! - **Applying once**: the [`Inbox`] records each handled event id in the
//!   consumer's database in the same transaction as the handler's writes,
//!   so a redelivered event is acknowledged without being applied again.
//!
//! Two brokers implement [`Broker`]: [`JetStream`], the production one,
//! which creates the streams it is configured with, and [`MemoryBroker`],
//! with the same semantics in one process and no durability, for tests and
//! demos.
//!
//! # Example
//!
//! The whole path in one process, on SQLite and the in-memory broker (with
//! PostgreSQL and [`JetStream`] the code is the same but for the pool and
//! the broker; `examples/events` runs each part as a process of its own):
//!
//! ```
//! use std::time::Duration;
//!
//! use sinew_events::{
//!     Consumer, ConsumerConfig, Event, HandlerError, Inbox, InboxConfig, MemoryBroker,
//!     Received, TxHandler,
//!     outbox::{Outbox, OutboxConfig, Relay, RelayConfig},
//! };
//! use sqlx::{Sqlite, Transaction};
//!
//! // What sinew-build generates from the contract above.
//! #[derive(Clone, PartialEq, prost::Message)]
//! struct OrderPlaced {
//!     #[prost(string, tag = "1")]
//!     order_id: String,
//!     #[prost(int64, tag = "2")]
//!     amount_cents: i64,
//! }
//! impl Event for OrderPlaced {
//!     const TYPE: &'static str = "shop.orders.v1.OrderPlaced";
//!     const SUBJECT: &'static str = "shop.orders.placed";
//!     const SCHEMA_VERSION: u32 = 1;
//!     fn aggregate_id(&self) -> String {
//!         self.order_id.clone()
//!     }
//! }
//!
//! // The shipping service: one shipment per order, in the inbox's transaction.
//! struct Ship;
//! impl TxHandler<OrderPlaced, Sqlite> for Ship {
//!     async fn handle(
//!         &self,
//!         tx: &mut Transaction<'static, Sqlite>,
//!         event: &Received<OrderPlaced>,
//!     ) -> Result<(), HandlerError> {
//!         sqlx::query("INSERT INTO shipments (order_id) VALUES (?1)")
//!             .bind(&event.event.order_id)
//!             .execute(&mut **tx)
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let pool = sqlx::SqlitePool::connect(&format!(
//!     "sqlite://{}?mode=rwc",
//!     dir.path().join("shop.db").display()
//! ))
//! .await?;
//! sqlx::raw_sql(
//!     "CREATE TABLE orders (id TEXT PRIMARY KEY);
//!      CREATE TABLE shipments (order_id TEXT NOT NULL);",
//! )
//! .execute(&pool)
//! .await?;
//!
//! let broker = MemoryBroker::new();
//! let outbox = Outbox::new(pool.clone(), OutboxConfig::default());
//! outbox.migrate().await?;
//! let relay = Relay::new(outbox.clone(), broker.clone(), RelayConfig::default())?.spawn();
//! let inbox = Inbox::new(pool.clone(), InboxConfig::default()).await?;
//! let consumer = Consumer::start::<OrderPlaced, _, _>(
//!     &broker,
//!     ConsumerConfig::new("shipping"),
//!     inbox.handler(Ship),
//! )
//! .await?;
//!
//! // The order service: the order and its event commit together.
//! let mut tx = pool.begin().await?;
//! sqlx::query("INSERT INTO orders (id) VALUES ('o-1')")
//!     .execute(&mut *tx)
//!     .await?;
//! outbox
//!     .add(&mut tx, &OrderPlaced { order_id: "o-1".into(), amount_cents: 1250 })
//!     .await?;
//! outbox.commit(tx).await?; // and wakes the relay
//!
//! let mut shipped = 0;
//! for _ in 0..500 {
//!     shipped = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM shipments")
//!         .fetch_one(&pool)
//!         .await?;
//!     if shipped == 1 {
//!         break;
//!     }
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//! }
//! assert_eq!(shipped, 1);
//! consumer.shutdown().await;
//! relay.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Health and metrics
//!
//! [`Broker::check`] and [`Outbox::lag_check`]
//! are readiness checks that fit the scaffold's probes:
//!
//! ```ignore
//! Server::builder(config)
//!     .readiness(Probe::new("broker", move || bus.check()))
//!     .readiness(Probe::new("outbox", move || outbox.lag_check(Duration::from_secs(30))))
//! ```
//!
//! The instruments (published, consumed, redelivered, dead-lettered,
//! inbox duplicates, handler duration, outbox pending and lag) are listed
//! in the README's events section. A consumer's span
//! (`process <subject>`, kind consumer) is a child of the span that
//! recorded the event, so one trace follows an order from the RPC that
//! placed it through every reaction.

mod broker;
pub mod config;
pub mod consumer;
pub mod envelope;
mod error;
pub mod inbox;
pub mod jetstream;
pub mod memory;
mod metrics;
pub mod outbox;

pub use broker::{
    Broker, DEAD_DELIVERIES, DEAD_GROUP, DEAD_REASON, DEAD_SUBJECT, Delivery, Published,
};
pub use config::EventsConfig;
pub use consumer::{Consumer, ConsumerConfig, Handler, HandlerError, Received};
pub use envelope::Envelope;
pub use error::{EnvelopeError, Error};
pub use inbox::{Inbox, InboxConfig, InboxDatabase, InboxHandler, TxHandler};
pub use jetstream::{JetStream, JetStreamConfig, Storage, StreamConfig};
pub use memory::MemoryBroker;
pub use outbox::{Outbox, OutboxConfig, Relay, RelayConfig, RelayHandle};
pub use sinew_core::event::Event;
