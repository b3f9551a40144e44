//! Routing a call to the service it names, and the erased services that
//! middleware makes of hosted services and of the routes.

use std::{
    any::Any,
    convert::Infallible,
    future::{Future, Ready, ready},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use futures_util::future::Either;
use tonic::{Status, body::Body, server::NamedService};
use tower::{Service, ServiceExt as _};

use crate::BoxError;

/// What a hosted service's call returns, once erased: the type tonic's
/// generated servers already return, so theirs is passed through as it is.
pub(crate) type RouteFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

/// The hosted services, by gRPC service name.
///
/// A call's path is `/package.Service/Method`: it goes to the service whose
/// [`NamedService::NAME`] is `package.Service`, which answers for its
/// methods (an unknown method of a known service is that service's to
/// refuse). A path that names no hosted service, or is not of that form,
/// gets `UNIMPLEMENTED` as a trailers-only response, as tonic's router
/// answers.
///
/// Clones share the services. Each call clones the one service it goes to,
/// as a `tower` service is called through `&mut self`; a generated server
/// is an `Arc` and a few settings.
#[derive(Clone)]
pub(crate) struct Routes {
    routes: Arc<[Route]>,
}

/// One hosted service.
struct Route {
    name: &'static str,
    service: Box<dyn Routed>,
}

/// A service with its type erased: any body it answers with is made a
/// [`Body`], and any error it fails with an answer (see [`answer`]).
pub(crate) trait Routed: Send + Sync {
    fn call(&self, request: http::Request<Body>) -> RouteFuture;
}

/// Every call the server takes, routed to the hosted services, as a
/// server-wide layer (added with [`Server::layer`](crate::Server::layer))
/// gets it to wrap: a `tower` service of `http::Request<tonic::body::Body>`
/// answering `http::Response<tonic::body::Body>`, never failing (a call it
/// cannot route is answered `UNIMPLEMENTED`, one that is not gRPC HTTP
/// 415).
///
/// Clones share the services; cloning one is an `Arc` clone.
#[derive(Clone)]
pub struct Routing {
    kind: RoutingKind,
}

#[derive(Clone)]
enum RoutingKind {
    /// The routes themselves: what the server calls when no server-wide
    /// layer is added (no erasure, no boxing beyond the routes' own).
    Routes(Routes),
    /// The routes under server-wide layers.
    Layered(Arc<dyn Routed>),
}

/// Collects the services of [`Routes`].
#[derive(Default)]
pub(crate) struct RoutesBuilder {
    routes: Vec<Route>,
}

/// Two hosted services have the same name: calls could reach only one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("two services are named {name}")]
pub(crate) struct DuplicateService {
    pub(crate) name: &'static str,
}

// === impl RoutesBuilder ===

impl RoutesBuilder {
    /// Adds `service`, routed by its [`NamedService::NAME`].
    pub(crate) fn add_service<S>(&mut self, service: S) -> Result<&mut Self, DuplicateService>
    where
        S: NamedService,
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.add_route(S::NAME, service)
    }

    /// Adds `service` under the gRPC service name `name`: it may answer
    /// with any body and fail with any error, which are made a [`Body`]
    /// and an answer as its calls go.
    pub(crate) fn add_route<S, B>(
        &mut self,
        name: &'static str,
        service: S,
    ) -> Result<&mut Self, DuplicateService>
    where
        S: Service<http::Request<Body>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if self.routes.iter().any(|route| route.name == name) {
            return Err(DuplicateService { name });
        }
        self.routes.push(Route {
            name,
            service: Box::new(service),
        });
        Ok(self)
    }

    /// The routes, in the order the services were added (looked up in that
    /// order: the first added is found first).
    pub(crate) fn build(self) -> Routes {
        Routes {
            routes: self.routes.into(),
        }
    }
}

// === impl Routes ===

impl Routes {
    fn find(&self, path: &str) -> Option<&Route> {
        let name = service_name(path)?;
        self.routes.iter().find(|route| route.name == name)
    }
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|route| route.name))
            .finish()
    }
}

impl Service<http::Request<Body>> for Routes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<RouteFuture, Ready<Result<http::Response<Body>, Infallible>>>;

    /// Always ready: each call readies the service it goes to.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if !is_grpc_protobuf(request.headers()) {
            return Either::Right(ready(Ok(unsupported_media_type())));
        }
        match self.find(request.uri().path()) {
            Some(route) => Either::Left(route.service.call(request)),
            None => Either::Right(ready(Ok(unimplemented()))),
        }
    }
}

/// The service name of a gRPC path, `package.Service` of
/// `/package.Service/Method`; `None` unless the path has that form (both
/// parts non-empty).
fn service_name(path: &str) -> Option<&str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty()).then_some(service)
}

