//! sinew's own trace pipeline, fenced off from the rest of telemetry.
//!
//! For speed, calls do not record the SDK's spans through its tracer and
//! batch processor, nor export them through `opentelemetry-otlp`: that
//! path costs about fifteen allocations a span. Here instead:
//!
//! - `span`: [`CallSpan`], sinew's span for one call, which implements the
//!   OpenTelemetry `Span` trait (events, status, attributes, links, with
//!   the SDK's span limits) over [`CallSpanData`]; a method's name and RPC
//!   attributes come encoded once, as [`SpanParts`];
//! - `queue`: [`SpanQueue`], one bounded queue and one thread for sinew's
//!   spans and the SDK's (through [`QueueProcessor`], for the spans of the
//!   `tracing` bridge), with exact drop counts and bounded flushes;
//! - `otlp`: the OTLP/gRPC encoder that writes spans straight into one
//!   buffer per batch, and [`OtlpSpanExporter`], which sends it.
//!
//! # The interface
//!
//! Everything else in telemetry reaches the pipeline through what this
//! module re-exports, and nothing more:
//!
//! - `call` starts a [`CallSpan`] with [`SpanParts`] and
//!   [`StartAttributes`] and ends it into a [`SpanQueue`];
//! - `export` builds the queue from [`QueueSettings`] around an
//!   [`OtlpSpanExporter`], hands the SDK a [`QueueProcessor`], and reads
//!   its [`QueueCounters`] and [`QueueError`]s; the metric exporter sends
//!   through an [`OtlpHttpClient`], or over TLS a [`grpc_channel`];
//! - `method` encodes each method's [`SpanParts`] once.
//!
//! # Tested against the library it replaces
//!
//! The encoder's output is decoded with `opentelemetry-proto`'s generated
//! messages and compared field by field with what its own transform makes
//! of the equivalent SDK span; the span's limits and status rules are
//! checked against the SDK's. Metrics, far fewer, and anything the fast
//! path does not cover go through the stock `opentelemetry-otlp`.

mod otlp;
mod queue;
mod span;

pub(crate) use otlp::{OtlpHttpClient, OtlpSpanExporter, grpc_channel};
pub(crate) use queue::{QueueCounters, QueueError, QueueProcessor, QueueSettings, SpanQueue};
pub(crate) use span::{
    CallSpan, CallSpanData, Parts, SCOPE, STATUS_CODE, SpanParts, StartAttributes,
};

/// What the rest of telemetry's tests need of the pipeline's insides.
#[cfg(test)]
pub(crate) mod testing {
    pub(crate) use super::otlp::testing::{Collector, HttpCollector, server_tls};
    pub(crate) use super::queue::{Finished, tests::recording_queue};
    pub(crate) use super::span::tests::name;
}
