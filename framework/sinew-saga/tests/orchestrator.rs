//! The orchestrator on both log backends: the happy path, a failure at
//! each step (exactly the completed steps undone, last first), a
//! compensation that fails then succeeds, a parked saga resumed, a crash
//! mid-step recovered with no second effect, and a saga of an unregistered
//! version parked with its reason.

#![allow(clippy::print_stderr, reason = "a skipped test says so")]

use std::{
    collections::HashMap,
    net::TcpStream,
    sync::{Arc, Mutex},
    time::Duration,
};

use sinew_saga::{
    Orchestrator, Phase, SagaDefinition, SagaLog, SagaStatus, Step, StepContext, StepError,
    log::LogDatabase,
};

/// The saga's state.
#[derive(Clone, PartialEq, prost::Message)]
struct Order {
    #[prost(string, tag = "1")]
    order_id: String,
    #[prost(string, tag = "2")]
    reservation: String,
    #[prost(string, tag = "3")]
    charge: String,
    #[prost(bool, tag = "4")]
    confirmed: bool,
}

/// Three participants' books in one.
#[derive(Default)]
struct Books {
    /// Applied calls by idempotency key: (step, phase).
    applied: HashMap<String, (&'static str, Phase)>,
    /// Every call made, in order: (step, phase, key).
    calls: Vec<(&'static str, Phase, String)>,
    /// The step whose action fails for good.
    fail: Option<&'static str>,
    /// Compensation failures still to give, by step.
    compensation_failures: HashMap<&'static str, u32>,
    /// A step whose action hangs once applied (the orchestrator dies there).
    hang: Option<&'static str>,
}

type Shared = Arc<Mutex<Books>>;

/// Applies a call once per key; whether this call was the first.
fn apply(books: &Shared, cx: &StepContext) -> Result<bool, StepError> {
    let mut books = books.lock().unwrap();
    books
        .calls
        .push((cx.step, cx.phase, cx.key.as_str().to_owned()));
    if cx.phase == Phase::Compensation
        && let Some(left) = books.compensation_failures.get_mut(cx.step)
        && *left > 0
    {
        *left -= 1;
        return Err(StepError::Retryable("participant unavailable".into()));
    }
    if cx.phase == Phase::Action && books.fail == Some(cx.step) {
        return Err(StepError::Final("card declined".into()));
    }
    let first = !books.applied.contains_key(cx.key.as_str());
    books
        .applied
        .insert(cx.key.as_str().to_owned(), (cx.step, cx.phase));
    Ok(first)
}

/// A step whose action and compensation apply to `books`, the action
/// setting what `set` sets.
fn book_step(books: &Shared, name: &'static str, set: fn(&mut Order)) -> Step<Order> {
    let act = books.clone();
    let undo = books.clone();
    Step::new(name, move |cx: StepContext, mut order: Order| {
        let books = act.clone();
        async move {
            apply(&books, &cx)?;
            let hang = books.lock().unwrap().hang == Some(cx.step);
            if hang {
                std::future::pending::<()>().await;
            }
            set(&mut order);
            Ok(order)
        }
    })
    .compensate(move |cx: StepContext, _order: Order| {
        let books = undo.clone();
        async move { apply(&books, &cx).map(|_| ()) }
    })
    .timeout(Duration::from_secs(30))
}

fn definition(books: &Shared, version: u32) -> SagaDefinition<Order> {
    SagaDefinition::new("order", version)
        .step(book_step(books, "reserve", |o| {
            o.reservation = format!("r-{}", o.order_id);
        }))
        .step(book_step(books, "charge", |o| {
            o.charge = format!("c-{}", o.order_id);
        }))
        .step(book_step(books, "confirm", |o| o.confirmed = true))
        .compensation_attempts(3)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
}

fn order(id: &str) -> Order {
    Order {
        order_id: id.into(),
        ..Order::default()
    }
}

fn calls(books: &Shared) -> Vec<(&'static str, Phase)> {
    books
        .lock()
        .unwrap()
        .calls
        .iter()
        .map(|c| (c.0, c.1))
        .collect()
}

fn orchestrator<DB: LogDatabase>(
    log: &SagaLog<DB>,
    books: &Shared,
    version: u32,
) -> Orchestrator<DB> {
    Orchestrator::builder(log.clone())
        .register(definition(books, version))
        .build()
}

/// Waits until `books` has seen `n` calls.
async fn called(books: &Shared, n: usize) {
    for _ in 0..2000 {
        if books.lock().unwrap().calls.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never called {n} times");
}

async fn outcomes<DB: LogDatabase>(log: SagaLog<DB>) {
    use Phase::{Action as A, Compensation as C};
    // The happy path: two writes per step.
    let books = Shared::default();
    let saga = orchestrator(&log, &books, 1);
    let before = log.writes();
    let status = saga.run("order", "o-1", &order("o-1")).await.unwrap();
    assert_eq!(status, SagaStatus::Completed);
    assert_eq!(log.writes() - before, 6, "2 writes per step");
    let record = log.get("o-1").await.unwrap().unwrap();
    let state: Order = prost::Message::decode(record.state.as_slice()).unwrap();
    assert_eq!(state.charge, "c-o-1");
    assert!(state.confirmed);
    assert_eq!(
        calls(&books),
        [("reserve", A), ("charge", A), ("confirm", A)]
    );
    assert_eq!(log.history("o-1").await.unwrap().len(), 3);

    // A final failure at each step undoes exactly the completed ones,
    // last first.
    let expected: [&[(&str, Phase)]; 3] = [
        &[("reserve", A)],
        &[("reserve", A), ("charge", A), ("reserve", C)],
        &[
            ("reserve", A),
            ("charge", A),
            ("confirm", A),
            ("charge", C),
            ("reserve", C),
        ],
    ];
    for (failing, expected) in ["reserve", "charge", "confirm"].into_iter().zip(expected) {
        let books = Shared::default();
        books.lock().unwrap().fail = Some(failing);
        let saga = orchestrator(&log, &books, 1);
        let id = format!("fail-{failing}");
        let status = saga.run("order", id.as_str(), &order(&id)).await.unwrap();
        assert_eq!(status, SagaStatus::Compensated);
        assert_eq!(calls(&books), expected, "failing at {failing}");
        let record = log.get(&id).await.unwrap().unwrap();
        assert!(record.error.unwrap().contains("card declined"));
    }

    // A compensation that fails twice, then succeeds, with one key.
    let books = Shared::default();
    {
        let mut b = books.lock().unwrap();
        b.fail = Some("confirm");
        b.compensation_failures.insert("charge", 2);
    }
    let saga = orchestrator(&log, &books, 1);
    let status = saga.run("order", "o-3", &order("o-3")).await.unwrap();
    assert_eq!(status, SagaStatus::Compensated);
    let keys: Vec<String> = books
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|c| c.0 == "charge" && c.1 == C)
        .map(|c| c.2.clone())
        .collect();
    assert_eq!(keys.len(), 3, "two failures, then success");
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "one key for every attempt"
    );

    // A compensation that keeps failing parks the saga; resuming it
    // finishes the compensation.
    let books = Shared::default();
    {
        let mut b = books.lock().unwrap();
        b.fail = Some("confirm");
        b.compensation_failures.insert("charge", 5);
    }
    let saga = orchestrator(&log, &books, 1);
    let status = saga.run("order", "o-4", &order("o-4")).await.unwrap();
    assert_eq!(status, SagaStatus::NeedsAttention);
    let parked = log.get("o-4").await.unwrap().unwrap();
    assert_eq!(parked.parked_from, Some(SagaStatus::Compensating));
    assert!(parked.error.unwrap().contains("participant unavailable"));
    let listed = log.list(SagaStatus::NeedsAttention, 100).await.unwrap();
    assert!(listed.iter().any(|r| r.id == "o-4"));
    let undone = |books: &Shared| {
        books
            .lock()
            .unwrap()
            .applied
            .values()
            .filter(|a| a.1 == C)
            .count()
    };
    assert_eq!(undone(&books), 0, "nothing undone while parked");
    books.lock().unwrap().compensation_failures.clear();
    assert_eq!(saga.resume("o-4").await.unwrap(), SagaStatus::Compensated);
    assert_eq!(undone(&books), 2, "charge and reserve undone");
    assert!(saga.resume("o-4").await.is_err(), "not parked any more");
}

/// The log as another orchestrator (another process) sees it.
async fn another<DB: LogDatabase>(log: &SagaLog<DB>) -> SagaLog<DB> {
    SagaLog::new(log.pool().clone()).await.unwrap()
}

/// Recovers until `id` is among what was recovered: its dead owner's
/// lease has to run out first.
async fn recover_until<DB: LogDatabase>(
    saga: &Orchestrator<DB>,
    id: &str,
) -> Vec<(String, SagaStatus)> {
    for _ in 0..400 {
        let recovered = saga.recover().await.unwrap();
        if recovered.iter().any(|r| r.0 == id) {
            return recovered;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} never recovered");
}

async fn crash_and_versions<DB: LogDatabase>(log: SagaLog<DB>) {
    let log = log.lease_ttl(Duration::from_millis(200));
    // The orchestrator dies while `charge` is in flight, after the
    // participant applied it.
    let books = Shared::default();
    books.lock().unwrap().hang = Some("charge");
    let saga = orchestrator(&log, &books, 1);
    let running = tokio::spawn(async move { saga.run("order", "o-5", &order("o-5")).await });
    called(&books, 2).await;
    running.abort();
    let _ = running.await;
    let record = log.get("o-5").await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.step, record.in_flight),
        (SagaStatus::Running, 1, true)
    );

