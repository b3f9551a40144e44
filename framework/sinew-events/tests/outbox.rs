//! The transactional outbox and its relay, on SQLite (a temporary file) and
//! PostgreSQL (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`;
//! skipped loudly when unreachable, unless `SINEW_REQUIRE_SERVICES=1`).
//!
//! Each PostgreSQL test runs in a schema of its own, so tests in parallel
//! do not share the (fixed) outbox tables. A test broker records what the
//! relays publish and fails on demand.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::{future::join_all, stream};
use sinew_events::{
    Broker, Delivery, Envelope, Error, Event, JetStream, JetStreamConfig, Published, StreamConfig,
    consumer::ConsumerConfig,
    outbox::{Outbox, OutboxConfig, OutboxDatabase, Relay, RelayConfig, RelayHandle},
};
use sqlx::{
    AssertSqlSafe, Pool, Postgres, Sqlite, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
};
use tokio::time::Instant;

// === the event ===

#[derive(Clone, PartialEq, prost::Message)]
struct Moved {
    #[prost(string, tag = "1")]
    aggregate: String,
    #[prost(uint32, tag = "2")]
    seq: u32,
}

impl Event for Moved {
    const TYPE: &'static str = "test.Moved";
    const SUBJECT: &'static str = "test.moved";
    const SCHEMA_VERSION: u32 = 1;
    fn aggregate_id(&self) -> String {
        self.aggregate.clone()
    }
}

fn moved(aggregate: &str, seq: u32) -> Moved {
    Moved {
        aggregate: aggregate.into(),
        seq,
    }
}

// === the test broker ===

type FailRule = Box<dyn Fn(&Moved, u32) -> bool + Send + Sync>;

