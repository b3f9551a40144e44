//! Users' middleware on the scaffold: tonic interceptors and tower layers
//! around one hosted service and around all of them, on a real server
//! called by generated clients.

mod common;

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use common::{EchoService, Running};
use sinew::{
    Server,
    health::proto::{HealthCheckRequest, health_client::HealthClient},
    server::{Deadline, ServerConfig},
};
use sinew_workspace::proto::echo::v1::{
    EchoRequest, echo_client::EchoClient, echo_server::EchoServer,
};
use tonic::{Code, Status, body::Body, service::InterceptorLayer, transport::Channel};
use tower::{Layer, Service};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The interceptor under test: a call needs `authorization: Bearer
/// let-me-in`; one that has it gets `x-user` in its extensions.
#[allow(
    clippy::result_large_err,
    reason = "tonic's Interceptor returns Result<_, Status>"
)]
fn check_token(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
    match request.metadata().get("authorization") {
        Some(token) if token == "Bearer let-me-in" => {
            request.extensions_mut().insert(User("alice"));
            Ok(request)
        }
        _ => Err(Status::unauthenticated("no valid token")),
    }
}

#[derive(Debug, Clone)]
struct User(&'static str);

fn config() -> ServerConfig {
    ServerConfig::new().lame_duck(Duration::ZERO)
}

async fn echo_client(server: &Running) -> EchoClient<Channel> {
    EchoClient::new(server.channel().await)
}

fn request(token: Option<&str>) -> tonic::Request<EchoRequest> {
    let mut request = tonic::Request::new(EchoRequest {
        message: "hi".into(),
        ..EchoRequest::default()
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", token.parse().unwrap());
    }
    request
}

async fn health_of(server: &Running, service: &str) -> Result<i32, Code> {
    HealthClient::new(server.channel().await)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

/// The services reflection lists, asked with no token.
async fn reflected_services(server: &Running) -> Result<Vec<String>, Code> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(server.channel().await);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .map_err(|s| s.code())?
        .into_inner();
    let answer = responses
        .message()
        .await
        .map_err(|s| s.code())?
        .and_then(|r| r.message_response);
    let Some(MessageResponse::ListServicesResponse(list)) = answer else {
        panic!("expected a service list: {answer:?}");
    };
    Ok(list.service.into_iter().map(|s| s.name).collect())
}

async fn an_interceptor_guards(server: Running) {
    let mut client = echo_client(&server).await;
    let refused = client.get(request(None)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(refused.message(), "no valid token");
    let refused = client.get(request(Some("Bearer guess"))).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let reply = client.get(request(Some("Bearer let-me-in"))).await.unwrap();
    assert_eq!(reply.into_inner().message, "hi");
    // Health and reflection are not the service's: no token needed.
    assert_eq!(health_of(&server, "echo.v1.Echo").await, Ok(1));
    assert_eq!(health_of(&server, "").await, Ok(1));
    let reflected = reflected_services(&server).await.unwrap();
    assert!(
        reflected.iter().any(|name| name == "echo.v1.Echo"),
        "{reflected:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_service_wrapped_in_an_interceptor_refuses_calls_without_a_token() {
    let server = Running::start(
        Server::new("guarded")
            .config(config())
            .add_service(EchoServer::with_interceptor(EchoService, check_token)),
    )
    .await;
    an_interceptor_guards(server).await;
}

#[tokio::test]
async fn an_interceptor_given_as_a_layer_refuses_calls_without_a_token() {
    let server = Running::start(Server::new("guarded").config(config()).add_service_with(
        EchoServer::new(EchoService),
        InterceptorLayer::new(check_token),
    ))
    .await;
    an_interceptor_guards(server).await;
}

/// What the layers saw, in the order they saw it.
type Log = Arc<Mutex<Vec<String>>>;

/// A tower layer for the tests: logs each call it sees (with whether the
/// scaffold's deadline and the peer's address are in its extensions, and
/// whether an interceptor's extension is), stamps `x-seen-by` on the
/// response, and on request: refuses (`x-refuse: <tag>`, as an error) or
/// panics (`x-panic: <tag>`).
#[derive(Clone)]
struct Tagged {
    tag: &'static str,
    log: Log,
}

#[derive(Clone)]
struct TaggedService<S> {
    inner: S,
    tag: &'static str,
    log: Log,
}

impl<S> Layer<S> for Tagged {
    type Service = TaggedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TaggedService {
            inner,
            tag: self.tag,
            log: self.log.clone(),
        }
    }
}

impl<S, B> Service<http::Request<Body>> for TaggedService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<B>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let extensions = request.extensions();
        self.log.lock().unwrap().push(format!(
            "{} {} deadline={} peer={}",
            self.tag,
            request.uri().path(),
            extensions.get::<Deadline>().is_some(),
            extensions
                .get::<tonic::transport::server::TcpConnectInfo>()
                .is_some_and(|info| info.remote_addr().is_some()),
        ));
        let asked = |name: &str| {
            request
                .headers()
                .get(name)
                .is_some_and(|value| value == self.tag)
        };
        if asked("x-panic") {
            panic!("{} was asked to panic", self.tag);
        }
        if asked("x-refuse") {
            let status = Status::permission_denied(format!("refused by {}", self.tag));
            return Box::pin(std::future::ready(Err(status.into())));
        }
        let tag = self.tag;
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = call.await.map_err(Into::into)?;
            response
                .headers_mut()
                .append("x-seen-by", http::HeaderValue::from_static(tag));
            Ok(response)
        })
    }
}

