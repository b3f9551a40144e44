//! The saga admin service (`sinew.saga.v1.SagaAdmin`, contract in
//! `proto/sinew/saga/v1/admin.proto`): lists a service's sagas by status,
//! gets one with its history, and resumes or aborts a parked one.
//!
//! The scaffold hosts it when the service asks, like any generated
//! service:
//!
//! ```no_run
//! # async fn run(orchestrator: sinew_saga::Orchestrator<sqlx::Sqlite>) -> Result<(), Box<dyn std::error::Error>> {
//! sinew_server::Server::new("orders")
//!     .add_service(orchestrator.admin())
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Host it only where operators reach it (a port of its own, or behind
//! authorization): it shows saga ids, states and errors, and resumes and
//! aborts sagas. Database errors reach the caller as `UNAVAILABLE` without
//! their detail, which is logged.
//!
//! `ResumeSaga` answers the saga as it restarts and runs it to its end in
//! the service, in a task of its own; `GetSaga` shows where it got to.

mod pb;

use std::time::{Duration, UNIX_EPOCH};

use tonic::{Request, Response, Status};

pub use pb::FILE_DESCRIPTOR_SET;
pub use pb::sinew::saga::v1 as proto;
pub use proto::saga_admin_client::SagaAdminClient as RawSagaAdminClient;
pub use proto::saga_admin_server::SagaAdminServer;
pub use proto::{SagaAdminClient, SagaAdminContract};

use crate::{
    HistoryEntry, Orchestrator, Phase, SagaError, SagaRecord, SagaStatus, log::LogDatabase,
};

/// What the generated code reaches the framework through: what a user's
/// generated code reaches as `::sinew`.
#[allow(
    clippy::single_component_path_imports,
    reason = "the generated code names these crates as paths under this module"
)]
pub(crate) mod codegen {
    pub(crate) use prost;
    pub(crate) use prost_types;
    pub(crate) use sinew_client as client;
    pub(crate) use sinew_core::contract;
    pub(crate) use sinew_server as server;
    pub(crate) use tonic;
    pub(crate) use tonic_prost;
}

/// Sagas a `ListSagas` page holds unless it asks for fewer.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The most sagas one `ListSagas` page holds.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The admin service over an orchestrator's log; see the
/// [module docs](self). Build it with [`Orchestrator::admin`].
#[derive(Debug)]
pub struct SagaAdminService<DB: LogDatabase> {
    orchestrator: Orchestrator<DB>,
}

impl<DB: LogDatabase> Orchestrator<DB> {
    /// The admin service over this orchestrator's log, ready for
    /// `Server::add_service`. Resumes run on this orchestrator, with its
    /// registered definitions.
    pub fn admin(&self) -> SagaAdminServer<SagaAdminService<DB>> {
        SagaAdminServer::new(SagaAdminService {
            orchestrator: self.clone(),
        })
    }
}

#[tonic::async_trait]
impl<DB: LogDatabase> proto::saga_admin_server::SagaAdmin for SagaAdminService<DB> {
    async fn list_sagas(
        &self,
        request: Request<proto::ListSagasRequest>,
    ) -> Result<Response<proto::ListSagasResponse>, Status> {
        let request = request.into_inner();
        let status = match proto::SagaStatus::try_from(request.status) {
            Ok(proto::SagaStatus::Unspecified) => None,
            Ok(status) => Some(from_proto(status)),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "status: {} is not a SagaStatus",
                    request.status
                )));
            }
        };
        let after = parse_token(&request.page_token)?;
        let size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let page = self
            .orchestrator
            .log()
            .page(
                status,
                after.as_ref().map(|(at, id)| (*at, id.as_str())),
                size,
            )
            .await
            .map_err(|e| internal(&SagaError::Log(e)))?;
        let next_page_token = match page.last() {
            Some(last) if page.len() == size as usize => {
                format!("{}:{}", last.created_at_ms, last.id)
            }
            _ => String::new(),
        };
        Ok(Response::new(proto::ListSagasResponse {
            sagas: page.into_iter().map(|r| to_proto(r, Vec::new())).collect(),
            next_page_token,
        }))
    }

    async fn get_saga(
        &self,
        request: Request<proto::GetSagaRequest>,
    ) -> Result<Response<proto::Saga>, Status> {
        let id = required_id(&request.get_ref().id)?;
        let log = self.orchestrator.log();
        let record = log
            .get(id)
            .await
            .map_err(|e| internal(&SagaError::Log(e)))?
            .ok_or_else(|| Status::not_found(format!("no saga {id:?}")))?;
        let history = log
            .history(id)
            .await
            .map_err(|e| internal(&SagaError::Log(e)))?;
        Ok(Response::new(to_proto(record, history)))
    }

    async fn resume_saga(
        &self,
        request: Request<proto::ResumeSagaRequest>,
    ) -> Result<Response<proto::Saga>, Status> {
        let id = required_id(&request.get_ref().id)?;
        let record = self
            .orchestrator
            .resume_in_background(id)
            .await
            .map_err(|e| to_status(&e))?;
        tracing::warn!(saga = %id, "saga resumed by an operator");
        Ok(Response::new(to_proto(record, Vec::new())))
    }

    async fn abort_saga(
        &self,
        request: Request<proto::AbortSagaRequest>,
    ) -> Result<Response<proto::Saga>, Status> {
        let request = request.into_inner();
        let id = required_id(&request.id)?;
        let reason = if request.reason.is_empty() {
            "aborted by an operator"
        } else {
            request.reason.as_str()
        };
        let record = self
            .orchestrator
            .abort(id, reason)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(to_proto(record, Vec::new())))
    }
}

