use std::{
    cell::RefCell,
    sync::Arc,
    task::{Context, Poll},
};

use opentelemetry::{Context as OtelContext, KeyValue, StringValue, context::FutureExt as _};
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
        let host = request.uri().host().map(server_address);
        // The parent is the current context: in a handler, the incoming
        // call's span.
        let Some(record) = CallRecord::start(
            Side::Client,
            request.uri().path(),
            &OtelContext::current(),
            host.as_slice(),
        ) else {
            return ResponseFuture::off(self.inner.call(request));
        };
        let cx = record.context().clone();
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

/// The `server.address` attribute for `host`.
///
/// Each thread keeps the last one it made: a client mostly calls the same
/// few hosts, so calls share the string rather than copying it each time.
fn server_address(host: &str) -> KeyValue {
    thread_local! {
        static LAST: RefCell<Option<StringValue>> = const { RefCell::new(None) };
    }
    let value = LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some(value) if value.as_str() == host => value.clone(),
            _ => {
                let value = StringValue::from(Arc::<str>::from(host));
                *last = Some(value.clone());
                value
            }
        }
    });
    KeyValue::new("server.address", value)
}
