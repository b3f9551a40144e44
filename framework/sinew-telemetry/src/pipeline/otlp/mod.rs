//! OTLP/gRPC span export without the intermediate protobuf structs.
//!
//! `opentelemetry-otlp` converts every span into `opentelemetry-proto`'s
//! generated structs (a `String` per attribute key and value, `Vec`s for
//! ids, events and links) and only then encodes them: about fifteen heap
//! allocations per span, on a path that runs for every call. Here spans
//! are encoded straight from the SDK's `SpanData` and sinew's call spans
//! into one buffer per batch, sized up front, so a span costs no
//! allocation of its own.
//!
//! - [`wire`]: the protobuf wire primitives (varints, keys,
//!   length-delimited and fixed-width fields) and their sizes;
//! - [`encode`]: the OTLP trace messages, measured then written; the
//!   resource, the same for every batch, is encoded once;
//! - [`codec`]: the gRPC codec that sends the encoded bytes and reads the
//!   response's partial success;
//! - [`retry`]: which failures are retried, and the delays between tries
//!   (sinew-core's one backoff);
//! - [`http`]: the HTTP client of `http/protobuf`, for both signals;
//! - [`tls`]: TLS to an `https://` collector, for the gRPC channels and
//!   the HTTP client alike;
//! - [`exporter`]: the span queue's exporter, which ties them together:
//!   tonic builds each request and reads each response on a channel of the
//!   exporter's own runtime, and the encoded batch goes out as the body
//!   as it is, with no second copy through tonic's encoder.
//!
//! The output is checked, in the tests beside the encoder, against what
//! `opentelemetry-proto`'s own transform makes of the same spans.

mod codec;
mod encode;
mod exporter;
mod http;
mod retry;
#[cfg(test)]
pub(crate) mod testing;
mod tls;
mod wire;

pub(crate) use encode::{span_attribute_fields, span_name_field};
pub(crate) use exporter::OtlpSpanExporter;
pub(crate) use http::OtlpHttpClient;
pub(crate) use tls::grpc_channel;
