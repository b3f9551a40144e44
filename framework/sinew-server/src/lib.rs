//! The server scaffold: one builder that hosts generated services with
//! health checking, reflection, readiness probes, safe limits and a
//! graceful drain.
//!
//! ```ignore
//! // `GreeterServer` and `MyGreeter` as in the crate example.
//! sinew::Server::new("greeter")
//!     .add_service(GreeterServer::new(MyGreeter))
//!     .readiness(Probe::new("db", move || ping(pool.clone())))
//!     .run()
//!     .await?;
//! ```
//!
//! # Security
//!
//! TLS with the `tls_*` settings of [`ServerConfig`] (`ServerConfig::tls`,
//! `ServerConfig::mtls`: PEM files, reloaded on change and on `SIGHUP`);
//! the verified client certificate with [`peer_identity`]. Authentication
//! with [`Server::authenticator`] and the [`auth`] module (JWT, mTLS, API
//! keys, or your own), which enforces the access each method's contract
//! declares; the principal with [`principal`]:
//!
//! ```ignore
//! sinew::Server::new("payments")
//!     .config(ServerConfig::new().tls("tls.crt", "tls.key").mtls(ClientAuth::Required, "ca.crt"))
//!     .add_service(PaymentsServer::new(Books))
//!     .authenticator(MtlsAuthenticator::new().grant("spiffe://shop/sa/orders", ["payments.write"]))
//!     .run()
//!     .await?;
//! ```
//!
//! `examples/mtls` runs this end to end.
//!
//! # The drain
//!
//! On SIGTERM or Ctrl-C (or when the future given to
//! [`Server::run_until`] resolves):
//!
//! 1. every service and the overall status turn `NOT_SERVING`, which open
//!    `Watch` streams see at once; readiness probes stop;
//! 2. the server keeps serving for the lame-duck delay, so load balancers
//!    notice and stop sending. The delay is 5s when an orchestrator is
//!    detected (Kubernetes, Nomad or ECS, by the variables each sets in
//!    its workloads: see [`detect_orchestrator`]) and none otherwise,
//!    unless `lame_duck` is configured; the drain's first log line says
//!    which and why (`lame duck 5s: Kubernetes detected
//!    (KUBERNETES_SERVICE_HOST)`, `no lame duck: no orchestrator
//!    detected`);
//! 3. it stops accepting connections (the listen socket closes, so new
//!    connects are refused), ends `Watch` streams, and tells clients to go
//!    away: every connection sends HTTP/2 `GOAWAY` and refuses new calls;
//! 4. calls in flight finish, for up to the grace period; each connection
//!    closes once its calls are done. Calls still running after it are
//!    abandoned and logged: their connections are closed, and their
//!    handlers' futures dropped (waited for a second at most, for a
//!    handler stuck in code that does not yield);
//! 5. telemetry is flushed, so the spans of the last calls (the abandoned
//!    ones as `CANCELLED`) are exported;
//! 6. `run` returns, with no call of the server left running.
//!
//! Under [`Server::run`], a second SIGTERM or Ctrl-C during the drain cuts
//! the lame-duck delay and the grace period short: the calls still
//! running are abandoned at once (steps 4 to 6).
//!
//! # Serving
//!
//! The scaffold serves HTTP/2 itself, on hyper (see `serve/` for the
//! HTTP/2 settings and what happens to a call before its layers). Every
//! call goes through the same layers, outermost first: tracing, panic
//! catching, the deadline (the caller's `grpc-timeout`, capped by
//! `request_timeout`), fault injection, message limits; then the
//! server-wide layers added with [`Server::layer`], the first added
//! outermost; then routing, which sends the call to the hosted service
//! its path names (a path that names none gets `UNIMPLEMENTED`, a request
//! that is not gRPC HTTP 415); then the service's own layer, added with
//! [`Server::add_service_with`]; then the service (and its interceptor,
//! if it came wrapped in one).
//!
//! # Middleware
//!
//! Users' layers sit inside the scaffold's: a call they refuse is traced
//! and counted with the code they chose, a panic in one is caught, the
//! deadline covers their work, and they see requests whose messages are
//! already held to the limits. Their services take
//! `http::Request<tonic::body::Body>` and answer `http::Response<B>` for
//! any body of `Bytes` (tonic's `InterceptedService` answers its own);
//! they refuse a call with a [`tonic::Status`], as an answer
//! (`status.into_http()`) or as their error, and the client gets its code.
//! They may read and change headers (metadata) and extensions (the peer's
//! address is there, as `TcpConnectInfo`), and see the whole request and
//! response bodies.
//!
//! ```ignore
//! // A tonic interceptor on one service, and a tower layer on all.
//! Server::new("greeter")
//!     .add_service_with(
//!         GreeterServer::new(Greetings),
//!         tonic::service::InterceptorLayer::new(check_token),
//!     )
//!     .layer(tower::util::MapRequestLayer::new(stamp))
//!     .run()
//!     .await?;
//! ```
//!
//! With none added, a call costs what it did: no erasure and no boxing
//! beyond what tonic's generated servers do.
//!
//! # Trailing metadata
//!
//! A handler adds custom metadata to its response's trailers, next to
//! `grpc-status`, with [`TrailingMetadata`], on a successful response as
//! on a failing stream:
//!
//! ```
//! # use tonic::{Response, metadata::MetadataValue};
//! # use sinew_server::TrailingMetadata;
//! let mut response = Response::new(());
//! TrailingMetadata::of(&mut response).insert("x-cost", MetadataValue::from_static("17"));
//! ```
//!
//! The status's own names (`grpc-status`, `grpc-message`,
//! `grpc-status-details-bin`) cannot be overridden that way.
//!
//! The deadline bounds calls of every kind: past it, a handler still
//! working is dropped, and a response still streaming ends with
//! `DEADLINE_EXCEEDED` in its trailers (see [`ServerDeadline`]).
//!
//! # Compression
//!
//! Every hosted service accepts requests compressed with gzip or zstd.
//! Responses are compressed only with what the `send_compressed` setting
//! names (default none), and only for a caller that accepts it. The
//! receive limit counts decompressed bytes: tonic decompresses a message
//! into at most `max_receive_message_size`, and one that would pass it
//! fails with `RESOURCE_EXHAUSTED` (the request walk at the connection
//! sees the compressed size, which is never more). So does the send
//! limit: when the server compresses responses, each compressed message
//! is decompressed into a counter as it goes out (a cost paid only then).

