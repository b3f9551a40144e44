//! A saga across three services, each a process of its own: `orders`
//! places orders by reserving stock at `inventory`, charging the order at
//! `payments`, and confirming it in its own database; when a step fails for
//! good, the steps before it are undone (the charge refunded, the
//! reservation released). The orchestrator's log makes every saga durable:
//! killed at any point and started again, `orders` finishes what it left,
//! and the participants apply each call once, however often it comes.
//!
//! Run with (each in a shell of its own, or in the background):
//!
//! - `cargo run --example saga -- payments --db payments.sqlite --addr 127.0.0.1:50061`:
//!   the `shop.payments.v1.Payments` service. It declines (final,
//!   `FAILED_PRECONDITION`) charges above 90.00.
//! - `cargo run --example saga -- inventory --db inventory.sqlite --addr 127.0.0.1:50062`:
//!   the `shop.inventory.v1.Inventory` service. It has no stock (final,
//!   `FAILED_PRECONDITION`) for quantities above 9.
//! - `cargo run --example saga -- orders --log orders.sqlite --payments 127.0.0.1:50061
//!   --inventory 127.0.0.1:50062 --count 100`: runs saga `place_order` for
//!   orders `order-0` to `order-99`, 8 at once, recovering whatever an
//!   earlier run left unfinished, and exits 0 once every one of them has
//!   ended, printing a summary line. Every 13th order cannot be delivered:
//!   its confirmation fails for good, so its charge is refunded and its
//!   reservation released.
//!
//! `payments` and `inventory` print `ready` once they serve, and serve
//! until SIGTERM or Ctrl-C. Options of `orders`: `--concurrency N` (sagas
//! started at once, default 8), `--lease D` (how long a saga stays this
//! process's without a write, default 5s, at least 3s: a run after a
//! crash takes over the sagas the dead one held once their lease runs
//! out), `--pause D` (a wait inside each step after its call, default 0s,
//! at most 250ms: it widens the windows in which a crash leaves a call
//! made but not logged).
//!
//! What the books hold in the end: every completed saga has one confirmed
//! order, one charge not refunded and one reservation not released; every
//! compensated saga has no confirmed order, and its charge (if any) is
//! refunded and its reservation (if any) released. `tests/saga.rs` checks
//! exactly that after killing `orders` (and the participants) with SIGKILL
//! over and over.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example program talks to its user"
)]

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    str::FromStr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use sinew::saga::{
    IdempotencyConfig, IdempotencyLayer, IdempotencyStore, Orchestrator, Phase, SagaDefinition,
    SagaLog, Step, StepContext, StepError,
};
use sinew::{
    Server,
    client::{ClientConfig, balance::ReconnectBackoff, breaker::BreakerConfig},
    server::ServerConfig,
};
use sinew_workspace::proto::shop::{
    inventory::v1::{
        InventoryClient, InventoryContract, ReleaseReply, Reservation, ReserveRequest,
        inventory_server::{Inventory, InventoryServer},
    },
    payments::v1::{
        Charge, ChargeRequest, PaymentsClient, RefundReply,
        payments_server::{Payments, PaymentsServer},
    },
};
use sqlx::{
    Row as _, Sqlite, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tonic::{Request, Response, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The saga's name in the log.
const PLACE_ORDER: &str = "place_order";

/// Charges above this many cents are declined.
const CHARGE_LIMIT_CENTS: i64 = 9_000;

/// Reservations of more than this many items find no stock.
const STOCK_PER_ORDER: u32 = 9;

/// Opens (creating if missing) the SQLite database at `path` in WAL mode,
/// and runs `schema` on it.
async fn open(path: &PathBuf, schema: &'static str) -> Result<SqlitePool, BoxError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // A process crash loses nothing committed in WAL mode with NORMAL
        // (a power cut might lose the last commits; not this example's case).
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    sqlx::raw_sql(schema).execute(&pool).await?;
    Ok(pool)
}

/// Serves `server` on `addr`, says `ready`, and runs until SIGTERM or
/// Ctrl-C, then drains.
async fn serve(server: Server, addr: SocketAddr) -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("ready");
    server
        .serve_with_listener(listener, sinew::server::shutdown_signal())
        .await?;
    Ok(())
}

/// The idempotency store of a participant's database: keys are kept a day
/// (far longer than a saga repeats a call here).
async fn keys(pool: SqlitePool) -> Result<IdempotencyStore<Sqlite>, BoxError> {
    let config = IdempotencyConfig {
        retention: Duration::from_secs(24 * 3600),
        ..IdempotencyConfig::default()
    };
    Ok(IdempotencyStore::new(pool, config).await?)
}

// === payments ===

/// The payments service: one `charges` row per charge, applied with the
/// call's idempotency key in one transaction.
struct PaymentsService {
    keys: IdempotencyStore<Sqlite>,
}

const PAYMENTS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS charges (
    charge_id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    refunded BIGINT NOT NULL DEFAULT 0
)";

#[tonic::async_trait]
impl Payments for PaymentsService {
    async fn charge(&self, request: Request<ChargeRequest>) -> Result<Response<Charge>, Status> {
        let asked = request.get_ref();
        if asked.amount_cents > CHARGE_LIMIT_CENTS {
            // Decided before any write: a final answer, the same every time.
            return Err(Status::failed_precondition("declined"));
        }
        let reply = self
            .keys
            .once(&request, |mut tx| async move {
                // No unique order_id: a second application would show.
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO charges (order_id, amount_cents) VALUES ($1, $2)
                     RETURNING charge_id",
                )
                .bind(&asked.order_id)
                .bind(asked.amount_cents)
                .fetch_one(&mut *tx)
                .await?;
                let charge = Charge {
                    charge_id: id.to_string(),
                    order_id: asked.order_id.clone(),
                    amount_cents: asked.amount_cents,
                };
                Ok((tx, charge))
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn refund(&self, request: Request<Charge>) -> Result<Response<RefundReply>, Status> {
        let charge = request.get_ref();
        let id: i64 = charge
            .charge_id
            .parse()
            .map_err(|_| Status::invalid_argument("charge_id is not a charge's id"))?;
        let reply = self
            .keys
            .once(&request, |mut tx| async move {
                // Refunding twice refunds once: the flag is set, not added.
                let done = sqlx::query(
                    "UPDATE charges SET refunded = 1 WHERE charge_id = $1 AND order_id = $2",
                )
                .bind(id)
                .bind(&charge.order_id)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(Status::not_found("no such charge").into());
                }
                let reply = RefundReply {
                    charge_id: charge.charge_id.clone(),
                };
                Ok((tx, reply))
            })
            .await?;
        Ok(Response::new(reply))
    }
}

async fn payments(db: PathBuf, addr: SocketAddr) -> Result<(), BoxError> {
    let pool = open(&db, PAYMENTS_SCHEMA).await?;
    let service = PaymentsService {
        keys: keys(pool).await?,
    };
    let server = Server::new("payments")
        .config(ServerConfig::new().lame_duck(Duration::ZERO))
        .add_service_with(PaymentsServer::new(service), IdempotencyLayer::new());
    serve(server, addr).await
}

// === inventory ===

/// The inventory service: one `reservations` row per reservation, applied
/// with the call's idempotency key in one transaction.
struct InventoryService {
    keys: IdempotencyStore<Sqlite>,
}

const INVENTORY_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS reservations (
    reservation_id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    released BIGINT NOT NULL DEFAULT 0
)";

#[tonic::async_trait]
impl Inventory for InventoryService {
    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<Reservation>, Status> {
        let asked = request.get_ref();
        if asked.quantity > STOCK_PER_ORDER {
            return Err(Status::failed_precondition("out of stock"));
        }
        let reply = self
            .keys
            .once(&request, |mut tx| async move {
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO reservations (order_id, sku, quantity) VALUES ($1, $2, $3)
                     RETURNING reservation_id",
                )
                .bind(&asked.order_id)
                .bind(&asked.sku)
                .bind(i64::from(asked.quantity))
                .fetch_one(&mut *tx)
                .await?;
                let reservation = Reservation {
                    reservation_id: id.to_string(),
                    order_id: asked.order_id.clone(),
                };
                Ok((tx, reservation))
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn release(
        &self,
        request: Request<Reservation>,
    ) -> Result<Response<ReleaseReply>, Status> {
        let reservation = request.get_ref();
        let id: i64 = reservation
            .reservation_id
            .parse()
            .map_err(|_| Status::invalid_argument("reservation_id is not a reservation's id"))?;
        let reply = self
            .keys
            .once(&request, |mut tx| async move {
                let done = sqlx::query(
                    "UPDATE reservations SET released = 1
                     WHERE reservation_id = $1 AND order_id = $2",
                )
                .bind(id)
                .bind(&reservation.order_id)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(Status::not_found("no such reservation").into());
                }
                let reply = ReleaseReply {
                    reservation_id: reservation.reservation_id.clone(),
                };
                Ok((tx, reply))
            })
            .await?;
        Ok(Response::new(reply))
    }
}

async fn inventory(db: PathBuf, addr: SocketAddr) -> Result<(), BoxError> {
    let pool = open(&db, INVENTORY_SCHEMA).await?;
    let service = InventoryService {
        keys: keys(pool).await?,
    };
    let server = Server::new("inventory")
        .config(ServerConfig::new().lame_duck(Duration::ZERO))
        .add_service_with(InventoryServer::new(service), IdempotencyLayer::new());
    serve(server, addr).await
}

// === orders: the orchestrator ===

/// The state of saga `place_order`, stored with it in the log: the order,
/// then what each step's call answered.
#[derive(Clone, PartialEq, prost::Message)]
struct PlaceOrder {
    /// The order's id, `order-<n>`.
    #[prost(string, tag = "1")]
    order_id: String,
    /// The item ordered.
    #[prost(string, tag = "2")]
    sku: String,
    /// How many.
    #[prost(uint32, tag = "3")]
    quantity: u32,
    /// What it costs, in cents.
    #[prost(int64, tag = "4")]
    amount_cents: i64,
    /// Whether it can be delivered: if not, its confirmation fails for
    /// good.
    #[prost(bool, tag = "5")]
    deliverable: bool,
    /// The reservation, once made.
    #[prost(message, optional, tag = "6")]
    reservation: Option<Reservation>,
    /// The charge, once made.
    #[prost(message, optional, tag = "7")]
    charge: Option<Charge>,
}

impl PlaceOrder {
    /// Order `n`: its quantity, price and address follow from `n`, so that
    /// every run decides alike which orders fail, and where.
    fn new(n: u64) -> Self {
        Self {
            order_id: format!("order-{n}"),
            sku: format!("sku-{}", n % 5),
            // 1 to 10: 10 finds no stock.
            quantity: u32::try_from(n % 10).unwrap_or(0) + 1,
            // 1.00 to 100.00: above 90.00 is declined.
            amount_cents: 100 * (i64::try_from(n.wrapping_mul(37) % 100).unwrap_or(0) + 1),
            deliverable: n % 13 != 6,
            reservation: None,
            charge: None,
        }
    }
}

const ORDERS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    charge_id TEXT NOT NULL
)";

/// Saga `place_order`: reserve (undone by release), charge (undone by
/// refund), confirm (a local write; the last step, so nothing undoes it).
fn place_order(
    inventory: &InventoryClient,
    payments: &PaymentsClient,
    pool: &SqlitePool,
    pause: Duration,
) -> SagaDefinition<PlaceOrder> {
    // Built from the contract's method: `Reserve` declares
    // `compensated_by: "Release"`, so the step releases what `Reserve`
    // answered, with no compensation written here.
    let reserve = Step::rpc(
        "reserve",
        inventory.client(),
        &InventoryContract::RESERVE,
        |order: &PlaceOrder| ReserveRequest {
            order_id: order.order_id.clone(),
            sku: order.sku.clone(),
            quantity: order.quantity,
        },
        |order: PlaceOrder, reservation| PlaceOrder {
            reservation: Some(reservation),
            ..order
        },
    );
    // Written by hand, as a step that is not one call of a contract's
    // method would be: the action, and what undoes it.
    let charge = {
        let (act, undo) = (payments.clone(), payments.clone());
        Step::new("charge", move |cx: StepContext, mut order: PlaceOrder| {
            let mut payments = act.clone();
            async move {
                let asked = ChargeRequest {
                    order_id: order.order_id.clone(),
                    amount_cents: order.amount_cents,
                };
                let charge = payments
                    .charge(cx.request(asked))
                    .await
                    .map_err(StepError::from)?;
                tokio::time::sleep(pause).await;
                order.charge = Some(charge.into_inner());
                Ok(order)
            }
        })
        .compensate(move |cx: StepContext, order: PlaceOrder| {
            let mut payments = undo.clone();
            async move {
                // An uncertain charge (its last attempt failed retryably)
                // is undone from the state it was given, which holds no
                // charge: it is asked again with its own key, which
                // answers the charge made, if any. A final refusal means
                // none was.
                let charge = match order.charge {
                    Some(charge) => charge,
                    None => {
                        let asked = ChargeRequest {
                            order_id: order.order_id.clone(),
                            amount_cents: order.amount_cents,
                        };
                        let action = cx.for_phase(Phase::Action)?;
                        match payments
                            .charge(action.request(asked))
                            .await
                            .map_err(StepError::from)
                        {
                            Ok(charge) => charge.into_inner(),
                            Err(StepError::Final(_)) => return Ok(()),
                            Err(retryable) => return Err(retryable),
                        }
                    }
                };
                payments
                    .refund(cx.request(charge))
                    .await
                    .map_err(StepError::from)?;
                Ok(())
            }
        })
    };
    let confirm = {
        let pool = pool.clone();
        Step::new("confirm", move |_cx: StepContext, order: PlaceOrder| {
            let pool = pool.clone();
            async move {
                if !order.deliverable {
                    // Decided before any write: the order stays unconfirmed.
                    return Err(StepError::Final("address undeliverable".into()));
                }
                // Idempotent: a repeat (after a crash before the log's
                // write) finds the order confirmed and changes nothing.
                sqlx::query(
                    "INSERT INTO orders (order_id, status, reservation_id, charge_id)
                     VALUES ($1, 'confirmed', $2, $3) ON CONFLICT (order_id) DO NOTHING",
                )
                .bind(&order.order_id)
                .bind(
                    order
                        .reservation
                        .as_ref()
                        .map(|r| r.reservation_id.clone())
                        .unwrap_or_default(),
                )
                .bind(
                    order
                        .charge
                        .as_ref()
                        .map(|c| c.charge_id.clone())
                        .unwrap_or_default(),
                )
                .execute(&pool)
                .await
                .map_err(|e| StepError::Retryable(e.into()))?;
                tokio::time::sleep(pause).await;
                Ok(order)
            }
        })
    };
    // An action is tried for about half a minute before its failure counts
    // as final, and a compensation about a minute before the saga is
    // parked: long enough to outlast a participant's restart and its
    // circuit breaker. An action that keeps failing retryably may have
    // been applied, so it is undone too; its attempts outlast a
    // participant's restart so that a saga is not undone for a blip.
    SagaDefinition::new(PLACE_ORDER, 1)
        .step(reserve.timeout(STEP_TIMEOUT).attempts(40))
        .step(charge.timeout(STEP_TIMEOUT).attempts(40))
        .step(confirm.timeout(STEP_TIMEOUT).attempts(40))
        .backoff(Duration::from_millis(50), MAX_BACKOFF)
        .compensation_attempts(80)
}

/// How long one attempt of a step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// The shortest lease `--lease` accepts: well above the longest time the
/// orchestrator goes without renewing a saga's lease (the wait between two
/// attempts; during an attempt it renews every third of the lease). A
/// lease that runs out while its saga is still driven lets the recovery
/// loop below take it and drive it a second time at once (the same
/// orchestrator's writes are not fenced).
const MIN_LEASE: Duration = Duration::from_secs(3);

/// A client of the participant at `addr`: the resilient client's
/// defaults, but endpoints reconnect and breakers close sooner, as a
/// participant restarted on its port is back within a second.
fn client_config(addr: SocketAddr) -> ClientConfig {
    ClientConfig::endpoint(format!("http://{addr}"))
        .timeout(STEP_TIMEOUT)
        .reconnect_backoff(ReconnectBackoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        })
        .breaker(BreakerConfig {
            recovery_timeout: Duration::from_millis(500),
            ..BreakerConfig::default()
        })
}

/// What `orders` was asked to do.
struct OrdersArgs {
    log: PathBuf,
    payments: SocketAddr,
    inventory: SocketAddr,
    count: u64,
    concurrency: u64,
    lease: Duration,
    pause: Duration,
}

/// How the sagas stand in the log: (completed, compensated, parked,
/// unfinished).
async fn tally(pool: &SqlitePool) -> Result<[i64; 4], BoxError> {
    let row = sqlx::query(
        "SELECT
           COALESCE(SUM(status = 'completed'), 0),
           COALESCE(SUM(status = 'compensated'), 0),
           COALESCE(SUM(status = 'needs_attention'), 0),
           COALESCE(SUM(status IN ('running', 'compensating')), 0)
         FROM sinew_saga",
    )
    .fetch_one(pool)
    .await?;
    Ok([
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
    ])
}

/// Runs sagas `order-0` to `order-<count - 1>`: those not in the log yet
/// are started, `concurrency` at once, while the unfinished ones an
/// earlier run left are recovered; returns once every one has ended.
async fn orders(args: OrdersArgs) -> Result<(), BoxError> {
    let pool = open(&args.log, ORDERS_SCHEMA).await?;
    let log = SagaLog::new(pool.clone()).await?.lease_ttl(args.lease);
    let inventory = InventoryClient::connect(client_config(args.inventory)).await?;
    let payments = PaymentsClient::connect(client_config(args.payments)).await?;
    let orchestrator = Orchestrator::builder(log)
        .register(place_order(&inventory, &payments, &pool, args.pause))
        .build();

    // The orders an earlier run started: recovery's, not ours to start.
    let known: HashSet<String> = sqlx::query_scalar("SELECT id FROM sinew_saga")
        .fetch_all(&pool)
        .await?
        .into_iter()
        .collect();
    let todo: Vec<u64> = (0..args.count)
        .filter(|n| !known.contains(&format!("order-{n}")))
        .collect();
    let next = AtomicU64::new(0);
    let started = AtomicU64::new(0);
    let recovered = AtomicU64::new(0);
    let starting_done = AtomicBool::new(false);

    // New sagas, `concurrency` at a time. A saga whose run fails (a log
    // write failed) stays in the log, for the recovery below.
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&n) = usize::try_from(i).ok().and_then(|i| todo.get(i)) else {
                return;
            };
            let order = PlaceOrder::new(n);
            started.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = orchestrator.run(PLACE_ORDER, &order.order_id, &order).await {
                eprintln!("orders: {}: {error}; left to recovery", order.order_id);
            }
        }
    };
    let starting = async {
        futures_util::future::join_all((0..args.concurrency.max(1)).map(|_| worker())).await;
        starting_done.store(true, Ordering::Release);
    };

    // Meanwhile, and after: the unfinished sagas no live orchestrator
    // holds (those of a dead run, once their lease ran out). Done when
    // every saga is in the log and none is unfinished.
    let recovering = async {
        loop {
            match orchestrator.recover().await {
                Ok(ended) => {
                    recovered.fetch_add(ended.len() as u64, Ordering::Relaxed);
                }
                Err(error) => eprintln!("orders: recovery: {error}; trying again"),
            }
            let all_started = starting_done.load(Ordering::Acquire);
            match tally(&pool).await {
                Ok([.., 0]) if all_started => return,
                Ok(_) => {}
                Err(error) => eprintln!("orders: reading the log: {error}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::join!(starting, recovering);

    let [completed, compensated, parked, _] = tally(&pool).await?;
    println!(
        "orders: {} sagas: {completed} completed, {compensated} compensated, {parked} parked \
         (this run started {} and recovered {})",
        completed + compensated + parked,
        started.into_inner(),
        recovered.into_inner(),
    );
    Ok(())
}

// === command line ===

fn parse<T: FromStr>(flag: &str, value: Option<String>) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value.parse().map_err(|e| format!("{flag} {value:?}: {e}"))
}

fn duration(flag: &str, value: Option<String>) -> Result<Duration, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    humantime::parse_duration(&value).map_err(|e| format!("{flag} {value:?}: {e}"))
}

/// The command and its options.
enum Command {
    Payments { db: PathBuf, addr: SocketAddr },
    Inventory { db: PathBuf, addr: SocketAddr },
    Orders(OrdersArgs),
}

const USAGE: &str = "usage:
  saga payments --db FILE --addr IP:PORT
  saga inventory --db FILE --addr IP:PORT
  saga orders --log FILE --payments IP:PORT --inventory IP:PORT --count N
              [--concurrency N] [--lease DURATION] [--pause DURATION]";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let command = args.next().ok_or("a command is needed")?;
    let (mut db, mut addr, mut log) = (None, None, None);
    let (mut payments, mut inventory, mut count) = (None, None, None);
    let mut concurrency = 8;
    let mut lease = Duration::from_secs(5);
    let mut pause = Duration::ZERO;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--db" => db = Some(PathBuf::from(parse::<String>(&flag, args.next())?)),
            "--log" => log = Some(PathBuf::from(parse::<String>(&flag, args.next())?)),
            "--addr" => addr = Some(parse(&flag, args.next())?),
            "--payments" => payments = Some(parse(&flag, args.next())?),
            "--inventory" => inventory = Some(parse(&flag, args.next())?),
            "--count" => count = Some(parse(&flag, args.next())?),
            "--concurrency" => concurrency = parse(&flag, args.next())?,
            "--lease" => lease = duration(&flag, args.next())?,
            "--pause" => pause = duration(&flag, args.next())?,
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if lease < MIN_LEASE {
        return Err(format!("--lease must be at least {MIN_LEASE:?}"));
    }
    if pause > STEP_TIMEOUT / 4 {
        return Err(format!(
            "--pause must be at most {:?}, a quarter of a step's timeout",
            STEP_TIMEOUT / 4
        ));
    }
    let needed = |name: &str| format!("`{command}` needs {name}");
    Ok(match command.as_str() {
        "payments" | "inventory" => {
            let db = db.ok_or_else(|| needed("--db"))?;
            let addr = addr.ok_or_else(|| needed("--addr"))?;
            if command == "payments" {
                Command::Payments { db, addr }
            } else {
                Command::Inventory { db, addr }
            }
        }
        "orders" => Command::Orders(OrdersArgs {
            log: log.ok_or_else(|| needed("--log"))?,
            payments: payments.ok_or_else(|| needed("--payments"))?,
            inventory: inventory.ok_or_else(|| needed("--inventory"))?,
            count: count.ok_or_else(|| needed("--count"))?,
            concurrency,
            lease,
            pause,
        }),
        other => return Err(format!("unknown command `{other}`")),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = match parse_args(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("saga: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Payments { db, addr } => payments(db, addr).await,
        Command::Inventory { db, addr } => inventory(db, addr).await,
        Command::Orders(args) => orders(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("saga: {error}");
            ExitCode::FAILURE
        }
    }
}
