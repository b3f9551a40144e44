//! The load-test engine behind `sinew bench`: one unary gRPC call sent over
//! and over on a few HTTP/2 connections by a fixed number of workers.
//!
//! The caller (the CLI) encodes the request message and parses the flags;
//! [`run`] opens the connections, drives the workers and returns a
//! [`Summary`] that prints like ghz or h2load and serializes for `--json`.
//!
//! The hot path costs as little as it can: the gRPC frame, URI and headers
//! are built once and cloned per call (the frame and URI by reference
//! count; the header map is one small allocation that `h2` consumes), each
//! worker is one task spawned once, and the workers run on one thread (a
//! `LocalSet`), so that they share one latency histogram and one set of
//! status counts without locks: the memory of a run does not grow with its
//! concurrency beyond the workers themselves (about 100 KiB of histogram in
//! all). [`run`] must be called on a `current_thread` runtime's
//! `block_on`, which is also the cheapest per call when the server under
//! test shares the machine.
//!
//! A `-z` run ends at its deadline: calls still in flight get
//! [`DRAIN_GRACE`] to finish, and those that do not are counted as
//! [`UNFINISHED`]. A `-n` run waits for every call (give `--timeout` to
//! bound each).
//!
//! HTTP/2 is spoken with the `h2` crate directly rather than through
//! hyper's client: hyper adds a dispatch channel, a dispatch task and one
//! spawned task per request on top of `h2`, which measured at 6.9 µs of
//! client CPU per call against 4.0 µs for `h2` alone.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use hdrhistogram::Histogram;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, TE, USER_AGENT};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[cfg(test)]
mod testserver;

/// HTTP/2 stream window: large enough that a response never waits for a
/// window update.
const STREAM_WINDOW: u32 = 1 << 20;
/// HTTP/2 connection window.
const CONNECTION_WINDOW: u32 = 8 << 20;
/// Highest latency recorded (100 s, in µs); longer calls are recorded as
/// this.
const MAX_TRACKED_US: u64 = 100_000_000;
/// How long calls in flight at the end of a `-z` run may take to finish.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Key under which calls still in flight after [`DRAIN_GRACE`] are counted.
pub const UNFINISHED: &str = "unfinished at the end";
/// Number of lines in the summary's latency histogram.
const HISTOGRAM_BUCKETS: u64 = 10;
/// Key under which responses without any `grpc-status` are counted.
pub const MISSING_STATUS: &str = "missing grpc-status";
/// Key under which responses with an unparsable `grpc-status` are counted.
pub const INVALID_STATUS: &str = "invalid grpc-status";
/// Prefix of the keys under which transport errors are counted.
pub const TRANSPORT_ERROR: &str = "transport error";

/// Headers that HTTP/2 forbids (RFC 9113, section 8.2.2); `te` is set by
/// the engine.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Where to send the calls.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port` or `https://host:port`; any path is ignored.
    pub uri: Uri,
    /// TLS settings and the name to verify, required for (and only for)
    /// `https` targets. ALPN `h2` is added to the configuration if missing.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// How long each connection's TCP connect, TLS and HTTP/2 handshakes
    /// may take together.
    pub connect_timeout: Duration,
}

/// The unary call to repeat.
#[derive(Debug, Clone)]
pub struct Call {
    /// `/package.Service/Method`.
    pub path: PathAndQuery,
    /// User metadata sent with every call. `content-type`, `te` and
    /// `grpc-timeout` are set by the engine; a `user-agent` here wins over
    /// the engine's.
    pub metadata: HeaderMap,
    /// The encoded request message, without the gRPC frame header.
    pub message: Bytes,
    /// Deadline of each call: sent as `grpc-timeout` and enforced on the
    /// client (an expired call counts as `DEADLINE_EXCEEDED`).
    pub timeout: Option<Duration>,
}

/// When the run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After exactly this many calls (`-n`).
    Total(u64),
    /// When this much time has passed (`-z`); calls in flight then finish
    /// and count.
    Duration(Duration),
}