pub mod auth;
mod catch_panic;
mod config;
mod deadline;
mod definition;
mod message_limit;
mod serve;
mod signal;
mod trailers;

pub mod health;

use std::{collections::HashMap, future::Future, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use tokio::net::TcpListener;
use tonic::{body::Body, server::NamedService};
use tower::{Layer, Service, ServiceBuilder};

pub use catch_panic::{
    CatchPanic, CatchPanicLayer, PanicSafeBody, ResponseFuture as CatchPanicFuture,
};
pub use config::{
    CONFIG_FILE_ENV, ConfigError, ENV_PREFIX, KEYS, ORCHESTRATED_LAME_DUCK, ServerConfig, Settings,
    detect_orchestrator,
};
pub use deadline::{
    Deadline, DeadlineBody, DeadlineLayer, ResponseFuture as DeadlineFuture, ServerDeadline,
};
pub use definition::ServiceDefinition;
pub use message_limit::{
    Direction, LimitedBody, MessageLimit, MessageLimitLayer, ResponseFuture as MessageLimitFuture,
};
pub use signal::shutdown_signal;
pub use sinew_core::compression::{CompressionEncoding, Encodings};
pub use sinew_telemetry::trace::server::{
    RecordedBody, ResponseFuture as ServerTraceFuture, ServerTrace, ServerTraceLayer,
};
pub use trailers::TrailingMetadata;

/// The reflection services' one method each.
const REFLECTION_PATHS: &[&str] = &[
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

pub use auth::principal;

/// TLS and mTLS: the server's configuration, and what a verified client
/// certificate says. See the `tls_*` settings of [`ServerConfig`].
pub mod tls {
    pub use sinew_core::tls::{ClientAuth, PeerIdentity, ServerTls, ServerTlsConfig, TlsError};
}

/// The verified identity of the caller's certificate, when the call came
/// over mTLS with one (`tls_client_auth` `optional` or `required`).
///
/// ```
/// # fn handler(request: tonic::Request<()>) {
/// if let Some(peer) = sinew_server::peer_identity(request.extensions()) {
///     tracing::info!(spiffe_id = ?peer.spiffe_id, "called by a known workload");
/// }
/// # }
/// ```
pub fn peer_identity(extensions: &http::Extensions) -> Option<&tls::PeerIdentity> {
    extensions
        .get::<Arc<tls::PeerIdentity>>()
        .map(|peer| &**peer)
}

use serve::{Acceptor, Connections, DuplicateService, RoutesBuilder};
pub use serve::{Routing, RoutingFuture};

use health::{
    HealthRegistry, HealthService, LIVENESS, OVERALL, Probe, ServingStatus,
    proto::health_server::HealthServer,
};

use sinew_core::{BoxError, contract, headers};

/// What the health contract's generated code (`health/generated/`) reaches
/// the framework through: what a user's generated code reaches as
/// `::sinew`.
#[allow(
    clippy::single_component_path_imports,
    reason = "the generated code names these crates as paths under this module"
)]
mod codegen {
    pub(crate) use crate as server;
    pub(crate) use prost;
    pub(crate) use sinew_client as client;
    pub(crate) use sinew_core::contract;
    pub(crate) use tonic;
    pub(crate) use tonic_prost;
}

