//! The participant's record of keyed calls, in its own database.

use std::{
    future::Future,
    marker::PhantomData,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sqlx::{Pool, Postgres, Sqlite, Transaction};
use tonic::Status;

use crate::{CalledMethod, IdempotencyKey};

/// Rows deleted per statement when purging, so that a purge never holds
/// a long lock.
const PURGE_BATCH: i64 = 1000;

/// The lock that serializes the store's migration on PostgreSQL
/// (`pg_advisory_xact_lock`): "sinew_id" in ASCII.
const PG_MIGRATE_LOCK: i64 = 0x7369_6e65_775f_6964;

/// The store's settings.
#[derive(Debug, Clone)]
pub struct IdempotencyConfig {
    /// How long a call's key and response are kept: a repeat after that
    /// applies again. It must be longer than a saga can repeat a call
    /// (its coordinator's retries and its recovery after a crash).
    /// Default 7 days.
    pub retention: Duration,
    /// How often old keys are purged (by the call that commits after the
    /// interval has passed). Default 10 minutes.
    pub purge_interval: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(600),
        }
    }
}

/// What went wrong setting up or purging the store.
///
/// Messages name what failed, never a key, a response or a connection
/// string.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A setting is invalid.
    #[error("invalid setting `{key}`: {reason}")]
    Config {
        /// The setting, such as `retention`.
        key: &'static str,
        /// Why it is refused.
        reason: &'static str,
    },
}

/// A database the store can live in: SQLite or PostgreSQL.
pub trait IdempotencyDatabase: sqlx::Database + sealed::Sealed {}

impl IdempotencyDatabase for Sqlite {}
impl IdempotencyDatabase for Postgres {}

/// A recorded call: its method, and its encoded response (none while the
/// call that claimed the key has not recorded it).
type Recorded = (String, Option<Vec<u8>>);

mod sealed {
    use std::future::Future;

    use sqlx::{Pool, Transaction};

    use super::{PG_MIGRATE_LOCK, Recorded};