#[derive(Default)]
struct Record {
    /// What each relay published and the broker acknowledged: (tag, envelope).
    published: Mutex<Vec<(&'static str, Envelope)>>,
    /// Attempts so far, per event id.
    attempts: Mutex<HashMap<String, u32>>,
    total_attempts: AtomicU64,
    down: AtomicBool,
    /// Fails an attempt when it returns true, given the event and how many
    /// attempts of it came before.
    fail: Mutex<Option<FailRule>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A broker that records acknowledged publishes, tagged by relay.
#[derive(Clone)]
struct TestBroker {
    tag: &'static str,
    record: Arc<Record>,
}

impl TestBroker {
    fn new() -> Self {
        Self {
            tag: "a",
            record: Arc::default(),
        }
    }

    /// The same record, published to under another tag.
    fn tagged(&self, tag: &'static str) -> Self {
        Self {
            tag,
            record: self.record.clone(),
        }
    }

    fn fail_when(&self, rule: impl Fn(&Moved, u32) -> bool + Send + Sync + 'static) {
        *self.record.fail.lock().unwrap() = Some(Box::new(rule));
    }

    fn set_down(&self, down: bool) {
        self.record.down.store(down, Ordering::SeqCst);
    }

    fn published(&self) -> Vec<(&'static str, Envelope)> {
        self.record.published.lock().unwrap().clone()
    }

    fn ids(&self) -> Vec<String> {
        self.published().into_iter().map(|(_, e)| e.id).collect()
    }

    fn count(&self) -> usize {
        self.record.published.lock().unwrap().len()
    }

    fn attempts(&self) -> u64 {
        self.record.total_attempts.load(Ordering::SeqCst)
    }

    /// The sequence numbers acknowledged for each aggregate, in order.
    fn sequences(&self) -> HashMap<String, Vec<u32>> {
        let mut out: HashMap<String, Vec<u32>> = HashMap::new();
        for (_, envelope) in self.published() {
            let event: Moved = envelope.event().unwrap();
            out.entry(event.aggregate).or_default().push(event.seq);
        }
        out
    }
}

struct NoDelivery;

impl Delivery for NoDelivery {
    fn subject(&self) -> &str {
        ""
    }
    fn headers(&self) -> Option<&async_nats::HeaderMap> {
        None
    }
    fn payload(&self) -> &Bytes {
        static EMPTY: Bytes = Bytes::new();
        &EMPTY
    }
    fn delivered(&self) -> u64 {
        1
    }
    async fn ack(&self) -> Result<(), Error> {
        Ok(())
    }
    async fn nak(&self, _delay: Duration) -> Result<(), Error> {
        Ok(())
    }
    async fn term(&self) -> Result<(), Error> {
        Ok(())
    }
}

impl Broker for TestBroker {
    type Delivery = NoDelivery;
    type Deliveries = stream::Empty<Result<NoDelivery, Error>>;

    async fn publish_raw(
        &self,
        _subject: String,
        _headers: async_nats::HeaderMap,
        _payload: Bytes,
    ) -> Result<Published, Error> {
        Err(Error::Closed)
    }

    async fn subscribe(
        &self,
        _subject: &str,
        _config: &ConsumerConfig,
    ) -> Result<Self::Deliveries, Error> {
        Ok(stream::empty())
    }

    async fn publish(&self, envelope: &Envelope) -> Result<Published, Error> {
        let record = &self.record;
        record.total_attempts.fetch_add(1, Ordering::SeqCst);
        let now = record.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        record.max_in_flight.fetch_max(now, Ordering::SeqCst);
        // Let the other publishes of the wave start before this one ends.
        tokio::task::yield_now().await;
        record.in_flight.fetch_sub(1, Ordering::SeqCst);
        let before = {
            let mut attempts = record.attempts.lock().unwrap();
            let n = attempts.entry(envelope.id.clone()).or_default();
            *n += 1;
            *n - 1
        };
        if record.down.load(Ordering::SeqCst) {
            return Err(Error::Broker("broker down".into()));
        }
        let event: Moved = envelope.event().expect("a Moved event");
        if let Some(rule) = &*record.fail.lock().unwrap()
            && rule(&event, before)
        {
            return Err(Error::Broker("refused".into()));
        }
        record
            .published
            .lock()
            .unwrap()
            .push((self.tag, envelope.clone()));
        Ok(Published { duplicate: false })
    }

    fn is_connected(&self) -> bool {
        !self.record.down.load(Ordering::SeqCst)
    }
}

// === databases ===

/// What the tests need of each database beyond the outbox's API.
trait Db: OutboxDatabase {
    async fn rows(pool: &Pool<Self>) -> i64;
    async fn create_orders(pool: &Pool<Self>);
    async fn insert_order(tx: &mut Transaction<'_, Self>, id: &str);
    async fn orders(pool: &Pool<Self>) -> i64;
}

impl Db for Sqlite {
    async fn rows(pool: &Pool<Self>) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM sinew_outbox")
            .fetch_one(pool)
            .await
            .unwrap()
    }
    async fn create_orders(pool: &Pool<Self>) {
        sqlx::query("CREATE TABLE orders (id TEXT PRIMARY KEY)")
            .execute(pool)
            .await
            .unwrap();
    }
    async fn insert_order(tx: &mut Transaction<'_, Self>, id: &str) {
        sqlx::query("INSERT INTO orders (id) VALUES (?1)")
            .bind(id)
            .execute(&mut **tx)
            .await
            .unwrap();
    }
    async fn orders(pool: &Pool<Self>) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(pool)
            .await
            .unwrap()
    }
}

impl Db for Postgres {
    async fn rows(pool: &Pool<Self>) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM sinew_outbox")
            .fetch_one(pool)
            .await
            .unwrap()
    }
    async fn create_orders(pool: &Pool<Self>) {
        sqlx::query("CREATE TABLE orders (id TEXT PRIMARY KEY)")
            .execute(pool)
            .await
            .unwrap();
    }
    async fn insert_order(tx: &mut Transaction<'_, Self>, id: &str) {
        sqlx::query("INSERT INTO orders (id) VALUES ($1)")
            .bind(id)
            .execute(&mut **tx)
            .await
            .unwrap();
    }
    async fn orders(pool: &Pool<Self>) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(pool)
            .await
            .unwrap()
    }
}

/// An outbox in a temporary SQLite file.
struct SqliteDb {
    _dir: tempfile::TempDir,
    options: SqliteConnectOptions,
}

impl SqliteDb {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("outbox.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        Self { _dir: dir, options }
    }

    /// An outbox on a pool of its own (as another process would have).
    async fn outbox(&self) -> Outbox<Sqlite> {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(self.options.clone())
            .await
            .unwrap();
        let outbox = Outbox::new(pool, OutboxConfig::default());
        outbox.migrate().await.unwrap();
        outbox
    }
}

/// An outbox in a schema of its own on the test PostgreSQL.
struct PgDb {
    admin: Pool<Postgres>,
    schema: String,
    options: PgConnectOptions,
}

