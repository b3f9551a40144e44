//! The export pipeline: tracer and meter providers built from a
//! [`TelemetryConfig`], and their bounded flush and shutdown.
//!
//! Nothing here installs globals, so tests can build as many pipelines as
//! they like.
//!
//! Everything that exports runs on threads of its own, off the request
//! path:
//!
//! - spans, sinew's call spans and the SDK's alike, go through sinew's own
//!   trace pipeline (see [`pipeline`](super::pipeline)): a bounded queue
//!   with a thread of its own (`sinew-spans`), so ending a span never
//!   blocks or fails, whose thread encodes each batch with sinew's OTLP
//!   encoder, which allocates nothing per span, and sends it from a
//!   runtime thread of the exporter's own (`sinew-otlp`), so a busy
//!   application runtime does not hold exports up;
//! - metrics are aggregated in memory as they are recorded, and the
//!   periodic reader's thread collects and exports them on its interval,
//!   with `opentelemetry-otlp`'s exporter.
//!
//! Every setting comes from the [`TelemetryConfig`], which reads the
//! variables both signals share (headers, compression, timeouts) the same
//! way for each. The metric exporter reads the header variables again by
//! itself, to the same values.
//!
//! An `https://` endpoint is reached over TLS, on sinew's TLS stack: the
//! files its `OTEL_EXPORTER_OTLP_*CERTIFICATE` and `*CLIENT_KEY`
//! variables name are read when the pipeline is built, so a missing file
//! or a key that is not its certificate's fails the start, naming the
//! variable; both signals' exporters then handshake with them (ALPN `h2`
//! for gRPC, `http/1.1` for `http/protobuf`). An `http://` endpoint reads
//! none of them, and connects as it always did.
//!
//! An export that cannot reach the collector fails after the export
//! timeout (retries included); the data is lost, counted for spans, and a
//! warning is logged once per outage.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    metrics::{
        PeriodicReader, SdkMeterProvider, Temporality, data::ResourceMetrics,
        exporter::PushMetricExporter,
    },
    resource::TelemetryResourceDetector,
    trace::{SdkTracer, SdkTracerProvider},
};
use sinew_core::{status::DisplayChain, tls::ClientTls};
use tonic::{
    metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap},
    transport::Endpoint,
};

use super::{
    Compression, Protocol, TelemetryConfig, TelemetryError,
    config::is_https,
    pipeline::{
        OtlpHttpClient, OtlpSpanExporter, QueueCounters, QueueError, QueueProcessor, QueueSettings,
        SCOPE, SpanQueue, grpc_channel,
    },
};

/// A tracer provider and a meter provider, built but not installed.
/// Clones share the providers.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    pub(crate) tracer_provider: SdkTracerProvider,
    pub(crate) meter_provider: SdkMeterProvider,
    pub(crate) counters: Arc<QueueCounters>,
    /// Where finished spans go; `None` when they are not exported.
    pub(crate) queue: Option<Arc<SpanQueue>>,
    exports_metrics: bool,
}

/// Wraps a metric exporter to log failures once per outage: with the SDK's
/// internal logs off, they would otherwise go unnoticed.
struct ReportingMetricExporter<E> {
    inner: E,
    failing: AtomicBool,
}

// === impl Pipeline ===

