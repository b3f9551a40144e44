//! sinew's API gateway: one entry point for the calls of clients outside
//! the system, over gRPC and HTTP/JSON, built from the same contracts as
//! the services behind it.
//!
//! - **Forwarding.** gRPC calls are forwarded as bytes (never decoded),
//!   for all four streaming kinds, through each upstream cluster's
//!   resilient [`sinew_client::Client`]: deadlines shrunk per hop, retries
//!   by each method's idempotency level as the upstream's contract
//!   declares it, circuit breakers, balancing and the bulkhead. Metadata
//!   passes through, less hop-by-hop headers and the caller's credentials;
//!   the principal verified at the edge goes upstream in
//!   [`PRINCIPAL_HEADER`] and [`SCOPES_HEADER`], for services that trust
//!   the gateway's certificate ([`sinew_server::auth::GatewayPrincipal`]).
//! - **Strangler fig.** Routes by package, service or method send calls to
//!   named clusters, split by weight, with overrides by header or
//!   principal; a shadow cluster gets a copy of each call to a method
//!   without side effects, and its answer is compared with the real one
//!   ([`Stats::shadow_mismatched`], and a log line with the differences).
//!   The routes are a TOML file, reloaded when it changes
//!   ([`Gateway::watch`]); calls in flight finish on the routes they
//!   started on, and an invalid file is refused with its line.
//! - **Per route:** timeouts, message limits, and token-bucket rate limits
//!   for the route and per caller (`RESOURCE_EXHAUSTED`, or HTTP 429 with
//!   `Retry-After`).
//! - **HTTP/JSON.** Routes from the contracts' `google.api.http`
//!   annotations, the proto3 JSON mapping, server streams as NDJSON or
//!   server-sent events, errors as `google.rpc.Status` JSON, an OpenAPI 3
//!   document from the same descriptors, CORS, body limits and gzip (see
//!   [`http`]).
//! - **Aggregation.** [`aggregate::Aggregate`] answers one call from
//!   several concurrent upstream calls, each part with its own deadline
//!   inside the caller's and its own status.
//!
//! The gateway runs on sinew's server scaffold, so it has health,
//! reflection, graceful draining, tracing and authentication like any
//! sinew service. As a binary, `sinew-gateway <config.toml>` runs it
//! from its configuration (see the README's gateway section for every
//! key); as a library:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use sinew_gateway::{Gateway, GatewayConfig};
//!
//! let config = GatewayConfig::from_file("gateway.toml")?;
//! let gateway = Gateway::from_config(config).await?;
//! let _watch = gateway.watch();
//! gateway.server("gateway").run().await?;
//! # Ok(())
//! # }
//! ```

pub mod aggregate;
mod body;
mod compare;
pub mod config;
mod contracts;
mod forward;
pub mod http;
mod ratelimit;
mod table;
pub mod transcode;

use std::sync::{Arc, atomic::Ordering};

pub use config::{ConfigError, GatewayConfig};
pub use contracts::{ContractError, Contracts};
use forward::Shared;
pub use forward::{Forward, ForwardLayer, PRINCIPAL_HEADER, RETRY_AFTER, SCOPES_HEADER, Stats};
use sinew_server::auth::{Authenticator, Authorizer, Undeclared};
use table::Table;
pub use transcode::RpcStatus;

