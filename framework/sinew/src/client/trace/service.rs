use std::task::{Context, Poll};

use opentelemetry::{Context as OtelContext, KeyValue, context::FutureExt as _};
use tonic::body::Body;
use tower::Service;

use crate::{
    BoxError,
    telemetry::{
        call::{self, CallRecord, Side, TracedFuture as ResponseFuture},
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
        let extra = request
            .uri()
            .host()
            .map(|host| vec![KeyValue::new("server.address", host.to_owned())])
            .unwrap_or_default();
        // The parent is the current context: in a handler, the incoming
        // call's span.
        let record = CallRecord::start(
            Side::Client,
            request.uri().path(),
            &OtelContext::current(),
            extra,
        );
        let cx = record.context();
        // Every attempt carries this call's context.
        propagation::inject(&cx, request.headers_mut());
        // The layers below run in it: their events land on this span.
        let future = {
            let _attached = cx.clone().attach();
            self.inner.call(request)
        };
        ResponseFuture::recorded(future.with_context(cx), record)
    }
}
