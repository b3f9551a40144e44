//! A span per outgoing RPC, following the OpenTelemetry RPC semantic
//! conventions, and the `rpc.client.*` metrics.
//!
//! The span is named `package.Service/Method` and carries `rpc.system`,
//! `rpc.service`, `rpc.method`, `server.address` (the host of the
//! client's target; left out when its endpoints are on several hosts)
//! and, at the end, `rpc.grpc.status_code`;
//! its parent is the current span (so a call made in a handler is a child
//! of the handler's incoming call), and its context is written into the
//! request's `traceparent`, `tracestate` (when not empty) and baggage
//! (when there is some) headers. Every layer below runs inside it, so
//! retries (with the attempt number, the backoff, and whether it was
//! transparent or the server's pushback), hedges, breaker refusals and
//! bulkhead waits show up in it as events. Its status is an error for any
//! code but OK.
//!
//! Until [`telemetry::init`](crate::init) has run, the layer
//! records nothing and costs one atomic load per call.

mod layer;
mod service;

/// Response future of the layer.
pub use crate::call::{RecordedBody, TracedFuture as ResponseFuture};
pub use layer::ClientTraceLayer;
pub use service::ClientTrace;
