//! What a saga's log costs over the same calls made without one, measured
//! in one run.
//!
//! Three participants are served on the scaffold, each on a loopback port
//! of its own: `shop.inventory.v1.Inventory`, `shop.payments.v1.Payments`
//! and `echo.v1.Echo` (standing for the order service's confirmation).
//! Each applies a call once per idempotency key, in memory, as a
//! participant with a cheap store would.
//!
//! 1. **Plain calls**, the baseline: `Reserve`, `Charge` and `Put`, one
//!    after the other through sinew's generated clients, each with an
//!    idempotency key, `IN_FLIGHT` (64) such sequences at once.
//!    `plain_calls_per_s` counts sequences of the three calls a second, so
//!    that it compares with sagas a second directly.
//! 2. **Sagas on PostgreSQL**: the three calls as a three-step saga
//!    (`Step::rpc` for reserve and charge, which compensate as the contract
//!    says, and a plain step for confirm), run by an `Orchestrator` whose
//!    `SagaLog` is on PostgreSQL (default settings: `synchronous_commit`
//!    on; a pool of 16), 64 sagas at once.
//! 3. **Sagas on SQLite**: the same, with the log in a SQLite file (WAL,
//!    `synchronous = NORMAL`, 4 connections), 64 at once.
//!
//! The three alternate, `SINEW_BENCH_ROUNDS` rounds each (default 3), each
//! round `SINEW_BENCH_SAGAS` sequences or sagas (default 3000;
//! `SINEW_BENCH_SQLITE_CONNECTIONS` sets the SQLite pool's size, default 4,
//! for diagnosis); each result
//! is the median of its rounds. Each round also reports the CPU time this
//! process spent per saga (all threads, user and system, from
//! `/proc/self/stat`, on Linux), and PostgreSQL's (every thread of the
//! processes on this host named `postgres`, or `nats-server`, from
//! `schedstat`: meaningful only where PostgreSQL runs here and nothing else
//! uses it meanwhile). `log_writes_per_saga` is the log's
//! transactions per saga (`SagaLog::writes`), which is exact, not timed.
//!
//! Run with: `cargo bench --bench saga`, with PostgreSQL at `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`). Without it the
//! benchmark says so and exits 0 without a RESULT line, or exits 1 when
//! `SINEW_REQUIRE_SERVICES=1`. Its tables go to a schema of its own
//! (`sinew_bench_saga`, dropped after).
//!
//! The last line is exactly:
//! `RESULT pg_sagas_per_s=<n> sqlite_sagas_per_s=<n> plain_calls_per_s=<n> log_writes_per_saga=<n>`

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on stdout"
)]

mod common;

use common::{process_cpu_time, services_cpu_per_message, services_cpu_time};

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{StreamExt as _, stream};
use sinew::{
    Server,
    client::ClientConfig,
    saga::{
        HEADER, IdempotencyKey, Orchestrator, Phase, SagaDefinition, SagaLog, Step, StepContext,
        log::LogDatabase,
    },
    server::ServerConfig,
};
use sinew_workspace::proto::{
    echo::v1::{
        EchoClient, EchoReply, EchoRequest,
        echo_server::{Echo, EchoServer},
    },
    shop::{
        inventory::v1::{
            InventoryClient, InventoryContract, ReleaseReply, Reservation, ReserveRequest,
            inventory_server::{Inventory, InventoryServer},
        },
        payments::v1::{
            Charge, ChargeRequest, PaymentsClient, PaymentsContract, RefundReply,
            payments_server::{Payments, PaymentsServer},
        },
    },
};
use tonic::{Request, Response, Status, Streaming};

/// Sequences or sagas under way at once.
const IN_FLIGHT: usize = 64;

