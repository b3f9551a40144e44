//! Fault injection: delay, fail or abort chosen calls on purpose, to test
//! how a system behaves when its dependencies misbehave.
//!
//! [`Fault`] wraps any gRPC service, on a client (around the channel) or
//! on a server (around the routes). For each call it walks the rules of its
//! [`FaultConfig`] in order; every rule whose [`Target`] matches the call's
//! path draws once from the seeded random source, and the first draw that
//! falls under the rule's probability applies that rule's [`Action`]:
//!
//! - [`Action::Latency`]: wait, then call the inner service as usual;
//! - [`Action::Error`]: answer at once with a trailers-only gRPC response
//!   carrying the code and the message `injected fault`; the inner service
//!   is not called;
//! - [`Action::Abort`]: fail with no gRPC status at all, an `Err` whose
//!   cause is [`InjectedFault`]. On a server,
//!   hyper resets the stream; on a client, the call fails as if the
//!   transport had.
//!
//! A call no rule picks goes to the inner service untouched. With no rules
//! at all, the layer does one check per call and nothing more.
//!
//! With the same seed and the same sequence of calls, the same calls are
//! picked. Without a seed the source is seeded from the clock.
//!
//! # The text form
//!
//! [`FaultConfig::parse`] reads rules from one line, so they fit in an
//! environment variable:
//!
//! ```text
//! /echo.v1.Echo/Get error=UNAVAILABLE p=0.3; /echo.v1.Echo/ latency=100ms p=0.5; * abort p=0.01; seed=42
//! ```
//!
//! The grammar (whitespace separates tokens; `;` separates entries):
//!
//! ```text
//! spec     = entry *( ";" entry )
//! entry    = rule | seed | ""                ; empty entries are skipped
//! rule     = target 1*( token )              ; exactly one action, p at most once, any order
//! target   = "*"                             ; every call
//!          | "/" service "/"                 ; every method of one service
//!          | "/" service "/" method          ; one method
//! token    = "latency=" duration             ; humantime: 100ms, 2s, 1m30s, 250us
//!          | "error=" code                   ; canonical name, any case (UNAVAILABLE), or 1..=16
//!          | "abort"
//!          | "p=" probability                ; decimal in [0, 1]; default 1
//! seed     = "seed=" u64                     ; at most once, anywhere in the spec
//! ```
//!
//! Entries are numbered from 1 in the order written, empty ones and the
//! seed included, and a [`FaultParseError`] names the entry's number and
//! the token at fault: `fault rule 2: "error=UNAVAILBLE": unknown status
//! code ...`. `error=OK` is refused: it is not a fault.
//!
//! [`FaultConfig`] displays in this form, so a parsed spec can be logged
//! and parsed back to the same config.
//!
//! # Example
//!
//! ```
//! use sinew_core::fault::{FaultConfig, FaultLayer};
//!
//! // In a deployment: FaultConfig::parse(&std::env::var("SINEW_FAULTS")?)
//! let config = FaultConfig::parse("/echo.v1.Echo/Get error=UNAVAILABLE p=0.3; seed=42")?;
//! assert_eq!(config.to_string(), "/echo.v1.Echo/Get error=UNAVAILABLE p=0.3; seed=42");
//!
//! // Around a client's channel (or a server's routes):
//! // let channel = tower::ServiceBuilder::new().layer(layer).service(channel);
//! let layer = FaultLayer::new(config);
//! # let _ = layer;
//! # Ok::<(), sinew_core::fault::FaultParseError>(())
//! ```

mod config;
mod error;
pub mod future;
mod layer;
mod service;

#[cfg(test)]
mod tests;

pub use config::{Action, FaultConfig, FaultRule, Target};
pub use error::{FaultParseError, InjectedFault};
pub use future::ResponseFuture;
pub use layer::FaultLayer;
pub use service::Fault;
