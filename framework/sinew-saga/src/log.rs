//! The saga log: each saga's state and position, in the orchestrating
//! service's own database (SQLite or PostgreSQL).
//!
//! Two writes per step, the fewest that stay safe: one before the step's
//! call (the step is in flight) and one after it (its result, and the
//! position of the next step). A saga's creation is its first step's
//! "before", and its last step's "after" records the end, so a saga of
//! `n` steps that completes costs `2n` writes; each compensated step
//! costs two more.
//!
//! Tables: `sinew_saga` (one row per saga) and `sinew_saga_history` (one
//! row per finished call, written in the "after" transaction).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// How long a saga stays its orchestrator's without a write, unless set.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);

/// A random owner name: the time and the process, mixed.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

use prost::Message as _;
use sinew_events::{Envelope, Outbox};
use sqlx::{Pool, Postgres, Row as _, Sqlite};

use crate::Phase;

/// The compensations' requests a saga's steps recorded, by step: the
/// `undo` column, encoded.
#[derive(Clone, PartialEq, prost::Message)]
struct UndoColumn {
    #[prost(btree_map = "uint32, bytes", tag = "1")]
    by_step: BTreeMap<u32, Vec<u8>>,
}

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaStatus {
    /// Running its steps forward.
    Running,
    /// A step failed for good: undoing the completed steps, last first.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// Every completed step was undone.
    Compensated,
    /// Parked: a compensation kept failing, or the saga's definition is
    /// not registered. Visible, and resumable; never dropped.
    NeedsAttention,
    /// Aborted by an operator while parked: nothing more is called.
    Aborted,
}

impl SagaStatus {
    /// The name stored in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::NeedsAttention => "needs_attention",
            Self::Aborted => "aborted",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "running" => Self::Running,
            "compensating" => Self::Compensating,
            "completed" => Self::Completed,
            "compensated" => Self::Compensated,
            "needs_attention" => Self::NeedsAttention,
            "aborted" => Self::Aborted,
            _ => return None,
        })
    }

    /// Whether the saga has ended: completed, compensated or aborted.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Aborted)
    }
}

/// One saga as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaRecord {
    /// Its id.
    pub id: String,
    /// Its definition's name.
    pub name: String,
    /// Its definition's version.
    pub version: u32,
    /// Its state, the protobuf message encoded.
    pub state: Vec<u8>,
    /// Where it is.
    pub status: SagaStatus,
    /// Running: the next step to run. Compensating: how many completed
    /// steps are left to undo (the next to undo is `step - 1`).
    pub step: u32,
    /// Whether the call at `step` (or `step - 1` when compensating) was
    /// started and its result not recorded: it is made again, with the
    /// same idempotency key.
    pub in_flight: bool,
    /// Parked: what it was doing (running or compensating), to go on with
    /// when resumed.
    pub parked_from: Option<SagaStatus>,
    /// The last error, if any.
    pub error: Option<String>,
    /// The claim that holds the saga: its orchestrator's
    /// [`owner`](SagaLog::owner) name and a number new with each claim
    /// (set by the log; ignored when writing). Every write is fenced by it,
    /// so a driver whose claim was taken over, even by its own orchestrator
    /// after a stall, stops at its next write.
    pub holder: String,
    /// The compensations' requests, by step, that steps built from a
    /// contract's method recorded (see `Step::rpc`).
    pub undo: BTreeMap<u32, Vec<u8>>,
    /// When the saga was created, in ms since the Unix epoch (set by the
    /// log; ignored when writing).
    pub created_at_ms: i64,
    /// When the log last wrote it, as `created_at_ms`.
    pub updated_at_ms: i64,
}

/// One finished call, in a saga's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The step's index.
    pub step: u32,
    /// Action or compensation.
    pub phase: Phase,
    /// `ok` or `failed`.
    pub outcome: String,
    /// The error, when it failed (or why the saga was parked or aborted).
    pub error: Option<String>,
    /// When it was recorded, in ms since the Unix epoch (set by the log;
    /// ignored when writing).
    pub at_ms: i64,
}

/// A database the log runs on: SQLite or PostgreSQL.
pub trait LogDatabase: sqlx::Database + sealed::Sealed {}
impl LogDatabase for Sqlite {}
impl LogDatabase for Postgres {}