/// How to load the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Number of workers, each with one call in flight at a time (`-c`).
    pub concurrency: usize,
    /// Number of HTTP/2 connections the workers are spread over,
    /// round-robin (`--connections`). More connections than workers are
    /// not opened: the extra ones would stay idle.
    pub connections: usize,
    /// When to stop.
    pub stop: Stop,
    /// Highest rate of calls per second over all workers (`--rps`).
    pub rps: Option<f64>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Plan {
    /// Checks that the plan can run.
    ///
    /// # Errors
    ///
    /// [`BenchError::InvalidPlan`] naming the first thing wrong.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |reason: &'static str| Err(BenchError::InvalidPlan(reason));
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1");
        }
        if self.connections == 0 {
            return bad("connections must be at least 1");
        }
        match self.stop {
            Stop::Total(0) => return bad("the number of requests must be at least 1"),
            Stop::Duration(d) if d.is_zero() => return bad("the duration must be more than zero"),
            _ => {}
        }
        if let Some(rps) = self.rps
            && !(rps.is_finite() && rps > 0.0)
        {
            return bad("the rate limit must be a positive number of requests per second");
        }
        Ok(())
    }

    /// Connections actually opened: never more than the workers.
    fn effective_connections(&self) -> usize {
        self.connections.min(self.concurrency)
    }
}

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The plan asks for something impossible.
    #[error("invalid bench plan: {0}")]
    InvalidPlan(&'static str),
    /// The target address cannot be used.
    #[error("invalid target {uri}: {reason}")]
    InvalidTarget {
        /// The target as given.
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A metadata header cannot be sent over HTTP/2.
    #[error("metadata header {0:?} cannot be sent over HTTP/2 (it is connection-specific)")]
    InvalidMetadata(String),
    /// The request message does not fit in one gRPC frame.
    #[error("the request message is {0} bytes; a gRPC message can be at most 4 GiB")]
    MessageTooLarge(usize),
    /// No TCP connection could be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialed.
        addr: String,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// The address dialed.
        addr: String,
        /// The TLS error.
        #[source]
        source: io::Error,
    },
    /// The server chose another protocol than HTTP/2 during TLS ALPN.
    #[error(
        "{addr} does not speak HTTP/2 over TLS (it chose ALPN protocol {protocol:?}); is it a gRPC server?"
    )]
    NotHttp2 {
        /// The address dialed.
        addr: String,
        /// The protocol the server chose.
        protocol: String,
    },
    /// The HTTP/2 connection could not be set up.
    #[error("HTTP/2 handshake with {addr} failed: {source}")]
    Http2 {
        /// The address dialed.
        addr: String,
        /// The HTTP/2 error.
        #[source]
        source: h2::Error,
    },
    /// A worker task panicked or was cancelled.
    #[error("a bench worker stopped unexpectedly: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Fastest call.
    pub min: u64,
    /// Mean over all calls.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest call.
    pub max: u64,
}

/// One line of the latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Upper bound of the bucket, in microseconds (inclusive).
    pub le_us: u64,
    /// Calls whose latency falls in this bucket (and above the previous).
    pub count: u64,
}

/// The plan as run, echoed in the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanEcho {
    /// Workers.
    pub concurrency: usize,
    /// Connections opened.
    pub connections: usize,
    /// Calls asked for with `-n`.
    pub total: Option<u64>,
    /// Duration asked for with `-z`, in seconds.
    pub duration_seconds: Option<f64>,
    /// Rate limit, in calls per second.
    pub rps: Option<f64>,
}

