//! The HTTP/JSON side: each call transcoded from the contracts'
//! `google.api.http` bindings to a gRPC call, checked against the same
//! access rules, forwarded on the same routes as gRPC calls, and its answer
//! transcoded back.
//!
//! - **Routes** come from each method's `google.api.http` option (path
//!   templates with variables, `body`, `response_body`,
//!   `additional_bindings`); a method without one answers
//!   `POST /package.Service/Method` with the whole request as its body.
//! - **JSON** is the proto3 JSON mapping (well-known types included);
//!   request fields not in the path or body come from the query string.
//! - **Server streams** are newline-delimited JSON, or server-sent events
//!   for a caller that accepts `text/event-stream`. An error mid-stream is
//!   a last line `{"error": <google.rpc.Status>}` (an `error` event).
//! - **Errors** are the JSON form of `google.rpc.Status`, with the
//!   standard mapping of gRPC codes to HTTP statuses (`NOT_FOUND` 404,
//!   `RESOURCE_EXHAUSTED` 429 with `Retry-After`, …).
//! - **OpenAPI 3** for every binding, at `openapi_path`
//!   (`/openapi.json` by default), built from the same descriptors as the
//!   routes.
//! - **For browsers:** CORS for the configured origins (preflights
//!   answered), a request body limit (`max_body_bytes`, 413 past it), and
//!   gzip for responses of 1 KiB or more to callers that accept it.

use std::{convert::Infallible, io::Write as _, net::SocketAddr, sync::Arc, time::Duration};

use bytes::{BufMut as _, Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::UnsyncBoxBody};
use prost::Message as _;
use prost_reflect::DynamicMessage;
use sinew_server::auth::AccessRules;
use tonic::{Code, Status};

use crate::{
    forward::{self, Shared},
    transcode::{self, Binding},
};

pub use crate::transcode::{HttpRoutes, RouteError};

/// The body of an HTTP/JSON response.
pub type HttpBody = UnsyncBoxBody<Bytes, Infallible>;

/// Longest a request's headers may take to arrive on HTTP/1.1.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a request's body may take to arrive.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Streams at once on one HTTP/2 connection.
const MAX_CONCURRENT_STREAMS: u32 = 100;
/// An HTTP/2 connection is pinged when idle this long, and closed when a
/// ping goes unanswered as long: dead peers do not hold connections.
const KEEPALIVE: Duration = Duration::from_secs(20);
/// HTTP/JSON connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 10_000;

/// The HTTP/JSON side of a [`Gateway`](crate::Gateway). Cheap to clone.
#[derive(Clone)]
pub struct HttpService {
    shared: Arc<Shared>,
    routes: Arc<HttpRoutes>,
    access: Arc<AccessRules>,
    openapi: Arc<Bytes>,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService").finish_non_exhaustive()
    }
}

impl HttpService {
    pub(crate) fn new(
        shared: Arc<Shared>,
        routes: Arc<HttpRoutes>,
        access: Arc<AccessRules>,
    ) -> Self {
        let openapi =
            serde_json::to_vec_pretty(&routes.openapi("sinew gateway", env!("CARGO_PKG_VERSION")))
                .unwrap_or_default();
        Self {
            shared,
            routes,
            access,
            openapi: Arc::new(Bytes::from(openapi)),
        }
    }

    /// The OpenAPI document served at `openapi_path`.
    pub fn openapi(&self) -> Bytes {
        (*self.openapi).clone()
    }

