//! Transparent forwarding: a call's bytes go to the cluster its route
//! chooses, through that cluster's resilient client, and the answer's
//! bytes come back, for every streaming kind, with no decoding.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use sinew_client::CallOptions;
use sinew_core::{
    Rng,
    contract::{Idempotency, Streaming},
    deadline::Deadline,
};
use tokio::sync::{Semaphore, oneshot};
use tonic::{Status, body::Body};
use tower::{Layer, Service, ServiceExt as _};

use crate::{
    body::{Kind, Tee, Watched},
    compare::{self, Outcome},
    config::Settings,
    contracts::Contracts,
    ratelimit::{Limiter, Rate},
    table::{Choice, Route, Table},
};

pub use sinew_server::auth::{PRINCIPAL_HEADER, SCOPES_HEADER};
/// The header of a rate-limited call's answer that says when to retry, in
/// whole seconds (HTTP's `Retry-After` carries the same).
pub const RETRY_AFTER: &str = "retry-after";

/// Connection-level headers, which belong to one hop and are never
/// forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
];

/// What the gateway counts, for tests, probes and dashboards. Cheap to
/// read at any time.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) forwarded: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) shadowed: AtomicU64,
    pub(crate) shadow_skipped: AtomicU64,
    pub(crate) shadow_matched: AtomicU64,
    pub(crate) shadow_mismatched: AtomicU64,
    pub(crate) shadow_failed: AtomicU64,
    pub(crate) reloads: AtomicU64,
    pub(crate) reload_failures: AtomicU64,
}

macro_rules! getters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        impl Stats {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> u64 {
                    self.$name.load(Ordering::Relaxed)
                }
            )*
        }
    };
}

getters! {
    /// Calls forwarded upstream (shadow copies not counted).
    forwarded,
    /// Calls refused by a rate limit.
    rate_limited,
    /// Calls copied to a shadow cluster.
    shadowed,
    /// Calls that would have been shadowed, but `shadow_max_in_flight`
    /// shadows were under way.
    shadow_skipped,
    /// Shadow answers equal to the real ones.
    shadow_matched,
    /// Shadow answers that differed from the real ones (each logged, with
    /// the differences).
    shadow_mismatched,
    /// Shadow calls that could not be compared: the real call was
    /// cancelled, an answer was over `shadow_max_bytes`, or one side
    /// took longer than `shadow_timeout`.
    shadow_failed,
    /// Configuration reloads applied.
    reloads,
    /// Configuration reloads refused (the previous routes stayed).
    reload_failures,
}

/// What every forwarded call shares.
pub(crate) struct Shared {
    pub(crate) table: RwLock<Arc<Table>>,
    pub(crate) contracts: Contracts,
    pub(crate) settings: Settings,
    limiter: Limiter,
    rng: Rng,
    shadow_slots: Arc<Semaphore>,
    pub(crate) stats: Arc<Stats>,
    /// The gateway's own gRPC side, for HTTP calls to the handlers it
    /// hosts (calls with no route).
    pub(crate) local: std::sync::OnceLock<sinew_client::Client>,
    /// Whether calls to methods no contract declares are denied: with an
    /// authenticator, unless undeclared methods are allowed.
    pub(crate) deny_unknown: AtomicBool,
}

impl Shared {
    pub(crate) fn new(table: Table, contracts: Contracts, settings: Settings) -> Self {
        Self {
            table: RwLock::new(Arc::new(table)),
            limiter: Limiter::new(settings.rate_limit_max_clients),
            rng: settings.seed.map_or_else(Rng::from_entropy, Rng::seeded),
            shadow_slots: Arc::new(Semaphore::new(settings.shadow_max_in_flight)),
            contracts,
            settings,
            stats: Arc::default(),
            local: std::sync::OnceLock::new(),
            deny_unknown: AtomicBool::new(false),
        }
    }

