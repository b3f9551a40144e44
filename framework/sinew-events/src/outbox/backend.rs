//! The SQL of each database the outbox runs on, behind one sealed trait.
//!
//! Each method is written once per database with concrete types, so no
//! generic executor bounds leak into the outbox's API.
//!
//! Timestamps: PostgreSQL keeps `created_at` as `TIMESTAMPTZ` (what is
//! pending is a row of `sinew_outbox_pending`, not a timestamp) and
//! computes ages and lease expiries on the database's clock, which every
//! replica shares. SQLite keeps them as integer
//! milliseconds since the Unix epoch from the process's clock: an embedded
//! database file is only shared by processes on one host, hence one clock.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sqlx::{Pool, Postgres, Row as _, Sqlite};

use tokio::sync::watch;

use crate::Error;

/// The name of the lease row the relays contend for.
pub(crate) const LEASE: &str = "sinew_outbox";

/// One row to write.
#[derive(Debug)]
pub struct NewRow<'a> {
    pub(crate) id: &'a str,
    pub(crate) subject: &'a str,
    pub(crate) aggregate_id: &'a str,
    pub(crate) envelope: Vec<u8>,
    pub(crate) notify: bool,
}

/// One pending row, as the relay reads it.
#[derive(Debug)]
pub struct PendingRow {
    pub(crate) position: i64,
    pub(crate) aggregate_id: String,
    pub(crate) envelope: Vec<u8>,
}

/// What a database must do for the outbox. Sealed: implemented for
/// [`Sqlite`] and [`Postgres`] only.
pub trait Backend: sqlx::Database {
    /// Creates the tables and indexes if missing.
    fn migrate(pool: &Pool<Self>) -> impl Future<Output = Result<(), Error>> + Send;

    /// Writes one row on the caller's connection (inside its transaction).
    fn insert<'c>(
        conn: &'c mut Self::Connection,
        row: NewRow<'c>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'c;

