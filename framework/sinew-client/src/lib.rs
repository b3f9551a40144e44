//! Resilient clients: deadlines, retries, hedging, circuit breakers,
//! bulkheads and load balancing, each a tower layer usable on its own, and
//! assembled with per-method policy from the contract.

pub mod balance;
pub mod breaker;
pub mod bulkhead;
mod client;
pub mod connection;
pub mod deadline;
pub mod hedge;
pub mod retry;
pub mod service_config;

pub(crate) mod error;
mod policy;

pub use client::{Client, ClientBody, ClientConfig, ClientError};
pub use connection::{ConnectFailed, NotSent};
pub use error::{
    BreakerOpen, BulkheadFull, DeadlineSpent, InjectedFault, NoEndpoint, cause, status_with_cause,
    to_status,
};
pub(crate) use policy::CallState;
pub use policy::{
    CallDeadline, CallOptions, CallPolicy, CodeSet, HedgingPolicy, MAX_ATTEMPTS_CAP, RetryPolicy,
};
pub use sinew_core::Rng;
pub use sinew_core::deadline::set_grpc_timeout;
/// The tracing layer of outgoing calls, from sinew-telemetry.
pub use sinew_telemetry::trace::client as trace;

// Shared vocabulary, under the names the modules use.
use sinew_core::{BoxError, contract, fault, headers};
use sinew_telemetry as telemetry;
