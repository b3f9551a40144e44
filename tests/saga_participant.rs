//! A saga participant on the scaffold, on SQLite and PostgreSQL: a real
//! gRPC server over loopback whose echo handlers write one row per
//! effect, behind `IdempotencyLayer`, applying calls through
//! `IdempotencyStore::once`. A call repeated with its key applies once and
//! gets the first reply; another key applies again; a failed call records
//! nothing, so its retry applies; duplicates at once apply once; a
//! malformed key is refused; a key reused for another method is refused.

#![allow(clippy::print_stderr, reason = "a skipped test says so")]

mod common;

use std::{sync::Arc, time::Duration};

use common::Running;
use sinew::{Server, server::ServerConfig};
use sinew_saga::{
    HEADER, IdempotencyConfig, IdempotencyDatabase, IdempotencyKey, IdempotencyLayer,
    IdempotencyStore, Phase,
};
use sinew_workspace::proto::echo::v1::{
    EchoReply, EchoRequest,
    echo_client::EchoClient,
    echo_server::{Echo, EchoServer},
};
use sqlx::{Pool, Postgres, Sqlite};
use tokio::sync::Notify;
use tonic::{Code, Request, Response, Status, Streaming, transport::Channel};

/// The participant: `Post` and `Put` each write one row into `effects`
/// (no unique key: a second application would show) and answer the row's
/// id. `fail_with` fails the call after its write; `delay_ms` waits inside
/// the transaction, holding the key.
struct Participant<DB: IdempotencyDatabase> {
    keys: IdempotencyStore<DB>,
    gate: Arc<Gate>,
}

/// Holds a call whose message is `"hold"` inside its transaction (after
/// its write, so with its key claimed) until the test releases it.
#[derive(Default)]
struct Gate {
    entered: Notify,
    release: Notify,
}

type ReplyStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<EchoReply, Status>> + Send>>;

/// The SQL of each database, for the test's own table.
trait TestDb: IdempotencyDatabase {
    const CREATE: &'static str;
    async fn create(pool: &Pool<Self>);
    async fn count(pool: &Pool<Self>) -> i64;
}

macro_rules! participant_for {
    ($db:ty, $create:expr) => {
        impl TestDb for $db {
            const CREATE: &'static str = $create;
            async fn create(pool: &Pool<Self>) {
                sqlx::query(Self::CREATE).execute(pool).await.unwrap();
            }
            async fn count(pool: &Pool<Self>) -> i64 {
                let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM effects")
                    .fetch_one(pool)
                    .await
                    .unwrap();
                n
            }
        }

        impl Participant<$db> {
            async fn apply(
                &self,
                method: &'static str,
                request: Request<EchoRequest>,
            ) -> Result<Response<EchoReply>, Status> {
                let echo = request.get_ref();
                let reply = self
                    .keys
                    .once(&request, |mut tx| async move {
                        let (id,): (i64,) = sqlx::query_as(
                            "INSERT INTO effects (method, message) VALUES ($1, $2) RETURNING id",
                        )
                        .bind(method)
                        .bind(&echo.message)
                        .fetch_one(&mut *tx)
                        .await?;
                        if echo.message == "hold" {
                            self.gate.entered.notify_one();
                            self.gate.release.notified().await;
                        }
                        if echo.delay_ms > 0 {
                            tokio::time::sleep(Duration::from_millis(u64::from(echo.delay_ms)))
                                .await;
                        }
                        if echo.fail_with != 0 {
                            // After the write: the rollback must undo it.
                            return Err(
                                Status::new(Code::from(echo.fail_with), "asked to fail").into()
                            );
                        }
                        let reply = EchoReply {
                            message: format!("{method} {} #{id}", echo.message),
                            payload: Vec::new(),
                        };
                        Ok((tx, reply))
                    })
                    .await?;
                Ok(Response::new(reply))
            }
        }

        #[tonic::async_trait]
        impl Echo for Participant<$db> {
            async fn get(
                &self,
                request: Request<EchoRequest>,
            ) -> Result<Response<EchoReply>, Status> {
                // Reads only: what the handler sees of the key.
                let key = request
                    .extensions()
                    .get::<IdempotencyKey>()
                    .map_or_else(|| "none".to_owned(), ToString::to_string);
                Ok(Response::new(EchoReply {
                    message: key,
                    payload: Vec::new(),
                }))
            }

            async fn put(
                &self,
                request: Request<EchoRequest>,
            ) -> Result<Response<EchoReply>, Status> {
                self.apply("put", request).await
            }

            async fn post(
                &self,
                request: Request<EchoRequest>,
            ) -> Result<Response<EchoReply>, Status> {
                self.apply("post", request).await
            }

            type ExpandStream = ReplyStream;

            async fn expand(
                &self,
                _: Request<EchoRequest>,
            ) -> Result<Response<Self::ExpandStream>, Status> {
                Err(Status::unimplemented("not a participant's call"))
            }

            async fn collect(
                &self,
                _: Request<Streaming<EchoRequest>>,
            ) -> Result<Response<EchoReply>, Status> {
                Err(Status::unimplemented("not a participant's call"))
            }

            type ChatStream = ReplyStream;

            async fn chat(
                &self,
                _: Request<Streaming<EchoRequest>>,
            ) -> Result<Response<Self::ChatStream>, Status> {
                Err(Status::unimplemented("not a participant's call"))
            }
        }
    };
}

