//! The transactional outbox: an event is written in the same database
//! transaction as the state change it reports, and a [`Relay`] publishes it
//! to the broker after the commit. Either both the change and the event are
//! committed, or neither is; a crash between the commit and the publish only
//! delays the event.
//!
//! ```no_run
//! use sinew_events::outbox::{Outbox, OutboxConfig, Relay, RelayConfig};
//! # use sinew_events::{Broker, Event};
//! # async fn demo<B: Broker, E: Event>(broker: B, event: E) -> Result<(), sinew_events::Error> {
//! let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/shop").await?;
//! let outbox = Outbox::new(pool.clone(), OutboxConfig::default());
//! outbox.migrate().await?;
//!
//! // One relay per process; replicas elect one publisher among them.
//! let relay = Relay::new(outbox.clone(), broker, RelayConfig::default())?.spawn();
//!
//! // In a handler: the state change and its event, in one transaction.
//! let mut tx = pool.begin().await?;
//! sqlx::query("UPDATE orders SET state = 'confirmed' WHERE id = $1")
//!     .bind("o-1")
//!     .execute(&mut *tx)
//!     .await?;
//! outbox.add(&mut tx, &event).await?;
//! outbox.commit(tx).await?; // commits, and wakes the relay
//!
//! relay.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! - **At least once to the broker.** A row is marked published only after
//!   the broker has acknowledged storing it (JetStream's PubAck). A relay
//!   that dies between the two publishes the row again on restart.
//! - **Deduplicated by event id.** Every publish carries the event id as
//!   `Nats-Msg-Id`, so JetStream drops a second copy inside its
//!   deduplication window (two minutes by default): the restart above, and
//!   a lease takeover racing the old holder's last batch, both fall inside
//!   it. Beyond the window, consumers deduplicate with the inbox.
//! - **Per-aggregate order.** Rows are read in position (insertion) order,
//!   and an event is published only after every earlier pending event of
//!   its aggregate has been acknowledged; a failed publish holds back the
//!   rest of its aggregate until it succeeds. Events of different
//!   aggregates are published concurrently and in no particular order.
//!   Position order is commit order for one aggregate as long as the
//!   transactions that change an aggregate are serialized (they lock the
//!   aggregate's row before calling [`Outbox::add`]), which they must be for
//!   the aggregate to be consistent anyway.
//! - **No row skipped.** The relay selects rows by "not yet published",
//!   never by a position watermark: a transaction that took a lower
//!   position but commits after higher ones is still published.
//! - **One publisher among replicas.** Relays on one database contend for a
//!   lease (the row `sinew_outbox` of table `sinew_outbox_lease`, with a time
//!   to live, [`RelayConfig::lease_ttl`]); only its holder publishes. A relay
//!   marks rows published only while it still holds the lease (the statement
//!   checks it in the same statement). When the holder dies, a standby takes
//!   over once the lease has expired.
//!
//! # Tables
//!
//! The table names are fixed: `sinew_outbox` holds the events (`position`,
//! `id` the event id, `subject`, `aggregate_id`, `envelope` the
//! [`Envelope`] encoded whole, `created_at`) and `sinew_outbox_lease` the
//! lease. What is pending differs by database:
//!
//! - on SQLite, `sinew_outbox.published_at`, null while pending;
//! - on PostgreSQL, a row in `sinew_outbox_pending` (its `position`),
//!   deleted when the event is published. The event row is never updated:
//!   an update would write a new copy of it and an entry in each of its
//!   indexes, where the delete writes neither (the relay's throughput went
//!   from about 40k to 45k events a second with it).
//!
//! On PostgreSQL the tables are created in the connection's `search_path`
//! schema, so one database can hold an outbox per schema.
//! [`Outbox::migrate`] creates what is missing.
//!
//! # Waking the relay
//!
//! [`Outbox::commit`] wakes the relays of its process. On PostgreSQL,
//! [`Outbox::add`] also runs `pg_notify('sinew_outbox', '')` in the
//! transaction, and relays listen on that channel, so relays of other
//! processes wake when it commits. Whatever the wake-ups miss (a commit
//! made with `tx.commit()` on SQLite, a lost notification), the relay's
//! poll ([`RelayConfig::poll_interval`]) catches.
//!
//! # SQLite
//!
//! Use a database file in WAL mode (`SqliteConnectOptions::journal_mode`)
//! with a busy timeout: the relay writes while handlers write.
//!
//! # Failures and limits
//!
//! - A broker outage: the relay retries with exponential backoff
//!   ([`RelayConfig::backoff_initial`] to [`RelayConfig::backoff_max`]),
//!   logs one warning when the outage starts and one line when it ends,
//!   and loses nothing: rows stay pending until acknowledged.
//! - One aggregate failing (a subject no stream takes, say) holds back its
//!   own later events only: batches that make progress go on without
//!   waiting. But a batch is the first [`RelayConfig::batch_size`] pending
//!   rows; when one stuck aggregate fills a whole batch, the rest wait
//!   behind it. [`Outbox::lag_check`] shows it.
//! - A row whose envelope does not decode (written by hand, say) cannot be
//!   published and is never skipped: it holds back its aggregate, and the
//!   relay logs an error naming its position.
//! - Published rows are kept for [`RelayConfig::retention`] (7 days), then
//!   deleted by the lease holder in chunks.
//!
//! # Telemetry
//!
//! On the global meter `sinew.events`, made the first time a relay records
//! (install telemetry before starting relays):
//!
//! | name | kind | unit | attributes |
//! |---|---|---|---|
//! | `sinew.events.published` | counter | {event} | `event.type` |
//! | `sinew.events.outbox.pending` | gauge | {event} | |
//! | `sinew.events.outbox.lag` | gauge | s | |
//!
//! The counter counts every acknowledged publish, copies the broker
//! dropped as duplicates included. The lease holder records the gauges
//! every [`RelayConfig::stats_interval`]. The relay logs each batch at
//! debug (rows read, published, waves), taking and losing the lease at
//! info and warn; never a payload.
//!
//! A readiness probe that fails while events wait too long:
//!
//! ```no_run
//! # fn demo(outbox: sinew_events::outbox::Outbox<sqlx::Postgres>) {
//! # use std::time::Duration;
//! let check = move || outbox.lag_check(Duration::from_secs(60));
//! // sinew::server::Probe::new("outbox", check)
//! # let _ = check;
//! # }
//! ```