/// The saga's state.
#[derive(Clone, PartialEq, prost::Message)]
struct Order {
    #[prost(string, tag = "1")]
    order_id: String,
    #[prost(message, optional, tag = "2")]
    reservation: Option<Reservation>,
    #[prost(message, optional, tag = "3")]
    charge: Option<Charge>,
    #[prost(bool, tag = "4")]
    confirmed: bool,
}

/// A participant's memory of the keys it applied, and their replies.
#[derive(Clone, Default)]
struct Participant(Arc<Mutex<HashMap<String, Vec<u8>>>>);

impl Participant {
    fn once<Req, Resp: prost::Message + Default>(
        &self,
        request: &Request<Req>,
        apply: impl FnOnce() -> Resp,
    ) -> Result<Response<Resp>, Status> {
        let key = request
            .metadata()
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::invalid_argument("no idempotency key"))?;
        let mut applied = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reply) = applied.get(key) {
            return Resp::decode(reply.as_slice())
                .map(Response::new)
                .map_err(|_| Status::internal("bad reply"));
        }
        let reply = apply();
        applied.insert(key.to_owned(), prost::Message::encode_to_vec(&reply));
        Ok(Response::new(reply))
    }
}

#[tonic::async_trait]
impl Inventory for Participant {
    async fn reserve(&self, r: Request<ReserveRequest>) -> Result<Response<Reservation>, Status> {
        self.once(&r, || Reservation {
            reservation_id: format!("re-{}", r.get_ref().order_id),
            order_id: r.get_ref().order_id.clone(),
        })
    }

    async fn release(&self, r: Request<Reservation>) -> Result<Response<ReleaseReply>, Status> {
        self.once(&r, || ReleaseReply {
            reservation_id: r.get_ref().reservation_id.clone(),
        })
    }
}

#[tonic::async_trait]
impl Payments for Participant {
    async fn charge(&self, r: Request<ChargeRequest>) -> Result<Response<Charge>, Status> {
        self.once(&r, || Charge {
            charge_id: format!("ch-{}", r.get_ref().order_id),
            order_id: r.get_ref().order_id.clone(),
            amount_cents: r.get_ref().amount_cents,
        })
    }

    async fn refund(&self, r: Request<Charge>) -> Result<Response<RefundReply>, Status> {
        self.once(&r, || RefundReply {
            charge_id: r.get_ref().charge_id.clone(),
        })
    }
}

type ReplyStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Participant {
    type ExpandStream = ReplyStream;
    type ChatStream = ReplyStream;

    async fn get(&self, _: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Err(Status::unimplemented("only Put"))
    }

    async fn put(&self, r: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.once(&r, || EchoReply {
            message: r.get_ref().message.clone(),
            ..EchoReply::default()
        })
    }

    async fn post(&self, _: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Err(Status::unimplemented("only Put"))
    }

    async fn expand(&self, _: Request<EchoRequest>) -> Result<Response<ReplyStream>, Status> {
        Err(Status::unimplemented("only Put"))
    }

    async fn collect(
        &self,
        _: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        Err(Status::unimplemented("only Put"))
    }

    async fn chat(
        &self,
        _: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        Err(Status::unimplemented("only Put"))
    }
}

/// The three participants' clients.
#[derive(Clone)]
struct Clients {
    inventory: InventoryClient,
    payments: PaymentsClient,
    echo: EchoClient,
}

/// Serves `server` on a loopback port; its address.
async fn serve(server: Server) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.serve_with_listener(listener, std::future::pending::<()>()));
    format!("http://{addr}")
}

async fn participants() -> Clients {
    let config = || ServerConfig::new().lame_duck(Duration::ZERO);
    let inventory = serve(
        Server::new("inventory")
            .config(config())
            .add_service(InventoryServer::new(Participant::default())),
    )
    .await;
    let payments = serve(
        Server::new("payments")
            .config(config())
            .add_service(PaymentsServer::new(Participant::default())),
    )
    .await;
    let echo = serve(
        Server::new("orders")
            .config(config())
            .add_service(EchoServer::new(Participant::default())),
    )
    .await;
    Clients {
        inventory: InventoryClient::connect(ClientConfig::endpoint(inventory))
            .await
            .expect("inventory client"),
        payments: PaymentsClient::connect(ClientConfig::endpoint(payments))
            .await
            .expect("payments client"),
        echo: EchoClient::connect(ClientConfig::endpoint(echo))
            .await
            .expect("echo client"),
    }
}