/// Whether a request's content type is gRPC with protobuf messages:
/// `application/grpc`, or `application/grpc+proto`, with or without
/// parameters. Anything else (none, another type, `application/grpc+json`,
/// whose messages the generated servers would misread as protobuf) is
/// refused before a handler sees it.
fn is_grpc_protobuf(headers: &http::HeaderMap) -> bool {
    let Some(value) = crate::headers::find(headers, &http::header::CONTENT_TYPE) else {
        return false;
    };
    let Some(rest) = value.as_bytes().strip_prefix(b"application/grpc") else {
        return false;
    };
    let rest = rest.strip_prefix(b"+proto").unwrap_or(rest);
    rest.is_empty() || rest.starts_with(b";")
}

/// The answer to a request that is not gRPC with protobuf messages: HTTP
/// 415, as the gRPC spec asks, with `INTERNAL` for gRPC clients that read
/// only the status.
fn unsupported_media_type() -> http::Response<Body> {
    let mut response = Status::internal("content-type is not application/grpc").into_http();
    *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response
}

/// The answer to a call no hosted service takes, as tonic's router gives
/// it: `UNIMPLEMENTED` with no message, trailers-only.
fn unimplemented() -> http::Response<Body> {
    Status::unimplemented("").into_http()
}

// === impl Routing ===

impl Routing {
    /// The routes, with no layer over them.
    pub(crate) fn new(routes: Routes) -> Self {
        Self {
            kind: RoutingKind::Routes(routes),
        }
    }

    /// `service` (a server-wide layer over routing), erased.
    pub(crate) fn layered<S, B>(service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            kind: RoutingKind::Layered(Arc::new(service)),
        }
    }
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            RoutingKind::Routes(routes) => f.debug_tuple("Routing").field(routes).finish(),
            RoutingKind::Layered(_) => f.write_str("Routing(layered)"),
        }
    }
}

impl Service<http::Request<Body>> for Routing {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = RoutingFuture;

    /// Always ready: each call readies the services it goes through.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match &mut self.kind {
            RoutingKind::Routes(routes) => RoutingFuture {
                inner: routes.call(request),
            },
            RoutingKind::Layered(service) => RoutingFuture {
                inner: Either::Left(Routed::call(&**service, request)),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`Routing`] to a call, once the service it went to
    /// answers.
    pub struct RoutingFuture {
        #[pin]
        inner: Either<RouteFuture, Ready<Result<http::Response<Body>, Infallible>>>,
    }
}

impl Future for RoutingFuture {
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl std::fmt::Debug for RoutingFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingFuture").finish_non_exhaustive()
    }
}

// === impl Routed ===

impl<S, B> Routed for S
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn call(&self, request: http::Request<Body>) -> RouteFuture {
        let mut service = self.clone();
        // A generated server is always ready: check that without a waker,
        // and call it at once. A service that is not ready yet is waited for
        // in the call's future, which registers the real waker.
        match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
            // Named in full: `Routed::call` would be found first.
            Poll::Ready(Ok(())) => erase(Service::call(&mut service, request)),
            // A service that cannot take calls (a layer's, shedding load,
            // say) fails this one with its error's answer.
            Poll::Ready(Err(error)) => Box::pin(ready(Ok(answer(error.into())))),
            Poll::Pending => erase(service.oneshot(request)),
        }
    }
}

/// `future` as a [`RouteFuture`]: moved as it is when it already is one
/// (tonic's generated servers box their futures), boxed otherwise, with
/// its body made a [`Body`] (not boxed again if it is one) and its error
/// an answer. The check is on the type, which the compiler resolves.
fn erase<F, B, E>(future: F) -> RouteFuture
where
    F: Future<Output = Result<http::Response<B>, E>> + Send + 'static,
    E: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut future = Some(future);
    match (&mut future as &mut dyn Any).downcast_mut::<Option<RouteFuture>>() {
        Some(boxed) => boxed.take().expect("the future is there"),
        None => {
            let future = future.take().expect("the future is there");
            Box::pin(async move {
                Ok(match future.await {
                    Ok(response) => response.map(Body::new),
                    Err(error) => answer(error.into()),
                })
            })
        }
    }
}

