//! Shared by the integration tests: the echo service, and a server on a
//! free loopback port that a test can drain.

#![allow(dead_code, reason = "each test file uses a different part")]

pub(crate) mod collector;
pub(crate) mod gateway;
pub(crate) mod processes;
pub(crate) mod secure;
pub(crate) mod tls_greeter;

use std::{net::SocketAddr, time::Duration};

use bytes::{Bytes, BytesMut};

use sinew::{Server, health::HealthRegistry, server::ServerConfig};
pub(crate) use sinew_workspace::echo::EchoService;
use sinew_workspace::proto::echo::v1::{
    EchoReply, EchoRequest,
    echo_server::{Echo, EchoServer},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{Request, transport::Channel};

/// A scaffolded server running on a free loopback port.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) health: HealthRegistry,
    stop: Option<oneshot::Sender<()>>,
    pub(crate) task: JoinHandle<Result<(), sinew::server::ServerError>>,
}

impl Running {
    /// Starts `server` on 127.0.0.1 with an OS-chosen port.
    pub(crate) async fn start(server: Server) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, server)
    }

    /// Starts `server` on a listener bound by the caller.
    pub(crate) fn start_on(listener: TcpListener, server: Server) -> Self {
        let addr = listener.local_addr().unwrap();
        let health = server.health();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve_with_listener(listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            health,
            stop: Some(stop),
            task,
        }
    }

    /// The echo service on a default server, with no lame-duck wait.
    pub(crate) async fn echo() -> Self {
        Self::start(echo_server(ServerConfig::new().lame_duck(Duration::ZERO))).await
    }

    /// A connected channel to the server.
    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Starts the drain, as SIGTERM would.
    pub(crate) fn begin_drain(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Drains and waits for the server to stop.
    pub(crate) async fn stop(mut self) {
        self.begin_drain();
        self.task.await.unwrap().unwrap();
    }
}

/// A server hosting the echo service with `config`.
pub(crate) fn echo_server(config: ServerConfig) -> Server {
    Server::new("echo")
        .config(config)
        .add_service(EchoServer::new(EchoService))
}

/// `SINEW_REQUIRE_SERVICES=1` turns a skipped test into a failure.
pub(crate) fn require_services() -> bool {
    std::env::var("SINEW_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Whether `python3` can import `modules` (Python module names) for the
/// interop tests named `what`; `false` after saying so loudly, and a
/// failure instead under `SINEW_REQUIRE_SERVICES=1`. `packages` is what
/// to `pip install`.
#[allow(clippy::print_stderr, reason = "a skipped test says so loudly")]
pub(crate) fn python_ready(what: &str, modules: &[&str], packages: &str) -> bool {
    let available = std::process::Command::new("python3")
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            !require_services(),
            "SINEW_REQUIRE_SERVICES=1 but python3 cannot import {}",
            modules.join(", ")
        );
        eprintln!(
            "\n*** SKIPPED {what}: python3 cannot import {} (pip install {packages}) ***\n",
            modules.join(", ")
        );
    }
    available
}

/// The path of a built example binary (cargo builds examples for tests).
pub(crate) fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "example binary {} not found; `cargo test` builds examples, run it that way",
        path.display()
    );
    path
}

/// A loopback port held bound but not listening, shared with the
/// framework crates' own tests.
#[allow(
    unused_imports,
    reason = "each test binary uses what it needs of common"
)]
pub(crate) use sinew_testing::ClosedPort;

/// The greeter example running as a server process on a free port; killed
/// when dropped.
pub(crate) struct GreeterProcess {
    pub(crate) addr: SocketAddr,
    pub(crate) child: std::process::Child,
}

impl GreeterProcess {
    /// Starts `greeter server` with these extra environment variables and
    /// waits until it answers health checks.
    pub(crate) async fn start(env: &[(&str, &str)]) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], processes::free_port()));
        let child = std::process::Command::new(example_binary("greeter"))
            .args(["server", "--addr", &addr.to_string()])
            // The lame-duck default depends on these: tests that run under
            // an orchestrator behave as on a developer's machine unless
            // they ask otherwise.
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("NOMAD_ALLOC_ID")
            .env_remove("ECS_CONTAINER_METADATA_URI_V4")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let process = Self { addr, child };
        for _ in 0..200 {
            if let Ok(mut health) =
                sinew::health::proto::health_client::HealthClient::connect(format!("http://{addr}"))
                    .await
            {
                let asked = sinew::health::proto::HealthCheckRequest {
                    service: String::new(),
                };
                if health.check(asked).await.is_ok() {
                    return process;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the greeter server did not come up on {addr}");
    }
}

impl Drop for GreeterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a [`Scripted`] server saw of one call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Seen {
    pub(crate) method: &'static str,
    pub(crate) previous_attempts: Option<String>,
    pub(crate) timeout: Option<String>,
}

/// An echo service that fails the first `fail_first` calls with `code`
/// (adding `grpc-retry-pushback-ms` when `pushback` is set), then answers,
/// and records every call it sees.
#[derive(Debug, Clone)]
pub(crate) struct Scripted {
    pub(crate) fail_first: usize,
    pub(crate) code: tonic::Code,
    pub(crate) pushback: Option<&'static str>,
    pub(crate) seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

impl Scripted {
    pub(crate) fn failing(fail_first: usize, code: tonic::Code) -> Self {
        Self {
            fail_first,
            code,
            pushback: None,
            seen: Default::default(),
        }
    }

    /// Calls seen so far.
    pub(crate) fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn answer(
        &self,
        method: &'static str,
        request: Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, tonic::Status> {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let n = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(Seen {
                method,
                previous_attempts: header("grpc-previous-rpc-attempts"),
                timeout: header("grpc-timeout"),
            });
            seen.len()
        };
        let request = request.into_inner();
        if n <= self.fail_first {
            let mut status = tonic::Status::new(self.code, "scripted failure");
            if let Some(pushback) = self.pushback {
                status
                    .metadata_mut()
                    .insert("grpc-retry-pushback-ms", pushback.parse().unwrap());
            }
            return Err(status);
        }
        if request.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))).await;
        }
        Ok(tonic::Response::new(EchoReply {
            message: format!("{} #{n}", request.message),
            payload: Vec::new(),
        }))
    }
}

