use std::task::{Context, Poll};

use opentelemetry::{KeyValue, context::FutureExt as _};
use tonic::{body::Body, transport::server::TcpConnectInfo};
use tower::Service;

use crate::{
    BoxError,
    telemetry::{
        call::{self, CallRecord, Side, TracedFuture as ResponseFuture},
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
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        let extra = peer.map_or_else(Vec::new, |peer| {
            vec![
                KeyValue::new("network.peer.address", peer.ip().to_string()),
                KeyValue::new("network.peer.port", i64::from(peer.port())),
            ]
        });
        // A malformed or absent traceparent makes the span a root.
        let parent = propagation::extract(request.headers());
        let record = CallRecord::start(Side::Server, request.uri().path(), &parent, extra);
        // The handler runs in the call's context: its logs carry the ids,
        // and the calls it makes are children of this span.
        let cx = record.context();
        let future = {
            let _attached = cx.clone().attach();
            self.inner.call(request)
        };
        ResponseFuture::recorded(future.with_context(cx), record)
    }
}
