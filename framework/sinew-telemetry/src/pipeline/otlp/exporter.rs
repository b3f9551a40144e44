//! The span exporter: a batch encoded by [`TraceEncoder`], sent as one
//! unary gRPC call on a tonic channel, or (under `http/protobuf`) as one
//! OTLP/HTTP request with a protobuf body.
//!
//! The span queue's thread calls [`Export::export`] outside any tokio
//! runtime, and blocks until the export is done. The channel's connection
//! lives on a small runtime of the exporter's own, on a thread of its own
//! (`sinew-otlp`), so the call runs there: `export` encodes the batch on
//! the queue's thread, spawns the call on the exporter's runtime and waits
//! for it. The call is bounded by
//! the export timeout, retries included, so a dead or silent collector
//! costs the batch thread at most that long.
//!
//! Why not the application's runtime: under load its workers have every
//! task of every call in their queues, and an export waits its turn
//! behind all of them; meanwhile the span queue fills and spans are
//! dropped. A thread of its own gets its share of the processor from the
//! operating system, whatever the application's runtime is doing.
//!
//! An `https://` endpoint is reached over TLS, with the [`ClientTls`] the
//! exporter is given (see [`tls`](super::tls)); an `http://` one in plain
//! text, through tonic's or hyper's own connector.

use std::{
    error::Error as _,
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::Poll,
    time::Duration,
};

use bytes::Bytes;
use http::uri::PathAndQuery;
use opentelemetry_sdk::Resource;
use tokio::{runtime::Handle, sync::oneshot, task::JoinHandle, time::Instant};
use tonic::{
    Request, Status,
    body::Body,
    client::Grpc,
    metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap},
    transport::{Channel, Endpoint},
};

use tower::Service;

use sinew_core::{status::chain, tls::ClientTls};

use crate::BoxError;

use super::{
    super::queue::{Export, Finished},
    codec::{ExportCodec, PartialSuccess, read_response},
    encode::{GRPC_PREFIX, TraceEncoder, gzip_framed},
    http::{OtlpHttpClient, PROTOBUF},
    retry::{Backoff, is_retryable},
    tls::grpc_channel,
};

/// What sinew's exports say they come from.
const USER_AGENT: &str = concat!("sinew/", env!("CARGO_PKG_VERSION"));

/// The method every OTLP/gRPC trace receiver serves.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Told how many spans a collector rejected from a batch it accepted.
type RejectedHook = Arc<dyn Fn(u64) + Send + Sync>;

/// Exports spans to an OTLP/gRPC collector, encoding them straight from
/// the finished spans (see [`TraceEncoder`]).
///
/// Build it with [`builder`](Self::builder); its exports run on its own
/// runtime thread (see the module docs), whatever thread calls
/// [`send`](Self::send) or [`export`](Export::export). Dropping the
/// exporter stops that thread; exports still in flight then fail.
pub(crate) struct OtlpSpanExporter {
    /// Behind a lock for its scratch space only: the queue never exports
    /// concurrently, so it is never contended.
    encoder: Mutex<TraceEncoder>,
    transport: Transport,
    /// The exporter's own runtime, driven by its thread.
    runtime: Handle,
    /// Dropped with the exporter, which ends the runtime's thread.
    _stop: oneshot::Sender<()>,
    timeout: Duration,
    /// Whether each batch goes gzip-compressed.
    gzip: bool,
    on_rejected: Option<RejectedHook>,
    /// Whether a rejection was logged: the first is, the rest are only
    /// counted.
    rejection_logged: Arc<AtomicBool>,
    shut_down: AtomicBool,
}

/// Settings for an [`OtlpSpanExporter`].
pub(crate) struct OtlpSpanExporterBuilder {
    endpoint: String,
    timeout: Duration,
    headers: Vec<(String, String)>,
    gzip: bool,
    http: bool,
    tls: Option<ClientTls>,
    on_rejected: Option<RejectedHook>,
}

