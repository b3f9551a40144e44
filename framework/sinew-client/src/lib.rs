//! Resilient clients: deadlines, retries, hedging, circuit breakers,
//! bulkheads and load balancing, each a tower layer usable on its own, and
//! assembled with per-method policy from the contract into [`Client`].
//!
//! A call goes through, outermost first:
//!
//! 1. policy: the method's [`CallPolicy`], resolved from
//!    the client's defaults, the contract, the service config and the
//!    caller's [`CallOptions`];
//! 2. [tracing](trace): the call's span and metrics, its context
//!    carried to the server, every layer below inside it (so retries,
//!    hedges, breaker refusals and bulkhead waits are events on it);
//! 3. [deadline]: the call's deadline, shrunk to what an
//!    incoming call has left;
//! 4. [bulkhead]: a bounded number of calls in flight,
//!    with a bounded, timed wait for a slot;
//! 5. [hedging](hedge) or [retries](retry), sharing one retry
//!    throttle per client ([`CallPolicy::hedged`] chooses);
//! 6. [fault injection](sinew_core::fault), when configured (so that injected
//!    failures are retried like real ones);
//! 7. [load balancing](balance) over the endpoints, each behind its
//!    own [circuit breaker](breaker), on its own
//!    [connection].
//!
//! Users reach this crate as `sinew::client`; sinew-build's generated
//! `FooClient::connect(config)` builds a [`Client`] for the contract's
//! method table.
//!
//! Generated clients compress their requests only when asked, for every
//! method ([`ClientConfig::send_compressed`]) or for the calls made on a
//! clone built with the generated `send_compressed`. They accept
//! responses compressed with gzip or zstd ([`ACCEPTED_COMPRESSION`]) when
//! they compress, or when told to ([`ClientConfig::accept_compressed`]);
//! otherwise servers answer them uncompressed. A response is decompressed
//! into at most the client's receive limit (tonic's 4 MiB by default);
//! past it the call fails with `RESOURCE_EXHAUSTED`.
//!
//! ```
//! use std::time::Duration;
//! use sinew_client::{CallOptions, ClientConfig};
//!
//! // Two endpoints, balanced; every resilience layer on by default.
//! let config = ClientConfig::endpoints(["http://10.0.0.7:50051", "http://10.0.0.8:50051"])
//!     .timeout(Duration::from_secs(2));
//! # drop(config);
//!
//! // Per call: a tighter deadline than the method's.
//! let mut request = tonic::Request::new(());
//! CallOptions::timeout(Duration::from_millis(50)).apply(&mut request);
//! assert!(request.extensions().get::<CallOptions>().is_some());
//! ```

pub mod balance;
pub mod breaker;
pub mod bulkhead;
mod client;
pub mod connection;
pub mod credentials;
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
pub use sinew_core::compression::{ACCEPTED as ACCEPTED_COMPRESSION, CompressionEncoding};
pub use sinew_core::deadline::set_grpc_timeout;
/// The tracing layer of outgoing calls, from sinew-telemetry.
pub use sinew_telemetry::trace::client as trace;

// Shared vocabulary, under the names the modules use.
use sinew_core::{BoxError, contract, fault, headers};
use sinew_telemetry as telemetry;
