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
    call::{self, CallRecord, RecordedBody, Side, TracedFuture as ResponseFuture},
    pipeline::StartAttributes,
    propagation,
};

/// Traces and measures each outgoing call; see the
/// [`trace`](crate::trace::client) module docs.
#[derive(Debug, Clone)]
pub struct ClientTrace<S> {
    inner: S,
    /// `server.address` when the request's URI has no host (a generated
    /// client's requests carry only the path; the balancer picks the
    /// endpoint below this layer), encoded once.
    server_address: Option<Arc<StartAttributes>>,
}

// === impl ClientTrace ===

impl<S> ClientTrace<S> {
    /// Wraps `inner`. Spans get `server.address` from the request's URI,
    /// when it has a host.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            server_address: None,
        }
    }

    /// Records `host` as `server.address` of calls whose URI has no host.
    pub fn server_address(mut self, host: impl Into<String>) -> Self {
        self.server_address = Some(start_attributes(&host.into()));
        self
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

impl<S, B> Service<http::Request<Body>> for ClientTrace<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<RecordedBody<B>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if !call::enabled() {
            return ResponseFuture::off(self.inner.call(request));
        }
        // The parent is the current context: in a handler, the incoming
        // call's span.
        let Some(record) = CallRecord::start(
            Side::Client,
            request.uri().path(),
            &OtelContext::current(),
            || match request.uri().host() {
                Some(host) => Some(server_address(host)),
                None => self.server_address.clone(),
            },
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

/// The attributes a span of a call to `host` starts with: its
/// `server.address`.
///
/// Each thread keeps the last ones it made: a client mostly calls the same
/// few hosts, so calls share them, encoded once, rather than making them
/// each time.
fn server_address(host: &str) -> Arc<StartAttributes> {
    thread_local! {
        static LAST: RefCell<Option<(Box<str>, Arc<StartAttributes>)>> =
            const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((last_host, attributes)) if **last_host == *host => Arc::clone(attributes),
            _ => {
                let attributes = start_attributes(host);
                *last = Some((host.into(), Arc::clone(&attributes)));
                attributes
            }
        }
    })
}

fn start_attributes(host: &str) -> Arc<StartAttributes> {
    let host = StringValue::from(Arc::<str>::from(host));
    StartAttributes::new(vec![KeyValue::new("server.address", host)])
}