impl PlanEcho {
    fn new(plan: &Plan) -> Self {
        let (total, duration_seconds) = match plan.stop {
            Stop::Total(n) => (Some(n), None),
            Stop::Duration(d) => (None, Some(d.as_secs_f64())),
        };
        PlanEcho {
            concurrency: plan.concurrency,
            connections: plan.effective_connections(),
            total,
            duration_seconds,
            rps: plan.rps,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Calls completed, whatever their outcome.
    pub requests: u64,
    /// Wall time from the first call to the last response.
    pub elapsed_seconds: f64,
    /// `requests / elapsed_seconds`.
    pub rps: f64,
    /// Latency over all completed calls (transport errors included).
    pub latency_us: Latency,
    /// About ten equal-width latency buckets from the fastest to the
    /// slowest call.
    pub histogram: Vec<Bucket>,
    /// Calls per outcome: a gRPC status name such as `OK` or
    /// `UNAVAILABLE`, [`MISSING_STATUS`], [`INVALID_STATUS`], or a key
    /// starting with [`TRANSPORT_ERROR`]. The counts add up to `requests`.
    pub codes: BTreeMap<String, u64>,
    /// The plan that ran.
    pub plan: PlanEcho,
}

/// Names of the gRPC status codes, by number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const UNKNOWN: u8 = 2;
const DEADLINE_EXCEEDED: u8 = 4;
const UNIMPLEMENTED: u8 = 12;
const INTERNAL: u8 = 13;
const UNAVAILABLE: u8 = 14;
const UNAUTHENTICATED: u8 = 16;
const PERMISSION_DENIED: u8 = 7;

/// The outcome of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A gRPC status code, 0 to 16.
    Code(u8),
    /// Anything else: missing or invalid status, transport error.
    Other(Cow<'static, str>),
}

/// Builds the gRPC length-prefixed frame of an uncompressed message.
fn grpc_frame(message: &[u8]) -> Result<Bytes, BenchError> {
    let len =
        u32::try_from(message.len()).map_err(|_| BenchError::MessageTooLarge(message.len()))?;
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(len);
    frame.put_slice(message);
    Ok(frame.freeze())
}

/// Encodes a deadline as a `grpc-timeout` value: at most eight digits, in
/// the finest unit that fits.
fn grpc_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let (value, unit) = if nanos <= MAX {
        (nanos, 'n')
    } else if nanos / 1_000 <= MAX {
        (nanos / 1_000, 'u')
    } else if nanos / 1_000_000 <= MAX {
        (nanos / 1_000_000, 'm')
    } else if nanos / 1_000_000_000 <= MAX {
        (nanos / 1_000_000_000, 'S')
    } else if nanos / 60_000_000_000 <= MAX {
        (nanos / 60_000_000_000, 'M')
    } else {
        ((nanos / 3_600_000_000_000).min(MAX), 'H')
    };
    HeaderValue::try_from(format!("{value}{unit}"))
        .expect("digits and a letter are a valid header value")
}

/// Maps an HTTP status other than 200 to a gRPC code, as in gRPC's
/// "HTTP to gRPC Status Code Mapping".
fn http_to_grpc(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => INTERNAL,
        401 => UNAUTHENTICATED,
        403 => PERMISSION_DENIED,
        404 => UNIMPLEMENTED,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

/// Reads a `grpc-status` value.
fn parse_status(value: Option<&HeaderValue>) -> Outcome {
    let Some(value) = value else {
        return Outcome::Other(Cow::Borrowed(MISSING_STATUS));
    };
    match value.as_bytes() {
        [d @ b'0'..=b'9'] => Outcome::Code(d - b'0'),
        [b'1', d @ b'0'..=b'6'] => Outcome::Code(10 + d - b'0'),
        _ => Outcome::Other(Cow::Borrowed(INVALID_STATUS)),
    }
}

/// The outcome of a response whose head has arrived, if the head decides
/// it: a non-200 HTTP status, or a trailers-only response.
fn outcome_from_head(status: StatusCode, headers: &HeaderMap) -> Option<Outcome> {
    if status != StatusCode::OK {
        return Some(Outcome::Code(http_to_grpc(status)));
    }
    headers.get(&GRPC_STATUS).map(|v| parse_status(Some(v)))
}

/// The counting key of a transport error: the error and its causes.
fn transport_key(error: &h2::Error) -> Cow<'static, str> {
    let mut key = format!("{TRANSPORT_ERROR}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        key.push_str(": ");
        key.push_str(&cause.to_string());
        source = cause.source();
    }
    Cow::Owned(key)
}

/// Everything a worker clones into each request.
struct Prepared {
    uri: Uri,
    headers: HeaderMap,
    frame: Bytes,
    timeout: Option<Duration>,
}

impl Prepared {
    fn new(target: &Target, call: &Call) -> Result<Self, BenchError> {
        let frame = grpc_frame(&call.message)?;
        let authority =
            target
                .uri
                .authority()
                .cloned()
                .ok_or_else(|| BenchError::InvalidTarget {
                    uri: target.uri.to_string(),
                    reason: "it has no host and port",
                })?;
        let scheme = target.uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(call.path.clone())
            .build()
            .map_err(|_| BenchError::InvalidTarget {
                uri: target.uri.to_string(),
                reason: "it cannot be combined with the method path",
            })?;
        let mut headers = HeaderMap::with_capacity(call.metadata.len() + 4);
        for (name, value) in &call.metadata {
            if CONNECTION_SPECIFIC.contains(&name.as_str()) {
                return Err(BenchError::InvalidMetadata(name.as_str().to_owned()));
            }
            headers.append(name.clone(), value.clone());
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        if !headers.contains_key(USER_AGENT) {
            headers.insert(
                USER_AGENT,
                HeaderValue::from_static(concat!("sinew-bench/", env!("CARGO_PKG_VERSION"))),
            );
        }
        headers.remove(&GRPC_TIMEOUT);
        if let Some(timeout) = call.timeout {
            headers.insert(GRPC_TIMEOUT.clone(), grpc_timeout(timeout));
        }
        Ok(Prepared {
            uri,
            headers,
            frame,
            timeout: call.timeout,
        })
    }

    fn request(&self) -> Request<()> {
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Sends one call and waits for its whole response.
async fn call_once(sender: &mut SendRequest<Bytes>, prepared: &Prepared) -> Outcome {
    match exchange(sender, prepared).await {
        Ok(outcome) => outcome,
        Err(error) => Outcome::Other(transport_key(&error)),
    }
}

async fn exchange(
    sender: &mut SendRequest<Bytes>,
    prepared: &Prepared,
) -> Result<Outcome, h2::Error> {
    // Waits only when the server's limit on concurrent streams is reached.
    poll_fn(|cx| sender.poll_ready(cx)).await?;
    let (response, mut stream) = sender.send_request(prepared.request(), false)?;
    stream.send_data(prepared.frame.clone(), true)?;
    let response = response.await?;
    if let Some(outcome) = outcome_from_head(response.status(), response.headers()) {
        return Ok(outcome);
    }
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        let len = data?.len();
        body.flow_control().release_capacity(len)?;
    }
    Ok(match body.trailers().await? {
        Some(trailers) => parse_status(trailers.get(&GRPC_STATUS)),
        None => Outcome::Other(Cow::Borrowed(MISSING_STATUS)),
    })
}

/// What the workers saw.
struct Tally {
    latency: Histogram<u64>,
    codes: [u64; 17],
    other: BTreeMap<Cow<'static, str>, u64>,
    /// Calls abandoned at the end of a `-z` run: counted, not timed.
    unfinished: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            // A fixed range, one histogram per run: merging hdrhistogram
            // 7.6's auto-resizing histograms of different sizes gave a
            // wrong min and max.
            latency: Histogram::new_with_bounds(1, MAX_TRACKED_US, 3)
                .expect("the histogram bounds are valid"),
            codes: [0; 17],
            other: BTreeMap::new(),
            unfinished: 0,
        }
    }

