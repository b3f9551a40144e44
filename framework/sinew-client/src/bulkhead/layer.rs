use std::sync::Arc;

use tower::Layer;

use super::{Bulkhead, BulkheadConfig, Limits};

/// Wraps services in a [`Bulkhead`].
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Limits of their own for each service wrapped.
    Own {
        default: BulkheadConfig,
        groups: Arc<[(Box<str>, BulkheadConfig)]>,
    },
    Shared(Limits),
}

// === impl BulkheadLayer ===

impl BulkheadLayer {
    /// Each service this layer wraps gets a bulkhead of its own with
    /// `config`, as tower's `ConcurrencyLimitLayer` does. To bound several
    /// services together, use [`shared`](Self::shared).
    pub fn new(config: BulkheadConfig) -> Self {
        Self::grouped(config, std::iter::empty::<(String, BulkheadConfig)>())
    }

    /// Every service this layer wraps shares the bulkhead of `limits`.
    pub fn shared(limits: &Limits) -> Self {
        Self {
            kind: Kind::Shared(limits.clone()),
        }
    }

    /// Each service this layer wraps gets a bulkhead of its own, with a
    /// group per path prefix; see [`Bulkhead::grouped`].
    pub fn grouped<P>(
        default: BulkheadConfig,
        groups: impl IntoIterator<Item = (P, BulkheadConfig)>,
    ) -> Self
    where
        P: Into<String>,
    {
        let groups = groups
            .into_iter()
            .map(|(prefix, config)| (prefix.into().into_boxed_str(), config))
            .collect();
        Self {
            kind: Kind::Own { default, groups },
        }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        match &self.kind {
            Kind::Shared(limits) => Bulkhead::shared(inner, limits),
            Kind::Own { default, groups } => Bulkhead::grouped(
                inner,
                *default,
                groups
                    .iter()
                    .map(|(prefix, config)| (String::from(&**prefix), *config)),
            ),
        }
    }
}
