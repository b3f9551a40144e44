use std::sync::Arc;

use tower::Layer;

use super::Hedge;
use crate::{
    MAX_ATTEMPTS_CAP, Rng,
    retry::{DEFAULT_BUFFER_LIMIT, RetryThrottle},
};

/// Wraps services in [`Hedge`]; also the builder of its settings.
///
/// A clone (and every service it builds) shares the throttle.
#[derive(Debug, Clone)]
pub struct HedgeLayer {
    settings: Settings,
}

/// What a [`HedgeLayer`] hands every [`Hedge`] it builds.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) throttle: Option<RetryThrottle>,
    pub(super) max_attempts_cap: u32,
    pub(super) buffer_limit: usize,
}

// === impl HedgeLayer ===

impl HedgeLayer {
    /// Hedges throttled by `throttle` (`None`: never throttled), best the
    /// retry layer's, so that both draw on one budget per target. Copies
    /// are capped at [`MAX_ATTEMPTS_CAP`] and requests buffered up to
    /// [`DEFAULT_BUFFER_LIMIT`].
    ///
    /// `rng` is taken so that both layers are built alike, but gRFC A6
    /// hedging has no jitter: copies go out exactly `hedging_delay` apart,
    /// and nothing is drawn from it.
    pub fn new(throttle: Option<RetryThrottle>, rng: Arc<Rng>) -> Self {
        drop(rng);
        Self {
            settings: Settings {
                throttle,
                max_attempts_cap: MAX_ATTEMPTS_CAP,
                buffer_limit: DEFAULT_BUFFER_LIMIT,
            },
        }
    }

    /// Lets policies ask for up to `cap` copies (at least 1) instead of
    /// [`MAX_ATTEMPTS_CAP`].
    pub fn max_attempts_cap(mut self, cap: u32) -> Self {
        self.settings.max_attempts_cap = cap.max(1);
        self
    }

    /// Buffers requests up to `limit` bytes; a larger one is sent once,
    /// unhedged.
    pub fn buffer_limit(mut self, limit: usize) -> Self {
        self.settings.buffer_limit = limit;
        self
    }

    /// The throttle, if throttling is on.
    pub fn throttle(&self) -> Option<&RetryThrottle> {
        self.settings.throttle.as_ref()
    }
}

impl Default for HedgeLayer {
    /// A fresh [`RetryThrottle::default`] (10 tokens, 0.1 per success).
    fn default() -> Self {
        Self {
            settings: Settings {
                throttle: Some(RetryThrottle::default()),
                max_attempts_cap: MAX_ATTEMPTS_CAP,
                buffer_limit: DEFAULT_BUFFER_LIMIT,
            },
        }
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge::with_settings(inner, self.settings.clone())
    }
}
