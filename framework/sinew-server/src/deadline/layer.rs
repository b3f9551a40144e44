use std::time::Duration;

use tower::Layer;

use super::ServerDeadline;

/// Wraps a service in [`ServerDeadline`] with a ceiling on every call.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    ceiling: Duration,
}

impl DeadlineLayer {
    /// Calls get at most `ceiling`, whatever their `grpc-timeout` asks.
    pub fn new(ceiling: Duration) -> Self {
        Self { ceiling }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = ServerDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerDeadline::new(inner, self.ceiling)
    }
}