    fn record(&mut self, outcome: Outcome, micros: u64) {
        self.latency
            .saturating_record(micros.clamp(1, MAX_TRACKED_US));
        match outcome {
            Outcome::Code(code) => self.codes[usize::from(code)] += 1,
            Outcome::Other(key) => *self.other.entry(key).or_insert(0) += 1,
        }
    }

    /// Adds `other`'s counts to these (the tests build tallies in parts).
    #[cfg(test)]
    fn merge(&mut self, other: Tally) {
        self.latency
            .add(&other.latency)
            .expect("histograms with the same bounds merge");
        for (mine, theirs) in self.codes.iter_mut().zip(other.codes) {
            *mine += theirs;
        }
        for (key, count) in other.other {
            *self.other.entry(key).or_insert(0) += count;
        }
    }
}

/// The shared schedule of a rate-limited run: call `i` may start at
/// `start + i / rate`.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    rate: f64,
}

impl Schedule {
    fn slot(&self, ticket: u64) -> Instant {
        self.start + Duration::from_secs_f64(ticket as f64 / self.rate)
    }
}

/// State shared by the workers of a run.
struct Shared {
    tickets: AtomicU64,
    /// Completed calls, counted only when a progress bar shows them.
    done: Option<AtomicU64>,
    total: Option<u64>,
    deadline: Option<Instant>,
    schedule: Option<Schedule>,
}

