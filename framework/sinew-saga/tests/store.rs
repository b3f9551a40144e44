//! The store's answers to database trouble, on SQLite and PostgreSQL:
//! a conflict the caller may retry is `ABORTED`, anything else `INTERNAL`
//! with no detail; a bad setting is refused.

#![allow(clippy::print_stderr, reason = "a skipped test says so")]

use std::time::Duration;

use sinew_saga::{
    CalledMethod, Error, IdempotencyConfig, IdempotencyKey, IdempotencyStore, database_status,
};
use tonic::{Code, Request};

/// A request as `IdempotencyLayer` leaves it: key and method in its
/// extensions.
fn keyed(key: &str) -> Request<()> {
    let mut request = Request::new(());
    let key = IdempotencyKey::parse(key).unwrap();
    key.apply(&mut request);
    request.extensions_mut().insert(key);
    request
        .extensions_mut()
        .insert(CalledMethod::new("/pay.v1.Payments/Charge"));
    request
}

/// A reply: the protobuf `google.protobuf.StringValue` shape.
#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(string, tag = "1")]
    value: String,
}

#[tokio::test]
async fn a_busy_sqlite_database_answers_aborted() {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("db.sqlite"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::ZERO);
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let keys = IdempotencyStore::new(pool.clone(), IdempotencyConfig::default())
        .await
        .unwrap();
    // Another transaction holds the write lock.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("CREATE TABLE t (x INTEGER)")
        .execute(&mut *holder)
        .await
        .unwrap();
    let refused = keys
        .once(
            &keyed("k-1"),
            |tx| async move { Ok((tx, Reply::default())) },
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    holder.rollback().await.unwrap();
    // The retry goes through.
    let reply = keys
        .once(&keyed("k-1"), |tx| async move {
            Ok((
                tx,
                Reply {
                    value: "done".into(),
                },
            ))
        })
        .await
        .unwrap();
    assert_eq!(reply.value, "done");
}

#[tokio::test]
async fn a_handlers_database_error_answers_internal_without_detail() {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let keys = IdempotencyStore::new(pool, IdempotencyConfig::default())
        .await
        .unwrap();
    let failed = keys
        .once(&keyed("k-1"), |mut tx| async move {
            sqlx::query("INSERT INTO no_such_table VALUES (1)")
                .execute(&mut *tx)
                .await?;
            Ok((tx, Reply::default()))
        })
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::Internal);
    assert_eq!(failed.message(), "internal error");
    // Nothing recorded: the key applies afresh.
    let reply = keys
        .once(&keyed("k-1"), |tx| async move {
            Ok((
                tx,
                Reply {
                    value: "applied".into(),
                },
            ))
        })
        .await
        .unwrap();
    assert_eq!(reply.value, "applied");
    let status = database_status(&sqlx::Error::PoolTimedOut);
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn a_zero_retention_is_refused() {
    let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    let refused = IdempotencyStore::new(
        pool,
        IdempotencyConfig {
            retention: Duration::ZERO,
            ..IdempotencyConfig::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Config {
                key: "retention",
                ..
            }
        ),
        "{refused}"
    );
}

/// Under `REPEATABLE READ`, a duplicate that waited for the key's holder
/// to commit cannot see its row in its snapshot: PostgreSQL reports a
/// serialization failure, answered `ABORTED`; the retry replays.
#[tokio::test]
async fn a_serialization_failure_on_postgres_answers_aborted() {
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
                std::env::var("SINEW_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "SINEW_REQUIRE_SERVICES=1 but PostgreSQL is not reachable at DATABASE_URL: {error}"
            );
            eprintln!(
                "SKIP: PostgreSQL is not reachable (set DATABASE_URL); this test does nothing"
            );
            return;
        }
    };
    let schema = format!("saga_store_serial_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.options([
            ("search_path", schema.as_str()),
            ("default_transaction_isolation", "repeatable read"),
        ]))
        .await
        .unwrap();
    let keys = IdempotencyStore::new(pool, IdempotencyConfig::default())
        .await
        .unwrap();

    let (entered_tx, entered) = tokio::sync::oneshot::channel::<()>();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn({
        let keys = keys.clone();
        async move {
            keys.once(&keyed("k-1"), |tx| async move {
                let _ = entered_tx.send(());
                let _ = released.await;
                Ok((
                    tx,
                    Reply {
                        value: "first".into(),
                    },
                ))
            })
            .await
        }
    });
    entered.await.unwrap();
    let second = tokio::spawn({
        let keys = keys.clone();
        async move {
            keys.once(&keyed("k-1"), |tx| async move {
                Ok((
                    tx,
                    Reply {
                        value: "second".into(),
                    },
                ))
            })
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!second.is_finished(), "the duplicate waits for the key");
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap().value, "first");
    let refused = second.await.unwrap().unwrap_err();
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    let replayed = keys
        .once(&keyed("k-1"), |tx| async move {
            Ok((
                tx,
                Reply {
                    value: "third".into(),
                },
            ))
        })
        .await
        .unwrap();
    assert_eq!(replayed.value, "first");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}
