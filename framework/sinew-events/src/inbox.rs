//! The inbox: each event applied once, in the handler's own transaction.
//!
//! [`Inbox::handler`] wraps a [`TxHandler`]. For each delivery it begins a
//! transaction in the consumer's database, records the event id for the
//! consumer group (table `sinew_inbox`), runs the handler with that
//! transaction, and commits; the consumer acknowledges only after the
//! commit. An event whose id is already recorded (a redelivery after a
//! crash between commit and acknowledgement, or a second copy published
//! outside the broker's deduplication window) is acknowledged without
//! running the handler again. Two deliveries of one event at the same time
//! serialize on the recorded id: one applies it, the other finds it.
//!
//! Recorded ids are purged after [`InboxConfig::retention`], which must be
//! longer than any event can come again: longer than the stream keeps
//! events (`max_age`) and than an outbox row can wait to be published.
//!
//! ```no_run
//! use sinew_events::{Consumer, ConsumerConfig, HandlerError, Inbox, InboxConfig, Received, TxHandler};
//! use sqlx::{Postgres, Transaction};
//! # #[derive(Clone, PartialEq, prost::Message)] struct OrderPlaced { #[prost(string, tag = "1")] order_id: String }
//! # impl sinew_events::Event for OrderPlaced { const TYPE: &'static str = "shop.OrderPlaced";
//! #   const SUBJECT: &'static str = "shop.orders.placed"; const SCHEMA_VERSION: u32 = 1;
//! #   fn aggregate_id(&self) -> String { self.order_id.clone() } }
//!
//! struct Ship;
//!
//! impl TxHandler<OrderPlaced, Postgres> for Ship {
//!     async fn handle(
//!         &self,
//!         tx: &mut Transaction<'static, Postgres>,
//!         event: &Received<OrderPlaced>,
//!     ) -> Result<(), HandlerError> {
//!         sqlx::query("INSERT INTO shipments (order_id) VALUES ($1)")
//!             .bind(&event.event.order_id)
//!             .execute(&mut **tx)
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! # async fn run(pool: sqlx::PgPool, bus: sinew_events::JetStream) -> Result<(), sinew_events::Error> {
//! let inbox = Inbox::new(pool, InboxConfig::default()).await?;
//! let consumer = Consumer::start::<OrderPlaced, _, _>(
//!     &bus,
//!     ConsumerConfig::new("shipping"),
//!     inbox.handler(Ship),
//! )
//! .await?;
//! # Ok(()) }
//! ```

use std::{
    future::Future,
    marker::PhantomData,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sinew_core::event::Event;
use sqlx::{Pool, Postgres, Sqlite, Transaction};

use crate::{
    Error,
    consumer::{ConsumerConfig, Handler, HandlerError, Received},
    metrics::{consumer_attributes, metrics},
};

/// Rows deleted per statement when purging, so that a purge never holds
/// a long lock.
const PURGE_BATCH: i64 = 1000;

/// The inbox's settings.
#[derive(Debug, Clone)]
pub struct InboxConfig {
    /// How long a handled event's id is kept. Default 14 days.
    pub retention: Duration,
    /// How often old ids are purged (by the handler that commits after
    /// the interval has passed). Default 10 minutes.
    pub purge_interval: Duration,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(14 * 24 * 3600),
            purge_interval: Duration::from_secs(600),
        }
    }
}

/// A database the inbox can live in: SQLite or PostgreSQL.
pub trait InboxDatabase: sqlx::Database + sealed::Sealed {}

impl InboxDatabase for Sqlite {}
impl InboxDatabase for Postgres {}

mod sealed {
    use std::future::Future;

    use sqlx::{Pool, Transaction};

    /// The SQL of each database.
    pub trait Sealed: sqlx::Database + Sized {
        fn migrate(pool: &Pool<Self>) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
        /// Records `id` for `group`; false if it was there already.
        fn record(
            tx: &mut Transaction<'static, Self>,
            group: &str,
            id: &str,
            now_ms: i64,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
        /// Deletes up to `limit` ids recorded before `before_ms`.
        fn purge(
            pool: &Pool<Self>,
            before_ms: i64,
            limit: i64,
        ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
    }

    impl Sealed for sqlx::Sqlite {
        async fn migrate(pool: &Pool<Self>) -> Result<(), sqlx::Error> {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS sinew_inbox (
                    consumer_group TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    handled_at_ms INTEGER NOT NULL,
                    PRIMARY KEY (consumer_group, event_id)
                )",
            )
            .execute(pool)
            .await?;
            sqlx::query(
                "CREATE INDEX IF NOT EXISTS sinew_inbox_handled ON sinew_inbox (handled_at_ms)",
            )
            .execute(pool)
            .await?;
            Ok(())
        }

        async fn record(
            tx: &mut Transaction<'static, Self>,
            group: &str,
            id: &str,
            now_ms: i64,
        ) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(
                "INSERT INTO sinew_inbox (consumer_group, event_id, handled_at_ms)
                 VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )
            .bind(group)
            .bind(id)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn purge(pool: &Pool<Self>, before_ms: i64, limit: i64) -> Result<u64, sqlx::Error> {
            let done = sqlx::query(
                "DELETE FROM sinew_inbox WHERE rowid IN (
                    SELECT rowid FROM sinew_inbox WHERE handled_at_ms < ?1 LIMIT ?2)",
            )
            .bind(before_ms)
            .bind(limit)
            .execute(pool)
            .await?;
            Ok(done.rows_affected())
        }
    }