impl Shared {
    /// Takes the next ticket and waits for its slot; `None` when the run
    /// is over for this worker.
    async fn next(&self) -> Option<u64> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        if self.total.is_some_and(|total| ticket >= total) {
            return None;
        }
        if let Some(schedule) = &self.schedule {
            let slot = schedule.slot(ticket);
            if self.deadline.is_some_and(|deadline| slot >= deadline) {
                return None;
            }
            tokio::time::sleep_until(slot).await;
        } else if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return None;
        }
        Some(ticket)
    }
}

/// One worker: calls one after the other until the run is over, each
/// recorded into the run's `tally`; `in_flight` counts the call it is in.
async fn worker(
    mut sender: SendRequest<Bytes>,
    prepared: Arc<Prepared>,
    shared: Arc<Shared>,
    tally: Rc<RefCell<Tally>>,
    in_flight: Rc<Cell<u64>>,
) {
    while shared.next().await.is_some() {
        in_flight.set(in_flight.get() + 1);
        let began = Instant::now();
        let outcome = match prepared.timeout {
            None => call_once(&mut sender, &prepared).await,
            Some(timeout) => tokio::time::timeout(timeout, call_once(&mut sender, &prepared))
                .await
                .unwrap_or(Outcome::Code(DEADLINE_EXCEEDED)),
        };
        let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        in_flight.set(in_flight.get() - 1);
        tally.borrow_mut().record(outcome, micros);
        if let Some(done) = &shared.done {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Opens one HTTP/2 connection and spawns its driver task.
async fn connect(target: &Target, addr: &str) -> Result<SendRequest<Bytes>, BenchError> {
    tokio::time::timeout(target.connect_timeout, handshakes(target, addr))
        .await
        .unwrap_or_else(|_| {
            Err(BenchError::Connect {
                addr: addr.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the TCP, TLS and HTTP/2 handshakes took over {:?}",
                        target.connect_timeout
                    ),
                ),
            })
        })
}

/// TCP, then TLS for `https`, then the HTTP/2 handshake.
async fn handshakes(target: &Target, addr: &str) -> Result<SendRequest<Bytes>, BenchError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| BenchError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    tcp.set_nodelay(true)
        .map_err(|source| BenchError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    match &target.tls {
        None => handshake(tcp, addr).await,
        Some((config, name)) => {
            let mut config = config.as_ref().clone();
            if !config.alpn_protocols.iter().any(|p| p == b"h2") {
                config.alpn_protocols = vec![b"h2".to_vec()];
            }
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tls = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|source| BenchError::Tls {
                    addr: addr.to_owned(),
                    source,
                })?;
            if let Some(protocol) = tls.get_ref().1.alpn_protocol()
                && protocol != b"h2"
            {
                return Err(BenchError::NotHttp2 {
                    addr: addr.to_owned(),
                    protocol: String::from_utf8_lossy(protocol).into_owned(),
                });
            }
            handshake(tls, addr).await
        }
    }
}

async fn handshake<T>(io: T, addr: &str) -> Result<SendRequest<Bytes>, BenchError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake(io)
        .await
        .map_err(|source| BenchError::Http2 {
            addr: addr.to_owned(),
            source,
        })?;
    // Errors of the connection reach the calls in flight on it.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Checks the target and returns the `host:port` to dial.
fn dial_address(target: &Target) -> Result<String, BenchError> {
    let invalid = |reason| BenchError::InvalidTarget {
        uri: target.uri.to_string(),
        reason,
    };
    let https = match target.uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(invalid("the scheme must be http or https")),
    };
    match (https, target.tls.is_some()) {
        (true, false) => return Err(invalid("an https target needs TLS settings")),
        (false, true) => return Err(invalid("TLS settings were given for a plain http target")),
        _ => {}
    }
    let authority = target
        .uri
        .authority()
        .ok_or_else(|| invalid("it has no host and port"))?;
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let host = authority.host();
    Ok(format!("{host}:{port}"))
}

/// Shows progress on stderr until dropped.
struct ProgressTask {
    task: tokio::task::JoinHandle<()>,
    bar: indicatif::ProgressBar,
}