    /// The table calls start on now.
    pub(crate) fn current(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Whether the gateway forwards calls to `path`, or leaves them to the
/// server it runs in: its own health and reflection are never forwarded.
fn local(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// A server-wide layer of sinew's server scaffold
/// (`Server::layer(gateway.layer())`): calls with a route are forwarded,
/// the others go on to the server's own services (health, reflection).
#[derive(Clone)]
pub struct ForwardLayer {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ForwardLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ForwardLayer {
    type Service = Forward<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Forward {
            shared: self.shared.clone(),
            inner,
        }
    }
}

/// The service of [`ForwardLayer`].
#[derive(Clone)]
pub struct Forward<S> {
    shared: Arc<Shared>,
    inner: S,
}

impl<S> std::fmt::Debug for Forward<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward").finish_non_exhaustive()
    }
}

impl<S> Service<http::Request<Body>> for Forward<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let table = self.shared.current();
        if local(path) || table.route(path).is_none() {
            let inner = self.inner.clone();
            return Box::pin(inner.oneshot(request));
        }
        let shared = self.shared.clone();
        Box::pin(async move { Ok(forward(&shared, table, request).await) })
    }
}

/// Forwards `request` on `table`'s routes; any failure is the answer's
/// status.
pub(crate) async fn forward(
    shared: &Arc<Shared>,
    table: Arc<Table>,
    mut request: http::Request<Body>,
) -> http::Response<Body> {
    let path = request.uri().path().to_owned();
    let Some(route) = table.route(&path) else {
        return Status::unimplemented(format!("no route for {path}")).into_http();
    };
    let method = shared.contracts.method_info(&path);
    // With access rules enforced, a method no contract declares has no
    // rule to hold it to: it is denied unless undeclared methods are
    // allowed (as the server denies undeclared ones).
    if method.is_none() && shared.deny_unknown.load(Ordering::Relaxed) {
        return Status::permission_denied("permission denied").into_http();
    }
    // The scaffold keeps the principal in an `Arc`: shared, not copied.
    let principal = request
        .extensions()
        .get::<Arc<sinew_server::auth::Principal>>()
        .cloned();
    let subject = principal.as_ref().map(|p| p.subject.as_str());

    if let Err(status) = rate_limit(shared, route, subject, &request) {
        shared.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        return status.into_http();
    }

    let choice = route.choose(request.headers(), subject, shared.rng.next_f64());
    let Some(cluster) = table.clusters.get(choice.cluster()) else {
        return Status::internal("the route names no cluster").into_http();
    };
    tracing::debug!(
        path,
        cluster = %choice.cluster(),
        overridden = matches!(choice, Choice::Override(_)),
        version = table.version,
        "forwarding"
    );

    prepare_headers(
        request.headers_mut(),
        principal.as_deref(),
        shared.settings.forward_credentials,
    );
    if let Some(timeout) = route.config.timeout {
        request
            .extensions_mut()
            .insert(CallOptions::timeout(timeout));
    }

    // A call that already goes to the shadow cluster is not copied to it.
    let shadow = route
        .config
        .shadow
        .as_ref()
        .filter(|shadow| shadow.as_str() != choice.cluster())
        .filter(|_| {
            method.is_some_and(|m| {
                matches!(m.streaming, Streaming::Unary | Streaming::ServerStreaming)
                    && (m.idempotency == Idempotency::NoSideEffects
                        || route.config.shadow_side_effects)
            })
        });
    let exceeded = Arc::new(AtomicBool::new(false));
    let mut tee = None;
    if let Some(shadow_cluster) = shadow {
        match shared.shadow_slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let (mut parts, body) = request.into_parts();
                // Both answers uncompressed, so that they compare.
                parts.headers.remove("grpc-accept-encoding");
                // A shadow copy needs the request twice: it is read whole
                // first (a unary or server-streaming call's one message,
                // within the route's limit).
                let limited = http_body_util::Limited::new(
                    Watched::new(
                        body,
                        route.config.max_request_bytes,
                        Kind::Request(exceeded.clone()),
                        None,
                    ),
                    route.config.max_request_bytes.saturating_add(5),
                );
                let bytes = match limited.collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(error) => {
                        return match error.downcast::<Status>() {
                            Ok(status) => *status,
                            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                                Status::resource_exhausted(format!(
                                    "request over the limit of {} bytes",
                                    route.config.max_request_bytes
                                ))
                            }
                            Err(_) => Status::cancelled("the request did not arrive whole"),
                        }
                        .into_http();
                    }
                };
                let (sender, receiver) = oneshot::channel();
                tee = Some(Tee::new(shared.settings.shadow_max_bytes, sender));
                let mut copy = http::Request::from_parts(
                    parts.clone(),
                    Body::new(http_body_util::Full::new(bytes.clone())),
                );
                copy.extensions_mut()
                    .insert(CallOptions::timeout(route.config.shadow_timeout));
                request =
                    http::Request::from_parts(parts, Body::new(http_body_util::Full::new(bytes)));
                if let (Some(client), Some(descriptor)) = (
                    table
                        .clusters
                        .get(shadow_cluster)
                        .and_then(|c| c.shadow.clone()),
                    shared.contracts.method(&path),
                ) {
                    shared.stats.shadowed.fetch_add(1, Ordering::Relaxed);
                    spawn_shadow(
                        shared.clone(),
                        path.clone(),
                        client,
                        copy,
                        descriptor.output(),
                        receiver,
                        route.config.shadow_timeout,
                        permit,
                    );
                }
            }
            Err(_) => {
                shared.stats.shadow_skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let request = if tee.is_some() {
        request
    } else {
        request.map(|body| {
            Body::new(Watched::new(
                body,
                route.config.max_request_bytes,
                Kind::Request(exceeded.clone()),
                None,
            ))
        })
    };

    shared.stats.forwarded.fetch_add(1, Ordering::Relaxed);
    // The incoming call's deadline (the scaffold's, from `grpc-timeout`)
    // bounds the upstream call's, less the client's headroom.
    let incoming = request.extensions().get::<Deadline>().copied();
    let call = cluster.client.clone().oneshot(request);
    let answer = match incoming {
        Some(deadline) => deadline.scope(call).await,
        None => call.await,
    };
    let over = |exceeded: &AtomicBool| {
        exceeded.load(Ordering::Acquire).then(|| {
            Status::resource_exhausted(format!(
                "request message over the limit of {} bytes",
                route.config.max_request_bytes
            ))
        })
    };
    if let Some(status) = over(&exceeded) {
        return status.into_http();
    }
    match answer {
        Ok(response) => {
            let max = route.config.max_response_bytes;
            let (parts, body) = response.into_parts();
            let tee = tee.map(|mut tee| {
                tee.headers(&parts.headers);
                tee
            });
            // A request stream that goes over its limit later (a
            // streaming call) ends the answer with RESOURCE_EXHAUSTED.
            http::Response::from_parts(
                parts,
                Body::new(Watched::new(body, max, Kind::Response(Some(exceeded)), tee)),
            )
        }
        Err(error) => {
            let status = sinew_client::to_status(error);
            if let Some(mut tee) = tee {
                tee.fail(&status);
            }
            status.into_http()
        }
    }
}