/// The saga log. Clones share the pool and the write count.
#[derive(Debug)]
pub struct SagaLog<DB: LogDatabase> {
    pool: Pool<DB>,
    writes: Arc<AtomicU64>,
    /// This orchestrator's name in the log: the owner of the sagas it runs.
    owner: Arc<str>,
    /// Claims made so far, numbering each claim's holder.
    claims: Arc<AtomicU64>,
    lease_ttl: Duration,
    /// Where the events sagas publish are written, in the log's
    /// transactions.
    outbox: Option<Outbox<DB>>,
}

impl<DB: LogDatabase> Clone for SagaLog<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            writes: self.writes.clone(),
            owner: self.owner.clone(),
            claims: self.claims.clone(),
            lease_ttl: self.lease_ttl,
            outbox: self.outbox.clone(),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Action => "action",
        Phase::Compensation => "compensation",
    }
}

impl<DB: LogDatabase> SagaLog<DB> {
    /// A log in `pool`'s database; creates its tables if missing.
    pub async fn new(pool: Pool<DB>) -> Result<Self, sqlx::Error> {
        <DB as sealed::Sealed>::migrate(&pool).await?;
        let owner = format!("{:016x}", rand_u64());
        Ok(Self {
            pool,
            writes: Arc::default(),
            owner: Arc::from(owner),
            claims: Arc::default(),
            lease_ttl: DEFAULT_LEASE_TTL,
            outbox: None,
        })
    }

