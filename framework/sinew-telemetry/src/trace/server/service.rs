use std::{
    cell::RefCell,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};

use opentelemetry::{KeyValue, StringValue, context::FutureExt as _};
use tonic::transport::server::TcpConnectInfo;
use tower::Service;

use crate::{
    BoxError,
    call::{self, CallRecord, RecordedBody, Side, TracedFuture as ResponseFuture},
    pipeline::StartAttributes,
    propagation,
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

impl<S, B, ResBody> Service<http::Request<B>> for ServerTrace<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<RecordedBody<ResBody>>;
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
        // A malformed or absent traceparent makes the span a root.
        let parent = propagation::extract(request.headers());
        let Some(record) = CallRecord::start(Side::Server, request.uri().path(), &parent, || {
            peer.map(peer_attributes)
        }) else {
            return ResponseFuture::off(self.inner.call(request));
        };
        // The handler runs in the call's context: its logs carry the ids,
        // and the calls it makes are children of this span.
        let cx = record.context().clone();
        let future = {
            let _attached = cx.clone().attach();
            self.inner.call(request)
        };
        ResponseFuture::recorded(future.with_context(cx), record)
    }
}

/// The attributes a span of a call from `peer` starts with:
/// `network.peer.address` and `network.peer.port`.
///
/// Each thread keeps the last ones it made, so that the calls of one
/// connection share them, encoded once, rather than formatting the
/// address each time.
fn peer_attributes(peer: SocketAddr) -> Arc<StartAttributes> {
    thread_local! {
        static LAST: RefCell<Option<(SocketAddr, Arc<StartAttributes>)>> =
            const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((last_peer, attributes)) if *last_peer == peer => Arc::clone(attributes),
            _ => {
                let address = StringValue::from(Arc::<str>::from(peer.ip().to_string()));
                let attributes = StartAttributes::new(vec![
                    KeyValue::new("network.peer.address", address),
                    KeyValue::new("network.peer.port", i64::from(peer.port())),
                ]);
                *last = Some((peer, Arc::clone(&attributes)));
                attributes
            }
        }
    })
}
