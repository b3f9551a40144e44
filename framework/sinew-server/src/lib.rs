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
//! # The drain
//!
//! On SIGTERM or Ctrl-C (or when the future given to
//! [`Server::run_until`] resolves):
//!
//! 1. every service and the overall status turn `NOT_SERVING`, which open
//!    `Watch` streams see at once; readiness probes stop;
//! 2. the server keeps serving for the lame-duck delay, so load balancers
//!    notice and stop sending;
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
//! `request_timeout`), fault injection, message limits; then to the hosted
//! service its path names. A path that names none gets `UNIMPLEMENTED`.
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

mod catch_panic;
mod config;
mod deadline;
mod definition;
mod message_limit;
mod serve;
mod signal;

pub mod health;

use std::{convert::Infallible, future::Future, net::SocketAddr};

use tokio::net::TcpListener;
use tonic::{body::Body, server::NamedService};
use tower::{Service, ServiceBuilder};

pub use catch_panic::{
    CatchPanic, CatchPanicLayer, PanicSafeBody, ResponseFuture as CatchPanicFuture,
};
pub use config::{CONFIG_FILE_ENV, ConfigError, ENV_PREFIX, KEYS, ServerConfig, Settings};
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

use serve::{Acceptor, Connections, DuplicateService, RoutesBuilder};

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

/// A hosted service, waiting for the settings its limits come from.
struct Hosted {
    name: &'static str,
    descriptor: &'static [u8],
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
        }
    }

    /// Settings chosen in code; they override the file and environment.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Hosts a generated service. Its health is registered under its full
    /// name, its contract is served over reflection, and the configured
    /// message limits apply to it.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: ServiceDefinition
            + NamedService
            + Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.services.push(Hosted {
            name: S::NAME,
            descriptor: S::FILE_DESCRIPTOR_SET,
            add: Box::new(move |routes, settings| {
                routes.add_service(codec_limits(service, settings))?;
                Ok(())
            }),
        });
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
            ..
        } = self;
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
        let drain_health = health.clone();
        let drain_name = name.clone();
        // Shared by the drain's waits: once resolved, it stays resolved.
        let hurry = futures_util::FutureExt::shared(Box::pin(hurry));
        let hurried = hurry.clone();
        let drain = async move {
            signal.await;
            tracing::info!(server = %drain_name, ?lame_duck, "draining: reporting NOT_SERVING");
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
            .service(routes.build());
        let mut connections = Connections::new(&settings, stack);
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
