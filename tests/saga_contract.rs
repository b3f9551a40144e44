//! Sagas built from the contract, against participants served on the
//! scaffold over loopback gRPC: steps made with `Step::rpc` compensate with
//! the methods the contract names (`compensated_by`), built from the
//! action's response; each call carries its step's idempotency key; the
//! events a saga publishes land in the outbox with its log's writes; and
//! the admin service (`sinew.saga.v1.SagaAdmin`) lists, gets, resumes and
//! aborts sagas, on SQLite and PostgreSQL.

#![allow(clippy::print_stderr, reason = "a skipped test says so")]

mod common;

use std::{
    collections::HashMap,
    net::TcpStream,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::Running;
use sinew::saga::{
    HEADER, IdempotencyKey, Orchestrator, Phase, SagaDefinition, SagaLog, SagaStatus, Step,
    StepError,
    admin::{
        SagaAdminClient,
        proto::{
            AbortSagaRequest, GetSagaRequest, ListSagasRequest, ResumeSagaRequest,
            SagaStatus as Wire,
        },
    },
    log::LogDatabase,
};
use sinew::{
    Server,
    client::ClientConfig,
    events::{Envelope, Outbox, OutboxConfig},
    server::ServerConfig,
};
use sinew_workspace::proto::shop::{
    inventory::v1::{
        InventoryClient, InventoryContract, ReleaseReply, Reservation, ReserveRequest,
        inventory_server::{Inventory, InventoryServer},
    },
    orders::v1::{OrderConfirmed, OrderPlaced},
    payments::v1::{
        Charge, ChargeRequest, PaymentsClient, PaymentsContract, RefundReply,
        payments_server::{Payments, PaymentsServer},
    },
};
use tonic::{Code, Request, Response, Status};

/// The saga's state.
#[derive(Clone, PartialEq, prost::Message)]
struct Order {
    #[prost(string, tag = "1")]
    order_id: String,
    #[prost(string, tag = "2")]
    sku: String,
    #[prost(int64, tag = "3")]
    amount_cents: i64,
    #[prost(message, optional, tag = "4")]
    reservation: Option<Reservation>,
    #[prost(message, optional, tag = "5")]
    charge: Option<Charge>,
    #[prost(bool, tag = "6")]
    refuse_confirm: bool,
    #[prost(bool, tag = "7")]
    confirmed: bool,
}

/// Both participants' books. Each keyed call applies once: a repeated key
/// gets the first reply.
#[derive(Default)]
struct Books {
    /// Charges by id: (order, amount, refunded).
    charges: HashMap<String, (String, i64, bool)>,
    /// Reservations by id: (order, released).
    reservations: HashMap<String, (String, bool)>,
    /// The first reply to each key, encoded.
    replies: HashMap<String, Vec<u8>>,
    /// Every call: (method, key).
    calls: Vec<(&'static str, String)>,
    /// Charges whose reply is still to be lost: applied (or replayed),
    /// then answered `UNAVAILABLE`.
    lost_charge_replies: u32,
    /// Refunds still to fail with `ABORTED` (retryable, and not a failure
    /// of the endpoint, so the client's breaker stays closed).
    refund_failures: u32,
}

#[derive(Clone, Default)]
struct Shop(Arc<Mutex<Books>>);

impl Shop {
    /// Applies a call once per key: `apply` runs on the first, and later
    /// calls with the key get its reply.
    fn once<Req, Resp: prost::Message + Default>(
        &self,
        method: &'static str,
        request: &Request<Req>,
        apply: impl FnOnce(&mut Books) -> Result<Resp, Status>,
    ) -> Result<Response<Resp>, Status> {
        let key = request
            .metadata()
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::invalid_argument("no idempotency key"))?
            .to_owned();
        let mut books = self.0.lock().unwrap();
        books.calls.push((method, key.clone()));
        let reply = match books.replies.get(&key) {
            Some(reply) => Resp::decode(reply.as_slice()).unwrap(),
            None => {
                let reply = apply(&mut books)?;
                books
                    .replies
                    .insert(key, prost::Message::encode_to_vec(&reply));
                reply
            }
        };
        if method == "charge" && books.lost_charge_replies > 0 {
            books.lost_charge_replies -= 1;
            return Err(Status::unavailable("reply lost"));
        }
        Ok(Response::new(reply))
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.0.lock().unwrap()
    }
}

#[tonic::async_trait]
impl Payments for Shop {
    async fn charge(&self, request: Request<ChargeRequest>) -> Result<Response<Charge>, Status> {
        self.once("charge", &request, |books| {
            let r = request.get_ref();
            if r.amount_cents > 1000 {
                return Err(Status::failed_precondition("card declined"));
            }
            let id = format!("ch-{}", books.charges.len() + 1);
            books
                .charges
                .insert(id.clone(), (r.order_id.clone(), r.amount_cents, false));
            Ok(Charge {
                charge_id: id,
                order_id: r.order_id.clone(),
                amount_cents: r.amount_cents,
            })
        })
    }

    async fn refund(&self, request: Request<Charge>) -> Result<Response<RefundReply>, Status> {
        self.once("refund", &request, |books| {
            if books.refund_failures > 0 {
                books.refund_failures -= 1;
                return Err(Status::aborted("ledger locked"));
            }
            let id = &request.get_ref().charge_id;
            let charge = books
                .charges
                .get_mut(id)
                .ok_or_else(|| Status::not_found("no such charge"))?;
            charge.2 = true;
            Ok(RefundReply {
                charge_id: id.clone(),
            })
        })
    }
}

#[tonic::async_trait]
impl Inventory for Shop {
    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<Reservation>, Status> {
        self.once("reserve", &request, |books| {
            let r = request.get_ref();
            if r.sku == "none" {
                return Err(Status::failed_precondition("out of stock"));
            }
            let id = format!("re-{}", books.reservations.len() + 1);
            books
                .reservations
                .insert(id.clone(), (r.order_id.clone(), false));
            Ok(Reservation {
                reservation_id: id,
                order_id: r.order_id.clone(),
            })
        })
    }

    async fn release(
        &self,
        request: Request<Reservation>,
    ) -> Result<Response<ReleaseReply>, Status> {
        self.once("release", &request, |books| {
            let id = &request.get_ref().reservation_id;
            let held = books
                .reservations
                .get_mut(id)
                .ok_or_else(|| Status::not_found("no such reservation"))?;
            held.1 = true;
            Ok(ReleaseReply {
                reservation_id: id.clone(),
            })
        })
    }
}

/// The saga: reserve and charge are the contract's methods, compensated
/// as the contract says; confirm is local.
fn definition(payments: &PaymentsClient, inventory: &InventoryClient) -> SagaDefinition<Order> {
    SagaDefinition::new("order", 1)
        .step(
            Step::rpc(
                "reserve",
                inventory.client(),
                &InventoryContract::RESERVE,
                |o: &Order| ReserveRequest {
                    order_id: o.order_id.clone(),
                    sku: o.sku.clone(),
                    quantity: 1,
                },
                |o: Order, reservation| Order {
                    reservation: Some(reservation),
                    ..o
                },
            )
            .emits(|o: &Order| {
                vec![Envelope::new(&OrderPlaced {
                    order_id: o.order_id.clone(),
                    amount_cents: o.amount_cents,
                })]
            }),
        )
        .step(Step::rpc(
            "charge",
            payments.client(),
            &PaymentsContract::CHARGE,
            |o: &Order| ChargeRequest {
                order_id: o.order_id.clone(),
                amount_cents: o.amount_cents,
            },
            |o: Order, charge| Order {
                charge: Some(charge),
                ..o
            },
        ))
        .step(Step::new("confirm", |_cx, o: Order| async move {
            if o.refuse_confirm {
                Err(StepError::Final("confirmation refused".into()))
            } else {
                Ok(Order {
                    confirmed: true,
                    ..o
                })
            }
        }))
        .on_completed(|o: &Order| {
            vec![Envelope::new(&OrderConfirmed {
                order_id: o.order_id.clone(),
            })]
        })
        .compensation_attempts(2)
        .backoff(Duration::from_millis(1), Duration::from_millis(2))
}

fn order(id: &str, sku: &str, amount_cents: i64, refuse_confirm: bool) -> Order {
    Order {
        order_id: id.into(),
        sku: sku.into(),
        amount_cents,
        refuse_confirm,
        ..Order::default()
    }
}

/// The participants and the orchestrating service (with the admin
/// service) on one scaffolded server, and clients of it.
struct Setup<DB: LogDatabase> {
    shop: Shop,
    saga: Orchestrator<DB>,
    outbox: Outbox<DB>,
    admin: SagaAdminClient,
    _server: Running,
}

async fn setup<DB: LogDatabase>(log: SagaLog<DB>) -> Setup<DB> {
    let shop = Shop::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}", listener.local_addr().unwrap());
    let payments = PaymentsClient::connect(ClientConfig::endpoint(&target))
        .await
        .unwrap();
    let inventory = InventoryClient::connect(ClientConfig::endpoint(&target))
        .await
        .unwrap();
    let outbox = Outbox::new(log.pool().clone(), OutboxConfig { notify: false });
    outbox.migrate().await.unwrap();
    let saga = Orchestrator::builder(log)
        .register(definition(&payments, &inventory))
        .outbox(outbox.clone())
        .build();
    let server = Running::start_on(
        listener,
        Server::new("shop")
            .config(ServerConfig::new().lame_duck(Duration::ZERO))
            .add_service(PaymentsServer::new(shop.clone()))
            .add_service(InventoryServer::new(shop.clone()))
            .add_service(saga.admin()),
    );
    let admin = SagaAdminClient::connect(ClientConfig::endpoint(&target))
        .await
        .unwrap();
    Setup {
        shop,
        saga,
        outbox,
        admin,
        _server: server,
    }
}

