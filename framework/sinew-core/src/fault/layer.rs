use std::sync::Arc;

use tower::Layer;

use super::{Fault, FaultConfig, service::Faults};

/// Wraps services in [`Fault`].
///
/// Every service the layer wraps shares its rules and its one random
/// source, so a seed makes the picks of all of them repeatable together.
#[derive(Debug, Clone)]
pub struct FaultLayer {
    faults: Arc<Faults>,
}

// === impl FaultLayer ===

impl FaultLayer {
    /// A layer injecting the faults of `config`, with draws seeded by its
    /// `seed` (from the clock when there is none).
    pub fn new(config: FaultConfig) -> Self {
        Self {
            faults: Arc::new(Faults::new(config)),
        }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = Fault<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fault::shared(inner, Arc::clone(&self.faults))
    }
}