/// Takes a token from the caller's bucket, then from the route's: a
/// caller over its own limit spends none of everyone's.
fn rate_limit(
    shared: &Shared,
    route: &Route,
    subject: Option<&str>,
    request: &http::Request<Body>,
) -> Result<(), Status> {
    let name = route.key.as_str();
    let refuse = |wait: std::time::Duration| {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut status = Status::resource_exhausted("rate limit exceeded");
        status
            .metadata_mut()
            .insert(RETRY_AFTER, seconds.max(1).into());
        status
    };
    if let Some(rate) = route.config.client_rate_limit {
        // Never "": that is the route-wide bucket's key.
        let client = match subject {
            Some(subject) => format!("sub:{subject}"),
            None => request
                .extensions()
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|info| info.remote_addr)
                .or_else(|| request.extensions().get::<SocketAddr>().copied())
                .map_or_else(
                    || "anonymous".to_owned(),
                    |addr| format!("ip:{}", addr.ip()),
                ),
        };
        shared
            .limiter
            .take(
                name,
                &client,
                Rate {
                    per_second: rate.per_second,
                    burst: rate.burst,
                },
            )
            .map_err(refuse)?;
    }
    if let Some(rate) = route.config.rate_limit {
        shared
            .limiter
            .take(
                name,
                "",
                Rate {
                    per_second: rate.per_second,
                    burst: rate.burst,
                },
            )
            .map_err(refuse)?;
    }
    Ok(())
}

