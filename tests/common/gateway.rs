//! The gateway tests' upstreams and gateways, on loopback.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sinew::{
    Server,
    gateway::{Contracts, Gateway, GatewayConfig},
    server::{
        ServerConfig,
        auth::{AuthFuture, Authenticator, Credentials, Principal, Source},
    },
};
use sinew_workspace::{
    proto::{
        FILE_DESCRIPTOR_SET, echo::v1::echo_server::EchoServer,
        storefront::orders::v1::orders_server::OrdersServer,
    },
    storefront::OrdersService,
};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::body::Body;

use super::{EchoService, Running};

/// Request headers an upstream saw, in order.
pub(crate) type Seen = Arc<Mutex<Vec<http::HeaderMap>>>;

/// An upstream server, with what it saw.
pub(crate) struct Upstream {
    pub(crate) running: Running,
    pub(crate) seen: Seen,
    pub(crate) calls: Arc<AtomicU64>,
}

impl Upstream {
    /// `http://addr`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.running.addr)
    }

    /// Calls it has taken.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

fn recording(
    seen: Seen,
    calls: Arc<AtomicU64>,
) -> impl Fn(http::Request<Body>) -> http::Request<Body> + Clone {
    move |request: http::Request<Body>| {
        calls.fetch_add(1, Ordering::SeqCst);
        seen.lock().unwrap().push(request.headers().clone());
        request
    }
}

fn quick() -> ServerConfig {
    ServerConfig::new()
        .lame_duck(Duration::ZERO)
        .grace_period(Duration::from_secs(5))
}

/// The echo service, recording what it sees.
pub(crate) async fn echo_upstream() -> Upstream {
    let seen = Seen::default();
    let calls = Arc::new(AtomicU64::new(0));
    let server = Server::new("echo").config(quick()).add_service_with(
        EchoServer::new(EchoService),
        tower::util::MapRequestLayer::new(recording(seen.clone(), calls.clone())),
    );
    Upstream {
        running: Running::start(server).await,
        seen,
        calls,
    }
}

/// An orders service, recording what it sees.
pub(crate) async fn orders_upstream(service: OrdersService) -> Upstream {
    let seen = Seen::default();
    let calls = Arc::new(AtomicU64::new(0));
    let server = Server::new("orders").config(quick()).add_service_with(
        OrdersServer::new(service),
        tower::util::MapRequestLayer::new(recording(seen.clone(), calls.clone())),
    );
    Upstream {
        running: Running::start(server).await,
        seen,
        calls,
    }
}

/// Cluster tables for `clusters` (name, URL), then `routes`.
pub(crate) fn config_text(clusters: &[(&str, &str)], routes: &str) -> String {
    let mut text = String::from("[gateway]\nseed = 7\n\n");
    for (name, url) in clusters {
        text.push_str(&format!("[clusters.{name}]\nendpoints = [\"{url}\"]\n\n"));
    }
    text.push_str(routes);
    text
}

/// The workspace's contracts, as a gateway knows them.
pub(crate) fn contracts() -> Contracts {
    Contracts::from_encoded([FILE_DESCRIPTOR_SET]).unwrap()
}

/// A gateway for `config`, and its gRPC side running on loopback.
pub(crate) async fn start_gateway(config: GatewayConfig) -> (Gateway, Running) {
    start_with(Gateway::new(config, contracts()).await.unwrap(), |server| {
        server
    })
    .await
}

/// `gateway`'s gRPC side, with `setup` applied to its server.
pub(crate) async fn start_with(
    gateway: Gateway,
    setup: impl FnOnce(Server) -> Server,
) -> (Gateway, Running) {
    let server = setup(gateway.server("gateway").config(quick()));
    let running = Running::start(server).await;
    (gateway, running)
}

/// `gateway`'s HTTP/JSON side on a free loopback port; it stops when the
/// sender is dropped.
pub(crate) async fn start_http(gateway: &Gateway) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let gateway = gateway.clone();
    tokio::spawn(async move {
        gateway
            .serve_http(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop)
}

/// An authenticator for the tests: `x-user: name:scope,scope` names a
/// principal and its scopes.
pub(crate) struct TestUsers;

impl Authenticator for TestUsers {
    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> AuthFuture<'a> {
        let principal = credentials
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .map(|user| {
                let (name, scopes) = user.split_once(':').unwrap_or((user, ""));
                Principal::new(name, Source::Custom("test"))
                    .with_scopes(scopes.split(',').filter(|s| !s.is_empty()))
            });
        Box::pin(std::future::ready(Ok(principal)))
    }
}