    /// The SQL of each database.
    pub trait Sealed: sqlx::Database + Sized {
        fn migrate(pool: &Pool<Self>) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
        /// Inserts `key` with no response; false if it was there already
        /// (after waiting for a transaction that inserted it and has not
        /// finished).
        fn claim(
            tx: &mut Transaction<'static, Self>,
            key: &str,
            method: &str,
            now_ms: i64,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
        /// The method and response recorded for `key`.
        fn recorded(
            tx: &mut Transaction<'static, Self>,
            key: &str,
        ) -> impl Future<Output = Result<Option<Recorded>, sqlx::Error>> + Send;
        /// Sets the response of a claimed key.
        fn finish(
            tx: &mut Transaction<'static, Self>,
            key: &str,
            response: &[u8],
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
        /// Deletes up to `limit` keys recorded before `before_ms`.
        fn purge(
            pool: &Pool<Self>,
            before_ms: i64,
            limit: i64,
        ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
    }

    impl Sealed for sqlx::Sqlite {
        async fn migrate(pool: &Pool<Self>) -> Result<(), sqlx::Error> {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS sinew_idempotency (
                    idempotency_key TEXT NOT NULL PRIMARY KEY,
                    method TEXT NOT NULL,
                    response BLOB,
                    created_at_ms INTEGER NOT NULL
                )",
            )
            .execute(pool)
            .await?;
            sqlx::query(
                "CREATE INDEX IF NOT EXISTS sinew_idempotency_created
                 ON sinew_idempotency (created_at_ms)",
            )
            .execute(pool)
            .await?;
            Ok(())
        }

        async fn claim(
            tx: &mut Transaction<'static, Self>,
            key: &str,
            method: &str,
            now_ms: i64,
        ) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(
                "INSERT INTO sinew_idempotency (idempotency_key, method, created_at_ms)
                 VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )
            .bind(key)
            .bind(method)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn recorded(
            tx: &mut Transaction<'static, Self>,
            key: &str,
        ) -> Result<Option<Recorded>, sqlx::Error> {
            sqlx::query_as(
                "SELECT method, response FROM sinew_idempotency WHERE idempotency_key = ?1",
            )
            .bind(key)
            .fetch_optional(&mut **tx)
            .await
        }

        async fn finish(
            tx: &mut Transaction<'static, Self>,
            key: &str,
            response: &[u8],
        ) -> Result<(), sqlx::Error> {
            sqlx::query("UPDATE sinew_idempotency SET response = ?2 WHERE idempotency_key = ?1")
                .bind(key)
                .bind(response)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        async fn purge(pool: &Pool<Self>, before_ms: i64, limit: i64) -> Result<u64, sqlx::Error> {
            let done = sqlx::query(
                "DELETE FROM sinew_idempotency WHERE rowid IN (
                    SELECT rowid FROM sinew_idempotency WHERE created_at_ms < ?1 LIMIT ?2)",
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
            // in PostgreSQL: a lock serializes the migration.
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_MIGRATE_LOCK)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS sinew_idempotency (
                    idempotency_key TEXT NOT NULL PRIMARY KEY,
                    method TEXT NOT NULL,
                    response BYTEA,
                    created_at_ms BIGINT NOT NULL
                )",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "CREATE INDEX IF NOT EXISTS sinew_idempotency_created
                 ON sinew_idempotency (created_at_ms)",
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }

        async fn claim(
            tx: &mut Transaction<'static, Self>,
            key: &str,
            method: &str,
            now_ms: i64,
        ) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(
                "INSERT INTO sinew_idempotency (idempotency_key, method, created_at_ms)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(key)
            .bind(method)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn recorded(
            tx: &mut Transaction<'static, Self>,
            key: &str,
        ) -> Result<Option<Recorded>, sqlx::Error> {
            sqlx::query_as(
                "SELECT method, response FROM sinew_idempotency WHERE idempotency_key = $1",
            )
            .bind(key)
            .fetch_optional(&mut **tx)
            .await
        }

        async fn finish(
            tx: &mut Transaction<'static, Self>,
            key: &str,
            response: &[u8],
        ) -> Result<(), sqlx::Error> {
            sqlx::query("UPDATE sinew_idempotency SET response = $2 WHERE idempotency_key = $1")
                .bind(key)
                .bind(response)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        async fn purge(pool: &Pool<Self>, before_ms: i64, limit: i64) -> Result<u64, sqlx::Error> {
            let done = sqlx::query(
                "DELETE FROM sinew_idempotency WHERE ctid IN (
                    SELECT ctid FROM sinew_idempotency WHERE created_at_ms < $1 LIMIT $2)",
            )
            .bind(before_ms)
            .bind(limit)
            .execute(pool)
            .await?;
            Ok(done.rows_affected())
        }
    }
}

/// The status a database failure answers: `ABORTED` for a conflict the
/// caller may retry (a serialization failure or deadlock on PostgreSQL, a
/// busy database on SQLite), `UNAVAILABLE` when no connection was free in
/// time, `INTERNAL` otherwise. The detail is logged, never sent.
pub fn database_status(error: &sqlx::Error) -> Status {
    let retryable = error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| match code.as_ref() {
            // serialization_failure, deadlock_detected, lock_not_available
            "40001" | "40P01" | "55P03" => true,
            // SQLite's SQLITE_BUSY and SQLITE_LOCKED, and their extended codes.
            other => other
                .parse::<i32>()
                .is_ok_and(|code| matches!(code & 0xFF, 5 | 6)),
        });
    if retryable {
        tracing::info!(%error, "transaction conflict in an idempotent call; the caller may retry");
        return Status::aborted("the transaction conflicted with another; retry");
    }
    if matches!(error, sqlx::Error::PoolTimedOut) {
        tracing::warn!(%error, "no database connection free for an idempotent call");
        return Status::unavailable("the database is busy");
    }
    tracing::error!(%error, "database failure in an idempotent call");
    Status::internal("internal error")
}

/// An error of a handler run by [`IdempotencyStore::once`]: a
/// [`Status`] the handler chose, or a database error (converted as
/// [`database_status`] does), so that `?` works on both.
#[derive(Debug)]
pub struct HandlerError(Status);

impl HandlerError {
    /// The status the caller gets.
    pub fn status(&self) -> &Status {
        &self.0
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.code(), self.0.message())
    }
}

impl std::error::Error for HandlerError {}

impl From<Status> for HandlerError {
    fn from(status: Status) -> Self {
        Self(status)
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        Self(database_status(&error))
    }
}

impl From<HandlerError> for Status {
    fn from(error: HandlerError) -> Self {
        error.0
    }
}

/// What [`IdempotencyStore::claim`] found.
#[derive(Debug)]
#[must_use = "a fresh claim must be recorded with the reply before the commit"]
pub enum Claim<R> {
    /// The key was recorded before: answer this response, apply nothing
    /// (roll the transaction back).
    Replay(R),
    /// The call is new (or has no key): apply it in the transaction, then
    /// [`record`](IdempotencyStore::record) the reply before committing.
    Apply(Ticket<R>),
}

/// A fresh claim of a key, recorded with its reply by
/// [`IdempotencyStore::record`].
#[derive(Debug)]
#[must_use = "record the reply with IdempotencyStore::record before the commit"]
pub struct Ticket<R> {
    key: Option<IdempotencyKey>,
    _reply: PhantomData<fn() -> R>,
}

/// The participant's record of keyed calls (table `sinew_idempotency`),
/// in the database of its own writes. Clones share the pool.
///
/// A keyed call claims its key at the start of its transaction (an
/// `INSERT` of the key, which locks it), applies its writes, records its
/// encoded response, and commits: the key, the writes and the response
/// commit together or not at all. See the crate docs for the whole
/// scheme.
#[derive(Debug)]
pub struct IdempotencyStore<DB: IdempotencyDatabase> {
    pool: Pool<DB>,
    config: IdempotencyConfig,
    last_purge: Arc<Mutex<Instant>>,
}

impl<DB: IdempotencyDatabase> Clone for IdempotencyStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            config: self.config.clone(),
            last_purge: self.last_purge.clone(),
        }
    }
}