    /// Serves HTTP/1.1 and HTTP/2 (cleartext) on `listener` until `signal`,
    /// then waits for the requests in flight.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        signal: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE);
        let mut signal = std::pin::pin!(signal);
        loop {
            let permit = tokio::select! {
                () = &mut signal => break,
                permit = slots.clone().acquire_owned() => permit.map_err(std::io::Error::other)?,
            };
            let (stream, peer) = tokio::select! {
                () = &mut signal => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let service = self.clone();
            let connection = builder.serve_connection(
                TokioIo::new(stream),
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let service = service.clone();
                    async move { Ok::<_, Infallible>(service.handle(request, Some(peer)).await) }
                }),
            );
            let connection = graceful.watch(connection.into_owned());
            tokio::spawn(async move {
                let _permit = permit;
                let _ = connection.await;
            });
        }
        graceful.shutdown().await;
        Ok(())
    }

    /// Answers one HTTP request.
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
        peer: Option<SocketAddr>,
    ) -> http::Response<HttpBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<sinew_core::BoxError>,
    {
        let origin = request.headers().get(header::ORIGIN).cloned();
        let mut response = self.answer(request, peer).await;
        self.cors(origin.as_ref(), response.headers_mut());
        response
    }

    async fn answer<B>(
        &self,
        request: http::Request<B>,
        peer: Option<SocketAddr>,
    ) -> http::Response<HttpBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<sinew_core::BoxError>,
    {
        let settings = &self.shared.settings;
        if request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return self.preflight(&request);
        }
        if request.method() == Method::GET && request.uri().path() == settings.openapi_path {
            return respond(StatusCode::OK, "application/json", (*self.openapi).clone());
        }
        let Some((binding, captures)) = self.routes.find(request.method(), request.uri().path())
        else {
            return self.error(&Status::not_found(format!(
                "no route for {} {}",
                request.method(),
                request.uri().path()
            )));
        };
        if request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|length| length > settings.max_body_bytes)
        {
            return self.too_large();
        }
        let (parts, body) = request.into_parts();

        // The gRPC call's head: the caller's metadata. Access is checked
        // on it before the body is read: an unauthenticated caller costs
        // no body and no JSON parse.
        let mut grpc = http::Request::builder()
            .method(Method::POST)
            .uri(binding.grpc_path())
            .body(())
            .expect("a path from the descriptors is a valid URI");
        for (name, value) in &parts.headers {
            if !is_http_only(name) {
                grpc.headers_mut().append(name, value.clone());
            }
        }
        let headers = grpc.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        // Only the gateway names a principal.
        headers.remove(forward::PRINCIPAL_HEADER);
        headers.remove(forward::SCOPES_HEADER);
        let (mut grpc_parts, ()) = grpc.into_parts();
        match self.access.check(&grpc_parts).await {
            Ok(Some(principal)) => {
                grpc_parts.extensions.insert(Arc::new(principal));
            }
            Ok(None) => {}
            Err(status) => return self.error(&status),
        }
        if let Some(peer) = peer {
            grpc_parts.extensions.insert(peer);
        }

        let read = http_body_util::Limited::new(body, settings.max_body_bytes).collect();
        let body = match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                return self.too_large();
            }
            Ok(Err(_)) => return self.error(&Status::cancelled("the request body did not arrive")),
            Err(_) => {
                return self.error(&Status::deadline_exceeded(
                    "the request body took too long to arrive",
                ));
            }
        };
        let message = match binding.request(&captures, parts.uri.query(), &body) {
            Ok(message) => message,
            Err(error) => return self.error(&Status::invalid_argument(error.to_string())),
        };
        let grpc = http::Request::from_parts(
            grpc_parts,
            tonic::body::Body::new(Full::new(frame(&message))),
        );

        let table = self.shared.current();
        let span = tracing::info_span!("http", method = %parts.method, path = %parts.uri.path());
        let response = match self.shared.local.get() {
            // A handler the gateway hosts: its own server answers, with the
            // caller's metadata as it came (credentials included).
            Some(local) if table.route(binding.grpc_path()).is_none() => {
                match tower::ServiceExt::oneshot(local.clone(), grpc).await {
                    Ok(response) => response.map(tonic::body::Body::new),
                    Err(error) => sinew_client::to_status(error).into_http(),
                }
            }
            _ => {
                tracing::Instrument::instrument(forward::forward(&self.shared, table, grpc), span)
                    .await
            }
        };

        let accept = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let gzip = settings.gzip
            && parts
                .headers
                .get_all(header::ACCEPT_ENCODING)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.split(',').any(accepts_gzip));
        if let Some(status) = Status::from_header_map(response.headers())
            && status.code() != Code::Ok
        {
            return self.error(&status);
        }
        if binding.is_server_streaming() {
            let sse = accept.contains("text/event-stream");
            return self.stream(binding.clone(), response.into_body(), sse);
        }
        self.unary(binding, response.into_body(), gzip).await
    }

    async fn unary(
        &self,
        binding: &Binding,
        body: tonic::body::Body,
        gzip: bool,
    ) -> http::Response<HttpBody> {
        let collected = match body.collect().await {
            Ok(collected) => collected,
            Err(status) => return self.error(&status),
        };
        let status = collected
            .trailers()
            .and_then(Status::from_header_map)
            .unwrap_or_else(|| Status::unknown("the upstream answer ended without a status"));
        if status.code() != Code::Ok {
            return self.error(&status);
        }
        let mut bytes = collected.to_bytes();
        let message = match next_message(&mut bytes) {
            Ok(Some(message)) => message,
            Ok(None) => return self.error(&Status::internal("the upstream answered no message")),
            Err(status) => return self.error(&status),
        };
        let json = match DynamicMessage::decode(binding.method().output(), message)
            .map_err(|e| Status::internal(format!("the upstream's answer does not decode: {e}")))
            .and_then(|m| {
                binding
                    .response_json(&m, false)
                    .map_err(|e| Status::internal(e.to_string()))
            }) {
            Ok(json) => json,
            Err(status) => return self.error(&status),
        };
        if gzip && json.len() >= crate::config::GZIP_MIN_BYTES {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            if encoder.write_all(&json).is_ok()
                && let Ok(compressed) = encoder.finish()
            {
                let mut response =
                    respond(StatusCode::OK, "application/json", Bytes::from(compressed));
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                response
                    .headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
                return response;
            }
        }
        respond(StatusCode::OK, "application/json", Bytes::from(json))
    }

    /// A server stream, one JSON document per message as it arrives.
    fn stream(
        &self,
        binding: Binding,
        body: tonic::body::Body,
        sse: bool,
    ) -> http::Response<HttpBody> {
        // At most this many JSON documents wait for a slow reader.
        let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(16);
        let pool = self.shared.contracts.pool().clone();
        tokio::spawn(async move {
            let closed = sender.clone();
            tokio::select! {
                // The caller went away: the upstream stream is dropped.
                () = closed.closed() => {}
                () = pump(&binding, body, &sender, sse, &pool) => {}
            }
        });
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver
                .recv()
                .await
                .map(|bytes| (Ok::<_, Infallible>(http_body::Frame::data(bytes)), receiver))
        });
        let content_type = if sse {
            "text/event-stream"
        } else {
            "application/x-ndjson"
        };
        let mut response = http::Response::new(UnsyncBoxBody::new(StreamBody::new(stream)));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }

    /// The JSON `google.rpc.Status` of `status`, with its HTTP status.
    fn error(&self, status: &Status) -> http::Response<HttpBody> {
        let json = status_json(status, self.shared.contracts.pool());
        let mut response = respond(
            transcode::http_status(status.code()),
            "application/json",
            Bytes::from(json),
        );
        if let Some(seconds) = status.metadata().get(forward::RETRY_AFTER)
            && let Ok(value) = HeaderValue::from_bytes(seconds.as_bytes())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }

    fn too_large(&self) -> http::Response<HttpBody> {
        let status = Status::resource_exhausted(format!(
            "the request body is over the limit of {} bytes",
            self.shared.settings.max_body_bytes
        ));
        let mut response = self.error(&status);
        *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        response
    }

    /// Whether `origin` may call, and what to say so with.
    fn allowed(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origins = &self.shared.settings.cors_origins;
        let origin = origin?;
        if origins.iter().any(|o| o == "*") {
            return Some(HeaderValue::from_static("*"));
        }
        origins
            .iter()
            .any(|o| o.as_bytes() == origin.as_bytes())
            .then(|| origin.clone())
    }

    fn cors(&self, origin: Option<&HeaderValue>, headers: &mut http::HeaderMap) {
        if let Some(allow) = self.allowed(origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            headers.append(header::VARY, HeaderValue::from_static("origin"));
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("retry-after, grpc-status, grpc-message"),
            );
        }
    }

    fn preflight<B>(&self, request: &http::Request<B>) -> http::Response<HttpBody> {
        let mut response = http::Response::new(empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        if self
            .allowed(request.headers().get(header::ORIGIN))
            .is_some()
        {
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
            if let Some(asked) = request
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                self.shared.settings.cors_max_age.as_secs().into(),
            );
        }
        response
    }
}

