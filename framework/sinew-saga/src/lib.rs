//! Sagas for sinew: distributed transactions with compensation, run by an
//! orchestrator embedded in the service and durable in its own database.
//!
//! # Defining and running a saga
//!
//! A saga is an ordered list of [`Step`]s over a typed state (a protobuf
//! message, stored with the saga). A step's action reads the state, makes
//! its call and returns the state extended with the answer; its
//! compensation undoes it. When an action fails for good (a final
//! [`StepError`]), the completed steps are compensated, last first. When
//! its last attempt fails retryably, its outcome is uncertain (a lost
//! reply may have applied it), so it is compensated too, from the state it
//! was given (see [`Step::compensate`]). Compensations are retried until
//! they succeed; past [`SagaDefinition::compensation_attempts`] the saga
//! is parked as [`SagaStatus::NeedsAttention`], with the error, and
//! [`Orchestrator::resume`] goes on with it. Nothing is ever dropped.
//!
//! ```
//! use std::time::Duration;
//! use sinew_saga::{Orchestrator, SagaDefinition, SagaLog, SagaStatus, Step, StepContext, StepError};
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! struct Order {
//!     #[prost(string, tag = "1")]
//!     order_id: String,
//!     #[prost(string, tag = "2")]
//!     charge_id: String,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let definition = SagaDefinition::new("place-order", 1)
//!     .step(
//!         Step::new("charge", |cx: StepContext, mut order: Order| async move {
//!             // payments.charge(cx.request(ChargeRequest { .. })).await?: the
//!             // request carries the step's idempotency key.
//!             order.charge_id = format!("ch-{}", cx.saga_id);
//!             Ok(order)
//!         })
//!         .compensate(|_cx: StepContext, _order: Order| async move {
//!             // payments.refund(cx.request(...)).await?
//!             Ok(())
//!         }),
//!     )
//!     .step(Step::new("confirm", |_cx: StepContext, _order: Order| async move {
//!         Err::<Order, _>(StepError::Final("out of stock".into()))
//!     }));
//!
//! let pool = sqlx::sqlite::SqlitePoolOptions::new()
//!     .max_connections(1)
//!     .connect("sqlite::memory:")
//!     .await?;
//! let orchestrator = Orchestrator::builder(SagaLog::new(pool).await?)
//!     .register(definition)
//!     .build();
//! // At start: finish what a crash left unfinished.
//! orchestrator.recover().await?;
//! let order = Order { order_id: "o-1".into(), ..Order::default() };
//! let end = orchestrator.run("place-order", "o-1", &order).await?;
//! assert_eq!(end, SagaStatus::Compensated); // charged, then refunded
//! # Ok(()) }
//! ```
//!
//! # Steps from the contract
//!
//! A method whose contract names its compensation
//! (`option (sinew.method) = { compensated_by: "Refund" }`, checked by
//! sinew-build) makes a whole step with [`Step::rpc`]: given the
//! generated client's [`client()`](sinew_client::Client) and the method's
//! entry in the method table (`PaymentsContract::CHARGE`), a function that
//! builds the request from the state and one that merges the response into
//! it. Its compensation is the method the contract names, built from the
//! action's request or response, which the log keeps until the saga ends:
//!
//! ```ignore
//! Step::rpc("charge", payments.client(), &PaymentsContract::CHARGE,
//!     |o: &Order| ChargeRequest { order_id: o.id.clone(), amount_cents: o.total },
//!     |o: Order, charge| Order { charge: Some(charge), ..o })
//! ```
//!
//! # Events
//!
//! A saga publishes domain events through the transactional outbox of
//! `sinew-events`, in the same transaction as its log's write:
//! [`Step::emits`] when a step completes, [`SagaDefinition::on_completed`]
//! and [`SagaDefinition::on_compensated`] when the saga ends. Give the
//! orchestrator the outbox ([`OrchestratorBuilder::outbox`], in the log's
//! database); a definition that publishes without one fails at
//! [`OrchestratorBuilder::build`].
//!
//! # The admin service
//!
//! [`admin`]: `sinew.saga.v1.SagaAdmin` lists sagas by status, gets one
//! with its history, and resumes or aborts ([`SagaStatus::Aborted`]) a
//! parked one. The scaffold hosts it on request:
//! `Server::new("orders").add_service(orchestrator.admin())`.
//!
//! # Durability and recovery
//!
//! The [`SagaLog`] (SQLite or PostgreSQL, through sqlx) keeps each saga's
//! state and position with two writes per step: one before the step's
//! call, one after. After a crash, [`Orchestrator::recover`] takes every
//! unfinished saga and goes on from where it stopped: a call that was in
//! flight is made again, with the same idempotency key (below), so the
//! participant applies it once. Each instance records its definition's
//! name and version; one whose version is no longer registered is parked
//! with a clear reason.
//!
//! Ended sagas stay in the log, with their histories, until
//! [`SagaLog::purge`] deletes those older than a retention; the service
//! calls it now and then.
//!
//! Several replicas share one log: each saga is held by the orchestrator
//! running it through a lease that every write renews, and every third of
//! its length while a call is under way ([`SagaLog::lease_ttl`], 60s),
//! and `recover` takes only sagas whose
//! lease ran out (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so replicas
//! take different ones; SQLite's writes take turns). Each claim holds the
//! saga under a holder of its own ([`SagaRecord::holder`]) and every write
//! checks it, so a run that stalled past its lease stops with
//! [`SagaError::Lost`] instead of racing the one that took over, even
//! when that is its own orchestrator's recovery.
//!
//! A saga is a span, and each attempt of a step's action or compensation a
//! child span whose context the step's calls carry. The meter
//! `sinew.saga` counts sagas started, completed, compensated and parked,
//! and times each step.
//!
//! # Idempotency keys
//!
//! A saga repeats calls: its coordinator retries a step whose answer it
//! did not get (a timeout, a dropped connection, its own crash and
//! recovery), and a participant must not charge a card twice for that.
//! So every step's call carries an **idempotency key** in its metadata
//! (header [`HEADER`], `sinew-idempotency-key`), made from the saga's id,
//! the step, and whether the call is the step's action or its
//! compensation ([`IdempotencyKey::for_step`]): deterministic, so a
//! repeat carries the key the first call carried.
//!
//! The participant hosts its service behind [`IdempotencyLayer`]
//! (`Server::add_service_with(service, IdempotencyLayer::new())`), which
//! checks the key (a malformed one is refused with `INVALID_ARGUMENT`)
//! and hands it to the handler in the request's extensions. The handler
//! applies the call through an [`IdempotencyStore`] on the database it
//! writes to ([SQLite](sqlx::Sqlite) or [PostgreSQL](sqlx::Postgres),
//! table `sinew_idempotency`), in **one transaction**:
//!
//! 1. it claims the key: inserts it, which locks it;
//! 2. if the key was recorded before, it answers the recorded response
//!    and writes nothing;
//! 3. otherwise it makes its writes, records the encoded response with
//!    the key, and commits.
//!
//! The writes, the key and the response commit together or not at all.
//! So:
//!
//! - a repeated call (same key, same method) has no second effect and
//!   gets the first call's response (decoded from the recorded bytes);
//! - a handler that fails rolls everything back and records nothing: a
//!   retry applies the call afresh (errors are not recorded, so a retry
//!   may succeed where the first attempt failed);
//! - two calls with one key at the same time serialize on the key: the
//!   second waits for the first's transaction, then gets its response
//!   if it committed, or applies the call itself if it rolled back
//!   (PostgreSQL waits on the key's row lock; SQLite on its write lock,
//!   up to the pool's `busy_timeout`). Both calls' deadlines bound the
//!   wait: the scaffold drops a handler past its deadline, and the
//!   transaction it holds with it, which rolls it back. A conflict the
//!   database reports instead (a serialization failure under
//!   `REPEATABLE READ` or `SERIALIZABLE`, a deadlock, SQLite still busy)
//!   answers `ABORTED`, for the caller to retry with the same key;
//! - a key used before for another method answers
//!   `FAILED_PRECONDITION`. The request's content is not compared: a key
//!   names one call, and the caller must not reuse it for another;
//! - a call without a key runs as any call, with nothing recorded.
//!
//! Keys are kept for [`IdempotencyConfig::retention`] (default 7 days),
//! and purged in the background: a saga must not repeat a call later
//! than that. Database failures answer `INTERNAL` (`UNAVAILABLE` when the
//! pool has no free connection) with the detail logged, never sent.
//!
//! Streaming calls are not covered: a recorded response is one message.
//!
//! # Example
//!
//! A participant's handler (here called directly through the layer,
//! as the server would call it):
//!
//! ```
//! use sinew_saga::{IdempotencyConfig, IdempotencyKey, IdempotencyLayer, IdempotencyStore, Phase};
//! use sqlx::Sqlite;
//! use tonic::{Request, Response, Status};
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! pub struct Charge {
//!     #[prost(string, tag = "1")]
//!     pub order_id: String,
//!     #[prost(int64, tag = "2")]
//!     pub cents: i64,
//! }
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! pub struct ChargeReply {
//!     #[prost(int64, tag = "1")]
//!     pub payment_id: i64,
//! }
//!
//! // The handler: `keys.once` begins a transaction and claims the key,
//! // runs the closure with the transaction (which it gives back with its
//! // reply), records the reply and commits; a repeat gets the recorded
//! // reply without running the closure.
//! async fn charge(
//!     keys: &IdempotencyStore<Sqlite>,
//!     request: Request<Charge>,
//! ) -> Result<Response<ChargeReply>, Status> {
//!     let charge = request.get_ref();
//!     let reply = keys
//!         .once(&request, |mut tx| async move {
//!             let done = sqlx::query("INSERT INTO payments (order_id, cents) VALUES (?1, ?2)")
//!                 .bind(&charge.order_id)
//!                 .bind(charge.cents)
//!                 .execute(&mut *tx)
//!                 .await?;
//!             let reply = ChargeReply { payment_id: done.last_insert_rowid() };
//!             Ok((tx, reply))
//!         })
//!         .await?;
//!     Ok(Response::new(reply))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = sqlx::sqlite::SqlitePoolOptions::new()
//!     .max_connections(1)
//!     .connect("sqlite::memory:")
//!     .await
//!     .unwrap();
//! sqlx::query("CREATE TABLE payments (id INTEGER PRIMARY KEY, order_id TEXT, cents INTEGER)")
//!     .execute(&pool)
//!     .await
//!     .unwrap();
//! let keys = IdempotencyStore::new(pool.clone(), IdempotencyConfig::default()).await.unwrap();
//!
//! // The coordinator's side: the step's key, on the call.
//! let key = IdempotencyKey::for_step("order-17", "charge", Phase::Action).unwrap();
//! let call = || {
//!     let mut request = Request::new(Charge { order_id: "order-17".into(), cents: 1250 });
//!     key.apply(&mut request);
//!     request
//! };
//!
//! // The participant's side: the layer, then the handler. On a server:
//! // `Server::add_service_with(PaymentsServer::new(payments), IdempotencyLayer::new())`.
//! use tower::{Layer, Service, ServiceExt};
//! let mut service = IdempotencyLayer::new().layer(tower::service_fn(
//!     |request: http::Request<Charge>| {
//!         let keys = keys.clone();
//!         async move {
//!             let reply = charge(&keys, Request::from_http(request)).await?;
//!             Ok::<_, Status>(http::Response::new(Some(reply.into_inner())))
//!         }
//!     },
//! ));
//! let to_http = |request: Request<Charge>| {
//!     let (metadata, extensions, message) = request.into_parts();
//!     let mut request = http::Request::new(message);
//!     *request.uri_mut() = "/pay.v1.Payments/Charge".parse().unwrap();
//!     *request.headers_mut() = metadata.into_headers();
//!     *request.extensions_mut() = extensions;
//!     request
//! };
//!
//! let first = service.ready().await.unwrap().call(to_http(call())).await.unwrap();
//! let again = service.ready().await.unwrap().call(to_http(call())).await.unwrap();
//! assert_eq!(first.body(), again.body(), "the same reply");
//! let (payments,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM payments")
//!     .fetch_one(&pool)
//!     .await
//!     .unwrap();
//! assert_eq!(payments, 1, "one effect");
//! # }
//! ```
//!
//! For a handler that manages its transaction itself,
//! [`IdempotencyStore::claim`] and [`IdempotencyStore::record`] are the
//! two halves of [`once`](IdempotencyStore::once):
//!
//! ```no_run
//! # use sinew_saga::{Claim, IdempotencyStore};
//! # use tonic::{Request, Response, Status};
//! # #[derive(Clone, PartialEq, prost::Message)] pub struct Refund {}
//! # #[derive(Clone, PartialEq, prost::Message)] pub struct RefundReply {}
//! # async fn refund(keys: &IdempotencyStore<sqlx::Postgres>, request: Request<Refund>) -> Result<Response<RefundReply>, Status> {
//! let mut tx = keys.pool().begin().await.map_err(|e| sinew_saga::database_status(&e))?;
//! let ticket = match keys.claim::<_, RefundReply>(&mut tx, &request).await? {
//!     Claim::Replay(reply) => return Ok(Response::new(reply)),
//!     Claim::Apply(ticket) => ticket,
//! };
//! // ... the handler's writes in tx ...
//! let reply = RefundReply {};
//! keys.record(&mut tx, ticket, &reply).await?;
//! tx.commit().await.map_err(|e| sinew_saga::database_status(&e))?;
//! Ok(Response::new(reply))
//! # }
//! ```

pub mod admin;
mod call;
pub mod definition;
mod key;
mod layer;
pub mod log;
mod metrics;
pub mod orchestrator;
mod store;

pub use definition::{SagaDefinition, Step, StepContext, StepError};
pub use key::{HEADER, IdempotencyKey, KeyError, MAX_LEN, Phase};
pub use layer::{CalledMethod, IdempotencyLayer, IdempotencyService, KeyedFuture};
pub use log::{HistoryEntry, SagaLog, SagaRecord, SagaStatus};
pub use orchestrator::{Orchestrator, OrchestratorBuilder, SagaError};
pub use store::{
    Claim, Error, HandlerError, IdempotencyConfig, IdempotencyDatabase, IdempotencyStore, Ticket,
    database_status,
};