impl ProgressTask {
    fn start(plan: &Plan, shared: Arc<Shared>, start: Instant) -> Self {
        use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
        let (len, template) = match plan.stop {
            Stop::Total(n) => (n, "{bar:40} {pos}/{len} calls  {msg}"),
            Stop::Duration(d) => (
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                "{bar:40} {elapsed}/{msg}",
            ),
        };
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(
            ProgressStyle::with_template(template).expect("the progress template is valid"),
        );
        let stop = plan.stop;
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            loop {
                ticks.tick().await;
                let done = shared
                    .done
                    .as_ref()
                    .map_or(0, |d| d.load(Ordering::Relaxed));
                let secs = start.elapsed().as_secs_f64();
                let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
                match stop {
                    Stop::Total(_) => {
                        shown.set_position(done);
                        shown.set_message(format!("{rate:.0} calls/s"));
                    }
                    Stop::Duration(d) => {
                        let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                        shown.set_position(ms.min(len));
                        shown.set_message(format!(
                            "{}s  {done} calls  {rate:.0} calls/s",
                            d.as_secs_f64()
                        ));
                    }
                }
            }
        });
        ProgressTask { task, bar }
    }
}

impl Drop for ProgressTask {
    fn drop(&mut self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// Runs the load test and summarizes it.
///
/// Spawns its tasks on the calling tokio runtime (which needs the time and
/// I/O drivers); a `current_thread` runtime costs the least per call.
///
/// # Errors
///
/// An invalid plan or target, a message too large to frame, or a
/// connection that cannot be opened (TCP, TLS or HTTP/2). Failed calls are
/// not errors: they are counted in [`Summary::codes`].
pub async fn run(target: Target, call: Call, plan: Plan) -> Result<Summary, BenchError> {
    plan.validate()?;
    let addr = dial_address(&target)?;
    let prepared = Arc::new(Prepared::new(&target, &call)?);
    let mut senders = Vec::with_capacity(plan.effective_connections());
    for _ in 0..plan.effective_connections() {
        senders.push(connect(&target, &addr).await?);
    }

    let start = Instant::now();
    let (total, deadline) = match plan.stop {
        Stop::Total(n) => (Some(n), None),
        Stop::Duration(d) => (None, Some(start + d)),
    };
    let shared = Arc::new(Shared {
        tickets: AtomicU64::new(0),
        done: plan.progress.then(|| AtomicU64::new(0)),
        total,
        deadline,
        schedule: plan.rps.map(|rate| Schedule { start, rate }),
    });
    let progress = plan
        .progress
        .then(|| ProgressTask::start(&plan, Arc::clone(&shared), start));

    let tally = Rc::new(RefCell::new(Tally::new()));
    let in_flight = Rc::new(Cell::new(0));
    let local = tokio::task::LocalSet::new();
    let workers: Vec<_> = (0..plan.concurrency)
        .map(|i| {
            let sender = senders[i % senders.len()].clone();
            local.spawn_local(worker(
                sender,
                Arc::clone(&prepared),
                Arc::clone(&shared),
                Rc::clone(&tally),
                Rc::clone(&in_flight),
            ))
        })
        .collect();
    drop(senders);
    let finished = local.run_until(async {
        for handle in workers {
            handle.await?;
        }
        Ok::<(), tokio::task::JoinError>(())
    });
    match deadline {
        // Past the deadline and its grace, what is still in flight is
        // abandoned (dropping the set cancels it) and counted.
        Some(deadline) => {
            if let Ok(result) = tokio::time::timeout_at(deadline + DRAIN_GRACE, finished).await {
                result?;
            }
        }
        None => finished.await?,
    }
    drop(local);
    let elapsed = start.elapsed();
    let mut tally = tally.replace(Tally::new());
    tally.unfinished = in_flight.get();
    drop(progress);
    Ok(Summary::new(tally, elapsed, PlanEcho::new(&plan)))
}

impl Summary {
    fn new(tally: Tally, elapsed: Duration, plan: PlanEcho) -> Self {
        let hist = &tally.latency;
        let requests = hist.len() + tally.unfinished;
        let elapsed_seconds = elapsed.as_secs_f64();
        // Calls per second that finished: abandoned ones are not served.
        let rps = if elapsed_seconds > 0.0 {
            hist.len() as f64 / elapsed_seconds
        } else {
            0.0
        };
        let latency_us = if requests == 0 {
            Latency {
                min: 0,
                mean: 0.0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
            }
        } else {
            Latency {
                min: hist.min(),
                mean: hist.mean(),
                p50: hist.value_at_quantile(0.5),
                p90: hist.value_at_quantile(0.9),
                p99: hist.value_at_quantile(0.99),
                p999: hist.value_at_quantile(0.999),
                max: hist.max(),
            }
        };
        let mut codes = BTreeMap::new();
        for (code, &count) in tally.codes.iter().enumerate() {
            if count > 0 {
                codes.insert(CODE_NAMES[code].to_owned(), count);
            }
        }
        for (key, count) in tally.other {
            *codes.entry(key.into_owned()).or_insert(0) += count;
        }
        if tally.unfinished > 0 {
            codes.insert(UNFINISHED.to_owned(), tally.unfinished);
        }
        Summary {
            requests,
            elapsed_seconds,
            rps,
            latency_us,
            histogram: buckets(hist),
            codes,
            plan,
        }
    }
}

/// Splits the range from the fastest to the slowest call into equal
/// buckets; every recorded call lands in exactly one.
fn buckets(hist: &Histogram<u64>) -> Vec<Bucket> {
    if hist.is_empty() {
        return Vec::new();
    }
    let (min, max) = (hist.min(), hist.max());
    let n = if max > min {
        HISTOGRAM_BUCKETS.min(max - min)
    } else {
        1
    };
    let width = (max - min).div_ceil(n).max(1);
    let mut out: Vec<Bucket> = (1..=n)
        .map(|i| Bucket {
            le_us: (min + width * i).min(max),
            count: 0,
        })
        .collect();
    for value in hist.iter_recorded() {
        let v = hist.median_equivalent(value.value_iterated_to());
        let index = usize::try_from(v.saturating_sub(min).saturating_sub(1) / width)
            .unwrap_or(usize::MAX)
            .min(out.len() - 1);
        out[index].count += value.count_at_value();
    }
    out
}

/// Formats microseconds with a unit that suits them.
fn human_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1_000_000.0)
    } else if us >= 1_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{us:.0} µs")
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Summary:")?;
        writeln!(f, "  Requests:      {}", self.requests)?;
        writeln!(f, "  Total:         {:.3} s", self.elapsed_seconds)?;
        writeln!(f, "  Requests/sec:  {:.2}", self.rps)?;
        writeln!(
            f,
            "  Concurrency:   {} on {} connection(s){}",
            self.plan.concurrency,
            self.plan.connections,
            self.plan
                .rps
                .map(|r| format!(", limited to {r} rps"))
                .unwrap_or_default()
        )?;
        let l = &self.latency_us;
        writeln!(f, "  Fastest:       {}", human_us(l.min as f64))?;
        writeln!(f, "  Average:       {}", human_us(l.mean))?;
        writeln!(f, "  Slowest:       {}", human_us(l.max as f64))?;
        writeln!(f)?;
        writeln!(f, "Response time histogram:")?;
        let widest = self.histogram.iter().map(|b| b.count).max().unwrap_or(0);
        let labels: Vec<String> = self
            .histogram
            .iter()
            .map(|b| human_us(b.le_us as f64))
            .collect();
        let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        let count_width = widest.to_string().len();
        for (bucket, label) in self.histogram.iter().zip(&labels) {
            let bar = if widest == 0 {
                0
            } else {
                (bucket.count * 40).div_ceil(widest)
            };
            writeln!(
                f,
                "  {label:>label_width$} [{count:>count_width$}] |{bar}",
                count = bucket.count,
                bar = "#".repeat(usize::try_from(bar).unwrap_or(0)),
            )?;
        }
        writeln!(f)?;
        writeln!(f, "Latency distribution:")?;
        for (name, value) in [
            ("50", l.p50),
            ("90", l.p90),
            ("99", l.p99),
            ("99.9", l.p999),
        ] {
            writeln!(f, "  {name:>4} % in {}", human_us(value as f64))?;
        }
        writeln!(f)?;
        writeln!(f, "Status code distribution:")?;
        for (code, count) in &self.codes {
            writeln!(f, "  [{code}] {count} responses")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