/// Whether one `Accept-Encoding` item accepts gzip (`gzip`, `gzip;q=0.5`;
/// not `gzip;q=0`).
fn accepts_gzip(item: &str) -> bool {
    let mut parts = item.split(';').map(str::trim);
    if parts.next() != Some("gzip") {
        return false;
    }
    parts
        .filter_map(|p| p.strip_prefix("q="))
        .all(|q| q.parse::<f32>().is_ok_and(|q| q > 0.0))
}

/// Headers of the HTTP exchange itself, not the call's metadata.
fn is_http_only(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "content-type"
            | "accept"
            | "accept-encoding"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "origin"
            | "referer"
            | "cookie"
            | "te"
            | "user-agent"
    ) || name.as_str().starts_with("access-control-")
        || name.as_str().starts_with("sec-")
}

/// `message` as one gRPC frame.
fn frame(message: &DynamicMessage) -> Bytes {
    let length = message.encoded_len();
    let mut out = BytesMut::with_capacity(length + 5);
    out.put_u8(0);
    out.put_u32(length as u32);
    message.encode_raw(&mut out);
    out.freeze()
}

/// Sends each message of a server stream's answer as one JSON document,
/// and its error, if it ends with one, as the last.
async fn pump(
    binding: &Binding,
    mut body: tonic::body::Body,
    sender: &tokio::sync::mpsc::Sender<Bytes>,
    sse: bool,
    pool: &prost_reflect::DescriptorPool,
) {
    let line = |json: &[u8], error: bool| -> Bytes {
        let mut out = Vec::with_capacity(json.len() + 24);
        match (sse, error) {
            (true, error) => {
                if error {
                    out.extend_from_slice(b"event: error\n");
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(json);
                out.extend_from_slice(b"\n\n");
            }
            (false, true) => {
                out.extend_from_slice(b"{\"error\":");
                out.extend_from_slice(json);
                out.extend_from_slice(b"}\n");
            }
            (false, false) => {
                out.extend_from_slice(json);
                out.push(b'\n');
            }
        }
        Bytes::from(out)
    };
    let fail = |status: &Status| line(&status_json(status, pool), true);
    let mut buffer = BytesMut::new();
    loop {
        let frame = match body.frame().await {
            Some(Ok(frame)) => frame,
            Some(Err(status)) => {
                let _ = sender.send(fail(&status)).await;
                return;
            }
            None => {
                // No trailers: the answer broke off.
                let status = Status::unknown("the upstream's answer ended without a status");
                let _ = sender.send(fail(&status)).await;
                return;
            }
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                let status = frame
                    .trailers_ref()
                    .and_then(Status::from_header_map)
                    .unwrap_or_else(|| Status::unknown("the upstream's answer has no status"));
                if status.code() != Code::Ok {
                    let _ = sender.send(fail(&status)).await;
                }
                return;
            }
        };
        buffer.put(data);
        loop {
            let message = match next_message(&mut buffer) {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(status) => {
                    let _ = sender.send(fail(&status)).await;
                    return;
                }
            };
            let json = DynamicMessage::decode(binding.method().output(), message)
                .map_err(|e| {
                    Status::internal(format!("the upstream's answer does not decode: {e}"))
                })
                .and_then(|m| {
                    binding
                        .response_json(&m, false)
                        .map_err(|e| Status::internal(e.to_string()))
                });
            match json {
                Ok(json) => {
                    if sender.send(line(&json, false)).await.is_err() {
                        return;
                    }
                }
                Err(status) => {
                    let _ = sender.send(fail(&status)).await;
                    return;
                }
            }
        }
    }
}