    impl Sealed for sqlx::Postgres {
        async fn migrate(pool: &Pool<Self>) -> Result<(), sqlx::Error> {
            // Replicas starting at once race on `CREATE ... IF NOT EXISTS`
            // in PostgreSQL: one lock serializes sinew's migrations.
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(crate::outbox::PG_MIGRATE_LOCK)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS sinew_inbox (
                    consumer_group TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    handled_at_ms BIGINT NOT NULL,
                    PRIMARY KEY (consumer_group, event_id)
                )",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "CREATE INDEX IF NOT EXISTS sinew_inbox_handled ON sinew_inbox (handled_at_ms)",
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }

        async fn record(
            tx: &mut Transaction<'static, Self>,
            group: &str,
            id: &str,
            now_ms: i64,
        ) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(
                "INSERT INTO sinew_inbox (consumer_group, event_id, handled_at_ms)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(group)
            .bind(id)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn purge(pool: &Pool<Self>, before_ms: i64, limit: i64) -> Result<u64, sqlx::Error> {
            let done = sqlx::query(
                "DELETE FROM sinew_inbox WHERE ctid IN (
                    SELECT ctid FROM sinew_inbox WHERE handled_at_ms < $1 LIMIT $2)",
            )
            .bind(before_ms)
            .bind(limit)
            .execute(pool)
            .await?;
            Ok(done.rows_affected())
        }
    }
}

/// Handles an event inside the inbox's transaction: what it writes there
/// commits together with the record that the event was handled.
pub trait TxHandler<E, DB: sqlx::Database>: Send + Sync + 'static {
    /// Handles one event; an error rolls the transaction back.
    fn handle(
        &self,
        tx: &mut Transaction<'static, DB>,
        event: &Received<E>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// The consumer's record of handled events, in its own database. Clones
/// share the pool.
#[derive(Debug)]
pub struct Inbox<DB: InboxDatabase> {
    pool: Pool<DB>,
    config: InboxConfig,
    last_purge: Arc<Mutex<Instant>>,
}

impl<DB: InboxDatabase> Clone for Inbox<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            config: self.config.clone(),
            last_purge: self.last_purge.clone(),
        }
    }
}

impl<DB: InboxDatabase> Inbox<DB> {
    /// An inbox in `pool`'s database; creates its table if missing.
    pub async fn new(pool: Pool<DB>, config: InboxConfig) -> Result<Self, Error> {
        if config.retention.is_zero() {
            return Err(Error::config("inbox.retention", "must be above zero"));
        }
        DB::migrate(&pool).await?;
        Ok(Self {
            pool,
            config,
            last_purge: Arc::new(Mutex::new(Instant::now())),
        })
    }

    /// A consumer's handler that runs `handler` at most once per event id
    /// (per consumer group), in one transaction with the inbox record.
    pub fn handler<E, H>(&self, handler: H) -> InboxHandler<E, DB, H>
    where
        E: Event,
        H: TxHandler<E, DB>,
    {
        InboxHandler {
            inbox: self.clone(),
            handler,
            _event: PhantomData,
        }
    }

    /// Deletes the ids recorded longer ago than the retention; returns how
    /// many.
    pub async fn purge(&self) -> Result<u64, Error> {
        let before = SystemTime::now()
            .checked_sub(self.config.retention)
            .unwrap_or(UNIX_EPOCH);
        let before_ms = millis(before);
        let mut total = 0;
        loop {
            let deleted = DB::purge(&self.pool, before_ms, PURGE_BATCH).await?;
            total += deleted;
            if deleted < PURGE_BATCH.unsigned_abs() {
                return Ok(total);
            }
        }
    }

    /// Purges in the background if the interval has passed.
    fn purge_if_due(&self) {
        {
            let Ok(mut last) = self.last_purge.lock() else {
                return;
            };
            if last.elapsed() < self.config.purge_interval {
                return;
            }
            *last = Instant::now();
        }
        let inbox = self.clone();
        tokio::spawn(async move {
            if let Err(error) = inbox.purge().await {
                tracing::warn!(%error, "inbox: purging old ids failed");
            }
        });
    }
}

fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The handler [`Inbox::handler`] makes.
#[derive(Debug)]
pub struct InboxHandler<E, DB: InboxDatabase, H> {
    inbox: Inbox<DB>,
    handler: H,
    _event: PhantomData<fn() -> E>,
}

impl<E, DB, H> Handler<E> for InboxHandler<E, DB, H>
where
    E: Event,
    DB: InboxDatabase,
    H: TxHandler<E, DB>,
{
    /// The ids must outlive every redelivery of the group: `max_deliver`
    /// times `ack_wait` plus the longest backoff.
    fn check(&self, config: &ConsumerConfig) -> Result<(), Error> {
        let longest = config.backoff.iter().max().copied().unwrap_or_default();
        let horizon =
            (config.ack_wait + longest).saturating_mul(config.max_deliver.saturating_add(1));
        if self.inbox.config.retention <= horizon {
            return Err(Error::config(
                "inbox.retention",
                format!(
                    "{} is not longer than group `{}` can redeliver an event ({})",
                    humantime::format_duration(self.inbox.config.retention),
                    config.group,
                    humantime::format_duration(horizon),
                ),
            ));
        }
        Ok(())
    }

    async fn handle(&self, event: Received<E>) -> Result<(), HandlerError> {
        let mut tx = self.inbox.pool.begin().await?;
        if !DB::record(&mut tx, &event.group, &event.id, millis(SystemTime::now())).await? {
            // Handled before: acknowledge and apply nothing.
            tx.rollback().await?;
            metrics()
                .inbox_duplicates
                .add(1, &consumer_attributes(E::TYPE, &event.group));
            tracing::debug!(group = %event.group, id = %event.id, "inbox: event handled before; skipped");
            return Ok(());
        }
        self.handler.handle(&mut tx, &event).await?;
        tx.commit().await?;
        self.inbox.purge_if_due();
        Ok(())
    }
}