impl PgDb {
    /// `None` (and a loud SKIP) when PostgreSQL is unreachable, unless
    /// `SINEW_REQUIRE_SERVICES=1`.
    async fn new(test: &str) -> Option<Self> {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let options: PgConnectOptions = url.parse().expect("DATABASE_URL is a postgres URL");
        let admin = match PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options.clone())
            .await
        {
            Ok(pool) => pool,
            Err(error) => {
                if std::env::var("SINEW_REQUIRE_SERVICES").as_deref() == Ok("1") {
                    panic!("PostgreSQL unreachable and SINEW_REQUIRE_SERVICES=1: {error}");
                }
                #[allow(clippy::print_stderr, reason = "a skipped test says so")]
                {
                    eprintln!("SKIP {test}: PostgreSQL unreachable ({error})");
                }
                return None;
            }
        };
        let schema = format!("test_outbox_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        let options = options
            .options([("search_path", schema.as_str())])
            .application_name(&schema);
        Some(Self {
            admin,
            schema,
            options,
        })
    }

    /// An outbox on a pool of its own (as another process would have).
    async fn outbox(&self) -> Outbox<Postgres> {
        let pool = PgPoolOptions::new()
            .max_connections(6)
            .connect_with(self.options.clone())
            .await
            .unwrap();
        let outbox = Outbox::new(pool, OutboxConfig::default());
        outbox.migrate().await.unwrap();
        outbox
    }

    async fn drop(self) {
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.schema
        )))
        .execute(&self.admin)
        .await
        .unwrap();
    }
}

// === helpers ===

/// Short waits, so that tests run in well under a second each. The lease
/// outlives a loaded machine's stalls; takeover tests shorten it.
fn fast() -> RelayConfig {
    RelayConfig {
        poll_interval: Duration::from_millis(50),
        lease_ttl: Duration::from_secs(2),
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ..RelayConfig::default()
    }
}

fn relay<DB: OutboxDatabase>(
    outbox: &Outbox<DB>,
    broker: &TestBroker,
    config: RelayConfig,
) -> RelayHandle {
    Relay::new(outbox.clone(), broker.clone(), config)
        .unwrap()
        .spawn()
}

/// Polls `check` every 10ms until it holds; panics after `within`.
async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const WITHIN: Duration = Duration::from_secs(10);

/// Adds the events in one transaction and commits it.
async fn add_all<DB: OutboxDatabase>(outbox: &Outbox<DB>, events: &[Moved]) -> Vec<Envelope> {
    let mut tx = outbox.pool().begin().await.unwrap();
    let mut envelopes = Vec::new();
    for event in events {
        envelopes.push(outbox.add(&mut tx, event).await.unwrap());
    }
    outbox.commit(tx).await.unwrap();
    envelopes
}

/// `per` events for each of `aggregates`, interleaved across aggregates.
fn interleaved(aggregates: &[&str], per: u32) -> Vec<Moved> {
    (0..per)
        .flat_map(|seq| aggregates.iter().map(move |a| moved(a, seq)))
        .collect()
}

fn assert_in_order(broker: &TestBroker, aggregates: &[&str], per: u32) {
    let sequences = broker.sequences();
    for aggregate in aggregates {
        assert_eq!(
            sequences.get(*aggregate).cloned().unwrap_or_default(),
            (0..per).collect::<Vec<_>>(),
            "aggregate {aggregate}"
        );
    }
}

// === scenarios, on either database ===

async fn atomicity<DB: Db>(outbox: Outbox<DB>) {
    DB::create_orders(outbox.pool()).await;

    let mut tx = outbox.pool().begin().await.unwrap();
    DB::insert_order(&mut tx, "o-1").await;
    let rolled_back = outbox.add(&mut tx, &moved("o-1", 0)).await.unwrap();
    tx.rollback().await.unwrap();

    let mut tx = outbox.pool().begin().await.unwrap();
    DB::insert_order(&mut tx, "o-2").await;
    let committed = outbox.add(&mut tx, &moved("o-2", 0)).await.unwrap();
    outbox.commit(tx).await.unwrap();

    assert_eq!(DB::orders(outbox.pool()).await, 1);
    assert_eq!(DB::rows(outbox.pool()).await, 1);
    assert_eq!(outbox.pending().await.unwrap().count, 1);

    let broker = TestBroker::new();
    let relay = relay(&outbox, &broker, fast());
    eventually("the committed event", WITHIN, async || broker.count() == 1).await;
    eventually("the row marked", WITHIN, async || {
        outbox.pending().await.unwrap().count == 0
    })
    .await;
    relay.shutdown().await;
    assert_eq!(broker.ids(), vec![committed.id.clone()]);
    assert_ne!(rolled_back.id, committed.id);
    let (_, envelope) = &broker.published()[0];
    assert_eq!(envelope, &committed);
}