fn definition(clients: &Clients) -> SagaDefinition<Order> {
    let echo = clients.echo.clone();
    SagaDefinition::new("order", 1)
        .step(Step::rpc(
            "reserve",
            clients.inventory.client(),
            &InventoryContract::RESERVE,
            |o: &Order| ReserveRequest {
                order_id: o.order_id.clone(),
                sku: "tea".into(),
                quantity: 1,
            },
            |o: Order, reservation| Order {
                reservation: Some(reservation),
                ..o
            },
        ))
        .step(Step::rpc(
            "charge",
            clients.payments.client(),
            &PaymentsContract::CHARGE,
            |o: &Order| ChargeRequest {
                order_id: o.order_id.clone(),
                amount_cents: 500,
            },
            |o: Order, charge| Order {
                charge: Some(charge),
                ..o
            },
        ))
        .step(Step::new("confirm", move |cx: StepContext, o: Order| {
            let mut echo = echo.clone();
            async move {
                echo.put(cx.request(EchoRequest {
                    message: o.order_id.clone(),
                    ..EchoRequest::default()
                }))
                .await?;
                Ok(Order {
                    confirmed: true,
                    ..o
                })
            }
        }))
}

/// A request carrying the key a saga's step `step` would carry.
fn keyed<T>(id: &str, step: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    IdempotencyKey::for_step(id, step, Phase::Action)
        .expect("key")
        .apply(&mut request);
    request
}

/// The same three calls, with the keys a saga's steps would carry.
async fn plain_sequence(mut clients: Clients, id: String) {
    let reserve = ReserveRequest {
        order_id: id.clone(),
        sku: "tea".into(),
        quantity: 1,
    };
    clients
        .inventory
        .reserve(keyed(&id, "reserve", reserve))
        .await
        .expect("reserve");
    let charge = ChargeRequest {
        order_id: id.clone(),
        amount_cents: 500,
    };
    clients
        .payments
        .charge(keyed(&id, "charge", charge))
        .await
        .expect("charge");
    let put = EchoRequest {
        message: id.clone(),
        ..EchoRequest::default()
    };
    clients
        .echo
        .put(keyed(&id, "confirm", put))
        .await
        .expect("confirm");
}

/// One round's rate, and the CPU time per unit in µs: this process's,
/// and the services' on this host (PostgreSQL's).
struct Round {
    per_s: f64,
    cpu_us: Option<f64>,
    services_cpu_us: Option<f64>,
}

async fn timed<F, Fut>(n: usize, one: F) -> Round
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let (cpu, services) = (process_cpu_time(), services_cpu_time());
    let started = Instant::now();
    stream::iter(0..n)
        .map(one)
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    let elapsed = started.elapsed();
    let cpu_us = cpu
        .zip(process_cpu_time())
        .map(|(a, b)| b.saturating_sub(a).as_secs_f64() * 1e6 / n as f64);
    Round {
        per_s: n as f64 / elapsed.as_secs_f64(),
        cpu_us,
        services_cpu_us: services_cpu_per_message(services, n),
    }
}

