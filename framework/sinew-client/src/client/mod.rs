//! The resilient client: every layer, assembled with per-method policy
//! from the contract.
//!
//! A call goes through, outermost first:
//!
//! 1. policy: the method's [`CallPolicy`](super::CallPolicy), resolved from
//!    the client's defaults, the contract, the service config and the
//!    caller's [`CallOptions`](super::CallOptions);
//! 2. [deadline](super::deadline): the call's deadline, shrunk to what an
//!    incoming call has left;
//! 3. [bulkhead](super::bulkhead): a bounded number of calls in flight,
//!    with a bounded, timed wait for a slot;
//! 4. [hedging](super::hedge) or [retries](super::retry), sharing one retry
//!    throttle per client;
//! 5. fault injection, when configured (so that injected failures are
//!    retried like real ones);
//! 6. [load balancing](super::balance) over the endpoints, each behind its
//!    own [circuit breaker](super::breaker).

mod config;
mod resolve;
mod service;

pub use config::{ClientConfig, ClientError};
pub use service::{Client, ClientBody};