async fn order_under_failures<DB: Db>(outbox: Outbox<DB>) {
    let aggregates = ["a", "b", "c", "d"];
    let per = 25;
    let events = interleaved(&aggregates, per);
    for chunk in events.chunks(10) {
        add_all(&outbox, chunk).await;
    }
    let broker = TestBroker::new();
    // Every third event of each aggregate fails twice before it passes.
    broker.fail_when(|event, before| event.seq % 3 == 1 && before < 2);
    let relay = relay(
        &outbox,
        &broker,
        RelayConfig {
            batch_size: 32,
            ..fast()
        },
    );
    eventually("every event", WITHIN, async || {
        broker.count() == aggregates.len() * per as usize
    })
    .await;
    eventually("every row marked", WITHIN, async || {
        outbox.pending().await.unwrap().count == 0
    })
    .await;
    relay.shutdown().await;
    assert_in_order(&broker, &aggregates, per);
    // Each of the 32 failing events took two attempts more; nothing else
    // was published twice.
    assert_eq!(broker.attempts(), 100 + 2 * 32);
    assert!(
        broker.record.max_in_flight.load(Ordering::SeqCst) > 1,
        "aggregates are published concurrently"
    );
}

async fn outage_then_recovery<DB: Db>(outbox: Outbox<DB>) {
    let broker = TestBroker::new();
    broker.set_down(true);
    let relay = relay(&outbox, &broker, fast());
    let aggregates = ["x", "y", "z"];
    let per = 15;
    for chunk in interleaved(&aggregates, per).chunks(9) {
        add_all(&outbox, chunk).await;
    }
    eventually("retries during the outage", WITHIN, async || {
        broker.attempts() >= 10
    })
    .await;
    assert_eq!(broker.count(), 0);
    assert_eq!(outbox.pending().await.unwrap().count, 45);

    broker.set_down(false);
    eventually("the backlog drained", WITHIN, async || broker.count() == 45).await;
    eventually("every row marked", WITHIN, async || {
        outbox.pending().await.unwrap().count == 0
    })
    .await;
    relay.shutdown().await;
    assert_in_order(&broker, &aggregates, per);
    let unique: HashSet<String> = broker.ids().into_iter().collect();
    assert_eq!(unique.len(), 45);
}

async fn retention<DB: Db>(outbox: Outbox<DB>) {
    let broker = TestBroker::new();
    broker.fail_when(|event, _| event.aggregate == "stuck");
    add_all(&outbox, &interleaved(&["p", "q"], 3)).await;
    add_all(&outbox, &[moved("stuck", 0)]).await;
    let relay = relay(
        &outbox,
        &broker,
        RelayConfig {
            retention: Duration::from_millis(1),
            purge_interval: Duration::from_millis(20),
            purge_chunk: 2,
            ..fast()
        },
    );
    eventually("the healthy events published", WITHIN, async || {
        broker.count() == 6
    })
    .await;
    eventually("published rows purged", WITHIN, async || {
        DB::rows(outbox.pool()).await == 1
    })
    .await;
    relay.shutdown().await;
    // What was never published stays.
    assert_eq!(outbox.pending().await.unwrap().count, 1);
}

async fn lag<DB: Db>(outbox: Outbox<DB>) {
    outbox.lag_check(Duration::ZERO).await.unwrap();
    let pending = outbox.pending().await.unwrap();
    assert_eq!((pending.count, pending.oldest), (0, None));

    add_all(&outbox, &[moved("l", 0), moved("l", 1)]).await;
    // The check is 'static and Send, as a readiness probe needs.
    tokio::spawn(outbox.lag_check(Duration::from_secs(3600)))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    match outbox.lag_check(Duration::from_millis(10)).await {
        Err(Error::OutboxLag { age, threshold }) => {
            assert!(age >= Duration::from_millis(20), "{age:?}");
            assert_eq!(threshold, Duration::from_millis(10));
        }
        other => panic!("expected a lag error, got {other:?}"),
    }
    let pending = outbox.pending().await.unwrap();
    assert_eq!(pending.count, 2);
    assert!(pending.oldest.unwrap() >= Duration::from_millis(20));

    let broker = TestBroker::new();
    let relay = relay(&outbox, &broker, fast());
    eventually("the lag gone", WITHIN, async || {
        outbox.lag_check(Duration::from_millis(10)).await.is_ok()
    })
    .await;
    relay.shutdown().await;
    assert_eq!(broker.count(), 2);
}