/// The server failed to start or to serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The listener failed.
    #[error("listener failed: {0}")]
    Listener(std::io::Error),
    /// A contract's descriptor set could not be served over reflection.
    #[error("cannot serve reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// `authenticator_for` names a service the server does not host: its
    /// calls would be left to the server's authenticator.
    #[error("authenticator_for names {name}, which this server does not host")]
    UnknownService {
        /// The name given.
        name: String,
    },
    /// Two hosted services have the same name (a service added twice, or
    /// one named like health or reflection): calls could reach only one.
    #[error("two services are named {name}")]
    DuplicateService {
        /// The name.
        name: &'static str,
    },
}

impl From<DuplicateService> for ServerError {
    fn from(duplicate: DuplicateService) -> Self {
        Self::DuplicateService {
            name: duplicate.name,
        }
    }
}

type AddService =
    Box<dyn FnOnce(&mut RoutesBuilder, &Settings) -> Result<(), DuplicateService> + Send>;

/// A server-wide layer, erased: wraps what is below it.
type ServerLayer = Box<dyn FnOnce(Routing) -> Routing + Send>;

/// A hosted service, waiting for the settings its limits come from.
struct Hosted {
    name: &'static str,
    descriptor: &'static [u8],
    /// Its method table.
    methods: &'static [contract::MethodInfo],
    add: AddService,
}