mod backend;

pub(crate) use backend::PG_MIGRATE_LOCK;
mod relay;

use std::{sync::Arc, time::Duration};

use prost::Message as _;
use sinew_core::event::Event;
use sqlx::{Pool, Postgres, Sqlite, Transaction};
use tokio::sync::watch;

pub use relay::{Relay, RelayConfig, RelayHandle};

use crate::{Envelope, Error};

/// A database the outbox runs on: [`sqlx::Sqlite`] and [`sqlx::Postgres`].
/// Sealed.
pub trait OutboxDatabase: backend::Backend {}

impl OutboxDatabase for Sqlite {}
impl OutboxDatabase for Postgres {}

/// The settings of an [`Outbox`].
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// On PostgreSQL, whether [`Outbox::add`] runs `pg_notify` so that
    /// relays in other processes wake on commit. Ignored on SQLite.
    /// Default `true`.
    pub notify: bool,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { notify: true }
    }
}

/// How many rows are waiting to be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Rows not yet published.
    pub count: u64,
    /// How long the oldest of them has waited (`None` when none waits).
    pub oldest: Option<Duration>,
}

/// The transactional outbox on a database `DB`; see the
/// [module docs](self).
///
/// Clones share the pool and the wake-up of the relays.
pub struct Outbox<DB: OutboxDatabase> {
    pool: Pool<DB>,
    config: OutboxConfig,
    /// Bumped on every commit; each relay watches it.
    wake: Arc<watch::Sender<u64>>,
}

impl<DB: OutboxDatabase> Clone for Outbox<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            config: self.config.clone(),
            wake: self.wake.clone(),
        }
    }
}

impl<DB: OutboxDatabase> std::fmt::Debug for Outbox<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

// === impl Outbox ===

impl<DB: OutboxDatabase> Outbox<DB> {
    /// An outbox in the database of `pool`. Call [`migrate`](Self::migrate)
    /// once before use.
    pub fn new(pool: Pool<DB>, config: OutboxConfig) -> Self {
        Self {
            pool,
            config,
            wake: Arc::new(watch::channel(0).0),
        }
    }

    /// The pool the outbox uses.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Creates the outbox's tables and indexes if they are missing. Safe to
    /// run from several replicas at once.
    pub async fn migrate(&self) -> Result<(), Error> {
        DB::migrate(&self.pool).await
    }

    /// Writes `event` in the caller's transaction `tx`, in a new envelope
    /// (a new UUIDv7 id, the current trace context), and returns the
    /// envelope. The event is published after `tx` commits, never if it
    /// rolls back.
    pub async fn add<E: Event>(
        &self,
        tx: &mut Transaction<'_, DB>,
        event: &E,
    ) -> Result<Envelope, Error> {
        let envelope = Envelope::new(event);
        self.add_envelope(tx, &envelope).await?;
        Ok(envelope)
    }

    /// Writes an envelope built by the caller in the transaction `tx`. Its
    /// id must be new: a second row with the same id fails on the table's
    /// unique key.
    pub async fn add_envelope(
        &self,
        tx: &mut Transaction<'_, DB>,
        envelope: &Envelope,
    ) -> Result<(), Error> {
        let row = backend::NewRow {
            id: &envelope.id,
            subject: &envelope.subject,
            aggregate_id: &envelope.aggregate_id,
            envelope: envelope.encode_to_vec(),
            notify: self.config.notify,
        };
        DB::insert(&mut **tx, row).await
    }

    /// Commits `tx` and wakes the relays of this process.
    pub async fn commit(&self, tx: Transaction<'_, DB>) -> Result<(), Error> {
        tx.commit().await?;
        self.wake();
        Ok(())
    }

    /// Wakes the relays of this process, as after a commit made without
    /// [`commit`](Self::commit).
    pub fn wake(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How many rows wait to be published, and how long the oldest has
    /// waited. Counts every pending row: on a large backlog, a scan.
    pub async fn pending(&self) -> Result<Pending, Error> {
        let (count, oldest) = DB::pending(&self.pool).await?;
        Ok(Pending { count, oldest })
    }

    /// A readiness check: fails with [`Error::OutboxLag`] when the oldest
    /// pending row (by position) has waited longer than `threshold`, or when
    /// the database fails. Cheap (one indexed row). The future borrows
    /// nothing, so it fits `sinew::server::Probe::new("outbox", move ||
    /// outbox.lag_check(threshold))`.
    pub fn lag_check(
        &self,
        threshold: Duration,
    ) -> impl Future<Output = Result<(), Error>> + Send + use<DB> {
        let pool = self.pool.clone();
        async move {
            match DB::oldest_pending(&pool).await? {
                Some(age) if age > threshold => Err(Error::OutboxLag { age, threshold }),
                _ => Ok(()),
            }
        }
    }

    /// Deletes rows published more than `older_than` ago, at most `limit`
    /// of them; returns how many. The relay calls it on its own (see
    /// [`RelayConfig::retention`]).
    pub async fn purge(&self, older_than: Duration, limit: u32) -> Result<u64, Error> {
        DB::purge(&self.pool, older_than, i64::from(limit)).await
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }
}