/// An [`OtlpSpanExporter`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BuildError {
    /// The exporter's runtime or its thread could not be started.
    #[error("cannot start the OTLP exporter's thread")]
    Thread(#[source] std::io::Error),
    /// The endpoint is not a URI tonic can connect to.
    #[error("invalid endpoint {endpoint:?}")]
    Endpoint {
        /// As given.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The endpoint is not a URI (under `http/protobuf`).
    #[error("invalid endpoint {endpoint:?}")]
    Uri {
        /// As given.
        endpoint: String,
        /// Why.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// A header is not valid as gRPC metadata.
    #[error("invalid header {key:?}: not a valid gRPC metadata key and ASCII value")]
    Header {
        /// Its name, as given.
        key: String,
    },
    /// The endpoint is `https://`, and no TLS was given.
    #[error("the endpoint {endpoint:?} is https://, and no TLS is configured")]
    NoTls {
        /// As given.
        endpoint: String,
    },
}

/// An export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ExportError {
    /// The call failed: the collector answered with an error, or it could
    /// not be reached. The status's message, which can echo request
    /// headers back, is not shown.
    #[error("the export call failed with gRPC status {:?}", .0.code())]
    Call(#[source] Status),
    /// The export did not finish within the export timeout.
    #[error("the export did not finish within {0:?}")]
    TimedOut(Duration),
    /// The exporter's runtime stopped, or the call panicked.
    #[error("the export task did not finish")]
    Task(#[source] tokio::task::JoinError),
    /// The exporter was shut down.
    #[error("the exporter is shut down")]
    ShutDown,
    /// The batch could not be compressed.
    #[error("the batch could not be gzip-compressed")]
    Compress(#[source] std::io::Error),
}

/// How batches travel to the collector. Cheap to clone: the clients
/// share their connections.
#[derive(Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per exporter, cloned once per export, never moved on a hot path"
)]
enum Transport {
    /// OTLP/gRPC: tonic makes each call, and the batch goes as its body.
    Grpc {
        client: Grpc<PreFramed>,
        /// Sent with every export.
        metadata: MetadataMap,
    },
    /// OTLP/HTTP: the batch's message is POSTed as it is.
    Http {
        client: OtlpHttpClient,
        uri: http::Uri,
        /// Sent with every export, with the content type and user agent.
        headers: http::HeaderMap,
    },
}

/// One export: everything the spawned task needs, owned.
struct Call {
    transport: Transport,
    /// The batch, encoded and framed as a gRPC message.
    body: FramedBatch,
    timeout: Duration,
}

/// The channel, sending each export's [`FramedBatch`] as the request's
/// body in place of the one tonic made: tonic's encoder would first copy
/// the batch into a buffer of its own (growing it as it went), where the
/// batch's own bytes can go out as they are. tonic still makes the
/// request's headers and reads the response.
#[derive(Debug, Clone)]
struct PreFramed(Channel);

/// An export's body, passed down to [`PreFramed`] in the request's
/// extensions, and whether it is gzip-compressed.
#[derive(Clone)]
struct FramedBatch {
    body: Bytes,
    gzip: bool,
}

// === impl OtlpSpanExporter ===

impl OtlpSpanExporter {
    /// Settings for an exporter to `endpoint` (`http://host:port`), with
    /// the specification's default 10s timeout and no headers.
    pub(crate) fn builder(endpoint: impl Into<String>) -> OtlpSpanExporterBuilder {
        OtlpSpanExporterBuilder {
            endpoint: endpoint.into(),
            timeout: Duration::from_secs(10),
            headers: Vec::new(),
            gzip: false,
            http: false,
            tls: None,
            on_rejected: None,
        }
    }

    /// Encodes `batch` and spawns its export; `None` for an empty batch,
    /// which is not sent.
    fn start(
        &self,
        batch: &[Finished],
    ) -> Result<Option<JoinHandle<Result<PartialSuccess, ExportError>>>, ExportError> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(ExportError::ShutDown);
        }
        if batch.is_empty() {
            return Ok(None);
        }
        let mut body = self
            .encoder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .encode_framed(batch);
        if self.gzip {
            body = gzip_framed(&body).map_err(ExportError::Compress)?;
        }
        let body = FramedBatch {
            body,
            gzip: self.gzip,
        };
        let call = Call {
            transport: self.transport.clone(),
            body,
            timeout: self.timeout,
        };
        Ok(Some(self.runtime.spawn(call.run())))
    }

    /// Encodes `batch` now, on the caller's thread, and returns the
    /// export, which runs on the exporter's runtime and which the future
    /// waits for.
    pub(crate) fn send(
        &self,
        batch: &[Finished],
    ) -> impl Future<Output = Result<(), ExportError>> + Send + 'static {
        let started = self.start(batch);
        let on_rejected = self.on_rejected.clone();
        let rejection_logged = Arc::clone(&self.rejection_logged);
        async move {
            let partial = match started? {
                Some(call) => call.await.unwrap_or_else(|e| Err(ExportError::Task(e)))?,
                None => PartialSuccess::default(),
            };
            if partial.rejected_spans > 0 || !partial.error_message.is_empty() {
                let rejected = u64::try_from(partial.rejected_spans).unwrap_or(0);
                if !rejection_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "sinew::telemetry",
                        rejected_spans = rejected,
                        message = %partial.error_message,
                        "the collector rejected spans it was sent; \
                         further rejections are counted, not logged",
                    );
                }
                if let Some(on_rejected) = on_rejected.filter(|_| rejected > 0) {
                    on_rejected(rejected);
                }
            }
            Ok(())
        }
    }

    /// Refuses exports from now on. Nothing is buffered here: exports in
    /// flight finish or time out on their own.
    pub(crate) fn shutdown(&self) -> Result<(), ExportError> {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            Err(ExportError::ShutDown)
        } else {
            Ok(())
        }
    }

    /// Encodes every batch for `resource` from now on.
    pub(crate) fn set_resource(&mut self, resource: &Resource) {
        self.encoder
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .set_resource(resource);
    }
}