fn key(saga: &str, step: &str, phase: Phase) -> String {
    IdempotencyKey::for_step(saga, step, phase)
        .unwrap()
        .as_str()
        .to_owned()
}

async fn steps_from_the_contract<DB: LogDatabase>(log: SagaLog<DB>) {
    let s = setup(log).await;
    let run = |id: &'static str, o: Order| {
        let saga = s.saga.clone();
        async move { saga.run("order", id, &o).await.unwrap() }
    };

    // Completed: charged and reserved once, each call with its step's key.
    assert_eq!(
        run("o-1", order("o-1", "tea", 500, false)).await,
        SagaStatus::Completed
    );
    {
        let books = s.shop.books();
        assert_eq!(
            books.calls,
            [
                ("reserve", key("o-1", "reserve", Phase::Action)),
                ("charge", key("o-1", "charge", Phase::Action)),
            ]
        );
        assert_eq!(books.charges["ch-1"], ("o-1".to_owned(), 500, false));
        assert_eq!(books.reservations["re-1"], ("o-1".to_owned(), false));
    }
    assert_eq!(
        s.outbox.pending().await.unwrap().count,
        2,
        "OrderPlaced with the reservation, OrderConfirmed with the completion"
    );

    // Refused at confirm: the charge is refunded and the reservation
    // released, last first, by the methods the contract names, given
    // what the actions answered, each with its compensation key.
    assert_eq!(
        run("o-2", order("o-2", "tea", 700, true)).await,
        SagaStatus::Compensated
    );
    {
        let books = s.shop.books();
        assert_eq!(
            books.calls[2..],
            [
                ("reserve", key("o-2", "reserve", Phase::Action)),
                ("charge", key("o-2", "charge", Phase::Action)),
                ("refund", key("o-2", "charge", Phase::Compensation)),
                ("release", key("o-2", "reserve", Phase::Compensation)),
            ]
        );
        assert_eq!(books.charges["ch-2"], ("o-2".to_owned(), 700, true));
        assert_eq!(books.reservations["re-2"], ("o-2".to_owned(), true));
        assert!(!books.charges["ch-1"].2, "o-1's charge untouched");
    }

    // Declined at charge (FAILED_PRECONDITION is final): only the
    // reservation is released; no charge was made.
    assert_eq!(
        run("o-3", order("o-3", "tea", 5000, false)).await,
        SagaStatus::Compensated
    );
    {
        let books = s.shop.books();
        assert_eq!(books.charges.len(), 2);
        assert_eq!(books.reservations["re-3"], ("o-3".to_owned(), true));
        let methods: Vec<_> = books.calls[6..].iter().map(|c| c.0).collect();
        assert_eq!(methods, ["reserve", "charge", "release"]);
    }
    let error = s
        .saga
        .log()
        .get("o-3")
        .await
        .unwrap()
        .unwrap()
        .error
        .unwrap();
    assert!(error.contains("card declined"), "{error}");

    // Out of stock at the first step: nothing to undo.
    assert_eq!(
        run("o-4", order("o-4", "none", 100, false)).await,
        SagaStatus::Compensated
    );
    assert_eq!(s.shop.books().calls.len(), 10);
    assert_eq!(
        s.outbox.pending().await.unwrap().count,
        4,
        "OrderPlaced for o-2 and o-3, whose reservations were made (and \
         later released); nothing for o-4, whose reservation failed, and no \
         OrderConfirmed for a compensated saga"
    );

    // The charge applies but its replies are lost, every attempt: its
    // outcome is uncertain, so it is undone too. Its response is not in
    // the log, so the action is called again with its own key (the
    // participant answers what it recorded) and that charge is refunded.
    s.shop.books().lost_charge_replies = 3;
    assert_eq!(
        run("o-5", order("o-5", "tea", 200, false)).await,
        SagaStatus::Compensated
    );
    {
        let books = s.shop.books();
        let charge = key("o-5", "charge", Phase::Action);
        assert_eq!(
            books.calls[10..],
            [
                ("reserve", key("o-5", "reserve", Phase::Action)),
                ("charge", charge.clone()),
                ("charge", charge.clone()),
                ("charge", charge.clone()),
                ("charge", charge),
                ("refund", key("o-5", "charge", Phase::Compensation)),
                ("release", key("o-5", "reserve", Phase::Compensation)),
            ]
        );
        let o5: Vec<_> = books.charges.values().filter(|c| c.0 == "o-5").collect();
        assert_eq!(
            o5,
            [&("o-5".to_owned(), 200, true)],
            "charged once, refunded"
        );
    }
}