participant_for!(
    Sqlite,
    "CREATE TABLE effects (id INTEGER PRIMARY KEY, method TEXT NOT NULL, message TEXT NOT NULL)"
);
participant_for!(
    Postgres,
    "CREATE TABLE effects (id BIGSERIAL PRIMARY KEY, method TEXT NOT NULL, message TEXT NOT NULL)"
);

fn config() -> ServerConfig {
    ServerConfig::new().lame_duck(Duration::ZERO)
}

fn call(message: &str, key: Option<&IdempotencyKey>) -> Request<EchoRequest> {
    let mut request = Request::new(EchoRequest {
        message: message.into(),
        ..EchoRequest::default()
    });
    if let Some(key) = key {
        key.apply(&mut request);
    }
    request
}

fn step(saga: &str, phase: Phase) -> IdempotencyKey {
    IdempotencyKey::for_step(saga, "charge", phase).unwrap()
}

/// Starts the participant on `pool` behind the layer.
async fn participant<DB>(
    pool: Pool<DB>,
    retention: Duration,
) -> (Running, EchoClient<Channel>, Arc<Gate>)
where
    DB: TestDb,
    Participant<DB>: Echo,
{
    let keys = IdempotencyStore::new(
        pool,
        IdempotencyConfig {
            retention,
            ..IdempotencyConfig::default()
        },
    )
    .await
    .unwrap();
    let gate = Arc::new(Gate::default());
    let server = Running::start(
        Server::new("participant")
            .config(config())
            .add_service_with(
                EchoServer::new(Participant {
                    keys,
                    gate: gate.clone(),
                }),
                IdempotencyLayer::new(),
            ),
    )
    .await;
    let client = EchoClient::new(server.channel().await);
    (server, client, gate)
}