/// The holder stops (crashing, or shutting down); the standby publishes
/// what comes after.
async fn takeover<DB: Db>(first: Outbox<DB>, second: Outbox<DB>, crash: bool) {
    let broker = TestBroker::new();
    let config = RelayConfig {
        lease_ttl: Duration::from_millis(if crash { 300 } else { 1500 }),
        ..fast()
    };
    let holder = relay(&first, &broker.tagged("first"), config.clone());
    add_all(&first, &[moved("t", 0)]).await;
    eventually("the first event", WITHIN, async || broker.count() == 1).await;
    eventually("the first event marked", WITHIN, async || {
        first.pending().await.unwrap().count == 0
    })
    .await;
    assert!(holder.is_leader());

    let standby = relay(&second, &broker.tagged("second"), config);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!standby.is_leader());
    let stopped = Instant::now();
    if crash {
        holder.abort();
    } else {
        holder.shutdown().await;
    }
    add_all(&second, &[moved("t", 1), moved("u", 0)]).await;
    eventually("the standby publishing", WITHIN, async || {
        broker.count() == 3
    })
    .await;
    if !crash {
        // A relay that shuts down gives the lease up: no wait for expiry.
        assert!(stopped.elapsed() < Duration::from_millis(1200));
    }
    assert!(standby.is_leader());
    standby.shutdown().await;
    let tags: Vec<&str> = broker.published().iter().map(|(tag, _)| *tag).collect();
    assert_eq!(tags, ["first", "second", "second"]);
    assert_in_order(&broker, &["t"], 2);
}

