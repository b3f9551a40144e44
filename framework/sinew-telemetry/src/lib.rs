//! Traces, metrics and logs over OpenTelemetry, set up in one call.
//!
//! ```no_run
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> { Ok(()) }
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let telemetry = sinew_telemetry::init("greeter")?;
//!     serve().await?; // e.g. sinew::Server::new("greeter")...run().await
//!     telemetry.shutdown().await?;
//!     Ok(())
//! }
//! ```
//!
//! [`init`] installs, for the whole process: the OpenTelemetry tracer and
//! meter providers, the W3C trace-context and baggage propagator, and a
//! `tracing` subscriber that prints readable logs to stderr and turns
//! `tracing` spans into OpenTelemetry spans. The scaffold and the clients
//! then trace and measure every call with no code from you: incoming calls
//! continue the caller's trace, outgoing calls carry it on, and the
//! `tracing` events of a handler land in its call's span and, on the
//! console, end with its `trace_id=` and `span_id=`. With
//! `OTEL_SDK_DISABLED=true` it installs the console logs and the propagator
//! only (see [below](#switching-telemetry-off)).
//!
//! # Pointing sinew at a collector
//!
//! Set the standard OpenTelemetry variables; any OTLP receiver will do: an
//! OpenTelemetry Collector, Jaeger (1.35 and later), Grafana Tempo or
//! Alloy, or a vendor's agent or hosted endpoint.
//!
//! ```text
//! # Jaeger all-in-one, UI on http://localhost:16686:
//! docker run --rm -p 16686:16686 -p 4317:4317 jaegertracing/all-in-one
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 cargo run --example greeter
//! ```
//!
//! sinew speaks OTLP over gRPC (port 4317), or over HTTP with protobuf
//! bodies (`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`, port 4318; the
//! shared endpoint is then a base that `/v1/traces` and `/v1/metrics` are
//! added to); `http/json` is refused at start, with an error naming the
//! variable.
//!
//! # TLS
//!
//! An `https://` endpoint is reached over TLS, on the same stack as
//! sinew's servers and clients (rustls with ring; ALPN `h2` for gRPC,
//! `http/1.1` for `http/protobuf`), verifying the collector's certificate
//! against the endpoint's host:
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=https://collector.internal:4317
//! OTEL_EXPORTER_OTLP_CERTIFICATE=/etc/otel/ca.pem            # else the system's roots
//! OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE=/etc/otel/client.pem # for mTLS, with
//! OTEL_EXPORTER_OTLP_CLIENT_KEY=/etc/otel/client.key         # its key
//! ```
//!
//! The files are read when [`init`] runs: a missing or unreadable one, or
//! a key that is not its certificate's, fails the start with an error
//! naming the variable (never quoting a key). The `_TRACES_` and
//! `_METRICS_` forms win over the shared variables for their signal, file
//! by file; [`TelemetryConfig::certificate`] and
//! [`TelemetryConfig::client_certificate`] (and their per-signal forms)
//! set them in code. The files are read once, not reloaded. An `http://`
//! endpoint reads none of them and is sent in plain text. A collector
//! whose certificate cannot be verified fails each export (the spans
//! counted as failed, the failure logged once, saying why), not the
//! service.
//!
//! # Variables
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `OTEL_SDK_DISABLED` | `true` (any case) switches telemetry off, console logs aside; wins over code. Any other value leaves it on (one that is not `false` is warned about) | on |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | where to send traces and metrics: `http://` in plain text, `https://` over TLS | none: no export |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `_METRICS_ENDPOINT` | the same, for one signal; wins over the above | |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT` (and `_TRACES_`, `_METRICS_`) | one export's bound, retries included, in ms | 10000 |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` (and `_TRACES_`, `_METRICS_`) | `grpc` or `http/protobuf` | `grpc` |
//! | `OTEL_EXPORTER_OTLP_HEADERS` | `key=value,key2=value2`, values percent-encoded, sent as gRPC metadata with every export (credentials, tenant ids); keys are lowercased | none |
//! | `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, `_METRICS_HEADERS` | the same for one signal; when set, replaces the above whole for it | |
//! | `OTEL_EXPORTER_OTLP_COMPRESSION` (and `_TRACES_`, `_METRICS_`) | `gzip` or `none`: each export's message gzip-compressed or not | none |
//! | `OTEL_EXPORTER_OTLP_CERTIFICATE` (and `_TRACES_`, `_METRICS_`) | the PEM bundle of the authorities trusted for an `https://` endpoint | the system's roots |
//! | `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CLIENT_KEY` (and `_TRACES_`, `_METRICS_`) | the PEM certificate chain and private key presented to an `https://` endpoint (mTLS): both or neither | none |
//! | `OTEL_SERVICE_NAME` | the service name; wins over the name in code | the name passed to [`init`] |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,key2=value2`, values percent-encoded, on every span and metric | none |
//! | `OTEL_TRACES_SAMPLER` | `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off`, `parentbased_traceidratio` | `parentbased_always_on` |
//! | `OTEL_TRACES_SAMPLER_ARG` | the ratio for the ratio samplers, in `[0, 1]` | 1.0 |
//! | `OTEL_METRIC_EXPORT_INTERVAL` | between metric exports, in ms | 60000 |
//! | `OTEL_BSP_MAX_QUEUE_SIZE` | finished spans waiting for export; beyond, dropped and counted | 2048 |
//! | `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` | spans per export | 512 |
//! | `OTEL_BSP_SCHEDULE_DELAY` | between span exports, in ms | 5000 |
//! | `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, `OTEL_SPAN_EVENT_COUNT_LIMIT`, `OTEL_SPAN_LINK_COUNT_LIMIT` | attributes, events and links one span keeps; beyond, dropped and counted in the span | 128 each |
//! | `OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT`, `OTEL_LINK_ATTRIBUTE_COUNT_LIMIT` | attributes one event or link keeps | 128 each |
//! | `OTEL_ATTRIBUTE_COUNT_LIMIT` | the attribute limits above that are not set themselves | 128 |
//! | `RUST_LOG` | which events the console shows | `info` |
//!
//! An invalid value fails [`init`] with a [`TelemetryError`] naming the
//! variable (never quoting a header's value or a key); an empty one counts
//! as unset. Code can override every value but the service name and
//! `OTEL_SDK_DISABLED=true` through [`TelemetryConfig`] and [`init_with`].
//!
//! Spans are exported by sinew's own OTLP exporter, metrics, far fewer,
//! by `opentelemetry-otlp`; both take their settings from the
//! [`TelemetryConfig`], which reads the variables the two signals share
//! (headers, compression, timeouts, protocol, TLS files) the same way for
//! each and checks them once.
//!
//! # Without an endpoint
//!
//! Nothing is exported and nothing is sent anywhere, but everything else
//! works: calls get trace and span ids, which the console lines carry and
//! outgoing calls propagate, so a service without a collector still joins
//! its callers' traces for the services that have one.
//!
//! # Switching telemetry off
//!
//! `OTEL_SDK_DISABLED=true`, or [`TelemetryConfig::disabled`] in code,
//! turns everything off but the console: [`init`] installs the console
//! logs (with no `trace_id=` or `span_id=`) and the W3C propagator, and
//! no tracer or meter provider, no exporter and no thread. The scaffold's
//! and the clients' layers stay off, costing one atomic load per call, so
//! calls record no spans or metrics and do not pass their callers' trace
//! context on: the traces of the services they call start there.
//! [`flush`] and [`Telemetry::shutdown`] return at once, and the span
//! counters stay at zero. An info line says telemetry is disabled, and by
//! what.
//!
//! It is the switch to reach for when telemetry itself is the trouble, so
//! it asks little: no tokio runtime, and no valid `OTEL_*` settings. The
//! first invalid one is logged as a warning instead of failing the start
//! (it fails the start again once telemetry is switched back on); only
//! `RUST_LOG`, which the console still uses, must be valid. [`init`] still
//! succeeds once per process and still refuses to replace another
//! `tracing` subscriber.
//!
//! # Off the request path
//!
//! Exporting never slows or fails a call. Finished spans go into a bounded
//! queue that a background thread exports in batches; when the collector
//! is slow or gone and the queue is full, spans are dropped and counted
//! ([`Telemetry::dropped_spans`]). Metrics are aggregated in memory and
//! exported by a background thread on their interval. A failing export is
//! logged once, when it starts failing, and once when it recovers.
//!
//! # The drain
//!
//! On shutdown the server drains its calls and then calls [`flush`], which
//! exports what the last calls recorded, waiting at most [`FLUSH_TIMEOUT`].
//! [`Telemetry::shutdown`] at the end of `main` exports what is left and
//! stops the exporters, waiting at most [`SHUTDOWN_TIMEOUT`]; dropping the
//! guard does the same, blocking. Neither hangs on a dead collector: past
//! the bound, the rest is abandoned and an error says so.

pub(crate) mod call;
mod config;
mod error;
pub mod events;
mod export;
mod install;
mod logs;
mod method;
pub mod metrics;
mod pipeline;
pub mod propagation;
pub mod trace;

pub(crate) use sinew_core::{BoxError, headers};

pub use config::{Compression, Protocol, TelemetryConfig, TraceSampler, VARIABLES};
pub use error::TelemetryError;
pub use install::{FLUSH_TIMEOUT, SHUTDOWN_TIMEOUT, Telemetry, flush, init, init_with};