impl fmt::Debug for OtlpSpanExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The metadata can hold credentials.
        f.debug_struct("OtlpSpanExporter")
            .field("timeout", &self.timeout)
            .field(
                "headers",
                &match &self.transport {
                    Transport::Grpc { metadata, .. } => metadata.len(),
                    Transport::Http { headers, .. } => headers.len(),
                },
            )
            .field("shut_down", &self.shut_down)
            .finish_non_exhaustive()
    }
}

impl Export for OtlpSpanExporter {
    fn export(&mut self, batch: &[Finished]) -> Result<(), BoxError> {
        // The queue's thread is outside any runtime; the call runs on the
        // exporter's, whose thread drives it meanwhile.
        let send = self.send(batch);
        self.runtime.block_on(send).map_err(ExportError::describe)
    }

    fn shutdown(&mut self) {
        let _ = OtlpSpanExporter::shutdown(self);
    }
}

// === impl OtlpSpanExporterBuilder ===

impl OtlpSpanExporterBuilder {
    /// How long one export may take, retries included.
    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `key: value` as metadata with every export. `key` is
    /// lowercased.
    pub(crate) fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// Sends each batch as OTLP/HTTP with a protobuf body, POSTed to the
    /// endpoint (a full URL, `/v1/traces` included), instead of OTLP/gRPC.
    pub(crate) fn http(mut self, http: bool) -> Self {
        self.http = http;
        self
    }

    /// The TLS of an `https://` endpoint, which needs one; unused for an
    /// `http://` endpoint.
    pub(crate) fn tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Sends each batch gzip-compressed (`grpc-encoding: gzip`, or
    /// `content-encoding: gzip` over HTTP).
    pub(crate) fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }

    /// Calls `hook` with the count of spans a collector rejected from a
    /// batch it otherwise accepted (an OTLP partial success). The export
    /// still succeeds: the rest of the batch was delivered.
    pub(crate) fn on_rejected(mut self, hook: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.on_rejected = Some(Arc::new(hook));
        self
    }

    /// The exporter, with its runtime thread started. Connects lazily, on
    /// the first export.
    pub(crate) fn build(self) -> Result<OtlpSpanExporter, BuildError> {
        let tls = self.tls_of_endpoint()?;
        let (runtime, stop) = start_runtime("sinew-otlp").map_err(BuildError::Thread)?;
        let transport = if self.http {
            self.http_transport(&runtime, tls)?
        } else {
            self.grpc_transport(&runtime, tls)?
        };
        Ok(OtlpSpanExporter {
            encoder: Mutex::new(TraceEncoder::new()),
            transport,
            runtime,
            _stop: stop,
            timeout: self.timeout,
            gzip: self.gzip,
            on_rejected: self.on_rejected,
            rejection_logged: Arc::new(AtomicBool::new(false)),
            shut_down: AtomicBool::new(false),
        })
    }