    // A new orchestrator recovers it: the call is made again with its
    // key, and the participant applies it once.
    books.lock().unwrap().hang = None;
    let restarted = orchestrator(&another(&log).await, &books, 1);
    assert!(
        restarted.recover().await.unwrap().is_empty(),
        "its lease still runs: not taken"
    );
    let recovered = recover_until(&restarted, "o-5").await;
    assert!(
        recovered.contains(&("o-5".to_owned(), SagaStatus::Completed)),
        "{recovered:?}"
    );
    {
        let books = books.lock().unwrap();
        let keys: Vec<&String> = books
            .calls
            .iter()
            .filter(|c| c.0 == "charge")
            .map(|c| &c.2)
            .collect();
        assert_eq!(keys.len(), 2, "made again after the crash");
        assert_eq!(keys[0], keys[1], "with the same key");
        let charged = books.applied.values().filter(|a| a.0 == "charge").count();
        assert_eq!(charged, 1, "applied once");
    }

    // A saga whose version is no longer registered is parked with the
    // reason.
    let books = Shared::default();
    books.lock().unwrap().hang = Some("reserve");
    let old = orchestrator(&log, &books, 1);
    let running = tokio::spawn(async move { old.run("order", "o-6", &order("o-6")).await });
    called(&books, 1).await;
    running.abort();
    let _ = running.await;
    let recovered = recover_until(&orchestrator(&another(&log).await, &books, 2), "o-6").await;
    assert!(
        recovered.contains(&("o-6".to_owned(), SagaStatus::NeedsAttention)),
        "{recovered:?}"
    );
    let parked = log.get("o-6").await.unwrap().unwrap();
    let reason = parked.error.unwrap();
    assert!(
        reason.contains("`order` version 1 is not registered (registered versions: [2])"),
        "{reason}"
    );
    assert_eq!(parked.parked_from, Some(SagaStatus::Running));
}

