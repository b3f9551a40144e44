//! The inbox on SQLite and PostgreSQL: an event applied once in effect,
//! however often it comes; a failed handler leaves no record, so the next
//! delivery applies it; two deliveries at once apply it once.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use sinew_events::{
    Broker, Consumer, ConsumerConfig, Envelope, Event, HandlerError, Inbox, InboxConfig,
    InboxDatabase, MemoryBroker, Received, TxHandler,
};
use sqlx::{Postgres, Sqlite, Transaction};

test_event!(Placed, "shop.orders.placed");

/// Writes one row per application into `effects` (no unique key: a
/// second application would show), and fails on demand.
struct Apply {
    fail_first: Arc<AtomicU32>,
    calls: Arc<AtomicU32>,
}

macro_rules! apply_for {
    ($db:ty, $insert:expr) => {
        impl TxHandler<Placed, $db> for Apply {
            async fn handle(
                &self,
                tx: &mut Transaction<'static, $db>,
                event: &Received<Placed>,
            ) -> Result<(), HandlerError> {
                self.calls.fetch_add(1, Ordering::SeqCst);
                sqlx::query($insert)
                    .bind(&event.id)
                    .bind(i64::try_from(event.event.n).unwrap())
                    .execute(&mut **tx)
                    .await?;
                if self
                    .fail_first
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    // After its write: the rollback must undo it.
                    return Err(HandlerError::retry("failing on purpose"));
                }
                Ok(())
            }
        }
    };
}
apply_for!(Sqlite, "INSERT INTO effects (event_id, n) VALUES (?1, ?2)");
apply_for!(
    Postgres,
    "INSERT INTO effects (event_id, n) VALUES ($1, $2)"
);

async fn effects<DB>(pool: &sqlx::Pool<DB>) -> Vec<(String, i64)>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'r> (String, i64): sqlx::FromRow<'r, DB::Row>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    sqlx::query_as("SELECT event_id, n FROM effects ORDER BY n, event_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Runs the scenario on one database.
async fn applies_each_event_once<DB>(pool: sqlx::Pool<DB>)
where
    DB: InboxDatabase,
    Apply: TxHandler<Placed, DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'r> (String, i64): sqlx::FromRow<'r, DB::Row>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    sqlx::query("CREATE TABLE effects (event_id TEXT NOT NULL, n BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    // No deduplication by the broker: every copy is delivered, as after a
    // republish outside the deduplication window.
    let broker = MemoryBroker::with_limits(1000, Duration::ZERO);
    let inbox = Inbox::new(pool.clone(), InboxConfig::default())
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let handler = Apply {
        fail_first: Arc::new(AtomicU32::new(1)),
        calls: calls.clone(),
    };
    let config = ConsumerConfig::new("shipping")
        .backoff([Duration::from_millis(20)])
        .max_ack_pending(8);
    let consumer = Consumer::start::<Placed, _, _>(&broker, config, inbox.handler(handler))
        .await
        .unwrap();

    let first = Envelope::new(&Placed {
        order_id: "o-1".into(),
        n: 1,
    });
    let second = Envelope::new(&Placed {
        order_id: "o-2".into(),
        n: 2,
    });
    // Each published three times, the copies of `first` at once.
    for envelope in [&first, &first, &first, &second, &second, &second] {
        broker.publish(envelope).await.unwrap();
    }
    let applied = || async { effects(&pool).await };
    let mut done = false;
    for _ in 0..500 {
        if applied().await.len() >= 2 && calls.load(Ordering::SeqCst) >= 3 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(done, "both events applied");
    // Every copy handled and acknowledged.
    let mut settled = false;
    for _ in 0..500 {
        if broker.unacknowledged(Placed::SUBJECT, "shipping") == 0 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(settled, "every copy acknowledged");
    assert_eq!(
        applied().await,
        [(first.id.clone(), 1), (second.id.clone(), 2)],
        "each event applied once; the failed attempt's write rolled back"
    );
    assert!(broker.messages("sinew.dead.shipping").is_empty());
    consumer.shutdown().await;

    // The ids are kept for the retention, then purged.
    assert_eq!(inbox.purge().await.unwrap(), 0);
    let short = Inbox::new(
        pool.clone(),
        InboxConfig {
            retention: Duration::from_millis(1),
            ..InboxConfig::default()
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(short.purge().await.unwrap(), 2);
}

#[tokio::test]
async fn sqlite_applies_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    applies_each_event_once(support::sqlite_pool(&dir).await).await;
}

#[tokio::test]
async fn postgres_applies_each_event_once() {
    let Some(url) = support::database_url() else {
        return;
    };
    applies_each_event_once(support::pg_pool(&url, "sinew_test_inbox").await).await;
}

#[tokio::test]
async fn a_retention_shorter_than_redeliveries_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pool = support::sqlite_pool(&dir).await;
    let inbox = Inbox::new(
        pool,
        InboxConfig {
            retention: Duration::from_secs(60),
            ..InboxConfig::default()
        },
    )
    .await
    .unwrap();
    let handler = Apply {
        fail_first: Arc::default(),
        calls: Arc::default(),
    };
    // 5 deliveries of up to 30s each, and 30s backoffs: 60s is too short.
    let refused = Consumer::start::<Placed, _, _>(
        &MemoryBroker::new(),
        ConsumerConfig::new("shipping"),
        inbox.handler(handler),
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(sinew_events::Error::Config {
                key: "inbox.retention",
                ..
            })
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_zero_retention_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let pool = support::sqlite_pool(&dir).await;
    let refused = Inbox::new(
        pool,
        InboxConfig {
            retention: Duration::ZERO,
            ..InboxConfig::default()
        },
    )
    .await;
    assert!(matches!(
        refused,
        Err(sinew_events::Error::Config {
            key: "inbox.retention",
            ..
        })
    ));
}
