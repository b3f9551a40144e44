//! What the events crate's tests share: test events, and the services on
//! loopback (skipped loudly without them, unless
//! `SINEW_REQUIRE_SERVICES=1`).

#![allow(dead_code, unreachable_pub, clippy::print_stderr)]

use std::{net::TcpStream, time::Duration};

/// Declares a test event type with its own subject.
#[macro_export]
macro_rules! test_event {
    ($name:ident, $subject:expr) => {
        /// A test event.
        #[allow(missing_docs, unreachable_pub)]
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct $name {
            #[prost(string, tag = "1")]
            pub order_id: String,
            #[prost(uint64, tag = "2")]
            pub n: u64,
        }

        impl sinew_events::Event for $name {
            const TYPE: &'static str = concat!("test.", stringify!($name));
            const SUBJECT: &'static str = $subject;
            const SCHEMA_VERSION: u32 = 1;
            fn aggregate_id(&self) -> String {
                self.order_id.clone()
            }
        }
    };
}

pub fn require_services() -> bool {
    std::env::var("SINEW_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn reachable(url: &str, default_port: u16) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = host.split(['/', '?']).next().unwrap_or(host);
    let addr = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    };
    addr.parse()
        .ok()
        .and_then(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .is_some()
}

fn service(name: &str, var: &str, default: &str, port: u16) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    if reachable(&url, port) {
        return Some(url);
    }
    assert!(
        !require_services(),
        "SINEW_REQUIRE_SERVICES=1 but {name} is not reachable at {var}"
    );
    eprintln!("SKIP: {name} is not reachable (set {var}); this test does nothing");
    None
}

/// The shared NATS JetStream server, if up.
pub fn nats_url() -> Option<String> {
    service("NATS", "NATS_URL", "nats://127.0.0.1:4222", 4222)
}

/// The shared PostgreSQL server, if up.
pub fn database_url() -> Option<String> {
    service(
        "PostgreSQL",
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test",
        5432,
    )
}

/// A pool on a schema of its own (dropped and made afresh), so that
/// tests running at once never see each other's tables.
pub async fn pg_pool(url: &str, schema: &str) -> sqlx::PgPool {
    use sqlx::{Executor as _, postgres::PgConnectOptions, postgres::PgPoolOptions};
    let admin = sqlx::PgPool::connect(url).await.unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        )))
        .await
        .unwrap();
    admin.close().await;
    let options: PgConnectOptions = url.parse().unwrap();
    PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options.options([("search_path", schema)]))
        .await
        .unwrap()
}

/// A SQLite database in a file of its own.
pub async fn sqlite_pool(dir: &tempfile::TempDir) -> sqlx::SqlitePool {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("db.sqlite"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap()
}

/// Waits for `check` to hold, polling, for at most `limit`.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