    /// Up to `limit` pending rows, in position order.
    fn fetch_pending(
        pool: &Pool<Self>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<PendingRow>, Error>> + Send;

    /// Marks the rows at `positions` published, only while `holder` holds
    /// the lease; returns how many were marked.
    fn mark_published(
        pool: &Pool<Self>,
        positions: &[i64],
        holder: &str,
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Takes or renews the lease for `ttl`; whether `holder` holds it now.
    fn take_lease(
        pool: &Pool<Self>,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Gives the lease up, if `holder` holds it.
    fn release_lease(
        pool: &Pool<Self>,
        holder: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The number of pending rows and the age of the first of them.
    fn pending(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<(u64, Option<Duration>), Error>> + Send;

    /// The age of the first pending row (by position), if any.
    fn oldest_pending(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Option<Duration>, Error>> + Send;

    /// A task that wakes the relay whenever a transaction that added rows
    /// commits in any process, if the database can tell.
    fn listener(
        pool: &Pool<Self>,
        wake: Arc<watch::Sender<u64>>,
    ) -> Option<impl Future<Output = ()> + Send + 'static>;

    /// Deletes up to `limit` rows published more than `older_than` ago;
    /// returns how many.
    fn purge(
        pool: &Pool<Self>,
        older_than: Duration,
        limit: i64,
    ) -> impl Future<Output = Result<u64, Error>> + Send;
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

fn age_from_millis(created_at: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_millis().saturating_sub(created_at)).unwrap_or(0))
}

fn age_from_secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
}

// === impl Backend for Sqlite ===

const SQLITE_SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS sinew_outbox (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        subject TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        envelope BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        published_at INTEGER
    )",
    "CREATE INDEX IF NOT EXISTS sinew_outbox_pending
        ON sinew_outbox (position) WHERE published_at IS NULL",
    "CREATE INDEX IF NOT EXISTS sinew_outbox_published
        ON sinew_outbox (published_at) WHERE published_at IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS sinew_outbox_lease (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    )",
];

impl Backend for Sqlite {
    async fn migrate(pool: &Pool<Self>) -> Result<(), Error> {
        let mut tx = pool.begin().await?;
        for statement in SQLITE_SCHEMA {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert<'c>(conn: &'c mut Self::Connection, row: NewRow<'c>) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO sinew_outbox (id, subject, aggregate_id, envelope, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(row.id)
        .bind(row.subject)
        .bind(row.aggregate_id)
        .bind(row.envelope)
        .bind(now_millis())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn fetch_pending(pool: &Pool<Self>, limit: i64) -> Result<Vec<PendingRow>, Error> {
        let rows = sqlx::query(
            "SELECT position, aggregate_id, envelope FROM sinew_outbox
             WHERE published_at IS NULL ORDER BY position LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(PendingRow {
                    position: row.try_get(0)?,
                    aggregate_id: row.try_get(1)?,
                    envelope: row.try_get(2)?,
                })
            })
            .collect()
    }

    async fn mark_published(
        pool: &Pool<Self>,
        positions: &[i64],
        holder: &str,
    ) -> Result<u64, Error> {
        // The positions go as one JSON array: the statement stays static
        // whatever the batch's size.
        let list = format!(
            "[{}]",
            positions
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        let done = sqlx::query(
            "UPDATE sinew_outbox SET published_at = ?1
             WHERE position IN (SELECT value FROM json_each(?2))
               AND published_at IS NULL
               AND EXISTS (SELECT 1 FROM sinew_outbox_lease
                           WHERE name = ?3 AND holder = ?4 AND expires_at > ?1)",
        )
        .bind(now_millis())
        .bind(list)
        .bind(LEASE)
        .bind(holder)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn take_lease(pool: &Pool<Self>, holder: &str, ttl: Duration) -> Result<bool, Error> {
        let done = sqlx::query(
            "INSERT INTO sinew_outbox_lease (name, holder, expires_at) VALUES (?1, ?2, ?3 + ?4)
             ON CONFLICT (name) DO UPDATE
               SET holder = excluded.holder, expires_at = excluded.expires_at
               WHERE sinew_outbox_lease.holder = excluded.holder
                  OR sinew_outbox_lease.expires_at <= ?3",
        )
        .bind(LEASE)
        .bind(holder)
        .bind(now_millis())
        .bind(millis(ttl))
        .execute(pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(pool: &Pool<Self>, holder: &str) -> Result<(), Error> {
        sqlx::query("UPDATE sinew_outbox_lease SET expires_at = 0 WHERE name = ?1 AND holder = ?2")
            .bind(LEASE)
            .bind(holder)
            .execute(pool)
            .await?;
        Ok(())
    }

    async fn pending(pool: &Pool<Self>) -> Result<(u64, Option<Duration>), Error> {
        let row = sqlx::query(
            "SELECT count(*), min(created_at) FROM sinew_outbox WHERE published_at IS NULL",
        )
        .fetch_one(pool)
        .await?;
        let count: i64 = row.try_get(0)?;
        let oldest: Option<i64> = row.try_get(1)?;
        Ok((
            u64::try_from(count).unwrap_or(0),
            oldest.map(age_from_millis),
        ))
    }

    async fn oldest_pending(pool: &Pool<Self>) -> Result<Option<Duration>, Error> {
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT created_at FROM sinew_outbox
             WHERE published_at IS NULL ORDER BY position LIMIT 1",
        )
        .fetch_optional(pool)
        .await?;
        Ok(oldest.map(age_from_millis))
    }

    fn listener(
        _pool: &Pool<Self>,
        _wake: Arc<watch::Sender<u64>>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        // An embedded database has no notifications: the in-process wake-up
        // and the poll do.
        None::<std::future::Ready<()>>
    }

    async fn purge(pool: &Pool<Self>, older_than: Duration, limit: i64) -> Result<u64, Error> {
        let done = sqlx::query(
            "DELETE FROM sinew_outbox WHERE position IN (
               SELECT position FROM sinew_outbox
               WHERE published_at IS NOT NULL AND published_at < ?1
               ORDER BY published_at LIMIT ?2)",
        )
        .bind(now_millis().saturating_sub(millis(older_than)))
        .bind(limit)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    }
}

// === impl Backend for Postgres ===

/// Milliseconds since the epoch on the database's clock.
macro_rules! pg_now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

/// On PostgreSQL the events are never updated: a row of
/// `sinew_outbox_pending` says an event waits, and marking it published
/// deletes that row. An update of the event row would write a new copy of
/// it and an entry in each of its indexes; the delete writes neither.
const PG_SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS sinew_outbox (
        position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        subject TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        envelope BYTEA NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )",
    "CREATE TABLE IF NOT EXISTS sinew_outbox_pending (
        position BIGINT PRIMARY KEY
    )",
    "CREATE TABLE IF NOT EXISTS sinew_outbox_lease (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    )",
];

/// The advisory lock that serializes concurrent migrations, the outbox's and
/// the inbox's (`CREATE ... IF NOT EXISTS` races in PostgreSQL): "sinew_ob"
/// in ASCII.
pub(crate) const PG_MIGRATE_LOCK: i64 = 0x7369_6e65_775f_6f62;

/// The channel `add` notifies on and relays listen to.
pub(crate) const PG_CHANNEL: &str = "sinew_outbox";

impl Backend for Postgres {
    async fn migrate(pool: &Pool<Self>) -> Result<(), Error> {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_MIGRATE_LOCK)
            .execute(&mut *tx)
            .await?;
        for statement in PG_SCHEMA {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert<'c>(conn: &'c mut Self::Connection, row: NewRow<'c>) -> Result<(), Error> {
        // The notification is delivered at commit, and not at all on
        // rollback; PostgreSQL folds those of one transaction into one. One
        // statement either way: no extra round trip per event.
        let sql = if row.notify {
            "WITH inserted AS (
               INSERT INTO sinew_outbox (id, subject, aggregate_id, envelope)
               VALUES ($1, $2, $3, $4) RETURNING position),
             pending AS (
               INSERT INTO sinew_outbox_pending (position)
               SELECT position FROM inserted RETURNING 1)
             SELECT pg_notify($5, '') FROM pending"
        } else {
            "WITH inserted AS (
               INSERT INTO sinew_outbox (id, subject, aggregate_id, envelope)
               VALUES ($1, $2, $3, $4) RETURNING position)
             INSERT INTO sinew_outbox_pending (position) SELECT position FROM inserted"
        };
        let query = sqlx::query(sql)
            .bind(row.id)
            .bind(row.subject)
            .bind(row.aggregate_id)
            .bind(row.envelope);
        let query = if row.notify {
            query.bind(PG_CHANNEL)
        } else {
            query
        };
        query.execute(&mut *conn).await?;
        Ok(())
    }

    async fn fetch_pending(pool: &Pool<Self>, limit: i64) -> Result<Vec<PendingRow>, Error> {
        let rows = sqlx::query(
            "SELECT o.position, o.aggregate_id, o.envelope
             FROM sinew_outbox_pending p JOIN sinew_outbox o USING (position)
             ORDER BY p.position LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(PendingRow {
                    position: row.try_get(0)?,
                    aggregate_id: row.try_get(1)?,
                    envelope: row.try_get(2)?,
                })
            })
            .collect()
    }

    async fn mark_published(
        pool: &Pool<Self>,
        positions: &[i64],
        holder: &str,
    ) -> Result<u64, Error> {
        // The mark need not wait for the disk: if a crash loses it, the
        // rows are published again, which the broker's deduplication and
        // the consumers' inbox absorb. The commit of the rows themselves
        // (the caller's transaction) is as durable as the database makes it.
        let mut tx = pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(concat!(
            "DELETE FROM sinew_outbox_pending
             WHERE position = ANY($1)
               AND EXISTS (SELECT 1 FROM sinew_outbox_lease
                           WHERE name = $2 AND holder = $3 AND expires_at > ",
            pg_now_ms!(),
            ")"
        ))
        .bind(positions)
        .bind(LEASE)
        .bind(holder)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn take_lease(pool: &Pool<Self>, holder: &str, ttl: Duration) -> Result<bool, Error> {
        // Two standbys racing for an expired lease: the second waits on the
        // first's row lock, then sees the new holder and updates nothing.
        let done = sqlx::query(concat!(
            "INSERT INTO sinew_outbox_lease (name, holder, expires_at) VALUES ($1, $2, ",
            pg_now_ms!(),
            " + $3)
             ON CONFLICT (name) DO UPDATE
               SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
               WHERE sinew_outbox_lease.holder = EXCLUDED.holder
                  OR sinew_outbox_lease.expires_at <= ",
            pg_now_ms!()
        ))
        .bind(LEASE)
        .bind(holder)
        .bind(millis(ttl))
        .execute(pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(pool: &Pool<Self>, holder: &str) -> Result<(), Error> {
        sqlx::query("UPDATE sinew_outbox_lease SET expires_at = 0 WHERE name = $1 AND holder = $2")
            .bind(LEASE)
            .bind(holder)
            .execute(pool)
            .await?;
        Ok(())
    }

    async fn pending(pool: &Pool<Self>) -> Result<(u64, Option<Duration>), Error> {
        let row = sqlx::query(
            "SELECT count(*), extract(epoch from clock_timestamp() - min(o.created_at))::float8
             FROM sinew_outbox_pending p JOIN sinew_outbox o USING (position)",
        )
        .fetch_one(pool)
        .await?;
        let count: i64 = row.try_get(0)?;
        let oldest: Option<f64> = row.try_get(1)?;
        Ok((u64::try_from(count).unwrap_or(0), oldest.map(age_from_secs)))
    }

    async fn oldest_pending(pool: &Pool<Self>) -> Result<Option<Duration>, Error> {
        let oldest: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch from clock_timestamp() - o.created_at)::float8
             FROM sinew_outbox_pending p JOIN sinew_outbox o USING (position)
             ORDER BY p.position LIMIT 1",
        )
        .fetch_optional(pool)
        .await?;
        Ok(oldest.map(age_from_secs))
    }

    fn listener(
        pool: &Pool<Self>,
        wake: Arc<watch::Sender<u64>>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let pool = pool.clone();
        Some(async move {
            loop {
                match listen(&pool, &wake).await {
                    Ok(()) => {}
                    Err(error) => {
                        tracing::debug!(%error, "outbox listener lost its connection; reconnecting");
                    }
                }
                // Whatever was notified while the connection was down.
                wake.send_modify(|n| *n = n.wrapping_add(1));
                tokio::time::sleep(LISTEN_RETRY).await;
            }
        })
    }

    async fn purge(pool: &Pool<Self>, older_than: Duration, limit: i64) -> Result<u64, Error> {
        let done = sqlx::query(
            // Oldest first, along the primary key: published events older
            // than the retention (counted from when they were written).
            "DELETE FROM sinew_outbox WHERE position IN (
               SELECT o.position FROM sinew_outbox o
               WHERE o.created_at < clock_timestamp() - make_interval(secs => $1)
                 AND NOT EXISTS (SELECT 1 FROM sinew_outbox_pending p
                                 WHERE p.position = o.position)
               ORDER BY o.position LIMIT $2)",
        )
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// The wait before the listener connects again after losing its
/// connection.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// Listens on [`PG_CHANNEL`] until the connection fails for good (`recv`
/// reconnects on its own once).
async fn listen(pool: &Pool<Postgres>, wake: &watch::Sender<u64>) -> Result<(), sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(PG_CHANNEL).await?;
    loop {
        listener.recv().await?;
        wake.send_modify(|n| *n = n.wrapping_add(1));
    }
}