impl Pipeline {
    /// Builds the providers `config` describes. Exporting metrics over gRPC
    /// needs a tokio runtime (their channel's connection runs on it); spans,
    /// and metrics over HTTP, are exported from runtime threads of their
    /// own. Without an endpoint, none is needed.
    pub(crate) fn build(config: &TelemetryConfig) -> Result<Self, TelemetryError> {
        config.validate()?;
        let exports_metrics = config.metrics_endpoint.is_some();
        // Metrics over HTTP go through a client with a runtime thread of its
        // own; over gRPC, through a channel on the caller's runtime.
        let needs_runtime = matches!(config.metrics_target(), Some((_, Protocol::Grpc)));
        if needs_runtime && tokio::runtime::Handle::try_current().is_err() {
            return Err(TelemetryError::NoRuntime);
        }

        // The TLS of https:// endpoints, loaded (and so checked) now; once
        // for both signals when they use the same files.
        let traces_tls = match config.traces_target() {
            Some((url, _)) => config.traces_tls.load_for(&url, "traces")?,
            None => None,
        };
        let metrics_tls = match config.metrics_target() {
            Some((url, _))
                if is_https(&url)
                    && traces_tls.is_some()
                    && config.metrics_tls == config.traces_tls =>
            {
                traces_tls.clone()
            }
            Some((url, _)) => config.metrics_tls.load_for(&url, "metrics")?,
            None => None,
        };

        let resource = resource(config);
        let counters = Arc::new(QueueCounters::default());

        let mut tracer_provider = SdkTracerProvider::builder()
            .with_sampler(config.sampler.to_sdk())
            .with_span_limits(config.span_limits)
            .with_resource(resource.clone());
        let mut queue = None;
        if let Some((endpoint, protocol)) = config.traces_target() {
            let rejected = Arc::clone(&counters);
            let mut exporter = config
                .traces_headers
                .0
                .iter()
                .fold(
                    OtlpSpanExporter::builder(endpoint),
                    |builder, (key, value)| builder.header(key, value),
                )
                .http(protocol == Protocol::HttpProtobuf)
                .tls(traces_tls)
                .timeout(config.traces_timeout)
                .gzip(config.traces_compression == Compression::Gzip)
                .on_rejected(move |spans| rejected.record_rejected(spans))
                .build()
                .map_err(|e| TelemetryError::Exporter {
                    signal: "traces",
                    reason: DisplayChain(&e).to_string(),
                })?;
            exporter.set_resource(&resource);
            let settings = QueueSettings {
                capacity: config.max_queue_size,
                batch_size: config.batch_size(),
                delay: config.schedule_delay,
                span_limits: config.span_limits,
            };
            let started =
                SpanQueue::start(settings, Arc::clone(&counters), exporter).map_err(|e| {
                    TelemetryError::Exporter {
                        signal: "traces",
                        reason: format!("cannot start the span queue's thread: {e}"),
                    }
                })?;
            tracer_provider =
                tracer_provider.with_span_processor(QueueProcessor::new(Arc::clone(&started)));
            queue = Some(started);
        }

        let mut meter_provider = SdkMeterProvider::builder().with_resource(resource);
        if let Some((endpoint, protocol)) = config.metrics_target() {
            let exporter = metric_exporter(config, endpoint, protocol, metrics_tls)?;
            let reader = PeriodicReader::builder(ReportingMetricExporter::new(exporter))
                .with_interval(config.metric_export_interval)
                .build();
            meter_provider = meter_provider.with_reader(reader);
        }

        Ok(Self {
            tracer_provider: tracer_provider.build(),
            meter_provider: meter_provider.build(),
            counters,
            queue,
            exports_metrics,
        })
    }

    /// sinew's tracer, for the `tracing` bridge.
    pub(crate) fn tracer(&self) -> SdkTracer {
        self.tracer_provider.tracer(SCOPE)
    }

    /// Exports what is pending, waiting at most `limit`. Blocks.
    pub(crate) fn flush(&self, limit: Duration) -> Result<(), TelemetryError> {
        let mut jobs: Vec<Job> = Vec::new();
        if let Some(queue) = &self.queue {
            let queue = Arc::clone(queue);
            jobs.push((
                "traces",
                Box::new(move || queue.flush(limit).map_err(QueueError::into_sdk)),
            ));
        }
        if self.exports_metrics {
            let provider = self.meter_provider.clone();
            jobs.push(("metrics", Box::new(move || provider.force_flush())));
        }
        bounded("flush", limit, jobs)
    }

    /// Exports what is pending and stops the exporters, waiting at most
    /// `limit`. Blocks. Spans ended afterwards are not recorded.
    pub(crate) fn shutdown(&self, limit: Duration) -> Result<(), TelemetryError> {
        let tracer_provider = self.tracer_provider.clone();
        let meter_provider = self.meter_provider.clone();
        bounded(
            "shutdown",
            limit,
            vec![
                (
                    "traces",
                    Box::new(move || tracer_provider.shutdown_with_timeout(limit)),
                ),
                (
                    "metrics",
                    Box::new(move || meter_provider.shutdown_with_timeout(limit)),
                ),
            ],
        )
    }
}

