//! A circuit breaker: stop calling a server that keeps failing, and probe
//! it now and then until it answers again.
//!
//! # The cycle
//!
//! 1. **Closed.** Calls pass. The breaker counts the outcomes that say the
//!    server is unhealthy (see below). It trips when
//!    [`consecutive_failures`](BreakerConfig::consecutive_failures) fail in
//!    a row, or when at least [`min_requests`](BreakerConfig::min_requests)
//!    calls ended in the rolling [`window`](BreakerConfig::window) and the
//!    share of failures among them reached
//!    [`failure_rate`](BreakerConfig::failure_rate).
//! 2. **Open.** Every call fails at once with `UNAVAILABLE` and a
//!    [`BreakerOpen`](crate::BreakerOpen) cause whose `retry_after`
//!    says when a probe may go; the inner service is not called. This lasts
//!    [`recovery_timeout`](BreakerConfig::recovery_timeout).
//! 3. **Half-open.** Up to
//!    [`half_open_probes`](BreakerConfig::half_open_probes) calls pass at
//!    once; the rest fail fast as when open (with `retry_after: None`, as
//!    the wait depends on the probes). [`close_after`](BreakerConfig::close_after)
//!    probe successes in a row close the breaker with fresh counts; one
//!    probe failure opens it again for a whole new recovery timeout.
//!
//! # What counts
//!
//! Only outcomes that say the server is unhealthy are failures:
//! `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNKNOWN`,
//! `RESOURCE_EXHAUSTED`, and transport errors. Any other code, such as
//! `INVALID_ARGUMENT` or `NOT_FOUND`, is a success: the server was well
//! enough to answer. An error a sinew layer below produced without sending
//! the call ([`BulkheadFull`](crate::BulkheadFull),
//! [`DeadlineSpent`](crate::DeadlineSpent), a lower
//! [`BreakerOpen`](crate::BreakerOpen)) counts as nothing: it says
//! nothing about the server.
//!
//! The outcome is recorded when it is known: at the response headers for a
//! trailers-only response (how servers answer most errors) or a non-200
//! HTTP response, otherwise when the response body yields its trailers. A
//! body that ends without a `grpc-status` is a failure (tonic reports it as
//! `UNKNOWN`). A call whose future or body is dropped once its deadline
//! has passed (the deadline layer above gave up on a server that did not
//! answer in time) is a failure, as `DEADLINE_EXCEEDED` is: that is how a
//! silent server, one that stopped answering without closing its
//! connection, trips its breaker. A call dropped earlier (the caller gave
//! up, or another hedge won) counts as nothing, and gives back its probe
//! slot if it held one.
//!
//! # Reconnects
//!
//! [`BreakerHandle::reconnected`] turns an open breaker half-open at once.
//! The client's connection calls it when a connection is made again after
//! failing: a server that restarted gets its probes as soon as it accepts
//! connections, not when the recovery timeout runs out.
//!
//! # Telemetry
//!
//! Every change of state, and every call refused, is logged (an opening
//! at `warn`, a refusal at `debug`), added to the span of the call under
//! way, and counted
//! (`sinew.client.breaker.transitions`, `sinew.client.breaker.refusals`);
//! each breaker is counted in its current state in
//! `sinew.client.breaker.state` (see
//! [`telemetry::metrics`](sinew_telemetry::metrics)). A breaker made with
//! [`BreakerHandle::for_endpoint`], as the client makes each endpoint's,
//! names its endpoint in all of them.
//!
//! # Sharing
//!
//! The state lives behind a [`BreakerHandle`]: every clone of a [`Breaker`]
//! shares it, and a load balancer can hold the handle to eject an endpoint
//! whose breaker is open. [`BreakerLayer::new`] gives each service it wraps
//! its own breaker; [`BreakerLayer::shared`] makes them share one.
//!
//! ```
//! use sinew_client::breaker::{BreakerConfig, BreakerLayer};
//! use std::time::Duration;
//!
//! let layer = BreakerLayer::new(BreakerConfig {
//!     consecutive_failures: 3,
//!     recovery_timeout: Duration::from_secs(10),
//!     ..BreakerConfig::default()
//! });
//! # let _ = layer;
//! ```

mod body;
mod classify;
mod config;
pub mod future;
mod handle;
mod layer;
mod service;
mod state;

#[cfg(test)]
mod tests;

pub use body::BreakerBody;
pub use config::BreakerConfig;
pub use handle::{BreakerHandle, Ticket};
pub use layer::BreakerLayer;
pub use service::Breaker;
pub use state::State;