    /// The TLS to reach the endpoint with: the one given, for an
    /// `https://` endpoint; none for `http://`.
    fn tls_of_endpoint(&self) -> Result<Option<ClientTls>, BuildError> {
        let https = self
            .endpoint
            .parse::<http::Uri>()
            .is_ok_and(|uri| uri.scheme() == Some(&http::uri::Scheme::HTTPS));
        match (https, &self.tls) {
            (false, _) => Ok(None),
            (true, Some(tls)) => Ok(Some(tls.clone())),
            (true, None) => Err(BuildError::NoTls {
                endpoint: self.endpoint.clone(),
            }),
        }
    }

    fn grpc_transport(
        &self,
        runtime: &Handle,
        tls: Option<ClientTls>,
    ) -> Result<Transport, BuildError> {
        let endpoint_error = |source| BuildError::Endpoint {
            endpoint: self.endpoint.clone(),
            source,
        };
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(endpoint_error)?
            .user_agent(USER_AGENT)
            .map_err(endpoint_error)?
            // A collector that never accepts the connection fails within
            // the export's bound rather than the OS's.
            .connect_timeout(self.timeout)
            // Exports are single requests that wait for their answer.
            .tcp_nodelay(true);
        // The channel's worker task is spawned where it is made: on the
        // exporter's runtime.
        let channel = {
            let _entered = runtime.enter();
            match tls {
                None => endpoint.connect_lazy(),
                Some(tls) => grpc_channel(&endpoint, tls),
            }
        };

        let mut metadata = MetadataMap::with_capacity(self.headers.len());
        for (key, value) in &self.headers {
            let invalid = || BuildError::Header { key: key.clone() };
            let name = AsciiMetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes())
                .map_err(|_| invalid())?;
            let value = AsciiMetadataValue::try_from(value.as_str()).map_err(|_| invalid())?;
            metadata.insert(name, value);
        }
        Ok(Transport::Grpc {
            client: Grpc::new(PreFramed(channel)),
            metadata,
        })
    }

    fn http_transport(
        &self,
        runtime: &Handle,
        tls: Option<ClientTls>,
    ) -> Result<Transport, BuildError> {
        let uri = self
            .endpoint
            .parse::<http::Uri>()
            .map_err(|source| BuildError::Uri {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        let mut headers = http::HeaderMap::with_capacity(self.headers.len() + 2);
        for (key, value) in &self.headers {
            let invalid = || BuildError::Header { key: key.clone() };
            let name = http::HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes())
                .map_err(|_| invalid())?;
            let value = http::HeaderValue::from_str(value).map_err(|_| invalid())?;
            headers.insert(name, value);
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(PROTOBUF),
        );
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(USER_AGENT),
        );
        if self.gzip {
            headers.insert(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_static("gzip"),
            );
        }
        Ok(Transport::Http {
            client: OtlpHttpClient::on(runtime.clone(), self.timeout, tls),
            uri,
            headers,
        })
    }
}

impl fmt::Debug for OtlpSpanExporterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpSpanExporterBuilder")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers.len())
            .field("gzip", &self.gzip)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Starts a current-thread runtime on a thread of its own, called `name`,
/// running until the returned sender is dropped.
pub(super) fn start_runtime(name: &str) -> std::io::Result<(Handle, oneshot::Sender<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // Ends when the sender is sent to or dropped; dropping the
            // runtime then cancels what is still running on it.
            let _ = runtime.block_on(stopped);
        })?;
    Ok((handle, stop))
}

// === impl Call ===

impl Call {
    /// Sends the batch, retrying transient failures, within the timeout.
    async fn run(mut self) -> Result<PartialSuccess, ExportError> {
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        tokio::time::timeout_at(deadline, self.with_retries(deadline))
            .await
            .unwrap_or(Err(ExportError::TimedOut(timeout)))
    }

