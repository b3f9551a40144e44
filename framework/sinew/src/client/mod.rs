//! Resilient clients: deadlines, retries, hedging, circuit breakers,
//! bulkheads and load balancing, each a tower layer usable on its own, and
//! assembled with per-method policy from the contract.

pub mod balance;
pub mod breaker;
pub mod bulkhead;
mod channel;
pub mod connection;
pub mod deadline;
pub mod hedge;
pub mod retry;
pub mod service_config;
pub mod trace;

pub(crate) mod error;
mod policy;
mod rng;

pub use channel::{Client, ClientBody, ClientConfig, ClientError};
pub use connection::{ConnectFailed, NotSent};
pub use error::{
    BreakerOpen, BulkheadFull, DeadlineSpent, InjectedFault, NoEndpoint, cause, status_with_cause,
    to_status,
};
pub(crate) use policy::CallState;
pub use policy::{
    CallDeadline, CallOptions, CallPolicy, CodeSet, HedgingPolicy, MAX_ATTEMPTS_CAP, RetryPolicy,
    set_grpc_timeout,
};
pub use rng::Rng;
