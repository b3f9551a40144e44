use std::sync::Arc;

use tower::Layer;

use super::{Retry, RetryThrottle};
use crate::{MAX_ATTEMPTS_CAP, Rng};

/// Default limit of a single request message buffered for retries: 4 MiB.
pub const DEFAULT_BUFFER_LIMIT: usize = 4 * 1024 * 1024;

/// Default limit of a request stream recorded for replay: 64 KiB.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// Wraps services in [`Retry`]; also the builder of its settings.
///
/// A clone (and every service it builds) shares the throttle and the random
/// source: build one layer per target and apply it to every client of that
/// target.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    settings: Settings,
}

/// What a [`RetryLayer`] hands every [`Retry`] it builds.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) throttle: Option<RetryThrottle>,
    pub(super) rng: Arc<Rng>,
    pub(super) max_attempts_cap: u32,
    pub(super) buffer_limit: usize,
    pub(super) replay_limit: usize,
}

// === impl RetryLayer ===

impl RetryLayer {
    /// Retries throttled by `throttle` (`None`: never throttled), with
    /// backoff jitter drawn from `rng`. Both are shared, not copied: pass
    /// the hedge layer the same throttle, so that retries and hedges draw
    /// on one budget per target. Attempts are capped at
    /// [`MAX_ATTEMPTS_CAP`], single messages buffered up to
    /// [`DEFAULT_BUFFER_LIMIT`], request streams recorded up to
    /// [`DEFAULT_REPLAY_LIMIT`].
    pub fn new(throttle: Option<RetryThrottle>, rng: Arc<Rng>) -> Self {
        Self {
            settings: Settings {
                throttle,
                rng,
                max_attempts_cap: MAX_ATTEMPTS_CAP,
                buffer_limit: DEFAULT_BUFFER_LIMIT,
                replay_limit: DEFAULT_REPLAY_LIMIT,
            },
        }
    }

    /// Lets policies ask for up to `cap` attempts (at least 1) instead of
    /// [`MAX_ATTEMPTS_CAP`].
    pub fn max_attempts_cap(mut self, cap: u32) -> Self {
        self.settings.max_attempts_cap = cap.max(1);
        self
    }

    /// Buffers single request messages up to `limit` bytes; a larger one is
    /// sent once and never retried.
    pub fn buffer_limit(mut self, limit: usize) -> Self {
        self.settings.buffer_limit = limit;
        self
    }

    /// Records request streams up to `limit` bytes; once a stream has sent
    /// more, the call is committed to the attempt under way.
    pub fn replay_limit(mut self, limit: usize) -> Self {
        self.settings.replay_limit = limit;
        self
    }

    /// The throttle, if throttling is on.
    pub fn throttle(&self) -> Option<&RetryThrottle> {
        self.settings.throttle.as_ref()
    }
}

impl Default for RetryLayer {
    /// A fresh [`RetryThrottle::default`] (10 tokens, 0.1 per success) and
    /// jitter seeded from entropy.
    fn default() -> Self {
        Self::new(
            Some(RetryThrottle::default()),
            Arc::new(Rng::from_entropy()),
        )
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::with_settings(inner, Arc::new(self.settings.clone()))
    }
}