/// A gRPC server for one or more generated services.
///
/// Build it with [`Server::new`], add services with
/// [`add_service`](Self::add_service), and [`run`](Self::run) it. Settings
/// are resolved when it starts (see [`ServerConfig`] for where they come
/// from); an invalid one fails the start and names the key.
#[must_use = "a server does nothing until it runs"]
pub struct Server {
    name: String,
    config: ServerConfig,
    services: Vec<Hosted>,
    probes: Vec<Probe>,
    health: HealthRegistry,
    /// Server-wide layers, the first added outermost.
    layers: Vec<ServerLayer>,
    /// Who checks credentials: for every service, and per service.
    authenticator: Option<Arc<dyn auth::Authenticator>>,
    authenticators: HashMap<String, Arc<dyn auth::Authenticator>>,
    authorizer: Option<Arc<dyn auth::Authorizer>>,
    /// Methods served by a server-wide layer (a gateway's forwarding).
    declared: Vec<&'static [contract::MethodInfo]>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("config", &self.config)
            .field(
                "services",
                &self.services.iter().map(|s| s.name).collect::<Vec<_>>(),
            )
            .field("probes", &self.probes)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

// === impl Server ===

impl Server {
    /// A server called `name` (used in logs and traces), with no services.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            config: ServerConfig::default(),
            services: Vec::new(),
            probes: Vec::new(),
            health: HealthRegistry::new(),
            layers: Vec::new(),
            authenticator: None,
            authenticators: HashMap::new(),
            authorizer: None,
            declared: Vec::new(),
        }
    }

    /// Declares methods that a server-wide [`layer`](Self::layer) answers
    /// rather than a hosted service (a gateway forwarding them upstream):
    /// their contracts' access rules are enforced like a hosted service's.
    /// A call to a path no table knows needs a principal, whatever answers it.
    pub fn declare(mut self, methods: &'static [contract::MethodInfo]) -> Self {
        self.declared.push(methods);
        self
    }

    /// Authenticates every call with `authenticator`, and enforces the
    /// access rules the contracts declare (see [`auth`]): public methods
    /// need nothing, scoped ones a principal with the scopes, undeclared
    /// ones are denied (or, with `auth_undeclared = "allow"`, need any
    /// principal). Without an authenticator nothing is enforced.
    pub fn authenticator(mut self, authenticator: impl auth::Authenticator) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// Authenticates the calls of the service named `service`
    /// (`package.Service`) with `authenticator`, instead of the server's.
    /// Enforcement starts with the first authenticator given.
    pub fn authenticator_for(
        mut self,
        service: impl Into<String>,
        authenticator: impl auth::Authenticator,
    ) -> Self {
        self.authenticators
            .insert(service.into(), Arc::new(authenticator));
        self
    }

    /// Checks rules of the application's own after the contract's, for
    /// every call to a scoped method (or, with `auth_undeclared = "allow"`,
    /// an undeclared one): see [`auth::Authorizer`].
    pub fn authorizer(mut self, authorizer: impl auth::Authorizer) -> Self {
        self.authorizer = Some(Arc::new(authorizer));
        self
    }

    /// Settings chosen in code; they override the file and environment.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Hosts a generated service. Its health is registered under its full
    /// name, its contract is served over reflection, and the configured
    /// message limits apply to it.
    ///
    /// The service may come wrapped in an interceptor
    /// (`GreeterServer::with_interceptor(service, check)`): see
    /// [`ServiceDefinition`] for what that changes for its limits, and
    /// [`add_service_with`](Self::add_service_with) for the way that keeps
    /// them all.
    pub fn add_service<S, B>(mut self, service: S) -> Self
    where
        S: ServiceDefinition
            + NamedService
            + Service<http::Request<Body>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.services.push(Hosted {
            name: S::NAME,
            descriptor: S::FILE_DESCRIPTOR_SET,
            methods: <S::Contract as contract::Contract>::METHODS,
            add: Box::new(move |routes, settings| {
                warn_of_fixed_limits::<S>(settings);
                routes.add_route(S::NAME, codec_limits(service, settings))?;
                Ok(())
            }),
        });
        self
    }

    /// Hosts a generated service, as [`add_service`](Self::add_service)
    /// does, with `layer` around it: a `tower` layer (a tonic interceptor
    /// as `tonic::service::InterceptorLayer::new(check)`, a
    /// `tower::ServiceBuilder` of several) whose service takes
    /// `http::Request<tonic::body::Body>` and answers
    /// `http::Response<B>` for any body `B` of `Bytes`.
    ///
    /// The layer sees only this service's calls, after the scaffold's
    /// layers and the server-wide ones ([`layer`](Self::layer)); health,
    /// reflection and the other services do not go through it. It sees the
    /// whole request (headers as metadata, extensions, the body's
    /// messages as they come, already checked against the message
    /// limits) and the whole response. To refuse a call, answer
    /// `Ok(status.into_http())`, or fail with a [`tonic::Status`] (or an
    /// error whose source is one): the client gets its code and message.
    /// Any other error is answered `INTERNAL`, with its detail logged and
    /// not sent.
    pub fn add_service_with<S, L, B>(mut self, service: S, layer: L) -> Self
    where
        S: ServiceDefinition + NamedService + Send + 'static,
        L: Layer<S> + Send + 'static,
        L::Service: Service<http::Request<Body>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<http::Request<Body>>>::Error: Into<BoxError>,
        <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.services.push(Hosted {
            name: S::NAME,
            descriptor: S::FILE_DESCRIPTOR_SET,
            methods: <S::Contract as contract::Contract>::METHODS,
            add: Box::new(move |routes, settings| {
                warn_of_fixed_limits::<S>(settings);
                routes.add_route(S::NAME, layer.layer(codec_limits(service, settings)))?;
                Ok(())
            }),
        });
        self
    }

    /// Adds a `tower` layer around every call the server takes: the
    /// hosted services, health, reflection, and calls it answers
    /// `UNIMPLEMENTED`. Its service wraps [`Routing`], which takes
    /// `http::Request<tonic::body::Body>` and answers
    /// `http::Response<tonic::body::Body>`, and may answer with any body
    /// of `Bytes`; it refuses a call as a per-service layer does (see
    /// [`add_service_with`](Self::add_service_with)).
    ///
    /// Layers added this way run in the order they were added, the first
    /// outermost, inside the scaffold's (see the crate docs for the whole
    /// order). A layer for a few services, or one that must not see the
    /// health checks (authentication, say, which the kubelet's probes do
    /// not carry), belongs on those services with `add_service_with`.
    ///
    /// With no layer added, calls go straight to the routes; each layer
    /// added costs a clone of its service and a boxed future per call
    /// (give several as one `tower::ServiceBuilder` to pay it once).
    pub fn layer<L, B>(mut self, layer: L) -> Self
    where
        L: Layer<Routing> + Send + 'static,
        L::Service: Service<http::Request<Body>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<http::Request<Body>>>::Error: Into<BoxError>,
        <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.layers
            .push(Box::new(move |inner| Routing::layered(layer.layer(inner))));
        self
    }

    /// Adds a readiness probe. See [`Probe`].
    pub fn readiness(mut self, probe: Probe) -> Self {
        self.probes.push(probe);
        self
    }

    /// The server's health statuses. Clones share them, so a handler can
    /// hold one and report its own state.
    pub fn health(&self) -> HealthRegistry {
        self.health.clone()
    }

    /// Serves on the configured address until SIGTERM or Ctrl-C, then
    /// drains. A second SIGTERM or Ctrl-C during the drain ends it at once
    /// (the lame-duck delay and the grace period are cut short, and the
    /// calls still running are abandoned), for an operator or a developer
    /// who will not wait.
    pub async fn run(self) -> Result<(), ServerError> {
        let settings = Settings::load(&self.config)?;
        let listener = bind(settings.addr).await?;
        // Signals are counted on a task of their own: the first starts the
        // drain, the second hurries it.
        let (count, signals) = tokio::sync::watch::channel(0u32);
        let counter = AbortOnDrop(tokio::spawn(async move {
            loop {
                shutdown_signal().await;
                count.send_modify(|n| *n += 1);
            }
        }));
        let mut first = signals.clone();
        let mut second = signals;
        let drain = async move {
            let _ = first.wait_for(|n| *n >= 1).await;
        };
        let hurry = async move {
            let _ = second.wait_for(|n| *n >= 2).await;
            tracing::warn!("second signal: ending the drain now");
        };
        let served = self.serve_on(listener, settings, drain, hurry).await;
        drop(counter);
        served
    }

    /// Serves on the configured address until `signal` resolves, then
    /// drains.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let settings = Settings::load(&self.config)?;
        let listener = bind(settings.addr).await?;
        self.serve_on(listener, settings, signal, std::future::pending())
            .await
    }

    /// Serves on a listener bound by the caller (its address wins over the
    /// `addr` setting) until `signal` resolves, then drains.
    pub async fn serve_with_listener(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let settings = Settings::load(&self.config)?;
        self.serve_on(listener, settings, signal, std::future::pending())
            .await
    }

    /// Serves until `signal`, then drains; `hurry` resolving during the
    /// drain cuts it short.
    async fn serve_on(
        self,
        listener: TcpListener,
        settings: Settings,
        signal: impl Future<Output = ()> + Send,
        hurry: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let Server {
            name,
            services,
            probes,
            health,
            layers,
            authenticator,
            authenticators,
            authorizer,
            declared,
            ..
        } = self;
        let enforcement = (authenticator.is_some() || !authenticators.is_empty()).then(|| {
            let tables: Vec<&'static [contract::MethodInfo]> = services
                .iter()
                .map(|hosted| hosted.methods)
                .chain(declared.iter().copied())
                .collect();
            let enforcement = auth::Enforcement::new(
                tables,
                (
                    <<HealthServer<HealthService> as ServiceDefinition>::Contract as contract::Contract>::METHODS,
                    settings.health_public,
                ),
                (REFLECTION_PATHS, settings.reflection_public),
                settings.auth_undeclared,
            )
            .authenticators(authenticator, authenticators)
            .authorizer(authorizer);
            tracing::info!(
                server = %name,
                public = ?enforcement.public_paths(),
                "enforcing access rules; these methods are public"
            );
            let closed = enforcement.closed_paths();
            if !closed.is_empty() {
                tracing::warn!(
                    server = %name,
                    methods = ?closed,
                    "these methods declare no access rule and are denied to every caller \
                     (auth_undeclared = \"deny\")"
                );
            }
            enforcement
        });
        if let Some(name) = enforcement.as_ref().and_then(|enforcement| {
            enforcement
                .unknown_services()
                .first()
                .map(|n| (*n).to_owned())
        }) {
            return Err(ServerError::UnknownService { name });
        }
        let enforcement = enforcement.map(Arc::new);
        let addr = listener.local_addr().map_err(ServerError::Listener)?;
        let names: Vec<String> = services.iter().map(|s| s.name.to_owned()).collect();

        // Health first: liveness is up; readiness waits for the first probe
        // round, or is up at once when there are no probes.
        health.set(LIVENESS, ServingStatus::Serving);
        let initial = if probes.is_empty() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set(OVERALL, initial);
        for service in &names {
            health.set(service, initial);
        }

        // A second request message on these methods is refused.
        let single_message: Vec<&'static str> = services
            .iter()
            .flat_map(|hosted| hosted.methods)
            .chain(<<HealthServer<HealthService> as ServiceDefinition>::Contract as contract::Contract>::METHODS)
            .filter(|method| {
                matches!(
                    method.streaming,
                    contract::Streaming::Unary | contract::Streaming::ServerStreaming
                )
            })
            .map(|method| method.path)
            .collect();
        let checks = serve::RequestChecks::new(settings.max_header_list_size, single_message);

        let mut routes = RoutesBuilder::default();
        let mut descriptors: Vec<&'static [u8]> = vec![health::FILE_DESCRIPTOR_SET];
        for hosted in services {
            if !descriptors
                .iter()
                .any(|d| std::ptr::eq(*d, hosted.descriptor))
            {
                descriptors.push(hosted.descriptor);
            }
            (hosted.add)(&mut routes, &settings)?;
        }
        routes.add_service(codec_limits(
            HealthServer::new(HealthService::new(health.clone())),
            &settings,
        ))?;
        if settings.reflection {
            // Both versions advertise exactly what is hosted: the services,
            // health, and both reflection services; not every service that
            // happens to be in a descriptor set.
            let advertised: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .chain([
                    "grpc.health.v1.Health",
                    "grpc.reflection.v1.ServerReflection",
                    "grpc.reflection.v1alpha.ServerReflection",
                ])
                .collect();
            let reflection = || {
                let mut builder = tonic_reflection::server::Builder::configure()
                    .include_reflection_service(false)
                    .register_encoded_file_descriptor_set(
                        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                    )
                    .register_encoded_file_descriptor_set(
                        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                    );
                for descriptor in &descriptors {
                    builder = builder.register_encoded_file_descriptor_set(descriptor);
                }
                for name in &advertised {
                    builder = builder.with_service_name(*name);
                }
                builder
            };
            routes.add_service(reflection().build_v1()?)?;
            routes.add_service(reflection().build_v1alpha()?)?;
        }

        // Probes stop when the drain begins, or when this function returns
        // for any other reason.
        let probe_task = (!probes.is_empty()).then(|| {
            AbortOnDrop(tokio::spawn(health::run_probes(
                probes,
                health.clone(),
                names.clone(),
                settings.probe_interval,
                settings.probe_timeout,
            )))
        });
        let stop_probes = probe_task.as_ref().map(|task| task.0.abort_handle());

        let lame_duck = settings.lame_duck;
        let lame_duck_reason = settings.lame_duck_reason();
        let drain_health = health.clone();
        let drain_name = name.clone();
        // Shared by the drain's waits: once resolved, it stays resolved.
        let hurry = futures_util::FutureExt::shared(Box::pin(hurry));
        let hurried = hurry.clone();
        let drain = async move {
            signal.await;
            tracing::info!(
                server = %drain_name,
                "draining: reporting NOT_SERVING; {lame_duck_reason}"
            );
            if let Some(probes) = stop_probes {
                probes.abort();
            }
            drain_health.set(OVERALL, ServingStatus::NotServing);
            drain_health.set_all_but_liveness(ServingStatus::NotServing);
            tokio::select! {
                () = tokio::time::sleep(lame_duck) => {}
                () = hurried => {}
            }
        };

        // Every call goes through these, outermost first.
        let stack = ServiceBuilder::new()
            .layer(ServerTraceLayer::new())
            .layer(CatchPanicLayer::new())
            // Health's Watch streams last until the drain ends them: only
            // their caller's own deadline bounds them.
            .layer(DeadlineLayer::new(settings.request_timeout).uncapped(&[health::WATCH_PATH]))
            // With no faults configured this costs one check per call.
            .layer(sinew_core::fault::FaultLayer::new(
                settings.fault_config().unwrap_or_default(),
            ))
            // Requests' messages are limited where their bodies come in,
            // with the request budget (one walk of their framing): the
            // layer limits responses.
            .layer(
                MessageLimitLayer::new(usize::MAX, settings.max_send_message_size)
                    // Compressed responses count decompressed, as their
                    // receivers count them.
                    .decompressed(!settings.send_compressed.is_empty()),
            )
            .service(
                // The first layer added is the outermost.
                {
                    let routing = layers
                        .into_iter()
                        .rev()
                        .fold(Routing::new(routes.build()), |inner, wrap| wrap(inner));
                    // Layers of the application's own see only calls
                    // that passed, with their principal.
                    match enforcement {
                        Some(enforcement) => auth::AuthLayer::wrap(routing, enforcement),
                        None => routing,
                    }
                },
            );
        let tls = settings.tls()?;
        // Reloaded for as long as the server serves.
        let _reload = tls
            .as_ref()
            .map(|tls| AbortOnDrop(tls.watch(settings.tls_reload_interval)));
        if let Some(tls) = &tls {
            tracing::info!(server = %name, client_auth = ?tls.client_auth(), "speaking TLS");
        }
        let mut connections = Connections::new(&settings, stack, checks, tls);
        let acceptor = Acceptor::new(listener, settings.tcp_keepalive);

        tracing::info!(server = %name, %addr, services = ?names, "serving");
        connections.accept_until(&acceptor, drain).await;

        tracing::info!(server = %name, "draining: no longer accepting; finishing calls in flight");
        // The listen socket closes: new connects are refused rather than
        // left in a backlog no one reads.
        drop(acceptor);
        health.close_watches();
        connections.go_away();
        tokio::select! {
            finished = tokio::time::timeout(settings.grace_period, connections.closed()) => {
                if finished.is_err() {
                    tracing::warn!(
                        server = %name,
                        grace_period = ?settings.grace_period,
                        "calls still in flight after the grace period are abandoned"
                    );
                }
            }
            () = hurry => {
                tracing::warn!(server = %name, "drain cut short: calls still in flight are abandoned");
            }
        }
        // Closes the connections still open, and waits for their calls to
        // be dropped.
        let left = connections.abandon().await;
        if left > 0 {
            tracing::warn!(
                server = %name,
                calls = left,
                "calls still running after their connections closed: their handlers do not yield"
            );
        }
        drop(probe_task);
        // Spans of the last calls go out before the process can exit.
        if let Err(error) = sinew_telemetry::flush().await {
            tracing::warn!(%error, "telemetry flush at drain failed");
        }
        tracing::info!(server = %name, "stopped");
        Ok(())
    }
}