/// The gateway could not start, or a configuration could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The contracts could not be loaded.
    #[error(transparent)]
    Contracts(#[from] ContractError),
    /// A cluster's client could not be built.
    #[error("cluster client: {0}")]
    Client(#[from] sinew_client::ClientError),
    /// The contracts' HTTP bindings are invalid.
    #[error(transparent)]
    Routes(#[from] transcode::RouteError),
    /// The HTTP listener failed.
    #[error("HTTP listener: {0}")]
    Io(#[from] std::io::Error),
}

/// A running gateway's routing, shared by its gRPC and HTTP/JSON sides.
/// Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    /// Serialises reloads.
    reload: Arc<tokio::sync::Mutex<GatewayConfig>>,
    http: Arc<http::HttpRoutes>,
    authenticator: Option<Arc<dyn Authenticator>>,
    authorizer: Option<Arc<dyn Authorizer>>,
    undeclared: Undeclared,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

// === impl Gateway ===

impl Gateway {
    /// A gateway for `config`, with the contracts its `[gateway]` table
    /// names (`descriptors`, `protos`).
    pub async fn from_config(config: GatewayConfig) -> Result<Self, GatewayError> {
        let settings = &config.settings;
        let contracts =
            Contracts::from_files(&settings.descriptors, &settings.protos, &settings.includes)?;
        Self::new(config, contracts).await
    }

    /// A gateway for `config`, with `contracts` (say, from the
    /// `FILE_DESCRIPTOR_SET` constants sinew-build generates).
    pub async fn new(config: GatewayConfig, contracts: Contracts) -> Result<Self, GatewayError> {
        let table = Table::build(&config, &contracts, None, 1).await?;
        let services = contracts.services();
        let services: Vec<&str> = services.iter().map(String::as_str).collect();
        let http = transcode::HttpRoutes::new(contracts.pool(), &services)?;
        let shared = Arc::new(Shared::new(table, contracts, config.settings.clone()));
        Ok(Self {
            shared,
            reload: Arc::new(tokio::sync::Mutex::new(config)),
            http: Arc::new(http),
            authenticator: None,
            authorizer: None,
            undeclared: Undeclared::default(),
        })
    }

    /// Authenticates calls at the edge with `authenticator`: the gRPC side
    /// through [`server`](Self::server)'s scaffold, the HTTP/JSON side
    /// here, both against the upstream contracts' access rules.
    #[must_use]
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self.enforce_unknown();
        self
    }

    /// With access rules enforced and undeclared methods denied, a method
    /// that no contract the gateway has declares is denied too.
    fn enforce_unknown(&self) {
        self.shared.deny_unknown.store(
            self.authenticator.is_some() && self.undeclared == Undeclared::Deny,
            Ordering::Relaxed,
        );
    }

    /// Checks rules of the application's own after the contract's.
    #[must_use]
    pub fn authorizer(mut self, authorizer: impl Authorizer) -> Self {
        self.authorizer = Some(Arc::new(authorizer));
        self
    }

    /// What a method that declares no access rule gets (as the server's
    /// `auth_undeclared`; deny by default), and a method no contract of
    /// the gateway's declares at all: with `Deny`, such calls are refused
    /// (`PERMISSION_DENIED`); with `Allow`, any authenticated caller may
    /// make them. Set the server's `auth_undeclared` to match.
    #[must_use]
    pub fn undeclared(mut self, undeclared: Undeclared) -> Self {
        self.undeclared = undeclared;
        self.enforce_unknown();
        self
    }

    /// The layer that forwards calls, for a server of your own
    /// (`Server::new(..).layer(gateway.layer())`; also
    /// [`declare`](sinew_server::Server::declare) the
    /// [`contracts`](Self::contracts)' methods so their access rules hold).
    pub fn layer(&self) -> ForwardLayer {
        ForwardLayer {
            shared: self.shared.clone(),
        }
    }

    /// A server scaffold named `name` that forwards every routed call, with
    /// the upstream contracts' access rules declared and the gateway's
    /// authenticator, ready for more settings and to [run](sinew_server::Server::run).
    pub fn server(&self, name: impl Into<String>) -> sinew_server::Server {
        let mut server = sinew_server::Server::new(name)
            .declare(self.shared.contracts.methods())
            .layer(self.layer());
        if let Some(authenticator) = &self.authenticator {
            server = server.authenticator(SharedAuthenticator(authenticator.clone()));
        }
        if let Some(authorizer) = &self.authorizer {
            server = server.authorizer(SharedAuthorizer(authorizer.clone()));
        }
        server
    }

    /// The upstreams' contracts.
    pub fn contracts(&self) -> &Contracts {
        &self.shared.contracts
    }

    /// What the gateway has counted.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// The version of the routes calls start on now: 1 at start, one more
    /// for each reload applied.
    pub fn version(&self) -> u64 {
        self.shared.current().version
    }

    /// Applies `config`'s clusters and routes. Calls in flight finish on
    /// the routes they started on; clusters whose settings did not change
    /// keep their clients (connections, breakers, bulkheads). The
    /// `[gateway]` table is not applied (it needs a restart); a change to
    /// it is logged.
    pub async fn apply(&self, config: GatewayConfig) -> Result<u64, GatewayError> {
        let mut current = self.reload.lock().await;
        if config.settings != current.settings {
            tracing::warn!("the [gateway] table changed; it applies at the next start");
        }
        let previous = self.shared.current();
        let table = Table::build(
            &config,
            &self.shared.contracts,
            Some(&previous),
            previous.version + 1,
        )
        .await?;
        let version = table.version;
        *self
            .shared
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(table);
        *current = config;
        self.shared.stats.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(version, "routes reloaded");
        Ok(version)
    }

    /// Reads the configuration file again and applies it; an invalid file
    /// changes nothing.
    pub async fn reload(&self) -> Result<u64, GatewayError> {
        let path = self.reload.lock().await.path.clone();
        let Some(path) = path else {
            return Ok(self.version());
        };
        let result = match GatewayConfig::from_file(&path) {
            Ok(config) => self.apply(config).await,
            Err(error) => Err(error.into()),
        };
        if let Err(error) = &result {
            self.shared
                .stats
                .reload_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, "the new configuration was refused; the routes stay as they were");
        }
        result
    }

    /// Watches the configuration file (every `reload_interval`) and
    /// reloads it when its bytes change. Stops when the task is aborted.
    pub fn watch(&self) -> tokio::task::JoinHandle<()> {
        let gateway = self.clone();
        tokio::spawn(async move {
            let (path, every) = {
                let config = gateway.reload.lock().await;
                (config.path.clone(), config.settings.reload_interval)
            };
            let Some(path) = path else { return };
            let mut seen = tokio::fs::read(&path).await.ok();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = tokio::fs::read(&path).await.ok();
                if now.is_some() && now != seen {
                    seen = now;
                    let _ = gateway.reload().await;
                }
            }
        })
    }

    /// Lets HTTP/JSON calls reach the handlers hosted in the gateway's own
    /// server (an aggregation, say): calls with no route are sent to its
    /// gRPC side at `addr`, with their credentials, where the server's
    /// own routing and access rules answer them. Without it, such calls
    /// are `UNIMPLEMENTED` (HTTP 501).
    pub async fn local_handlers(&self, addr: std::net::SocketAddr) -> Result<(), GatewayError> {
        let client = sinew_client::Client::connect_methods(
            self.shared.contracts.methods(),
            sinew_client::ClientConfig::endpoint(format!("http://{addr}")).retry(None),
        )
        .await?;
        let _ = self.shared.local.set(client);
        Ok(())
    }

    /// The HTTP/JSON side, as a `tower`-like service for a listener of
    /// your own; [`serve_http`](Self::serve_http) runs one.
    pub fn http(&self) -> http::HttpService {
        http::HttpService::new(
            self.shared.clone(),
            self.http.clone(),
            Arc::new(sinew_server::auth::AccessRules::new(
                self.shared.contracts.methods(),
                self.undeclared,
                self.authenticator.clone(),
                self.authorizer.clone(),
            )),
        )
    }

    /// Serves HTTP/JSON (HTTP/1.1 and HTTP/2) on `listener` until
    /// `signal`, then lets the requests in flight finish.
    pub async fn serve_http(
        &self,
        listener: tokio::net::TcpListener,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<(), GatewayError> {
        self.http().serve(listener, signal).await?;
        Ok(())
    }
}

/// The gateway's authenticator, shared with the server it builds.
struct SharedAuthenticator(Arc<dyn Authenticator>);

impl Authenticator for SharedAuthenticator {
    fn authenticate<'a>(
        &'a self,
        credentials: sinew_server::auth::Credentials<'a>,
    ) -> sinew_server::auth::AuthFuture<'a> {
        self.0.authenticate(credentials)
    }
}

/// The gateway's authorizer, shared with the server it builds.
struct SharedAuthorizer(Arc<dyn Authorizer>);

impl Authorizer for SharedAuthorizer {
    fn authorize(
        &self,
        principal: &sinew_server::auth::Principal,
        method: &sinew_core::contract::MethodInfo,
        headers: &::http::HeaderMap,
    ) -> Result<(), sinew_server::auth::Denied> {
        self.0.authorize(principal, method, headers)
    }
}