async fn sqlite() -> (tempfile::TempDir, SagaLog<sqlx::Sqlite>) {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("saga.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    (dir, SagaLog::new(pool).await.unwrap())
}

async fn postgres(schema: &str) -> Option<SagaLog<sqlx::Postgres>> {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let options: PgConnectOptions = url.parse().unwrap();
    let up = format!("{}:{}", options.get_host(), options.get_port())
        .parse()
        .ok()
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
        .is_some();
    if !up {
        assert!(
            std::env::var("SINEW_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "SINEW_REQUIRE_SERVICES=1 but PostgreSQL is not reachable at DATABASE_URL"
        );
        eprintln!("SKIP: PostgreSQL is not reachable (set DATABASE_URL)");
        return None;
    }
    let admin = sqlx::PgPool::connect_with(options.clone()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.options([("search_path", schema)]))
        .await
        .unwrap();
    Some(SagaLog::new(pool).await.unwrap())
}

#[tokio::test]
async fn sqlite_outcomes() {
    let (_dir, log) = sqlite().await;
    outcomes(log).await;
}

#[tokio::test]
async fn sqlite_crash_and_versions() {
    let (_dir, log) = sqlite().await;
    crash_and_versions(log).await;
}

#[tokio::test]
async fn postgres_outcomes() {
    if let Some(log) = postgres("sinew_test_saga_outcomes").await {
        outcomes(log).await;
    }
}

#[tokio::test]
async fn postgres_crash_and_versions() {
    if let Some(log) = postgres("sinew_test_saga_crash").await {
        crash_and_versions(log).await;
    }
}

/// Two replicas on one PostgreSQL log take a dead orchestrator's sagas
/// without running any of them twice, and an orchestrator that stalls
/// past its lease loses its saga to another instead of racing it.
async fn replicas(log: SagaLog<sqlx::Postgres>) {
    let dead = log.lease_ttl(Duration::from_millis(300));
    let books = Shared::default();
    books.lock().unwrap().hang = Some("charge");
    let saga = orchestrator(&dead, &books, 1);
    let mut running = Vec::new();
    for n in 0..30 {
        let saga = saga.clone();
        let id = format!("r-{n}");
        running.push(tokio::spawn(async move {
            saga.run("order", id.as_str(), &order(&id)).await
        }));
    }
    // Each saga reserved, then charged: 60 calls, then the process dies.
    called(&books, 60).await;
    for task in running {
        task.abort();
        let _ = task.await;
    }
    books.lock().unwrap().hang = None;
    tokio::time::sleep(Duration::from_millis(350)).await;

    let b = orchestrator(&another(&dead).await, &books, 1);
    let c = orchestrator(&another(&dead).await, &books, 1);
    let (by_b, by_c) = tokio::join!(b.recover(), c.recover());
    let (by_b, by_c) = (by_b.unwrap(), by_c.unwrap());
    let mut all: Vec<&String> = by_b.iter().chain(&by_c).map(|r| &r.0).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 30, "every saga recovered");
    assert_eq!(
        by_b.len() + by_c.len(),
        30,
        "none by both: {by_b:?} {by_c:?}"
    );
    assert!(
        by_b.iter()
            .chain(&by_c)
            .all(|r| r.1 == SagaStatus::Completed)
    );
    let books = books.lock().unwrap();
    for n in 0..30 {
        let id = format!("r-{n}");
        let charges = books
            .calls
            .iter()
            .filter(|c| c.0 == "charge" && c.2.starts_with(&format!("{id}/")))
            .count();
        assert_eq!(charges, 2, "{id}: the dead one's call, and one more");
        let confirms = books
            .calls
            .iter()
            .filter(|c| c.0 == "confirm" && c.2.starts_with(&format!("{id}/")))
            .count();
        assert_eq!(confirms, 1, "{id}: driven by one replica");
    }
}

#[tokio::test]
async fn postgres_replicas() {
    if let Some(log) = postgres("sinew_test_saga_replicas").await {
        replicas(log).await;
    }
}

/// A process that stalls (its thread blocked, so not even the lease's
/// heartbeat runs) past its lease loses the saga to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_orchestrator_loses_its_saga() {
    let (_dir, log) = sqlite().await;
    let slow = log.clone().lease_ttl(Duration::from_millis(100));
    let first = Arc::new(Mutex::new(true));
    let calls = Arc::new(Mutex::new(0));
    let definition = |first: Arc<Mutex<bool>>, calls: Arc<Mutex<u32>>| {
        SagaDefinition::new("slow", 1).step(Step::new("work", move |_: StepContext, o: Order| {
            let first = first.clone();
            let calls = calls.clone();
            async move {
                *calls.lock().unwrap() += 1;
                let stall = std::mem::replace(&mut *first.lock().unwrap(), false);
                if stall {
                    // The thread blocked past its lease: another
                    // orchestrator takes over.
                    #[allow(
                        clippy::disallowed_methods,
                        reason = "a stalled process, which not even the lease's heartbeat outlives"
                    )]
                    std::thread::sleep(Duration::from_millis(400));
                }
                Ok(o)
            }
        }))
    };
    let stalled = Orchestrator::builder(slow.clone())
        .register(definition(first.clone(), calls.clone()))
        .build();
    let running = tokio::spawn(async move { stalled.run("slow", "s-1", &order("s-1")).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let other = Orchestrator::builder(another(&slow).await)
        .register(definition(first, calls.clone()))
        .build();
    let recovered = recover_until(&other, "s-1").await;
    assert!(recovered.contains(&("s-1".to_owned(), SagaStatus::Completed)));
    let lost = running.await.unwrap();
    assert!(
        matches!(lost, Err(sinew_saga::SagaError::Lost(ref id)) if id == "s-1"),
        "{lost:?}"
    );
    assert_eq!(*calls.lock().unwrap(), 2);
    assert_eq!(
        log.get("s-1").await.unwrap().unwrap().status,
        SagaStatus::Completed
    );
}

/// A call slower than the lease keeps its saga: the lease is renewed
/// while the call is under way, so neither another orchestrator nor this
/// one's own recovery takes the saga and calls the step a second time.
#[tokio::test]
async fn a_slow_call_keeps_its_saga() {
    // The lease is kept in the database in wall-clock time, so this runs in
    // real time: a call of three leases, renewed every third of one.
    let (_dir, log) = sqlite().await;
    let log = log.lease_ttl(Duration::from_millis(300));
    let calls = Arc::new(Mutex::new(0));
    let slow = {
        let calls = calls.clone();
        SagaDefinition::new("slow", 1).step(Step::new("work", move |_: StepContext, o: Order| {
            let calls = calls.clone();
            async move {
                *calls.lock().unwrap() += 1;
                tokio::time::sleep(Duration::from_millis(900)).await;
                Ok(o)
            }
        }))
    };
    let saga = Orchestrator::builder(log.clone()).register(slow).build();
    let running = {
        let saga = saga.clone();
        tokio::spawn(async move { saga.run("slow", "k-1", &order("k-1")).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(saga.recover().await.unwrap().is_empty(), "its own recovery");
    let other = Orchestrator::builder(another(&log).await).build();
    assert!(
        other.recover().await.unwrap().is_empty(),
        "another orchestrator"
    );
    assert_eq!(running.await.unwrap().unwrap(), SagaStatus::Completed);
    assert_eq!(*calls.lock().unwrap(), 1, "called once");
}

/// An action whose last attempt fails retryably may have taken effect (a
/// lost reply): the saga undoes it too, not only the steps before it.
#[tokio::test]
async fn an_uncertain_action_is_compensated_too() {
    use Phase::{Action as A, Compensation as C};
    let (_dir, log) = sqlite().await;
    let books = Shared::default();
    let undo = books.clone();
    let act = books.clone();
    let charge = Step::new("charge", move |cx: StepContext, _o: Order| {
        let books = act.clone();
        async move {
            apply(&books, &cx)?;
            Err::<Order, _>(StepError::Retryable("reply lost".into()))
        }
    })
    .compensate(move |cx: StepContext, _o: Order| {
        let books = undo.clone();
        async move { apply(&books, &cx).map(|_| ()) }
    })
    .attempts(2);
    let definition = SagaDefinition::new("uncertain", 1)
        .step(book_step(&books, "reserve", |o| {
            o.reservation = format!("r-{}", o.order_id);
        }))
        .step(charge)
        .backoff(Duration::from_millis(1), Duration::from_millis(2));
    let saga = Orchestrator::builder(log).register(definition).build();
    let status = saga.run("uncertain", "u-1", &order("u-1")).await.unwrap();
    assert_eq!(status, SagaStatus::Compensated);
    assert_eq!(
        calls(&books),
        [
            ("reserve", A),
            ("charge", A),
            ("charge", A),
            ("charge", C),
            ("reserve", C)
        ],
        "the uncertain charge is undone, then the reservation"
    );
}

/// A run that stalls past its lease loses the saga to its own
/// orchestrator's recovery too: each claim holds the saga under a holder
/// of its own, so the stalled run's next write is fenced, though the
/// orchestrator is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_run_loses_its_saga_to_its_own_recovery() {
    let (_dir, log) = sqlite().await;
    let log = log.lease_ttl(Duration::from_millis(100));
    let first = Arc::new(Mutex::new(true));
    let calls = Arc::new(Mutex::new(0));
    let work = {
        let (first, calls) = (first.clone(), calls.clone());
        SagaDefinition::new("slow", 1).step(Step::new("work", move |_: StepContext, o: Order| {
            let (first, calls) = (first.clone(), calls.clone());
            async move {
                *calls.lock().unwrap() += 1;
                if std::mem::replace(&mut *first.lock().unwrap(), false) {
                    #[allow(
                        clippy::disallowed_methods,
                        reason = "a stalled process, which not even the lease's heartbeat outlives"
                    )]
                    std::thread::sleep(Duration::from_millis(400));
                }
                Ok(o)
            }
        }))
    };
    let saga = Orchestrator::builder(log.clone()).register(work).build();
    let running = {
        let saga = saga.clone();
        tokio::spawn(async move { saga.run("slow", "t-1", &order("t-1")).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let recovered = recover_until(&saga, "t-1").await;
    assert!(recovered.contains(&("t-1".to_owned(), SagaStatus::Completed)));
    let lost = running.await.unwrap();
    assert!(
        matches!(lost, Err(sinew_saga::SagaError::Lost(ref id)) if id == "t-1"),
        "{lost:?}"
    );
    assert_eq!(*calls.lock().unwrap(), 2);
}

/// Ended sagas older than the retention are purged with their histories,
/// oldest first and a batch at a time; unfinished and parked ones stay.
async fn purge<DB: LogDatabase>(log: SagaLog<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let books = Shared::default();
    let saga = orchestrator(&log, &books, 1);
    for id in ["old-1", "old-2", "old-3", "new"] {
        saga.run("order", id, &order(id)).await.unwrap();
    }
    {
        let mut b = books.lock().unwrap();
        b.fail = Some("confirm");
        b.compensation_failures.insert("charge", 10);
    }
    assert_eq!(
        saga.run("order", "parked", &order("parked")).await.unwrap(),
        SagaStatus::NeedsAttention
    );
    // Age all but `new` by an hour.
    sqlx::query("UPDATE sinew_saga SET updated_at_ms = updated_at_ms - 3600000 WHERE id <> 'new'")
        .execute(log.pool())
        .await
        .unwrap();
    let hour = Duration::from_secs(1800);
    assert_eq!(log.purge(hour, 2).await.unwrap(), 2, "a batch of 2");
    assert_eq!(log.purge(hour, 2).await.unwrap(), 1);
    assert_eq!(log.purge(hour, 2).await.unwrap(), 0);
    for id in ["old-1", "old-2", "old-3"] {
        assert!(log.get(id).await.unwrap().is_none(), "{id} purged");
        assert!(
            log.history(id).await.unwrap().is_empty(),
            "{id}'s history too"
        );
    }
    assert!(log.get("new").await.unwrap().is_some(), "too recent");
    let parked = log.get("parked").await.unwrap().unwrap();
    assert_eq!(parked.status, SagaStatus::NeedsAttention, "never purged");
    assert!(!log.history("parked").await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_purge() {
    let (_dir, log) = sqlite().await;
    purge(log).await;
}

#[tokio::test]
async fn postgres_purge() {
    if let Some(log) = postgres("sinew_test_saga_purge").await {
        purge(log).await;
    }
}
