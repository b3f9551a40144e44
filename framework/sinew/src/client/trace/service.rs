use std::task::{Context, Poll};

use tonic::body::Body;
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

/// Traces and measures each outgoing call; see the
/// [`trace`](crate::client::trace) module docs.
#[derive(Debug, Clone)]
pub struct ClientTrace<S> {
    inner: S,
}

// === impl ClientTrace ===

impl<S> ClientTrace<S> {
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

impl<S> Service<http::Request<Body>> for ClientTrace<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if !call::enabled() {
            return ResponseFuture::off(self.inner.call(request));
        }
        let path = request.uri().path().to_owned();
        let (service, method) = split_path(&path);
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
            otel.status_code = Empty,
            server.address = request.uri().host().map(str::to_owned),
        );
        // Every attempt carries this call's context.
        propagation::inject(&span.context(), request.headers_mut());
        let record = CallRecord::start(Side::Client, &path, span.clone());
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ResponseFuture::recorded(future.instrument(span), record)
    }
}
