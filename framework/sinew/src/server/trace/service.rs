use std::task::{Context, Poll};

use tonic::{body::Body, transport::server::TcpConnectInfo};
use tower::Service;
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    BoxError,
    telemetry::{
        call::{self, CallRecord, Side, TracedFuture as ResponseFuture},
        metrics::split_path,
        propagation,
    },
};

/// Traces and measures each incoming call; its span follows the OpenTelemetry
/// RPC semantic conventions and continues the caller's trace.
#[derive(Debug, Clone)]
pub struct ServerTrace<S> {
    inner: S,
}

// === impl ServerTrace ===

impl<S> ServerTrace<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<http::Request<B>> for ServerTrace<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !call::enabled() {
            return ResponseFuture::off(self.inner.call(request));
        }
        let path = request.uri().path();
        let (service, method) = split_path(path);
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
            otel.status_code = Empty,
            network.peer.address = peer.map(|p| p.ip().to_string()),
            network.peer.port = peer.map(|p| p.port()),
        );
        // A malformed or absent traceparent leaves the span a root.
        let _ = span.set_parent(propagation::extract(request.headers()));
        let record = CallRecord::start(Side::Server, path, span.clone());
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ResponseFuture::recorded(future.instrument(span), record)
    }
}
