//! What hyper calls for each request of one connection.

use hyper::body::Incoming;
use tonic::transport::server::TcpConnectInfo;
use tower::{Service, ServiceExt as _, util::Oneshot};

use std::{
    future::{Ready, ready},
    sync::Arc,
};

use futures_util::future::Either;

use sinew_core::tls::PeerIdentity;

use super::{Recover, RequestChecks};
use crate::BoxError;

use crate::message_limit::{BudgetedBody, Budgets, OneMessage};

/// The service hyper calls for each request of one connection: the
/// server's layered routes, with the connection's addresses.
///
/// Each request's header list is checked against `max_header_list_size`
/// first (`RESOURCE_EXHAUSTED` past it; see `checks.rs`). Each request
/// gets the connection's [`TcpConnectInfo`] in its extensions
/// (tracing reads the peer from it, and handlers call
/// `request.remote_addr()`), its body as hyper received it (the message
/// limit layer boxes it as the handlers take it), and a clone of the
/// layered routes to be called with once they are ready. A layer's error
/// becomes a response where it can (see `recover.rs`).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionService<S> {
    stack: S,
    info: TcpConnectInfo,
    /// The budgets its requests' partial messages are held against.
    budgets: Arc<Budgets>,
    /// What every request is checked for before the layers.
    checks: Arc<RequestChecks>,
    /// The verified identity of the peer's certificate (mTLS), put in each
    /// request's extensions.
    peer: Option<Arc<PeerIdentity>>,
}

// === impl ConnectionService ===

impl<S> ConnectionService<S> {
    /// `stack` serving the connection described by `info`, whose requests'
    /// partial messages are held against `budgets`, and which are checked
    /// by `checks` first.
    pub(crate) fn new(
        stack: S,
        info: TcpConnectInfo,
        budgets: Arc<Budgets>,
        checks: Arc<RequestChecks>,
        peer: Option<Arc<PeerIdentity>>,
    ) -> Self {
        Self {
            stack,
            info,
            budgets,
            checks,
            peer,
        }
    }
}

/// A request's body as the layers get it: hyper's, its partial messages
/// held against the connection's budgets.
pub(crate) type RequestBody = BudgetedBody<Incoming>;

impl<S, B> hyper::service::Service<http::Request<Incoming>> for ConnectionService<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Default,
{
    type Response = http::Response<B>;
    type Error = BoxError;
    type Future = Either<
        Recover<Oneshot<S, http::Request<RequestBody>>>,
        Ready<Result<http::Response<B>, BoxError>>,
    >;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        if let Some(refused) = self.checks.refuse(&request) {
            return Either::Right(ready(Ok(refused)));
        }
        // Looked up only if a second message comes.
        let single = match request.uri().path_and_query() {
            Some(path) => OneMessage::Lookup(Arc::clone(&self.checks), path.clone()),
            None => OneMessage::Never,
        };
        let mut request =
            request.map(|body| BudgetedBody::new(body, Arc::clone(&self.budgets), single));
        request.extensions_mut().insert(self.info.clone());
        if let Some(peer) = &self.peer {
            request.extensions_mut().insert(Arc::clone(peer));
        }
        Either::Left(Recover::new(self.stack.clone().oneshot(request)))
    }
}