// === SQLite ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_rolled_back_transaction_leaves_no_event() {
    let db = SqliteDb::new();
    atomicity(db.outbox().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_order_per_aggregate_survives_failed_publishes() {
    let db = SqliteDb::new();
    order_under_failures(db.outbox().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_outage_loses_nothing() {
    let db = SqliteDb::new();
    outage_then_recovery(db.outbox().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_published_rows_are_purged_after_retention() {
    let db = SqliteDb::new();
    retention(db.outbox().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lag_check() {
    let db = SqliteDb::new();
    lag(db.outbox().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_standby_takes_over_from_a_crashed_holder() {
    let db = SqliteDb::new();
    takeover(db.outbox().await, db.outbox().await, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_relay_that_shuts_down_hands_the_lease_over() {
    let db = SqliteDb::new();
    takeover(db.outbox().await, db.outbox().await, false).await;
}

/// An aggregate whose publishes keep failing holds back its own events,
/// not the others': full batches that progress go on without a backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_failing_aggregate_does_not_slow_the_others() {
    let db = SqliteDb::new();
    let outbox = db.outbox().await;
    let broker = TestBroker::new();
    broker.fail_when(|event, _| event.aggregate == "stuck");
    add_all(&outbox, &[moved("stuck", 0), moved("stuck", 1)]).await;
    let others: Vec<&str> = vec!["o1", "o2", "o3"];
    add_all(&outbox, &interleaved(&others, 13)).await;
    let started = Instant::now();
    let relay = relay(
        &outbox,
        &broker,
        RelayConfig {
            batch_size: 4,
            // A backoff would take 2s at least.
            backoff_initial: Duration::from_secs(4),
            backoff_max: Duration::from_secs(4),
            ..fast()
        },
    );
    eventually("the other aggregates", WITHIN, async || {
        broker.count() == 39
    })
    .await;
    let took = started.elapsed();
    // Only the stuck aggregate's two events wait.
    eventually("the others marked", WITHIN, async || {
        outbox.pending().await.unwrap().count == 2
    })
    .await;
    relay.abort();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_in_order(&broker, &others, 13);
    assert!(!broker.sequences().contains_key("stuck"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_event_id_is_written_once() {
    let db = SqliteDb::new();
    let outbox = db.outbox().await;
    let envelope = Envelope::new(&moved("d", 0));
    let mut tx = outbox.pool().begin().await.unwrap();
    outbox.add_envelope(&mut tx, &envelope).await.unwrap();
    let again = outbox.add_envelope(&mut tx, &envelope).await;
    assert!(matches!(again, Err(Error::Database(_))), "{again:?}");
}

#[tokio::test]
async fn invalid_settings_are_refused() {
    let db = SqliteDb::new();
    let outbox = db.outbox().await;
    let zero = RelayConfig {
        lease_ttl: Duration::ZERO,
        ..RelayConfig::default()
    };
    match Relay::new(outbox, TestBroker::new(), zero) {
        Err(Error::Config { key, .. }) => assert_eq!(key, "relay.lease_ttl"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

// === PostgreSQL ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_rolled_back_transaction_leaves_no_event() {
    let Some(db) = PgDb::new("postgres_a_rolled_back_transaction_leaves_no_event").await else {
        return;
    };
    atomicity(db.outbox().await).await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_order_per_aggregate_survives_failed_publishes() {
    let Some(db) = PgDb::new("postgres_order_per_aggregate_survives_failed_publishes").await else {
        return;
    };
    order_under_failures(db.outbox().await).await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_outage_loses_nothing() {
    let Some(db) = PgDb::new("postgres_an_outage_loses_nothing").await else {
        return;
    };
    outage_then_recovery(db.outbox().await).await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_published_rows_are_purged_after_retention() {
    let Some(db) = PgDb::new("postgres_published_rows_are_purged_after_retention").await else {
        return;
    };
    retention(db.outbox().await).await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lag_check() {
    let Some(db) = PgDb::new("postgres_lag_check").await else {
        return;
    };
    lag(db.outbox().await).await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_standby_takes_over_from_a_crashed_holder() {
    let Some(db) = PgDb::new("postgres_a_standby_takes_over_from_a_crashed_holder").await else {
        return;
    };
    takeover(db.outbox().await, db.outbox().await, true).await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_relay_that_shuts_down_hands_the_lease_over() {
    let Some(db) = PgDb::new("postgres_a_relay_that_shuts_down_hands_the_lease_over").await else {
        return;
    };
    takeover(db.outbox().await, db.outbox().await, false).await;
    db.drop().await;
}

/// A transaction that took a lower position but commits after a higher
/// one is still published: the relay selects by "not published", not by a
/// position watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_late_commit_is_not_skipped() {
    let Some(db) = PgDb::new("postgres_a_late_commit_is_not_skipped").await else {
        return;
    };
    let outbox = db.outbox().await;
    let broker = TestBroker::new();
    // No poll and no lease renewal within the test: only the wake-ups
    // (in-process for B, PostgreSQL's NOTIFY for A) make the relay look.
    let config = RelayConfig {
        poll_interval: Duration::from_secs(60),
        lease_ttl: Duration::from_secs(90),
        ..fast()
    };
    let relay = relay(&outbox, &broker, config);

    let mut late = outbox.pool().begin().await.unwrap();
    let a = outbox.add(&mut late, &moved("a", 0)).await.unwrap();
    let b = add_all(&outbox, &[moved("b", 0)]).await.remove(0);
    eventually("B published", WITHIN, async || broker.count() == 1).await;
    eventually("B marked", WITHIN, async || {
        outbox.pending().await.unwrap().count == 0
    })
    .await;
    assert_eq!(broker.ids(), vec![b.id.clone()]);

    // A holds the lower position, and commits last.
    let positions: Vec<(String, i64)> =
        sqlx::query_as("SELECT id, position FROM sinew_outbox ORDER BY position")
            .fetch_all(outbox.pool())
            .await
            .unwrap();
    assert_eq!(positions.len(), 1, "A is not visible before its commit");
    assert_eq!(positions[0].0, b.id);
    // Committed without outbox.commit: only the NOTIFY (or the poll) wakes
    // the relay.
    late.commit().await.unwrap();
    eventually("A published", WITHIN, async || broker.count() == 2).await;
    relay.shutdown().await;
    assert_eq!(broker.ids(), vec![b.id.clone(), a.id.clone()]);
    let positions: Vec<(String, i64)> =
        sqlx::query_as("SELECT id, position FROM sinew_outbox ORDER BY position")
            .fetch_all(outbox.pool())
            .await
            .unwrap();
    let order: Vec<&str> = positions.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(order, [a.id.as_str(), b.id.as_str()]);
    db.drop().await;
}

/// Two relays on one database, a burst of events committed through both:
/// each event published exactly once in sum, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_relays_publish_each_event_once() {
    let Some(db) = PgDb::new("postgres_two_relays_publish_each_event_once").await else {
        return;
    };
    let first = db.outbox().await;
    let second = db.outbox().await;
    let broker = TestBroker::new();
    let config = RelayConfig {
        lease_ttl: Duration::from_secs(2),
        batch_size: 64,
        ..fast()
    };
    let one = relay(&first, &broker.tagged("one"), config.clone());
    let two = relay(&second, &broker.tagged("two"), config);

    let n = 400;
    let burst = (0..40u32).map(|t| {
        let outbox = if t % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        async move {
            let events: Vec<Moved> = (0..10).map(|i| moved(&format!("g{t}"), i)).collect();
            add_all(&outbox, &events).await
        }
    });
    let added: HashSet<String> = join_all(burst)
        .await
        .into_iter()
        .flatten()
        .map(|e| e.id)
        .collect();
    assert_eq!(added.len(), n);

    eventually("every event published", WITHIN, async || {
        broker.count() >= n
    })
    .await;
    eventually("every row marked", WITHIN, async || {
        first.pending().await.unwrap().count == 0
    })
    .await;
    one.shutdown().await;
    two.shutdown().await;
    let ids = broker.ids();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), n, "no event published twice");
    assert_eq!(unique, added, "no event skipped");
    let groups: Vec<String> = (0..40).map(|t| format!("g{t}")).collect();
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    assert_in_order(&broker, &groups, 10);
    db.drop().await;
}

// === NATS JetStream ===

#[derive(Clone, PartialEq, prost::Message)]
struct Relayed {
    #[prost(string, tag = "1")]
    aggregate: String,
    #[prost(uint32, tag = "2")]
    seq: u32,
}

impl Event for Relayed {
    const TYPE: &'static str = "test.Relayed";
    const SUBJECT: &'static str = "sinew.test.outbox.relayed";
    const SCHEMA_VERSION: u32 = 1;
    fn aggregate_id(&self) -> String {
        self.aggregate.clone()
    }
}

/// The shared JetStream server, with a fresh stream for [`Relayed`], or
/// `None` (and a loud SKIP) unless `SINEW_REQUIRE_SERVICES=1`.
async fn jetstream(test: &str) -> Option<(JetStream, String)> {
    let url = std::env::var("SINEW_NATS_URL")
        .or_else(|_| std::env::var("NATS_URL"))
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let stream = "SINEW_TEST_OUTBOX_RELAYED".to_owned();
    let plain = match JetStream::connect(JetStreamConfig::new(url.clone())).await {
        Ok(broker) => broker,
        Err(error) => {
            if std::env::var("SINEW_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("NATS unreachable and SINEW_REQUIRE_SERVICES=1: {error}");
            }
            #[allow(clippy::print_stderr, reason = "a skipped test says so")]
            {
                eprintln!("SKIP {test}: NATS unreachable ({error})");
            }
            return None;
        }
    };
    let _ = plain.context().delete_stream(&stream).await;
    let config =
        JetStreamConfig::new(url).stream(StreamConfig::new(stream.clone(), [Relayed::SUBJECT]));
    Some((JetStream::connect(config).await.unwrap(), stream))
}

/// Through a real JetStream: every event stored once, in order per
/// aggregate, although a relay "crashed" after publishing some rows and
/// before marking them (the broker drops the copies by event id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_stores_each_event_once_after_a_crash_before_marking() {
    let Some((broker, stream)) =
        jetstream("jetstream_stores_each_event_once_after_a_crash_before_marking").await
    else {
        return;
    };
    let db = SqliteDb::new();
    let outbox = db.outbox().await;
    let mut tx = outbox.pool().begin().await.unwrap();
    let mut added = Vec::new();
    for seq in 0..10 {
        for aggregate in ["j", "k", "l"] {
            let event = Relayed {
                aggregate: aggregate.into(),
                seq,
            };
            added.push(outbox.add(&mut tx, &event).await.unwrap());
        }
    }
    outbox.commit(tx).await.unwrap();

    // The crashed relay's work: published, never marked.
    for envelope in &added[..5] {
        let published = broker.publish(envelope).await.unwrap();
        assert!(!published.duplicate);
    }

    let relay = Relay::new(outbox.clone(), broker.clone(), fast())
        .unwrap()
        .spawn();
    eventually("every row marked", WITHIN, async || {
        outbox.pending().await.unwrap().count == 0
    })
    .await;
    relay.shutdown().await;

    // The relay's copies of the first five were reported duplicates.
    assert!(broker.publish(&added[0]).await.unwrap().duplicate);

    let mut info = broker.context().get_stream(&stream).await.unwrap();
    let messages = info.info().await.unwrap().state.messages;
    assert_eq!(messages, 30, "each event stored once");
    let mut stored = Vec::new();
    for sequence in 1..=messages {
        let message = info.get_raw_message(sequence).await.unwrap();
        stored.push(
            Envelope::from_message(&message.subject, Some(&message.headers), message.payload)
                .unwrap(),
        );
    }
    let ids: HashSet<&str> = stored.iter().map(|e| e.id.as_str()).collect();
    let expected: HashSet<&str> = added.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, expected);
    for aggregate in ["j", "k", "l"] {
        let seqs: Vec<u32> = stored
            .iter()
            .filter(|e| e.aggregate_id == aggregate)
            .map(|e| e.event::<Relayed>().unwrap().seq)
            .collect();
        assert_eq!(seqs, (0..10).collect::<Vec<_>>(), "aggregate {aggregate}");
    }
}

/// The holder crashes in the middle of a stream of commits: the standby
/// takes over and publishes everything, each aggregate still in order.
/// What the crashed holder published but did not mark comes again (the
/// broker's deduplication drops it), never more than a batch of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_crash_mid_stream_loses_nothing() {
    let Some(db) = PgDb::new("postgres_a_crash_mid_stream_loses_nothing").await else {
        return;
    };
    let first = db.outbox().await;
    let second = db.outbox().await;
    let broker = TestBroker::new();
    let config = RelayConfig {
        batch_size: 8,
        lease_ttl: Duration::from_millis(300),
        ..fast()
    };
    let holder = relay(&first, &broker.tagged("first"), config.clone());
    eventually("a leader", WITHIN, async || holder.is_leader()).await;
    let standby = relay(&second, &broker.tagged("second"), config);

    let aggregates: Vec<String> = (0..10).map(|a| format!("m{a}")).collect();
    let aggregates: Vec<&str> = aggregates.iter().map(String::as_str).collect();
    let writer = {
        let outbox = second.clone();
        let aggregates: Vec<String> = aggregates.iter().map(|a| (*a).to_owned()).collect();
        tokio::spawn(async move {
            let mut added = Vec::new();
            for seq in 0..20 {
                let events: Vec<Moved> = aggregates.iter().map(|a| moved(a, seq)).collect();
                added.extend(add_all(&outbox, &events).await.into_iter().map(|e| e.id));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            added
        })
    };
    eventually("the holder at work", WITHIN, async || broker.count() >= 40).await;
    holder.abort();
    let crashed_at = broker.count();
    let added: HashSet<String> = writer.await.unwrap().into_iter().collect();
    assert_eq!(added.len(), 200);

    eventually("every event published", WITHIN, async || {
        let ids: HashSet<String> = broker.ids().into_iter().collect();
        ids == added
    })
    .await;
    eventually("every row marked", WITHIN, async || {
        second.pending().await.unwrap().count == 0
    })
    .await;
    standby.shutdown().await;

    let published = broker.published();
    assert!(crashed_at < 200, "the crash came mid-stream");
    // The aborted task may finish the wave it was polling, no more.
    let late = published[crashed_at..]
        .iter()
        .filter(|(tag, _)| *tag == "first")
        .count();
    assert!(late <= 8, "{late} published by the crashed holder");
    assert!(
        published[crashed_at..]
            .iter()
            .any(|(tag, _)| *tag == "second")
    );
    assert!(
        published.len() - added.len() <= 8,
        "at most a batch again: {}",
        published.len() - added.len()
    );
    // Each aggregate in order, by first publish.
    for aggregate in &aggregates {
        let mut seen = HashSet::new();
        let firsts: Vec<u32> = published
            .iter()
            .filter(|(_, e)| e.aggregate_id == *aggregate && seen.insert(e.id.clone()))
            .map(|(_, e)| e.event::<Moved>().unwrap().seq)
            .collect();
        assert_eq!(firsts, (0..20).collect::<Vec<_>>(), "aggregate {aggregate}");
    }
    db.drop().await;
}

/// A relay's NOTIFY listener (a connection of its own) ends with the
/// relay, even when the relay is aborted rather than shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_aborted_relay_leaves_no_listener() {
    let Some(db) = PgDb::new("postgres_an_aborted_relay_leaves_no_listener").await else {
        return;
    };
    let outbox = db.outbox().await;
    let listeners = async || -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = $1 AND query LIKE 'LISTEN%'",
        )
        .bind(&db.schema)
        .fetch_one(&db.admin)
        .await
        .unwrap()
    };
    let relay = relay(&outbox, &TestBroker::new(), fast());
    eventually("the listener", WITHIN, async || listeners().await == 1).await;
    relay.abort();
    eventually("no listener", WITHIN, async || listeners().await == 0).await;
    db.drop().await;
}