async fn admin_service<DB: LogDatabase>(log: SagaLog<DB>) {
    let s = setup(log).await;
    let mut admin = s.admin.clone();

    // Two sagas park: refunds keep failing.
    s.shop.books().refund_failures = u32::MAX;
    for id in ["p-1", "p-2"] {
        let status = s
            .saga
            .run("order", id, &order(id, "tea", 300, true))
            .await
            .unwrap();
        assert_eq!(status, SagaStatus::NeedsAttention);
    }
    assert_eq!(
        s.saga
            .run("order", "done", &order("done", "tea", 300, false))
            .await
            .unwrap(),
        SagaStatus::Completed
    );

    // Listed by status, a page at a time.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_sagas(ListSagasRequest {
                status: Wire::NeedsAttention.into(),
                page_size: 1,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.sagas.len() <= 1);
        for saga in &page.sagas {
            assert_eq!(saga.status(), Wire::NeedsAttention);
            assert!(saga.history.is_empty(), "no history in a list");
            seen.push(saga.id.clone());
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["p-1", "p-2"]);
    let all = admin
        .list_sagas(ListSagasRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.sagas.len(), 3, "every status");
    let bad = admin
        .list_sagas(ListSagasRequest {
            page_token: "not a token".into(),
            ..ListSagasRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // One saga, with its history.
    let p1 = admin
        .get_saga(GetSagaRequest { id: "p-1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.name, "order");
    assert_eq!(p1.version, 1);
    assert!(p1.error.contains("ledger locked"), "{}", p1.error);
    let outcomes: Vec<(u32, &str, &str)> = p1
        .history
        .iter()
        .map(|c| (c.step, c.phase.as_str(), c.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (0, "action", "ok"),
            (1, "action", "ok"),
            (2, "action", "failed"),
            (1, "compensation", "failed"),
        ]
    );
    assert!(p1.history.iter().all(|c| c.at.is_some()));
    let state: Order = prost::Message::decode(p1.state.as_slice()).unwrap();
    assert_eq!(state.charge.unwrap().order_id, "p-1");
    let missing = admin
        .get_saga(GetSagaRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let empty = admin.get_saga(GetSagaRequest::default()).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);

    // Only a parked saga resumes.
    let not_parked = admin
        .resume_saga(ResumeSagaRequest { id: "done".into() })
        .await
        .unwrap_err();
    assert_eq!(not_parked.code(), Code::FailedPrecondition);
    assert!(not_parked.message().contains("completed"), "{not_parked:?}");

    // The bank is back: resumed, p-1 finishes its compensation.
    s.shop.books().refund_failures = 0;
    let restarted = admin
        .resume_saga(ResumeSagaRequest { id: "p-1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restarted.status(), Wire::Compensating);
    let mut status = Wire::Compensating;
    for _ in 0..500 {
        status = admin
            .get_saga(GetSagaRequest { id: "p-1".into() })
            .await
            .unwrap()
            .into_inner()
            .status();
        if status != Wire::Compensating {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, Wire::Compensated);

    // p-2 is aborted: it ends there, nothing more called.
    let calls = s.shop.books().calls.len();
    let aborted = admin
        .abort_saga(AbortSagaRequest {
            id: "p-2".into(),
            reason: "refunded by hand".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(aborted.status(), Wire::Aborted);
    let again = admin
        .abort_saga(AbortSagaRequest {
            id: "p-2".into(),
            reason: "twice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.status(), Wire::Aborted);
    assert_eq!(again.error, "refunded by hand", "the first abort stands");
    let p2 = admin
        .get_saga(GetSagaRequest { id: "p-2".into() })
        .await
        .unwrap()
        .into_inner();
    let last = p2.history.last().unwrap();
    assert_eq!(
        (last.outcome.as_str(), last.error.as_str()),
        ("aborted", "refunded by hand")
    );
    let resumed = admin
        .resume_saga(ResumeSagaRequest { id: "p-2".into() })
        .await
        .unwrap_err();
    assert_eq!(resumed.code(), Code::FailedPrecondition);
    let completed = admin
        .abort_saga(AbortSagaRequest {
            id: "done".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(completed.code(), Code::FailedPrecondition);
    assert_eq!(s.shop.books().calls.len(), calls, "an abort calls nothing");
    let books = s.shop.books();
    let p2_charge = books.charges.values().find(|c| c.0 == "p-2").unwrap();
    assert!(!p2_charge.2, "left to the operator");
}

#[test]
#[should_panic(expected = "saga `order` publishes events, but the orchestrator has no outbox")]
fn events_without_an_outbox_fail_at_start() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (_dir, log) = sqlite().await;
        let target = "http://127.0.0.1:1";
        let payments = PaymentsClient::connect(ClientConfig::endpoint(target))
            .await
            .unwrap();
        let inventory = InventoryClient::connect(ClientConfig::endpoint(target))
            .await
            .unwrap();
        let _ = Orchestrator::builder(log)
            .register(definition(&payments, &inventory))
            .build();
    });
}

async fn sqlite() -> (tempfile::TempDir, SagaLog<sqlx::Sqlite>) {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("orders.db"))
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

/// A log in a schema of its own, or `None` (a loud skip) without
/// PostgreSQL.
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
            !common::require_services(),
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
async fn sqlite_steps_from_the_contract() {
    let (_dir, log) = sqlite().await;
    steps_from_the_contract(log).await;
}

#[tokio::test]
async fn postgres_steps_from_the_contract() {
    if let Some(log) = postgres("sinew_test_saga_contract").await {
        steps_from_the_contract(log).await;
    }
}

#[tokio::test]
async fn sqlite_admin_service() {
    let (_dir, log) = sqlite().await;
    admin_service(log).await;
}

#[tokio::test]
async fn postgres_admin_service() {
    if let Some(log) = postgres("sinew_test_saga_admin").await {
        admin_service(log).await;
    }
}
