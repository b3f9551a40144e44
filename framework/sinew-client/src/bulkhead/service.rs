use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tonic::body::Body;
use tower::Service;

use super::{
    BulkheadConfig, Limits, SlotBody,
    future::ResponseFuture,
    limits::{Admission, Groups},
};
use crate::BoxError;

/// A bound on the calls in flight through a client service; see the
/// [module docs](super).
///
/// Clones share their limits.
///
/// # Readiness
///
/// `poll_ready` is always ready: the bulkhead's own limit is enforced in
/// `call`, which fails fast or queues. The inner service is readied inside
/// the response future, once the call holds a slot, so that a call waiting
/// in the queue does not also hold the inner service's capacity (a buffer
/// slot of a tower `Buffer`, say). The queue timeout bounds only the wait
/// for a slot; the wait for the inner service to be ready is bounded by
/// the call's deadline, if anything. For that the future needs a service
/// of its own: `call`
/// moves the service it holds into the future and keeps a clone in its
/// place (the pattern tower's `Service` docs recommend), hence `S: Clone`.
#[derive(Debug, Clone)]
pub struct Bulkhead<S> {
    inner: S,
    groups: Arc<Groups>,
}

// === impl Bulkhead ===

impl<S> Bulkhead<S> {
    /// Wraps `inner` in a bulkhead of its own with `config`.
    pub fn new(inner: S, config: BulkheadConfig) -> Self {
        Self::shared(inner, &Limits::new(config))
    }

    /// Wraps `inner` in the bulkhead of `limits`, shared with every other
    /// service built with them.
    pub fn shared(inner: S, limits: &Limits) -> Self {
        Self::from_groups(inner, Groups::new(limits.clone(), Vec::new()))
    }

    /// Wraps `inner` in a bulkhead of its own with a group per path prefix
    /// (`"/pkg.Service/"`, or a whole method path): a call takes its slot
    /// from the group of the longest prefix of its path, or from the
    /// default group (`default`) if none matches. Each group has limits of
    /// its own; the default's do not bound the groups'.
    pub fn grouped<P>(
        inner: S,
        default: BulkheadConfig,
        groups: impl IntoIterator<Item = (P, BulkheadConfig)>,
    ) -> Self
    where
        P: Into<String>,
    {
        let by_prefix = groups
            .into_iter()
            .map(|(prefix, config)| (prefix.into().into_boxed_str(), Limits::new(config)))
            .collect();
        Self::from_groups(inner, Groups::new(Limits::new(default), by_prefix))
    }

    fn from_groups(inner: S, groups: Groups) -> Self {
        Self {
            inner,
            groups: Arc::new(groups),
        }
    }

    /// The limits of the default group (of the whole bulkhead, if it has
    /// no groups), to watch its counts.
    pub fn limits(&self) -> &Limits {
        self.groups.default_limits()
    }

    /// The limits a call to `path` is held to.
    pub fn limits_for(&self, path: &str) -> &Limits {
        self.groups.pick(path)
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

impl<S, B> Service<http::Request<Body>> for Bulkhead<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: http_body::Body,
{
    type Response = http::Response<SlotBody<B>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, S::Future>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // See "Readiness" on the type.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // A rejected call costs no clone of the inner service.
        match self.groups.pick(request.uri().path()).admit() {
            Admission::Full => {
                sinew_telemetry::events::bulkhead_rejected(request.uri().path(), false);
                ResponseFuture::rejected()
            }
            Admission::Now(slot) => ResponseFuture::ready(slot, self.take_inner(), request),
            Admission::Queued(wait) => ResponseFuture::queued(wait, self.take_inner(), request),
        }
    }
}

impl<S: Clone> Bulkhead<S> {
    fn take_inner(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}
