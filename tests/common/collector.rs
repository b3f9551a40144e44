//! An in-process OTLP collector for the telemetry tests: a tonic server on
//! a free loopback port that accepts OTLP/gRPC traces and metrics and keeps
//! every request, so a test can read back what sinew exported.
//!
//! ```ignore
//! let collector = Collector::start().await;
//! let telemetry = sinew::telemetry::init_with(
//!     TelemetryConfig::new("echo")
//!         .endpoint(collector.endpoint())
//!         .schedule_delay(Duration::from_millis(50)),
//! )?;
//! // ... make calls ...
//! sinew::telemetry::flush().await?;
//! assert!(
//!     collector
//!         .wait_for(|c| !c.spans_named("echo.v1.Echo/Say").is_empty(), Duration::from_secs(5))
//!         .await,
//!     "spans received: {:?}",
//!     collector.span_names(),
//! );
//! ```
//!
//! Telemetry installs once per process, so keep it to one test per test
//! file (one binary), and keep that test's runtime alive until
//! `shutdown`: the exporters' gRPC connections run on the runtime that
//! called `init`.
//!
//! Metrics are cumulative: every export repeats every series, so
//! [`Collector::data_points`] holds each series once per export, and
//! [`Collector::latest_data_points`] keeps the last point of each.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{KeyValue, any_value},
    metrics::v1::{metric::Data, number_data_point},
    resource::v1::Resource,
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};

/// Everything the collector received, in arrival order.
#[derive(Debug, Default)]
struct Received {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
}

/// The services' shared store. Clones share it.
#[derive(Debug, Clone, Default)]
struct Store(Arc<Mutex<Received>>);

/// An OTLP/gRPC collector on 127.0.0.1. Stops when dropped.
#[derive(Debug)]
pub(crate) struct Collector {
    addr: SocketAddr,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// A span as received, with what it was exported under.
#[derive(Debug, Clone)]
pub(crate) struct ReceivedSpan {
    /// The `service.name` of its resource.
    pub(crate) service_name: Option<String>,
    /// Its instrumentation scope (`sinew` for sinew's spans).
    pub(crate) scope_name: String,
    /// The span.
    pub(crate) span: Span,
}

/// One metric data point as received.
#[derive(Debug, Clone)]
pub(crate) struct DataPoint {
    /// The `service.name` of its resource.
    pub(crate) service_name: Option<String>,
    /// The point's attributes.
    pub(crate) attributes: Vec<KeyValue>,
    /// Its value.
    pub(crate) value: PointValue,
}

/// A data point's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PointValue {
    /// A counter, up-down counter or gauge recording integers.
    Int(i64),
    /// A counter, up-down counter or gauge recording floats.
    Double(f64),
    /// A histogram.
    Histogram {
        /// How many values were recorded.
        count: u64,
        /// Their sum.
        sum: Option<f64>,
        /// Counts per bucket.
        bucket_counts: Vec<u64>,
        /// The buckets' upper bounds.
        bounds: Vec<f64>,
    },
    /// An exponential histogram or a summary, not decoded here.
    Other,
}

// === impl Store ===

