//! A span per incoming RPC, following the OpenTelemetry RPC semantic
//! conventions, and the `rpc.server.*` metrics.
//!
//! The span is named `package.Service/Method` and carries `rpc.system`,
//! `rpc.service`, `rpc.method` and, at the end, `rpc.grpc.status_code`;
//! its parent is the caller's context, read from the W3C `traceparent`,
//! `tracestate` and baggage headers; it carries the peer address; and the
//! handler runs inside it, so `tracing` events in the handler, and the
//! calls it makes with sinew's client, belong to it. Its status is an error
//! only for codes that say the server failed.
//!
//!
//! Until [`telemetry::init`](crate::init) has run, the layer
//! records nothing and costs one atomic load per call.

mod layer;
mod service;

/// Response future of the layer.
pub use crate::call::{RecordedBody, TracedFuture as ResponseFuture};
pub use layer::ServerTraceLayer;
pub use service::ServerTrace;