fn tagged(tag: &'static str, log: &Log) -> Tagged {
    Tagged {
        tag,
        log: log.clone(),
    }
}

async fn layered_server(log: &Log) -> Running {
    Running::start(
        Server::new("layered")
            .config(config())
            .layer(tagged("outer", log))
            .layer(tagged("inner", log))
            .add_service_with(EchoServer::new(EchoService), tagged("echo", log)),
    )
    .await
}

fn taken(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[tokio::test]
async fn server_and_service_layers_run_in_the_documented_order() {
    let log = Log::default();
    let server = layered_server(&log).await;
    let mut client = echo_client(&server).await;

    let reply = client.get(request(None)).await.unwrap();
    // Server-wide layers in the order they were added, then the service's;
    // all of them inside the deadline layer, with the peer's address.
    assert_eq!(
        taken(&log),
        [
            "outer /echo.v1.Echo/Get deadline=true peer=true",
            "inner /echo.v1.Echo/Get deadline=true peer=true",
            "echo /echo.v1.Echo/Get deadline=true peer=true",
        ]
    );
    // Each added its header to the response, the innermost first.
    let seen: Vec<_> = reply
        .metadata()
        .get_all("x-seen-by")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["echo", "inner", "outer"]);

    // Health goes through the server's layers, not the service's.
    assert_eq!(health_of(&server, "echo.v1.Echo").await, Ok(1));
    assert_eq!(
        taken(&log),
        [
            "outer /grpc.health.v1.Health/Check deadline=true peer=true",
            "inner /grpc.health.v1.Health/Check deadline=true peer=true",
        ]
    );
    // So does reflection.
    reflected_services(&server).await.unwrap();
    let path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    assert_eq!(
        taken(&log),
        [
            format!("outer {path} deadline=true peer=true"),
            format!("inner {path} deadline=true peer=true"),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_layer_refuses_a_call_with_its_status_and_its_panic_is_caught() {
    let log = Log::default();
    let server = layered_server(&log).await;
    let mut client = echo_client(&server).await;

    for tag in ["outer", "inner", "echo"] {
        let mut call = request(None);
        call.metadata_mut().insert("x-refuse", tag.parse().unwrap());
        let refused = client.get(call).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{tag}: {refused:?}");
        assert_eq!(refused.message(), format!("refused by {tag}"));
    }
    // A refusal stops the call there: the layers inside it never saw it.
    let seen = taken(&log);
    assert_eq!(seen.iter().filter(|l| l.starts_with("echo")).count(), 1);
    assert_eq!(seen.iter().filter(|l| l.starts_with("outer")).count(), 3);

    // A layer's panic is the scaffold's to catch: INTERNAL for that call,
    // and the server goes on.
    for tag in ["outer", "echo"] {
        let mut call = request(None);
        call.metadata_mut().insert("x-panic", tag.parse().unwrap());
        let failed = client.get(call).await.unwrap_err();
        assert_eq!(failed.code(), Code::Internal, "{tag}: {failed:?}");
    }
    client.get(request(None)).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_server_layer_sees_calls_to_services_not_hosted() {
    let log = Log::default();
    let server = Running::start(
        Server::new("layered")
            .config(config())
            .layer(tagged("outer", &log))
            .add_service(EchoServer::new(EchoService)),
    )
    .await;
    let mut client = sinew_workspace::proto::greeter::v1::greeter_client::GreeterClient::new(
        server.channel().await,
    );
    let refused = client
        .say_hello(sinew_workspace::proto::greeter::v1::HelloRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented);
    assert_eq!(
        taken(&log),
        ["outer /greeter.v1.Greeter/SayHello deadline=true peer=true"]
    );
    server.stop().await;
}

#[tokio::test]
async fn an_interceptors_extensions_reach_a_layer_inside_it() {
    // The interceptor (per server, as a layer) puts the caller in the
    // request's extensions; the service's own layer reads it.
    #[derive(Clone)]
    struct NeedsUser<S>(S);
    impl<S> Service<http::Request<Body>> for NeedsUser<S>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>>,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = futures_util::future::Either<
            S::Future,
            std::future::Ready<Result<http::Response<Body>, S::Error>>,
        >;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.0.poll_ready(cx)
        }
        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            match request.extensions().get::<User>() {
                Some(User("alice")) => futures_util::future::Either::Left(self.0.call(request)),
                _ => futures_util::future::Either::Right(std::future::ready(Ok(
                    Status::failed_precondition("no user").into_http(),
                ))),
            }
        }
    }
    let server = Running::start(
        Server::new("layered")
            .config(config())
            .layer(InterceptorLayer::new(check_token))
            .add_service_with(
                EchoServer::new(EchoService),
                tower::layer::layer_fn(NeedsUser),
            ),
    )
    .await;
    let mut client = echo_client(&server).await;
    let refused = client.get(request(None)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    client.get(request(Some("Bearer let-me-in"))).await.unwrap();
    server.stop().await;
}