/// Removes what belongs to the caller's hop, and what the caller must not
/// choose: credentials (unless forwarded on purpose) and principal
/// headers, which only the gateway sets.
fn prepare_headers(
    headers: &mut http::HeaderMap,
    principal: Option<&sinew_server::auth::Principal>,
    forward_credentials: bool,
) {
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    headers.remove(PRINCIPAL_HEADER);
    headers.remove(SCOPES_HEADER);
    if !forward_credentials {
        headers.remove(http::header::AUTHORIZATION);
        headers.remove(sinew_server::auth::API_KEY_HEADER);
    }
    if let Some(principal) = principal {
        match http::HeaderValue::from_str(&principal.subject) {
            Ok(subject) => {
                headers.insert(PRINCIPAL_HEADER, subject);
                // Scopes are separated by spaces: one holding a space
                // would arrive as two, so it is not sent.
                let scopes: Vec<&str> = principal
                    .scopes
                    .iter()
                    .map(String::as_str)
                    .filter(|scope| !scope.is_empty() && !scope.contains(char::is_whitespace))
                    .collect();
                if let Ok(scopes) = http::HeaderValue::from_str(&scopes.join(" ")) {
                    headers.insert(SCOPES_HEADER, scopes);
                }
            }
            Err(_) => tracing::warn!("a principal's subject is not a header value; not forwarded"),
        }
    }
}

/// Sends the shadow copy, waits for the real answer, compares.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site, every argument distinct"
)]
fn spawn_shadow(
    shared: Arc<Shared>,
    path: String,
    client: sinew_client::Client,
    request: http::Request<Body>,
    output: prost_reflect::MessageDescriptor,
    real: oneshot::Receiver<Outcome>,
    timeout: std::time::Duration,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    tokio::spawn(async move {
        let _permit = permit;
        let failed = || {
            shared.stats.shadow_failed.fetch_add(1, Ordering::Relaxed);
        };
        // A shadow that outlasts its time, or answers more than can be
        // kept, cannot be compared: counted, not reported as a mismatch.
        let Ok(Some(shadow)) = tokio::time::timeout(
            timeout,
            collect(client, request, shared.settings.shadow_max_bytes),
        )
        .await
        else {
            tracing::debug!(method = %path, "the shadow call could not be compared");
            failed();
            return;
        };
        // The real answer: cancelled, too large to keep, or still going
        // (a long stream) after the shadow's time: not compared either.
        let Ok(Ok(real)) = tokio::time::timeout(timeout, real).await else {
            failed();
            return;
        };
        let differences = compare::compare(&output, &real, &shadow, 16);
        if differences.is_empty() {
            shared.stats.shadow_matched.fetch_add(1, Ordering::Relaxed);
        } else {
            shared
                .stats
                .shadow_mismatched
                .fetch_add(1, Ordering::Relaxed);
            // At most a few lines a second per method: every mismatch is
            // counted, but a broken replacement must not flood the log.
            let logged = shared.limiter.take(
                "<shadow log>",
                &path,
                Rate {
                    per_second: 1.0,
                    burst: 5,
                },
            );
            if logged.is_err() {
                return;
            }
            let statuses = (real.code != shadow.code).then(|| {
                format!(
                    "{:?} ({}) != {:?} ({})",
                    real.code, real.message, shadow.code, shadow.message
                )
            });
            tracing::warn!(
                method = %path,
                differences = %compare::render(&differences, 2048),
                statuses = statuses.as_deref().unwrap_or(""),
                "the shadow answered differently"
            );
        }
    });
}

/// The whole answer of a shadow call; none when it is too large to keep.
async fn collect(
    client: sinew_client::Client,
    request: http::Request<Body>,
    max: usize,
) -> Option<Outcome> {
    let failed = |status: Status| Outcome {
        code: status.code(),
        message: status.message().to_owned(),
        frames: Bytes::new(),
    };
    let response = match client.oneshot(request).await {
        Ok(response) => response,
        Err(error) => return Some(failed(sinew_client::to_status(error))),
    };
    if let Some(status) = Status::from_header_map(response.headers()) {
        return Some(failed(status));
    }
    let limited = http_body_util::Limited::new(response.into_body(), max);
    match limited.collect().await {
        Ok(collected) => {
            let status = collected
                .trailers()
                .and_then(Status::from_header_map)
                .unwrap_or_else(|| Status::unknown("no grpc-status"));
            Some(Outcome {
                code: status.code(),
                message: status.message().to_owned(),
                frames: collected.to_bytes(),
            })
        }
        Err(error) if error.is::<http_body_util::LengthLimitError>() => None,
        Err(error) => Some(failed(Status::from_error(error))),
    }
}