#[tonic::async_trait]
impl Unary for Scripted {
    async fn unary(&self, method: &'static str, request: Request<EchoRequest>) -> Reply {
        self.answer(method, request).await
    }
}

type Reply = Result<tonic::Response<EchoReply>, tonic::Status>;

/// A test service that only answers the unary methods of the echo
/// contract; [`UnaryEcho`] serves it.
#[tonic::async_trait]
pub(crate) trait Unary: Send + Sync + 'static {
    /// Answers `Get`, `Put` or `Post` (named by `method`).
    async fn unary(&self, method: &'static str, request: Request<EchoRequest>) -> Reply;
}

/// Serves a [`Unary`] as the echo service; its streaming methods are
/// unimplemented.
#[derive(Debug, Clone)]
pub(crate) struct UnaryEcho<T>(pub(crate) T);

#[tonic::async_trait]
impl<T: Unary> Echo for UnaryEcho<T> {
    async fn get(&self, request: Request<EchoRequest>) -> Reply {
        self.0.unary("Get", request).await
    }

    async fn put(&self, request: Request<EchoRequest>) -> Reply {
        self.0.unary("Put", request).await
    }

    async fn post(&self, request: Request<EchoRequest>) -> Reply {
        self.0.unary("Post", request).await
    }

    type ExpandStream = futures_util::stream::Empty<Result<EchoReply, tonic::Status>>;

    async fn expand(
        &self,
        _request: Request<EchoRequest>,
    ) -> Result<tonic::Response<Self::ExpandStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("unary test service"))
    }

    async fn collect(&self, _request: Request<tonic::Streaming<EchoRequest>>) -> Reply {
        Err(tonic::Status::unimplemented("unary test service"))
    }

    type ChatStream = futures_util::stream::Empty<Result<EchoReply, tonic::Status>>;

    async fn chat(
        &self,
        _request: Request<tonic::Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<Self::ChatStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("unary test service"))
    }
}

/// Serves `service` as the echo service on the scaffold on a free port.
pub(crate) async fn serve_echo(service: impl Unary) -> Running {
    serve_echo_with(ServerConfig::new(), service).await
}

/// [`serve_echo`] with `config` (and no lame-duck delay).
pub(crate) async fn serve_echo_with(config: ServerConfig, service: impl Unary) -> Running {
    Running::start(
        Server::new("scripted")
            .config(config.lame_duck(Duration::ZERO))
            .add_service(EchoServer::new(UnaryEcho(service))),
    )
    .await
}

/// A resilient echo client of `servers`, seeded, with `tune` applied to
/// the defaults.
pub(crate) async fn echo_client(
    servers: &[SocketAddr],
    tune: impl FnOnce(sinew::client::ClientConfig) -> sinew::client::ClientConfig,
) -> sinew_workspace::proto::echo::v1::EchoClient {
    let config =
        sinew::client::ClientConfig::endpoints(servers.iter().map(|a| format!("http://{a}")))
            .seed(7);
    sinew_workspace::proto::echo::v1::EchoClient::connect(tune(config))
        .await
        .unwrap()
}

pub(crate) fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
        ..Default::default()
    }
}

/// The headers of a gRPC call to `path`, for a test that speaks HTTP/2 by
/// hand.
pub(crate) fn grpc_request(path: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// Sends one gRPC call over HTTP/2 by hand on `send` (no client library
/// between the test and the wire), `body` already framed, and returns its
/// `grpc-status` (from the trailers, or from the headers of a
/// trailers-only response) and the response's data.
pub(crate) async fn raw_call_on(
    send: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    body: Bytes,
) -> (i32, Bytes) {
    let request = grpc_request(path);
    let (response, mut stream) = send
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(request, false)
        .unwrap();
    stream.send_data(body, true).unwrap();
    let response = response.await.unwrap();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    // A trailers-only response carries the status in the headers.
    let status = trailers
        .get("grpc-status")
        .or_else(|| headers.get("grpc-status"))
        .expect("a grpc-status")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (status, data.freeze())
}