async fn applies_each_keyed_call_once<DB>(pool: Pool<DB>)
where
    DB: TestDb,
    Participant<DB>: Echo,
{
    DB::create(&pool).await;
    let (server, mut client, _) = participant(pool.clone(), Duration::from_secs(3600)).await;
    let effects = || DB::count(&pool);

    // The same call with one key, twice: one effect, the same reply.
    let key = step("saga-1", Phase::Action);
    let first = client.post(call("charge", Some(&key))).await.unwrap();
    let again = client.post(call("charge", Some(&key))).await.unwrap();
    assert_eq!(first.get_ref().message, "post charge #1");
    assert_eq!(again.get_ref(), first.get_ref(), "the recorded reply");
    assert_eq!(effects().await, 1, "one effect");

    // Another key (the compensation's, another saga's): applies again.
    let undo = step("saga-1", Phase::Compensation);
    let other = client.post(call("charge", Some(&undo))).await.unwrap();
    assert_ne!(other.get_ref(), first.get_ref(), "a new effect's reply");
    let other_saga = step("saga-2", Phase::Action);
    client
        .post(call("charge", Some(&other_saga)))
        .await
        .unwrap();
    assert_eq!(effects().await, 3);

    // No key: every call applies.
    client.post(call("unkeyed", None)).await.unwrap();
    client.post(call("unkeyed", None)).await.unwrap();
    assert_eq!(effects().await, 5);

    // A failed call writes nothing and records nothing: its retry applies,
    // once.
    let retried = step("saga-3", Phase::Action);
    let mut failing = call("flaky", Some(&retried));
    failing.get_mut().fail_with = Code::Unavailable as i32;
    let failed = client.post(failing).await.unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    assert_eq!(effects().await, 5, "the failed call's write rolled back");
    let applied = client.post(call("flaky", Some(&retried))).await.unwrap();
    // (PostgreSQL's sequence does not roll back: the id is not #6 there.)
    assert!(applied.get_ref().message.starts_with("post flaky #"));
    let replayed = client.post(call("flaky", Some(&retried))).await.unwrap();
    assert_eq!(replayed.get_ref(), applied.get_ref());
    assert_eq!(effects().await, 6);

    // The key on another method: refused, no effect.
    let reused = client.put(call("charge", Some(&key))).await.unwrap_err();
    assert_eq!(reused.code(), Code::FailedPrecondition, "{reused:?}");
    assert_eq!(
        reused.message(),
        "the idempotency key was used for another method"
    );
    assert_eq!(effects().await, 6);

    // The handler sees the key in its request's extensions.
    let seen = client.get(call("", Some(&key))).await.unwrap();
    assert_eq!(seen.get_ref().message, key.as_str());
    let seen = client.get(call("", None)).await.unwrap();
    assert_eq!(seen.get_ref().message, "none");

    // Duplicates at once, each holding the key 50ms in its transaction:
    // one applies, the others wait for it and get its reply.
    let key = step("saga-4", Phase::Action);
    let calls = (0..6).map(|_| {
        let mut client = client.clone();
        let mut request = call("racing", Some(&key));
        request.get_mut().delay_ms = 50;
        async move { client.post(request).await.map(Response::into_inner) }
    });
    let replies = futures_util::future::join_all(calls).await;
    let replies: Vec<EchoReply> = replies.into_iter().map(Result::unwrap).collect();
    assert!(replies[0].message.starts_with("post racing #"));
    assert!(replies.iter().all(|r| r == &replies[0]), "{replies:?}");
    assert_eq!(effects().await, 7, "applied once");

    server.stop().await;

    // After the retention, keys are purged; then a repeat applies again.
    let short = IdempotencyStore::new(
        pool.clone(),
        IdempotencyConfig {
            retention: Duration::from_millis(1),
            ..IdempotencyConfig::default()
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(short.purge().await.unwrap(), 5, "five keys recorded");
    assert_eq!(short.purge().await.unwrap(), 0);
}

/// What the layer refuses, before any handler or database.
async fn malformed_keys_are_refused<DB>(pool: Pool<DB>)
where
    DB: TestDb,
    Participant<DB>: Echo,
{
    DB::create(&pool).await;
    let (server, mut client, _) = participant(pool.clone(), Duration::from_secs(3600)).await;
    let mut refused = Vec::new();
    for value in ["has space", &"k".repeat(201), ""] {
        let mut request = call("charge", None);
        request
            .metadata_mut()
            .insert(HEADER, value.parse().unwrap());
        refused.push(client.post(request).await.unwrap_err());
    }
    let mut twice = call("charge", None);
    twice.metadata_mut().append(HEADER, "one".parse().unwrap());
    twice.metadata_mut().append(HEADER, "two".parse().unwrap());
    refused.push(client.post(twice).await.unwrap_err());
    for status in &refused {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    assert!(
        refused[1].message().contains("over the limit of 200"),
        "{}",
        refused[1].message()
    );
    assert_eq!(DB::count(&pool).await, 0, "no handler ran");
    // A key of exactly the limit is fine.
    let longest = IdempotencyKey::parse(&"k".repeat(200)).unwrap();
    client.post(call("charge", Some(&longest))).await.unwrap();
    assert_eq!(DB::count(&pool).await, 1);
    server.stop().await;
}

/// A call that finds its key held by a call in progress waits for it:
/// it applies itself if that call rolls back, and gets its reply if it
/// commits.
async fn a_held_key_makes_its_duplicate_wait<DB>(pool: Pool<DB>)
where
    DB: TestDb,
    Participant<DB>: Echo,
{
    DB::create(&pool).await;
    let (server, client, gate) = participant(pool.clone(), Duration::from_secs(3600)).await;
    for (round, first_fails) in [(1, true), (2, false)] {
        let key = step(&format!("held-{round}"), Phase::Action);
        let before = DB::count(&pool).await;
        let mut held = call("hold", Some(&key));
        if first_fails {
            held.get_mut().fail_with = Code::Unavailable as i32;
        }
        let mut first_client = client.clone();
        let first = tokio::spawn(async move { first_client.post(held).await });
        // The first call has claimed the key and written its row.
        gate.entered.notified().await;
        let mut second_client = client.clone();
        let duplicate = call("hold", Some(&key));
        let second = tokio::spawn(async move { second_client.post(duplicate).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "the duplicate waits for the key");
        gate.release.notify_one();
        let first = first.await.unwrap();
        let mut duplicate_client = client.clone();
        if first_fails {
            // The first rolled back: the duplicate claimed the key and
            // applies (it holds at the gate in turn).
            assert_eq!(first.unwrap_err().code(), Code::Unavailable);
            gate.entered.notified().await;
            gate.release.notify_one();
            let second = second.await.unwrap().unwrap().into_inner();
            assert_eq!(DB::count(&pool).await, before + 1, "the duplicate applied");
            let third = duplicate_client
                .post(call("hold", Some(&key)))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(third, second, "and its reply is the recorded one");
        } else {
            let first = first.unwrap().into_inner();
            let second = second.await.unwrap().unwrap().into_inner();
            assert_eq!(second, first, "the duplicate got the first's reply");
            assert_eq!(DB::count(&pool).await, before + 1, "applied once");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn sqlite_a_held_key_makes_its_duplicate_wait() {
    let dir = tempfile::tempdir().unwrap();
    a_held_key_makes_its_duplicate_wait(sqlite_pool(&dir).await).await;
}

#[tokio::test]
async fn postgres_a_held_key_makes_its_duplicate_wait() {
    let Some(pool) = pg_pool("saga_participant_held").await else {
        return;
    };
    a_held_key_makes_its_duplicate_wait(pool).await;
}

#[tokio::test]
async fn sqlite_participant_applies_each_keyed_call_once() {
    let dir = tempfile::tempdir().unwrap();
    applies_each_keyed_call_once(sqlite_pool(&dir).await).await;
}

#[tokio::test]
async fn postgres_participant_applies_each_keyed_call_once() {
    let Some(pool) = pg_pool("saga_participant_once").await else {
        return;
    };
    applies_each_keyed_call_once(pool).await;
}

#[tokio::test]
async fn sqlite_participant_refuses_malformed_keys() {
    let dir = tempfile::tempdir().unwrap();
    malformed_keys_are_refused(sqlite_pool(&dir).await).await;
}

#[tokio::test]
async fn postgres_participant_refuses_malformed_keys() {
    let Some(pool) = pg_pool("saga_participant_malformed").await else {
        return;
    };
    malformed_keys_are_refused(pool).await;
}

/// A keyed call to a service hosted without the layer is refused, not
/// applied unguarded.
#[tokio::test]
async fn a_keyed_call_without_the_layer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir).await;
    Sqlite::create(&pool).await;
    let keys = IdempotencyStore::new(pool.clone(), IdempotencyConfig::default())
        .await
        .unwrap();
    let gate = Arc::new(Gate::default());
    let server = Running::start(Server::new("participant").config(config()).add_service(
        EchoServer::new(Participant {
            keys,
            gate: gate.clone(),
        }),
    ))
    .await;
    let mut client = EchoClient::new(server.channel().await);
    let key = step("saga-1", Phase::Action);
    let refused = client.post(call("charge", Some(&key))).await.unwrap_err();
    assert_eq!(refused.code(), Code::Internal, "{refused:?}");
    assert_eq!(refused.message(), "internal error", "no detail leaks");
    assert_eq!(Sqlite::count(&pool).await, 0);
    // Unkeyed calls still work.
    client.post(call("charge", None)).await.unwrap();
    assert_eq!(Sqlite::count(&pool).await, 1);
    server.stop().await;
}

/// A SQLite database in a file of its own (WAL, waiting up to 10s for
/// the write lock).
async fn sqlite_pool(dir: &tempfile::TempDir) -> sqlx::SqlitePool {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("db.sqlite"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap()
}

/// A pool on a PostgreSQL schema of its own (dropped and made afresh), or
/// `None` (skipped loudly) without PostgreSQL, unless
/// `SINEW_REQUIRE_SERVICES=1`.
async fn pg_pool(name: &str) -> Option<sqlx::PgPool> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let admin = match sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.clone())
        .await
    {
        Ok(admin) => admin,
        Err(error) => {
            assert!(
                !common::require_services(),
                "SINEW_REQUIRE_SERVICES=1 but PostgreSQL is not reachable at DATABASE_URL: {error}"
            );
            eprintln!(
                "SKIP: PostgreSQL is not reachable (set DATABASE_URL); this test does nothing"
            );
            return None;
        }
    };
    let schema = format!("{name}_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    )))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
    Some(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options.options([("search_path", schema.as_str())]))
            .await
            .unwrap(),
    )
}