/// The metric exporter: `opentelemetry-otlp`'s, over gRPC or HTTP, with
/// the headers and compression as the configuration read and checked them,
/// the same way as the traces'. (It reads the same variables again by
/// itself, skipping what it cannot use, to the same values.)
///
/// `tls`, for an `https://` endpoint, is sinew's: over gRPC a tonic
/// channel of sinew's connector is handed to the exporter (its own TLS,
/// tonic's `tls-*` features, is not built in); over HTTP, sinew's client
/// makes the handshake.
fn metric_exporter(
    config: &TelemetryConfig,
    endpoint: String,
    protocol: Protocol,
    tls: Option<ClientTls>,
) -> Result<opentelemetry_otlp::MetricExporter, TelemetryError> {
    let failed = |reason: String| TelemetryError::Exporter {
        signal: "metrics",
        reason,
    };
    let gzip = config.metrics_compression == Compression::Gzip;
    let built = match protocol {
        Protocol::Grpc => {
            let mut metadata = MetadataMap::with_capacity(config.metrics_headers.0.len());
            for (key, value) in &config.metrics_headers.0 {
                let invalid = || failed(format!("invalid header {key:?}"));
                let key = AsciiMetadataKey::from_bytes(key.as_bytes()).map_err(|_| invalid())?;
                let value = AsciiMetadataValue::try_from(value.as_str()).map_err(|_| invalid())?;
                metadata.insert(key, value);
            }
            let mut builder = opentelemetry_otlp::MetricExporter::builder().with_tonic();
            builder = match tls {
                None => builder.with_endpoint(endpoint),
                // The exporter's endpoint settings do not apply to a
                // channel of its caller's: the timeout goes on the channel.
                Some(tls) => {
                    let endpoint = Endpoint::from_shared(endpoint.clone())
                        .map_err(|e| failed(format!("invalid endpoint {endpoint:?}: {e}")))?
                        .timeout(config.metrics_timeout)
                        .connect_timeout(config.metrics_timeout);
                    builder.with_channel(grpc_channel(&endpoint, tls))
                }
            };
            builder = builder
                .with_timeout(config.metrics_timeout)
                .with_metadata(metadata);
            if gzip {
                builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            builder.build()
        }
        Protocol::HttpProtobuf => {
            let client = OtlpHttpClient::start(config.metrics_timeout, tls)
                .map_err(|e| failed(format!("cannot start the HTTP client's thread: {e}")))?;
            let mut builder = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .with_timeout(config.metrics_timeout)
                .with_headers(config.metrics_headers.0.iter().cloned().collect());
            if gzip {
                builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            builder.build()
        }
    };
    built.map_err(|e| failed(e.to_string()))
}

/// The resource describing this process: the SDK's own attributes, then
/// the configured ones, then the service name. Built from `config` alone:
/// the SDK's detectors would read the process environment behind the
/// configuration's back.
pub(crate) fn resource(config: &TelemetryConfig) -> Resource {
    Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(
            config
                .resource
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .with_service_name(config.service_name.clone())
        .build()
}

/// A flush or shutdown of one signal's provider.
type Job = (&'static str, Box<dyn FnOnce() -> OTelSdkResult + Send>);

/// Runs each job on a thread of its own and waits for all of them, at most
/// `limit` in all. A job still running at the bound is left to finish in
/// the background: the SDK's own calls can block longer (the meter
/// provider's flush has no bound at all).
fn bounded(action: &'static str, limit: Duration, jobs: Vec<Job>) -> Result<(), TelemetryError> {
    let deadline = Instant::now() + limit;
    let (done, results) = mpsc::channel();
    let mut failures = Vec::new();
    let mut pending = 0;
    for (signal, job) in jobs {
        let done = done.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("sinew-telemetry-{action}"))
            .spawn(move || {
                let _ = done.send((signal, job()));
            });
        match spawned {
            Ok(_) => pending += 1,
            Err(e) => failures.push(format!("{signal}: cannot start a thread: {e}")),
        }
    }
    drop(done);

    while pending > 0 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match results.recv_timeout(remaining) {
            Ok((signal, result)) => {
                pending -= 1;
                if let Err(e) = result {
                    failures.push(format!("{signal}: {e}"));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(TelemetryError::TimedOut { action, limit });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                failures.push("a job panicked".to_owned());
                break;
            }
        }
    }

    if failures.is_empty() {
        Ok(())
    } else {
        Err(TelemetryError::Export {
            action,
            reason: failures.join("; "),
        })
    }
}

/// Runs blocking `work` off the async runtime's worker threads, so the
/// runtime keeps driving the exporters' connections meanwhile (on a
/// current-thread runtime, blocking its only thread would stall the very
/// exports being waited for). Outside a runtime, runs it in place.
pub(crate) async fn off_runtime(
    action: &'static str,
    work: impl FnOnce() -> Result<(), TelemetryError> + Send + 'static,
) -> Result<(), TelemetryError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.spawn_blocking(work).await.unwrap_or_else(|e| {
            Err(TelemetryError::Export {
                action,
                reason: e.to_string(),
            })
        }),
        Err(_) => work(),
    }
}

// === impl ReportingMetricExporter ===

impl<E> ReportingMetricExporter<E> {
    fn new(inner: E) -> Self {
        Self {
            inner,
            failing: AtomicBool::new(false),
        }
    }
}

impl<E> fmt::Debug for ReportingMetricExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportingMetricExporter")
            .field("failing", &self.failing)
            .finish_non_exhaustive()
    }
}