impl<DB: IdempotencyDatabase> IdempotencyStore<DB> {
    /// A store in `pool`'s database; creates its table if missing.
    pub async fn new(pool: Pool<DB>, config: IdempotencyConfig) -> Result<Self, Error> {
        if config.retention.is_zero() {
            return Err(Error::Config {
                key: "retention",
                reason: "must be above zero",
            });
        }
        DB::migrate(&pool).await?;
        Ok(Self {
            pool,
            config,
            last_purge: Arc::new(Mutex::new(Instant::now())),
        })
    }

    /// The pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Runs `handler` at most once per idempotency key, in one
    /// transaction with the record of the key and its reply; answers a
    /// repeated call with the recorded reply.
    ///
    /// The key and the method come from the request's extensions, where
    /// [`IdempotencyLayer`](crate::IdempotencyLayer) put them. A call
    /// without a key runs `handler` in a transaction of its own, and
    /// records nothing. A handler's error rolls everything back and
    /// records nothing: a retry applies the call afresh.
    ///
    /// A call whose key another transaction holds (the same call, at the
    /// same time) waits for it: it gets that call's reply if it commits,
    /// and applies itself if it rolls back.
    ///
    /// `handler` takes the transaction and gives it back with its reply
    /// (an owned transaction, rather than a borrowed one, keeps the
    /// handler's future `Send` as tonic needs); if it fails, the
    /// transaction it holds is dropped, which rolls it back.
    pub async fn once<T, R, F, Fut>(
        &self,
        request: &tonic::Request<T>,
        handler: F,
    ) -> Result<R, Status>
    where
        R: prost::Message + Default,
        F: FnOnce(Transaction<'static, DB>) -> Fut,
        Fut: Future<Output = Result<(Transaction<'static, DB>, R), HandlerError>>,
    {
        let mut tx = self.pool.begin().await.map_err(|e| database_status(&e))?;
        let ticket = match self.claim::<T, R>(&mut tx, request).await? {
            Claim::Replay(reply) => {
                // Nothing was written; the reply stands even if the
                // rollback fails (the connection is then closed).
                if let Err(error) = tx.rollback().await {
                    tracing::warn!(%error, "idempotency: rollback failed");
                }
                return Ok(reply);
            }
            Claim::Apply(ticket) => ticket,
        };
        // On an error, the transaction was dropped with the handler's
        // future, which rolls it back.
        let (mut tx, reply) = handler(tx).await?;
        self.record(&mut tx, ticket, &reply).await?;
        tx.commit().await.map_err(|e| database_status(&e))?;
        self.purge_if_due();
        Ok(reply)
    }

    /// Claims the request's key in `tx`, the transaction the handler
    /// writes in, as its first statement: [`Claim::Replay`] with the
    /// recorded reply if the key was recorded before, else
    /// [`Claim::Apply`], whose ticket [`record`](Self::record) takes with
    /// the reply before the commit. A key held by another transaction
    /// not yet finished is waited for.
    ///
    /// A key recorded for another method fails with
    /// `FAILED_PRECONDITION`. A request that carries the key header but
    /// went through no [`IdempotencyLayer`](crate::IdempotencyLayer)
    /// fails with `INTERNAL` (logged): applying it unguarded could apply
    /// it twice.
    pub async fn claim<T, R>(
        &self,
        tx: &mut Transaction<'static, DB>,
        request: &tonic::Request<T>,
    ) -> Result<Claim<R>, Status>
    where
        R: prost::Message + Default,
    {
        let extensions = request.extensions();
        let (Some(key), Some(method)) = (
            extensions.get::<IdempotencyKey>(),
            extensions.get::<CalledMethod>(),
        ) else {
            if request.metadata().contains_key(crate::HEADER) {
                tracing::error!(
                    "idempotency: a call carries an idempotency key but the service has no \
                     IdempotencyLayer; add it with Server::add_service_with"
                );
                return Err(Status::internal("internal error"));
            }
            return Ok(Claim::Apply(Ticket {
                key: None,
                _reply: PhantomData,
            }));
        };
        let claimed = DB::claim(tx, key.as_str(), method.path(), millis(SystemTime::now()))
            .await
            .map_err(|e| database_status(&e))?;
        if claimed {
            return Ok(Claim::Apply(Ticket {
                key: Some(key.clone()),
                _reply: PhantomData,
            }));
        }
        let recorded = DB::recorded(tx, key.as_str())
            .await
            .map_err(|e| database_status(&e))?;
        let Some((recorded_method, response)) = recorded else {
            // Purged between the two statements, or its holder rolled
            // back after our insert found it: the caller retries.
            return Err(Status::aborted(
                "the idempotency key changed hands; retry the call",
            ));
        };
        if recorded_method != method.path() {
            return Err(Status::failed_precondition(
                "the idempotency key was used for another method",
            ));
        }
        let Some(response) = response else {
            tracing::error!(
                key = %key,
                "idempotency: a key was committed without its response (claimed and not recorded)"
            );
            return Err(Status::internal("internal error"));
        };
        match R::decode(response.as_slice()) {
            Ok(reply) => {
                tracing::debug!(key = %key, method = method.path(), "idempotency: repeated call answered from the record");
                Ok(Claim::Replay(reply))
            }
            Err(error) => {
                tracing::error!(key = %key, %error, "idempotency: the recorded response does not decode");
                Err(Status::internal("internal error"))
            }
        }
    }

    /// Records `reply` as the response of the ticket's key, in `tx`; does
    /// nothing for a call without a key. Commit `tx` after.
    pub async fn record<R>(
        &self,
        tx: &mut Transaction<'static, DB>,
        ticket: Ticket<R>,
        reply: &R,
    ) -> Result<(), Status>
    where
        R: prost::Message,
    {
        let Some(key) = ticket.key else {
            return Ok(());
        };
        DB::finish(tx, key.as_str(), &reply.encode_to_vec())
            .await
            .map_err(|e| database_status(&e))
    }

    /// Deletes the keys recorded longer ago than the retention; returns
    /// how many.
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
        let store = self.clone();
        tokio::spawn(async move {
            if let Err(error) = store.purge().await {
                tracing::warn!(%error, "idempotency: purging old keys failed");
            }
        });
    }
}

fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