/// The next whole message of a gRPC stream, if it has all arrived.
fn next_message<B: bytes::Buf + AsRef<[u8]> + SplitTo>(
    bytes: &mut B,
) -> Result<Option<Bytes>, Status> {
    if bytes.as_ref().len() < 5 {
        return Ok(None);
    }
    let head = bytes.as_ref();
    let compressed = head[0];
    let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if head.len() < 5 + length {
        return Ok(None);
    }
    if compressed != 0 {
        return Err(Status::internal("the upstream compressed its answer"));
    }
    bytes.advance(5);
    Ok(Some(bytes.take_front(length)))
}

/// The two buffers messages are cut from.
trait SplitTo {
    fn take_front(&mut self, n: usize) -> Bytes;
}

impl SplitTo for Bytes {
    fn take_front(&mut self, n: usize) -> Bytes {
        self.split_to(n)
    }
}

impl SplitTo for BytesMut {
    fn take_front(&mut self, n: usize) -> Bytes {
        self.split_to(n).freeze()
    }
}

fn status_json(status: &Status, pool: &prost_reflect::DescriptorPool) -> Vec<u8> {
    transcode::status_json(status.code(), status.message(), status.details(), pool)
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> http::Response<HttpBody> {
    let mut response = http::Response::new(UnsyncBoxBody::new(Full::new(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn empty() -> HttpBody {
    UnsyncBoxBody::new(http_body_util::Empty::new())
}