impl Store {
    fn lock(&self) -> MutexGuard<'_, Received> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.lock().traces.push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Store {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.lock().metrics.push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

// === impl Collector ===

impl Collector {
    /// Starts a collector on 127.0.0.1 with an OS-chosen port.
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Store::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let router = Server::builder()
            .add_service(TraceServiceServer::new(store.clone()))
            .add_service(MetricsServiceServer::new(store.clone()));
        let task = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("the collector failed");
        });
        Self {
            addr,
            store,
            stop: Some(stop),
            task,
        }
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint to export to, `http://127.0.0.1:<port>`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting exports and waits for the server to end.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Forgets everything received so far.
    pub(crate) fn clear(&self) {
        let mut received = self.store.lock();
        received.traces.clear();
        received.metrics.clear();
    }

    /// Every trace export request, in arrival order.
    pub(crate) fn trace_requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.store.lock().traces.clone()
    }

    /// Every metric export request, in arrival order.
    pub(crate) fn metric_requests(&self) -> Vec<ExportMetricsServiceRequest> {
        self.store.lock().metrics.clone()
    }

    /// Every span received, flattened out of its requests, resources and
    /// scopes, in arrival order.
    pub(crate) fn spans(&self) -> Vec<ReceivedSpan> {
        let received = self.store.lock();
        let mut spans = Vec::new();
        for request in &received.traces {
            for resource_spans in &request.resource_spans {
                let service_name = service_name(resource_spans.resource.as_ref());
                for scope_spans in &resource_spans.scope_spans {
                    let scope_name = scope_spans
                        .scope
                        .as_ref()
                        .map(|scope| scope.name.clone())
                        .unwrap_or_default();
                    spans.extend(scope_spans.spans.iter().map(|span| ReceivedSpan {
                        service_name: service_name.clone(),
                        scope_name: scope_name.clone(),
                        span: span.clone(),
                    }));
                }
            }
        }
        spans
    }

    /// The spans named `name`, in arrival order.
    pub(crate) fn spans_named(&self, name: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|received| received.span.name == name)
            .collect()
    }

    /// The names of the spans received, in arrival order: for messages.
    pub(crate) fn span_names(&self) -> Vec<String> {
        self.spans()
            .into_iter()
            .map(|received| received.span.name)
            .collect()
    }

    /// The names of the metrics received, each once, in order of arrival.
    pub(crate) fn metric_names(&self) -> Vec<String> {
        let received = self.store.lock();
        let mut names: Vec<String> = Vec::new();
        let metrics = received
            .metrics
            .iter()
            .flat_map(|request| &request.resource_metrics)
            .flat_map(|resource| &resource.scope_metrics)
            .flat_map(|scope| &scope.metrics);
        for metric in metrics {
            if !names.contains(&metric.name) {
                names.push(metric.name.clone());
            }
        }
        names
    }

    /// Every data point of the metric `name`, from every export, in
    /// arrival order.
    pub(crate) fn data_points(&self, name: &str) -> Vec<DataPoint> {
        let received = self.store.lock();
        let mut points = Vec::new();
        for request in &received.metrics {
            for resource_metrics in &request.resource_metrics {
                let service_name = service_name(resource_metrics.resource.as_ref());
                let metrics = resource_metrics
                    .scope_metrics
                    .iter()
                    .flat_map(|scope| &scope.metrics)
                    .filter(|metric| metric.name == name);
                for metric in metrics {
                    let point = |attributes: &[KeyValue], value| DataPoint {
                        service_name: service_name.clone(),
                        attributes: attributes.to_vec(),
                        value,
                    };
                    match &metric.data {
                        Some(Data::Sum(sum)) => points.extend(
                            sum.data_points
                                .iter()
                                .map(|p| point(&p.attributes, number(p.value))),
                        ),
                        Some(Data::Gauge(gauge)) => points.extend(
                            gauge
                                .data_points
                                .iter()
                                .map(|p| point(&p.attributes, number(p.value))),
                        ),
                        Some(Data::Histogram(histogram)) => {
                            points.extend(histogram.data_points.iter().map(|p| {
                                point(
                                    &p.attributes,
                                    PointValue::Histogram {
                                        count: p.count,
                                        sum: p.sum,
                                        bucket_counts: p.bucket_counts.clone(),
                                        bounds: p.explicit_bounds.clone(),
                                    },
                                )
                            }));
                        }
                        Some(Data::ExponentialHistogram(histogram)) => points.extend(
                            histogram
                                .data_points
                                .iter()
                                .map(|p| point(&p.attributes, PointValue::Other)),
                        ),
                        Some(Data::Summary(summary)) => points.extend(
                            summary
                                .data_points
                                .iter()
                                .map(|p| point(&p.attributes, PointValue::Other)),
                        ),
                        None => {}
                    }
                }
            }
        }
        points
    }

    /// The last data point of each series (service and attributes) of the
    /// metric `name`: with cumulative metrics, its current value.
    pub(crate) fn latest_data_points(&self, name: &str) -> Vec<DataPoint> {
        let mut latest: Vec<(String, DataPoint)> = Vec::new();
        for point in self.data_points(name) {
            let key = point.series_key();
            match latest.iter_mut().find(|(seen, _)| *seen == key) {
                Some(slot) => slot.1 = point,
                None => latest.push((key, point)),
            }
        }
        latest.into_iter().map(|(_, point)| point).collect()
    }

    /// Polls every 20ms until `predicate` holds, for at most `timeout`.
    /// Returns whether it held.
    pub(crate) async fn wait_for(
        &self,
        predicate: impl Fn(&Collector) -> bool,
        timeout: Duration,
    ) -> bool {
        // Wall-clock deadline: exports happen on real threads, whatever
        // the test's tokio clock does.
        let deadline = Instant::now() + timeout;
        loop {
            if predicate(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

// === impl ReceivedSpan ===

impl ReceivedSpan {
    /// The attribute `key`, if the span has it.
    pub(crate) fn attribute(&self, key: &str) -> Option<&any_value::Value> {
        attribute(&self.span.attributes, key)
    }

    /// The string attribute `key`.
    pub(crate) fn str_attribute(&self, key: &str) -> Option<&str> {
        match self.attribute(key)? {
            any_value::Value::StringValue(value) => Some(value),
            _ => None,
        }
    }

    /// The integer attribute `key`.
    pub(crate) fn int_attribute(&self, key: &str) -> Option<i64> {
        match self.attribute(key)? {
            any_value::Value::IntValue(value) => Some(*value),
            _ => None,
        }
    }

    /// The trace id, in lowercase hex as in `traceparent`.
    pub(crate) fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    /// The span id, in lowercase hex.
    pub(crate) fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// The parent's span id in lowercase hex; `None` for a root span.
    pub(crate) fn parent_span_id(&self) -> Option<String> {
        (!self.span.parent_span_id.is_empty()).then(|| hex(&self.span.parent_span_id))
    }

    /// The span kind.
    pub(crate) fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }

    /// The status code; `Unset` without a status.
    pub(crate) fn status_code(&self) -> StatusCode {
        self.span
            .status
            .as_ref()
            .and_then(|status| StatusCode::try_from(status.code).ok())
            .unwrap_or(StatusCode::Unset)
    }
}

// === impl DataPoint ===

impl DataPoint {
    /// The attribute `key`, if the point has it.
    pub(crate) fn attribute(&self, key: &str) -> Option<&any_value::Value> {
        attribute(&self.attributes, key)
    }

    /// The string attribute `key`.
    pub(crate) fn str_attribute(&self, key: &str) -> Option<&str> {
        match self.attribute(key)? {
            any_value::Value::StringValue(value) => Some(value),
            _ => None,
        }
    }

    /// The integer attribute `key`.
    pub(crate) fn int_attribute(&self, key: &str) -> Option<i64> {
        match self.attribute(key)? {
            any_value::Value::IntValue(value) => Some(*value),
            _ => None,
        }
    }

    /// Identifies the series: the service and the sorted attributes.
    fn series_key(&self) -> String {
        let mut attributes: Vec<String> = self
            .attributes
            .iter()
            .map(|kv| format!("{}={:?}", kv.key, kv.value))
            .collect();
        attributes.sort();
        format!("{:?}|{}", self.service_name, attributes.join(","))
    }
}

// === impl PointValue ===

impl PointValue {
    /// The value of a counter or gauge, or a histogram's sum, as a float.
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Int(value) => Some(*value as f64),
            Self::Double(value) => Some(*value),
            Self::Histogram { sum, .. } => *sum,
            Self::Other => None,
        }
    }

    /// A histogram's count.
    pub(crate) fn count(&self) -> Option<u64> {
        match self {
            Self::Histogram { count, .. } => Some(*count),
            _ => None,
        }
    }
}

fn number(value: Option<number_data_point::Value>) -> PointValue {
    match value {
        Some(number_data_point::Value::AsInt(value)) => PointValue::Int(value),
        Some(number_data_point::Value::AsDouble(value)) => PointValue::Double(value),
        None => PointValue::Other,
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

fn service_name(resource: Option<&Resource>) -> Option<String> {
    match attribute(&resource?.attributes, "service.name")? {
        any_value::Value::StringValue(name) => Some(name.clone()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