impl<E: PushMetricExporter> PushMetricExporter for ReportingMetricExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        match &result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(target: "sinew::telemetry", "metric export recovered");
                }
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "sinew::telemetry",
                        %error,
                        "metric export failed; metrics are lost until it recovers \
                         (further failures are not logged)",
                    );
                }
            }
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::{
        Key, Value,
        metrics::MeterProvider as _,
        trace::{Span as _, TraceContextExt as _, Tracer as _},
    };

    use super::*;
    use sinew_testing::ClosedPort;

    /// An endpoint nothing listens on: connections are refused at once,
    /// while the port lives.
    fn closed_endpoint() -> (ClosedPort, String) {
        let port = ClosedPort::new();
        let endpoint = format!("http://{}", port.addr());
        (port, endpoint)
    }

    #[test]
    fn the_resource_carries_the_service_name_and_attributes() {
        let config = TelemetryConfig::new("greeter")
            .resource_attribute("team", "payments")
            .resource_attribute("team", "search");
        let resource = resource(&config);
        assert_eq!(
            resource.get(&Key::new("service.name")),
            Some(Value::from("greeter"))
        );
        assert_eq!(resource.get(&Key::new("team")), Some(Value::from("search")));
        assert_eq!(
            resource.get(&Key::new("telemetry.sdk.language")),
            Some(Value::from("rust"))
        );
    }

    #[test]
    fn without_an_endpoint_nothing_exports_and_no_runtime_is_needed() {
        let pipeline = Pipeline::build(&TelemetryConfig::new("svc")).unwrap();
        // Spans still get ids, for logs and propagation.
        let span = pipeline.tracer().start("work");
        assert!(span.span_context().is_valid());
        drop(span);
        pipeline.flush(Duration::from_secs(1)).unwrap();
        pipeline.shutdown(Duration::from_secs(1)).unwrap();
        assert_eq!(pipeline.counters.dropped(), 0);
    }

    #[test]
    fn a_metrics_endpoint_outside_a_runtime_is_refused() {
        let config = TelemetryConfig::new("svc").endpoint("http://127.0.0.1:4317");
        assert!(matches!(
            Pipeline::build(&config),
            Err(TelemetryError::NoRuntime)
        ));
        // Spans alone need none: their exporter brings its own.
        let traces_only = TelemetryConfig::new("svc").traces_endpoint("http://127.0.0.1:4317");
        let pipeline = Pipeline::build(&traces_only).unwrap();
        pipeline.shutdown(Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn an_invalid_setting_fails_the_build() {
        let err = Pipeline::build(&TelemetryConfig::new("svc").sample_ratio(1.5)).unwrap_err();
        assert_eq!(err.key(), Some("sampler"));
    }

    #[test]
    fn the_sampler_decides_what_is_recorded() {
        let off = Pipeline::build(
            &TelemetryConfig::new("svc").sampler(super::super::TraceSampler::AlwaysOff),
        )
        .unwrap();
        let span = off.tracer().start("dropped");
        assert!(!span.is_recording());
        // Not sampled, but its ids are still there to correlate logs.
        assert!(span.span_context().is_valid());

        let on = Pipeline::build(&TelemetryConfig::new("svc")).unwrap();
        let parent = on.tracer().start("parent");
        let cx = opentelemetry::Context::current_with_span(parent);
        let child = on.tracer().start_with_context("child", &cx);
        assert!(child.is_recording());
        assert_eq!(
            child.span_context().trace_id(),
            cx.span().span_context().trace_id()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_port_fails_exports_promptly() {
        let (_port, endpoint) = closed_endpoint();
        let config = TelemetryConfig::new("svc")
            .endpoint(endpoint)
            .export_timeout(Duration::from_secs(2))
            .metric_export_interval(Duration::from_secs(3600))
            .schedule_delay(Duration::from_secs(3600));
        let pipeline = Pipeline::build(&config).unwrap();
        let tracer = pipeline.tracer();
        for _ in 0..10 {
            tracer.start("lost").end();
        }
        pipeline
            .meter_provider
            .meter("test")
            .u64_counter("requests")
            .build()
            .add(1, &[]);

        let started = Instant::now();
        let limit = Duration::from_secs(5);
        let flushed = {
            let pipeline = pipeline.clone();
            off_runtime("flush", move || pipeline.flush(limit)).await
        };
        assert!(flushed.is_err(), "nothing listens, yet the flush succeeded");
        let shut = {
            let pipeline = pipeline.clone();
            off_runtime("shutdown", move || pipeline.shutdown(limit)).await
        };
        drop(shut);
        // Each call is bounded by `limit`; a refused connection fails well
        // within the export timeout.
        assert!(
            started.elapsed() < 2 * limit + Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(pipeline.counters.failed(), 10);
        assert_eq!(pipeline.counters.dropped(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spans_reach_the_collector_with_the_configured_headers() {
        use opentelemetry_proto::tonic::collector::trace::v1::{
            ExportTracePartialSuccess, ExportTraceServiceResponse,
        };

        use crate::pipeline::testing::Collector;

        // The first export is a partial success: one span rejected.
        let (collector, addr) = Collector::start([Ok(ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 1,
                error_message: "one too many".to_owned(),
            }),
        })])
        .await;
        let config = TelemetryConfig::new("svc")
            .traces_endpoint(format!("http://{addr}"))
            .traces_header("Authorization", "Bearer token")
            .schedule_delay(Duration::from_secs(3600));
        let pipeline = Pipeline::build(&config).unwrap();
        let tracer = pipeline.tracer();
        tracer.start("first").end();
        tracer.start("second").end();

        let flushed = {
            let pipeline = pipeline.clone();
            off_runtime("flush", move || pipeline.flush(Duration::from_secs(10))).await
        };
        flushed.unwrap();

        let requests = collector.requests();
        assert_eq!(requests.len(), 1);
        let (metadata, request) = &requests[0];
        assert_eq!(
            metadata.get("authorization").unwrap().to_str().unwrap(),
            "Bearer token"
        );
        let resource_spans = &request.resource_spans[0];
        let names: Vec<&str> = resource_spans.scope_spans[0]
            .spans
            .iter()
            .map(|span| span.name.as_str())
            .collect();
        assert_eq!(names, ["first", "second"]);
        assert_eq!(
            resource_spans.scope_spans[0].scope.as_ref().unwrap().name,
            SCOPE
        );
        let service = resource_spans
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref());
        assert!(
            matches!(service, Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(name)) if name == "svc"),
            "{service:?}"
        );
        // The rejected span counts as failed; the batch went through.
        assert_eq!(pipeline.counters.failed(), 1);
        assert_eq!(pipeline.counters.dropped(), 0);

        let shut = {
            let pipeline = pipeline.clone();
            off_runtime("shutdown", move || {
                pipeline.shutdown(Duration::from_secs(5))
            })
            .await
        };
        shut.unwrap();
    }

    #[test]
    fn over_http_protobuf_both_signals_post_to_their_paths_under_the_endpoint() {
        use opentelemetry::metrics::MeterProvider as _;
        use opentelemetry_proto::tonic::collector::{
            metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest,
        };
        use prost::Message as _;

        use crate::{Protocol, pipeline::testing::HttpCollector};

        // The collector runs on a runtime of the test's; the pipeline is
        // built and flushed outside any, as over HTTP it needs none.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (collector, addr) = runtime.block_on(HttpCollector::start([]));
        let config = TelemetryConfig::new("svc")
            .endpoint(format!("http://{addr}"))
            .protocol(Protocol::HttpProtobuf)
            .compression(Compression::Gzip)
            .header("x-tenant", "acme")
            .schedule_delay(Duration::from_secs(3600))
            .metric_export_interval(Duration::from_secs(3600));
        let pipeline = Pipeline::build(&config).unwrap();
        pipeline.tracer().start("over-http").end();
        pipeline
            .meter_provider
            .meter("test")
            .u64_counter("sinew.test.http_exports")
            .build()
            .add(3, &[]);
        pipeline.flush(Duration::from_secs(10)).unwrap();

        let requests = collector.requests();
        let traces = requests
            .iter()
            .find(|r| r.path == "/v1/traces")
            .expect("traces");
        let metrics = requests
            .iter()
            .find(|r| r.path == "/v1/metrics")
            .expect("metrics");
        for request in [traces, metrics] {
            assert_eq!(request.header("x-tenant"), Some("acme"), "{}", request.path);
            assert_eq!(
                request.header("content-encoding"),
                Some("gzip"),
                "{}",
                request.path
            );
        }
        let traces = ExportTraceServiceRequest::decode(&traces.body[..]).unwrap();
        assert_eq!(
            traces.resource_spans[0].scope_spans[0].spans[0].name,
            "over-http"
        );
        let metrics = ExportMetricsServiceRequest::decode(&metrics.body[..]).unwrap();
        let names: Vec<&str> = metrics
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| m.name.as_str())
            .collect();
        assert!(names.contains(&"sinew.test.http_exports"), "{names:?}");
        pipeline.shutdown(Duration::from_secs(5)).unwrap();
    }

    /// A configuration read from `pairs` as the environment, through the
    /// configuration's own injection: the process environment is not
    /// touched.
    fn from_env(pairs: &[(&str, &std::path::Path)]) -> TelemetryConfig {
        let env: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.display().to_string()))
            .collect();
        TelemetryConfig::from_env_with("svc", move |key| env.get(key).cloned())
            .unwrap()
            .schedule_delay(Duration::from_secs(3600))
            .metric_export_interval(Duration::from_secs(3600))
    }

    /// The names of the spans `collector` received, in order.
    fn received_spans(collector: &crate::pipeline::testing::Collector) -> Vec<String> {
        collector
            .requests()
            .iter()
            .flat_map(|(_, request)| &request.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|span| span.name.clone())
            .collect()
    }

    async fn flush(pipeline: &Pipeline) -> Result<(), TelemetryError> {
        let pipeline = pipeline.clone();
        off_runtime("flush", move || pipeline.flush(Duration::from_secs(10))).await
    }

    async fn shut_down(pipeline: &Pipeline) {
        let pipeline = pipeline.clone();
        off_runtime("shutdown", move || {
            pipeline.shutdown(Duration::from_secs(5))
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spans_and_metrics_reach_an_https_collector_trusted_through_the_certificate_variable() {
        use crate::pipeline::testing::{Collector, server_tls};
        use sinew_testing::pki::TestPki;

        let pki = TestPki::new("collector CA");
        let server = pki.server(&["127.0.0.1"]);
        let (collector, addr) = Collector::start_tls([], server_tls(&server, None, b"h2")).await;
        let endpoint = std::path::PathBuf::from(format!("https://{addr}"));
        let config = from_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca()),
        ]);
        let pipeline = Pipeline::build(&config).unwrap();
        pipeline.tracer().start("over-tls").end();
        pipeline
            .meter_provider
            .meter("test")
            .u64_counter("sinew.test.tls_exports")
            .build()
            .add(1, &[]);
        flush(&pipeline).await.unwrap();

        assert_eq!(received_spans(&collector), ["over-tls"]);
        let metrics: Vec<String> = collector
            .metrics()
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| m.name.clone())
            .collect();
        assert!(
            metrics.iter().any(|name| name == "sinew.test.tls_exports"),
            "{metrics:?}"
        );
        assert_eq!(pipeline.counters.failed(), 0);
        shut_down(&pipeline).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_collector_requiring_mtls_takes_the_client_certificate_of_the_variables() {
        use crate::pipeline::testing::{Collector, server_tls};
        use sinew_testing::pki::TestPki;

        let pki = TestPki::new("test CA");
        let server = pki.server(&["127.0.0.1"]);
        let client = pki.client("svc", None);
        let (collector, addr) =
            Collector::start_tls([], server_tls(&server, Some(pki.ca()), b"h2")).await;
        let endpoint = std::path::PathBuf::from(format!("https://{addr}"));

        // Without a client certificate, the collector refuses the
        // handshake: the span is lost, and counted.
        let config = from_env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca()),
        ])
        .export_timeout(Duration::from_secs(1));
        let pipeline = Pipeline::build(&config).unwrap();
        pipeline.tracer().start("refused").end();
        assert!(flush(&pipeline).await.is_err());
        assert_eq!(pipeline.counters.failed(), 1);
        shut_down(&pipeline).await;

        // With one, it is delivered.
        let config = from_env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca()),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &client.cert),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &client.key),
        ]);
        let pipeline = Pipeline::build(&config).unwrap();
        pipeline.tracer().start("mutual").end();
        flush(&pipeline).await.unwrap();
        assert_eq!(received_spans(&collector), ["mutual"]);
        assert_eq!(pipeline.counters.failed(), 0);
        shut_down(&pipeline).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_collector_of_an_untrusted_ca_fails_the_export_and_counts_the_spans() {
        use crate::pipeline::testing::{Collector, server_tls};
        use sinew_testing::pki::TestPki;

        let pki = TestPki::new("collector CA");
        let other = TestPki::new("another CA");
        let server = pki.server(&["127.0.0.1"]);
        let (collector, addr) = Collector::start_tls([], server_tls(&server, None, b"h2")).await;
        let endpoint = std::path::PathBuf::from(format!("https://{addr}"));
        let config = from_env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", other.ca()),
        ])
        .export_timeout(Duration::from_secs(1));
        let pipeline = Pipeline::build(&config).unwrap();
        pipeline.tracer().start("first").end();
        pipeline.tracer().start("second").end();
        assert!(flush(&pipeline).await.is_err());
        assert_eq!(pipeline.counters.failed(), 2);
        assert_eq!(pipeline.counters.dropped(), 0);
        assert!(collector.requests().is_empty());
        shut_down(&pipeline).await;
    }

    #[test]
    fn a_missing_certificate_file_fails_the_build_naming_its_variable() {
        let pki = sinew_testing::pki::TestPki::new("test CA");
        let missing = pki.dir().join("missing.pem");
        let endpoint = std::path::PathBuf::from("https://127.0.0.1:4317");
        let config = from_env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &missing),
        ]);
        let err = Pipeline::build(&config).unwrap_err();
        assert_eq!(err.key(), Some("OTEL_EXPORTER_OTLP_CERTIFICATE"), "{err}");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
        // Over http://, the file is not read: nothing changes there.
        let plain = std::path::PathBuf::from("http://127.0.0.1:4317");
        let config = from_env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &plain),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &missing),
        ]);
        Pipeline::build(&config)
            .unwrap()
            .shutdown(Duration::from_secs(1))
            .unwrap();
    }

    #[test]
    fn over_http_protobuf_both_signals_reach_an_https_collector_requiring_mtls() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message as _;

        use crate::pipeline::testing::{HttpCollector, server_tls};
        use sinew_testing::pki::TestPki;

        let pki = TestPki::new("test CA");
        let server = pki.server(&["127.0.0.1"]);
        let client = pki.client("svc", None);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let tls = server_tls(&server, Some(pki.ca()), b"http/1.1");
        let (collector, addr) = runtime.block_on(HttpCollector::start_tls([], tls));
        let endpoint = std::path::PathBuf::from(format!("https://{addr}"));
        let protocol = std::path::PathBuf::from("http/protobuf");
        let config = from_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", &protocol),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca()),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &client.cert),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &client.key),
        ]);
        // Over HTTP, neither signal needs a runtime of the caller's.
        let pipeline = Pipeline::build(&config).unwrap();
        pipeline.tracer().start("over-https").end();
        pipeline
            .meter_provider
            .meter("test")
            .u64_counter("sinew.test.https_exports")
            .build()
            .add(1, &[]);
        pipeline.flush(Duration::from_secs(10)).unwrap();

        let requests = collector.requests();
        let traces = requests
            .iter()
            .find(|r| r.path == "/v1/traces")
            .expect("traces");
        assert!(requests.iter().any(|r| r.path == "/v1/metrics"));
        let traces = ExportTraceServiceRequest::decode(&traces.body[..]).unwrap();
        assert_eq!(
            traces.resource_spans[0].scope_spans[0].spans[0].name,
            "over-https"
        );
        pipeline.shutdown(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn a_job_past_the_bound_is_reported_as_timed_out() {
        let (_hold, wait) = mpsc::channel::<()>();
        let started = Instant::now();
        let err = bounded(
            "flush",
            Duration::from_millis(100),
            vec![(
                "traces",
                Box::new(move || {
                    let _ = wait.recv();
                    Ok(())
                }),
            )],
        )
        .unwrap_err();
        assert!(matches!(err, TelemetryError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