/// The answer to a call whose service (or a layer of a user's over it)
/// failed with `error`: a [`Status`] is answered as it is, anything else
/// as `INTERNAL` with no detail (see `recover.rs`).
fn answer(error: BoxError) -> http::Response<Body> {
    super::recover::recover(error)
        .unwrap_or_else(|_| Status::internal("internal error").into_http())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_grpc_with_protobuf_messages_is_taken() {
        let with = |value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(value),
            );
            is_grpc_protobuf(&headers)
        };
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
            "application/grpc+proto; x=1",
        ] {
            assert!(with(ok), "{ok}");
        }
        for refused in [
            "application/json",
            "application/grpc+json",
            "application/grpc-web",
            "application/grpcx",
            "text/plain",
            "",
        ] {
            assert!(!with(refused), "{refused}");
        }
        assert!(!is_grpc_protobuf(&http::HeaderMap::new()));
    }

    use super::*;

    #[derive(Clone)]
    struct Named<const N: usize>;

    impl NamedService for Named<1> {
        const NAME: &'static str = "test.v1.One";
    }

    impl NamedService for Named<2> {
        const NAME: &'static str = "test.v1.Two";
    }

    impl<const N: usize> Service<http::Request<Body>> for Named<N> {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = RouteFuture;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            let mut response = http::Response::new(Body::empty());
            response.headers_mut().insert(
                "x-served-by",
                http::HeaderValue::from_static(if N == 1 { "one" } else { "two" }),
            );
            response.headers_mut().insert(
                "x-path",
                http::HeaderValue::from_str(request.uri().path()).unwrap(),
            );
            Box::pin(ready(Ok(response)))
        }
    }

    fn routes() -> Routes {
        let mut builder = RoutesBuilder::default();
        builder.add_service(Named::<1>).unwrap();
        builder.add_service(Named::<2>).unwrap();
        builder.build()
    }

    async fn call(path: &str) -> http::Response<Body> {
        let request = http::Request::builder()
            .uri(path)
            .header("content-type", "application/grpc")
            .body(Body::empty())
            .unwrap();
        routes().oneshot(request).await.unwrap()
    }

    fn grpc_status(response: &http::Response<Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn a_call_goes_to_the_service_its_path_names() {
        let response = call("/test.v1.Two/Get").await;
        assert_eq!(response.headers()["x-served-by"], "two");
        assert_eq!(response.headers()["x-path"], "/test.v1.Two/Get");
        let response = call("/test.v1.One/Put").await;
        assert_eq!(response.headers()["x-served-by"], "one");
    }

    #[tokio::test]
    async fn an_unknown_service_is_unimplemented() {
        let response = call("/test.v1.Three/Get").await;
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(grpc_status(&response), Some("12"));
        assert!(response.headers().get("x-served-by").is_none());
    }

    #[tokio::test]
    async fn a_malformed_path_is_unimplemented() {
        for path in ["/", "/test.v1.One", "/test.v1.One/", "//Get", "/x"] {
            let response = call(path).await;
            assert_eq!(grpc_status(&response), Some("12"), "{path}");
        }
    }

    #[test]
    fn service_names_of_paths() {
        assert_eq!(service_name("/a.B/C"), Some("a.B"));
        assert_eq!(service_name("/a.B/C/D"), Some("a.B"));
        assert_eq!(service_name("a.B/C"), None);
        assert_eq!(service_name("/a.B/"), None);
        assert_eq!(service_name("/a.B"), None);
    }

    #[test]
    fn a_second_service_of_one_name_is_refused() {
        let mut builder = RoutesBuilder::default();
        builder.add_service(Named::<1>).unwrap();
        let error = builder.add_service(Named::<1>).err().unwrap();
        assert_eq!(error.name, "test.v1.One");
    }

    #[tokio::test]
    async fn a_route_of_any_body_and_error_is_answered() {
        use http_body_util::BodyExt as _;

        // Fails with a status: answered with it.
        let refusing = tower::service_fn(|_: http::Request<Body>| async {
            Err::<http::Response<http_body_util::Full<Bytes>>, _>(Status::unauthenticated("who"))
        });
        // Answers with another body type: made a `Body`, data intact.
        let answering = tower::service_fn(|_: http::Request<Body>| async {
            Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                Bytes::from_static(b"data"),
            )))
        });
        let mut builder = RoutesBuilder::default();
        builder.add_route("test.v1.One", refusing).unwrap();
        builder.add_route("test.v1.Two", answering).unwrap();
        let routes = builder.build();
        let call = |path: &'static str| {
            let routes = routes.clone();
            async move {
                let request = http::Request::builder()
                    .uri(path)
                    .header("content-type", "application/grpc")
                    .body(Body::empty())
                    .unwrap();
                routes.oneshot(request).await.unwrap()
            }
        };
        let refused = call("/test.v1.One/Get").await;
        assert_eq!(grpc_status(&refused), Some("16"));
        let answered = call("/test.v1.Two/Get").await;
        let data = answered.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(data, Bytes::from_static(b"data"));
    }

    #[test]
    fn a_boxed_future_is_not_boxed_again() {
        let boxed: RouteFuture = Box::pin(ready(Ok(http::Response::new(Body::empty()))));
        let before = std::ptr::addr_of!(*boxed).cast::<()>();
        let erased = erase(boxed);
        assert_eq!(std::ptr::addr_of!(*erased).cast::<()>(), before);
    }
}