/// Binds the listen socket at `addr`.
async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Warns when `S` keeps tonic's own receive limit (a server wrapped before
/// it was added) and that limit is below the configured one: its larger
/// messages would fail with `OUT_OF_RANGE`.
fn warn_of_fixed_limits<S: ServiceDefinition + NamedService>(settings: &Settings) {
    if !S::TAKES_MESSAGE_LIMITS && settings.max_receive_message_size > TONIC_MAX_RECEIVE {
        tracing::warn!(
            service = S::NAME,
            max_receive_message_size = settings.max_receive_message_size,
            "this service was wrapped before it was added, so it keeps the receive limit it had \
             (tonic's default is 4 MiB) and accepts no compressed request; set them with \
             max_decoding_message_size and accept_compressed before wrapping, or add the \
             service with add_service_with"
        );
    }
}

/// tonic's default receive limit of a generated server.
const TONIC_MAX_RECEIVE: usize = 4 * 1024 * 1024;

/// Sets tonic's codec limits behind [`MessageLimit`]'s, and compression.
///
/// The receive limit stays as a backstop (`MessageLimit` sees the header
/// first), and is what bounds a compressed request: tonic decompresses
/// into a buffer no larger than it, and answers `RESOURCE_EXHAUSTED` for
/// a message that would pass it, whatever its size on the wire. The send
/// limit is left to `MessageLimit`, which answers `RESOURCE_EXHAUSTED`
/// where tonic's encoder would answer `OUT_OF_RANGE` before the layer saw
/// the message.
///
/// Requests compressed with gzip or zstd are accepted; responses are
/// compressed only with what `send_compressed` names and the caller
/// accepts.
fn codec_limits<S: ServiceDefinition>(service: S, settings: &Settings) -> S {
    service
        .with_message_limits(settings.max_receive_message_size, usize::MAX)
        .with_compression(
            sinew_core::compression::ACCEPTED,
            settings.send_compressed.iter(),
        )
}
