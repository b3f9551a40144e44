use tower::Layer;

use super::{Breaker, BreakerConfig, BreakerHandle};

/// Wraps services in a [`Breaker`].
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Own(BreakerConfig),
    Shared(BreakerHandle),
}

// === impl BreakerLayer ===

impl BreakerLayer {
    /// Each service this layer wraps gets a breaker of its own with
    /// `config` (as each endpoint of a load balancer should).
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            kind: Kind::Own(config),
        }
    }

    /// Every service this layer wraps shares the breaker `handle` refers
    /// to (one breaker for a whole dependency).
    pub fn shared(handle: &BreakerHandle) -> Self {
        Self {
            kind: Kind::Shared(handle.clone()),
        }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        match &self.kind {
            Kind::Own(config) => Breaker::new(inner, *config),
            Kind::Shared(handle) => Breaker::with_handle(inner, handle.clone()),
        }
    }
}
