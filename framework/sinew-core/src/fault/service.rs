use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tonic::Status;
use tower::Service;

use crate::{BoxError, Rng, fault::InjectedFault};

use super::{Action, FaultConfig, FaultRule, ResponseFuture};

/// Injects faults into the calls of a gRPC service; see the
/// [module docs](super).
///
/// Clones share the rules and the random source, so one seed drives every
/// clone's draws. The inner service must be `Clone` because a delayed call
/// takes the inner service that was polled ready with it and calls it once
/// the delay is over (leaving a clone in its place), as tower's
/// middlewares that call later do.
#[derive(Debug, Clone)]
pub struct Fault<S> {
    inner: S,
    faults: Arc<Faults>,
}

/// What every clone of a [`Fault`] shares.
#[derive(Debug)]
pub(super) struct Faults {
    rules: Box<[FaultRule]>,
    rng: Rng,
}

// === impl Faults ===

impl Faults {
    pub(super) fn new(config: FaultConfig) -> Self {
        Self {
            rules: config.rules.into_boxed_slice(),
            rng: config.seed.map_or_else(Rng::from_entropy, Rng::seeded),
        }
    }

    /// The action for the call at `path`: each matching rule, in order,
    /// draws once; the first draw under its probability wins.
    fn pick(&self, path: &str) -> Option<Action> {
        self.rules
            .iter()
            .filter(|rule| rule.target.matches(path))
            .find(|rule| self.rng.next_f64() < rule.probability)
            .map(|rule| rule.action)
    }
}

// === impl Fault ===

impl<S> Fault<S> {
    /// Wraps `inner` with the faults of `config`. Without a seed in the
    /// config, the draws are seeded from the clock.
    pub fn new(inner: S, config: FaultConfig) -> Self {
        Self::shared(inner, Arc::new(Faults::new(config)))
    }

    pub(super) fn shared(inner: S, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
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

impl<S, B, ResBody> Service<http::Request<B>> for Fault<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The one check an empty config costs.
        if self.faults.rules.is_empty() {
            return ResponseFuture::inner(self.inner.call(request));
        }
        let Some(action) = self.faults.pick(request.uri().path()) else {
            return ResponseFuture::inner(self.inner.call(request));
        };
        tracing::debug!(path = request.uri().path(), %action, "injecting fault");
        match action {
            Action::Latency(delay) => {
                // Keep the service that is ready for this call; leave a
                // clone to be polled ready for the next one.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::delayed(delay, ready, request)
            }
            Action::Error(code) => {
                ResponseFuture::ready(Ok(Status::new(code, "injected fault").into_http()))
            }
            Action::Abort => ResponseFuture::ready(Err(Box::new(InjectedFault))),
        }
    }
}
