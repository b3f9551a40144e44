//! The shared vocabulary of sinew's crates.
//!
//! What more than one of sinew's crates needs lives here, at the bottom of
//! the dependency graph, so that the client, the server scaffold and
//! telemetry never reach into each other:
//!
//! - [`contract`]: the method table sinew-build generates for each service,
//!   and the retry and hedging policies it carries;
//! - [`deadline`]: the deadline of the call in progress, the
//!   `grpc-timeout` header's codec, and the body that ends a stream at
//!   its deadline;
//! - [`headers`]: the gRPC header names, and the one reader of
//!   `grpc-status`;
//! - [`status`]: statuses with typed causes, and the one walker of error
//!   chains;
//! - [`body`]: the response body that holds a guard until its call ends;
//! - [`backoff`]: the one exponential backoff every retry and reconnect waits by;
//! - [`codes`]: the canonical names of the status codes;
//! - [`compression`]: the message encodings accepted by default, and a
//!   list of encodings as a setting;
//! - [`Rng`]: the seeded random source every jittered decision draws from;
//! - [`fault`]: fault injection, for clients and servers alike;
//! - [`event`]: the trait of messages a contract declares as events;
//! - [`tls`]: TLS and mTLS configurations, reloaded without a restart,
//!   and the identity of a verified peer.
//!
//! Users reach all of it through the `sinew` facade (`sinew::contract`,
//! `sinew::fault`, `sinew::server::Deadline`, ...); depend on this crate
//! directly only to build a crate of sinew's own.
//!
//! ```
//! use sinew_core::{headers, status};
//! use tonic::Code;
//!
//! let mut trailers = http::HeaderMap::new();
//! trailers.insert(headers::GRPC_STATUS, http::HeaderValue::from_static("14"));
//! assert_eq!(headers::grpc_status(&trailers), Some(Code::Unavailable));
//!
//! let status = status::status_with_cause(
//!     Code::Unavailable,
//!     "rehearsed outage",
//!     sinew_core::fault::InjectedFault,
//! );
//! assert!(status::cause::<sinew_core::fault::InjectedFault>(&status).is_some());
//! ```

pub mod backoff;
pub mod body;
pub mod codes;
pub mod compression;
pub mod contract;
pub mod deadline;
pub mod event;
pub mod fault;
pub mod headers;
mod rng;
pub mod status;
pub mod tls;

pub use rng::Rng;

/// The error type boxed errors are carried in.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
