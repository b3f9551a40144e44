//! A bare tonic server with a hand-written echo service, for measuring and
//! testing the bench engine.
//!
//! `/bench.Echo/Echo` answers the request message back; `/bench.Echo/Fail`
//! answers `UNAVAILABLE`; any other method of the service is `UNIMPLEMENTED`.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// The echo message: one bytes field.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Payload {
    /// Opaque data, echoed back.
    #[prost(bytes = "bytes", tag = "1")]
    pub data: bytes::Bytes,
}

/// Full path of the echo method.
pub(crate) const ECHO_PATH: &str = "/bench.Echo/Echo";
/// Full path of the method that always fails with `UNAVAILABLE`.
pub(crate) const FAIL_PATH: &str = "/bench.Echo/Fail";

/// The echo service, routed by hand.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EchoService;

impl NamedService for EchoService {
    const NAME: &'static str = "bench.Echo";
}

struct Echo;

impl UnaryService<Payload> for Echo {
    type Response = Payload;
    type Future = Ready<Result<Response<Payload>, Status>>;

    fn call(&mut self, request: Request<Payload>) -> Self::Future {
        ready(Ok(Response::new(request.into_inner())))
    }
}

struct Fail;

impl UnaryService<Payload> for Fail {
    type Response = Payload;
    type Future = Ready<Result<Response<Payload>, Status>>;

    fn call(&mut self, _request: Request<Payload>) -> Self::Future {
        ready(Err(Status::unavailable("this method always fails")))
    }
}

impl Service<http::Request<Body>> for EchoService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match request.uri().path() {
            ECHO_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<Payload, Payload>::default());
                Ok(grpc.unary(Echo, request).await)
            }),
            FAIL_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<Payload, Payload>::default());
                Ok(grpc.unary(Fail, request).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// Serves the echo service on `listener` until the task is dropped.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(EchoService)
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await
}

/// The protobuf encoding of a [`Payload`] holding `size` bytes of `x`.
pub(crate) fn payload_message(size: usize) -> bytes::Bytes {
    use prost::Message as _;
    Payload {
        data: bytes::Bytes::from(vec![b'x'; size]),
    }
    .encode_to_vec()
    .into()
}