async fn sagas<DB: LogDatabase>(
    orchestrator: &Orchestrator<DB>,
    round: usize,
    n: usize,
) -> (Round, f64) {
    let before = orchestrator.log().writes();
    let result = timed(n, |i| {
        let orchestrator = orchestrator.clone();
        async move {
            let id = format!("r{round}-{i}");
            let order = Order {
                order_id: id.clone(),
                ..Order::default()
            };
            let status = orchestrator
                .run("order", id, &order)
                .await
                .expect("saga log");
            assert!(
                status == sinew::saga::SagaStatus::Completed,
                "saga ended {status:?}"
            );
        }
    })
    .await;
    let writes = (orchestrator.log().writes() - before) as f64 / n as f64;
    (result, writes)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(name: &str, round: usize, r: &Round) {
    let show = |us: Option<f64>| us.map_or_else(|| "n/a".to_owned(), |us| format!("{us:.0}µs"));
    println!(
        "round {round} {name:<14} {:>8.0}/s  cpu per saga: this process {}, PostgreSQL {}",
        r.per_s,
        show(r.cpu_us),
        show(r.services_cpu_us)
    );
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: not a number")))
        .unwrap_or(default)
}

const SCHEMA: &str = "sinew_bench_saga";

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    if !common::reachable(&url, 5432) {
        eprintln!(
            "SKIP: PostgreSQL is not reachable (set DATABASE_URL); the saga benchmark needs it"
        );
        if std::env::var("SINEW_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
            std::process::exit(1);
        }
        return;
    }
    let n = env_usize("SINEW_BENCH_SAGAS", 3000).max(1);
    let rounds = env_usize("SINEW_BENCH_ROUNDS", 3).max(1);

    let clients = participants().await;

    // The PostgreSQL log, in a schema of its own.
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    let options: PgConnectOptions = url.parse().expect("DATABASE_URL");
    let admin = sqlx::PgPool::connect_with(options.clone())
        .await
        .expect("PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}"
    )))
    .execute(&admin)
    .await
    .expect("schema");
    let pg_pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options.options([("search_path", SCHEMA)]))
        .await
        .expect("PostgreSQL pool");
    let pg = Orchestrator::builder(SagaLog::new(pg_pool).await.expect("PostgreSQL log"))
        .register(definition(&clients))
        .build();

    // The SQLite log, in a file.
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite_pool = SqlitePoolOptions::new()
        .max_connections(env_usize("SINEW_BENCH_SQLITE_CONNECTIONS", 4) as u32)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(dir.path().join("saga.db"))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30)),
        )
        .await
        .expect("SQLite pool");
    let sqlite = Orchestrator::builder(SagaLog::new(sqlite_pool).await.expect("SQLite log"))
        .register(definition(&clients))
        .build();

    println!(
        "{n} sagas per round, {IN_FLIGHT} at once, {rounds} rounds: plain, PostgreSQL, SQLite alternating"
    );
    // Warm the connections and the pools.
    timed(IN_FLIGHT, |i| {
        plain_sequence(clients.clone(), format!("warm-{i}"))
    })
    .await;

    let (mut plain, mut on_pg, mut on_sqlite, mut writes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let r = timed(n, |i| {
            plain_sequence(clients.clone(), format!("p{round}-{i}"))
        })
        .await;
        report("plain calls", round, &r);
        plain.push(r.per_s);

        let (r, w) = sagas(&pg, round, n).await;
        report("PostgreSQL", round, &r);
        on_pg.push(r.per_s);
        writes.push(w);

        let (r, w) = sagas(&sqlite, round, n).await;
        report("SQLite", round, &r);
        on_sqlite.push(r.per_s);
        writes.push(w);
    }
    let (plain, on_pg, on_sqlite) = (median(plain), median(on_pg), median(on_sqlite));
    let writes = writes.iter().copied().fold(0.0, f64::max);
    println!(
        "medians: PostgreSQL {:.2}× plain calls' rate, SQLite {:.2}×",
        on_pg / plain,
        on_sqlite / plain
    );

    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"
    )))
    .execute(&admin)
    .await
    .expect("drop schema");
    println!(
        "RESULT pg_sagas_per_s={on_pg:.0} sqlite_sagas_per_s={on_sqlite:.0} plain_calls_per_s={plain:.0} log_writes_per_saga={writes:.1}"
    );
}