    async fn with_retries(&mut self, deadline: Instant) -> Result<PartialSuccess, ExportError> {
        let mut backoff = Backoff::new();
        loop {
            let status = match self.attempt().await {
                Ok(partial) => return Ok(partial),
                Err(status) => status,
            };
            if !is_retryable(status.code()) {
                return Err(ExportError::Call(status));
            }
            match backoff.next_delay() {
                // A retry that could not finish in time is not worth
                // starting, and the last error says more than a timeout.
                Some(delay) if Instant::now() + delay < deadline => {
                    tokio::time::sleep(delay).await;
                }
                _ => return Err(ExportError::Call(status)),
            }
        }
    }

    async fn attempt(&mut self) -> Result<PartialSuccess, Status> {
        match &mut self.transport {
            Transport::Grpc { client, metadata } => {
                client
                    .ready()
                    .await
                    .map_err(|e| Status::from_error(Box::new(e)))?;
                let mut request = Request::new(());
                request.extensions_mut().insert(self.body.clone());
                if !metadata.is_empty() {
                    *request.metadata_mut() = metadata.clone();
                }
                let response = client
                    .unary(request, PathAndQuery::from_static(EXPORT_PATH), ExportCodec)
                    .await?;
                Ok(response.into_inner())
            }
            Transport::Http {
                client,
                uri,
                headers,
            } => {
                // The message without its gRPC prefix: gzip-compressed
                // already, when the prefix's flag says so.
                let body = self
                    .body
                    .body
                    .slice(GRPC_PREFIX.min(self.body.body.len())..);
                let mut request = http::Request::post(uri.clone())
                    .body(body)
                    .map_err(|e| Status::internal(e.to_string()))?;
                *request.headers_mut() = headers.clone();
                let response = client.send(request).await.map_err(|error| {
                    let mut status = Status::unavailable("the collector could not be reached");
                    status.set_source(Arc::from(error));
                    status
                })?;
                http_outcome(response)
            }
        }
    }
}

/// What an OTLP/HTTP answer says: the partial success of a 2xx, or a
/// status whose code says whether to retry (429, 502, 503 and 504 are
/// retried, as the specification asks; the others are not). The answer's
/// text, which may echo what was sent, is not kept.
fn http_outcome(response: http::Response<Bytes>) -> Result<PartialSuccess, Status> {
    use http::StatusCode;

    let status = response.status();
    if status.is_success() {
        let mut body = response.into_body();
        return read_response(&mut body)
            .map_err(|_| Status::internal("the collector's answer is not an OTLP response"));
    }
    let code = match status {
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => tonic::Code::Unavailable,
        StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
        StatusCode::FORBIDDEN => tonic::Code::PermissionDenied,
        StatusCode::NOT_FOUND => tonic::Code::Unimplemented,
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted,
        _ => tonic::Code::Unknown,
    };
    Err(Status::new(code, format!("HTTP {}", status.as_u16())))
}

// === impl PreFramed ===

impl Service<http::Request<Body>> for PreFramed {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = <Channel as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(FramedBatch { body, gzip }) = request.extensions_mut().remove() {
            *request.body_mut() = Body::new(http_body_util::Full::new(body));
            if gzip {
                request.headers_mut().insert(
                    http::header::HeaderName::from_static("grpc-encoding"),
                    http::HeaderValue::from_static("gzip"),
                );
            }
        }
        self.0.call(request)
    }
}

// === impl ExportError ===