fn required_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        Err(Status::invalid_argument("id: a saga id is required"))
    } else {
        Ok(id)
    }
}

/// `<created_at_ms>:<id>`, as `next_page_token` gives it.
fn parse_token(token: &str) -> Result<Option<(i64, String)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .split_once(':')
        .and_then(|(at, id)| Some((at.parse().ok()?, id.to_owned())))
        .map(Some)
        .ok_or_else(|| Status::invalid_argument("page_token: not a token this service gave"))
}

/// A saga error as the caller sees it: the log's own errors without their
/// detail (logged here instead).
fn to_status(error: &SagaError) -> Status {
    match error {
        SagaError::NotFound(id) => Status::not_found(format!("no saga {id:?}")),
        SagaError::NotParked { id, status } => {
            Status::failed_precondition(format!("saga {id:?} is {}, not parked", status.as_str()))
        }
        SagaError::Lost(id) => {
            Status::aborted(format!("saga {id:?} is held by another orchestrator now"))
        }
        other => internal(other),
    }
}

fn internal(error: &SagaError) -> Status {
    tracing::error!(%error, "saga admin call failed");
    match error {
        SagaError::Log(_) => Status::unavailable("the saga log is unavailable"),
        _ => Status::internal("the saga admin call failed"),
    }
}

fn from_proto(status: proto::SagaStatus) -> SagaStatus {
    match status {
        proto::SagaStatus::Unspecified | proto::SagaStatus::Running => SagaStatus::Running,
        proto::SagaStatus::Compensating => SagaStatus::Compensating,
        proto::SagaStatus::Completed => SagaStatus::Completed,
        proto::SagaStatus::Compensated => SagaStatus::Compensated,
        proto::SagaStatus::NeedsAttention => SagaStatus::NeedsAttention,
        proto::SagaStatus::Aborted => SagaStatus::Aborted,
    }
}

/// The wire form of a status.
pub fn status_to_proto(status: SagaStatus) -> proto::SagaStatus {
    match status {
        SagaStatus::Running => proto::SagaStatus::Running,
        SagaStatus::Compensating => proto::SagaStatus::Compensating,
        SagaStatus::Completed => proto::SagaStatus::Completed,
        SagaStatus::Compensated => proto::SagaStatus::Compensated,
        SagaStatus::NeedsAttention => proto::SagaStatus::NeedsAttention,
        SagaStatus::Aborted => proto::SagaStatus::Aborted,
    }
}

fn timestamp(ms: i64) -> Option<prost_types::Timestamp> {
    let ms = u64::try_from(ms).ok()?;
    Some((UNIX_EPOCH + Duration::from_millis(ms)).into())
}

fn to_proto(record: SagaRecord, history: Vec<HistoryEntry>) -> proto::Saga {
    proto::Saga {
        status: status_to_proto(record.status).into(),
        id: record.id,
        name: record.name,
        version: record.version,
        step: record.step,
        in_flight: record.in_flight,
        error: record.error.unwrap_or_default(),
        created_at: timestamp(record.created_at_ms),
        updated_at: timestamp(record.updated_at_ms),
        state: record.state,
        history: history
            .into_iter()
            .map(|entry| proto::SagaCall {
                step: entry.step,
                phase: match entry.phase {
                    Phase::Action => "action",
                    Phase::Compensation => "compensation",
                }
                .to_owned(),
                outcome: entry.outcome,
                error: entry.error.unwrap_or_default(),
                at: timestamp(entry.at_ms),
            })
            .collect(),
    }
}