    /// Writes the events sagas publish into `outbox`, in the same
    /// transaction as the log's record of the step or end they belong to.
    /// The outbox must be in the log's database (its own pool is not
    /// used for these writes); its relay publishes them.
    #[must_use]
    pub fn with_outbox(mut self, outbox: Outbox<DB>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Whether events can be written (an outbox is set).
    pub(crate) fn has_outbox(&self) -> bool {
        self.outbox.is_some()
    }

    /// How long a saga stays this orchestrator's without a write to it
    /// (default 60s): another replica takes over an unfinished saga whose
    /// lease has run out. Every write renews it, and so does each retry of a
    /// call; keep it well above a step's timeout.
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How long a saga stays this orchestrator's without a write to it.
    pub fn lease(&self) -> Duration {
        self.lease_ttl
    }

    /// The pool the log writes to (a saga's outbox writes go through it).
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// This log's owner name: the orchestrator using it. Each
    /// [`SagaLog::new`] makes a new one.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// A holder for a new claim: this log's owner and a new number.
    pub(crate) fn new_holder(&self) -> String {
        format!(
            "{}/{}",
            self.owner,
            self.claims.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn lease_until(&self) -> i64 {
        now_ms().saturating_add(i64::try_from(self.lease_ttl.as_millis()).unwrap_or(i64::MAX))
    }

    /// Takes up to `limit` unfinished sagas (running or compensating) that
    /// no live orchestrator holds: their lease has run out. On PostgreSQL concurrent takers skip each other's
    /// rows (`FOR UPDATE SKIP LOCKED`); on SQLite writes take turns.
    pub(crate) async fn claim_unfinished(
        &self,
        limit: u32,
    ) -> Result<Vec<SagaRecord>, sqlx::Error> {
        self.wrote();
        DB::claim(
            &self.pool,
            &self.new_holder(),
            now_ms(),
            self.lease_until(),
            None,
            i64::from(limit),
        )
        .await
    }

    /// Takes saga `id` if it is parked, for an operator's resume: its status
    /// goes back to what it was doing when parked (kept in `parked_from`
    /// until its next write), so that it reads as under way at once.
    pub(crate) async fn claim(&self, id: &str) -> Result<Option<SagaRecord>, sqlx::Error> {
        self.wrote();
        let mut taken = DB::claim(
            &self.pool,
            &self.new_holder(),
            now_ms(),
            self.lease_until(),
            Some(id),
            1,
        )
        .await?;
        Ok(taken.pop())
    }

    /// Renews `holder`'s lease on saga `id`; false if another claim took
    /// it.
    pub(crate) async fn renew(&self, id: &str, holder: &str) -> Result<bool, sqlx::Error> {
        self.wrote();
        DB::renew(&self.pool, id, holder, self.lease_until()).await
    }

    /// Writes made so far by this log (and its clones): a measure of what
    /// sagas cost.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a new saga, its first step in flight, held by
    /// `record.holder`.
    pub(crate) async fn create(&self, record: &SagaRecord) -> Result<(), sqlx::Error> {
        self.wrote();
        DB::create(
            &self.pool,
            record,
            now_ms(),
            &record.holder,
            self.lease_until(),
        )
        .await
    }

    /// Before a call: the saga is at `step` with `status`, the call in
    /// flight.
    pub(crate) async fn before(
        &self,
        record: &SagaRecord,
        status: SagaStatus,
        step: u32,
    ) -> Result<bool, sqlx::Error> {
        self.wrote();
        let (now, until) = (now_ms(), self.lease_until());
        DB::before(
            &self.pool,
            &record.id,
            status.as_str(),
            i64::from(step),
            now,
            &record.holder,
            until,
        )
        .await
    }

    /// After a call: the new state and position, the call's entry in the
    /// history, and `events` into the outbox, in one transaction.
    pub(crate) async fn after(
        &self,
        record: &SagaRecord,
        entry: &HistoryEntry,
        events: &[Envelope],
    ) -> Result<bool, sqlx::Error> {
        self.wrote();
        let outbox = match (&self.outbox, events.is_empty()) {
            (_, true) => None,
            (Some(outbox), false) => Some((outbox, events)),
            (None, false) => {
                return Err(sqlx::Error::Configuration(
                    "a saga publishes events but its log has no outbox (SagaLog::with_outbox)"
                        .into(),
                ));
            }
        };
        let held = DB::after(
            &self.pool,
            record,
            entry,
            outbox,
            now_ms(),
            &record.holder,
            self.lease_until(),
        )
        .await?;
        if held && let Some((outbox, _)) = outbox {
            outbox.wake();
        }
        Ok(held)
    }

    /// Aborts saga `id` if it is parked (or says it was aborted already),
    /// recording `reason`; `None` if it is in another status or missing.
    pub(crate) async fn abort(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<Option<SagaRecord>, sqlx::Error> {
        self.wrote();
        DB::abort(&self.pool, id, reason, now_ms()).await
    }

    /// A page of sagas, oldest first: those with `status` (all when
    /// `None`), after the saga created at `after` (its `created_at_ms`
    /// and id), at most `limit`.
    pub async fn page(
        &self,
        status: Option<SagaStatus>,
        after: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<SagaRecord>, sqlx::Error> {
        DB::page(
            &self.pool,
            status.map(SagaStatus::as_str),
            after,
            i64::from(limit),
        )
        .await
    }

    /// The saga `id`.
    pub async fn get(&self, id: &str) -> Result<Option<SagaRecord>, sqlx::Error> {
        DB::get(&self.pool, id).await
    }

    /// Every saga with `status`, oldest first, at most `limit`.
    pub async fn list(
        &self,
        status: SagaStatus,
        limit: u32,
    ) -> Result<Vec<SagaRecord>, sqlx::Error> {
        self.page(Some(status), None, limit).await
    }

    /// The history of saga `id`, oldest first.
    pub async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, sqlx::Error> {
        DB::history(&self.pool, id).await
    }

    /// Deletes up to `limit` ended sagas (completed, compensated or
    /// aborted) last written more than `older_than` ago, with their
    /// histories, oldest first; returns how many. Unfinished and parked
    /// sagas are never deleted. The log grows by every saga until this
    /// runs: call it now and then (every hour, say, with a retention of
    /// days), as long as it returns `limit`. `older_than` is at least one
    /// second.
    pub async fn purge(&self, older_than: Duration, limit: u32) -> Result<u64, sqlx::Error> {
        let older_than = older_than.max(Duration::from_secs(1));
        let before =
            now_ms().saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
        <DB as sealed::Sealed>::purge(&self.pool, before, i64::from(limit)).await
    }
}

macro_rules! history_entry {
    ($row:expr) => {{
        let row = $row;
        let phase: String = row.try_get("phase")?;
        HistoryEntry {
            step: u32::try_from(row.try_get::<i64, _>("step")?).unwrap_or(0),
            phase: if phase == "action" {
                Phase::Action
            } else {
                Phase::Compensation
            },
            outcome: row.try_get("outcome")?,
            error: row.try_get("error")?,
            at_ms: row.try_get("at_ms")?,
        }
    }};
}

macro_rules! saga_record {
    ($row:expr) => {{
        let row = $row;
        let status: String = row.try_get("status")?;
        let parked: Option<String> = row.try_get("parked_from")?;
        SagaRecord {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            version: u32::try_from(row.try_get::<i64, _>("version")?).unwrap_or(0),
            state: row.try_get("state")?,
            status: SagaStatus::parse(&status).ok_or_else(|| {
                sqlx::Error::Decode(format!("unknown saga status {status:?}").into())
            })?,
            step: u32::try_from(row.try_get::<i64, _>("step")?).unwrap_or(0),
            in_flight: row.try_get::<i64, _>("in_flight")? != 0,
            parked_from: parked.as_deref().and_then(SagaStatus::parse),
            error: row.try_get("error")?,
            holder: row.try_get("owner")?,
            undo: decode_undo(&row.try_get::<Vec<u8>, _>("undo")?)?,
            created_at_ms: row.try_get("created_at_ms")?,
            updated_at_ms: row.try_get("updated_at_ms")?,
        }
    }};
}

/// The `undo` column, decoded.
fn decode_undo(bytes: &[u8]) -> Result<BTreeMap<u32, Vec<u8>>, sqlx::Error> {
    UndoColumn::decode(bytes)
        .map(|column| column.by_step)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn encode_undo(undo: &BTreeMap<u32, Vec<u8>>) -> Vec<u8> {
    UndoColumn {
        by_step: undo.clone(),
    }
    .encode_to_vec()
}

mod sealed {
    use std::future::Future;

    use sinew_events::{Envelope, Outbox, outbox::OutboxDatabase};
    use sqlx::Pool;

    use super::{HistoryEntry, SagaRecord};

    /// The SQL, the same text on both databases but for the column types
    /// (sqlx numbers `$1` placeholders on SQLite too).
    pub trait Sealed: sqlx::Database + OutboxDatabase + Sized {
        fn migrate(pool: &Pool<Self>) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
        fn create(
            pool: &Pool<Self>,
            record: &SagaRecord,
            now: i64,
            owner: &str,
            until: i64,
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
        fn before(
            pool: &Pool<Self>,
            id: &str,
            status: &str,
            step: i64,
            now: i64,
            owner: &str,
            until: i64,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
        fn after(
            pool: &Pool<Self>,
            record: &SagaRecord,
            entry: &HistoryEntry,
            events: Option<(&Outbox<Self>, &[Envelope])>,
            now: i64,
            owner: &str,
            until: i64,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
        fn abort(
            pool: &Pool<Self>,
            id: &str,
            reason: &str,
            now: i64,
        ) -> impl Future<Output = Result<Option<SagaRecord>, sqlx::Error>> + Send;
        fn claim(
            pool: &Pool<Self>,
            owner: &str,
            now: i64,
            until: i64,
            id: Option<&str>,
            limit: i64,
        ) -> impl Future<Output = Result<Vec<SagaRecord>, sqlx::Error>> + Send;
        fn renew(
            pool: &Pool<Self>,
            id: &str,
            owner: &str,
            until: i64,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
        fn get(
            pool: &Pool<Self>,
            id: &str,
        ) -> impl Future<Output = Result<Option<SagaRecord>, sqlx::Error>> + Send;
        fn page(
            pool: &Pool<Self>,
            status: Option<&str>,
            after: Option<(i64, &str)>,
            limit: i64,
        ) -> impl Future<Output = Result<Vec<SagaRecord>, sqlx::Error>> + Send;
        fn history(
            pool: &Pool<Self>,
            id: &str,
        ) -> impl Future<Output = Result<Vec<HistoryEntry>, sqlx::Error>> + Send;
        fn purge(
            pool: &Pool<Self>,
            before: i64,
            limit: i64,
        ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
    }
}

const COLUMNS: &str = "id, name, version, state, status, step, in_flight, parked_from, error, \
                       undo, created_at_ms, updated_at_ms, owner";

/// The update of a saga's row after a call, fenced by its holder: `$1` the
/// id, `$2` to `$7` the record, `$8` the time, `$9` the holder, `$10` the
/// lease's end, `$11` the compensations' requests.
macro_rules! after_update {
    () => {
        "UPDATE sinew_saga SET state = $2, status = $3, step = $4, in_flight = $5,
           parked_from = $6, error = $7, updated_at_ms = $8, lease_until_ms = $10,
           undo = $11
         WHERE id = $1 AND owner = $9"
    };
}

/// The log's SQL for one database: its blob type, its row locking for
/// claims, its migration lock, and whether an "after" write is one
/// statement (PostgreSQL: an update feeding an insert through a CTE) or a
/// transaction of two (SQLite, whose CTEs cannot update).
macro_rules! log_sql {
    ($db:ty, $blob:literal, $skip_locked:literal, $migrate_lock:expr, $one_statement:literal) => {
        impl sealed::Sealed for $db {
            async fn migrate(pool: &Pool<Self>) -> Result<(), sqlx::Error> {
                let mut tx = pool.begin().await?;
                $migrate_lock(&mut tx).await?;
                sqlx::query(concat!(
                    "CREATE TABLE IF NOT EXISTS sinew_saga (
                        id TEXT PRIMARY KEY,
                        name TEXT NOT NULL,
                        version BIGINT NOT NULL,
                        state ", $blob, " NOT NULL,
                        status TEXT NOT NULL,
                        step BIGINT NOT NULL,
                        in_flight BIGINT NOT NULL,
                        parked_from TEXT,
                        error TEXT,
                        undo ", $blob, " NOT NULL,
                        owner TEXT NOT NULL,
                        lease_until_ms BIGINT NOT NULL,
                        created_at_ms BIGINT NOT NULL,
                        updated_at_ms BIGINT NOT NULL
                    )"
                ))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "CREATE INDEX IF NOT EXISTS sinew_saga_status ON sinew_saga (status, created_at_ms)",
                )
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS sinew_saga_history (
                        saga_id TEXT NOT NULL,
                        n BIGINT NOT NULL,
                        at_ms BIGINT NOT NULL,
                        step BIGINT NOT NULL,
                        phase TEXT NOT NULL,
                        outcome TEXT NOT NULL,
                        error TEXT
                    )",
                )
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "CREATE INDEX IF NOT EXISTS sinew_saga_history_saga ON sinew_saga_history (saga_id, n)",
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            }

            async fn create(
                pool: &Pool<Self>,
                r: &SagaRecord,
                now: i64,
                owner: &str,
                until: i64,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO sinew_saga
                       (id, name, version, state, status, step, in_flight, parked_from, error,
                        owner, lease_until_ms, created_at_ms, updated_at_ms, undo)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, $9, $10, $8, $8, $11)",
                )
                .bind(&r.id)
                .bind(&r.name)
                .bind(i64::from(r.version))
                .bind(&r.state)
                .bind(r.status.as_str())
                .bind(i64::from(r.step))
                .bind(i64::from(r.in_flight))
                .bind(now)
                .bind(owner)
                .bind(until)
                .bind(encode_undo(&r.undo))
                .execute(pool)
                .await?;
                Ok(())
            }

            async fn before(
                pool: &Pool<Self>,
                id: &str,
                status: &str,
                step: i64,
                now: i64,
                owner: &str,
                until: i64,
            ) -> Result<bool, sqlx::Error> {
                let done = sqlx::query(
                    "UPDATE sinew_saga SET status = $2, step = $3, in_flight = 1,
                       parked_from = NULL, updated_at_ms = $4, lease_until_ms = $6
                     WHERE id = $1 AND owner = $5",
                )
                .bind(id)
                .bind(status)
                .bind(step)
                .bind(now)
                .bind(owner)
                .bind(until)
                .execute(pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn after(
                pool: &Pool<Self>,
                r: &SagaRecord,
                entry: &HistoryEntry,
                events: Option<(&Outbox<Self>, &[Envelope])>,
                now: i64,
                owner: &str,
                until: i64,
            ) -> Result<bool, sqlx::Error> {
                // On PostgreSQL without events, one round trip: the update,
                // and the history entry only if the update found the saga
                // still held; one statement is one transaction. Otherwise a
                // transaction of the update, the events and the entry.
                let single = $one_statement && events.is_none();
                let update = sqlx::query(if single {
                    concat!(
                        "WITH updated AS (",
                        after_update!(),
                        " RETURNING id)
                         INSERT INTO sinew_saga_history (saga_id, n, at_ms, step, phase, outcome, error)
                         SELECT id,
                           COALESCE((SELECT MAX(n) FROM sinew_saga_history WHERE saga_id = $1), 0) + 1,
                           $8, $12, $13, $14, $15
                         FROM updated"
                    )
                } else {
                    after_update!()
                })
                .bind(&r.id)
                .bind(&r.state)
                .bind(r.status.as_str())
                .bind(i64::from(r.step))
                .bind(i64::from(r.in_flight))
                .bind(r.parked_from.map(SagaStatus::as_str))
                .bind(r.error.as_deref())
                .bind(now)
                .bind(owner)
                .bind(until)
                .bind(encode_undo(&r.undo));
                if single {
                    let done = update
                        .bind(i64::from(entry.step))
                        .bind(phase_name(entry.phase))
                        .bind(&entry.outcome)
                        .bind(entry.error.as_deref())
                        .execute(pool)
                        .await?;
                    return Ok(done.rows_affected() == 1);
                }
                let mut tx = pool.begin().await?;
                let done = update.execute(&mut *tx).await?;
                if done.rows_affected() != 1 {
                    // Another orchestrator holds the saga now.
                    return Ok(false);
                }
                if let Some((outbox, events)) = events {
                    for envelope in events {
                        outbox.add_envelope(&mut tx, envelope).await.map_err(|e| match e {
                            sinew_events::Error::Database(e) => e,
                            other => sqlx::Error::Protocol(other.to_string()),
                        })?;
                    }
                }
                sqlx::query(
                    "INSERT INTO sinew_saga_history (saga_id, n, at_ms, step, phase, outcome, error)
                     SELECT $1, COALESCE(MAX(n), 0) + 1, $2, $3, $4, $5, $6
                     FROM sinew_saga_history WHERE saga_id = $1",
                )
                .bind(&r.id)
                .bind(now)
                .bind(i64::from(entry.step))
                .bind(phase_name(entry.phase))
                .bind(&entry.outcome)
                .bind(entry.error.as_deref())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn claim(
                pool: &Pool<Self>,
                owner: &str,
                now: i64,
                until: i64,
                id: Option<&str>,
                limit: i64,
            ) -> Result<Vec<SagaRecord>, sqlx::Error> {
                // One parked saga (an operator's resume), or the unfinished
                // sagas no live orchestrator holds.
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE sinew_saga SET owner = $1, lease_until_ms = $2,
                       status = CASE WHEN status = 'needs_attention'
                                THEN COALESCE(parked_from, 'compensating') ELSE status END
                     WHERE id IN (
                       SELECT id FROM sinew_saga
                       WHERE ($4 IS NOT NULL AND id = $4 AND status = 'needs_attention')
                          OR ($4 IS NULL AND status IN ('running', 'compensating')
                              AND lease_until_ms < $3)
                       ORDER BY created_at_ms, id LIMIT $5 {})
                     RETURNING {COLUMNS}",
                    $skip_locked
                )))
                .bind(owner)
                .bind(until)
                .bind(now)
                .bind(id)
                .bind(limit)
                .fetch_all(pool)
                .await?;
                rows.into_iter().map(|row| Ok(saga_record!(row))).collect()
            }

            async fn renew(
                pool: &Pool<Self>,
                id: &str,
                owner: &str,
                until: i64,
            ) -> Result<bool, sqlx::Error> {
                let done = sqlx::query(
                    "UPDATE sinew_saga SET lease_until_ms = $3 WHERE id = $1 AND owner = $2",
                )
                .bind(id)
                .bind(owner)
                .bind(until)
                .execute(pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn get(pool: &Pool<Self>, id: &str) -> Result<Option<SagaRecord>, sqlx::Error> {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM sinew_saga WHERE id = $1"
                )))
                .bind(id)
                .fetch_optional(pool)
                .await?;
                match row {
                    Some(row) => Ok(Some(saga_record!(row))),
                    None => Ok(None),
                }
            }

            async fn page(
                pool: &Pool<Self>,
                status: Option<&str>,
                after: Option<(i64, &str)>,
                limit: i64,
            ) -> Result<Vec<SagaRecord>, sqlx::Error> {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM sinew_saga
                     WHERE ($1 IS NULL OR status = $1)
                       AND ($2 IS NULL OR created_at_ms > $2 OR (created_at_ms = $2 AND id > $3))
                     ORDER BY created_at_ms, id LIMIT $4"
                )))
                .bind(status)
                .bind(after.map(|(at, _)| at))
                .bind(after.map(|(_, id)| id))
                .bind(limit)
                .fetch_all(pool)
                .await?;
                rows.into_iter().map(|row| Ok(saga_record!(row))).collect()
            }

            async fn abort(
                pool: &Pool<Self>,
                id: &str,
                reason: &str,
                now: i64,
            ) -> Result<Option<SagaRecord>, sqlx::Error> {
                let mut tx = pool.begin().await?;
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE sinew_saga SET status = 'aborted', in_flight = 0, error = $2,
                       updated_at_ms = $3, owner = 'aborted'
                     WHERE id = $1 AND status = 'needs_attention'
                     RETURNING {COLUMNS}"
                )))
                .bind(id)
                .bind(reason)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    // Aborted already: answered as it is; any other status
                    // is not abortable.
                    drop(tx);
                    let saga = Self::get(pool, id).await?;
                    return Ok(saga.filter(|s| s.status == SagaStatus::Aborted));
                };
                let record = saga_record!(row);
                let phase = if record.parked_from == Some(SagaStatus::Running) {
                    "action"
                } else {
                    "compensation"
                };
                sqlx::query(
                    "INSERT INTO sinew_saga_history (saga_id, n, at_ms, step, phase, outcome, error)
                     SELECT $1, COALESCE(MAX(n), 0) + 1, $2, $3, $4, 'aborted', $5
                     FROM sinew_saga_history WHERE saga_id = $1",
                )
                .bind(id)
                .bind(now)
                .bind(i64::from(record.step))
                .bind(phase)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(record))
            }

            async fn history(pool: &Pool<Self>, id: &str) -> Result<Vec<HistoryEntry>, sqlx::Error> {
                let rows = sqlx::query(
                    "SELECT step, phase, outcome, error, at_ms FROM sinew_saga_history
                     WHERE saga_id = $1 ORDER BY n",
                )
                .bind(id)
                .fetch_all(pool)
                .await?;
                rows.into_iter().map(|row| Ok(history_entry!(row))).collect()
            }

            async fn purge(pool: &Pool<Self>, before: i64, limit: i64) -> Result<u64, sqlx::Error> {
                // An ended saga is written no more, and one that ends now is
                // newer than `before`: both statements see the same sagas.
                const ENDED: &str = "SELECT id FROM sinew_saga
                    WHERE status IN ('completed', 'compensated', 'aborted')
                      AND updated_at_ms < $1
                    ORDER BY updated_at_ms, id LIMIT $2";
                let mut tx = pool.begin().await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM sinew_saga_history WHERE saga_id IN ({ENDED})"
                )))
                .bind(before)
                .bind(limit)
                .execute(&mut *tx)
                .await?;
                let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM sinew_saga WHERE id IN ({ENDED})"
                )))
                .bind(before)
                .bind(limit)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            }
        }
    };
}

async fn no_lock(_: &mut sqlx::Transaction<'_, Sqlite>) -> Result<(), sqlx::Error> {
    Ok(())
}

/// Replicas starting at once race on `CREATE ... IF NOT EXISTS` in
/// PostgreSQL: a lock serializes the log's migration ("sinew_sg").
async fn pg_lock(tx: &mut sqlx::Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(0x7369_6e65_775f_7367_i64)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

log_sql!(Sqlite, "BLOB", "", no_lock, false);
log_sql!(Postgres, "BYTEA", "FOR UPDATE SKIP LOCKED", pg_lock, true);