impl ExportError {
    /// The error as the queue logs it: its text names the cause, down the
    /// source chain.
    fn describe(self) -> BoxError {
        match self {
            error @ (Self::TimedOut(_) | Self::ShutDown) => Box::new(error),
            error => {
                // The call's own status is skipped: its message is the
                // collector's, which may echo what it was sent.
                let causes = match &error {
                    Self::Call(status) => status.source(),
                    other => other.source(),
                };
                let mut text = error.to_string();
                for cause in causes.into_iter().flat_map(chain) {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                }
                text.into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        borrow::Cow,
        net::SocketAddr,
        sync::atomic::AtomicU64,
        task::{Context, Poll, Wake, Waker},
        time::SystemTime,
    };

    use opentelemetry::{
        InstrumentationScope, KeyValue,
        trace::{SpanContext, SpanId, SpanKind, Status as SpanStatus, TraceFlags, TraceId},
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
    use tokio::net::TcpListener;

    use super::{
        super::testing::{Collector, HttpCollector},
        *,
    };
    use sinew_testing::ClosedPort;

    fn endpoint(addr: SocketAddr) -> String {
        format!("http://{addr}")
    }

    fn span(name: impl Into<Cow<'static, str>>) -> Finished {
        Finished::Sdk(SpanData {
            span_context: SpanContext::new(
                TraceId::from(7),
                SpanId::from(8),
                TraceFlags::SAMPLED,
                false,
                Default::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: name.into(),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes: vec![KeyValue::new("rpc.method", "Say")],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: SpanStatus::Ok,
            instrumentation_scope: InstrumentationScope::builder("sinew").build(),
        })
    }

    fn span_names(request: &ExportTraceServiceRequest) -> Vec<&str> {
        request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// Polls `future` to completion on this thread, outside any runtime.
    fn block_on<F: Future>(future: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            match future.as_mut().poll(&mut cx) {
                Poll::Ready(output) => return output,
                Poll::Pending => std::thread::park(),
            }
        }
    }

    /// Exports `batch` from a plain thread, outside the runtime, and waits
    /// for it without blocking the runtime.
    async fn export_from_a_thread(
        exporter: Arc<OtlpSpanExporter>,
        batch: Vec<Finished>,
    ) -> Result<(), ExportError> {
        let thread = std::thread::spawn(move || {
            assert!(Handle::try_current().is_err(), "the thread is in a runtime");
            block_on(exporter.send(&batch))
        });
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spans_arrive_with_the_resource_and_the_headers() {
        let (collector, addr) = Collector::start([]).await;
        let mut exporter = OtlpSpanExporter::builder(endpoint(addr))
            .header("Authorization", "Bearer abc")
            .header("x-tenant", "acme")
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name("exporter-test")
                .build(),
        );

        exporter
            .send(&[span("first"), span("second")])
            .await
            .unwrap();

        let requests = collector.requests();
        assert_eq!(requests.len(), 1);
        let (metadata, request) = &requests[0];
        assert_eq!(span_names(request), ["first", "second"]);
        let resource = request.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
        assert_eq!(
            metadata.get("authorization").unwrap().to_str().unwrap(),
            "Bearer abc"
        );
        assert_eq!(metadata.get("x-tenant").unwrap().to_str().unwrap(), "acme");
        assert!(
            metadata
                .get("user-agent")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("sinew/")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gzip_batch_arrives_whole_and_smaller() {
        let (collector, addr) = Collector::start([]).await;
        let exporter = OtlpSpanExporter::builder(endpoint(addr))
            .gzip(true)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let batch: Vec<Finished> = (0..50).map(|i| span(format!("span-{i}"))).collect();
        exporter.send(&batch).await.unwrap();

        let requests = collector.requests();
        assert_eq!(requests.len(), 1);
        let (metadata, request) = &requests[0];
        assert_eq!(span_names(request).len(), 50);
        assert_eq!(span_names(request)[49], "span-49");
        assert_eq!(metadata.get("grpc-encoding").unwrap(), "gzip");

        // What went on the wire is the same message, compressed.
        let framed = TraceEncoder::new().encode_framed(&batch);
        let gzipped = gzip_framed(&framed).unwrap();
        assert_eq!(gzipped[0], 1, "the compressed flag");
        assert!(
            gzipped.len() < framed.len() / 2,
            "{} of {}",
            gzipped.len(),
            framed.len()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn over_http_a_batch_is_posted_as_protobuf_with_the_headers() {
        use prost::Message as _;

        let (collector, addr) = HttpCollector::start([]).await;
        for gzip in [false, true] {
            let exporter = OtlpSpanExporter::builder(format!("http://{addr}/v1/traces"))
                .http(true)
                .gzip(gzip)
                .header("Authorization", "Bearer abc")
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let batch: Vec<Finished> = (0..20).map(|i| span(format!("span-{i}"))).collect();
            export_from_a_thread(Arc::new(exporter), batch)
                .await
                .unwrap();
        }

        let requests = collector.requests();
        assert_eq!(requests.len(), 2);
        for (request, gzip) in requests.iter().zip([false, true]) {
            assert_eq!(request.path, "/v1/traces");
            assert_eq!(request.header("content-type"), Some(PROTOBUF));
            assert_eq!(request.header("authorization"), Some("Bearer abc"));
            assert!(request.header("user-agent").unwrap().starts_with("sinew/"));
            assert_eq!(request.header("content-encoding").is_some(), gzip);
            let decoded = ExportTraceServiceRequest::decode(&request.body[..]).unwrap();
            let names = span_names(&decoded);
            assert_eq!(names.len(), 20);
            assert_eq!(names[19], "span-19");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn over_http_only_transient_answers_are_retried() {
        // 503 and 429 are retried, then the batch goes through.
        let (collector, addr) = HttpCollector::start([503, 429]).await;
        let exporter = OtlpSpanExporter::builder(format!("http://{addr}/v1/traces"))
            .http(true)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        exporter.send(&[span("retried")]).await.unwrap();
        assert_eq!(collector.requests().len(), 3);

        // 400 is final: one attempt, and the export fails with a status
        // that names no text of the collector's.
        let (collector, addr) = HttpCollector::start([400]).await;
        let exporter = OtlpSpanExporter::builder(format!("http://{addr}/v1/traces"))
            .http(true)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let error = exporter.send(&[span("refused")]).await.unwrap_err();
        assert!(
            matches!(&error, ExportError::Call(status) if status.code() == tonic::Code::InvalidArgument),
            "{error:?}"
        );
        assert_eq!(collector.requests().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn export_works_when_polled_from_a_thread_outside_the_runtime() {
        let (collector, addr) = Collector::start([]).await;
        let exporter = Arc::new(
            OtlpSpanExporter::builder(endpoint(addr))
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        );
        for name in ["one", "two"] {
            export_from_a_thread(Arc::clone(&exporter), vec![span(name)])
                .await
                .unwrap();
        }
        let requests = collector.requests();
        let names: Vec<&str> = requests.iter().flat_map(|(_, r)| span_names(r)).collect();
        assert_eq!(names, ["one", "two"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_port_fails_promptly() {
        let port = ClosedPort::new();
        let closed = port.addr();
        let timeout = Duration::from_secs(3);
        let exporter = Arc::new(
            OtlpSpanExporter::builder(endpoint(closed))
                .timeout(timeout)
                .build()
                .unwrap(),
        );
        let started = std::time::Instant::now();
        let result = export_from_a_thread(exporter, vec![span("lost")]).await;
        let elapsed = started.elapsed();
        // Refused connections are retried (100ms, 200ms, 400ms, plus
        // jitter), then the last error is returned.
        match result {
            Err(ExportError::Call(status)) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(elapsed < timeout, "took {elapsed:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_collector_fails_at_the_timeout() {
        // Accepts connections and never says a word.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let timeout = Duration::from_millis(500);
        let exporter = Arc::new(
            OtlpSpanExporter::builder(endpoint(addr))
                .timeout(timeout)
                .build()
                .unwrap(),
        );
        let started = std::time::Instant::now();
        let result = export_from_a_thread(exporter, vec![span("lost")]).await;
        let elapsed = started.elapsed();
        assert!(
            matches!(result, Err(ExportError::TimedOut(t)) if t == timeout),
            "{result:?}"
        );
        // Bounded by the timeout; the slack is for a loaded host.
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_secs(10),
            "took {elapsed:?}"
        );
        silent.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transient_failures_are_retried_and_others_are_not() {
        let (collector, addr) = Collector::start([
            Err(Status::unavailable("restarting")),
            Ok(ExportTraceServiceResponse::default()),
        ])
        .await;
        let exporter = OtlpSpanExporter::builder(endpoint(addr))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        exporter.send(&[span("retried")]).await.unwrap();
        assert_eq!(collector.requests().len(), 2);

        let (collector, addr) =
            Collector::start([Err(Status::invalid_argument("secret-echo"))]).await;
        let exporter = OtlpSpanExporter::builder(endpoint(addr))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let err = exporter.send(&[span("refused")]).await.unwrap_err();
        assert_eq!(collector.requests().len(), 1);
        // The code is reported; the collector's message is not.
        let text = err.describe().to_string();
        assert!(text.contains("InvalidArgument"), "{text}");
        assert!(!text.contains("secret-echo"), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rejected_spans_are_reported_and_the_export_succeeds() {
        let (_collector, addr) = Collector::start([Ok(ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 2,
                error_message: "too old".to_owned(),
            }),
        })])
        .await;
        let rejected = Arc::new(AtomicU64::new(0));
        let exporter = OtlpSpanExporter::builder(endpoint(addr))
            .timeout(Duration::from_secs(5))
            .on_rejected({
                let rejected = Arc::clone(&rejected);
                move |spans| {
                    rejected.fetch_add(spans, Ordering::Relaxed);
                }
            })
            .build()
            .unwrap();
        exporter
            .send(&[span("a"), span("b"), span("c")])
            .await
            .unwrap();
        assert_eq!(rejected.load(Ordering::Relaxed), 2);
        // A full success reports nothing.
        exporter.send(&[span("d")]).await.unwrap();
        assert_eq!(rejected.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_sent_for_an_empty_batch_or_after_shutdown() {
        let (collector, addr) = Collector::start([]).await;
        let exporter = OtlpSpanExporter::builder(endpoint(addr)).build().unwrap();
        exporter.send(&[]).await.unwrap();
        exporter.shutdown().unwrap();
        assert!(matches!(
            exporter.send(&[span("late")]).await,
            Err(ExportError::ShutDown)
        ));
        assert!(matches!(exporter.shutdown(), Err(ExportError::ShutDown)));
        assert!(collector.requests().is_empty());
    }

    #[test]
    fn exports_run_on_the_exporters_own_thread_even_with_no_other_runtime() {
        // Built and used with no runtime anywhere: the exporter brings its
        // own. A closed port fails the export promptly, from there.
        let mut exporter = OtlpSpanExporter::builder("http://127.0.0.1:9")
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        // As the span queue's thread exports: blocking, outside a runtime.
        let result = Export::export(&mut exporter, &[span("alone")]);
        let error = result.expect_err("nothing listens on port 9").to_string();
        assert!(error.contains("Unavailable"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_untrusted_collector_fails_the_export_saying_why() {
        use sinew_core::tls::ClientTlsConfig;
        use sinew_testing::pki::TestPki;

        use super::super::testing::server_tls;

        let pki = TestPki::new("collector CA");
        let other = TestPki::new("another CA");
        let server = pki.server(&["127.0.0.1"]);
        let (grpc, grpc_addr) = Collector::start_tls([], server_tls(&server, None, b"h2")).await;
        let (http, http_addr) =
            HttpCollector::start_tls([], server_tls(&server, None, b"http/1.1")).await;
        let distrusting = ClientTls::load(ClientTlsConfig::new().ca(other.ca())).unwrap();
        for (endpoint, http) in [
            (format!("https://{grpc_addr}"), false),
            (format!("https://{http_addr}/v1/traces"), true),
        ] {
            let exporter = OtlpSpanExporter::builder(endpoint)
                .http(http)
                .tls(Some(distrusting.clone()))
                .timeout(Duration::from_millis(500))
                .build()
                .unwrap();
            let error = exporter.send(&[span("lost")]).await.unwrap_err();
            let text = error.describe().to_string();
            assert!(text.contains("unknown authority"), "{text}");
        }
        assert!(grpc.requests().is_empty());
        assert!(http.requests().is_empty());
    }

    #[test]
    fn building_needs_a_valid_endpoint_and_headers() {
        assert!(matches!(
            OtlpSpanExporter::builder("not a uri").build(),
            Err(BuildError::Endpoint { .. })
        ));
        assert!(matches!(
            OtlpSpanExporter::builder("http://127.0.0.1:4317")
                .header("x-bin", "binary")
                .build(),
            Err(BuildError::Header { .. })
        ));
        assert!(matches!(
            OtlpSpanExporter::builder("http://127.0.0.1:4317")
                .header("x-line", "a\nb")
                .build(),
            Err(BuildError::Header { .. })
        ));
        // An https:// endpoint needs its TLS.
        assert!(matches!(
            OtlpSpanExporter::builder("https://127.0.0.1:4317").build(),
            Err(BuildError::NoTls { .. })
        ));
    }
}
